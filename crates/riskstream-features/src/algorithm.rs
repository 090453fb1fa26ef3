//! The feature algorithm, written once for both stores: which writes and reads a batch needs
//! ([`plan_batch`]), the features of one event from what was read ([`features`]), the taint
//! fix-ups a batch implies ([`taint_fixups`]), and label propagation ([`apply_label`]).
//!
//! A batch's writes go first and its reads after, in one round trip: features then see the
//! batch's own events too, and count only those strictly before each event's time — the same
//! answer as applying events one by one, in any order.

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

/// One account event as stored: a 49-byte member of `:ev` (its time is in the member too, so
/// reads need no `WITHSCORES`).
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
        let mut out = Vec::with_capacity(49);
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
        if b.len() != 49 {
            return None;
        }
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
    let mut m = Vec::with_capacity(9);
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

/// The label member of `:ln`.
const LABEL_MEMBER: &[u8] = b"L";

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
        let (ev_key, ln_key) = (keys.events(account), keys.links(account));
        ops.push(Op::ZAdd {
            key: ev_key.clone(),
            lt: false,
            members: events
                .iter()
                .map(|e| (e.event_time, StoredEvent::of(e).encode()))
                .collect(),
        });
        let mut links = Vec::new();
        for e in events {
            let t = e.event_time;
            links.push((t, link('d', e.device_id)));
            for (prefix, value) in [
                ('i', e.ip),
                ('c', e.country),
                ('x', e.destination),
                ('m', e.document),
            ] {
                if !value.is_empty() {
                    links.push((t, link(prefix, value)));
                }
            }
            match e.kind {
                FactKind::Transaction {
                    kind: TransactionKind::PasswordChange,
                    ..
                } => links.push((t, link('p', e.event_id))),
                FactKind::Transaction {
                    kind: TransactionKind::MfaChange,
                    ..
                } => links.push((t, link('f', e.event_id))),
                _ => {}
            }
        }
        ops.push(Op::ZAdd {
            key: ln_key.clone(),
            lt: true,
            members: links,
        });
        ops.push(Op::Expire {
            key: ev_key.clone(),
            ms: ENTITY_TTL_MS,
        });
        ops.push(Op::Expire {
            key: ln_key.clone(),
            ms: ENTITY_TTL_MS,
        });
        reads.push(Read::ZMembers(ev_key));
        reads.push(Read::ZRange(ln_key));
    }
    for ((node, id), events) in &nodes {
        let acc_key = keys.accounts(*node, id);
        ops.push(Op::ZAdd {
            key: acc_key.clone(),
            lt: true,
            members: events
                .iter()
                .map(|e| (e.event_time, e.account_id.as_bytes().to_vec()))
                .collect(),
        });
        ops.push(Op::Expire {
            key: acc_key.clone(),
            ms: ENTITY_TTL_MS,
        });
        reads.push(Read::ZRange(acc_key));
        reads.push(Read::HGetAll(keys.taint(*node, id)));
        if *node == Node::Device {
            let ses_key = keys.sessions(id);
            let sessions: Vec<(i64, Vec<u8>)> = events
                .iter()
                .filter_map(|e| match e.kind {
                    FactKind::CaptureSession { failed_check } => {
                        Some((e.event_time, session_member(e, failed_check)))
                    }
                    _ => None,
                })
                .collect();
            if !sessions.is_empty() {
                ops.push(Op::ZAdd {
                    key: ses_key.clone(),
                    lt: false,
                    members: sessions,
                });
                ops.push(Op::Expire {
                    key: ses_key.clone(),
                    ms: ENTITY_TTL_MS,
                });
            }
            reads.push(Read::ZRange(ses_key));
        }
    }
    (ops, reads)
}

fn secs(ms: i64) -> f32 {
    (ms as f64 / 1000.0) as f32
}

/// One account's stored events, decoded, sorted by time, one per event id.
type AccountEvents = Vec<(i64, StoredEvent)>;

fn account_events(ks: &Keyspace, key: &str) -> AccountEvents {
    let Some(events) = ks.zset(key) else {
        return Vec::new();
    };
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
    let mut decoded: HashMap<&str, AccountEvents> = HashMap::new();
    batch
        .iter()
        .map(|e| {
            let events = decoded
                .entry(e.account_id)
                .or_insert_with(|| account_events(ks, &keys.events(e.account_id)));
            features(keys, ks, e, events)
        })
        .collect()
}

fn insert_distinct(set: &mut Vec<u64>, h: u64) {
    if h != 0 && !set.contains(&h) {
        set.push(h);
    }
}

/// Features of `e` from the state after its batch was written (`ks`); `sorted` = its account's events.
fn features(
    keys: &Keys,
    ks: &Keyspace,
    e: &EventFacts<'_>,
    sorted: &AccountEvents,
) -> StoreFeatures {
    let mut f = StoreFeatures::default();
    let v = &mut f.values;
    let t = e.event_time;
    let empty = ZSet::new();

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
    let links = ks.zset(&keys.links(e.account_id)).unwrap_or(&empty);
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
    let mut hop1: HashSet<&str> = HashSet::new();
    let mut hop2: HashSet<&str> = HashSet::new();
    for (node, id) in nodes_of(e) {
        let accounts = ks.zset(&keys.accounts(node, id)).unwrap_or(&empty);
        let before = accounts.values().filter(|s| **s < t).count() as f32;
        match node {
            Node::Device => {
                v[DEVICE_ACCOUNTS] = before;
                if let Some(first) = accounts.values().min().filter(|first| **first < t) {
                    v[DEVICE_AGE] = secs(t - first);
                }
                let sessions = ks.zset(&keys.sessions(id)).unwrap_or(&empty);
                for (m, s) in sessions {
                    let age = t - s;
                    if *s >= t || age > 7 * DAY_MS {
                        continue;
                    }
                    let failed = m.first() == Some(&b'f');
                    if age <= DAY_MS {
                        v[DEVICE_SESSIONS_24H] += 1.0;
                        v[DEVICE_FAILED_24H] += failed as u8 as f32;
                    }
                    v[DEVICE_FAILED_7D] += failed as u8 as f32;
                }
            }
            Node::Ip => v[IP_ACCOUNTS] = before,
            Node::Document => v[DOCUMENT_ACCOUNTS] = before,
        }
        if accounts.len() > GRAPH_FANOUT_LIMIT {
            continue; // a hub: no graph features through it
        }
        linked.extend(
            accounts
                .iter()
                .filter(|(a, s)| **s < t && a.as_slice() != e.account_id.as_bytes())
                .map(|(a, _)| a.as_slice()),
        );
        if let Some(taint) = ks.hash(&keys.taint(node, id)) {
            for (account, level) in taint {
                if account != e.account_id {
                    if *level == 1 {
                        hop1.insert(account)
                    } else {
                        hop2.insert(account)
                    };
                }
            }
        }
    }
    v[GRAPH_LINKED] = linked.len() as f32;
    v[GRAPH_FRAUD_1HOP] = hop1.len() as f32;
    v[GRAPH_FRAUD_2HOP] = hop2.difference(&hop1).count() as f32;
    f
}

/// The account's devices, IPs and documents from its `:ln` set, oldest first, at most `limit`.
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

/// Trims and caps a batch's reads show are due (usually none): events and sessions older than
/// the batch's oldest event minus the retention, and entities over their caps. Done after the
/// reads, so no event of the batch loses its window, and only when needed, so a batch pays no
/// commands for it in the common case.
pub(crate) fn maintenance(
    keys: &Keys,
    ks: &Keyspace,
    batch: &[EventFacts<'_>],
    retention_ms: i64,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut oldest: HashMap<String, i64> = HashMap::new();
    let mut note = |key: String, t: i64| {
        let o = oldest.entry(key).or_insert(t);
        *o = (*o).min(t);
    };
    for e in batch {
        note(keys.events(e.account_id), e.event_time);
        note(keys.links(e.account_id), e.event_time);
        for (node, id) in nodes_of(e) {
            note(keys.accounts(node, id), e.event_time);
            if node == Node::Device {
                note(keys.sessions(id), e.event_time);
            }
        }
    }
    let mut keys_sorted: Vec<(&String, &i64)> = oldest.iter().collect();
    keys_sorted.sort();
    for (key, oldest) in keys_sorted {
        let Some(z) = ks.zset(key) else { continue };
        let horizon = oldest - retention_ms;
        if key.ends_with(":ev") || key.ends_with(":ses") {
            let time = |m: &[u8], s: i64| {
                if key.ends_with(":ev") {
                    StoredEvent::decode(m).map_or(s, |d| d.time)
                } else {
                    s
                }
            };
            if z.iter().any(|(m, s)| time(m, *s) < horizon) {
                ops.push(Op::ZTrimBelow {
                    key: key.clone(),
                    score: horizon,
                });
            }
            if z.len() > MAX_EVENTS {
                ops.push(Op::ZKeepHighest {
                    key: key.clone(),
                    n: MAX_EVENTS,
                });
            }
        } else if z.len() > MAX_LINKS {
            ops.push(Op::ZKeepLowest {
                key: key.clone(),
                n: MAX_LINKS,
            });
        }
    }
    ops
}

/// Prefix of the `:ln` members that remember a labelled account one hop away ("near").
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
pub(crate) fn taint_fixups(keys: &Keys, ks: &Keyspace, batch: &[EventFacts<'_>]) -> Vec<Op> {
    let mut ops = Vec::new();
    let empty = ZSet::new();
    for e in batch {
        let links = ks.zset(&keys.links(e.account_id)).unwrap_or(&empty);
        let labelled = links.contains_key(LABEL_MEMBER);
        let near: Vec<String> = links
            .keys()
            .filter_map(|m| m.strip_prefix(NEAR_PREFIX))
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        let mut mine: Option<Vec<(Node, String)>> = None;
        for (node, id) in nodes_of(e) {
            let taint_key = keys.taint(node, id);
            let taint = ks.hash(&taint_key);
            if labelled && taint.and_then(|h| h.get(e.account_id)) != Some(&1) {
                ops.push(Op::HSet {
                    key: taint_key.clone(),
                    field: e.account_id.to_string(),
                    value: 1,
                    only_new: false,
                });
            }
            let new_link = links.get(&link(node.letter(), id)) == Some(&e.event_time);
            if new_link {
                for l in near
                    .iter()
                    .filter(|l| taint.and_then(|h| h.get(*l)).is_none())
                {
                    ops.push(Op::HSet {
                        key: taint_key.clone(),
                        field: l.clone(),
                        value: 2,
                        only_new: true,
                    });
                }
            }
            let joined = ks
                .zset(&keys.accounts(node, id))
                .and_then(|a| a.get(e.account_id.as_bytes()))
                == Some(&e.event_time);
            let Some(taint) = taint.filter(|_| joined) else {
                continue;
            };
            let hop1: Vec<&String> = taint
                .iter()
                .filter(|(a, l)| **l == 1 && *a != e.account_id)
                .map(|(a, _)| a)
                .collect();
            if hop1.is_empty() {
                continue;
            }
            ops.push(Op::ZAdd {
                key: keys.links(e.account_id),
                lt: true,
                members: hop1
                    .iter()
                    .map(|l| (e.event_time, near_member(l)))
                    .collect(),
            });
            let mine = mine.get_or_insert_with(|| account_nodes(links, LABEL_NODES_PER_ACCOUNT));
            for (other, other_id) in mine.iter() {
                if (*other, other_id.as_str()) == (node, id) {
                    continue;
                }
                for l in &hop1 {
                    ops.push(Op::HSet {
                        key: keys.taint(*other, other_id),
                        field: (*l).clone(),
                        value: 2,
                        only_new: true,
                    });
                }
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
    let ln_key = keys.links(account);
    let mark = if tainted {
        Op::ZAdd {
            key: ln_key.clone(),
            lt: true,
            members: vec![(label_time, LABEL_MEMBER.to_vec())],
        }
    } else {
        Op::ZRem {
            key: ln_key.clone(),
            members: vec![LABEL_MEMBER.to_vec()],
        }
    };
    let ks = exec
        .exec(
            vec![
                mark,
                Op::Expire {
                    key: ln_key.clone(),
                    ms: ENTITY_TTL_MS,
                },
            ],
            vec![Read::ZRange(ln_key.clone())],
        )
        .await?;
    let nodes = account_nodes(
        ks.zset(&ln_key).unwrap_or(&ZSet::new()),
        LABEL_NODES_PER_ACCOUNT,
    );

    // Hop 1: the account's own entities.
    let ops = nodes
        .iter()
        .map(|(n, id)| {
            let key = keys.taint(*n, id);
            if tainted {
                Op::HSet {
                    key,
                    field: account.to_string(),
                    value: 1,
                    only_new: false,
                }
            } else {
                Op::HDel {
                    key,
                    field: account.to_string(),
                }
            }
        })
        .collect();
    let reads = nodes
        .iter()
        .map(|(n, id)| Read::ZRange(keys.accounts(*n, id)))
        .collect();
    let ks = exec.exec(ops, reads).await?;
    let mut neighbours: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for (n, id) in &nodes {
        let Some(accounts) = ks.zset(&keys.accounts(*n, id)) else {
            continue;
        };
        if accounts.len() > GRAPH_FANOUT_LIMIT {
            continue;
        }
        for a in accounts.keys() {
            let a = String::from_utf8_lossy(a).into_owned();
            if a != account && seen.insert(a.clone()) {
                neighbours.push(a);
            }
        }
    }

    // Hop 2: the neighbours' other entities.
    let reads: Vec<Read> = neighbours
        .iter()
        .map(|a| Read::ZRange(keys.links(a)))
        .collect();
    let ks = exec.exec(Vec::new(), reads).await?;
    let own: HashSet<(Node, &str)> = nodes.iter().map(|(n, id)| (*n, id.as_str())).collect();
    let mut ops = Vec::new();
    for a in &neighbours {
        ops.push(if tainted {
            Op::ZAdd {
                key: keys.links(a),
                lt: true,
                members: vec![(label_time, near_member(account))],
            }
        } else {
            Op::ZRem {
                key: keys.links(a),
                members: vec![near_member(account)],
            }
        });
        let Some(links) = ks.zset(&keys.links(a)) else {
            continue;
        };
        for (n, id) in account_nodes(links, LABEL_NODES_PER_ACCOUNT) {
            if own.contains(&(n, id.as_str())) {
                continue;
            }
            let key = keys.taint(n, &id);
            ops.push(if tainted {
                Op::HSet {
                    key,
                    field: account.to_string(),
                    value: 2,
                    only_new: true,
                }
            } else {
                Op::HDel {
                    key,
                    field: account.to_string(),
                }
            });
        }
    }
    let second_hop_entities = ops.len() - neighbours.len();
    if !ops.is_empty() {
        exec.exec(ops, Vec::new()).await?;
    }
    Ok(LabelOutcome {
        entities: nodes.len(),
        neighbours: neighbours.len(),
        second_hop_entities,
    })
}
