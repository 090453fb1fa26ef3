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

/// How verdicts, dead letters and consumed offsets reach Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Offsets stored after the broker acknowledged a batch's outputs, committed every second
    /// (and on revocation and shutdown): a crash re-delivers the uncommitted records.
    AtLeastOnce,
    /// Outputs and offsets in one Kafka transaction per batch (see [`crate::transact`]).
    ExactlyOnce {
        /// The producer's `transactional.id`: `<group>.<worker id>`, stable across restarts of
        /// one worker so that a restarted worker fences its predecessor.
        transactional_id: String,
    },
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
    /// Batches whose feature-store calls may be in flight at once (the enrich stage overlaps
    /// them; each still reads after the earlier batches' writes and computes after their
    /// features, `riskstream_features::order`; results stay in batch order). 1 = one at a time.
    pub store_in_flight: usize,
    /// Extra librdkafka properties (`-X key=value`), applied last to both clients, or to one
    /// with a `consumer.` / `producer.` prefix on the key.
    pub kafka: Vec<(String, String)>,
    /// Schema registry URL; `None` = registry-free (single-object encoding).
    pub schema_registry: Option<String>,
    /// How output subjects are named in the registry.
    pub subject_strategy: riskstream_events::SubjectStrategy,
    /// Plausibility bounds on decoded events (strings, amounts, event time against the clock
    /// and the broker timestamp): events outside them are dead-lettered.
    pub bounds: riskstream_events::Bounds,
    /// The dead-letter cap: when it trips the worker stops (see [`crate::dlq_limit`]).
    pub dlq_limit: crate::dlq_limit::DlqLimit,
    /// On a partition revocation, how long to wait for the batches already read to be
    /// published and acknowledged before their offsets are committed and the partitions go.
    pub revoke_drain: Duration,
    /// At-least-once (default) or exactly-once.
    pub delivery: Delivery,
}

impl WorkerConfig {
    pub fn new(brokers: &str, group: &str) -> Self {
        WorkerConfig {
            brokers: brokers.into(),
            group: group.into(),
            topics: Topics::default(),
            batch_max: 512,
            batch_linger: Duration::ZERO,
            store_in_flight: 2,
            kafka: Vec::new(),
            schema_registry: None,
            subject_strategy: riskstream_events::SubjectStrategy::Topic,
            bounds: riskstream_events::Bounds::default(),
            dlq_limit: crate::dlq_limit::DlqLimit::default(),
            revoke_drain: Duration::from_secs(10),
            delivery: Delivery::AtLeastOnce,
        }
    }
}
