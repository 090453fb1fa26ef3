//! The scoring worker.
//!
//! ```text
//! Kafka ─► consume ─► decode ─► enrich ─► score ─► decide ─► publish ─► commit
//!          worker     events    features  models   policy    worker     acker
//! ```
//!
//! [`worker::run`] is a chain of small stages ([`stages`]) joined by channels of one batch:
//! the source cuts batches adaptively (small when idle, up to `batch_max` under backlog);
//! decode and score (inference, policy, reason codes, encoding) run on the compute pool;
//! enrich makes one feature-store call per batch; publish produces verdicts and dead letters;
//! acknowledge stores a batch's offsets only once the broker acknowledged everything it
//! produced (at-least-once, in order per partition). Stages overlap: batch N+1's store round
//! trip runs while batch N is scored and N−1 published. librdkafka commits stored offsets in
//! the background; one synchronous commit happens at shutdown. With `--delivery exactly-once`
//! publish and commit are one Kafka transaction per batch instead ([`transact`]).
//!
//! [`labels::run_labels`] runs beside it: it applies the labels topic to the feature store's
//! identity graph.

pub mod config;
pub mod dlq_limit;
pub mod health;
pub mod labels;
pub mod metrics;
pub mod policy;
pub mod replay;
pub mod scorer;
pub mod serving;
pub mod stages;
pub mod transact;
pub mod worker;
pub mod writeback;

pub use config::{Delivery, Topics, WorkerConfig};
pub use labels::{run_labels, LabelsReport};
pub use policy::{Policy, PolicyConfig};
pub use scorer::Scorer;
pub use serving::{ReloadOutcome, Serving, ServingConfig, ServingError, ServingHandle};
pub use worker::{run, run_passthrough, WorkerError, WorkerReport};
