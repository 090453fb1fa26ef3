//! Worker configuration. Loading (file, environment, flags) happens in the binary; this is
//! the resolved result, passed down once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Topic names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Topics {
    pub capture_sessions: String,
    pub transactions: String,
    pub verdicts: String,
    pub dead_letters: String,
    pub labels: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            capture_sessions: "capture-sessions".into(),
            transactions: "transactions".into(),
            verdicts: "verdicts".into(),
            dead_letters: "verdicts-dlq".into(),
            labels: "labels".into(),
        }
    }
}

/// Everything [`crate::worker::run`] needs besides the store, the models and the policy.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group id.
    pub group: String,
    pub topics: Topics,
    /// Most records in one batch.
    pub batch_max: usize,
    /// Extra wait for a batch to fill after its first record even when the pipeline is idle;
    /// 0 (the default): batches form only while the next stage is busy (adaptive).
    pub batch_linger: Duration,
    /// Batches whose feature-store round trips may be in flight at once (the enrich stage
    /// overlaps them; results stay in batch order). 1 = one at a time.
    pub store_in_flight: usize,
    /// Extra librdkafka properties (`-X key=value`), applied last to both clients, or to one
    /// with a `consumer.` / `producer.` prefix on the key.
    pub kafka: Vec<(String, String)>,
    /// Schema registry URL; `None` = registry-free (single-object encoding).
    pub schema_registry: Option<String>,
    /// How output subjects are named in the registry.
    pub subject_strategy: riskstream_events::SubjectStrategy,
    /// Events with an event time further than this in the future are dead-lettered.
    pub max_future_skew: Duration,
    /// The dead-letter cap: when it trips the worker stops (see [`crate::dlq_limit`]).
    pub dlq_limit: crate::dlq_limit::DlqLimit,
}

impl WorkerConfig {
    pub fn new(brokers: &str, group: &str) -> Self {
        WorkerConfig {
            brokers: brokers.into(),
            group: group.into(),
            topics: Topics::default(),
            batch_max: 512,
            batch_linger: Duration::ZERO,
            store_in_flight: 1,
            kafka: Vec::new(),
            schema_registry: None,
            subject_strategy: riskstream_events::SubjectStrategy::Topic,
            max_future_skew: Duration::from_secs(3600),
            dlq_limit: crate::dlq_limit::DlqLimit::default(),
        }
    }
}
