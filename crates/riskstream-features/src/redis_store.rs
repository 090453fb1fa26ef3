//! The Redis feature store: the shared data model (`keyspace.rs`, which documents the keys)
//! kept in one Redis server or a Redis Cluster; the worker computes the features.
//!
//! Per batch, **one round trip**: the batch's writes (all commutative and idempotent) and then
//! the reads of every entity it touches, pipelined. On a single server that is one pipeline; on
//! a cluster, one pipeline per hash slot (every key of one entity shares a slot through its
//! hash tag), all sent at once. A second, small round trip happens only when the batch meets a
//! labelled neighbourhood (taint fix-ups, see `algorithm.rs`).
//!
//! Because no write depends on a read, concurrent workers sharing a device, IP or account
//! (e.g. during a rebalance) cannot lose each other's updates.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Pipeline, Value};

use crate::algorithm::{self, Exec};
use crate::catalogue::StoreFeatures;
use crate::keyspace::{self, Keys, Keyspace, Op, Read};
use crate::{EventFacts, FeatureStore, LabelOutcome, StoreError, StoreLimits};

/// How the store reaches Redis.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Feature store backed by Redis or Redis Cluster.
pub struct RedisStore {
    conn: Conn,
    /// `redis://` URLs of the server, or of the cluster nodes given.
    nodes: Vec<String>,
    prefix: String,
    keys: Keys,
    limits: StoreLimits,
    deadline: Duration,
    /// Writes this store made lately and need not repeat.
    memo: std::sync::Mutex<Memo>,
    /// Per-batch round trips on a plain `redis://` server (`resp.rs`); `None`: redis-rs.
    fast: Option<crate::resp::Pool>,
    /// Accounts' timelines this store wrote lately (`account_cache.rs`); plain `redis://` only.
    accounts: Option<Box<std::sync::Mutex<crate::account_cache::AccountCache>>>,
    /// The last calls' first features, for redeliveries in overlapping batches (`first.rs`).
    recent: std::sync::Mutex<crate::first::Recent>,
}

/// What a store wrote lately: TTL refreshes and link members.
#[derive(Default)]
struct Memo {
    ttl: TtlMemo,
    links: LinkMemo,
}

/// Keys whose TTL this store refreshed lately (by key hash): a key whose `PEXPIRE` was sent
/// less than [`TTL_REFRESH_EVERY`] ago gets no other, which saves most of them for busy
/// entities. TTLs are days, so "expires N days after its last touch" holds within 10 minutes.
/// (A key deleted from outside, e.g. `DEL`, and re-created by a batch within those 10 minutes
/// has no TTL until its next touch after them.)
#[derive(Default)]
struct TtlMemo {
    at: std::collections::HashMap<u64, Instant, crate::keyspace::Seeded>,
}

/// Link members (`ZADD LT` of a member that is not a raw event: an account's device / IP /
/// country / destination / document links, a device's / IP's / document's accounts) this store
/// wrote lately, by hash of key and member, with the score written. An account's next events
/// repeat the same links; re-adding one whose score in Redis is already at most the new one is a
/// no-op for `ZADD LT`, so it is not sent again for [`TTL_REFRESH_EVERY`] — that removes most of
/// a busy account's or device's writes (Redis time is paid per member added or updated). Only
/// writes that reached Redis are noted. If Redis lost its data meanwhile (a restart without
/// persistence), a link comes back at the next write after those 10 minutes.
#[derive(Default)]
struct LinkMemo {
    at: std::collections::HashMap<u64, (i64, Instant), crate::keyspace::Seeded>,
}

/// Links: an account's `d:` / `i:` / `c:` / `x:` / `m:` members and a node's `a:` members.
/// Taint and label members (`t1:`, `t2:`, `N:`, `L`) are never skipped: another worker's labels
/// consumer may remove them.
fn is_link(member: &[u8]) -> bool {
    matches!(member, [b'd' | b'i' | b'c' | b'x' | b'm' | b'a', b':', ..])
}

/// Past this many members the link memo starts over.
const LINK_MEMO_MAX: usize = 1_000_000;

impl LinkMemo {
    fn key(key: &str, member: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::with_seed(0x7269_736b).hash_one((key, member))
    }

    /// Drops the link members written lately with a score at most theirs (and `ZADD`s left
    /// empty); returns what is kept, to note once it reached Redis.
    fn filter(&mut self, ops: &mut Vec<Op>, now: Instant) -> Vec<(u64, i64)> {
        let mut kept = Vec::new();
        ops.retain_mut(|op| {
            let (key, members) = match op {
                Op::ZAdd { key, members } => (key, members),
                Op::ZRem { key, members } => {
                    // A trim or cap of this store's: a later add must go out again.
                    for m in members.iter() {
                        self.at.remove(&Self::key(key, m));
                    }
                    return true;
                }
                _ => return true,
            };
            members.retain(|(score, member)| {
                if !is_link(member) {
                    return true;
                }
                let h = Self::key(key, member);
                let written = self.at.get(&h).is_some_and(|(s, at)| {
                    *s <= *score && now.duration_since(*at) < TTL_REFRESH_EVERY
                });
                if !written {
                    kept.push((h, *score));
                }
                !written
            });
            !members.is_empty()
        });
        kept
    }

    fn sent(&mut self, written: Vec<(u64, i64)>, now: Instant) {
        if self.at.len() + written.len() > LINK_MEMO_MAX {
            self.at.clear();
        }
        for (h, score) in written {
            let e = self.at.entry(h).or_insert((score, now));
            if score <= e.0 || now.duration_since(e.1) >= TTL_REFRESH_EVERY {
                *e = (score, now);
            }
        }
    }
}

/// How often one store refreshes one key's TTL at most.
const TTL_REFRESH_EVERY: Duration = Duration::from_secs(600);
/// Past this many keys the memo starts over (bounded memory; refreshes are then sent again).
const TTL_MEMO_MAX: usize = 500_000;

impl TtlMemo {
    /// Drops the `PEXPIRE`s sent lately from `ops`; returns the key hashes of those kept.
    fn filter(&self, ops: &mut Vec<Op>, now: Instant) -> Vec<u64> {
        let mut kept = Vec::new();
        ops.retain(|op| match op {
            Op::Expire { key, .. } => {
                let h = keyspace::hash64(key);
                let recent = self
                    .at
                    .get(&h)
                    .is_some_and(|at| now.duration_since(*at) < TTL_REFRESH_EVERY);
                if !recent {
                    kept.push(h);
                }
                !recent
            }
            _ => true,
        });
        kept
    }

    /// Notes refreshes that reached Redis.
    fn sent(&mut self, keys: Vec<u64>, now: Instant) {
        if self.at.len() + keys.len() > TTL_MEMO_MAX {
            self.at.clear();
        }
        self.at.extend(keys.into_iter().map(|h| (h, now)));
    }
}

/// The node URLs of a cluster URL, `redis+cluster://[user:password@]host:port,host:port,…` (or
/// `rediss+cluster://` for TLS): each node gets the scheme and the user info; `None` for a
/// single server's URL.
fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = match url.split_once("+cluster://")? {
        ("redis", rest) => ("redis", rest),
        ("rediss", rest) => ("rediss", rest),
        _ => return None,
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), rest),
    };
    Some(
        hosts
            .split(',')
            .filter(|n| !n.is_empty())
            .map(|n| format!("{scheme}://{userinfo}{n}/"))
            .collect(),
    )
}

/// The URL of node `host` (`host:port`) with the scheme and user info of `node` (another
/// node's URL).
fn like(node: &str, host: &str) -> String {
    let (scheme, rest) = node.split_once("://").unwrap_or(("redis", node));
    let userinfo = rest
        .split('/')
        .next()
        .and_then(|authority| authority.rsplit_once('@'))
        .map_or(String::new(), |(u, _)| format!("{u}@"));
    format!("{scheme}://{userinfo}{host}/")
}

impl RedisStore {
    /// Connects to `url`: `redis://host:port/` for one server, or
    /// `redis+cluster://host:port,host:port,…` for a cluster (any reachable subset of its nodes);
    /// `rediss://` / `rediss+cluster://` over TLS; `user:password@` before the host(s).
    /// Keys are written under `prefix` (a namespace: a replay uses its own); a batch that takes
    /// longer than `deadline` fails with [`StoreError::Timeout`].
    pub async fn connect(
        url: &str,
        prefix: &str,
        limits: StoreLimits,
        deadline: Duration,
    ) -> Result<Self, StoreError> {
        let io_timeout = deadline.max(Duration::from_millis(100));
        let mut node_urls = vec![url.to_string()];
        let conn = if let Some(nodes) = cluster_nodes(url) {
            node_urls = nodes.clone();
            let client = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(io_timeout)
                .response_timeout(io_timeout)
                .retries(2)
                .build()?;
            Conn::Cluster(client.get_async_connection().await?)
        } else {
            let client = redis::Client::open(url)?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(io_timeout)
                .set_response_timeout(io_timeout)
                .set_number_of_retries(1);
            Conn::Single(ConnectionManager::new_with_config(client, config).await?)
        };
        let fast = match &conn {
            Conn::Single(_) => {
                crate::resp::Target::of_url(url).map(|t| crate::resp::Pool::new(t, io_timeout))
            }
            Conn::Cluster(_) => None,
        };
        Ok(RedisStore {
            fast,
            accounts: None,
            recent: Default::default(),
            conn,
            nodes: node_urls,
            prefix: prefix.to_string(),
            keys: Keys::new(prefix),
            limits,
            deadline,
            memo: Default::default(),
        })
    }

    /// The same store keeping accounts' timelines between batches, up to about `bytes` of
    /// them (`account_cache.rs`; `0`: none). On a Redis Cluster it keeps none (yet).
    pub fn with_account_cache(mut self, bytes: usize) -> Self {
        self.accounts = (bytes > 0 && self.fast.is_some()).then(|| {
            Box::new(std::sync::Mutex::new(
                crate::account_cache::AccountCache::new(bytes),
            ))
        });
        self
    }

    /// Timelines taken from the account cache, and timelines it had to read after all (another
    /// writer changed the account).
    pub fn account_cache_counts(&self) -> Option<(u64, u64)> {
        self.accounts
            .as_ref()
            .map(|c| c.lock().expect("account cache poisoned").counts())
    }

    /// Deletes every key of this store's namespace (`PREFIX:*`), e.g. a finished replay's: `SCAN`
    /// + `UNLINK` on the server, or on every master of a cluster. Returns the keys deleted.
    pub async fn delete_namespace(&self) -> Result<u64, StoreError> {
        // What this store wrote is gone: write it again when it comes back.
        *self.memo.lock().expect("memo poisoned") = Memo::default();
        if let Some(c) = &self.accounts {
            c.lock().expect("account cache poisoned").clear();
        }
        let pattern = format!("{}:*", self.prefix);
        let masters: Vec<String> = match &self.conn {
            Conn::Single(_) => self.nodes.clone(),
            Conn::Cluster(_) => {
                let mut found = None;
                for node in &self.nodes {
                    let Ok(client) = redis::Client::open(node.as_str()) else {
                        continue;
                    };
                    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
                        continue;
                    };
                    if let Ok(text) = redis::cmd("CLUSTER")
                        .arg("NODES")
                        .query_async::<String>(&mut c)
                        .await
                    {
                        found = Some(text);
                        break;
                    }
                }
                let text = found.ok_or_else(|| {
                    StoreError::BadReply("no cluster node answered CLUSTER NODES".into())
                })?;
                // `id host:port@bus flags master-id …`: the masters' addresses.
                text.lines()
                    .filter_map(|l| {
                        let mut f = l.split_whitespace();
                        let (_, addr, flags) = (f.next()?, f.next()?, f.next()?);
                        let host = addr.split('@').next()?;
                        flags
                            .split(',')
                            .any(|x| x == "master")
                            .then(|| like(&self.nodes[0], host))
                    })
                    .collect()
            }
        };
        let mut deleted = 0;
        for node in masters {
            let client = redis::Client::open(node.as_str())?;
            let mut c = client.get_multiplexed_async_connection().await?;
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut c)
                    .await?;
                if !keys.is_empty() {
                    // One key per command: on a cluster node, keys of different slots cannot
                    // share one.
                    let mut p = redis::pipe();
                    for k in &keys {
                        p.cmd("UNLINK").arg(k);
                    }
                    let counts: Vec<u64> = p.query_async(&mut c).await?;
                    deleted += counts.iter().sum::<u64>();
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(deleted)
    }

    /// True when connected to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// One batch's call: its writes and reads in one round trip, its features, their follow-up
    /// writes in a second. With `turn` (overlapping batches, `order.rs`): the round trip waits
    /// for the earlier batches' to be answered and the features for theirs to be computed; the
    /// follow-up overlaps the next batch's round trip. `last`: release the turn after this call.
    async fn enrich(
        &self,
        batch: &[EventFacts<'_>],
        turn: Option<(&crate::Turn, bool)>,
    ) -> Result<Vec<StoreFeatures>, StoreError> {
        let (ops, mut reads) = algorithm::plan_batch(&self.keys, batch);
        if let Some((turn, _)) = turn {
            turn.reads().await;
        }
        // Timelines the account cache holds are not read; the call's token confirms them.
        let mut cached = Vec::new();
        if let Some(cache) = &self.accounts {
            let cache = cache.lock().expect("account cache poisoned");
            reads.retain(|r| match r {
                Read::Unscored(key) if cache.has(key) => {
                    cached.push(key.clone());
                    false
                }
                _ => true,
            });
        }
        let (mut ks, tokens) = self.exec_bumped(ops, reads).await?;
        let mut timelines = algorithm::Timelines::default();
        if let Some(cache) = self.accounts.as_ref().filter(|_| !cached.is_empty()) {
            let missed: Vec<Read> = {
                let mut cache = cache.lock().expect("account cache poisoned");
                cached
                    .into_iter()
                    .filter_map(|key| match cache.take(&key, tokens.get(&key).copied()) {
                        Some(events) => {
                            timelines.insert(key, events);
                            None
                        }
                        None => Some(Read::Unscored(key)),
                    })
                    .collect()
            };
            if !missed.is_empty() {
                let (more, _) = self.exec_bumped(Vec::new(), missed).await?;
                for (key, z) in more.zsets {
                    ks.zsets.entry(key).or_default().extend(z);
                }
            }
        }
        // The cluster walks' sets beyond the batch's own (only where an event's device,
        // document or payout address is shared): the other accounts' links, then the entities
        // found through them — two more round trips at most, still in the batch's read turn.
        for _ in 0..2 {
            let more = algorithm::cluster_reads(&self.keys, &ks, batch);
            if more.is_empty() {
                break;
            }
            let (extra, _) = self.exec_bumped(Vec::new(), more).await?;
            for (key, z) in extra.zsets {
                ks.zsets.entry(key).or_default().extend(z);
            }
        }
        if let Some((turn, last)) = turn {
            if last {
                turn.release_reads();
            }
            turn.evaluate().await;
        }
        // First features, taint fix-ups, tiles, trims and caps: a second round trip.
        // CPU work (decoding tiles, the features): off the async threads where the runtime
        // allows it (a multi-threaded one moves its other tasks elsewhere meanwhile).
        let evaluate = || {
            let mut recent = self.recent.lock().expect("recent first features poisoned");
            algorithm::evaluate(
                &self.keys,
                &ks,
                &timelines,
                batch,
                &self.limits,
                Some(&mut recent),
            )
        };
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let (features, followups) = if multi_thread {
            tokio::task::block_in_place(evaluate)
        } else {
            evaluate()
        };
        if let Some((turn, true)) = turn {
            turn.release_evaluate();
        }
        // The cached timelines are not shared any more: the follow-up's changes apply in place.
        drop(timelines);
        if !followups.is_empty() {
            self.exec(followups, Vec::new()).await?;
        }
        Ok(features)
    }
}

/// [`Op::HSetNx`] on Redis: `HSETNX` of each field / value pair in `ARGV`, in one command
/// (Redis caches the compiled script by its digest).
const HSETNX_ALL: &str =
    "for i = 1, #ARGV, 2 do redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end return 0";

fn add_op(p: &mut Pipeline, op: &Op) {
    match op {
        Op::ZAdd { key, members } => {
            let c = p.cmd("ZADD").arg(key).arg("LT");
            for (score, member) in members {
                c.arg(*score).arg(member.as_slice());
            }
            c.ignore();
        }
        Op::ZRem { key, members } => {
            let c = p.cmd("ZREM").arg(key);
            for m in members {
                c.arg(m.as_slice());
            }
            c.ignore();
        }
        Op::HSetNx { key, fields } => {
            let c = p.cmd("EVAL").arg(HSETNX_ALL).arg(1).arg(key);
            for (field, value) in fields {
                c.arg(field.as_slice()).arg(value.as_slice());
            }
            c.ignore();
        }
        Op::Expire { key, ms } => {
            p.cmd("PEXPIRE").arg(key).arg(*ms).ignore();
        }
    }
}

/// The arguments after the key of a sorted-set read (`ZRANGE key …`).
fn zrange_args(read: &Read) -> &'static [&'static str] {
    match read {
        Read::ZRange(_) => &["0", "-1", "WITHSCORES"],
        Read::Scored(_) => &["(0", "+inf", "BYSCORE", "WITHSCORES"],
        Read::Unscored(_) => &["-inf", "0", "BYSCORE"],
        Read::HMGet { .. } => &[],
    }
}

fn add_read(p: &mut Pipeline, read: &Read) {
    match read {
        Read::ZRange(key) | Read::Scored(key) | Read::Unscored(key) => {
            let c = p.cmd("ZRANGE").arg(key);
            for a in zrange_args(read) {
                c.arg(*a);
            }
        }
        Read::HMGet { key, fields } => {
            let c = p.cmd("HMGET").arg(key);
            for f in fields {
                c.arg(f.as_slice());
            }
        }
    }
}

/// `op` in RESP (the same command as [`add_op`]).
fn encode_op(r: &mut crate::resp::Request, op: &Op) {
    match op {
        Op::ZAdd { key, members } => {
            r.command(3 + 2 * members.len())
                .arg(b"ZADD")
                .arg(key.as_bytes())
                .arg(b"LT");
            for (score, member) in members {
                r.int_arg(*score).arg(member);
            }
        }
        Op::ZRem { key, members } => {
            r.command(2 + members.len())
                .arg(b"ZREM")
                .arg(key.as_bytes());
            for m in members {
                r.arg(m);
            }
        }
        Op::HSetNx { key, fields } => {
            r.command(4 + 2 * fields.len())
                .arg(b"EVAL")
                .arg(HSETNX_ALL.as_bytes())
                .arg(b"1")
                .arg(key.as_bytes());
            for (field, value) in fields {
                r.arg(field).arg(value);
            }
        }
        Op::Expire { key, ms } => {
            r.command(3)
                .arg(b"PEXPIRE")
                .arg(key.as_bytes())
                .int_arg(*ms);
        }
    }
}

/// `read` in RESP (the same command as [`add_read`]).
fn encode_read(r: &mut crate::resp::Request, read: &Read) {
    match read {
        Read::ZRange(key) | Read::Scored(key) | Read::Unscored(key) => {
            let args = zrange_args(read);
            r.command(2 + args.len()).arg(b"ZRANGE").arg(key.as_bytes());
            for a in args {
                r.arg(a.as_bytes());
            }
        }
        Read::HMGet { key, fields } => {
            r.command(2 + fields.len())
                .arg(b"HMGET")
                .arg(key.as_bytes());
            for f in fields {
                r.arg(f);
            }
        }
    }
}

/// Stores the reply to `read` in `ks`.
fn take_reply(
    ks: &mut Keyspace,
    read: &Read,
    reply: crate::resp::Reply<'_>,
) -> Result<(), StoreError> {
    use crate::resp::Reply;
    let key = read.key();
    let bad = |what: &str| {
        StoreError::BadReply(format!("{}: {what}", riskstream_events::log_ids::Id(key)))
    };
    let Reply::Array(Some(items)) = reply else {
        return Err(bad("not an array"));
    };
    match read {
        Read::ZRange(key) | Read::Scored(key) | Read::Unscored(key) => {
            // WITHSCORES: member, score, member, score, …; without: members, scored 0.
            let step = if matches!(read, Read::Unscored(_)) {
                1
            } else {
                2
            };
            if items.len() % step != 0 {
                return Err(bad("odd WITHSCORES reply"));
            }
            // Two reads of one key fill one copy.
            let z = ks.zsets.entry(key.clone()).or_default();
            z.reserve(items.len() / step);
            for entry in items.chunks_exact(step) {
                let Reply::Bulk(Some(member)) = &entry[0] else {
                    return Err(bad("member is not a string"));
                };
                let score = match entry.get(1) {
                    Some(score) => score_of(score).ok_or_else(|| bad("bad score"))?,
                    None => 0,
                };
                z.insert(member.to_vec(), score);
            }
        }
        Read::HMGet { key, fields } => {
            let h = ks.hashes.entry(key.clone()).or_default();
            for (field, item) in fields.iter().zip(items) {
                if let Reply::Bulk(Some(v)) = item {
                    h.insert(field.clone(), v.to_vec());
                }
            }
        }
    }
    Ok(())
}

/// A sorted-set score as an integer: RESP2 sends a decimal string (possibly with a fraction or
/// exponent); a RESP3 double arrives from redis-rs as an integer (see [`reply_of`]).
fn score_of(reply: &crate::resp::Reply<'_>) -> Option<i64> {
    use crate::resp::Reply;
    match reply {
        Reply::Bulk(Some(b)) => {
            let s = std::str::from_utf8(b).ok()?;
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().map(|f| f as i64))
        }
        Reply::Int(i) => Some(*i),
        _ => None,
    }
}

/// A redis-rs reply seen as ours, so both clients store replies with [`take_reply`].
fn reply_of(v: &Value) -> crate::resp::Reply<'_> {
    use crate::resp::Reply;
    match v {
        Value::BulkString(b) => Reply::Bulk(Some(b)),
        Value::Nil => Reply::Bulk(None),
        Value::Int(i) => Reply::Int(*i),
        Value::Double(f) => Reply::Int(*f as i64),
        Value::Array(items) => Reply::Array(Some(items.iter().map(reply_of).collect())),
        Value::SimpleString(s) => Reply::Simple(s.as_bytes()),
        _ => Reply::Simple(b""),
    }
}

/// Stores redis-rs replies to `reads` (same order) in `ks`.
fn take_replies(ks: &mut Keyspace, reads: &[&Read], replies: Vec<Value>) -> Result<(), StoreError> {
    if replies.len() != reads.len() {
        return Err(StoreError::BadReply(format!(
            "{} replies for {} reads",
            replies.len(),
            reads.len()
        )));
    }
    for (read, reply) in reads.iter().zip(&replies) {
        take_reply(ks, read, reply_of(reply))?;
    }
    Ok(())
}

impl Exec for RedisStore {
    async fn exec(&self, ops: Vec<Op>, reads: Vec<Read>) -> Result<Keyspace, StoreError> {
        Ok(self.exec_bumped(ops, reads).await?.0)
    }
}

impl RedisStore {
    /// One round trip: `ops`, then (with the account cache) a token after each account they
    /// change, then `reads`. Returns the replies and the tokens written, by account key.
    async fn exec_bumped(
        &self,
        ops: Vec<Op>,
        reads: Vec<Read>,
    ) -> Result<(Keyspace, HashMap<String, u64>), StoreError> {
        let result = self.exec_once(ops, reads).await;
        if result.is_err() {
            if let Some(c) = &self.accounts {
                // Its writes may or may not have landed.
                c.lock().expect("account cache poisoned").clear();
            }
        }
        result
    }

    async fn exec_once(
        &self,
        mut ops: Vec<Op>,
        reads: Vec<Read>,
    ) -> Result<(Keyspace, HashMap<String, u64>), StoreError> {
        let mut ks = Keyspace::default();
        let mut tokens = HashMap::new();
        let now = Instant::now();
        // (A batch that fails is not noted: its writes go out again with the next batch.)
        let (refreshed, linked) = {
            let mut memo = self.memo.lock().expect("memo poisoned");
            (
                memo.ttl.filter(&mut ops, now),
                memo.links.filter(&mut ops, now),
            )
        };
        if ops.is_empty() && reads.is_empty() {
            return Ok((ks, tokens));
        }
        match (&self.fast, &self.conn) {
            (Some(pool), _) => {
                let bumps = match &self.accounts {
                    Some(c) => c
                        .lock()
                        .expect("account cache poisoned")
                        .bumps(&ops, |k| self.keys.is_account(k)),
                    None => Vec::new(),
                };
                let mut request = crate::resp::Request::default();
                request
                    .buf
                    .reserve(64 * (ops.len() + reads.len() + bumps.len()));
                ops.iter().for_each(|op| encode_op(&mut request, op));
                let ttl = algorithm::ENTITY_TTL_MS.to_string();
                for b in &bumps {
                    request
                        .command(6)
                        .arg(b"SET")
                        .arg(b.version_key().as_bytes())
                        .arg(b.token.to_string().as_bytes())
                        .arg(b"PX")
                        .arg(ttl.as_bytes())
                        .arg(b"GET");
                }
                reads.iter().for_each(|r| encode_read(&mut request, r));
                let first_bump = ops.len();
                let first_read = first_bump + bumps.len();
                let mut previous = Vec::with_capacity(bumps.len());
                pool.round_trip(&request, |i, reply| {
                    if i < first_bump {
                        return Ok(()); // a write's count
                    }
                    if i < first_read {
                        // The token before ours (none: the key was absent or held no token).
                        previous.push(match reply {
                            crate::resp::Reply::Bulk(Some(b)) => std::str::from_utf8(b)
                                .ok()
                                .and_then(|s| s.parse::<u64>().ok()),
                            _ => None,
                        });
                        return Ok(());
                    }
                    take_reply(&mut ks, &reads[i - first_read], reply)
                })
                .await?;
                if let Some(c) = &self.accounts {
                    c.lock()
                        .expect("account cache poisoned")
                        .settle(&bumps, &previous, &reads, &ks);
                }
                tokens.extend(bumps.into_iter().map(|b| (b.key, b.token)));
            }
            (None, Conn::Single(conn)) => {
                let mut p = redis::pipe();
                ops.iter().for_each(|op| add_op(&mut p, op));
                reads.iter().for_each(|r| add_read(&mut p, r));
                let replies: Vec<Value> = p.query_async(&mut conn.clone()).await?;
                take_replies(&mut ks, &reads.iter().collect::<Vec<_>>(), replies)?;
            }
            (None, Conn::Cluster(conn)) => {
                // One pipeline per slot, writes before reads within each, all in flight at once.
                let mut groups: BTreeMap<u16, (Pipeline, Vec<&Read>)> = BTreeMap::new();
                for op in &ops {
                    add_op(
                        &mut groups
                            .entry(keyspace::slot(op.key()))
                            .or_insert_with(|| (redis::pipe(), Vec::new()))
                            .0,
                        op,
                    );
                }
                for read in &reads {
                    let g = groups
                        .entry(keyspace::slot(read.key()))
                        .or_insert_with(|| (redis::pipe(), Vec::new()));
                    add_read(&mut g.0, read);
                    g.1.push(read);
                }
                let calls = groups.into_values().map(|(p, reads)| {
                    let mut conn = conn.clone();
                    async move {
                        let replies: Vec<Value> = p.query_async(&mut conn).await?;
                        Ok::<_, StoreError>((reads, replies))
                    }
                });
                for (reads, replies) in futures::future::try_join_all(calls).await? {
                    take_replies(&mut ks, &reads, replies)?;
                }
            }
        }
        let mut memo = self.memo.lock().expect("memo poisoned");
        memo.ttl.sent(refreshed, now);
        memo.links.sent(linked, now);
        Ok((ks, tokens))
    }
}

impl FeatureStore for RedisStore {
    async fn enrich_batch(
        &self,
        batch: &[EventFacts<'_>],
    ) -> Result<Vec<StoreFeatures>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        tokio::time::timeout(self.deadline, self.enrich(batch, None))
            .await
            .map_err(|_| StoreError::Timeout(self.deadline))?
    }

    async fn enrich_batch_in_turn(
        &self,
        batch: &[EventFacts<'_>],
        turn: &crate::Turn,
        last: bool,
    ) -> Result<Vec<StoreFeatures>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // The deadline is the store's time: waiting for the earlier batches' turns (each
        // bounded by that batch's own deadline) extends it by as much.
        let call = self.enrich(batch, Some((turn, last)));
        tokio::pin!(call);
        let mut until = tokio::time::Instant::now() + self.deadline;
        let mut waited = turn.waited();
        loop {
            match tokio::time::timeout_at(until, &mut call).await {
                Ok(result) => return result,
                Err(_) => {
                    let now_waited = turn.waited();
                    if now_waited <= waited {
                        return Err(StoreError::Timeout(self.deadline));
                    }
                    until += now_waited - waited;
                    waited = now_waited;
                }
            }
        }
    }

    fn deadline(&self) -> Option<Duration> {
        Some(self.deadline)
    }

    async fn apply_label(
        &self,
        account: &str,
        tainted: bool,
        label_time: i64,
    ) -> Result<LabelOutcome, StoreError> {
        algorithm::apply_label(self, &self.keys, account, tainted, label_time).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_urls_give_every_node_the_scheme_and_the_user() {
        use super::{cluster_nodes, like};
        assert_eq!(cluster_nodes("redis://h:1/"), None);
        assert_eq!(
            cluster_nodes("redis+cluster://a:1,b:2/").unwrap(),
            ["redis://a:1/", "redis://b:2/"]
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://app:pw@a:1,b:2").unwrap(),
            ["rediss://app:pw@a:1/", "rediss://app:pw@b:2/"]
        );
        assert_eq!(like("rediss://app:pw@a:1/", "c:3"), "rediss://app:pw@c:3/");
        assert_eq!(like("redis://a:1/", "c:3"), "redis://c:3/");
    }

    use super::*;

    #[test]
    fn links_written_lately_are_not_sent_again_unless_earlier_removed_or_due() {
        let mut memo = LinkMemo::default();
        let zadd = |key: &str, members: &[(i64, &str)]| Op::ZAdd {
            key: key.into(),
            members: members
                .iter()
                .map(|(s, m)| (*s, m.as_bytes().to_vec()))
                .collect(),
        };
        let t0 = Instant::now();
        let mut ops = vec![zadd("acct", &[(100, "d:dev"), (100, "t1:x")])];
        let kept = memo.filter(&mut ops, t0);
        assert_eq!(ops, vec![zadd("acct", &[(100, "d:dev"), (100, "t1:x")])]);
        // Not noted yet (the write may have failed): it goes out again.
        let mut again = vec![zadd("acct", &[(150, "d:dev")])];
        memo.filter(&mut again, t0);
        assert_eq!(again.len(), 1);
        memo.sent(kept, t0);
        let mut ops = vec![
            zadd("acct", &[(150, "d:dev"), (150, "t1:x"), (150, "i:ip")]),
            zadd("node", &[(150, "a:acct")]),
        ];
        memo.filter(&mut ops, t0 + Duration::from_secs(5));
        assert_eq!(
            ops,
            vec![
                zadd("acct", &[(150, "t1:x"), (150, "i:ip")]),
                zadd("node", &[(150, "a:acct")]),
            ],
            "the known link at a later time is a no-op for ZADD LT; taint members always go"
        );
        let mut earlier = vec![zadd("acct", &[(50, "d:dev")])];
        memo.filter(&mut earlier, t0 + Duration::from_secs(5));
        assert_eq!(earlier.len(), 1, "an earlier first-seen time goes out");
        let mut only_known = vec![zadd("acct", &[(300, "d:dev")])];
        memo.filter(&mut only_known, t0 + Duration::from_secs(5));
        assert!(only_known.is_empty(), "a ZADD with nothing left is dropped");
        let mut removed = vec![
            Op::ZRem {
                key: "acct".into(),
                members: vec![b"d:dev".to_vec()],
            },
            zadd("acct", &[(300, "d:dev")]),
        ];
        memo.filter(&mut removed, t0 + Duration::from_secs(5));
        assert_eq!(removed.len(), 2, "removed by this store: added again");
        let mut due = vec![zadd("acct", &[(300, "d:dev")])];
        memo.filter(&mut due, t0 + TTL_REFRESH_EVERY);
        assert_eq!(due.len(), 1, "sent again after the interval");
    }

    #[test]
    fn ttl_refreshes_are_sent_once_per_interval_and_only_noted_when_sent() {
        let mut memo = TtlMemo::default();
        let expire = |key: &str| Op::Expire {
            key: key.into(),
            ms: 1000,
        };
        let t0 = Instant::now();
        let mut ops = vec![expire("a"), expire("b")];
        let kept = memo.filter(&mut ops, t0);
        assert_eq!(ops.len(), 2, "first refreshes go out");
        // Not noted (the pipeline failed): they go out again.
        let mut again = vec![expire("a")];
        memo.filter(&mut again, t0);
        assert_eq!(again.len(), 1);
        memo.sent(kept, t0);
        let mut ops = vec![
            expire("a"),
            expire("c"),
            Op::ZRem {
                key: "a".into(),
                members: vec![],
            },
        ];
        memo.filter(&mut ops, t0 + Duration::from_secs(5));
        assert_eq!(
            ops.len(),
            2,
            "a was refreshed 5 s ago; c is new; writes stay"
        );
        let mut later = vec![expire("a")];
        memo.filter(&mut later, t0 + TTL_REFRESH_EVERY);
        assert_eq!(later.len(), 1, "due again after the interval");
    }

    /// First features keep `HSETNX` semantics through the one-`EVAL` write, on both clients
    /// (ours on one server, redis-rs on a cluster): a second worker's write does not replace
    /// a field already written, and adds the fields that are new.
    #[tokio::test]
    async fn first_feature_writes_keep_the_first_value_of_each_field() {
        let server = riskstream_testkit::RedisServer::start();
        let cluster = riskstream_testkit::RedisCluster::start();
        for url in [server.url(), cluster.url()] {
            let store =
                RedisStore::connect(&url, "nx", StoreLimits::default(), Duration::from_secs(5))
                    .await
                    .expect("connect");
            let key = "nx:{f:1:2}".to_string();
            let write = |pairs: &[(&str, &str)]| Op::HSetNx {
                key: key.clone(),
                fields: pairs
                    .iter()
                    .map(|(f, v)| (f.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
            };
            store
                .exec(
                    vec![write(&[("e1", "first"), ("e2", "x\0\u{ff}")])],
                    Vec::new(),
                )
                .await
                .expect("first write");
            let read = Read::HMGet {
                key: key.clone(),
                fields: ["e1", "e2", "e3"].map(|f| f.as_bytes().to_vec()).to_vec(),
            };
            let ks = store
                .exec(vec![write(&[("e1", "second"), ("e3", "new")])], vec![read])
                .await
                .expect("second write");
            assert_eq!(
                ks.hash_field(&key, b"e1"),
                Some(b"first".as_slice()),
                "{url}"
            );
            assert_eq!(
                ks.hash_field(&key, b"e2"),
                Some("x\0\u{ff}".as_bytes()),
                "{url}"
            );
            assert_eq!(ks.hash_field(&key, b"e3"), Some(b"new".as_slice()), "{url}");
        }
    }
}
