//! Tiles: how an entity's timed members (an account's events, a device's capture sessions) stay
//! constant in size whatever the entity's age, after Airbnb Chronon's tiled windows.
//!
//! An entity's sorted set keeps its **recent events raw** (the head: everything newer than
//! `H` = the newest event − the allowed lateness − 1 h, rounded down to the hour) and older
//! ones as **tiles**: one member per hour (for the day before `H`, back to `D` = `H` − 24 h
//! rounded down to the day) or per day (before `D`, until the retention drops it). A tile holds
//! the intermediate representation of its events: per money kind count, USD-cent sum and max;
//! logins, credential changes, the last login time; capture sessions and failed ones; and the
//! smallest 64 hashes of the devices, IPs and countries seen (a bottom-k sketch: merging tiles
//! in any order gives the same tile, and distinct counts are exact up to 64 per tile).
//!
//! What an event sees, per window of length `len` ending at its time `t`:
//! - raw events exactly (time in `[t − len, t)`), so the 10 min and 1 h windows are exact for
//!   every event within the allowed lateness;
//! - a tile when it ends at or before `t` (point-in-time stays exact) and at least half of it
//!   lies inside the window (`start + grain / 2 >= t − len`). The 24 h and 7 d windows therefore
//!   start on an hour or day boundary once their start falls among tiles: within ±30 min
//!   (24 h) and ±12 h (7 d) of the exact start. The last login is kept exactly (its time).
//!
//! Sealing is done by whichever worker reads the entity when a tile is due (one `ZADD` of the
//! tile, `ZREM`s of what it replaces, in the batch's follow-up writes). A tile's bytes are a
//! deterministic function of the members it replaces, so two workers sealing at once write the
//! same member; if they saw different members (an event arriving later than the allowed
//! lateness, mid-seal), the fuller tile wins at the next read and the other is removed. A raw
//! event whose hour or day is already sealed (later than the allowed lateness) no longer counts
//! for others and is removed; an hour tile under a day tile likewise.

use std::collections::BTreeMap;

use riskstream_events::TransactionKind;

use crate::algorithm::{StoredEvent, CAPTURE_CODE, MAX_EVENTS};
use crate::catalogue::{DAY_MS, HOUR_MS, WINDOWS};
use crate::keyspace::{BatchSet, ZSet};

/// First byte of a tile member in any entity's set (links and accounts start with an ASCII
/// letter, raw account events with 0xFF).
const TILE_TAG: u8 = 0xFE;
/// Distinct hashes a tile keeps per kind (device, IP, country): the smallest ones.
const TILE_DISTINCT: usize = 64;

/// A sorted-set member to add and its score.
pub(crate) type ScoredMember = (i64, Vec<u8>);

/// The length of a tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Grain {
    Hour,
    Day,
}

impl Grain {
    pub(crate) fn ms(self) -> i64 {
        match self {
            Grain::Hour => HOUR_MS,
            Grain::Day => DAY_MS,
        }
    }
    fn code(self) -> u8 {
        match self {
            Grain::Hour => b'h',
            Grain::Day => b'd',
        }
    }
    fn of_code(c: u8) -> Option<Grain> {
        match c {
            b'h' => Some(Grain::Hour),
            b'd' => Some(Grain::Day),
            _ => None,
        }
    }
}

pub(crate) fn floor_to(t: i64, ms: i64) -> i64 {
    t.div_euclid(ms) * ms
}

/// Money-out kinds an event counts for, in `MONEY_KINDS` order.
fn money_kinds(d: &StoredEvent) -> [bool; 4] {
    let out = d.is(TransactionKind::TransferOut);
    let wd = d.is(TransactionKind::Withdrawal);
    let card = d.is(TransactionKind::CardPayment);
    [out || wd || card, out, wd, card]
}

/// The intermediate representation of a set of timed members: what the features need from
/// them, mergeable in any order (the distinct hashes apart: [`Sketch`]). Plain numbers, so a
/// tile's copy is a copy of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agg {
    /// Raw members summarised (decides between two tiles of one span).
    pub(crate) items: i64,
    /// Per money kind: count, USD-cent sum, USD-cent max.
    pub(crate) money: [[i64; 3]; 4],
    pub(crate) logins: i64,
    pub(crate) credentials: i64,
    /// Time of the newest login (`i64::MIN`: none).
    pub(crate) last_login: i64,
    pub(crate) sessions: i64,
    pub(crate) failed: i64,
}

impl Default for Agg {
    fn default() -> Self {
        Agg {
            items: 0,
            money: [[0; 3]; 4],
            logins: 0,
            credentials: 0,
            last_login: i64::MIN,
            sessions: 0,
            failed: 0,
        }
    }
}

/// A tile being sealed: its aggregate and its distinct device, IP and country hashes, sorted
/// (at most [`TILE_DISTINCT`] of each are written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sketch {
    pub(crate) agg: Agg,
    pub(crate) distinct: [Vec<u64>; 3],
}

fn insert_sorted(set: &mut Vec<u64>, h: u64) {
    if h != 0 {
        if let Err(at) = set.binary_search(&h) {
            set.insert(at, h);
        }
    }
}

impl Agg {
    pub(crate) fn add(&mut self, item: &Item) {
        self.items += 1;
        match item {
            Item::Session(failed) => {
                self.sessions += 1;
                self.failed += *failed as i64;
            }
            Item::Event(d) => {
                for (k, hit) in money_kinds(d).into_iter().enumerate() {
                    if hit {
                        let m = &mut self.money[k];
                        m[0] += 1;
                        m[1] = m[1].saturating_add(d.usd_cents);
                        m[2] = m[2].max(d.usd_cents);
                    }
                }
                if d.is(TransactionKind::Login) {
                    self.logins += 1;
                    self.last_login = self.last_login.max(d.time);
                }
                if d.kind != CAPTURE_CODE
                    && TransactionKind::from_code(d.kind).is_some_and(|k| k.is_credential_change())
                {
                    self.credentials += 1;
                }
            }
        }
    }

    pub(crate) fn merge(&mut self, o: &Agg) {
        self.items += o.items;
        for (m, om) in self.money.iter_mut().zip(&o.money) {
            m[0] += om[0];
            m[1] = m[1].saturating_add(om[1]);
            m[2] = m[2].max(om[2]);
        }
        self.logins += o.logins;
        self.credentials += o.credentials;
        self.last_login = self.last_login.max(o.last_login);
        self.sessions += o.sessions;
        self.failed += o.failed;
    }

    /// A tile member: its grain, start, aggregate and the bytes of its distinct hashes (read
    /// with [`hashes`]).
    fn decode(b: &[u8]) -> Option<(Grain, i64, Agg, &[u8])> {
        if b.len() < 2 || b[0] != TILE_TAG {
            return None;
        }
        let grain = Grain::of_code(b[1])?;
        let mut at = 2;
        let mut int = || varint(b, &mut at);
        let start = int()?;
        let mut a = Agg {
            items: int()?,
            ..Agg::default()
        };
        for m in a.money.iter_mut() {
            for v in m.iter_mut() {
                *v = int()?;
            }
        }
        a.logins = int()?;
        a.credentials = int()?;
        a.last_login = match int()? {
            0 => i64::MIN,
            d => start.wrapping_add(d - 1),
        };
        a.sessions = int()?;
        a.failed = int()?;
        let tail = &b[at..];
        let mut rest = tail;
        for _ in 0..3 {
            let (&n, after) = rest.split_first()?;
            rest = after.get(8 * n as usize..)?;
        }
        rest.is_empty().then_some((grain, start, a, tail))
    }
}

impl Sketch {
    pub(crate) fn add(&mut self, item: &Item) {
        self.agg.add(item);
        if let Item::Event(d) = item {
            for (what, h) in [d.device, d.ip, d.country].into_iter().enumerate() {
                insert_sorted(&mut self.distinct[what], h);
            }
        }
    }

    /// Merges a decoded tile (its aggregate and hash bytes).
    fn merge_tile(&mut self, agg: &Agg, hash_bytes: &[u8]) {
        self.agg.merge(agg);
        for (what, h) in hashes(hash_bytes) {
            insert_sorted(&mut self.distinct[what], h);
        }
    }

    #[cfg(test)]
    fn merge(&mut self, o: &Sketch) {
        self.agg.merge(&o.agg);
        for (set, other) in self.distinct.iter_mut().zip(&o.distinct) {
            for h in other {
                insert_sorted(set, *h);
            }
        }
    }

    /// The tile member: tag, grain, then zigzag LEB128 varints (start, items, money, logins,
    /// credential changes, last login as an offset from the start + 1 or 0 for none, sessions,
    /// failed), then per kind a count and that many 8-byte hashes (typically 40–70 bytes).
    fn encode(&self, grain: Grain, start: i64) -> Vec<u8> {
        let a = &self.agg;
        let mut out = Vec::with_capacity(64);
        out.push(TILE_TAG);
        out.push(grain.code());
        let mut put = |v: i64| {
            let mut z = ((v << 1) ^ (v >> 63)) as u64;
            while z >= 0x80 {
                out.push(z as u8 | 0x80);
                z >>= 7;
            }
            out.push(z as u8);
        };
        put(start);
        put(a.items);
        a.money.iter().flatten().for_each(|v| put(*v));
        let last_login = match a.last_login {
            i64::MIN => 0,
            t => t.wrapping_sub(start).wrapping_add(1),
        };
        for v in [a.logins, a.credentials, last_login, a.sessions, a.failed] {
            put(v);
        }
        for set in &self.distinct {
            let kept = &set[..set.len().min(TILE_DISTINCT)];
            out.push(kept.len() as u8);
            for h in kept {
                out.extend_from_slice(&h.to_le_bytes());
            }
        }
        out
    }
}

/// A zig-zag LEB128 varint at `*at` (most of a tile's are one byte).
#[inline(always)]
fn varint(b: &[u8], at: &mut usize) -> Option<i64> {
    let unzig = |z: u64| (z >> 1) as i64 ^ -((z & 1) as i64);
    let byte = *b.get(*at)?;
    *at += 1;
    if byte < 0x80 {
        return Some(unzig(byte as u64));
    }
    let mut z = (byte & 0x7f) as u64;
    for shift in (7..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        z |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return Some(unzig(z));
        }
    }
    None
}

/// The distinct hashes of a decoded tile's tail: (kind, hash), kinds in order.
fn hashes(tail: &[u8]) -> impl Iterator<Item = (usize, u64)> + '_ {
    let mut spans: [&[u8]; 3] = [&[]; 3];
    let mut rest = tail;
    for span in spans.iter_mut() {
        if let Some((&n, after)) = rest.split_first() {
            let n = (n as usize).min(after.len() / 8);
            *span = &after[..8 * n];
            rest = &after[8 * n..];
        }
    }
    spans.into_iter().enumerate().flat_map(|(what, bytes)| {
        bytes
            .chunks_exact(8)
            .map(move |c| (what, u64::from_le_bytes(c.try_into().expect("8 bytes"))))
    })
}

/// A raw timed member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Item {
    /// An account's event.
    Event(StoredEvent),
    /// A device's capture session: failed the vendor check?
    Session(bool),
}

/// A raw member as read.
pub(crate) struct Raw<'a> {
    pub(crate) time: i64,
    pub(crate) item: Item,
    member: &'a [u8],
    /// False for a second copy of one event id (it never counts).
    counted: bool,
}

/// A tile as read.
pub(crate) struct Tile<'a> {
    grain: Grain,
    pub(crate) start: i64,
    /// Without its distinct hashes, which stay in `hashes` (see [`hashes`]).
    pub(crate) agg: Agg,
    hashes: &'a [u8],
    member: &'a [u8],
}

impl Tile<'_> {
    pub(crate) fn end(&self) -> i64 {
        self.start + self.grain.ms()
    }
    /// Does the tile count for a window of `len` ending at `t`? (Ends by `t`, at least half
    /// inside.)
    pub(crate) fn counts_for(&self, t: i64, len: i64) -> bool {
        self.end() <= t && self.start + self.grain.ms() / 2 >= t - len
    }
}

/// An entity's timed members, resolved: raw members sorted by (time, id), tiles that count (in
/// no particular order), and what no longer counts (removed at the next maintenance).
pub(crate) struct Timeline<'a> {
    pub(crate) raw: Vec<Raw<'a>>,
    pub(crate) tiles: Vec<Tile<'a>>,
    stale: Vec<&'a [u8]>,
}

/// Session member in a device's set: `s`, `f`/`p`, time, id hash -> (time, id, failed).
fn session(m: &[u8]) -> Option<(i64, u64, bool)> {
    (m.len() == 18 && m[0] == b's').then(|| {
        let int = |at: usize| u64::from_le_bytes(m[at..at + 8].try_into().expect("8 bytes"));
        (int(2) as i64, int(10), m[1] == b'f')
    })
}

impl<'a> Timeline<'a> {
    /// An account's timeline set (`account`) or a device's set: its timed members (their
    /// scores are not used: each member carries its own time).
    pub(crate) fn of(z: &'a ZSet, account: bool) -> Timeline<'a> {
        let mut raw: Vec<(i64, u64, Item, &'a [u8])> = Vec::new();
        let mut tiles: Vec<Tile<'a>> = Vec::with_capacity(z.len().min(128));
        for m in z.keys() {
            match m.first() {
                Some(&TILE_TAG) => {
                    if let Some((grain, start, agg, hashes)) = Agg::decode(m) {
                        tiles.push(Tile {
                            grain,
                            start,
                            agg,
                            hashes,
                            member: m,
                        });
                    }
                }
                Some(_) if account => {
                    if let Some(d) = StoredEvent::decode(m) {
                        raw.push((d.time, d.id, Item::Event(d), m));
                    }
                }
                Some(_) => {
                    if let Some((time, id, failed)) = session(m) {
                        raw.push((time, id, Item::Session(failed), m));
                    }
                }
                None => {}
            }
        }
        // Usually each grain's tiles were read oldest first, one per span: nothing to resolve.
        let in_order = {
            let mut last = [i64::MIN; 2];
            tiles.iter().all(|t| {
                let g = &mut last[(t.grain == Grain::Day) as usize];
                std::mem::replace(g, t.start) < t.start
            })
        };
        let mut keep = vec![true; tiles.len()];
        let mut stale = Vec::new();
        if !in_order {
            // Two tiles of one span: the fuller one (then the greater bytes) counts. (Sorted
            // by index: a tile is a couple of hundred bytes, its sort key a few.)
            let key = |t: &Tile<'a>| (t.grain, t.start, t.agg.items);
            let mut order: Vec<u32> = (0..tiles.len() as u32).collect();
            order.sort_unstable_by(|&a, &b| {
                let (a, b) = (&tiles[a as usize], &tiles[b as usize]);
                (key(a), a.member).cmp(&(key(b), b.member))
            });
            for pair in order.windows(2) {
                let (l, t) = (&tiles[pair[0] as usize], &tiles[pair[1] as usize]);
                if (l.grain, l.start) == (t.grain, t.start) {
                    stale.push(l.member);
                    keep[pair[0] as usize] = false;
                }
            }
        }
        // The spans sealed, each grain's sorted (read in order, or sorted here).
        let (mut hours, mut days) = (Vec::new(), Vec::new());
        for (t, _) in tiles.iter().zip(&keep).filter(|(_, k)| **k) {
            match t.grain {
                Grain::Hour => hours.push(t.start),
                Grain::Day => days.push(t.start),
            }
        }
        if !in_order {
            hours.sort_unstable();
            days.sort_unstable();
        }
        // An hour under a day tile no longer counts.
        if !days.is_empty() {
            for (t, keep) in tiles.iter().zip(keep.iter_mut()) {
                if *keep
                    && t.grain == Grain::Hour
                    && days.binary_search(&floor_to(t.start, DAY_MS)).is_ok()
                {
                    stale.push(t.member);
                    *keep = false;
                }
            }
        }
        // Kept in the order read (every use sums, merges or takes a maximum); usually every
        // tile counts and nothing moves.
        let mut keep = keep.into_iter();
        tiles.retain(|_| keep.next() == Some(true));
        raw.sort_by(|a, b| (a.0, a.1, a.3).cmp(&(b.0, b.1, b.3)));
        let mut seen = BatchSet::default();
        let mut out = Vec::with_capacity(raw.len());
        let sealed = |time: i64| {
            !tiles.is_empty()
                && (days.binary_search(&floor_to(time, DAY_MS)).is_ok()
                    || hours.binary_search(&floor_to(time, HOUR_MS)).is_ok())
        };
        // Usually every id is there once: then no set is needed to find second copies.
        let unique_ids = {
            let mut ids: Vec<u64> = raw.iter().map(|r| r.1).collect();
            ids.sort_unstable();
            ids.windows(2).all(|w| w[0] != w[1])
        };
        for (time, id, item, member) in raw {
            if sealed(time) {
                stale.push(member);
                continue;
            }
            out.push(Raw {
                time,
                item,
                member,
                counted: unique_ids || seen.insert(id),
            });
        }
        Timeline {
            raw: out,
            tiles,
            stale,
        }
    }

    /// The raw members that count, oldest first.
    pub(crate) fn counted(&self) -> impl DoubleEndedIterator<Item = &Raw<'a>> {
        self.raw.iter().filter(|r| r.counted)
    }

    /// Aggregates per velocity window (`WINDOWS` order) of what lies before `t` (without
    /// distinct hashes: [`Timeline::distinct_before`]).
    pub(crate) fn windows_before(&self, t: i64) -> [Agg; 4] {
        let mut out: [Agg; 4] = Default::default();
        let longest = WINDOWS[WINDOWS.len() - 1].1;
        let upto = self.raw.partition_point(|r| r.time < t);
        let from = self.raw.partition_point(|r| r.time < t - longest);
        for r in self.raw[from.min(upto)..upto].iter().filter(|r| r.counted) {
            for (w, (_, len)) in WINDOWS.iter().enumerate() {
                if t - r.time <= *len {
                    out[w].add(&r.item);
                }
            }
        }
        for tile in &self.tiles {
            for (w, (_, len)) in WINDOWS.iter().enumerate() {
                if tile.counts_for(t, *len) {
                    out[w].merge(&tile.agg);
                }
            }
        }
        out
    }

    /// Distinct devices, IPs and countries before `t` in a window of `len` (same rule as
    /// [`Timeline::windows_before`]); `scratch` is reused between calls.
    pub(crate) fn distinct_before(
        &self,
        t: i64,
        len: i64,
        scratch: &mut [Vec<u64>; 3],
    ) -> [usize; 3] {
        scratch.iter_mut().for_each(Vec::clear);
        let upto = self.raw.partition_point(|r| r.time < t);
        let from = self.raw.partition_point(|r| r.time < t - len);
        for r in self.raw[from.min(upto)..upto].iter().filter(|r| r.counted) {
            if let Item::Event(d) = r.item {
                for (set, h) in scratch.iter_mut().zip([d.device, d.ip, d.country]) {
                    if h != 0 {
                        set.push(h);
                    }
                }
            }
        }
        for tile in self.tiles.iter().filter(|tile| tile.counts_for(t, len)) {
            for (what, h) in hashes(tile.hashes) {
                // Tiles of one account mostly repeat the same few hashes: runs are skipped
                // here rather than sorted below.
                if scratch[what].last() != Some(&h) {
                    scratch[what].push(h);
                }
            }
        }
        scratch.each_mut().map(|set| {
            set.sort_unstable();
            set.dedup();
            set.len()
        })
    }

    /// The newest login strictly before `t` and no older than `len` (exact).
    pub(crate) fn last_login_before(&self, t: i64, len: i64) -> Option<i64> {
        let raw = self
            .counted()
            .filter(|r| r.time < t && t - r.time <= len)
            .filter(|r| matches!(r.item, Item::Event(d) if d.is(TransactionKind::Login)))
            .map(|r| r.time)
            .max();
        let tiled = self
            .tiles
            .iter()
            .filter(|tile| tile.end() <= t && tile.agg.last_login >= t - len)
            .map(|tile| tile.agg.last_login)
            .max();
        raw.max(tiled)
    }

    /// What is due on this entity after a batch whose oldest event on it is at `oldest`:
    /// `(adds, removals)` — new tiles (score = start) and the members they replace, trims
    /// older than `oldest − retention`, stale members, and the oldest raw members beyond
    /// [`MAX_EVENTS`]. Usually nothing.
    pub(crate) fn maintenance(
        &self,
        oldest: i64,
        lateness_ms: i64,
        retention_ms: i64,
    ) -> (Vec<ScoredMember>, Vec<Vec<u8>>) {
        let mut adds = Vec::new();
        let mut rems: Vec<Vec<u8>> = self.stale.iter().map(|m| m.to_vec()).collect();
        let Some(newest) = self.raw.last().map(|r| r.time) else {
            return (adds, rems);
        };
        let horizon = oldest - retention_ms;
        let head = floor_to(newest - lateness_ms - HOUR_MS, HOUR_MS);
        let days_from = floor_to(head - DAY_MS, DAY_MS);
        let target = |t: i64| {
            if t >= days_from {
                (Grain::Hour, floor_to(t, HOUR_MS))
            } else {
                (Grain::Day, floor_to(t, DAY_MS))
            }
        };
        let mut groups: BTreeMap<(Grain, i64), Sketch> = BTreeMap::new();
        let mut kept = 0;
        for r in self.raw.iter().rev() {
            if r.time < horizon {
                rems.push(r.member.to_vec());
            } else if r.time < head {
                let g = groups.entry(target(r.time)).or_default();
                if r.counted {
                    g.add(&r.item);
                }
                rems.push(r.member.to_vec());
            } else if r.counted && kept >= MAX_EVENTS {
                rems.push(r.member.to_vec()); // over the cap: the oldest go
            } else {
                kept += r.counted as usize;
            }
        }
        for tile in &self.tiles {
            if tile.end() <= horizon {
                rems.push(tile.member.to_vec());
            } else if tile.grain == Grain::Hour && tile.start < days_from {
                let day = groups
                    .entry((Grain::Day, floor_to(tile.start, DAY_MS)))
                    .or_default();
                day.merge_tile(&tile.agg, tile.hashes);
                rems.push(tile.member.to_vec());
            }
        }
        for ((grain, start), sketch) in groups {
            if start + grain.ms() > horizon && sketch.agg.items > 0 {
                adds.push((start, sketch.encode(grain, start)));
            }
        }
        (adds, rems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_round_trip_and_merge_in_any_order() {
        let mut a = Sketch::default();
        a.add(&Item::Session(true));
        a.agg.money[2] = [3, 4500, 4000];
        a.agg.last_login = 86_400_000 + 1234;
        a.distinct[1] = (1..=100).collect();
        let bytes = a.encode(Grain::Day, 86_400_000);
        let (g, start, back, tail) = Agg::decode(&bytes).expect("decodes");
        assert_eq!((g, start), (Grain::Day, 86_400_000));
        let read: Vec<(usize, u64)> = hashes(tail).collect();
        assert_eq!(
            read,
            (1..=64).map(|h| (1, h)).collect::<Vec<_>>(),
            "bottom 64"
        );
        assert_eq!(back.money, a.agg.money);
        assert_eq!(
            (back.sessions, back.failed, back.last_login),
            (1, 1, 86_400_000 + 1234)
        );
        let none = Sketch::default().encode(Grain::Hour, -5);
        let (_, start, empty, _) = Agg::decode(&none).expect("decodes");
        assert_eq!((start, empty.last_login), (-5, i64::MIN));
        assert!(none.len() < 30, "an empty tile is {} bytes", none.len());
        let mut b = Sketch::default();
        b.distinct[1] = vec![7, 0x10];
        let mut full = a.clone();
        full.distinct[1].truncate(64);
        let (mut ab, mut ba) = (full.clone(), b.clone());
        ab.merge(&b);
        ba.merge(&full);
        assert_eq!(
            ab.encode(Grain::Day, 0),
            ba.encode(Grain::Day, 0),
            "merge order does not matter"
        );
        assert!(Agg::decode(&bytes[..bytes.len() - 1]).is_none());
    }

    #[test]
    fn of_two_tiles_of_one_span_the_fuller_counts_and_an_hour_under_a_day_is_stale() {
        let session = |n: usize| {
            let mut s = Sketch::default();
            (0..n).for_each(|_| s.add(&Item::Session(false)));
            s
        };
        let (day, hour) = (10 * DAY_MS, 11 * DAY_MS + 3 * HOUR_MS);
        let fuller = session(3).encode(Grain::Hour, hour);
        let thinner = session(2).encode(Grain::Hour, hour);
        let under_day = session(5).encode(Grain::Hour, day + HOUR_MS);
        let day_tile = session(7).encode(Grain::Day, day);
        let later = session(1).encode(Grain::Hour, hour + HOUR_MS);
        // Read out of order (the later hour first), so the tiles are resolved by sorting.
        let mut z = ZSet::default();
        for m in [&later, &fuller, &under_day, &thinner, &day_tile] {
            z.insert(m, 0);
        }
        let tl = Timeline::of(&z, false);
        let mut stale: Vec<&[u8]> = tl.stale.clone();
        stale.sort();
        let mut want: Vec<&[u8]> = vec![&thinner, &under_day];
        want.sort();
        assert_eq!(stale, want);
        let counted: i64 = tl.tiles.iter().map(|t| t.agg.sessions).sum();
        assert_eq!(
            counted,
            3 + 7 + 1,
            "the fuller hour, the day, the later hour"
        );
        // Read in order: nothing to resolve but the hour under the day.
        let mut z = ZSet::default();
        for m in [&day_tile, &under_day, &fuller, &later] {
            z.insert(m, 0);
        }
        let tl = Timeline::of(&z, false);
        assert_eq!(tl.stale, vec![&under_day[..]]);
        assert_eq!(tl.tiles.len(), 3);
    }
}

/// Per-event cost of an old account's timeline (the history-scaling case): an account set as
/// one with 500 events over 7 days holds after a few batches (22 hour tiles, 6 day tiles, 4 raw
/// events, a few links), the work the features do with it per event. Prints ns per event and a
/// sum of the results (unchanged by a faster version); run with
/// `cargo test --release -p riskstream-features -- --ignored --nocapture timeline_cost`.
#[cfg(test)]
mod cost {
    use super::*;
    use crate::zset::ZSet;

    #[test]
    #[ignore = "a measurement, not a check"]
    fn timeline_cost() {
        let now = 100 * DAY_MS + 13 * HOUR_MS + 1_000;
        let event = |k: i64, time: i64| StoredEvent {
            time,
            id: 1_000 + k as u64,
            kind: [TransactionKind::Login, TransactionKind::CardPayment][k as usize % 2] as u8,
            usd_cents: 2_500,
            device: 11,
            ip: 22,
            country: 33,
        };
        let mut z = ZSet::default();
        for (m, s) in [
            (&b"d:dev"[..], 1),
            (b"i:ip", 1),
            (b"c:cc", 1),
            (b"x:dest", 5),
        ] {
            z.insert(m, s);
        }
        let head = floor_to(now - 2 * HOUR_MS, HOUR_MS);
        let days_from = floor_to(head - DAY_MS, DAY_MS);
        let mut k = 0;
        let mut tile = |grain: Grain, start: i64, n: i64| {
            let mut s = Sketch::default();
            for i in 0..n {
                k += 1;
                s.add(&Item::Event(event(k, start + i * 60_000)));
            }
            s.encode(grain, start)
        };
        for d in (1..=6).rev() {
            let start = days_from - d * DAY_MS;
            z.insert(&tile(Grain::Day, start, 70), start);
        }
        for h in 0..22 {
            let start = days_from + h * HOUR_MS;
            z.insert(&tile(Grain::Hour, start, 3), start);
        }
        for i in 0..4 {
            let e = event(10_000 + i, head + i * 20 * 60_000);
            z.insert(&e.encode(), e.time);
        }
        let rounds = 200_000;
        let mut scratch = Default::default();
        let started = std::time::Instant::now();
        let mut sink = 0usize;
        for r in 0..rounds {
            let t = now + r % 1_000;
            let tl = Timeline::of(&z, true);
            let w = tl.windows_before(t);
            let d = tl.distinct_before(t, WINDOWS[3].1, &mut scratch);
            let d2 = tl.distinct_before(t, WINDOWS[2].1, &mut scratch);
            sink += w[3].money[0][0] as usize + d[0] + d2[1] + tl.tiles.len();
            sink += tl.last_login_before(t, WINDOWS[3].1).is_some() as usize;
        }
        let ns = started.elapsed().as_nanos() as f64 / rounds as f64;
        println!("timeline of an old account: {ns:.0} ns per event ({sink})");
        assert!(sink > 0);
    }
}
