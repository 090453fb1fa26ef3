//! How the Redis store keeps one entity's sorted set (`keyspace.rs`): as a Redis **string** that
//! is a log of the set's commands, appended with `APPEND` and read with `GET` / `MGET`.
//!
//! Why not a Redis sorted set: Redis's time is paid per command and per member formatted
//! (`ZRANGE … WITHSCORES` was 4.5 µs a call here, four calls per event); a string is one
//! `memcpy` to read however many members it holds, so reading every entity of a batch is a few
//! `MGET`s and each entity's writes one `APPEND`.
//!
//! Records, one after the other: `+` score member (an `Op::ZAdd` member) or `-` member (an
//! `Op::ZRem` member); the score is a zig-zag LEB128 varint, the member a LEB128 length and its
//! bytes. Reading folds the log from the start exactly as Redis would have run the commands in
//! that order: an add keeps the lower score of a member already there (`ZADD LT`), a removal
//! drops it. Every `APPEND` is atomic, so concurrent writers interleave whole batches of records,
//! as their commands would have interleaved on a sorted set: the store keeps every guarantee it
//! had (commutative, idempotent writes; see `keyspace.rs`).
//!
//! **Compaction.** Removals and repeated adds leave dead records. When a read finds more dead
//! bytes than live ones (and at least [`COMPACT_MIN_DEAD`]), the store rewrites the key as a
//! fresh random *stamp* record (`#` and 8 bytes, no state) followed by the live members, with
//! [`COMPACT`]: only if the key is still at least as long as what was read and still holds the
//! same bytes at both ends of it (its first and last [`CHECK_BYTES`]), keeping whatever was
//! appended after it. Between the read and the rewrite a log only grows by appends, unless
//! another store compacted it — which changed its first bytes, the stamp — or it was deleted and
//! rebuilt, which would have to reproduce the same length and the same bytes at both ends within
//! one round trip. The fold of (live members + the rest) equals the fold of (what was read + the
//! rest), so a compaction never loses or resurrects anything, and one that lost a race is simply
//! skipped. A key therefore stays within about twice its live size (plus one batch's appends).

use crate::keyspace::ZSet;
use crate::StoreError;

/// Compacts a key (`KEYS[1]`) read as `ARGV[1]` bytes whose first and last bytes were `ARGV[2]`
/// and `ARGV[3]` to `ARGV[4]` if it still is at least that long with the same bytes there,
/// keeping what was appended since and the key's TTL; if it cannot, appends `ARGV[5]` (a batch's
/// follow-up records, already applied in `ARGV[4]`; empty for a compaction found by a read).
/// Returns 1 if it compacted.
pub(crate) const COMPACT: &str = "local n = tonumber(ARGV[1]) \
if redis.call('STRLEN', KEYS[1]) >= n \
and redis.call('GETRANGE', KEYS[1], 0, #ARGV[2] - 1) == ARGV[2] \
and redis.call('GETRANGE', KEYS[1], n - #ARGV[3], n - 1) == ARGV[3] then \
local rest = redis.call('GETRANGE', KEYS[1], n, -1) \
redis.call('SET', KEYS[1], ARGV[4] .. rest, 'KEEPTTL') return 1 end \
if #ARGV[5] > 0 then redis.call('APPEND', KEYS[1], ARGV[5]) end return 0";

/// Bytes compared at each end of a log before it is compacted.
pub(crate) const CHECK_BYTES: usize = 64;

/// A compaction due: what to check of the log as read, and the new log.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Compacted {
    pub(crate) ends: Ends,
    pub(crate) log: Vec<u8>,
}

/// What a compaction checks of a log as read: its length and the bytes at both ends (kept
/// inline: one is noted per entity read whole, every batch).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ends {
    pub(crate) len: usize,
    n: usize,
    head: [u8; CHECK_BYTES],
    tail: [u8; CHECK_BYTES],
}

impl Ends {
    pub(crate) fn of(bytes: &[u8]) -> Ends {
        let n = CHECK_BYTES.min(bytes.len());
        let (mut head, mut tail) = ([0; CHECK_BYTES], [0; CHECK_BYTES]);
        head[..n].copy_from_slice(&bytes[..n]);
        tail[..n].copy_from_slice(&bytes[bytes.len() - n..]);
        Ends {
            len: bytes.len(),
            n,
            head,
            tail,
        }
    }
    pub(crate) fn head(&self) -> &[u8] {
        &self.head[..self.n]
    }
    pub(crate) fn tail(&self) -> &[u8] {
        &self.tail[..self.n]
    }
}

/// The compacted log of `state` (a log read whole, `read_len` bytes) once `records` are appended
/// to it, if that log is due for compaction (a follow-up write that removes much, e.g. a first
/// read sealing a long raw history into tiles, would otherwise leave it mostly dead). Only the
/// members the records touch are looked at until it is due.
pub(crate) fn compact_after(state: &ZSet, read_len: usize, records: &[u8]) -> Option<Vec<u8>> {
    // The members the records touch, as they end up (`None`: removed).
    let mut touched: crate::keyspace::BatchMap<&[u8], Option<i64>> = Default::default();
    for_each_record(records, |r| match r {
        Record::Add(score, member) => {
            let now = touched
                .entry(member)
                .or_insert_with(|| state.get(member).copied());
            *now = Some(now.map_or(score, |s| s.min(score)));
        }
        Record::Remove(member) => {
            touched.insert(member, None);
        }
    })
    .ok()?;
    let mut live: usize = state.iter().map(|(m, s)| add_size(*s, m)).sum();
    for (member, now) in &touched {
        if let Some(s) = state.get(member) {
            live -= add_size(*s, member);
        }
        if let Some(s) = now {
            live += add_size(*s, member);
        }
    }
    let dead = (read_len + records.len()).saturating_sub(live);
    if dead < COMPACT_MIN_DEAD || dead <= live {
        return None;
    }
    let mut after = state.clone();
    fold_into(records, &mut after).ok()?;
    Some(stamped(&after, live))
}

/// A fresh stamp and the members of `all`, `live` bytes of them.
fn stamped(all: &ZSet, live: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(live + 9);
    out.push(STAMP);
    out.extend_from_slice(&stamp().to_le_bytes());
    for (member, score) in all.iter() {
        add_record(&mut out, *score, member);
    }
    out
}

/// Dead bytes a key must hold before a read compacts it (small keys are left alone).
pub(crate) const COMPACT_MIN_DEAD: usize = 1024;

const ADD: u8 = b'+';
const REM: u8 = b'-';
/// A compaction's stamp: `#` and 8 random bytes.
const STAMP: u8 = b'#';

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn add_record(out: &mut Vec<u8>, score: i64, member: &[u8]) {
    out.push(ADD);
    varint(out, zigzag(score));
    varint(out, member.len() as u64);
    out.extend_from_slice(member);
}

/// The records of `ZADD LT` of `members`.
pub(crate) fn encode_adds(out: &mut Vec<u8>, members: &[(i64, Vec<u8>)]) {
    for (score, member) in members {
        add_record(out, *score, member);
    }
}

/// The records of `ZREM` of `members`.
pub(crate) fn encode_removals(out: &mut Vec<u8>, members: &[Vec<u8>]) {
    for member in members {
        out.push(REM);
        varint(out, member.len() as u64);
        out.extend_from_slice(member);
    }
}

/// A random stamp (std's per-process random hash keys over a counter and the clock).
fn stamp() -> u64 {
    use std::hash::BuildHasher;
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::collections::hash_map::RandomState::new().hash_one((n, t))
}

/// Size of an add record of `member` with `score`.
fn add_size(score: i64, member: &[u8]) -> usize {
    fn varint_len(mut v: u64) -> usize {
        let mut n = 1;
        while v >= 0x80 {
            v >>= 7;
            n += 1;
        }
        n
    }
    1 + varint_len(zigzag(score)) + varint_len(member.len() as u64) + member.len()
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.at)?;
            self.at += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.at.checked_add(len)?;
        let b = self.buf.get(self.at..end)?;
        self.at = end;
        Some(b)
    }
}

/// One record of a log.
enum Record<'a> {
    Add(i64, &'a [u8]),
    Remove(&'a [u8]),
}

/// Hands each record of `bytes` to `f`, in order (stamps carry none); an error if the log does
/// not parse.
fn for_each_record<'a>(bytes: &'a [u8], mut f: impl FnMut(Record<'a>)) -> Result<(), StoreError> {
    let bad = || StoreError::BadReply("entity log does not parse".into());
    let mut r = Reader { buf: bytes, at: 0 };
    while r.at < bytes.len() {
        let tag = bytes[r.at];
        r.at += 1;
        match tag {
            ADD => {
                let score = unzigzag(r.varint().ok_or_else(bad)?);
                f(Record::Add(score, r.bytes().ok_or_else(bad)?));
            }
            REM => f(Record::Remove(r.bytes().ok_or_else(bad)?)),
            STAMP => {
                r.at += 8;
                if r.at > bytes.len() {
                    return Err(bad());
                }
            }
            _ => return Err(bad()),
        }
    }
    Ok(())
}

/// Applies the records of `bytes` to `all`, as Redis would have run their commands.
fn fold_into(bytes: &[u8], all: &mut ZSet) -> Result<(), StoreError> {
    // About one member per 32 bytes of log (links ~25, events 53, tiles more): one allocation
    // of the map instead of a rehash per doubling.
    all.reserve(bytes.len() / 32, bytes.len());
    for_each_record(bytes, |r| match r {
        Record::Add(score, member) => all.add_lt(member, score),
        Record::Remove(member) => {
            all.remove(member);
        }
    })
}

/// Which members a read wants (`keyspace::Read`'s kinds of sorted-set read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Want {
    /// Members scored above 0, with their scores.
    pub(crate) scored: bool,
    /// Members scored 0 or below, as 0 (with `scored` too: every member with its score).
    pub(crate) unscored: bool,
}

/// The set a log holds, as `want` reads it, into `z`; returns its compaction when the log is due
/// for one. A log that does not parse is an error
/// (something else wrote the key).
pub(crate) fn fold(
    bytes: &[u8],
    want: Want,
    z: &mut ZSet,
) -> Result<Option<Compacted>, StoreError> {
    // A whole read into an empty copy (the usual case) folds in place.
    let whole = want.scored && want.unscored && z.is_empty();
    let mut own = ZSet::default();
    let all = if whole { &mut *z } else { &mut own };
    fold_into(bytes, all)?;
    let live: usize = all.iter().map(|(m, s)| add_size(*s, m)).sum();
    let dead = bytes.len().saturating_sub(live);
    let compacted = (dead >= COMPACT_MIN_DEAD && dead > live).then(|| Compacted {
        ends: Ends::of(bytes),
        log: stamped(all, live),
    });
    if whole {
        return Ok(compacted);
    }
    match (want.scored, want.unscored) {
        (true, true) => z.extend_from(&own),
        (true, false) => z.extend(own.iter().filter(|(_, s)| **s > 0).map(|(m, s)| (m, *s))),
        (false, true) => z.extend(own.iter().filter(|(_, s)| **s <= 0).map(|(m, _)| (m, 0))),
        (false, false) => {}
    }
    Ok(compacted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Want = Want {
        scored: true,
        unscored: true,
    };

    fn state(log: &[u8]) -> Vec<(Vec<u8>, i64)> {
        let mut z = ZSet::default();
        fold(log, ALL, &mut z).expect("parses");
        let mut v: Vec<(Vec<u8>, i64)> = z.iter().map(|(m, s)| (m.to_vec(), *s)).collect();
        v.sort();
        v
    }

    #[test]
    fn a_log_folds_like_the_sorted_set_commands_it_records() {
        let mut log = Vec::new();
        encode_adds(&mut log, &[(3, b"c".to_vec()), (1, b"b".to_vec())]);
        encode_adds(
            &mut log,
            &[(2, b"c".to_vec()), (5, b"b".to_vec()), (9, b"z".to_vec())],
        );
        encode_removals(&mut log, &[b"z".to_vec(), b"never".to_vec()]);
        encode_adds(&mut log, &[(0, b"e".to_vec()), (-7, b"n".to_vec())]);
        assert_eq!(
            state(&log),
            vec![
                (b"b".to_vec(), 1),
                (b"c".to_vec(), 2),
                (b"e".to_vec(), 0),
                (b"n".to_vec(), -7)
            ]
        );
        // A member removed and added again is there again (the commands ran in this order).
        encode_removals(&mut log, &[b"b".to_vec()]);
        encode_adds(
            &mut log,
            &[(i64::MAX, b"b".to_vec()), (i64::MIN, b"m".to_vec())],
        );
        let s = state(&log);
        assert!(
            s.contains(&(b"b".to_vec(), i64::MAX)) && s.contains(&(b"m".to_vec(), i64::MIN)),
            "{s:?}"
        );
        // Reads of one kind see only their members; unscored ones as 0.
        let mut z = ZSet::default();
        let want = Want {
            scored: false,
            unscored: true,
        };
        fold(&log, want, &mut z).unwrap();
        assert_eq!(z.len(), 3);
        assert!(z.values().all(|s| *s == 0));
        let mut z = ZSet::default();
        let want = Want {
            scored: true,
            unscored: false,
        };
        fold(&log, want, &mut z).unwrap();
        assert_eq!(z.len(), 2);
    }

    #[test]
    fn records_that_empty_a_log_make_it_due_with_their_result() {
        let mut log = Vec::new();
        let members: Vec<(i64, Vec<u8>)> = (0..100)
            .map(|i| (0, format!("member-{i:04}").into_bytes()))
            .collect();
        encode_adds(&mut log, &members);
        let mut z = ZSet::default();
        assert!(fold(&log, ALL, &mut z).unwrap().is_none());
        // A few more members: not due.
        let mut more = Vec::new();
        encode_adds(&mut more, &[(5, b"link".to_vec())]);
        assert!(compact_after(&z, log.len(), &more).is_none());
        // Most removed: due, and the new log is the state after the records.
        let mut trim = Vec::new();
        let gone: Vec<Vec<u8>> = members[3..].iter().map(|(_, m)| m.clone()).collect();
        encode_removals(&mut trim, &gone);
        encode_adds(&mut trim, &[(5, b"tile".to_vec())]);
        let new = compact_after(&z, log.len(), &trim).expect("due");
        let (mut whole, mut expected) = (log.clone(), Vec::new());
        whole.extend_from_slice(&trim);
        expected.extend(state(&whole));
        assert_eq!(state(&new), expected);
        assert_eq!(new[0], STAMP);
    }

    #[test]
    fn a_log_that_does_not_parse_is_an_error() {
        let mut log = Vec::new();
        encode_adds(&mut log, &[(3, b"member".to_vec())]);
        for cut in 1..log.len() {
            assert!(
                fold(&log[..cut], ALL, &mut ZSet::default()).is_err(),
                "{cut}"
            );
        }
        assert!(fold(b"x", ALL, &mut ZSet::default()).is_err());
        assert!(fold(b"", ALL, &mut ZSet::default()).unwrap().is_none());
    }

    #[test]
    fn dead_records_past_the_live_size_make_a_compacted_log_with_the_same_state() {
        let mut log = Vec::new();
        let members: Vec<(i64, Vec<u8>)> = (0..100)
            .map(|i| (i, format!("member-{i:04}").into_bytes()))
            .collect();
        encode_adds(&mut log, &members);
        assert!(fold(&log, ALL, &mut ZSet::default()).unwrap().is_none());
        // Remove most of them: far more dead than live.
        let gone: Vec<Vec<u8>> = members[10..].iter().map(|(_, m)| m.clone()).collect();
        encode_removals(&mut log, &gone);
        let c = fold(&log, ALL, &mut ZSet::default()).unwrap().expect("due");
        assert_eq!(
            (c.ends.len, c.ends.head(), c.ends.tail()),
            (log.len(), &log[..64], &log[log.len() - 64..])
        );
        let compacted = c.log;
        // Each compaction stamps its log afresh (so a rival's rewrite changes the first bytes).
        let again = fold(&log, ALL, &mut ZSet::default()).unwrap().unwrap().log;
        assert_ne!(compacted[..9], again[..9]);
        assert!(compacted.len() < log.len() / 5, "{}", compacted.len());
        assert_eq!(state(&compacted), state(&log));
        // Whatever is appended after either gives the same state.
        let mut tail = Vec::new();
        encode_removals(&mut tail, &[b"member-0003".to_vec()]);
        encode_adds(
            &mut tail,
            &[(-1, b"member-0050".to_vec()), (1, b"member-0004".to_vec())],
        );
        let (mut a, mut b) = (log.clone(), compacted.clone());
        a.extend_from_slice(&tail);
        b.extend_from_slice(&tail);
        assert_eq!(state(&a), state(&b));
        assert!(fold(&compacted, ALL, &mut ZSet::default())
            .unwrap()
            .is_none());
    }
}
