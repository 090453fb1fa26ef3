//! The Redis store's **log cache**: the entity logs (`log.rs`) it read lately, folded, so that
//! the next read of a long one fetches only what was appended since, not the whole log again.
//!
//! An old account's log is kilobytes (a week of tiles) and is read whole and folded on every
//! event; between two reads it usually only grew by a few records. A log that starts with a
//! compaction's stamp (`#` and 8 random bytes) changes its first bytes whenever it is rewritten
//! — a compaction writes a fresh stamp, a key that expired or was deleted and written again
//! starts without one — and otherwise only grows by `APPEND`s. So the store keeps, per log it read
//! whole (every member, [`crate::log::Want`] both ways), its length, its ends and the folded
//! set; the next read sends [`crate::log::SUFFIXES`] with the stamp, the length and the 16 bytes
//! before it, and gets either the bytes appended since (folded onto a copy of the set: the same
//! set and compaction as folding the whole log) or, if anything else happened, the whole log.
//! One round trip either way, correct whoever else writes: it needs no ownership of accounts.
//!
//! Only stamped logs of at least [`MIN_LEN`] bytes are kept (a short log costs less to read
//! whole than to check). Bounded: at most about `capacity` bytes of sets (the older half dropped
//! when full), and an entry is used at most [`MAX_AGE`] after it was filled (a writer that
//! rewrites a log some other way — an operator's edit — is seen within that time). Plain
//! `redis://` only: on a cluster the keys of one script call would have to share a slot.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::keyspace::{Seeded, ZSet};
use crate::log::Ends;

/// Shortest log kept.
pub(crate) const MIN_LEN: usize = 512;
/// How long an entry is used after it was filled.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(600);
/// Memory for held sets, bytes (the store's default).
pub(crate) const CAPACITY: usize = 32 << 20;

/// A log as read: its ends and its set, folded.
pub(crate) struct Held {
    pub(crate) ends: Ends,
    pub(crate) set: ZSet,
}

struct Entry {
    held: Arc<Held>,
    bytes: usize,
    filled: Instant,
}

pub(crate) struct LogCache {
    entries: HashMap<String, Entry, Seeded>,
    capacity: usize,
    min_len: usize,
    bytes: usize,
    /// Reads answered with what was appended, and reads of a held log answered whole.
    pub(crate) suffixes: u64,
    pub(crate) wholes: u64,
}

impl LogCache {
    /// A cache of about `capacity` bytes keeping stamped logs of at least `min_len` bytes.
    pub(crate) fn new(capacity: usize, min_len: usize) -> Self {
        LogCache {
            entries: HashMap::default(),
            capacity,
            min_len,
            bytes: 0,
            suffixes: 0,
            wholes: 0,
        }
    }

    /// The log `key` as last read, if held and young enough.
    pub(crate) fn get(&self, key: &str, now: Instant) -> Option<Arc<Held>> {
        self.entries
            .get(key)
            .filter(|e| now.duration_since(e.filled) < MAX_AGE)
            .map(|e| e.held.clone())
    }

    /// Keeps `key` as read now (`ends`, `set`) if it is worth keeping; an older, shorter copy
    /// of the same log is replaced, a longer one (a later read that answered first) kept.
    pub(crate) fn keep(&mut self, key: &str, ends: &Ends, set: &ZSet, now: Instant) {
        if !ends.stamped() || ends.len < self.min_len {
            self.forget(key);
            return;
        }
        if let Some(e) = self.entries.get(key) {
            if e.held.ends.head() == ends.head() && e.held.ends.len > ends.len {
                return;
            }
        }
        let bytes = key.len() + set.heap_bytes() + std::mem::size_of::<Held>() + 64;
        if self.bytes + bytes > self.capacity {
            self.shed();
        }
        let held = Arc::new(Held {
            ends: ends.clone(),
            set: set.clone(),
        });
        self.bytes += bytes;
        if let Some(old) = self.entries.insert(
            key.to_string(),
            Entry {
                held,
                bytes,
                filled: now,
            },
        ) {
            self.bytes -= old.bytes;
        }
    }

    pub(crate) fn forget(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= old.bytes;
        }
    }

    /// Drops the older half of the entries.
    fn shed(&mut self) {
        let mut filled: Vec<Instant> = self.entries.values().map(|e| e.filled).collect();
        if filled.is_empty() {
            return;
        }
        let mid = filled.len() / 2;
        let (_, cut, _) = filled.select_nth_unstable(mid);
        let cut = *cut;
        let mut freed = 0;
        self.entries.retain(|_, e| {
            let keep = e.filled > cut;
            if !keep {
                freed += e.bytes;
            }
            keep
        });
        self.bytes -= freed;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped_log(len: usize) -> (Ends, ZSet) {
        let mut log = vec![b'#', 1, 2, 3, 4, 5, 6, 7, 8];
        log.resize(len, b'x');
        (Ends::of(&log), ZSet::default())
    }

    #[test]
    fn keeps_stamped_long_logs_only_and_the_longer_copy() {
        let now = Instant::now();
        let mut c = LogCache::new(1 << 20, 100);
        let (short, set) = stamped_log(50);
        c.keep("a", &short, &set, now);
        assert!(c.get("a", now).is_none(), "too short");
        let unstamped = Ends::of(&[b'+'; 200]);
        c.keep("a", &unstamped, &set, now);
        assert!(c.get("a", now).is_none(), "not stamped");
        let (long, set) = stamped_log(300);
        c.keep("a", &long, &set, now);
        assert_eq!(c.get("a", now).unwrap().ends.len, 300);
        let (shorter, set) = stamped_log(200);
        c.keep("a", &shorter, &set, now);
        assert_eq!(c.get("a", now).unwrap().ends.len, 300, "an earlier read");
        assert!(c.get("a", now + MAX_AGE).is_none(), "too old");
        c.keep("a", &unstamped, &set, now);
        assert!(c.get("a", now).is_none(), "rewritten without a stamp");
    }

    #[test]
    fn sheds_the_older_half_when_full() {
        let t0 = Instant::now();
        let (ends, set) = stamped_log(300);
        let one = 1 + set.heap_bytes() + std::mem::size_of::<Held>() + 64;
        let mut c = LogCache::new(10 * one, 100);
        for i in 0..10u64 {
            c.keep(&i.to_string(), &ends, &set, t0 + Duration::from_millis(i));
        }
        assert_eq!(c.len(), 10);
        c.keep("x", &ends, &set, t0 + Duration::from_millis(20));
        assert!(c.len() <= 6, "{}", c.len());
        assert!(c.get("9", t0).is_some() && c.get("x", t0).is_some());
        assert!(c.get("0", t0).is_none());
        assert!(c.bytes <= c.capacity);
    }
}
