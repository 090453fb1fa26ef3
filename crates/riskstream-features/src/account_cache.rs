//! The Redis store's **account cache**: the events and tiles (the members scored 0) of the
//! accounts this store wrote lately, so that a batch reads an account's timeline from Redis only
//! when another writer may have changed it since — the `ZRANGE` of a long history is most of
//! what an account costs Redis and the worker.
//!
//! Correct whoever else writes, without knowing partitions: every write that changes an
//! account's events or tiles (a `ZADD` with members scored 0, or a `ZREM`) is followed, in the
//! same pipeline, by `SET P:{a:ACCOUNT}:v TOKEN PX ttl GET` — a fresh token from this store,
//! the previous one back. The cache keeps, per account, the token of its own last write. When
//! the previous token Redis returns is the one the cache holds, nobody wrote the account in
//! between, so the cached copy plus this write is exactly what Redis holds; otherwise the entry
//! is dropped and the timeline read again. A copy filled from a read takes the token written
//! just before that read in the same pipeline: a write by another worker that lands between the
//! two makes the next comparison fail, so the copy is never trusted past it.
//!
//! Hits need one writer per account: one worker consuming all of an account's events, as with
//! the inputs keyed by account and co-partitioned (equal partition counts, the range assignor).
//! With accounts spread over several workers the cache misses and reads, as without it.
//! Bounded: at most about `capacity` bytes of members (the older half dropped when full), and an entry is not
//! trusted more than [`MAX_AGE`] after it was filled (writers that do not bump the token —
//! releases before this cache, an operator's edit — are seen within that time). A failed store
//! call clears the whole cache: its writes may or may not have landed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::keyspace::{Keyspace, Op, Read, Seeded, ZSet};

/// How long an entry is trusted after it was read from Redis.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(600);

struct Entry {
    /// The account's members scored 0: raw events and tiles (shared with the batch being
    /// evaluated, which reads it in place).
    events: Arc<ZSet>,
    /// Approximate memory held ([`member_bytes`] summed).
    bytes: usize,
    /// The token this store wrote with its last write of the account.
    token: u64,
    filled: Instant,
}

pub(crate) struct AccountCache {
    entries: HashMap<String, Entry, Seeded>,
    /// Most bytes of members held (approximate: see [`member_bytes`]).
    capacity: usize,
    bytes: usize,
    next_token: u64,
    hits: u64,
    misses: u64,
}

/// One account's write in one store call: the token written after it and what it changes in
/// the account's members scored 0.
pub(crate) struct Bump {
    pub(crate) key: String,
    pub(crate) token: u64,
    added: Vec<Vec<u8>>,
    removed: Vec<Vec<u8>>,
}

impl Bump {
    /// The version key written after the account's writes (same hash slot as the account).
    pub(crate) fn version_key(&self) -> String {
        version_key(&self.key)
    }
}

pub(crate) fn version_key(account_key: &str) -> String {
    format!("{account_key}:v")
}

impl AccountCache {
    /// A cache holding at most about `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Self {
        // Tokens unique across stores and restarts: a random start, then counting.
        let seed = {
            use std::hash::BuildHasher;
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            foldhash::fast::RandomState::default().hash_one((t, std::process::id()))
        };
        AccountCache {
            entries: HashMap::default(),
            capacity: capacity.max(1),
            bytes: 0,
            next_token: seed,
            hits: 0,
            misses: 0,
        }
    }

    /// The bumps due for `ops` (already filtered to what will be sent): one per account key
    /// whose members scored 0 they change.
    pub(crate) fn bumps(&mut self, ops: &[Op], is_account: impl Fn(&str) -> bool) -> Vec<Bump> {
        let mut out: Vec<Bump> = Vec::new();
        for op in ops {
            let (key, added, removed) = match op {
                Op::ZAdd { key, members } if is_account(key) => {
                    let added: Vec<Vec<u8>> = members
                        .iter()
                        .filter(|(s, _)| *s <= 0)
                        .map(|(_, m)| m.clone())
                        .collect();
                    if added.is_empty() {
                        continue;
                    }
                    (key, added, Vec::new())
                }
                Op::ZRem { key, members } if is_account(key) => (key, Vec::new(), members.clone()),
                _ => continue,
            };
            match out.iter_mut().find(|b| b.key == *key) {
                Some(b) => {
                    b.added.extend(added);
                    b.removed.extend(removed);
                }
                None => {
                    self.next_token = self.next_token.wrapping_add(1);
                    out.push(Bump {
                        key: key.clone(),
                        token: self.next_token,
                        added,
                        removed,
                    });
                }
            }
        }
        out
    }

    /// Whether `key`'s timeline may be taken from the cache instead of read (confirmed or
    /// not by [`AccountCache::settle`] of the same call).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.entries
            .get(key)
            .is_some_and(|e| e.filled.elapsed() < MAX_AGE)
    }

    /// After a store call succeeded: `previous[i]` is the token Redis held before `bumps[i]`.
    /// Entries whose token matched take the call's changes; the others go. Timelines the call
    /// read (`reads`, replies in `ks`) are cached with the call's token.
    pub(crate) fn settle(
        &mut self,
        bumps: &[Bump],
        previous: &[Option<u64>],
        reads: &[Read],
        ks: &Keyspace,
    ) {
        for (b, prev) in bumps.iter().zip(previous) {
            let Some(e) = self.entries.get_mut(&b.key) else {
                continue;
            };
            if Some(e.token) == *prev {
                let events = Arc::make_mut(&mut e.events);
                for m in &b.removed {
                    if events.remove(m).is_some() {
                        e.bytes -= member_bytes(m);
                        self.bytes -= member_bytes(m);
                    }
                }
                for m in &b.added {
                    if !events.contains_key(m) {
                        events.insert(m, 0);
                        e.bytes += member_bytes(m);
                        self.bytes += member_bytes(m);
                    }
                }
                e.token = b.token;
            } else {
                self.remove(&b.key);
            }
        }
        let now = Instant::now();
        for read in reads {
            let Read::Unscored(key) = read else { continue };
            let Some(b) = bumps.iter().find(|b| b.key == *key) else {
                continue; // read without a write of ours just before it: no token to trust
            };
            let events: ZSet = ks
                .zset(key)
                .map(|z| {
                    z.iter()
                        .filter(|(_, s)| **s <= 0)
                        .map(|(m, s)| (m, *s))
                        .collect()
                })
                .unwrap_or_default();
            let bytes: usize = events.keys().map(member_bytes).sum();
            self.remove(key);
            if self.bytes + bytes > self.capacity {
                self.shrink();
            }
            self.bytes += bytes;
            self.entries.insert(
                key.clone(),
                Entry {
                    events: Arc::new(events),
                    bytes,
                    token: b.token,
                    filled: now,
                },
            );
        }
        if self.bytes > self.capacity {
            self.shrink();
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= e.bytes;
        }
    }

    /// The cached timeline of `key` if the call that wrote `token` confirmed it; `None`: read
    /// it (the entry is gone).
    pub(crate) fn take(&mut self, key: &str, token: Option<u64>) -> Option<Arc<ZSet>> {
        match self.entries.get(key) {
            Some(e) if Some(e.token) == token => {
                self.hits += 1;
                Some(e.events.clone())
            }
            _ => {
                self.remove(key);
                self.misses += 1;
                None
            }
        }
    }

    /// Timelines taken from the cache, and skipped reads that had to be made after all.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Drops the older half (by fill time).
    fn shrink(&mut self) {
        let mut times: Vec<Instant> = self.entries.values().map(|e| e.filled).collect();
        if times.is_empty() {
            return;
        }
        let mid = times.len() / 2;
        let (_, cut, _) = times.select_nth_unstable(mid);
        let cut = *cut;
        self.entries.retain(|_, e| e.filled > cut);
        self.bytes = self.entries.values().map(|e| e.bytes).sum();
    }
}

/// What one cached member costs: its bytes and the map's overhead around it.
fn member_bytes(m: &[u8]) -> usize {
    m.len() + 64
}
