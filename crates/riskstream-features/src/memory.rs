//! The in-memory feature store: the shared algorithm (`state.rs`) over process memory, for the
//! demo and tests.

use std::sync::Mutex;

use crate::catalogue::StoreFeatures;
use crate::state::State;
use crate::{EventFacts, FeatureStore, StoreError, StoreLimits};

/// Feature store held in process memory. Not shared between processes.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    limits: StoreLimits,
}

impl MemoryStore {
    pub fn new(limits: StoreLimits) -> Self {
        MemoryStore { state: Mutex::new(State::default()), limits }
    }
}

impl FeatureStore for MemoryStore {
    async fn enrich_batch(&self, batch: &[EventFacts<'_>]) -> Result<Vec<StoreFeatures>, StoreError> {
        let retention = self.limits.retention_ms();
        let mut state = self.state.lock().expect("memory store poisoned");
        Ok(batch.iter().map(|e| state.apply(e, retention)).collect())
    }
}
