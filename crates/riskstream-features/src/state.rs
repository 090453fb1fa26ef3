//! The feature algorithm, over plain in-process state. The in-memory store keeps this state
//! for good; the Redis store loads the batch's entities into it, applies the batch, and writes
//! the changes back — so both stores compute features with the same code.

use std::collections::{BTreeMap, HashMap};

use crate::catalogue::{StoreFeatures, DAY_MS, HOUR_MS};
use crate::EventFacts;

/// One account's state.
#[derive(Default, Debug, Clone, PartialEq)]
pub(crate) struct Account {
    /// (event_time, event_id) -> (kind code, usd cents)
    pub(crate) events: BTreeMap<(i64, String), (char, i64)>,
    /// device -> first-seen event time
    pub(crate) devices: HashMap<String, i64>,
}

/// One device's state.
#[derive(Default, Debug, Clone, PartialEq)]
pub(crate) struct Device {
    /// account -> first-seen event time
    pub(crate) accounts: HashMap<String, i64>,
    /// (event_time, event_id) of capture sessions
    pub(crate) sessions: BTreeMap<(i64, String), ()>,
}

/// Accounts and devices; [`State::apply`] is the one feature algorithm both stores run.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) accounts: HashMap<String, Account>,
    pub(crate) devices: HashMap<String, Device>,
}

/// Per-entity caps, as in `enrich.lua`: links beyond MAX_LINKS are not recorded; beyond
/// MAX_EVENTS the oldest event is dropped (sessions: new ones are not recorded).
pub(crate) const MAX_EVENTS: usize = 1000;
pub(crate) const MAX_LINKS: usize = 500;

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
    /// Features of `e` as of its event time, then `e` recorded.
    pub(crate) fn apply(&mut self, e: &EventFacts<'_>, retention: i64) -> StoreFeatures {
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

