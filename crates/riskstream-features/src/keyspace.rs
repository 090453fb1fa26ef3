//! The store's data model, shared by both stores: a handful of Redis sorted sets and hashes per
//! entity, the commands that change them ([`Op`]) and read them ([`Read`]), and an in-process
//! copy ([`Keyspace`]) that the in-memory store keeps for good and the Redis store fills from a
//! batch's replies. Every write is commutative and idempotent (set members keyed by event id,
//! first-seen times by `ZADD LT`, trims by time and rank), so the order of deliveries and
//! concurrent workers cannot change the result.
//!
//! Keys (the braces are Redis Cluster hash tags: one entity, one slot):
//!
//! | key | type | members (score) |
//! |---|---|---|
//! | `P:{a:ACCOUNT}:ev` | zset | one per event: id hash, kind, USD cents, device/IP/country hashes (event time) |
//! | `P:{a:ACCOUNT}:ln` | zset | `d:DEVICE`, `i:IP`, `c:COUNTRY`, `x:DESTINATION`, `m:DOCUMENT` (first seen), `p:ID`/`f:ID` password / MFA changes (event time), `L` label (label time) |
//! | `P:{d:DEVICE}:acc`, `P:{i:IP}:acc`, `P:{m:DOC}:acc` | zset | accounts (first seen) |
//! | `P:{d:DEVICE}:ses` | zset | capture sessions: `f`/`p` (vendor check failed / passed) + id hash (event time) |
//! | `P:{d:…}:taint`, `P:{i:…}:taint`, `P:{m:…}:taint` | hash | labelled account -> 1 (on this entity) or 2 (two hops away) |

use std::collections::HashMap;

/// A sorted set: member -> score.
pub(crate) type ZSet = HashMap<Vec<u8>, i64>;

/// Sorted sets and hashes by key.
#[derive(Default, Debug, Clone)]
pub(crate) struct Keyspace {
    pub(crate) zsets: HashMap<String, ZSet>,
    pub(crate) hashes: HashMap<String, HashMap<String, u8>>,
}

/// A write. Each names one key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// `ZADD key [LT] score member …`: LT keeps the lowest score (first seen).
    ZAdd {
        key: String,
        lt: bool,
        members: Vec<(i64, Vec<u8>)>,
    },
    /// `ZREM key member …`
    ZRem { key: String, members: Vec<Vec<u8>> },
    /// `ZREMRANGEBYSCORE key -inf (score`: drop members older than `score`.
    ZTrimBelow { key: String, score: i64 },
    /// `ZREMRANGEBYRANK key n -1`: keep the `n` lowest (oldest).
    ZKeepLowest { key: String, n: usize },
    /// `ZREMRANGEBYRANK key 0 -(n+1)`: keep the `n` highest (newest).
    ZKeepHighest { key: String, n: usize },
    /// `HSET` (or `HSETNX` when `only_new`).
    HSet {
        key: String,
        field: String,
        value: u8,
        only_new: bool,
    },
    /// `HDEL key field`
    HDel { key: String, field: String },
    /// `PEXPIRE key ms` (the in-memory store keeps no TTLs; its state is bounded by the trims).
    Expire { key: String, ms: i64 },
}

/// A read. Each names one key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Read {
    /// `ZRANGE key 0 -1 WITHSCORES`
    ZRange(String),
    /// `ZRANGE key 0 -1`: members only (their scores read as 0), for sets whose members carry
    /// what is needed.
    ZMembers(String),
    /// `HGETALL key`
    HGetAll(String),
}

impl Op {
    pub(crate) fn key(&self) -> &str {
        match self {
            Op::ZAdd { key, .. }
            | Op::ZRem { key, .. }
            | Op::ZTrimBelow { key, .. }
            | Op::ZKeepLowest { key, .. }
            | Op::ZKeepHighest { key, .. }
            | Op::HSet { key, .. }
            | Op::HDel { key, .. }
            | Op::Expire { key, .. } => key,
        }
    }
}

impl Read {
    pub(crate) fn key(&self) -> &str {
        match self {
            Read::ZRange(k) | Read::ZMembers(k) | Read::HGetAll(k) => k,
        }
    }
}

/// Members sorted as Redis ranks them: by score, then by member bytes.
fn ranked(z: &ZSet) -> Vec<(i64, Vec<u8>)> {
    let mut v: Vec<(i64, Vec<u8>)> = z.iter().map(|(m, s)| (*s, m.clone())).collect();
    v.sort();
    v
}

impl Keyspace {
    /// Applies one write exactly as Redis would.
    pub(crate) fn apply(&mut self, op: &Op) {
        match op {
            Op::ZAdd { key, lt, members } => {
                let z = self.zsets.entry(key.clone()).or_default();
                for (score, member) in members {
                    match z.get_mut(member) {
                        Some(s) if *lt => *s = (*s).min(*score),
                        Some(s) => *s = *score,
                        None => {
                            z.insert(member.clone(), *score);
                        }
                    }
                }
            }
            Op::ZRem { key, members } => {
                if let Some(z) = self.zsets.get_mut(key) {
                    for m in members {
                        z.remove(m);
                    }
                }
            }
            Op::ZTrimBelow { key, score } => {
                if let Some(z) = self.zsets.get_mut(key) {
                    z.retain(|_, s| *s >= *score);
                }
            }
            Op::ZKeepLowest { key, n } | Op::ZKeepHighest { key, n } => {
                let Some(z) = self.zsets.get_mut(key) else {
                    return;
                };
                if z.len() <= *n {
                    return;
                }
                let ranked = ranked(z);
                let drop = ranked.len() - n;
                let doomed = if matches!(op, Op::ZKeepLowest { .. }) {
                    &ranked[*n..]
                } else {
                    &ranked[..drop]
                };
                for (_, m) in doomed {
                    z.remove(m);
                }
            }
            Op::HSet {
                key,
                field,
                value,
                only_new,
            } => {
                let h = self.hashes.entry(key.clone()).or_default();
                if *only_new {
                    h.entry(field.clone()).or_insert(*value);
                } else {
                    h.insert(field.clone(), *value);
                }
            }
            Op::HDel { key, field } => {
                if let Some(h) = self.hashes.get_mut(key) {
                    h.remove(field);
                }
            }
            Op::Expire { .. } => {}
        }
    }

    /// Copies what `reads` name into a new keyspace (missing keys read as empty).
    pub(crate) fn read(&self, reads: &[Read]) -> Keyspace {
        let mut out = Keyspace::default();
        for r in reads {
            match r {
                Read::ZRange(k) | Read::ZMembers(k) => {
                    out.zsets
                        .insert(k.clone(), self.zsets.get(k).cloned().unwrap_or_default());
                }
                Read::HGetAll(k) => {
                    out.hashes
                        .insert(k.clone(), self.hashes.get(k).cloned().unwrap_or_default());
                }
            }
        }
        out
    }

    pub(crate) fn zset(&self, key: &str) -> Option<&ZSet> {
        self.zsets.get(key)
    }

    pub(crate) fn hash(&self, key: &str) -> Option<&HashMap<String, u8>> {
        self.hashes.get(key)
    }
}

/// The kinds of shared entity an account links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Node {
    Device,
    Ip,
    Document,
}

impl Node {
    /// The tag letter in keys and the link-member prefix in `:ln`.
    pub(crate) fn letter(self) -> char {
        match self {
            Node::Device => 'd',
            Node::Ip => 'i',
            Node::Document => 'm',
        }
    }
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
    pub(crate) fn events(&self, account: &str) -> String {
        format!("{}:{{a:{account}}}:ev", self.prefix)
    }
    pub(crate) fn links(&self, account: &str) -> String {
        format!("{}:{{a:{account}}}:ln", self.prefix)
    }
    pub(crate) fn accounts(&self, node: Node, id: &str) -> String {
        format!("{}:{{{}:{id}}}:acc", self.prefix, node.letter())
    }
    pub(crate) fn taint(&self, node: Node, id: &str) -> String {
        format!("{}:{{{}:{id}}}:taint", self.prefix, node.letter())
    }
    pub(crate) fn sessions(&self, device: &str) -> String {
        format!("{}:{{d:{device}}}:ses", self.prefix)
    }
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
    fn rank_trims_follow_redis_ordering() {
        let mut ks = Keyspace::default();
        let members = vec![
            (3, b"c".to_vec()),
            (1, b"b".to_vec()),
            (1, b"a".to_vec()),
            (2, b"z".to_vec()),
        ];
        ks.apply(&Op::ZAdd {
            key: "k".into(),
            lt: false,
            members,
        });
        let mut low = ks.clone();
        low.apply(&Op::ZKeepLowest {
            key: "k".into(),
            n: 2,
        });
        assert_eq!(
            ranked(&low.zsets["k"]),
            vec![(1, b"a".to_vec()), (1, b"b".to_vec())]
        );
        ks.apply(&Op::ZKeepHighest {
            key: "k".into(),
            n: 2,
        });
        assert_eq!(
            ranked(&ks.zsets["k"]),
            vec![(2, b"z".to_vec()), (3, b"c".to_vec())]
        );
        ks.apply(&Op::ZAdd {
            key: "k".into(),
            lt: true,
            members: vec![(1, b"c".to_vec()), (9, b"z".to_vec())],
        });
        assert_eq!(
            ranked(&ks.zsets["k"]),
            vec![(1, b"c".to_vec()), (2, b"z".to_vec())]
        );
    }
}
