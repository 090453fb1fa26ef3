//! The Redis feature store: one server-side script call per batch (see `enrich.lua`).
//!
//! One key per entity under a per-deployment prefix, holding its state as MessagePack:
//! `{prefix}:{a:<account>}` (recent events, devices with first-seen times) and
//! `{prefix}:{d:<device>}` (accounts with first-seen times, recent capture sessions). Each
//! entity is read and written once per batch, so an event costs about four Redis calls.

use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::catalogue::{StoreFeatures, N_STORE_FEATURES};
use crate::{EventFacts, FeatureStore, StoreError, StoreLimits};

/// An entity untouched this long is forgotten.
const ENTITY_TTL_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// Feature store backed by one Redis server.
pub struct RedisStore {
    conn: ConnectionManager,
    script: redis::Script,
    prefix: String,
    limits: StoreLimits,
    deadline: Duration,
}

impl RedisStore {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379/`). Keys are written under `prefix`;
    /// a batch that takes longer than `deadline` fails with [`StoreError::Timeout`].
    pub async fn connect(url: &str, prefix: &str, limits: StoreLimits, deadline: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(deadline.max(Duration::from_millis(100)))
            .set_response_timeout(deadline.max(Duration::from_millis(100)))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(RedisStore {
            conn,
            script: redis::Script::new(include_str!("enrich.lua")),
            prefix: prefix.to_string(),
            limits,
            deadline,
        })
    }
}

impl FeatureStore for RedisStore {
    async fn enrich_batch(&self, batch: &[EventFacts<'_>]) -> Result<Vec<StoreFeatures>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(&self.prefix).arg(self.limits.retention_ms()).arg(ENTITY_TTL_MS).arg(batch.len());
        let mut code = [0u8; 4];
        for e in batch {
            invocation
                .arg(e.event_id)
                .arg(e.account_id)
                .arg(e.device_id)
                .arg(e.event_time)
                .arg(e.kind.code().encode_utf8(&mut code) as &str)
                .arg(e.kind.usd_cents());
        }
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = tokio::time::timeout(self.deadline, invocation.invoke_async(&mut conn))
            .await
            .map_err(|_| StoreError::Timeout(self.deadline))??;
        if reply.len() != batch.len() * N_STORE_FEATURES {
            return Err(StoreError::BadReply(format!(
                "{} values for {} events",
                reply.len(),
                batch.len()
            )));
        }
        Ok(reply
            .chunks_exact(N_STORE_FEATURES)
            .map(|c| StoreFeatures::from_raw(c.try_into().expect("chunk length")))
            .collect())
    }
}
