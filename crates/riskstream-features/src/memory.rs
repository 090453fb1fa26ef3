//! The in-memory feature store: the shared data model (`keyspace.rs`) and algorithm
//! (`algorithm.rs`) over process memory, for the demo, training data and tests. Not shared
//! between processes; no TTLs (state is bounded per entity by the trims, not in entity count).

use std::sync::Mutex;

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
        for op in &ops {
            ks.apply(op);
        }
        // Features straight from the store's own state (the reads would copy it).
        let features = algorithm::features_batch(&self.keys, &ks, batch);
        let followups = algorithm::followups(&self.keys, &ks, batch, self.limits.retention_ms());
        for op in followups {
            ks.apply(&op);
        }
        Ok(features)
    }

    async fn record_batch(&self, batch: &[EventFacts<'_>]) -> Result<(), StoreError> {
        let (ops, _reads) = algorithm::plan_batch(&self.keys, batch);
        let mut ks = self.keyspace.lock().expect("memory store poisoned");
        for op in &ops {
            ks.apply(op);
        }
        Ok(())
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
