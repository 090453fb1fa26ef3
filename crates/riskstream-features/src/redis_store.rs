//! The Redis feature store. Redis holds the state; the worker computes the features.
//!
//! Per batch, two pipelined round trips and no server-side scripts:
//! 1. **read** every entity the batch touches: `GET {prefix}:{a:<account>}` (the account's
//!    recent events and devices, a compact binary value) and `ZRANGE … WITHSCORES` of
//!    `{prefix}:{d:<device>}:acc` (accounts by first-seen time) and `{prefix}:{d:<device>}:ses`
//!    (capture sessions by event time);
//! 2. run the shared algorithm (`state.rs`, the same code as the in-memory store) over the batch;
//! 3. **write** the changes: the account values (`SET … PX`), and for devices only commutative,
//!    idempotent updates (`ZADD LT` of first-seen times, `ZADD` of sessions by event id, `ZREM`
//!    of trimmed sessions), so concurrent workers sharing a device cannot lose each other's writes.
//!
//! Accounts are written whole: the input topics are keyed by account, so one worker owns an
//! account at a time (during a rebalance, an in-flight batch of the old owner can race the new
//! owner; the loser's update of that account is lost — at most one batch, never a crash).
//! The braces in the keys are Redis Cluster hash tags.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Value;

use crate::catalogue::StoreFeatures;
use crate::state::{Account, Device, State};
use crate::{EventFacts, FeatureStore, StoreError, StoreLimits};

/// An entity untouched this long is forgotten.
const ENTITY_TTL_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// Feature store backed by one Redis server.
pub struct RedisStore {
    conn: ConnectionManager,
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
        Ok(RedisStore { conn, prefix: prefix.to_string(), limits, deadline })
    }

    fn account_key(&self, account: &str) -> String {
        format!("{}:{{a:{account}}}", self.prefix)
    }

    fn device_keys(&self, device: &str) -> (String, String) {
        (format!("{}:{{d:{device}}}:acc", self.prefix), format!("{}:{{d:{device}}}:ses", self.prefix))
    }

    async fn enrich(&self, batch: &[EventFacts<'_>]) -> Result<Vec<StoreFeatures>, StoreError> {
        let mut seen = HashSet::new();
        let accounts: Vec<&str> = batch.iter().map(|e| e.account_id).filter(|a| seen.insert(("a", *a))).collect();
        let devices: Vec<&str> = batch.iter().map(|e| e.device_id).filter(|d| seen.insert(("d", *d))).collect();
        let mut conn = self.conn.clone();

        // 1. read
        let mut read = redis::pipe();
        for a in &accounts {
            read.cmd("GET").arg(self.account_key(a));
        }
        for d in &devices {
            let (acc, ses) = self.device_keys(d);
            read.cmd("ZRANGE").arg(acc).arg(0).arg(-1).arg("WITHSCORES");
            read.cmd("ZRANGE").arg(ses).arg(0).arg(-1).arg("WITHSCORES");
        }
        let replies: Vec<Value> = read.query_async(&mut conn).await?;
        if replies.len() != accounts.len() + 2 * devices.len() {
            return Err(StoreError::BadReply(format!("{} replies for {} reads", replies.len(), accounts.len() + 2 * devices.len())));
        }
        let mut state = State::default();
        for (a, reply) in accounts.iter().zip(&replies) {
            let account = match reply {
                Value::Nil => Account::default(),
                Value::BulkString(bytes) => decode_account(bytes).unwrap_or_else(|| {
                    tracing::warn!(account = a, "unreadable account state in Redis; starting it afresh");
                    Account::default()
                }),
                other => return Err(StoreError::BadReply(format!("GET account: {other:?}"))),
            };
            state.accounts.insert(a.to_string(), account);
        }
        for (i, d) in devices.iter().enumerate() {
            let acc = scored(&replies[accounts.len() + 2 * i])?;
            let ses = scored(&replies[accounts.len() + 2 * i + 1])?;
            let device = Device {
                accounts: acc.into_iter().collect(),
                sessions: ses.into_iter().map(|(id, t)| ((t, id), ())).collect(),
            };
            state.devices.insert(d.to_string(), device);
        }
        let before: HashMap<String, Device> = state.devices.clone();

        // 2. compute
        let retention = self.limits.retention_ms();
        let features: Vec<StoreFeatures> = batch.iter().map(|e| state.apply(e, retention)).collect();

        // 3. write
        let mut write = redis::pipe();
        for a in &accounts {
            let value = encode_account(&state.accounts[*a]);
            write.cmd("SET").arg(self.account_key(a)).arg(value).arg("PX").arg(ENTITY_TTL_MS).ignore();
        }
        for d in &devices {
            let (acc_key, ses_key) = self.device_keys(d);
            let (old, new) = (&before[*d], &state.devices[*d]);
            let links: Vec<(i64, &str)> = new
                .accounts
                .iter()
                .filter(|(a, t)| old.accounts.get(*a) != Some(*t))
                .map(|(a, t)| (*t, a.as_str()))
                .collect();
            if !links.is_empty() {
                write.cmd("ZADD").arg(&acc_key).arg("LT").arg(&links).ignore();
            }
            let added: Vec<(i64, &str)> =
                new.sessions.keys().filter(|k| !old.sessions.contains_key(*k)).map(|(t, id)| (*t, id.as_str())).collect();
            if !added.is_empty() {
                write.cmd("ZADD").arg(&ses_key).arg(&added).ignore();
            }
            let trimmed: Vec<&str> =
                old.sessions.keys().filter(|k| !new.sessions.contains_key(*k)).map(|(_, id)| id.as_str()).collect();
            if !trimmed.is_empty() {
                write.cmd("ZREM").arg(&ses_key).arg(&trimmed).ignore();
            }
            if !links.is_empty() {
                write.cmd("PEXPIRE").arg(&acc_key).arg(ENTITY_TTL_MS).ignore();
            }
            if !added.is_empty() {
                write.cmd("PEXPIRE").arg(&ses_key).arg(ENTITY_TTL_MS).ignore();
            }
        }
        let () = write.query_async(&mut conn).await?;
        Ok(features)
    }
}

impl FeatureStore for RedisStore {
    async fn enrich_batch(&self, batch: &[EventFacts<'_>]) -> Result<Vec<StoreFeatures>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        tokio::time::timeout(self.deadline, self.enrich(batch)).await.map_err(|_| StoreError::Timeout(self.deadline))?
    }
}

/// `ZRANGE … WITHSCORES` → (member, integer score).
fn scored(reply: &Value) -> Result<Vec<(String, i64)>, StoreError> {
    let pairs: Vec<(String, f64)> = redis::from_redis_value(reply).map_err(|e| StoreError::BadReply(e.to_string()))?;
    Ok(pairs.into_iter().map(|(m, s)| (m, s as i64)).collect())
}

const ACCOUNT_FORMAT: u8 = 1;

/// Account state as bytes: format byte, events (time, kind code, usd cents, event id), devices
/// (id, first-seen time); integers little-endian, strings u16-length-prefixed.
fn encode_account(a: &Account) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + a.events.len() * 48 + a.devices.len() * 32);
    out.push(ACCOUNT_FORMAT);
    out.extend_from_slice(&(a.events.len() as u32).to_le_bytes());
    for ((t, id), (code, usd)) in &a.events {
        out.extend_from_slice(&t.to_le_bytes());
        out.push(*code as u8);
        out.extend_from_slice(&usd.to_le_bytes());
        put_str(&mut out, id);
    }
    out.extend_from_slice(&(a.devices.len() as u32).to_le_bytes());
    for (d, first) in &a.devices {
        put_str(&mut out, d);
        out.extend_from_slice(&first.to_le_bytes());
    }
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

/// Inverse of [`encode_account`]; `None` for anything malformed.
fn decode_account(bytes: &[u8]) -> Option<Account> {
    let mut r = Reader(bytes);
    if r.u8()? != ACCOUNT_FORMAT {
        return None;
    }
    let mut events = BTreeMap::new();
    for _ in 0..r.u32()? {
        let t = r.i64()?;
        let code = r.u8()? as char;
        let usd = r.i64()?;
        let id = r.str()?;
        events.insert((t, id), (code, usd));
    }
    let mut devices = HashMap::new();
    for _ in 0..r.u32()? {
        let d = r.str()?;
        devices.insert(d, r.i64()?);
    }
    r.0.is_empty().then_some(Account { events, devices })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn str(&mut self) -> Option<String> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_encoding_round_trips_and_rejects_garbage() {
        let mut a = Account::default();
        a.events.insert((5, "e1".into()), ('m', 1234));
        a.events.insert((-7, "é2".into()), ('c', 0));
        a.devices.insert("d1".into(), 3);
        let bytes = encode_account(&a);
        assert_eq!(decode_account(&bytes), Some(a));
        for n in 0..bytes.len() {
            assert_eq!(decode_account(&bytes[..n]), None, "prefix {n}");
        }
        assert_eq!(decode_account(b"\x02"), None);
    }
}
