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

use std::borrow::Cow;
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
    /// Entity logs found due for compaction, sent with the next round trip (`log.rs`).
    compactions: std::sync::Mutex<Vec<Compaction>>,
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

/// The memos' hash of a key (fixed seed: stable for the store's lifetime; foldhash, not
/// byte-at-a-time).
fn memo_hash(key: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x7269_736b).hash_one(key)
}

/// Past this many members the link memo starts over.
const LINK_MEMO_MAX: usize = 1_000_000;

impl LinkMemo {
    /// The memo's hash of a member of the key hashed as `key` ([`memo_hash`]).
    fn member(key: u64, member: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::with_seed(key).hash_one(member)
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
                    let k = memo_hash(key);
                    for m in members.iter() {
                        self.at.remove(&Self::member(k, m));
                    }
                    return true;
                }
                _ => return true,
            };
            let k = memo_hash(key);
            members.retain(|(score, member)| {
                if !is_link(member) {
                    return true;
                }
                let h = Self::member(k, member);
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
                let h = memo_hash(key);
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
            compactions: Default::default(),
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
        let (mut ks, tokens) = self.exec_held(ops, reads, None, true).await?;
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
                let (more, _) = self.exec_bumped(Vec::new(), missed, None).await?;
                for (key, z) in more.zsets {
                    ks.logs.remove(&key);
                    ks.zsets.entry(key).or_default().extend_from(&z);
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
            let (extra, _) = self.exec_bumped(Vec::new(), more, None).await?;
            for (key, z) in extra.zsets {
                ks.logs.remove(&key);
                ks.zsets.entry(key).or_default().extend_from(&z);
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
            // Logs read whole that the follow-up would leave mostly dead are compacted by it —
            // including those the read found due: their compaction from the read alone would
            // go first and leave the follow-up's records (e.g. the removals of a long raw
            // history just sealed into tiles) appended, dead, behind it.
            let written: keyspace::BatchSet<&str> = followups
                .iter()
                .filter_map(|op| match op {
                    Op::ZAdd { key, .. } | Op::ZRem { key, .. } if ks.logs.contains_key(key) => {
                        Some(key.as_str())
                    }
                    _ => None,
                })
                .collect();
            self.queue_compactions(
                ks.due
                    .drain(..)
                    .filter(|(k, _)| !written.contains(k.as_str())),
            );
            self.exec_bumped(followups, Vec::new(), Some(&ks)).await?;
        }
        self.queue_compactions(ks.due.drain(..));
        Ok(features)
    }
}

/// Keys per `MGET` (keeps each reply a few tens of KB, parsed as it arrives).
const MGET_KEYS: usize = 64;

/// Compactions due (`log.rs`) kept for the next round trip at most.
const MAX_PENDING_COMPACTIONS: usize = 1024;

/// A compaction due: the key and what to check and write (`log.rs`).
type Compaction = (String, crate::log::Compacted);

/// A write as Redis runs it.
enum Cmd<'a> {
    /// `APPEND key records`: every `ZADD` / `ZREM` of one key in the batch, in their order.
    Append(&'a str, Vec<u8>),
    /// `HSETNX key field value` (a command per field: Redis runs them faster than one Lua loop).
    HSetNx(&'a str, &'a [u8], &'a [u8]),
    /// `PEXPIRE key ms`.
    Expire(&'a str, i64),
    /// [`crate::log::COMPACT`]: the log read as `Ends` rewritten as the new log — or, if it
    /// changed meanwhile, the records (a follow-up's, applied in the new log) appended.
    Compact(&'a str, &'a crate::log::Ends, Cow<'a, [u8]>, Vec<u8>),
}

/// The commands of `ops`: one `APPEND` per log key, where its first write was (a `PEXPIRE` of
/// the key comes after it, so it finds the key).
fn commands(ops: &[Op]) -> Vec<Cmd<'_>> {
    let mut out = Vec::with_capacity(ops.len());
    let mut at: keyspace::BatchMap<&str, usize> = Default::default();
    for op in ops {
        match op {
            Op::ZAdd { key, .. } | Op::ZRem { key, .. } => {
                let i = *at.entry(key.as_str()).or_insert_with(|| {
                    out.push(Cmd::Append(key.as_str(), Vec::new()));
                    out.len() - 1
                });
                let Cmd::Append(_, records) = &mut out[i] else {
                    unreachable!("an append")
                };
                match op {
                    Op::ZAdd { members, .. } => crate::log::encode_adds(records, members),
                    Op::ZRem { members, .. } => crate::log::encode_removals(records, members),
                    _ => {}
                }
            }
            Op::HSetNx { key, fields } => out.extend(
                fields
                    .iter()
                    .map(|(f, v)| Cmd::HSetNx(key.as_str(), f.as_slice(), v.as_slice())),
            ),
            Op::Expire { key, ms } => out.push(Cmd::Expire(key.as_str(), *ms)),
        }
    }
    out
}

/// `cmds` with each `APPEND` to a log `read` holds whole turned into a compaction where the
/// log would be mostly dead after it.
fn compacting<'a>(mut cmds: Vec<Cmd<'a>>, read: &'a Keyspace) -> Vec<Cmd<'a>> {
    for c in cmds.iter_mut() {
        let Cmd::Append(key, records) = c else {
            continue;
        };
        let (Some(ends), Some(z)) = (read.logs.get(*key), read.zsets.get(*key)) else {
            continue;
        };
        if let Some(log) = crate::log::compact_after(z, ends.len, records) {
            *c = Cmd::Compact(key, ends, Cow::Owned(log), std::mem::take(records));
        }
    }
    cmds
}

/// The commands of a round trip: the compactions earlier reads found due, then `ops` — with
/// `read` (a follow-up write), compacting where due.
fn write_cmds<'a>(
    due: &'a [Compaction],
    ops: &'a [Op],
    read: Option<&'a Keyspace>,
) -> Vec<Cmd<'a>> {
    let mut cmds: Vec<Cmd<'a>> = due
        .iter()
        .map(|(key, c)| Cmd::Compact(key, &c.ends, Cow::Borrowed(&c.log), Vec::new()))
        .collect();
    cmds.extend(match read {
        Some(ks) => compacting(commands(ops), ks),
        None => commands(ops),
    });
    cmds
}

fn cmd_key<'a>(c: &Cmd<'a>) -> &'a str {
    match c {
        Cmd::Append(k, _) | Cmd::HSetNx(k, _, _) | Cmd::Expire(k, _) | Cmd::Compact(k, ..) => k,
    }
}

fn add_cmd(p: &mut Pipeline, c: &Cmd<'_>) {
    match c {
        Cmd::Append(key, records) => {
            p.cmd("APPEND").arg(*key).arg(records.as_slice()).ignore();
        }
        Cmd::HSetNx(key, field, value) => {
            p.cmd("HSETNX").arg(*key).arg(*field).arg(*value).ignore();
        }
        Cmd::Expire(key, ms) => {
            p.cmd("PEXPIRE").arg(*key).arg(*ms).ignore();
        }
        Cmd::Compact(key, ends, log, records) => {
            p.cmd("EVAL")
                .arg(crate::log::COMPACT)
                .arg(1)
                .arg(*key)
                .arg(ends.len)
                .arg(ends.head())
                .arg(ends.tail())
                .arg(log.as_ref())
                .arg(records.as_slice())
                .ignore();
        }
    }
}

/// `c` in RESP (the same command as [`add_cmd`]).
fn encode_cmd(r: &mut crate::resp::Request, c: &Cmd<'_>) {
    match c {
        Cmd::Append(key, records) => {
            r.command(3).arg(b"APPEND").arg(key.as_bytes()).arg(records);
        }
        Cmd::HSetNx(key, field, value) => {
            r.command(4)
                .arg(b"HSETNX")
                .arg(key.as_bytes())
                .arg(field)
                .arg(value);
        }
        Cmd::Expire(key, ms) => {
            r.command(3)
                .arg(b"PEXPIRE")
                .arg(key.as_bytes())
                .int_arg(*ms);
        }
        Cmd::Compact(key, ends, log, records) => {
            r.command(9)
                .arg(b"EVAL")
                .arg(crate::log::COMPACT.as_bytes())
                .arg(b"1")
                .arg(key.as_bytes())
                .int_arg(ends.len as i64)
                .arg(ends.head())
                .arg(ends.tail())
                .arg(log)
                .arg(records);
        }
    }
}

/// The entity logs `reads` name, each once (in first-read order), with what its reads want
/// together: an account's links and events read apart on a sorted set are one `GET` here.
fn log_reads(reads: &[Read]) -> Vec<(&str, crate::log::Want)> {
    let mut out: Vec<(&str, crate::log::Want)> = Vec::new();
    let mut at: keyspace::BatchMap<&str, usize> = Default::default();
    for read in reads {
        let (key, scored, unscored) = match read {
            Read::ZRange(k) => (k, true, true),
            Read::Scored(k) => (k, true, false),
            Read::Unscored(k) => (k, false, true),
            Read::HMGet { .. } => continue,
        };
        let i = *at.entry(key.as_str()).or_insert_with(|| {
            out.push((
                key.as_str(),
                crate::log::Want {
                    scored: false,
                    unscored: false,
                },
            ));
            out.len() - 1
        });
        out[i].1.scored |= scored;
        out[i].1.unscored |= unscored;
    }
    out
}

/// Stores an entity log's value (`None`: no such key) in `ks` as `want` reads it; a log due
/// for compaction is added to `compact`.
fn take_log(
    ks: &mut Keyspace,
    key: &str,
    want: crate::log::Want,
    value: Option<&[u8]>,
    compact: &mut Vec<Compaction>,
) -> Result<(), StoreError> {
    let z = ks.zsets.entry(key.to_string()).or_default();
    let Some(bytes) = value else {
        return Ok(());
    };
    let compacted = crate::log::fold(bytes, want, z).map_err(|e| {
        StoreError::BadReply(format!("{}: {e}", riskstream_events::log_ids::Id(key)))
    })?;
    match compacted {
        Some(c) => {
            // Noted as read too: a follow-up write to it compacts it with its own records.
            if want.scored && want.unscored {
                ks.logs.insert(key.to_string(), c.ends.clone());
            }
            compact.push((key.to_string(), c))
        }
        None if want.scored && want.unscored => {
            ks.logs.insert(key.to_string(), crate::log::Ends::of(bytes));
        }
        None => {}
    }
    Ok(())
}

/// Stores the reply to an `HMGET` in `ks`.
fn take_hmget(
    ks: &mut Keyspace,
    key: &str,
    fields: &[Vec<u8>],
    reply: crate::resp::Reply<'_>,
) -> Result<(), StoreError> {
    let crate::resp::Reply::Array(Some(items)) = reply else {
        return Err(StoreError::BadReply(format!(
            "{}: not an array",
            riskstream_events::log_ids::Id(key)
        )));
    };
    let h = ks.hashes.entry(key.to_string()).or_default();
    for (field, item) in fields.iter().zip(items) {
        if let crate::resp::Reply::Bulk(Some(v)) = item {
            h.insert(field.clone(), v.to_vec());
        }
    }
    Ok(())
}

/// A value of a `GET` / `MGET`: the string, or `None` for a missing key.
fn string_of<'a>(
    reply: &crate::resp::Reply<'a>,
    key: &str,
) -> Result<Option<&'a [u8]>, StoreError> {
    match reply {
        crate::resp::Reply::Bulk(b) => Ok(*b),
        _ => Err(StoreError::BadReply(format!(
            "{}: not a string",
            riskstream_events::log_ids::Id(key)
        ))),
    }
}

/// A redis-rs reply seen as ours, so both clients store replies the same way.
fn reply_of(v: &Value) -> crate::resp::Reply<'_> {
    use crate::resp::Reply;
    match v {
        Value::BulkString(b) => Reply::Bulk(Some(b)),
        Value::Nil => Reply::Bulk(None),
        Value::Int(i) => Reply::Int(*i),
        Value::Array(items) => Reply::Array(Some(items.iter().map(reply_of).collect())),
        Value::SimpleString(s) => Reply::Simple(s.as_bytes()),
        _ => Reply::Simple(b""),
    }
}

/// A read as redis-rs sends it: an `HMGET`, or a `GET` of an entity log.
enum Fetch<'a> {
    Hash(&'a str, &'a [Vec<u8>]),
    Log(&'a str, crate::log::Want),
}

fn add_fetch(p: &mut Pipeline, f: &Fetch<'_>) {
    match f {
        Fetch::Hash(key, fields) => {
            let c = p.cmd("HMGET").arg(*key);
            for field in fields.iter() {
                c.arg(field.as_slice());
            }
        }
        Fetch::Log(key, _) => {
            p.cmd("GET").arg(*key);
        }
    }
}

/// An `HMGET` fetch in RESP (the same command as [`add_fetch`]; logs go in `MGET`s).
fn add_fetch_resp(r: &mut crate::resp::Request, f: &Fetch<'_>) {
    if let Fetch::Hash(key, fields) = f {
        r.command(2 + fields.len())
            .arg(b"HMGET")
            .arg(key.as_bytes());
        for field in fields.iter() {
            r.arg(field);
        }
    }
}

/// The reads as fetches: every `HMGET` first, then each log once.
fn fetches(reads: &[Read]) -> Vec<Fetch<'_>> {
    let mut out: Vec<Fetch<'_>> = reads
        .iter()
        .filter_map(|r| match r {
            Read::HMGet { key, fields } => Some(Fetch::Hash(key, fields)),
            _ => None,
        })
        .collect();
    out.extend(log_reads(reads).into_iter().map(|(k, w)| Fetch::Log(k, w)));
    out
}

fn fetch_key<'a>(f: &Fetch<'a>) -> &'a str {
    match f {
        Fetch::Hash(k, _) | Fetch::Log(k, _) => k,
    }
}

/// Stores redis-rs replies to `fetches` (same order) in `ks`.
fn take_fetched(
    ks: &mut Keyspace,
    fetches: &[&Fetch<'_>],
    replies: Vec<Value>,
    compact: &mut Vec<Compaction>,
) -> Result<(), StoreError> {
    if replies.len() != fetches.len() {
        return Err(StoreError::BadReply(format!(
            "{} replies for {} reads",
            replies.len(),
            fetches.len()
        )));
    }
    for (f, reply) in fetches.iter().zip(&replies) {
        take_fetch(ks, f, reply_of(reply), compact)?;
    }
    Ok(())
}

/// Stores the reply to one fetch in `ks` (an `MGET`'s value for a log).
fn take_fetch(
    ks: &mut Keyspace,
    f: &Fetch<'_>,
    reply: crate::resp::Reply<'_>,
    compact: &mut Vec<Compaction>,
) -> Result<(), StoreError> {
    match f {
        Fetch::Hash(key, fields) => take_hmget(ks, key, fields, reply),
        Fetch::Log(key, want) => take_log(ks, key, *want, string_of(&reply, key)?, compact),
    }
}

impl Exec for RedisStore {
    async fn exec(&self, ops: Vec<Op>, reads: Vec<Read>) -> Result<Keyspace, StoreError> {
        Ok(self.exec_bumped(ops, reads, None).await?.0)
    }
}

impl RedisStore {
    /// One round trip: `ops`, then (with the account cache) a token after each account they
    /// change, then `reads`. Returns the replies and the tokens written, by account key. With
    /// `read` (a batch's follow-up write: what its reads returned), a log read whole that `ops`
    /// would leave mostly dead is compacted with them (`log.rs`).
    async fn exec_bumped(
        &self,
        ops: Vec<Op>,
        reads: Vec<Read>,
        read: Option<&Keyspace>,
    ) -> Result<(Keyspace, HashMap<String, u64>), StoreError> {
        self.exec_held(ops, reads, read, false).await
    }

    /// [`RedisStore::exec_bumped`]; with `hold`, the compactions due on logs read whole are
    /// left in the returned copy's `due` for the caller (whose follow-up write may compact
    /// them with its own records) instead of riding on the next round trip.
    async fn exec_held(
        &self,
        ops: Vec<Op>,
        reads: Vec<Read>,
        read: Option<&Keyspace>,
        hold: bool,
    ) -> Result<(Keyspace, HashMap<String, u64>), StoreError> {
        let result = self.exec_once(ops, reads, read, hold).await;
        if result.is_err() {
            if let Some(c) = &self.accounts {
                // Its writes may or may not have landed.
                c.lock().expect("account cache poisoned").clear();
            }
        }
        result
    }

    /// Compactions for the next round trip (at most [`MAX_PENDING_COMPACTIONS`] pending).
    fn queue_compactions(&self, found: impl Iterator<Item = Compaction>) {
        let mut pending = self.compactions.lock().expect("compactions");
        let room = MAX_PENDING_COMPACTIONS.saturating_sub(pending.len());
        pending.extend(found.take(room));
    }

    async fn exec_once(
        &self,
        mut ops: Vec<Op>,
        reads: Vec<Read>,
        read: Option<&Keyspace>,
        hold: bool,
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
        // Compactions found by earlier reads ride along (dropped if this round trip fails:
        // a later read finds them due again).
        let due = std::mem::take(&mut *self.compactions.lock().expect("compactions"));
        let mut compact = Vec::new();
        match (&self.fast, &self.conn) {
            (Some(pool), _) => {
                let bumps = match &self.accounts {
                    Some(c) => c
                        .lock()
                        .expect("account cache poisoned")
                        .bumps(&ops, |k| self.keys.is_account(k)),
                    None => Vec::new(),
                };
                // The hashes' `HMGET`s, then the logs in `MGET`s of up to [`MGET_KEYS`].
                let fetches = fetches(&reads);
                let split = fetches.partition_point(|f| matches!(f, Fetch::Hash(..)));
                let (hashes, logs) = fetches.split_at(split);
                let mut request = crate::resp::Request::default();
                request
                    .buf
                    .reserve(64 * (ops.len() + reads.len() + bumps.len()));
                let cmds = write_cmds(&due, &ops, read);
                cmds.iter().for_each(|c| encode_cmd(&mut request, c));
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
                for f in hashes {
                    add_fetch_resp(&mut request, f);
                }
                let chunks: Vec<&[Fetch<'_>]> = logs.chunks(MGET_KEYS).collect();
                for chunk in &chunks {
                    request.command(1 + chunk.len()).arg(b"MGET");
                    for f in chunk.iter() {
                        request.arg(fetch_key(f).as_bytes());
                    }
                }
                let first_bump = cmds.len();
                let first_read = first_bump + bumps.len();
                let first_log = first_read + hashes.len();
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
                    if i < first_log {
                        return take_fetch(&mut ks, &hashes[i - first_read], reply, &mut compact);
                    }
                    let chunk = chunks[i - first_log];
                    let crate::resp::Reply::Array(Some(values)) = reply else {
                        return Err(StoreError::BadReply("MGET: not an array".into()));
                    };
                    if values.len() != chunk.len() {
                        return Err(StoreError::BadReply("MGET: wrong length".into()));
                    }
                    for (f, value) in chunk.iter().zip(values) {
                        take_fetch(&mut ks, f, value, &mut compact)?;
                    }
                    Ok(())
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
                write_cmds(&due, &ops, read)
                    .iter()
                    .for_each(|c| add_cmd(&mut p, c));
                let fetches = fetches(&reads);
                fetches.iter().for_each(|f| add_fetch(&mut p, f));
                let replies: Vec<Value> = p.query_async(&mut conn.clone()).await?;
                take_fetched(
                    &mut ks,
                    &fetches.iter().collect::<Vec<_>>(),
                    replies,
                    &mut compact,
                )?;
            }
            (None, Conn::Cluster(conn)) => {
                // One pipeline per slot, writes before reads within each, all in flight at once.
                let mut groups: BTreeMap<u16, (Pipeline, Vec<&Fetch<'_>>)> = BTreeMap::new();
                fn group<'g, 'f>(
                    groups: &'g mut BTreeMap<u16, (Pipeline, Vec<&'f Fetch<'f>>)>,
                    key: &str,
                ) -> &'g mut (Pipeline, Vec<&'f Fetch<'f>>) {
                    groups
                        .entry(keyspace::slot(key))
                        .or_insert_with(|| (redis::pipe(), Vec::new()))
                }
                for c in &write_cmds(&due, &ops, read) {
                    add_cmd(&mut group(&mut groups, cmd_key(c)).0, c);
                }
                let fetches = fetches(&reads);
                for f in &fetches {
                    let g = group(&mut groups, fetch_key(f));
                    add_fetch(&mut g.0, f);
                    g.1.push(f);
                }
                let calls = groups.into_values().map(|(p, fetches)| {
                    let mut conn = conn.clone();
                    async move {
                        let replies: Vec<Value> = p.query_async(&mut conn).await?;
                        Ok::<_, StoreError>((fetches, replies))
                    }
                });
                for (fetches, replies) in futures::future::try_join_all(calls).await? {
                    take_fetched(&mut ks, &fetches, replies, &mut compact)?;
                }
            }
        }
        if hold {
            let (held, rest) = compact
                .into_iter()
                .partition(|(k, _)| ks.logs.contains_key(k));
            ks.due = held;
            compact = rest;
        }
        self.queue_compactions(compact.into_iter());
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

    /// A follow-up write that would leave a log it read whole mostly dead rewrites it instead
    /// (its records applied), and appends them as usual when the log changed meanwhile.
    #[tokio::test]
    async fn follow_ups_compact_what_they_empty_or_append_if_the_log_changed() {
        let server = riskstream_testkit::RedisServer::start();
        let url = server.url();
        let connect =
            || RedisStore::connect(&url, "fu", StoreLimits::default(), Duration::from_secs(5));
        let (store, other) = (connect().await.unwrap(), connect().await.unwrap());
        let key = "fu:{a:acct}:l".to_string();
        let many: Vec<(i64, Vec<u8>)> = (0..200)
            .map(|i| (0, format!("raw-event-{i:05}").into_bytes()))
            .collect();
        let gone: Vec<Vec<u8>> = many[1..].iter().map(|(_, m)| m.clone()).collect();
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        for changed in [false, true] {
            let _: () = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let add = Op::ZAdd {
                key: key.clone(),
                members: many.clone(),
            };
            store.exec(vec![add], Vec::new()).await.unwrap();
            let read = store
                .exec(Vec::new(), vec![Read::ZRange(key.clone())])
                .await
                .unwrap();
            assert!(read.logs.contains_key(&key));
            if changed {
                // Another store rewrites the log between the read and the follow-up.
                let mut ks = other
                    .exec(Vec::new(), vec![Read::ZRange(key.clone())])
                    .await
                    .unwrap();
                let z = ks.zsets.remove(&key).unwrap();
                let ends = ks.logs.remove(&key).unwrap();
                let log = crate::log::compact_after(&z, ends.len, &[0u8; 0]);
                assert!(log.is_none(), "nothing dead yet");
                let stamp: Vec<u8> = b"#12345678".to_vec();
                let mut rewritten = stamp;
                crate::log::encode_adds(&mut rewritten, &many);
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(rewritten)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
            let trim = Op::ZRem {
                key: key.clone(),
                members: gone.clone(),
            };
            store
                .exec_bumped(vec![trim], Vec::new(), Some(&read))
                .await
                .unwrap();
            let len: usize = redis::cmd("STRLEN")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let after = store
                .exec(Vec::new(), vec![Read::ZRange(key.clone())])
                .await
                .unwrap();
            let z = after.zsets.get(&key).unwrap();
            assert_eq!(z.len(), 1, "changed: {changed}");
            assert!(z.contains_key(b"raw-event-00000".as_slice()));
            if changed {
                assert!(len > 5_000, "appended: {len} bytes");
            } else {
                assert!(len < 100, "compacted: {len} bytes");
            }
        }
    }

    /// A compaction rewrites a log to its live members, keeps what another writer appended
    /// after the read, and is skipped when the log changed under it in any other way.
    #[tokio::test]
    async fn compactions_keep_later_appends_and_skip_changed_logs() {
        let server = riskstream_testkit::RedisServer::start();
        let cluster = riskstream_testkit::RedisCluster::start();
        for url in [server.url(), cluster.url()] {
            let store =
                RedisStore::connect(&url, "cp", StoreLimits::default(), Duration::from_secs(5))
                    .await
                    .expect("connect");
            let key = "cp:{d:dev}:l".to_string();
            let add = |members: &[(i64, &str)]| Op::ZAdd {
                key: key.clone(),
                members: members
                    .iter()
                    .map(|(s, m)| (*s, m.as_bytes().to_vec()))
                    .collect(),
            };
            let remove = |members: Vec<String>| Op::ZRem {
                key: key.clone(),
                members: members.into_iter().map(String::into_bytes).collect(),
            };
            let many: Vec<(i64, String)> = (0..200).map(|i| (i + 1, format!("m{i:05}"))).collect();
            let refs: Vec<(i64, &str)> = many.iter().map(|(s, m)| (*s, m.as_str())).collect();
            store.exec(vec![add(&refs)], Vec::new()).await.unwrap();
            let gone: Vec<String> = many[2..].iter().map(|(_, m)| m.clone()).collect();
            store.exec(vec![remove(gone)], Vec::new()).await.unwrap();
            let read = || vec![Read::ZRange(key.clone())];
            let strlen = || async {
                let cmd = redis::cmd("STRLEN").arg(&key).clone();
                if store.is_cluster() {
                    let c = redis::cluster::ClusterClient::new(store.nodes.clone()).unwrap();
                    let mut conn = c.get_async_connection().await.unwrap();
                    cmd.query_async::<usize>(&mut conn).await.unwrap()
                } else {
                    let c = redis::Client::open(url.as_str()).unwrap();
                    let mut conn = c.get_multiplexed_async_connection().await.unwrap();
                    cmd.query_async::<usize>(&mut conn).await.unwrap()
                }
            };
            let long = strlen().await;
            // This read finds the log due; another writer appends before the compaction goes.
            let ks = store.exec(Vec::new(), read()).await.unwrap();
            assert_eq!(ks.zset(&key).unwrap().len(), 2, "{url}");
            assert_eq!(store.compactions.lock().unwrap().len(), 1, "{url}");
            let other =
                RedisStore::connect(&url, "cp", StoreLimits::default(), Duration::from_secs(5))
                    .await
                    .unwrap();
            other
                .exec(vec![add(&[(7, "late"), (9, "m00000")])], Vec::new())
                .await
                .unwrap();
            // The compaction rides on the next round trip; its read sees the result.
            let ks = store.exec(Vec::new(), read()).await.unwrap();
            let short = strlen().await;
            assert!(short < long / 10, "{url}: {long} -> {short} bytes");
            let z = ks.zset(&key).unwrap();
            let mut members: Vec<(&[u8], i64)> = z.iter().map(|(m, s)| (m, *s)).collect();
            members.sort();
            assert_eq!(
                members,
                vec![(b"late".as_slice(), 7), (b"m00000", 1), (b"m00001", 2)],
                "{url}"
            );
            assert!(store.compactions.lock().unwrap().is_empty(), "{url}");
            // A compaction computed from a log that was since rewritten is skipped.
            let stale = crate::log::Compacted {
                ends: crate::log::Ends::of(b"+\x02\x01x"),
                log: Vec::new(),
            };
            store.compactions.lock().unwrap().push((key.clone(), stale));
            let ks = store.exec(Vec::new(), read()).await.unwrap();
            assert_eq!(ks.zset(&key).unwrap().len(), 3, "{url}");
            assert_eq!(strlen().await, short, "{url}");
        }
    }
}
