//! The feature algorithm, written once for both stores: which writes and reads a batch needs
//! ([`plan_batch`]), the features of one event from what was read ([`features`]), the taint
//! fix-ups a batch implies ([`taint_fixups`]), and label propagation ([`apply_label`]).
//!
//! A batch's writes go first and its reads after, in one round trip: features then see the
//! batch's own events too, and count only those strictly before each event's time — the same
//! answer as applying events one by one, in any order.
//!
//! One sorted set per entity (see `keyspace.rs`). Members of an account's set: its events
//! (`0xFF` + 49 bytes, scored by event time) and its links (`d:`, `i:`, `c:`, `x:`, `m:` first
//! seen; `p:`/`f:` password / MFA changes; `N:` labelled accounts one hop away; `L` its own
//! label). Members of a device's, IP's or document's set: `a:ACCOUNT` (first seen), capture
//! sessions `s` + `f`/`p` + id hash (device only), `t1:ACCOUNT` / `t2:ACCOUNT` labelled accounts
//! one / two hops away. Every write is `ZADD LT`, `ZREM` or `PEXPIRE`.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use riskstream_events::TransactionKind;

use crate::catalogue::*;
use crate::keyspace::{hash64, Keys, Keyspace, Node, Op, Read, ZSet};
use crate::{EventFacts, FactKind, LabelOutcome, StoreError};

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
const CAPTURE_CODE: u8 = 200;

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
struct StoredEvent {
    time: i64,
    id: u64,
    kind: u8,
    usd_cents: i64,
    device: u64,
    ip: u64,
    country: u64,
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
    fn encode(&self) -> Vec<u8> {
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
    fn decode(b: &[u8]) -> Option<Self> {
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
    fn is(&self, kind: TransactionKind) -> bool {
        self.kind == kind as u8
    }
}

fn session_member(e: &EventFacts<'_>, failed: bool) -> Vec<u8> {
    let mut m = Vec::with_capacity(10);
    m.push(b's');
    m.push(if failed { b'f' } else { b'p' });
    m.extend_from_slice(&hash64(e.event_id).to_le_bytes());
    m
}

fn link(prefix: char, value: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(2 + value.len());
    m.push(prefix as u8);
    m.push(b':');
    m.extend_from_slice(value.as_bytes());
    m
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

/// A node's set, split by member kind.
struct NodeView<'a> {
    /// account -> first seen
    accounts: Vec<(&'a [u8], i64)>,
    /// (time, failed) of capture sessions
    sessions: Vec<(i64, bool)>,
    hop1: Vec<&'a [u8]>,
    hop2: Vec<&'a [u8]>,
}

fn node_view(z: &ZSet) -> NodeView<'_> {
    let mut v = NodeView {
        accounts: Vec::new(),
        sessions: Vec::new(),
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
        } else if m.first() == Some(&b's') && m.len() == 10 {
            v.sessions.push((*s, m[1] == b'f'));
        }
    }
    v
}

/// The entities (devices, IPs, documents) an event touches.
fn nodes_of<'a>(e: &EventFacts<'a>) -> impl Iterator<Item = (Node, &'a str)> {
    [
        (Node::Device, e.device_id),
        (Node::Ip, e.ip),
        (Node::Document, e.document),
    ]
    .into_iter()
    .filter(|(_, id)| !id.is_empty())
}

/// Writes then reads for one batch.
pub(crate) fn plan_batch(keys: &Keys, batch: &[EventFacts<'_>]) -> (Vec<Op>, Vec<Read>) {
    let mut ops = Vec::new();
    let mut reads = Vec::new();
    // Group by entity, keeping first-appearance order (deterministic plans).
    let mut accounts: Vec<(&str, Vec<&EventFacts<'_>>)> = Vec::new();
    let mut account_at: HashMap<&str, usize> = HashMap::new();
    let mut nodes: Vec<((Node, &str), Vec<&EventFacts<'_>>)> = Vec::new();
    let mut node_at: HashMap<(Node, &str), usize> = HashMap::new();
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
    for (account, events) in &accounts {
        let key = keys.account(account);
        let mut members = Vec::with_capacity(events.len() * 4);
        for e in events {
            let t = e.event_time;
            members.push((t, StoredEvent::of(e).encode()));
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
        touch(&mut ops, &mut reads, key, members);
    }
    for ((node, id), events) in &nodes {
        let key = keys.node(*node, id);
        let mut members: Vec<(i64, Vec<u8>)> = events
            .iter()
            .map(|e| (e.event_time, account_member(e.account_id)))
            .collect();
        if *node == Node::Device {
            for e in events {
                if let FactKind::CaptureSession { failed_check } = e.kind {
                    members.push((e.event_time, session_member(e, failed_check)));
                }
            }
        }
        touch(&mut ops, &mut reads, key, members);
    }
    (ops, reads)
}

/// One entity's share of a batch: add its members, refresh its TTL, read it back.
fn touch(ops: &mut Vec<Op>, reads: &mut Vec<Read>, key: String, members: Vec<(i64, Vec<u8>)>) {
    ops.push(Op::ZAdd {
        key: key.clone(),
        members,
    });
    ops.push(Op::Expire {
        key: key.clone(),
        ms: ENTITY_TTL_MS,
    });
    reads.push(Read::ZRange(key));
}

fn secs(ms: i64) -> f32 {
    (ms as f64 / 1000.0) as f32
}

/// One account's stored events, decoded, sorted by time, one per event id.
type AccountEvents = Vec<(i64, StoredEvent)>;

fn account_events(events: &ZSet) -> AccountEvents {
    let mut sorted: AccountEvents = events
        .keys()
        .filter_map(|m| StoredEvent::decode(m).map(|d| (d.time, d)))
        .collect();
    sorted.sort_by_key(|(s, d)| (*s, d.id));
    let mut seen = HashSet::with_capacity(sorted.len());
    sorted.retain(|(_, d)| seen.insert(d.id)); // one event id counts once, whatever its copies
    sorted
}

/// Features of every event of `batch` from the state after the batch was written (`ks`).
pub(crate) fn features_batch(
    keys: &Keys,
    ks: &Keyspace,
    batch: &[EventFacts<'_>],
) -> Vec<StoreFeatures> {
    // Each entity's set is looked up and split once per batch, not once per event.
    let empty = ZSet::new();
    let mut accounts: HashMap<&str, (&ZSet, AccountEvents)> = HashMap::new();
    let mut nodes: HashMap<(Node, &str), NodeView<'_>> = HashMap::new();
    for e in batch {
        accounts.entry(e.account_id).or_insert_with(|| {
            let set = ks.zset(&keys.account(e.account_id)).unwrap_or(&empty);
            (set, account_events(set))
        });
        for (node, id) in nodes_of(e) {
            nodes
                .entry((node, id))
                .or_insert_with(|| node_view(ks.zset(&keys.node(node, id)).unwrap_or(&empty)));
        }
    }
    batch
        .iter()
        .map(|e| {
            let (links, events) = &accounts[e.account_id];
            features(e, links, events, &nodes)
        })
        .collect()
}

fn insert_distinct(set: &mut Vec<u64>, h: u64) {
    if h != 0 && !set.contains(&h) {
        set.push(h);
    }
}

/// Features of `e` from the state after its batch was written: `links` = its account's set,
/// `sorted` = that account's events, `nodes` = the batch's devices, IPs and documents.
fn features(
    e: &EventFacts<'_>,
    links: &ZSet,
    sorted: &AccountEvents,
    nodes: &HashMap<(Node, &str), NodeView<'_>>,
) -> StoreFeatures {
    let mut f = StoreFeatures::default();
    let v = &mut f.values;
    let t = e.event_time;

    // Account events: velocity, last login, distinct devices / IPs / countries in windows.
    let upto = sorted.partition_point(|(s, _)| *s < t);
    let start = sorted.partition_point(|(s, _)| *s < t - LONGEST_WINDOW_MS);
    let last_login = sorted[start.min(upto)..upto]
        .iter()
        .rev()
        .find(|(_, d)| d.is(TransactionKind::Login))
        .map(|(s, _)| *s);
    let mut distinct: [[Vec<u64>; 2]; 3] = Default::default();
    for (s, d) in &sorted[start.min(upto)..upto] {
        let age = t - s;
        for (w, (_, len)) in WINDOWS.iter().enumerate() {
            if age > *len {
                continue;
            }
            let money = [
                d.is(TransactionKind::TransferOut)
                    || d.is(TransactionKind::Withdrawal)
                    || d.is(TransactionKind::CardPayment),
                d.is(TransactionKind::TransferOut),
                d.is(TransactionKind::Withdrawal),
                d.is(TransactionKind::CardPayment),
            ];
            for (k, hit) in money.iter().enumerate() {
                if *hit {
                    let usd = d.usd_cents as f32 / 100.0;
                    v[velocity(w, k, 0)] += 1.0;
                    v[velocity(w, k, 1)] += usd;
                    v[velocity(w, k, 2)] = v[velocity(w, k, 2)].max(usd);
                }
            }
            if d.is(TransactionKind::Login) {
                v[logins(w)] += 1.0;
            }
            if d.kind != CAPTURE_CODE
                && TransactionKind::from_code(d.kind).is_some_and(|k| k.is_credential_change())
            {
                v[credential_changes(w)] += 1.0;
            }
        }
        for (i, (ms, _)) in [(DAY_MS, 0), (7 * DAY_MS, 1)].iter().enumerate() {
            if age <= *ms {
                for (what, h) in [d.device, d.ip, d.country].into_iter().enumerate() {
                    insert_distinct(&mut distinct[what][i], h);
                }
            }
        }
    }
    for what in 0..3 {
        for w in 0..2 {
            v[DISTINCT_WINDOWED + 2 * what + w] = distinct[what][w].len() as f32;
        }
    }
    v[SECS_SINCE_LOGIN] = last_login.map_or(NEVER_SECS, |s| secs(t - s));

    // Account links: new device / destination, distinct devices, password and MFA changes, label.
    let (mut last_password, mut last_mfa, mut devices) = (None::<i64>, None::<i64>, 0);
    for (m, s) in links {
        match m.first() {
            Some(b'd') if *s < t => devices += 1,
            Some(b'p') if *s < t => last_password = last_password.max(Some(*s)),
            Some(b'f') if *s < t => last_mfa = last_mfa.max(Some(*s)),
            _ => {}
        }
    }
    v[DISTINCT_DEVICES] = devices as f32;
    v[SECS_SINCE_PASSWORD_CHANGE] = last_password.map_or(NEVER_SECS, |s| secs(t - s));
    v[SECS_SINCE_MFA_CHANGE] = last_mfa.map_or(NEVER_SECS, |s| secs(t - s));
    let first_seen = |prefix: char, value: &str| links.get(&link(prefix, value)).copied();
    v[DEVICE_IS_NEW] = (first_seen('d', e.device_id).is_none_or(|s| s >= t)) as u8 as f32;
    if !e.destination.is_empty() {
        v[DESTINATION_IS_NEW] =
            (first_seen('x', e.destination).is_none_or(|s| s >= t)) as u8 as f32;
    }
    let labelled = links.contains_key(LABEL_MEMBER);
    v[ACCOUNT_LABELLED] = labelled as u8 as f32;

    // Devices, IPs, documents: accounts before the event, and the graph through them.
    let mut linked: HashSet<&[u8]> = HashSet::new();
    let mut hop1: HashSet<&[u8]> = HashSet::new();
    let mut hop2: HashSet<&[u8]> = HashSet::new();
    for (node, id) in nodes_of(e) {
        let view = &nodes[&(node, id)];
        let before = view.accounts.iter().filter(|(_, s)| *s < t).count() as f32;
        match node {
            Node::Device => {
                v[DEVICE_ACCOUNTS] = before;
                if let Some(first) = view
                    .accounts
                    .iter()
                    .map(|(_, s)| *s)
                    .min()
                    .filter(|first| *first < t)
                {
                    v[DEVICE_AGE] = secs(t - first);
                }
                for (s, failed) in &view.sessions {
                    let age = t - s;
                    if *s >= t || age > 7 * DAY_MS {
                        continue;
                    }
                    if age <= DAY_MS {
                        v[DEVICE_SESSIONS_24H] += 1.0;
                        v[DEVICE_FAILED_24H] += *failed as u8 as f32;
                    }
                    v[DEVICE_FAILED_7D] += *failed as u8 as f32;
                }
            }
            Node::Ip => v[IP_ACCOUNTS] = before,
            Node::Document => v[DOCUMENT_ACCOUNTS] = before,
        }
        if view.accounts.len() > GRAPH_FANOUT_LIMIT {
            continue; // a hub: no graph features through it
        }
        let me = e.account_id.as_bytes();
        linked.extend(
            view.accounts
                .iter()
                .filter(|(a, s)| *s < t && *a != me)
                .map(|(a, _)| *a),
        );
        hop1.extend(view.hop1.iter().filter(|a| **a != me));
        hop2.extend(view.hop2.iter().filter(|a| **a != me));
    }
    v[GRAPH_LINKED] = linked.len() as f32;
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

/// Trims and caps a batch's reads show are due (usually none), as explicit `ZREM`s: events and
/// sessions older than the batch's oldest event on that entity minus the retention; beyond the
/// caps, the oldest events and sessions and the newest links and accounts. Done after the reads,
/// so no event of the batch loses its window, and only when needed.
fn maintenance(keys: &Keys, ks: &Keyspace, batch: &[EventFacts<'_>], retention_ms: i64) -> Vec<Op> {
    // key -> (is an account, oldest event of the batch on it)
    let mut oldest: HashMap<String, (bool, i64)> = HashMap::new();
    let mut note = |key: String, account: bool, t: i64| {
        let o = oldest.entry(key).or_insert((account, t));
        o.1 = o.1.min(t);
    };
    for e in batch {
        note(keys.account(e.account_id), true, e.event_time);
        for (node, id) in nodes_of(e) {
            note(keys.node(node, id), false, e.event_time);
        }
    }
    let mut keys_sorted: Vec<(String, (bool, i64))> = oldest.into_iter().collect();
    keys_sorted.sort();
    let mut ops = Vec::new();
    for (key, (account, oldest)) in keys_sorted {
        let Some(z) = ks.zset(&key) else { continue };
        let horizon = oldest - retention_ms;
        // Events (account) or sessions (device) go by time; links or accounts by the cap.
        // Taint marks on devices, IPs and documents are bounded by the labels, not capped.
        let mut timed: Vec<(i64, &Vec<u8>)> = Vec::new();
        let mut linked: Vec<(i64, &Vec<u8>)> = Vec::new();
        for (m, s) in z {
            let is_timed = if account {
                m.first() == Some(&EVENT_TAG)
            } else {
                m.first() == Some(&b's') && m.len() == 10
            };
            if is_timed {
                timed.push((*s, m));
            } else if account || !(m.starts_with(b"t1:") || m.starts_with(b"t2:")) {
                linked.push((*s, m));
            }
        }
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        if timed.len() > MAX_EVENTS || timed.iter().any(|(s, _)| *s < horizon) {
            timed.sort();
            let stale = timed.partition_point(|(s, _)| *s < horizon);
            let over = (timed.len() - stale).saturating_sub(MAX_EVENTS);
            doomed.extend(timed[..stale + over].iter().map(|(_, m)| (*m).clone()));
        }
        if linked.len() > MAX_LINKS {
            linked.sort();
            doomed.extend(linked[MAX_LINKS..].iter().map(|(_, m)| (*m).clone()));
        }
        if !doomed.is_empty() {
            ops.push(Op::ZRem {
                key,
                members: doomed,
            });
        }
    }
    ops
}

/// Every write a batch's reads show is due: taint fix-ups, then trims and caps. Usually none.
pub(crate) fn followups(
    keys: &Keys,
    ks: &Keyspace,
    batch: &[EventFacts<'_>],
    retention_ms: i64,
) -> Vec<Op> {
    let mut ops = taint_fixups(keys, ks, batch);
    ops.extend(maintenance(keys, ks, batch, retention_ms));
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
    let empty = ZSet::new();
    for e in batch {
        let t = e.event_time;
        let links = ks.zset(&keys.account(e.account_id)).unwrap_or(&empty);
        let labelled = links.contains_key(LABEL_MEMBER);
        let near: Vec<&[u8]> = links
            .keys()
            .filter_map(|m| m.strip_prefix(NEAR_PREFIX))
            .collect();
        let mut mine: Option<Vec<(Node, String)>> = None;
        for (node, id) in nodes_of(e) {
            let node_key = keys.node(node, id);
            let z = ks.zset(&node_key).unwrap_or(&empty);
            if labelled && !z.contains_key(&taint_member(1, e.account_id)) {
                ops.push(Op::ZAdd {
                    key: node_key.clone(),
                    members: vec![(t, taint_member(1, e.account_id))],
                });
            }
            let new_link = links.get(&link(node.letter(), id)) == Some(&t);
            if new_link {
                for l in &near {
                    let l = String::from_utf8_lossy(l);
                    if !z.contains_key(&taint_member(1, &l))
                        && !z.contains_key(&taint_member(2, &l))
                    {
                        ops.push(Op::ZAdd {
                            key: node_key.clone(),
                            members: vec![(t, taint_member(2, &l))],
                        });
                    }
                }
            }
            let joined = z.get(&account_member(e.account_id)) == Some(&t);
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
            vec![Read::ZRange(key.clone())],
        )
        .await?;
    let nodes = account_nodes(
        ks.zset(&key).unwrap_or(&ZSet::new()),
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
        .map(|a| Read::ZRange(keys.account(a)))
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
