//! The online feature store: the feature catalogue, the [`FeatureStore`] trait, and its Redis
//! and in-memory implementations.
//!
//! In: one batch of [`EventFacts`] (what the store needs to know about each event).
//! Out: one [`StoreFeatures`] per event, in batch order, and the store updated with the batch.
//! Both stores run the same algorithm (`algorithm.rs`) over the same data model
//! (`keyspace.rs`); they differ only in where the data lives.
//!
//! Semantics shared by both stores (pinned by the conformance suite in `tests/conformance.rs`):
//! - **point-in-time**: an event's features see only the entity's events with an event time
//!   strictly before its own;
//! - **idempotent**: applying an `event_id` again changes nothing;
//! - **order-independent**: any delivery order and batching within the allowed lateness leaves
//!   the same state — later events see the same features (property-tested with shuffled,
//!   duplicated deliveries);
//! - **bounded and constant in history length**: older events live in hour and day tiles
//!   (`tiles.rs`), windows older than the longest window plus the allowed lateness are trimmed,
//!   and every entity has caps (`algorithm.rs`) and a TTL;
//! - **first features**: a redelivered event id gets the features of its first delivery back
//!   (`first.rs`);
//! - **labels** (the identity graph) take effect in processing time, when applied.

mod account_cache;
mod algorithm;
pub mod catalogue;
mod first;
pub mod inputs;
mod keyspace;
mod log;
pub mod memory;
pub mod order;
pub mod redis_store;
mod resp;
mod tiles;
mod zset;

use std::future::Future;

pub use catalogue::{store_features, FeatureDef, StoreFeatures, GROUPS, N_STORE_FEATURES};
pub use memory::MemoryStore;
pub use order::{Turn, Turns};
pub use redis_store::RedisStore;
pub use riskstream_events::TransactionKind;

/// What kind of event, as far as the store is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactKind {
    /// A transaction of `kind`, worth `usd_cents` (0 when it moves no money).
    Transaction {
        kind: TransactionKind,
        usd_cents: i64,
    },
    /// An identity-verification capture session; `failed_check` = the vendor's liveness or
    /// face match was below [`catalogue::FAILED_CHECK_BELOW`].
    CaptureSession { failed_check: bool },
}

/// The parts of one event the feature store reads and writes. Empty strings mean "absent".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFacts<'a> {
    pub event_id: &'a str,
    pub account_id: &'a str,
    pub device_id: &'a str,
    /// Client IP address (or its hash).
    pub ip: &'a str,
    /// The IP's country (the account's country when geo-IP gave none).
    pub country: &'a str,
    /// Hash of the identity document (capture sessions).
    pub document: &'a str,
    /// Hash of the destination address (money-out transactions).
    pub destination: &'a str,
    pub event_time: i64,
    pub kind: FactKind,
}

/// An owned copy of an event's [`EventFacts`] (its strings in one allocation), for events kept
/// to be recorded later, e.g. those scored while the store was down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFacts {
    text: String,
    /// Ends of the seven strings in `text`, in [`EventFacts`] field order.
    ends: [u32; 7],
    event_time: i64,
    kind: FactKind,
}

impl OwnedFacts {
    pub fn of(f: &EventFacts<'_>) -> Self {
        let parts = [
            f.event_id,
            f.account_id,
            f.device_id,
            f.ip,
            f.country,
            f.document,
            f.destination,
        ];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; 7];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            *end = text.len() as u32;
        }
        OwnedFacts {
            text,
            ends,
            event_time: f.event_time,
            kind: f.kind,
        }
    }

    pub fn facts(&self) -> EventFacts<'_> {
        let part = |i: usize| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
            &self.text[start..self.ends[i] as usize]
        };
        EventFacts {
            event_id: part(0),
            account_id: part(1),
            device_id: part(2),
            ip: part(3),
            country: part(4),
            document: part(5),
            destination: part(6),
            event_time: self.event_time,
            kind: self.kind,
        }
    }
}

/// What applying one label touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LabelOutcome {
    /// The labelled account's devices, IPs and documents (taint at one hop).
    pub entities: usize,
    /// Accounts sharing one of those entities.
    pub neighbours: usize,
    /// The neighbours' other entities (taint at two hops).
    pub second_hop_entities: usize,
}

/// The feature store could not answer for a batch (the pipeline then scores degraded).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("feature store did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("unexpected reply from the feature store: {0}")]
    BadReply(String),
    #[error("feature store connection: {0}")]
    Io(String),
}

/// Retention and limits shared by both stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// How late (event time, behind the account's newest event) an event may arrive and still
    /// see its full windows and count in the tiles, ms.
    pub allowed_lateness_ms: i64,
    /// How long an event's first features are kept for its redeliveries, ms after the last
    /// write to its hour's hash (see `first.rs`).
    pub first_features_ttl_ms: i64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            allowed_lateness_ms: 60 * 60 * 1000,
            first_features_ttl_ms: 24 * 60 * 60 * 1000,
        }
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

    /// [`FeatureStore::enrich_batch`] in `turn`'s place among overlapping batches (`order.rs`):
    /// reads after every earlier batch's writes, features after every earlier batch's. A batch
    /// cut into several calls passes the same turn to each; `last` on its last call releases the
    /// turn for the next batch (an abandoned batch releases it when the turn is dropped).
    /// By default the whole call waits for the earlier batches' (nothing overlaps); the Redis
    /// store overlaps its round trips with the earlier batch's computation and follow-up write.
    fn enrich_batch_in_turn(
        &self,
        batch: &[EventFacts<'_>],
        turn: &Turn,
        last: bool,
    ) -> impl Future<Output = Result<Vec<StoreFeatures>, StoreError>> + Send {
        async move {
            turn.reads().await;
            turn.evaluate().await;
            let result = self.enrich_batch(batch).await;
            if last {
                turn.release_reads();
                turn.release_evaluate();
            }
            result
        }
    }

    /// Records `batch` as scoring it would, without returning the features: a backfill of
    /// history before scoring starts (e.g. the benchmark's long histories, or warming a replay's
    /// namespace). The same writes as [`FeatureStore::enrich_batch`] — first features, tiles,
    /// trims — so a later delivery of one of these events gets what scoring would have given.
    /// Tiles are sealed by reads, so a long backfill is best written in time order over several
    /// calls ([`backfill_slices`]), as scoring would have written it.
    fn record_batch(
        &self,
        batch: &[EventFacts<'_>],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move { self.enrich_batch(batch).await.map(|_| ()) }
    }

    /// How long one [`FeatureStore::enrich_batch`] call may take before it fails with
    /// [`StoreError::Timeout`] (`None`: no deadline, e.g. the in-memory store). Callers size
    /// their calls to it.
    fn deadline(&self) -> Option<std::time::Duration> {
        None
    }

    /// Marks `account` as labelled (`tainted`: confirmed fraud, ATO, chargeback, bot) or
    /// clears the mark (`false`: confirmed legitimate), and propagates it through the
    /// identity graph (one and two hops). Processing time: the mark applies from now on.
    fn apply_label(
        &self,
        account: &str,
        tainted: bool,
        label_time: i64,
    ) -> impl Future<Output = Result<LabelOutcome, StoreError>> + Send;
}

/// How to write `events` events of one entity's history (by index, oldest first) over
/// [`FeatureStore::record_batch`] calls in time order: `slices` − 1 runs of about equal length,
/// then the newest event alone. Each call's read seals the runs before it into tiles and its
/// follow-up write compacts the log, and the last one leaves the tiles sealed up to the head of
/// the event before, as a worker that scored the history would have left them (written in one
/// call, the whole history would stay raw until the next read sealed it at once).
pub fn backfill_slices(events: usize, slices: usize) -> Vec<std::ops::Range<usize>> {
    if events < 2 || slices < 2 {
        return std::iter::once(0..events).collect();
    }
    let n = (slices - 1).min(events - 1);
    let mut out: Vec<_> = (0..n)
        .map(|i| i * (events - 1) / n..(i + 1) * (events - 1) / n)
        .collect();
    out.push(events - 1..events);
    out
}

/// The store chosen at start-up.
pub enum AnyStore {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl FeatureStore for AnyStore {
    async fn enrich_batch(
        &self,
        batch: &[EventFacts<'_>],
    ) -> Result<Vec<StoreFeatures>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.enrich_batch(batch).await,
            AnyStore::Redis(s) => s.enrich_batch(batch).await,
        }
    }

    async fn enrich_batch_in_turn(
        &self,
        batch: &[EventFacts<'_>],
        turn: &Turn,
        last: bool,
    ) -> Result<Vec<StoreFeatures>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.enrich_batch_in_turn(batch, turn, last).await,
            AnyStore::Redis(s) => s.enrich_batch_in_turn(batch, turn, last).await,
        }
    }

    async fn record_batch(&self, batch: &[EventFacts<'_>]) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.record_batch(batch).await,
            AnyStore::Redis(s) => s.record_batch(batch).await,
        }
    }

    fn deadline(&self) -> Option<std::time::Duration> {
        match self {
            AnyStore::Memory(s) => s.deadline(),
            AnyStore::Redis(s) => s.deadline(),
        }
    }

    async fn apply_label(
        &self,
        account: &str,
        tainted: bool,
        label_time: i64,
    ) -> Result<LabelOutcome, StoreError> {
        match self {
            AnyStore::Memory(s) => s.apply_label(account, tainted, label_time).await,
            AnyStore::Redis(s) => s.apply_label(account, tainted, label_time).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfill_slices_cover_every_event_in_order_and_end_with_the_newest_alone() {
        for per in [0, 1, 2, 3, 27, 28, 29, 500, 1001] {
            let ranges = backfill_slices(per, 28);
            let flat: Vec<usize> = ranges.iter().cloned().flatten().collect();
            assert_eq!(flat, (0..per).collect::<Vec<_>>(), "per {per}");
            assert!(ranges.len() <= 28, "per {per}");
            if per >= 2 {
                assert_eq!(ranges.last(), Some(&(per - 1..per)), "per {per}");
                assert!(ranges.iter().all(|r| !r.is_empty()), "per {per}");
            }
        }
        // 500 events: 27 slices of 18–19 (about 6 hours each of a week), then the newest.
        let ranges = backfill_slices(500, 28);
        assert_eq!(ranges.len(), 28);
        assert!(ranges[..27].iter().all(|r| (18..=19).contains(&r.len())));
    }

    #[test]
    fn owned_facts_give_back_every_field() {
        let f = EventFacts {
            event_id: "ev-1",
            account_id: "acct",
            device_id: "",
            ip: "10.0.0.1",
            country: "FR",
            document: "doc",
            destination: "",
            event_time: 1_700_000_000_000,
            kind: FactKind::Transaction {
                kind: TransactionKind::Withdrawal,
                usd_cents: 12_345,
            },
        };
        assert_eq!(OwnedFacts::of(&f).facts(), f);
    }
}
