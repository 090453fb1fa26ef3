//! The online feature store: the feature catalogue, the [`FeatureStore`] trait, and its Redis
//! and in-memory implementations.
//!
//! In: one batch of [`EventFacts`] (what the store needs to know about each event).
//! Out: one [`StoreFeatures`] per event, in batch order, and the store updated with the batch.
//! Both stores run the same algorithm (`state.rs`); they differ only in where state lives.
//!
//! Semantics shared by both stores (pinned by the conformance suite in `tests/conformance.rs`):
//! - **point-in-time**: an event's features see only the entity's events with an event time
//!   strictly before its own;
//! - **idempotent**: applying an `event_id` again changes nothing, so a redelivered or replayed
//!   event gets the same features;
//! - **bounded**: windows older than the longest window plus the allowed lateness are trimmed.

pub mod catalogue;
pub mod inputs;
pub mod memory;
pub mod redis_store;
mod state;

use std::future::Future;

pub use catalogue::{FeatureDef, StoreFeatures, STORE_FEATURES};
pub use memory::MemoryStore;
pub use redis_store::RedisStore;

/// What kind of event, as far as the store is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactKind {
    /// A money movement out of the account (transfer, withdrawal, card payment), worth `usd_cents`.
    MoneyOut { usd_cents: i64 },
    /// A credential or payout-address change.
    CredentialChange,
    /// A login.
    Login,
    /// Any other transaction (trade, deposit, ...).
    OtherTransaction,
    /// An identity-verification capture session.
    CaptureSession,
}

impl FactKind {
    /// One-character code used in stored members.
    pub(crate) fn code(self) -> char {
        match self {
            FactKind::MoneyOut { .. } => 'm',
            FactKind::CredentialChange => 'c',
            FactKind::Login => 'l',
            FactKind::OtherTransaction => 'o',
            FactKind::CaptureSession => 's',
        }
    }
    pub(crate) fn usd_cents(self) -> i64 {
        match self {
            FactKind::MoneyOut { usd_cents } => usd_cents,
            _ => 0,
        }
    }
}

/// The parts of one event the feature store reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFacts<'a> {
    pub event_id: &'a str,
    pub account_id: &'a str,
    pub device_id: &'a str,
    pub event_time: i64,
    pub kind: FactKind,
}

/// The feature store could not answer for a batch (the pipeline then scores degraded).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("feature store did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("unexpected reply from the feature-store script: {0}")]
    BadReply(String),
}

/// Retention and limits shared by both stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// How late (event time) an event may arrive and still see its full windows, ms.
    pub allowed_lateness_ms: i64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits { allowed_lateness_ms: 60 * 60 * 1000 }
    }
}

impl StoreLimits {
    /// Events older than `event_time - retention` are trimmed from windows.
    pub fn retention_ms(&self) -> i64 {
        catalogue::LONGEST_WINDOW_MS + self.allowed_lateness_ms
    }
}

/// An online feature store: computes features for a batch and records the batch, in one call.
pub trait FeatureStore: Send + Sync + 'static {
    /// Features for each event (as of its event time), then the events are recorded.
    fn enrich_batch(
        &self,
        batch: &[EventFacts<'_>],
    ) -> impl Future<Output = Result<Vec<StoreFeatures>, StoreError>> + Send;
}

/// The store chosen at start-up.
pub enum AnyStore {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl FeatureStore for AnyStore {
    async fn enrich_batch(&self, batch: &[EventFacts<'_>]) -> Result<Vec<StoreFeatures>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.enrich_batch(batch).await,
            AnyStore::Redis(s) => s.enrich_batch(batch).await,
        }
    }
}
