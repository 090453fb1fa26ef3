//! The store's data model, shared by both stores: one Redis sorted set per entity plus hashes
//! of first features, the commands that change them ([`Op`]) and read them ([`Read`]), and an
//! in-process copy ([`Keyspace`]) that the in-memory store keeps for good and the Redis store
//! fills from a batch's replies. Every write is commutative and idempotent (members keyed by
//! event id, first-seen times by `ZADD LT`, first features by `HSETNX`, tiles as deterministic
//! summaries, trims as explicit `ZREM`s), so the order of deliveries and concurrent workers
//! cannot change the result.
//!
//! Keys (the braces are Redis Cluster hash tags: one entity, one slot): a sorted set per entity
//! — `P:{a:ACCOUNT}:l`, `P:{d:DEVICE}:l`, `P:{i:IP}:l`, `P:{m:DOCUMENT}:l`, `P:{x:ADDRESS}:l`;
//! on Redis a string holding the log of its commands (`log.rs`) — holding its links, and its
//! timed members: an account's raw events and tiles, a device's capture sessions and theirs
//! (members listed in `algorithm.rs`); and per hour of event time and one of
//! [`first::BUCKETS`](crate::first) buckets of event ids a hash of the first features those events
//! got, `P:{f:HOUR:BUCKET}` (field: event-id hash). Per batch and entity: one write (`APPEND`
//! of the `ZADD LT` / `ZREM` records), one `PEXPIRE` (at most every 10 minutes) and one read
//! (a place in one of the batch's `MGET`s on a single server, a `GET` on a cluster); per hour and
//! bucket the batch touches, one `HMGET` and one write of its new first features.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The hashing of the store's in-process maps: foldhash, seeded per process (fast on short
/// byte strings; the seed keeps chosen member names from colliding on purpose in the in-memory
/// store, whose maps live across batches).
pub(crate) type Seeded = foldhash::fast::RandomState;

/// A sorted set: member -> score (`zset.rs`).
pub(crate) use crate::zset::ZSet;

/// A hash: field -> value.
pub(crate) type Hash = HashMap<Vec<u8>, Vec<u8>, Seeded>;

/// Sorted sets and hashes by key, and the keys' expiry times (kept by the in-memory store only;
/// a copy read from Redis has none).
#[derive(Default, Debug, Clone)]
pub(crate) struct Keyspace {
    pub(crate) zsets: HashMap<String, ZSet, Seeded>,
    pub(crate) hashes: HashMap<String, Hash, Seeded>,
    expiry: HashMap<String, Instant, Seeded>,
    swept: Option<Instant>,
    /// Redis store only: the entity logs this copy read whole, as read (`log.rs`), for the
    /// batch's follow-up write to compact them along with its own records.
    pub(crate) logs: HashMap<String, crate::log::Ends, Seeded>,
    /// Redis store only: compactions the read found due on logs it read whole, held for the
    /// batch's follow-up write (`redis_store.rs`).
    pub(crate) due: Vec<(String, crate::log::Compacted)>,
}

/// A write. Each names one key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// `ZADD key LT score member …`: new members are added; an existing member keeps the lower
    /// score (first seen), so repeating a write changes nothing.
    ZAdd {
        key: String,
        members: Vec<(i64, Vec<u8>)>,
    },
    /// `ZREM key member …`
    ZRem { key: String, members: Vec<Vec<u8>> },
    /// `HSETNX key field value` for each pair: the first value written to a field stays.
    HSetNx {
        key: String,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// `PEXPIRE key ms`.
    Expire { key: String, ms: i64 },
}

/// A read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Read {
    /// `ZRANGE key 0 -1 WITHSCORES`: the whole set.
    ZRange(String),
    /// `ZRANGE key (0 +inf BYSCORE WITHSCORES`: the members scored above 0 (an account's links,
    /// scored by first-seen time).
    Scored(String),
    /// `ZRANGE key -inf 0 BYSCORE`: the members scored 0, without scores (an account's events
    /// and tiles, which carry their times inside: Redis spends more formatting a score than
    /// sending a member).
    Unscored(String),
    /// `HMGET key field …` (absent fields stay absent in the copy).
    HMGet { key: String, fields: Vec<Vec<u8>> },
}

impl Keyspace {
    /// Applies one write exactly as Redis would.
    pub(crate) fn apply(&mut self, op: &Op) {
        match op {
            Op::ZAdd { key, members } => {
                let z = self.zsets.entry(key.clone()).or_default();
                for (score, member) in members {
                    z.add_lt(member, *score);
                }
            }
            Op::ZRem { key, members } => {
                if let Some(z) = self.zsets.get_mut(key) {
                    for m in members {
                        z.remove(m);
                    }
                }
            }
            Op::HSetNx { key, fields } => {
                let h = self.hashes.entry(key.clone()).or_default();
                for (field, value) in fields {
                    h.entry(field.clone()).or_insert_with(|| value.clone());
                }
            }
            Op::Expire { key, ms } => {
                if self.zsets.contains_key(key) || self.hashes.contains_key(key) {
                    let at = Instant::now() + Duration::from_millis((*ms).max(0) as u64);
                    self.expiry.insert(key.clone(), at);
                }
            }
        }
    }

    /// Forgets keys whose TTL has passed, as Redis does (checked at most once a minute).
    pub(crate) fn expire(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|at| now.duration_since(at) < Duration::from_secs(60))
        {
            return;
        }
        self.swept = Some(now);
        let gone: Vec<String> = self
            .expiry
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.expiry.remove(&k);
            self.zsets.remove(&k);
            self.hashes.remove(&k);
        }
    }

    /// Copies what `reads` name into a new keyspace (missing keys read as empty).
    pub(crate) fn read(&self, reads: &[Read]) -> Keyspace {
        let mut out = Keyspace::default();
        for read in reads {
            match read {
                Read::ZRange(k) | Read::Scored(k) | Read::Unscored(k) => {
                    // Two reads of one key fill one copy.
                    let copy = out.zsets.entry(k.clone()).or_default();
                    let members = self.zsets.get(k).into_iter().flatten();
                    copy.extend(
                        members
                            .filter(|(_, s)| match read {
                                Read::Scored(_) => **s > 0,
                                Read::Unscored(_) => **s <= 0,
                                _ => true,
                            })
                            .map(|(m, s)| {
                                let unscored = matches!(read, Read::Unscored(_));
                                (m, if unscored { 0 } else { *s })
                            }),
                    );
                }
                Read::HMGet { key, fields } => {
                    let h = out.hashes.entry(key.clone()).or_default();
                    if let Some(src) = self.hashes.get(key) {
                        for f in fields {
                            if let Some(v) = src.get(f) {
                                h.insert(f.clone(), v.clone());
                            }
                        }
                    }
                }
            }
        }
        out
    }

    pub(crate) fn zset(&self, key: &str) -> Option<&ZSet> {
        self.zsets.get(key)
    }

    /// One field of a hash.
    pub(crate) fn hash_field(&self, key: &str, field: &[u8]) -> Option<&[u8]> {
        self.hashes.get(key)?.get(field).map(|v| v.as_slice())
    }
}

/// The kinds of shared entity an account links to. Devices, IPs and documents make the
/// identity graph (graph features, label propagation); a payout destination's set only counts
/// the accounts paying it (fan-in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Node {
    Device,
    Ip,
    Document,
    Destination,
}

impl Node {
    /// The tag letter in keys and the link-member prefix in an account's set.
    pub(crate) fn letter(self) -> char {
        match self {
            Node::Device => 'd',
            Node::Ip => 'i',
            Node::Document => 'm',
            Node::Destination => 'x',
        }
    }
    /// The identity-graph entity an account-set link names (destinations are not in the graph).
    pub(crate) fn from_letter(c: u8) -> Option<Node> {
        match c {
            b'd' => Some(Node::Device),
            b'i' => Some(Node::Ip),
            b'm' => Some(Node::Document),
            _ => None,
        }
    }
}

/// Key names under one deployment prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }
    pub(crate) fn account(&self, account: &str) -> String {
        concat(&[&self.prefix, ":{a:", account, LAYOUT])
    }
    /// Whether `key` is an account's set (not its version key or another entity's).
    pub(crate) fn is_account(&self, key: &str) -> bool {
        key.strip_prefix(self.prefix.as_str())
            .is_some_and(|k| k.starts_with(":{a:") && k.ends_with(LAYOUT))
    }
    /// The hash of first features of the events in hour `hour` (event time / 1 h) whose id
    /// falls in `bucket` (`first.rs`).
    pub(crate) fn first_features(&self, (hour, bucket): crate::first::Slot) -> String {
        format!("{}:{{f:{hour}:{bucket}}}", self.prefix)
    }
    pub(crate) fn node(&self, node: Node, id: &str) -> String {
        concat(&[&self.prefix, node_tag(node), id, LAYOUT])
    }
    /// [`Keys::account`] written into `buf` (a lookup's key without an allocation).
    pub(crate) fn account_in<'b>(&self, buf: &'b mut String, account: &str) -> &'b str {
        concat_in(buf, &[&self.prefix, ":{a:", account, LAYOUT])
    }
    /// [`Keys::node`] written into `buf`.
    pub(crate) fn node_in<'b>(&self, buf: &'b mut String, node: Node, id: &str) -> &'b str {
        concat_in(buf, &[&self.prefix, node_tag(node), id, LAYOUT])
    }
}

fn node_tag(node: Node) -> &'static str {
    match node {
        Node::Device => ":{d:",
        Node::Ip => ":{i:",
        Node::Document => ":{m:",
        Node::Destination => ":{x:",
    }
}

/// The parts one after the other in `buf` (cleared first).
fn concat_in<'b>(buf: &'b mut String, parts: &[&str]) -> &'b str {
    buf.clear();
    for p in parts {
        buf.push_str(p);
    }
    buf
}

/// The end of an entity's key: its hash tag's close and the layout of its value. `}:l` — a
/// string log of the sorted set (`log.rs`); keys of the earlier layout (`…}`, Redis sorted sets)
/// are never read or written again and expire by their TTL.
const LAYOUT: &str = "}:l";

/// The parts one after the other, allocated once (key names are built per entity and batch).
fn concat(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    concat_in(&mut s, parts);
    s
}

/// The hash tag of a key (what Redis Cluster hashes): the text between the first `{` and the
/// next `}`, or the whole key.
pub(crate) fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The Redis Cluster slot of a key: CRC16 (XMODEM) of its hash tag, mod 16384.
pub(crate) fn slot(key: &str) -> u16 {
    let mut crc: u16 = 0;
    for &b in hash_tag(key).as_bytes() {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// FxHash (rustc's hasher) for the per-batch maps of the algorithm: much faster than SipHash on
/// short keys. Not collision-resistant against chosen keys, so only for maps bounded by one
/// batch (the worst case is then bounded too), never for state that lives across batches.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 59));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// A per-batch hash map / set (see [`FxHasher`]).
pub(crate) type BatchMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;
pub(crate) type BatchSet<K> = std::collections::HashSet<K, std::hash::BuildHasherDefault<FxHasher>>;

/// A stable 64-bit hash (FNV-1a) for event ids and link values stored compactly; 0 is kept
/// for "none".
pub(crate) fn hash64(s: &str) -> u64 {
    if s.is_empty() {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in s.as_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from `CLUSTER KEYSLOT` on a real server.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("bar"), 5061);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("p:{a:42}:ev"), slot("q:{a:42}:ln"));
        assert_eq!(hash_tag("foo{}{bar}"), "foo{}{bar}");
    }

    #[test]
    fn zadd_keeps_the_first_seen_score() {
        let mut ks = Keyspace::default();
        let add = |members: Vec<(i64, &[u8])>| Op::ZAdd {
            key: "k".into(),
            members: members.into_iter().map(|(s, m)| (s, m.to_vec())).collect(),
        };
        ks.apply(&add(vec![(3, b"c"), (1, b"b")]));
        ks.apply(&add(vec![(2, b"c"), (5, b"b"), (9, b"z")]));
        let z = &ks.zsets["k"];
        assert_eq!(
            (z[b"c".as_slice()], z[b"b".as_slice()], z[b"z".as_slice()]),
            (2, 1, 9)
        );
        ks.apply(&Op::ZRem {
            key: "k".into(),
            members: vec![b"z".to_vec()],
        });
        assert_eq!(ks.zsets["k"].len(), 2);
    }
}
