//! The feature algorithm, written once for both stores: which writes and reads a batch needs
//! ([`plan_batch`]), the features of one event from what was read ([`features`]) or its first
//! features if it was scored before (`first.rs`), the writes due after a batch ([`evaluate`]:
//! first features, taint fix-ups, tiles, trims, caps), and label propagation ([`apply_label`]).
//!
//! A batch's writes go first and its reads after, in one round trip: features then see the
//! batch's own events too, and count only those strictly before each event's time — the same
//! answer as applying events one by one, in any order.
//!
//! One sorted set per entity (see `keyspace.rs`). An account's set holds its links (`d:`, `i:`,
//! `c:`, `x:`, `m:` first seen, the score; `p:`/`f:` password / MFA changes; `N:` labelled
//! accounts one hop away; `L` its own label), read with scores, and its raw events (`0xFF` + 49
//! bytes, time inside) and tiles (`0xFE`, `tiles.rs`), scored 0 (the two kinds of read,
//! [`Read::Scored`] and [`Read::Unscored`], let the account cache skip the second; on Redis both
//! are one read of the entity's log, `log.rs`). A device's, IP's or document's set holds
//! `a:ACCOUNT` (first seen) and `t1:ACCOUNT` / `t2:ACCOUNT` (labelled accounts one / two hops
//! away), and a device's set also its capture sessions (`s` + `f`/`p` + time + id hash) and their
//! tiles. Every write is `ZADD LT`, `ZREM`, `HSETNX` or `PEXPIRE`.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use riskstream_events::TransactionKind;

use crate::catalogue::*;
use crate::first;
use crate::keyspace::{hash64, BatchMap, BatchSet, Keys, Keyspace, Node, Op, Read, ZSet};
use crate::tiles::Timeline;
use crate::{EventFacts, FactKind, LabelOutcome, StoreError, StoreLimits};

/// Per-entity caps: an account keeps its newest `MAX_EVENTS` events and its oldest
/// `MAX_LINKS` links; a device, IP or document keeps its oldest `MAX_LINKS` accounts; a device
/// keeps its newest `MAX_EVENTS` capture sessions.
pub(crate) const MAX_EVENTS: usize = 1000;
pub(crate) const MAX_LINKS: usize = 1000;
/// An entity untouched this long is forgotten (Redis TTL).
pub(crate) const ENTITY_TTL_MS: i64 = 30 * DAY_MS;
/// Label propagation looks at most this many entities of one account.
const LABEL_NODES_PER_ACCOUNT: usize = 100;

/// Kind code of a capture session in an account event.
pub(crate) const CAPTURE_CODE: u8 = 200;

fn kind_code(kind: FactKind) -> u8 {
    match kind {
        FactKind::Transaction { kind, .. } => kind as u8,
        FactKind::CaptureSession { .. } => CAPTURE_CODE,
    }
}

/// First byte of an event member in an account's set (links start with an ASCII letter).
const EVENT_TAG: u8 = 0xFF;

/// One account event as stored: a 50-byte member of the account's set (tag, then time, id hash,
/// kind, USD cents, device / IP / country hashes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StoredEvent {
    pub(crate) time: i64,
    pub(crate) id: u64,
    pub(crate) kind: u8,
    pub(crate) usd_cents: i64,
    pub(crate) device: u64,
    pub(crate) ip: u64,
    pub(crate) country: u64,
}

impl StoredEvent {
    fn of(e: &EventFacts<'_>) -> Self {
        StoredEvent {
            time: e.event_time,
            id: hash64(e.event_id),
            kind: kind_code(e.kind),
            usd_cents: match e.kind {
                FactKind::Transaction { usd_cents, .. } => usd_cents,
                FactKind::CaptureSession { .. } => 0,
            },
            device: hash64(e.device_id),
            ip: hash64(e.ip),
            country: hash64(e.country),
        }
    }
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(50);
        out.push(EVENT_TAG);
        out.extend_from_slice(&self.time.to_le_bytes());
        out.extend_from_slice(&self.id.to_le_bytes());
        out.push(self.kind);
        out.extend_from_slice(&self.usd_cents.to_le_bytes());
        out.extend_from_slice(&self.device.to_le_bytes());
        out.extend_from_slice(&self.ip.to_le_bytes());
        out.extend_from_slice(&self.country.to_le_bytes());
        out
    }
    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 50 || b[0] != EVENT_TAG {
            return None;
        }
        let b = &b[1..];
        let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some(StoredEvent {
            time: u(0) as i64,
            id: u(8),
            kind: b[16],
            usd_cents: u(17) as i64,
            device: u(25),
            ip: u(33),
            country: u(41),
        })
    }
    pub(crate) fn is(&self, kind: TransactionKind) -> bool {
        self.kind == kind as u8
    }
}

/// A capture session in a device's set: `s`, `f`/`p` (failed / passed), time, id hash.
fn session_member(e: &EventFacts<'_>, failed: bool) -> Vec<u8> {
    let mut m = Vec::with_capacity(18);
    m.push(b's');
    m.push(if failed { b'f' } else { b'p' });
    m.extend_from_slice(&e.event_time.to_le_bytes());
    m.extend_from_slice(&hash64(e.event_id).to_le_bytes());
    m
}

fn link(prefix: char, value: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(2 + value.len());
    member_in(&mut m, &[prefix as u8, b':'], value);
    m
}

/// A member `PREFIX:value` written into `buf` (a lookup without an allocation).
fn member_in<'b>(buf: &'b mut Vec<u8>, prefix: &[u8], value: &str) -> &'b [u8] {
    buf.clear();
    buf.extend_from_slice(prefix);
    buf.extend_from_slice(value.as_bytes());
    buf
}

/// The label member of an account's set.
const LABEL_MEMBER: &[u8] = b"L";

/// `a:ACCOUNT` in a node's set.
fn account_member(account: &str) -> Vec<u8> {
    [b"a:".as_slice(), account.as_bytes()].concat()
}

/// `t1:ACCOUNT` / `t2:ACCOUNT` in a node's set.
fn taint_member(level: u8, account: &str) -> Vec<u8> {
    [
        if level == 1 {
            b"t1:".as_slice()
        } else {
            b"t2:".as_slice()
        },
        account.as_bytes(),
    ]
    .concat()
}

/// A node's set, split by member kind (capture sessions are in its [`Timeline`]).
struct NodeView<'a> {
    /// account -> first seen
    accounts: Vec<(&'a [u8], i64)>,
    hop1: Vec<&'a [u8]>,
    hop2: Vec<&'a [u8]>,
}

fn node_view(z: &ZSet) -> NodeView<'_> {
    let mut v = NodeView {
        accounts: Vec::new(),
        hop1: Vec::new(),
        hop2: Vec::new(),
    };
    for (m, s) in z {
        if let Some(a) = m.strip_prefix(b"a:") {
            v.accounts.push((a, *s));
        } else if let Some(a) = m.strip_prefix(b"t1:") {
            v.hop1.push(a);
        } else if let Some(a) = m.strip_prefix(b"t2:") {
            v.hop2.push(a);
        }
    }
    v
}

/// The entities (devices, IPs, documents, payout destinations) an event touches.
fn nodes_of<'a>(e: &EventFacts<'a>) -> impl Iterator<Item = (Node, &'a str)> {
    [
        (Node::Device, e.device_id),
        (Node::Ip, e.ip),
        (Node::Document, e.document),
        (Node::Destination, e.destination),
    ]
    .into_iter()
    .filter(|(_, id)| !id.is_empty())
}

/// The identity-graph entities (devices, IPs, documents) an event touches.
fn graph_nodes_of<'a>(e: &EventFacts<'a>) -> impl Iterator<Item = (Node, &'a str)> {
    nodes_of(e).filter(|(n, _)| *n != Node::Destination)
}

/// The entities a cluster walks through (`cluster_walk`): devices, documents and payout
/// addresses — not IPs (carrier NAT, offices and cafés put strangers behind one).
fn cluster_node(letter: u8) -> Option<Node> {
    match letter {
        b'd' => Some(Node::Device),
        b'm' => Some(Node::Document),
        b'x' => Some(Node::Destination),
        _ => None,
    }
}

/// Accounts on a node's set first seen before `t` (other than `me`), or `None` for a hub (more
/// than [`GRAPH_FANOUT_LIMIT`] accounts in all, as the identity graph's other features skip).
fn node_accounts<'a>(z: &'a ZSet, t: i64, me: &'a [u8]) -> Option<impl Iterator<Item = &'a [u8]>> {
    let all = z.keys().filter(|m| m.starts_with(b"a:")).count();
    (all <= GRAPH_FANOUT_LIMIT).then(|| {
        z.iter()
            .filter_map(move |(m, s)| m.strip_prefix(b"a:").filter(|a| *s < t && *a != me))
    })
}

/// The size of `e`'s account's cluster as of its time, as far as `ks` holds the sets it walks:
/// the accounts on the event's own device, document and payout address (hop 1), then, through
/// those accounts' devices, documents and payout addresses first used before `t` (oldest
/// first), theirs (hop 2); at most [`CLUSTER_MAX_ENTITIES`] entities, hubs skipped. A set the
/// walk needs and `ks` lacks is counted as empty and its read pushed to `need` (the Redis store
/// reads them in two more round trips — the accounts' links, then the entities found through
/// them — before the batch's features; the memory store's keyspace holds everything).
/// Point-in-time and order-independent: only members first seen before `t` count.
fn cluster_walk(keys: &Keys, ks: &Keyspace, e: &EventFacts<'_>, need: &mut Vec<Read>) -> usize {
    let t = e.event_time;
    let me = e.account_id.as_bytes();
    let own = [
        (Node::Device, e.device_id),
        (Node::Document, e.document),
        (Node::Destination, e.destination),
    ]
    .into_iter()
    .filter(|(_, id)| !id.is_empty());
    let mut key = String::new();
    let mut hop1: std::collections::BTreeSet<&[u8]> = Default::default();
    for (node, id) in own.clone() {
        if let Some(accounts) = ks
            .zset(keys.node_in(&mut key, node, id))
            .and_then(|z| node_accounts(z, t, me))
        {
            hop1.extend(accounts);
        }
    }
    if hop1.is_empty() {
        return 0; // most events: nothing shared, nothing to walk
    }
    let mut visited: BatchSet<(Node, &[u8])> =
        own.map(|(node, id)| (node, id.as_bytes())).collect();
    let mut cluster: HashSet<&[u8]> = hop1.iter().copied().collect();
    'accounts: for b in &hop1 {
        let Ok(b) = std::str::from_utf8(b) else {
            continue;
        };
        let Some(links) = ks.zset(keys.account_in(&mut key, b)) else {
            need.push(Read::Scored(key.clone()));
            continue;
        };
        let mut nodes: Vec<(i64, Node, &[u8])> = links
            .iter()
            .filter(|(m, s)| m.len() > 2 && m[1] == b':' && **s < t)
            .filter_map(|(m, s)| Some((*s, cluster_node(m[0])?, &m[2..])))
            .collect();
        nodes.sort_unstable();
        for (_, node, id) in nodes {
            let Ok(id_str) = std::str::from_utf8(id) else {
                continue;
            };
            if visited.contains(&(node, id)) {
                continue;
            }
            if visited.len() >= CLUSTER_MAX_ENTITIES {
                break 'accounts;
            }
            match ks.zset(keys.node_in(&mut key, node, id_str)) {
                Some(z) => {
                    if let Some(accounts) = node_accounts(z, t, me) {
                        cluster.extend(accounts);
                    }
                }
                None => need.push(Read::ZRange(key.clone())),
            }
            visited.insert((node, id));
        }
    }
    cluster.len()
}

/// The reads the batch's cluster walks still need (none once `ks` holds what they walk).
pub(crate) fn cluster_reads(keys: &Keys, ks: &Keyspace, batch: &[EventFacts<'_>]) -> Vec<Read> {
    let mut need = Vec::new();
    for e in batch {
        cluster_walk(keys, ks, e, &mut need);
    }
    let mut seen = HashSet::new();
    need.retain(|r| match r {
        Read::Scored(k) | Read::ZRange(k) | Read::Unscored(k) => seen.insert(k.clone()),
        Read::HMGet { .. } => true,
    });
    need
}

/// Writes then reads for one batch.
pub(crate) fn plan_batch(keys: &Keys, batch: &[EventFacts<'_>]) -> (Vec<Op>, Vec<Read>) {
    let mut ops = Vec::new();
    let mut reads = Vec::new();
    // Group by entity, keeping first-appearance order (deterministic plans).
    let mut accounts: Vec<(&str, Vec<&EventFacts<'_>>)> = Vec::new();
    let mut account_at: BatchMap<&str, usize> = BatchMap::default();
    let mut nodes: Vec<((Node, &str), Vec<&EventFacts<'_>>)> = Vec::new();
    let mut node_at: BatchMap<(Node, &str), usize> = BatchMap::default();
    for e in batch {
        let i = *account_at.entry(e.account_id).or_insert_with(|| {
            accounts.push((e.account_id, Vec::new()));
            accounts.len() - 1
        });
        accounts[i].1.push(e);
        for n in nodes_of(e) {
            let i = *node_at.entry(n).or_insert_with(|| {
                nodes.push((n, Vec::new()));
                nodes.len() - 1
            });
            nodes[i].1.push(e);
        }
    }
    // First features of these event ids, if they were scored before: one HMGET per hash.
    let mut firsts: Vec<(first::Slot, Vec<Vec<u8>>)> = Vec::new();
    for e in batch {
        let id = hash64(e.event_id);
        let slot = first::slot(id, e.event_time);
        match firsts.iter_mut().find(|(x, _)| *x == slot) {
            Some((_, fields)) => fields.push(first::field(id)),
            None => firsts.push((slot, vec![first::field(id)])),
        }
    }
    for (slot, fields) in firsts {
        reads.push(Read::HMGet {
            key: keys.first_features(slot),
            fields,
        });
    }
    for (account, events) in &accounts {
        // One set: its events (scored 0: each carries its time) and its links (scored by
        // first-seen time), read apart so that Redis formats no score for the events.
        let key = keys.account(account);
        let mut members: Vec<(i64, Vec<u8>)> = Vec::with_capacity(events.len() * 5);
        members.extend(events.iter().map(|e| (0, StoredEvent::of(e).encode())));
        for e in events {
            let t = e.event_time;
            members.push((t, link('d', e.device_id)));
            for (prefix, value) in [
                ('i', e.ip),
                ('c', e.country),
                ('x', e.destination),
                ('m', e.document),
            ] {
                if !value.is_empty() {
                    members.push((t, link(prefix, value)));
                }
            }
            match e.kind {
                FactKind::Transaction {
                    kind: TransactionKind::PasswordChange,
                    ..
                } => members.push((t, link('p', e.event_id))),
                FactKind::Transaction {
                    kind: TransactionKind::MfaChange,
                    ..
                } => members.push((t, link('f', e.event_id))),
                _ => {}
            }
        }
        reads.push(Read::Unscored(key.clone()));
        touch(&mut ops, &mut reads, key, members, Read::Scored);
    }
    for ((node, id), events) in &nodes {
        let key = keys.node(*node, id);
        let mut members: Vec<(i64, Vec<u8>)> = events
            .iter()
            .map(|e| (e.event_time, account_member(e.account_id)))
            .collect();
        if *node == Node::Device {
            // A device's capture sessions (and their tiles) live in its own set: most devices
            // have none or a few, so a second key would cost a read per event for nothing.
            for e in events {
                if let FactKind::CaptureSession { failed_check } = e.kind {
                    members.push((e.event_time, session_member(e, failed_check)));
                }
            }
        }
        touch(&mut ops, &mut reads, key, members, Read::ZRange);
    }
    (ops, reads)
}

/// One entity's share of a batch: add its members (if any), refresh its TTL, read it back
/// with `read`.
fn touch(
    ops: &mut Vec<Op>,
    reads: &mut Vec<Read>,
    key: String,
    members: Vec<(i64, Vec<u8>)>,
    read: fn(String) -> Read,
) {
    if !members.is_empty() {
        ops.push(Op::ZAdd {
            key: key.clone(),
            members,
        });
        ops.push(Op::Expire {
            key: key.clone(),
            ms: ENTITY_TTL_MS,
        });
    }
    reads.push(read(key));
}

fn secs(ms: i64) -> f32 {
    (ms as f64 / 1000.0) as f32
}

fn usd(cents: i64) -> f32 {
    (cents as f64 / 100.0) as f32
}

/// One account's share of a batch's reads.
struct AccountView<'a> {
    key: String,
    /// Its whole set; links are the members that start with an ASCII letter.
    links: &'a ZSet,
    /// Its events and tiles.
    timeline: Timeline<'a>,
}

/// One device's, IP's or document's share of a batch's reads.
struct EntityView<'a> {
    key: String,
    set: &'a ZSet,
    graph: NodeView<'a>,
    /// Capture sessions (devices only; empty otherwise).
    sessions: Timeline<'a>,
}

/// The batch's entities, each read and resolved once.
struct BatchView<'a> {
    keys: &'a Keys,
    ks: &'a Keyspace,
    accounts: BatchMap<&'a str, AccountView<'a>>,
    nodes: BatchMap<(Node, &'a str), EntityView<'a>>,
}

/// Accounts' events and tiles held apart from the batch's reads (the Redis store's account
/// cache), by account key; an account not in it has them in its set in the [`Keyspace`].
pub(crate) type Timelines = HashMap<String, std::sync::Arc<ZSet>, crate::keyspace::Seeded>;

fn batch_view<'a>(
    keys: &'a Keys,
    ks: &'a Keyspace,
    timelines: &'a Timelines,
    batch: &[EventFacts<'a>],
    empty: &'a ZSet,
) -> BatchView<'a> {
    let mut view = BatchView {
        keys,
        ks,
        accounts: BatchMap::default(),
        nodes: BatchMap::default(),
    };
    for e in batch {
        view.accounts.entry(e.account_id).or_insert_with(|| {
            let key = keys.account(e.account_id);
            let set = ks.zset(&key).unwrap_or(empty);
            let events = timelines.get(&key).map_or(set, |z| &**z);
            AccountView {
                links: set,
                key,
                timeline: Timeline::of(events, true),
            }
        });
        for (node, id) in nodes_of(e) {
            view.nodes.entry((node, id)).or_insert_with(|| {
                let key = keys.node(node, id);
                let set = ks.zset(&key).unwrap_or(empty);
                EntityView {
                    graph: node_view(set),
                    sessions: Timeline::of(if node == Node::Device { set } else { empty }, false),
                    key,
                    set,
                }
            });
        }
    }
    view
}

/// Features of every event of `batch` from the state after the batch was written (`ks`), and
/// the writes due after them: first features of events scored for the first time, taint
/// fix-ups, tiles, trims and caps.
pub(crate) fn evaluate(
    keys: &Keys,
    ks: &Keyspace,
    timelines: &Timelines,
    batch: &[EventFacts<'_>],
    limits: &StoreLimits,
    recent: Option<&mut first::Recent>,
) -> (Vec<StoreFeatures>, Vec<Op>) {
    let empty = ZSet::default();
    let view = batch_view(keys, ks, timelines, batch, &empty);
    let mut scratch = Scratch::default();
    // (hour, bucket) -> its first-features hash key, and the new fields for it.
    type NewFirsts = (String, Vec<(u64, StoreFeatures)>);
    let mut firsts: BatchMap<first::Slot, NewFirsts> = BatchMap::default();
    let features = batch
        .iter()
        .map(|e| {
            let id = hash64(e.event_id);
            let slot = first::slot(id, e.event_time);
            let (key, new) = firsts
                .entry(slot)
                .or_insert_with(|| (keys.first_features(slot), Vec::new()));
            let known = ks
                .hash_field(key, &id.to_le_bytes())
                .and_then(first::decode)
                .or_else(|| new.iter().find(|(x, _)| *x == id).map(|(_, f)| *f));
            known.unwrap_or_else(|| {
                // Given by a recent call whose write may not have landed yet: written again
                // (HSETNX keeps whichever lands first; they are the same).
                let f = recent
                    .as_deref()
                    .and_then(|r| r.get(id))
                    .unwrap_or_else(|| features(e, &view, &mut scratch));
                new.push((id, f));
                f
            })
        })
        .collect();
    let mut ops = Vec::new();
    let mut firsts: Vec<NewFirsts> = firsts.into_values().collect();
    firsts.sort_by(|a, b| a.0.cmp(&b.0));
    // This call's new first features, for the next calls until its write lands (the ones read
    // back from Redis are there for them too).
    if let Some(recent) = recent {
        recent.push(firsts.iter().flat_map(|(_, new)| new.iter().copied()));
    }
    for (key, new) in firsts.into_iter().filter(|(_, new)| !new.is_empty()) {
        ops.push(Op::HSetNx {
            key: key.clone(),
            fields: new
                .iter()
                .map(|(id, f)| (first::field(*id), first::encode(f)))
                .collect(),
        });
        ops.push(Op::Expire {
            key,
            ms: limits.first_features_ttl_ms,
        });
    }
    ops.extend(taint_fixups(keys, ks, batch));
    ops.extend(maintenance(&view, batch, limits));
    (features, ops)
}

/// Buffers reused from one event's features to the next.
#[derive(Default)]
struct Scratch {
    distinct: [Vec<u64>; 3],
    /// A member being looked up.
    member: Vec<u8>,
}

/// Features of `e` from the state after its batch was written.
fn features(e: &EventFacts<'_>, view: &BatchView<'_>, scratch: &mut Scratch) -> StoreFeatures {
    let mut f = StoreFeatures::default();
    let v = &mut f.values;
    let t = e.event_time;
    let account = &view.accounts[e.account_id];

    // Account events: velocity, last login, distinct devices / IPs / countries in windows.
    let windows = account.timeline.windows_before(t);
    for (w, agg) in windows.iter().enumerate() {
        for (k, [count, cents, max]) in agg.money.iter().enumerate() {
            v[velocity(w, k, 0)] = *count as f32;
            v[velocity(w, k, 1)] = usd(*cents);
            v[velocity(w, k, 2)] = usd(*max);
        }
        v[logins(w)] = agg.logins as f32;
        v[credential_changes(w)] = agg.credentials as f32;
    }
    for (i, w) in [2, 3].into_iter().enumerate() {
        let counts = account
            .timeline
            .distinct_before(t, WINDOWS[w].1, &mut scratch.distinct);
        for (what, n) in counts.into_iter().enumerate() {
            v[DISTINCT_WINDOWED + 2 * what + i] = n as f32;
        }
    }
    v[SECS_SINCE_LOGIN] = account
        .timeline
        .last_login_before(t, LONGEST_WINDOW_MS)
        .map_or(NEVER_SECS, |s| secs(t - s));

    // Account links: new device / destination, distinct devices, password and MFA changes, label.
    let links = account.links;
    // Every event links its device at its time (the earliest kept), so the oldest device link
    // is the account's first event the store holds.
    let (mut last_password, mut last_mfa, mut devices) = (None::<i64>, None::<i64>, 0);
    let mut account_first = None::<i64>;
    for (m, s) in links {
        match m.first() {
            Some(b'd') if *s < t => {
                devices += 1;
                account_first = Some(account_first.map_or(*s, |f| f.min(*s)));
            }
            Some(b'p') if *s < t => last_password = last_password.max(Some(*s)),
            Some(b'f') if *s < t => last_mfa = last_mfa.max(Some(*s)),
            _ => {}
        }
    }
    v[DISTINCT_DEVICES] = devices as f32;
    if let Some(first) = account_first {
        v[ACCOUNT_AGE] = secs(t - first);
    }
    // The device's tenure on the account, and how long after the account's start it came.
    let mut first_seen = |prefix: &[u8], value: &str| {
        links
            .get(member_in(&mut scratch.member, prefix, value))
            .copied()
    };
    let device_seen = first_seen(b"d:", e.device_id);
    let device_first = device_seen.filter(|s| *s < t).unwrap_or(t);
    v[DEVICE_TENURE] = secs(t - device_first);
    if let Some(first) = account_first {
        v[DEVICE_AFTER_FIRST] = secs((device_first - first).max(0));
    }
    v[SECS_SINCE_PASSWORD_CHANGE] = last_password.map_or(NEVER_SECS, |s| secs(t - s));
    v[SECS_SINCE_MFA_CHANGE] = last_mfa.map_or(NEVER_SECS, |s| secs(t - s));
    v[DEVICE_IS_NEW] = (device_seen.is_none_or(|s| s >= t)) as u8 as f32;
    v[DEST_TENURE] = NEVER_SECS;
    if !e.destination.is_empty() {
        let paid_first = first_seen(b"x:", e.destination).filter(|s| *s < t);
        v[DESTINATION_IS_NEW] = paid_first.is_none() as u8 as f32;
        v[DEST_TENURE] = paid_first.map_or(0.0, |s| secs(t - s));
    }
    v[ACCOUNT_LABELLED] = links.contains_key(LABEL_MEMBER) as u8 as f32;

    // Devices, IPs, documents: accounts before the event, and the graph through them.
    let mut linked: BatchSet<&[u8]> = BatchSet::default();
    let mut hop1: BatchSet<&[u8]> = BatchSet::default();
    let mut hop2: BatchSet<&[u8]> = BatchSet::default();
    for (node, id) in nodes_of(e) {
        let entity = &view.nodes[&(node, id)];
        let graph = &entity.graph;
        // Accounts first seen on it before the event, and within the day before it.
        let (before, since_24h) = graph
            .accounts
            .iter()
            .filter(|(_, s)| *s < t)
            .fold((0.0f32, 0.0f32), |(all, day), (_, s)| {
                (all + 1.0, day + (*s >= t - DAY_MS) as u8 as f32)
            });
        match node {
            Node::Device => {
                v[DEVICE_ACCOUNTS] = before;
                if let Some(first) = graph
                    .accounts
                    .iter()
                    .map(|(_, s)| *s)
                    .min()
                    .filter(|first| *first < t)
                {
                    v[DEVICE_AGE] = secs(t - first);
                }
                let sessions = entity.sessions.windows_before(t);
                v[DEVICE_SESSIONS_24H] = sessions[2].sessions as f32;
                v[DEVICE_FAILED_24H] = sessions[2].failed as f32;
                v[DEVICE_FAILED_7D] = sessions[3].failed as f32;
            }
            Node::Ip => v[IP_ACCOUNTS] = before,
            Node::Document => {
                v[DOCUMENT_ACCOUNTS] = before;
                v[DOCUMENT_ACCOUNTS_24H] = since_24h;
            }
            Node::Destination => {
                v[DESTINATION_ACCOUNTS] = before;
                v[DESTINATION_ACCOUNTS_24H] = since_24h;
                continue; // counted, not part of the identity graph
            }
        }
        if graph.accounts.len() > GRAPH_FANOUT_LIMIT {
            continue; // a hub: no graph features through it
        }
        let me = e.account_id.as_bytes();
        linked.extend(
            graph
                .accounts
                .iter()
                .filter(|(a, s)| *s < t && *a != me)
                .map(|(a, _)| *a),
        );
        hop1.extend(graph.hop1.iter().filter(|a| **a != me));
        hop2.extend(graph.hop2.iter().filter(|a| **a != me));
    }
    v[GRAPH_LINKED] = linked.len() as f32;
    v[GRAPH_CLUSTER] = cluster_walk(view.keys, view.ks, e, &mut Vec::new()) as f32;
    v[GRAPH_FRAUD_1HOP] = hop1.len() as f32;
    v[GRAPH_FRAUD_2HOP] = hop2.difference(&hop1).count() as f32;
    f
}

/// The account's devices, IPs and documents from its set, oldest first, at most `limit`.
fn account_nodes(links: &ZSet, limit: usize) -> Vec<(Node, String)> {
    let mut out: Vec<(i64, Node, String)> = links
        .iter()
        .filter(|(m, _)| m.len() > 2 && m[1] == b':')
        .filter_map(|(m, s)| {
            Some((
                *s,
                Node::from_letter(m[0])?,
                String::from_utf8(m[2..].to_vec()).ok()?,
            ))
        })
        .collect();
    out.sort();
    out.into_iter()
        .take(limit)
        .map(|(_, n, id)| (n, id))
        .collect()
}

/// Tiles, trims and caps the batch's reads show are due (usually none), as `ZADD`s of tiles
/// and explicit `ZREM`s: see `tiles.rs` for events and capture sessions (trimmed older than the
/// batch's oldest event on that entity minus the retention, tiled behind the raw head, the
/// oldest raw ones beyond the cap); links and accounts beyond the cap, newest first. Done after
/// the reads, so no event of the batch loses its window, and only when needed.
fn maintenance<'a>(
    view: &'a BatchView<'a>,
    batch: &[EventFacts<'a>],
    limits: &StoreLimits,
) -> Vec<Op> {
    // entity key -> oldest event of the batch on it
    let mut oldest: BatchMap<&'a str, i64> = BatchMap::default();
    for e in batch {
        let keys = std::iter::once(view.accounts[e.account_id].key.as_str())
            .chain(nodes_of(e).map(|n| view.nodes[&n].key.as_str()));
        for key in keys {
            let o = oldest.entry(key).or_insert(e.event_time);
            *o = (*o).min(e.event_time);
        }
    }
    // (entity key, its timeline, its set, is an account)
    let mut entities: Vec<(&str, &Timeline<'_>, &ZSet, bool)> = Vec::new();
    entities.extend(
        view.accounts
            .values()
            .map(|a| (a.key.as_str(), &a.timeline, a.links, true)),
    );
    entities.extend(
        view.nodes
            .values()
            .map(|n| (n.key.as_str(), &n.sessions, n.set, false)),
    );
    entities.sort_by_key(|(key, ..)| *key);
    let mut ops = Vec::new();
    for (key, timeline, z, account) in entities {
        let (adds, doomed) = timeline.maintenance(
            oldest[key],
            limits.allowed_lateness_ms,
            limits.retention_ms(),
        );
        if !adds.is_empty() {
            ops.push(Op::ZAdd {
                key: key.to_string(),
                // An account's tiles are scored 0 like its events (read without scores).
                members: if account {
                    adds.into_iter().map(|(_, m)| (0, m)).collect()
                } else {
                    adds
                },
            });
        }
        if !doomed.is_empty() {
            ops.push(Op::ZRem {
                key: key.to_string(),
                members: doomed,
            });
        }
        // Links (account) or accounts (node) beyond the cap; taint marks are bounded by the
        // labels, events and capture sessions by their timeline, not capped here.
        if z.len() <= MAX_LINKS {
            continue;
        }
        let mut linked: Vec<(i64, &[u8])> = z
            .iter()
            .filter(|(m, _)| {
                if account {
                    m.first().is_some_and(u8::is_ascii_alphabetic)
                } else {
                    m.starts_with(b"a:")
                }
            })
            .map(|(m, s)| (*s, m))
            .collect();
        if linked.len() > MAX_LINKS {
            linked.sort();
            ops.push(Op::ZRem {
                key: key.to_string(),
                members: linked[MAX_LINKS..]
                    .iter()
                    .map(|(_, m)| m.to_vec())
                    .collect(),
            });
        }
    }
    ops
}

/// Prefix of the account-set members that remember a labelled account one hop away ("near").
const NEAR_PREFIX: &[u8] = b"N:";

fn near_member(labelled: &str) -> Vec<u8> {
    [NEAR_PREFIX, labelled.as_bytes()].concat()
}

/// Taint writes a batch implies, found after its reads (rare; usually none):
/// - a labelled account on an entity that does not yet list it → taint 1 there;
/// - an account joining (first seen at this event) an entity with labelled accounts → it
///   remembers them as "near", and its other entities get them as two-hop taint;
/// - an account with "near" labelled accounts linking to a new entity → that entity gets them
///   as two-hop taint.
fn taint_fixups(keys: &Keys, ks: &Keyspace, batch: &[EventFacts<'_>]) -> Vec<Op> {
    let mut ops = Vec::new();
    let empty = ZSet::default();
    let (mut key, mut member) = (String::new(), Vec::new());
    for e in batch {
        let t = e.event_time;
        let links = ks
            .zset(keys.account_in(&mut key, e.account_id))
            .unwrap_or(&empty);
        let labelled = links.contains_key(LABEL_MEMBER);
        let near: Vec<&[u8]> = links
            .keys()
            .filter_map(|m| m.strip_prefix(NEAR_PREFIX))
            .collect();
        let mut mine: Option<Vec<(Node, String)>> = None;
        for (node, id) in graph_nodes_of(e) {
            let node_key = keys.node_in(&mut key, node, id);
            let z = ks.zset(node_key).unwrap_or(&empty);
            if labelled && !z.contains_key(&taint_member(1, e.account_id)) {
                ops.push(Op::ZAdd {
                    key: node_key.to_string(),
                    members: vec![(t, taint_member(1, e.account_id))],
                });
            }
            let letter = [node.letter() as u8, b':'];
            let new_link = links.get(member_in(&mut member, &letter, id)) == Some(&t);
            if new_link {
                for l in &near {
                    let l = String::from_utf8_lossy(l);
                    if !z.contains_key(&taint_member(1, &l))
                        && !z.contains_key(&taint_member(2, &l))
                    {
                        ops.push(Op::ZAdd {
                            key: node_key.to_string(),
                            members: vec![(t, taint_member(2, &l))],
                        });
                    }
                }
            }
            let joined = z.get(member_in(&mut member, b"a:", e.account_id)) == Some(&t);
            if !joined {
                continue;
            }
            let hop1: Vec<String> = z
                .keys()
                .filter_map(|m| m.strip_prefix(b"t1:"))
                .filter(|a| *a != e.account_id.as_bytes())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if hop1.is_empty() {
                continue;
            }
            ops.push(Op::ZAdd {
                key: keys.account(e.account_id),
                members: hop1.iter().map(|l| (t, near_member(l))).collect(),
            });
            let mine = mine.get_or_insert_with(|| account_nodes(links, LABEL_NODES_PER_ACCOUNT));
            for (other, other_id) in mine.iter() {
                if (*other, other_id.as_str()) == (node, id) {
                    continue;
                }
                ops.push(Op::ZAdd {
                    key: keys.node(*other, other_id),
                    members: hop1.iter().map(|l| (t, taint_member(2, l))).collect(),
                });
            }
        }
    }
    ops
}

/// Runs writes then reads in one round trip; the store's side of label propagation.
pub(crate) trait Exec: Sync {
    fn exec(
        &self,
        ops: Vec<Op>,
        reads: Vec<Read>,
    ) -> impl Future<Output = Result<Keyspace, StoreError>> + Send;
}

/// Applies a label to `account`: `tainted` = confirmed fraud / ATO / chargeback / bot (marks
/// the account and propagates), `false` = cleared (legitimate: removes the marks it made).
/// Four round trips, bounded: at most 100 entities per account, hubs (more than
/// [`GRAPH_FANOUT_LIMIT`] accounts) are not crossed.
pub(crate) async fn apply_label(
    exec: &impl Exec,
    keys: &Keys,
    account: &str,
    tainted: bool,
    label_time: i64,
) -> Result<LabelOutcome, StoreError> {
    let mark = |key: String, member: Vec<u8>| {
        if tainted {
            Op::ZAdd {
                key,
                members: vec![(label_time, member)],
            }
        } else {
            Op::ZRem {
                key,
                members: vec![member],
            }
        }
    };
    let key = keys.account(account);
    let ks = exec
        .exec(
            vec![
                mark(key.clone(), LABEL_MEMBER.to_vec()),
                Op::Expire {
                    key: key.clone(),
                    ms: ENTITY_TTL_MS,
                },
            ],
            vec![Read::Scored(key.clone())],
        )
        .await?;
    let nodes = account_nodes(
        ks.zset(&key).unwrap_or(&ZSet::default()),
        LABEL_NODES_PER_ACCOUNT,
    );

    // Hop 1: the account's own entities.
    let ops = nodes
        .iter()
        .map(|(n, id)| mark(keys.node(*n, id), taint_member(1, account)))
        .collect();
    let reads = nodes
        .iter()
        .map(|(n, id)| Read::ZRange(keys.node(*n, id)))
        .collect();
    let ks = exec.exec(ops, reads).await?;
    let mut neighbours: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for (n, id) in &nodes {
        let Some(z) = ks.zset(&keys.node(*n, id)) else {
            continue;
        };
        let view = node_view(z);
        if view.accounts.len() > GRAPH_FANOUT_LIMIT {
            continue;
        }
        for (a, _) in view.accounts {
            let a = String::from_utf8_lossy(a).into_owned();
            if a != account && seen.insert(a.clone()) {
                neighbours.push(a);
            }
        }
    }

    // Hop 2: the neighbours remember the label, and their other entities carry it.
    let reads: Vec<Read> = neighbours
        .iter()
        .map(|a| Read::Scored(keys.account(a)))
        .collect();
    let ks = exec.exec(Vec::new(), reads).await?;
    let own: HashSet<(Node, &str)> = nodes.iter().map(|(n, id)| (*n, id.as_str())).collect();
    let mut ops = Vec::new();
    let mut second_hop_entities = 0;
    for a in &neighbours {
        ops.push(mark(keys.account(a), near_member(account)));
        let Some(links) = ks.zset(&keys.account(a)) else {
            continue;
        };
        for (n, id) in account_nodes(links, LABEL_NODES_PER_ACCOUNT) {
            if !own.contains(&(n, id.as_str())) {
                ops.push(mark(keys.node(n, &id), taint_member(2, account)));
                second_hop_entities += 1;
            }
        }
    }
    if !ops.is_empty() {
        exec.exec(ops, Vec::new()).await?;
    }
    Ok(LabelOutcome {
        entities: nodes.len(),
        neighbours: neighbours.len(),
        second_hop_entities,
    })
}
