//! [`ZSet`]: an entity's sorted set in process — member → score — kept in one byte buffer.
//!
//! Why not a `HashMap<Vec<u8>, i64>`: every member there is its own heap allocation, so folding
//! an entity's log (`log.rs`) allocates once per member and frees them all after the batch, and
//! reading a set's members (`tiles.rs` decodes an old account's ~50 tiles per event) jumps to a
//! separate allocation for each — cache misses that were most of `Timeline::of`'s time. Here the
//! members sit back to back in one buffer and their (offset, length, score) entries in one
//! vector, in insertion order; a hash table of entry indices finds a member. Removal marks the
//! entry dead; the buffer is rebuilt once dead entries outnumber the live ones (the in-memory
//! store keeps sets for good).

use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::keyspace::Seeded;

/// Length of a dead entry.
const DEAD: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: u32,
    len: u32,
    score: i64,
}

/// A sorted set: member -> score (Redis's `ZADD` / `ZREM` semantics are the callers').
#[derive(Clone, Default)]
pub(crate) struct ZSet {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    /// Indices into `entries` of the live members.
    index: HashTable<u32>,
    dead: usize,
    hasher: Seeded,
}

impl std::fmt::Debug for ZSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(m, s)| (String::from_utf8_lossy(m), s)))
            .finish()
    }
}

impl PartialEq for ZSet {
    fn eq(&self, other: &ZSet) -> bool {
        self.len() == other.len() && self.iter().all(|(m, s)| other.get(m) == Some(s))
    }
}

fn member<'a>(bytes: &'a [u8], e: &Entry) -> &'a [u8] {
    &bytes[e.at as usize..(e.at + e.len) as usize]
}

impl ZSet {
    fn hash(&self, member: &[u8]) -> u64 {
        self.hasher.hash_one(member)
    }

    fn find(&self, member: &[u8]) -> Option<u32> {
        let (bytes, entries) = (&self.bytes, &self.entries);
        self.index
            .find(self.hash(member), |&i| {
                crate::zset::member(bytes, &entries[i as usize]) == member
            })
            .copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Room for about `members` more members of `bytes` bytes in all.
    pub(crate) fn reserve(&mut self, members: usize, bytes: usize) {
        self.entries.reserve(members);
        self.bytes.reserve(bytes);
        let ZSet {
            bytes: b,
            entries,
            index,
            hasher,
            ..
        } = self;
        index.reserve(members, |&i| {
            hasher.hash_one(member(b, &entries[i as usize]))
        });
    }

    pub(crate) fn get(&self, member: &[u8]) -> Option<&i64> {
        self.find(member).map(|i| &self.entries[i as usize].score)
    }

    pub(crate) fn contains_key(&self, member: &[u8]) -> bool {
        self.find(member).is_some()
    }

    /// `ZADD … LT`: adds `member` with `score`, or keeps the lower of the two scores.
    pub(crate) fn add_lt(&mut self, m: &[u8], score: i64) {
        self.upsert(m, score, |old| (*old).min(score));
    }

    /// Sets `member`'s score (adds it if absent).
    pub(crate) fn insert(&mut self, m: &[u8], score: i64) {
        self.upsert(m, score, |_| score);
    }

    fn upsert(&mut self, m: &[u8], score: i64, update: impl FnOnce(&i64) -> i64) {
        let hash = self.hash(m);
        let ZSet {
            bytes,
            entries,
            index,
            hasher,
            ..
        } = self;
        match index.find(hash, |&i| member(bytes, &entries[i as usize]) == m) {
            Some(&i) => {
                let e = &mut entries[i as usize];
                e.score = update(&e.score);
            }
            None => {
                let at = u32::try_from(bytes.len()).expect("a set under 4 GiB");
                bytes.extend_from_slice(m);
                entries.push(Entry {
                    at,
                    len: m.len() as u32,
                    score,
                });
                let i = (entries.len() - 1) as u32;
                index.insert_unique(hash, i, |&j| {
                    hasher.hash_one(member(bytes, &entries[j as usize]))
                });
            }
        }
    }

    /// `ZREM`: removes `member`; returns its score if it was there.
    pub(crate) fn remove(&mut self, m: &[u8]) -> Option<i64> {
        let hash = self.hash(m);
        let (bytes, entries) = (&self.bytes, &mut self.entries);
        let found = self
            .index
            .find_entry(hash, |&i| member(bytes, &entries[i as usize]) == m)
            .ok()?;
        let (i, _) = found.remove();
        let e = &mut entries[i as usize];
        e.len = DEAD;
        let score = e.score;
        self.dead += 1;
        if self.dead > 32 && self.dead > self.index.len() {
            self.rebuild();
        }
        Some(score)
    }

    /// Drops the dead entries and their bytes.
    fn rebuild(&mut self) {
        let mut fresh = ZSet {
            hasher: self.hasher.clone(),
            ..ZSet::default()
        };
        fresh.reserve(self.len(), self.bytes.len());
        for (m, s) in self.iter() {
            fresh.insert(m, *s);
        }
        *self = fresh;
    }

    /// Members and scores, in insertion order.
    pub(crate) fn iter(&self) -> Iter<'_> {
        Iter {
            bytes: &self.bytes,
            entries: self.entries.iter(),
        }
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.iter().map(|(m, _)| m)
    }

    #[cfg(test)]
    pub(crate) fn values(&self) -> impl Iterator<Item = &i64> + '_ {
        self.iter().map(|(_, s)| s)
    }

    /// Adds every member of `other` (its score replaces a member's own, as `HashMap::extend`).
    pub(crate) fn extend_from(&mut self, other: &ZSet) {
        self.reserve(other.len(), other.bytes.len());
        for (m, s) in other.iter() {
            self.insert(m, *s);
        }
    }
}

impl std::ops::Index<&[u8]> for ZSet {
    type Output = i64;
    fn index(&self, member: &[u8]) -> &i64 {
        self.get(member).expect("a member of the set")
    }
}

/// A set's members and scores, in insertion order ([`ZSet::iter`]).
pub(crate) struct Iter<'a> {
    bytes: &'a [u8],
    entries: std::slice::Iter<'a, Entry>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], &'a i64);
    fn next(&mut self) -> Option<Self::Item> {
        let e = self.entries.find(|e| e.len != DEAD)?;
        Some((member(self.bytes, e), &e.score))
    }
}

impl<'a> IntoIterator for &'a ZSet {
    type Item = (&'a [u8], &'a i64);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<'a> Extend<(&'a [u8], i64)> for ZSet {
    fn extend<I: IntoIterator<Item = (&'a [u8], i64)>>(&mut self, iter: I) {
        for (m, s) in iter {
            self.insert(m, s);
        }
    }
}

impl<'a> FromIterator<(&'a [u8], i64)> for ZSet {
    fn from_iter<I: IntoIterator<Item = (&'a [u8], i64)>>(iter: I) -> ZSet {
        let mut z = ZSet::default();
        for (m, s) in iter {
            z.insert(m, s);
        }
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map_through_adds_removals_and_rebuilds() {
        let mut z = ZSet::default();
        let mut model: std::collections::HashMap<Vec<u8>, i64> = Default::default();
        // Deterministic pseudo-random operations over a small member space.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let m = format!("member-{}", x % 300).into_bytes();
            let score = (x >> 20) as i64 % 1000 - 500;
            match x % 4 {
                0 => {
                    assert_eq!(z.remove(&m), model.remove(&m), "step {step}");
                }
                1 => {
                    z.insert(&m, score);
                    model.insert(m, score);
                }
                _ => {
                    z.add_lt(&m, score);
                    let s = model.entry(m).or_insert(score);
                    *s = (*s).min(score);
                }
            }
            assert_eq!(z.len(), model.len(), "step {step}");
        }
        for (m, s) in &model {
            assert_eq!(z.get(m), Some(s));
        }
        let mut listed: Vec<(Vec<u8>, i64)> = z.iter().map(|(m, s)| (m.to_vec(), *s)).collect();
        listed.sort();
        let mut expected: Vec<(Vec<u8>, i64)> = model.into_iter().collect();
        expected.sort();
        assert_eq!(listed, expected);
        assert!(
            z.dead <= 32 || z.dead <= z.len(),
            "dead entries are dropped"
        );
        assert!(!z.contains_key(b"absent"));
        let copy = z.clone();
        assert_eq!(copy, z);
    }
}
