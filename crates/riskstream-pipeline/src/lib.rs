//! The scoring worker.
//!
//! ```text
//! Kafka ─► consume ─► decode ─► enrich ─► score ─► decide ─► publish ─► commit
//!          worker     events    features  models   policy    worker     acker
//! ```
//!
//! [`worker::run`] owns the Kafka side: it micro-batches records (bounded by count and time),
//! hands each batch to the [`scorer::Scorer`] (one feature-store call (a pipelined read and write), one inference
//! call per model, the decision policy), produces verdicts and dead letters, and passes the
//! delivery futures to an acker task that stores offsets only once every record of the batch
//! is acknowledged by the broker (at-least-once, in order per partition). librdkafka commits
//! stored offsets in the background; one synchronous commit happens at shutdown.
//!
//! [`labels::run_labels`] runs beside it: it applies the labels topic to the feature store's
//! identity graph.

pub mod config;
pub mod labels;
pub mod metrics;
pub mod policy;
pub mod scorer;
pub mod serving;
pub mod worker;

pub use config::{Topics, WorkerConfig};
pub use labels::{run_labels, LabelsReport};
pub use policy::{Policy, PolicyConfig};
pub use scorer::Scorer;
pub use serving::{ReloadOutcome, Serving, ServingConfig, ServingError, ServingHandle};
pub use worker::{run, run_passthrough, WorkerError, WorkerReport};
