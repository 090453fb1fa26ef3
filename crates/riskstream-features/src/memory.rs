//! The in-memory feature store: the same algorithm as `enrich.lua`, for the demo and tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::catalogue::{StoreFeatures, DAY_MS, HOUR_MS};
use crate::{EventFacts, FeatureStore, StoreError, StoreLimits};

#[derive(Default)]
struct Account {
    /// (event_time, event_id) -> (kind code, usd cents)
    events: BTreeMap<(i64, String), (char, i64)>,
    /// device -> first-seen event time
    devices: HashMap<String, i64>,
}

#[derive(Default)]
struct Device {
    /// account -> first-seen event time
    accounts: HashMap<String, i64>,
    /// (event_time, event_id) of capture sessions
    sessions: BTreeMap<(i64, String), ()>,
}

#[derive(Default)]
struct State {
    accounts: HashMap<String, Account>,
    devices: HashMap<String, Device>,
}

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

/// Per-entity caps, as in `enrich.lua`: links beyond MAX_LINKS are not recorded; beyond
/// MAX_EVENTS the oldest event is dropped (sessions: new ones are not recorded).
const MAX_EVENTS: usize = 1000;
const MAX_LINKS: usize = 500;

fn first_seen(map: &mut HashMap<String, i64>, key: &str, t: i64) {
    let full = map.len() >= MAX_LINKS;
    match map.get_mut(key) {
        Some(v) => *v = (*v).min(t),
        None if !full => {
            map.insert(key.to_string(), t);
        }
        None => {}
    }
}

impl State {
    fn apply(&mut self, e: &EventFacts<'_>, retention: i64) -> StoreFeatures {
        let t = e.event_time;
        let account = self.accounts.entry(e.account_id.to_string()).or_default();
        let (mut mo1, mut mo24, mut usd1, mut usd24, mut cred24, mut login24) = (0, 0, 0, 0, 0, 0);
        for ((s, _), (code, cents)) in account.events.range((t - DAY_MS, String::new())..(t, String::new())) {
            let recent = *s >= t - HOUR_MS;
            match code {
                'm' => {
                    mo24 += 1;
                    usd24 += cents;
                    if recent {
                        mo1 += 1;
                        usd1 += cents;
                    }
                }
                'c' => cred24 += 1,
                'l' => login24 += 1,
                _ => {}
            }
        }
        let code = e.kind.code();
        // Idempotent by event id: a redelivery (whatever its time) records nothing new.
        if !account.events.keys().any(|(_, id)| id == e.event_id) {
            account.events.insert((t, e.event_id.to_string()), (code, e.kind.usd_cents()));
        }
        account.events = account.events.split_off(&(t - retention, String::new()));
        if account.events.len() > MAX_EVENTS {
            account.events.pop_first();
        }

        let is_new = match account.devices.get(e.device_id) {
            Some(first) if *first < t => 0,
            _ => 1,
        };
        let devices = account.devices.values().filter(|first| **first < t).count() as i64;
        first_seen(&mut account.devices, e.device_id, t);

        let device = self.devices.entry(e.device_id.to_string()).or_default();
        let accounts = device.accounts.values().filter(|first| **first < t).count() as i64;
        first_seen(&mut device.accounts, e.account_id, t);

        let sessions = device.sessions.range((t - DAY_MS, String::new())..(t, String::new())).count() as i64;
        if code == 's' {
            if device.sessions.len() < MAX_EVENTS && !device.sessions.keys().any(|(_, id)| id == e.event_id) {
                device.sessions.insert((t, e.event_id.to_string()), ());
            }
            device.sessions = device.sessions.split_off(&(t - retention, String::new()));
        }
        StoreFeatures::from_raw([mo1, mo24, usd1, usd24, cred24, login24, devices, is_new, accounts, sessions])
    }
}

impl FeatureStore for MemoryStore {
    async fn enrich_batch(&self, batch: &[EventFacts<'_>]) -> Result<Vec<StoreFeatures>, StoreError> {
        let retention = self.limits.retention_ms();
        let mut state = self.state.lock().expect("memory store poisoned");
        Ok(batch.iter().map(|e| state.apply(e, retention)).collect())
    }
}
