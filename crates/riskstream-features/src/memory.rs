//! The in-memory feature store: the shared data model (`keyspace.rs`) and algorithm
//! (`algorithm.rs`) over process memory, for the demo, training data and tests. Not shared
//! between processes; keys expire as in Redis (swept at most once a minute).

use std::sync::Mutex;
use std::time::Instant;

use crate::algorithm::{self, Exec};
use crate::catalogue::StoreFeatures;
use crate::keyspace::{Keys, Keyspace, Op, Read};
use crate::{EventFacts, FeatureStore, LabelOutcome, StoreError, StoreLimits};

/// Feature store held in process memory.
pub struct MemoryStore {
    keyspace: Mutex<Keyspace>,
    keys: Keys,
    limits: StoreLimits,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new(StoreLimits::default())
    }
}

impl MemoryStore {
    pub fn new(limits: StoreLimits) -> Self {
        MemoryStore {
            keyspace: Mutex::new(Keyspace::default()),
            keys: Keys::new("mem"),
            limits,
        }
    }
}

impl Exec for MemoryStore {
    async fn exec(&self, ops: Vec<Op>, reads: Vec<Read>) -> Result<Keyspace, StoreError> {
        let mut ks = self.keyspace.lock().expect("memory store poisoned");
        ks.expire(Instant::now());
        for op in &ops {
            ks.apply(op);
        }
        Ok(ks.read(&reads))
    }
}

impl FeatureStore for MemoryStore {
    async fn enrich_batch(
        &self,
        batch: &[EventFacts<'_>],
    ) -> Result<Vec<StoreFeatures>, StoreError> {
        let (ops, _reads) = algorithm::plan_batch(&self.keys, batch);
        let mut ks = self.keyspace.lock().expect("memory store poisoned");
        ks.expire(Instant::now());
        for op in &ops {
            ks.apply(op);
        }
        // Features straight from the store's own state (the reads would copy it).
        let (features, followups) = algorithm::evaluate(
            &self.keys,
            &ks,
            &algorithm::Timelines::default(),
            batch,
            &self.limits,
            None,
        );
        for op in followups {
            ks.apply(&op);
        }
        Ok(features)
    }

    async fn apply_label(
        &self,
        account: &str,
        tainted: bool,
        label_time: i64,
    ) -> Result<LabelOutcome, StoreError> {
        algorithm::apply_label(self, &self.keys, account, tainted, label_time).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FactKind, TransactionKind};

    /// An account's set holds its raw head, at most ~49 hour tiles and ~9 day tiles, and its
    /// links, whatever its age: 1 event / 2 min for 9 days stays at a constant size.
    #[tokio::test]
    async fn account_state_is_constant_in_history_length() {
        let store = MemoryStore::default();
        let t0 = 1_700_000_000_000_i64;
        let ids: Vec<String> = (0..6480).map(|i| format!("e{i}")).collect();
        let mut sizes = Vec::new();
        for (n, chunk) in ids.chunks(40).enumerate() {
            let batch: Vec<EventFacts<'_>> = chunk
                .iter()
                .enumerate()
                .map(|(i, id)| EventFacts {
                    event_id: id,
                    account_id: "acct",
                    device_id: "dev",
                    ip: "ip",
                    country: "FR",
                    document: "",
                    destination: "",
                    event_time: t0 + (n * 40 + i) as i64 * 120_000,
                    kind: FactKind::Transaction {
                        kind: TransactionKind::Withdrawal,
                        usd_cents: 100,
                    },
                })
                .collect();
            store.enrich_batch(&batch).await.expect("store");
            let ks = store.keyspace.lock().expect("lock");
            let key = store.keys.account("acct");
            sizes.push(ks.zsets[&key].len());
        }
        let (day2, last) = (sizes[720 / 40 * 2], *sizes.last().expect("sizes"));
        let max = *sizes.iter().max().expect("sizes");
        // Raw head ≤ 3 h = 90 events + 1 batch, ≤ 49 hour tiles, ≤ 9 day tiles, 3 links.
        assert!(
            max <= 90 + 40 + 49 + 9 + 3,
            "largest account set: {max} members"
        );
        assert!(
            last <= day2 + 10,
            "after 9 days {last} members, after 2 days {day2}"
        );
    }
}
