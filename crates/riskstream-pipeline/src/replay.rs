//! Replay: the scoring chain (decode → enrich → score) over a bounded range of input offsets,
//! read with `assign()` — no consumer group joins, nothing is committed for any group — into
//! a sink the caller chooses (a file, a side topic, a comparison).
//!
//! ```text
//! bounded source ─► labels ─► decode ─► enrich ─► score ─► sink (the caller's, in order)
//! (assign, stop at   (labels     (the same stages as the worker; the store is the
//!  each partition's   up to the   replay's own namespace)
//!  end, rate cap)     batch's time)
//! ```
//!
//! Where a range comes from (offsets, timestamps, a group's committed offsets, the log's ends)
//! is resolved here too, with the broker's own answers (`ListOffsets`, `OffsetFetch`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use riskstream_events::{Codec, Event, Verdict};
use riskstream_features::FeatureStore;
use tokio::sync::{mpsc, watch};

use crate::config::WorkerConfig;
use crate::scorer::{Buffers, Enriched, Scorer};
use crate::stages::{self, Batch, Offsets, Stage};
use crate::worker::{client_configs, Decode, Decoded, Enrich, WorkerError, WorkerReport};

/// Where a partition's replay stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Before this offset (exclusive).
    Offset(i64),
    /// At the end of the log as the replay finds it: after the high watermark read at the
    /// start, once nothing more arrives for the idle time (some brokers report a high
    /// watermark below the last batch's records, so the log is read, not trusted).
    Log,
}

/// One partition's range: from `start` (inclusive) to `end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRange {
    pub topic: String,
    pub partition: i32,
    pub start: i64,
    pub end: End,
    /// The high watermark when the range was resolved (for progress and `End::Log`).
    pub high: i64,
    /// A start given as a time: records before the first one at or after it are skipped (the
    /// broker's answer is where reading starts; some brokers answer with an earlier offset).
    pub from_time: Option<i64>,
    /// An end given as a time: the partition ends at its first record at or after it.
    pub to_time: Option<i64>,
}

impl PartitionRange {
    /// Records the range holds at most (a hint for progress; `None` when open-ended).
    pub fn len_hint(&self) -> u64 {
        let end = match self.end {
            End::Offset(e) => e,
            End::Log => self.high,
        };
        (end - self.start).max(0) as u64
    }
}

/// A range bound as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// The log's start (`beginning`).
    Beginning,
    /// The log's end (`end`).
    End,
    /// Explicit offsets per topic and partition (partitions not named take the default).
    Offsets(Vec<(String, i32, i64)>),
    /// The first offset whose timestamp is at or after this time (epoch ms).
    Time(i64),
    /// A consumer group's committed offsets (partitions it never committed: the beginning).
    Group(String),
}

/// Parses `TOPIC:PARTITION:OFFSET,…`, or the keywords `beginning` / `end`.
pub fn parse_offsets(s: &str) -> Result<Bound, String> {
    match s.trim() {
        "beginning" => return Ok(Bound::Beginning),
        "end" => return Ok(Bound::End),
        _ => {}
    }
    let mut out = Vec::new();
    for item in s.split(',').filter(|i| !i.trim().is_empty()) {
        let mut parts = item.trim().rsplitn(3, ':');
        let (offset, partition, topic) = (parts.next(), parts.next(), parts.next());
        let (Some(offset), Some(partition), Some(topic)) = (offset, partition, topic) else {
            return Err(format!("`{item}`: expected TOPIC:PARTITION:OFFSET"));
        };
        let partition = partition
            .parse::<i32>()
            .map_err(|_| format!("`{item}`: partition `{partition}` is not a number"))?;
        let offset = offset
            .parse::<i64>()
            .ok()
            .filter(|o| *o >= 0)
            .ok_or_else(|| format!("`{item}`: offset `{offset}` is not a non-negative number"))?;
        out.push((topic.to_string(), partition, offset));
    }
    if out.is_empty() {
        return Err("no offsets given".into());
    }
    Ok(Bound::Offsets(out))
}

/// Parses a time: epoch milliseconds, or RFC 3339 (`2026-12-01T02:14:00Z`, offsets allowed).
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    rfc3339_ms(s).ok_or_else(|| format!("`{s}` is neither epoch ms nor an RFC 3339 time"))
}

/// RFC 3339 → epoch ms (`YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`).
fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let f = &frac[..digits];
        ms = format!("{:0<3}", &f[..f.len().min(3)])
            .parse::<i64>()
            .ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh = rest.get(1..3)?.parse::<i64>().ok()?;
            let om = rest.get(4..6)?.parse::<i64>().ok()?;
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (oh * 60 + om)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + sec * 1000 + ms)
}

/// The consumer a replay reads with: never joins a group, never commits.
pub fn replay_consumer_config(cfg: &WorkerConfig) -> ClientConfig {
    let (mut consumer, _) = client_configs(cfg);
    consumer
        .set(
            "group.id",
            format!(
                "riskstream-replay-{}-{}",
                std::process::id(),
                stages::now_ms()
            ),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    consumer
}

/// Resolves `from` / `to` for every partition of `topics` with the broker (blocking calls: run
/// it off the async threads).
pub fn resolve(
    cfg: &WorkerConfig,
    topics: &[String],
    from: &Bound,
    to: &Bound,
    timeout: Duration,
) -> Result<Vec<PartitionRange>, String> {
    let consumer: BaseConsumer = replay_consumer_config(cfg)
        .create()
        .map_err(|e| format!("creating the consumer: {e}"))?;
    let mut parts: Vec<(String, i32)> = Vec::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| format!("metadata of {topic}: {e}"))?;
        let t = md
            .topics()
            .first()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .ok_or_else(|| format!("topic {topic} does not exist"))?;
        parts.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
    }
    let mut marks = HashMap::new();
    for (topic, p) in &parts {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, timeout)
            .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
        marks.insert((topic.clone(), *p), (low, high));
    }
    let starts = offsets_for(&consumer, cfg, &parts, &marks, from, timeout)?;
    let ends = offsets_for(&consumer, cfg, &parts, &marks, to, timeout)?;
    Ok(parts
        .into_iter()
        .map(|(topic, partition)| {
            let key = (topic.clone(), partition);
            let (low, high) = marks[&key];
            let start = starts[&key].unwrap_or(high).max(low);
            let end = match (to, ends[&key]) {
                // A time end is found by reading (the first record at or after it), whatever
                // offset the broker maps it to.
                (Bound::End | Bound::Time(_), _) => End::Log,
                (_, Some(e)) => End::Offset(e),
                (_, None) => End::Log,
            };
            PartitionRange {
                topic,
                partition,
                start,
                end,
                high,
                from_time: match from {
                    Bound::Time(t) => Some(*t),
                    _ => None,
                },
                to_time: match to {
                    Bound::Time(t) => Some(*t),
                    _ => None,
                },
            }
        })
        .collect())
}

/// One bound per partition: `Some(offset)`, or `None` for "the log's end".
fn offsets_for(
    consumer: &BaseConsumer,
    cfg: &WorkerConfig,
    parts: &[(String, i32)],
    marks: &HashMap<(String, i32), (i64, i64)>,
    bound: &Bound,
    timeout: Duration,
) -> Result<HashMap<(String, i32), Option<i64>>, String> {
    let mut out = HashMap::new();
    match bound {
        Bound::Beginning => {
            for key in parts {
                out.insert(key.clone(), Some(marks[key].0));
            }
        }
        Bound::End => {
            for key in parts {
                out.insert(key.clone(), None);
            }
        }
        Bound::Offsets(list) => {
            for key in parts {
                let given = list
                    .iter()
                    .find(|(t, p, _)| (t, p) == (&key.0, &key.1))
                    .map(|(_, _, o)| *o);
                out.insert(key.clone(), given.or(Some(marks[key].0)));
            }
            for (t, p, _) in list {
                if !parts.iter().any(|(pt, pp)| (pt, pp) == (t, p)) {
                    return Err(format!("{t}:{p} is not a partition of the replayed topics"));
                }
            }
        }
        Bound::Time(ms) => {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in parts {
                tpl.add_partition_offset(t, *p, Offset::Offset(*ms))
                    .map_err(|e| e.to_string())?;
            }
            let found = consumer
                .offsets_for_times(tpl, timeout)
                .map_err(|e| format!("offsets for time {ms}: {e}"))?;
            for e in found.elements() {
                let key = (e.topic().to_string(), e.partition());
                // No record at or after the time: the partition's end.
                let offset = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                out.insert(key, offset);
            }
        }
        Bound::Group(group) => {
            let (mut c, _) = client_configs(cfg);
            c.set("group.id", group).set("enable.auto.commit", "false");
            let reader: BaseConsumer = c.create().map_err(|e| e.to_string())?;
            let mut tpl = TopicPartitionList::new();
            for (t, p) in parts {
                tpl.add_partition(t, *p);
            }
            let committed = reader
                .committed_offsets(tpl, timeout)
                .map_err(|e| format!("committed offsets of group {group}: {e}"))?;
            for e in committed.elements() {
                let key = (e.topic().to_string(), e.partition());
                let offset = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => marks[&key].0, // never committed: from the beginning
                };
                out.insert(key, Some(offset));
            }
        }
    }
    Ok(out)
}

/// How a replay runs.
#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    /// Events per second at most (`None`: as fast as it goes).
    pub rate: Option<f64>,
    /// Most records per batch.
    pub batch_max: usize,
    /// `End::Log` partitions stop after this long without a record past their high watermark.
    pub idle: Duration,
}

/// What a replay did.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReplayReport {
    /// Records read inside the range.
    pub read: u64,
    /// Records that would have been dead-lettered (undecodable or invalid).
    pub dead_letters: u64,
    pub verdicts: u64,
    /// The replay stopped before the end of its range (shutdown).
    pub interrupted: bool,
}

/// A label to apply during a replay, at the point the replay passes its record's timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedLabel {
    /// The label record's Kafka timestamp, ms.
    pub at: i64,
    pub account: String,
    pub tainted: bool,
    pub label_time: i64,
}

/// Reads a labels topic from its beginning to its end: the labels a replay applies, ordered by
/// record timestamp (undecodable labels, labels without an account and UNKNOWN ones skipped, as
/// the labels consumer does).
pub async fn read_labels(
    cfg: &WorkerConfig,
    topic: &str,
    idle: Duration,
) -> Result<Vec<TimedLabel>, String> {
    let codec = match &cfg.schema_registry {
        Some(url) => Codec::with_registry(url, cfg.subject_strategy),
        None => Codec::registry_free(),
    };
    let mut out = Vec::new();
    read_topic(cfg, topic, idle, |m| {
        let Ok(label) = codec.decode_label(m.payload().unwrap_or(&[])) else {
            return;
        };
        let (Some(account), Some(tainted)) = (
            label.account_id.filter(|a| !a.is_empty()),
            crate::labels::taint_of(label.kind),
        ) else {
            return;
        };
        out.push(TimedLabel {
            at: m.timestamp().to_millis().unwrap_or(label.label_time),
            account,
            tainted,
            label_time: label.label_time,
        });
    })
    .await?;
    out.sort_by_key(|l| l.at);
    Ok(out)
}

/// Reads every record of `topic` from its beginning to its end (assign(), nothing committed)
/// and hands each to `each`. The end is found by reading: each partition at or past the high
/// watermark it had at the start, and nothing new for `idle`.
pub async fn read_topic(
    cfg: &WorkerConfig,
    topic: &str,
    idle: Duration,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<(), String> {
    let ranges = {
        let (cfg, topics) = (cfg.clone(), vec![topic.to_string()]);
        tokio::task::spawn_blocking(move || {
            resolve(
                &cfg,
                &topics,
                &Bound::Beginning,
                &Bound::End,
                Duration::from_secs(10),
            )
        })
        .await
        .map_err(|e| e.to_string())??
    };
    let consumer: StreamConsumer = replay_consumer_config(cfg)
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for r in &ranges {
        tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.start))
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut next: HashMap<i32, i64> = ranges.iter().map(|r| (r.partition, r.start)).collect();
    let high: HashMap<i32, i64> = ranges.iter().map(|r| (r.partition, r.high)).collect();
    loop {
        match tokio::time::timeout(idle, consumer.recv()).await {
            Ok(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                each(&m);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "consume error"),
            Err(_) => {
                if next.iter().all(|(p, n)| *n >= high[p]) {
                    break;
                }
            }
        }
    }
    tokio::task::spawn_blocking(move || drop(consumer))
        .await
        .map_err(|e| e.to_string())
}

/// apply labels: before a batch goes on to be enriched, the labels whose records are no newer
/// than the batch's newest record are applied to the replay's store — the order in which the
/// worker's labels consumer met them, to the precision of a batch.
struct ApplyLabels<S> {
    scorer: Arc<Scorer<S>>,
    labels: std::collections::VecDeque<TimedLabel>,
}

impl<S: FeatureStore> Stage for ApplyLabels<S> {
    type In = Vec<OwnedMessage>;
    type Out = Vec<OwnedMessage>;
    fn name(&self) -> &'static str {
        "labels"
    }
    async fn process(&mut self, batch: Batch<Self::In>) -> Result<Batch<Self::Out>, WorkerError> {
        let newest = batch
            .data
            .iter()
            .filter_map(|m| m.timestamp().to_millis())
            .max()
            .unwrap_or(i64::MIN);
        while self.labels.front().is_some_and(|l| l.at <= newest) {
            let l = self.labels.pop_front().expect("front");
            if let Err(e) = self
                .scorer
                .store
                .apply_label(&l.account, l.tainted, l.label_time)
                .await
            {
                tracing::warn!(error = %e, account = %riskstream_events::log_ids::Id(&l.account), "replay: label not applied");
            }
        }
        Ok(batch)
    }
}

/// One scored batch for the sink: verdicts in input order and the batch's dead letters.
pub struct ReplayBatch {
    pub verdicts: Vec<Verdict>,
    pub dead_letters: u64,
}

/// Replays `ranges` through the scoring chain into `sink` (called once per batch, in order, on
/// the caller's task). Stops at the ranges' ends, or early when `shutdown` turns true (then
/// the batches already read are still scored and sunk).
pub async fn replay<S, F>(
    cfg: &WorkerConfig,
    scorer: Arc<Scorer<S>>,
    ranges: Vec<PartitionRange>,
    labels: Vec<TimedLabel>,
    options: ReplayOptions,
    shutdown: watch::Receiver<bool>,
    mut sink: F,
) -> Result<ReplayReport, WorkerError>
where
    S: FeatureStore,
    F: FnMut(ReplayBatch) -> Result<(), WorkerError>,
{
    let codec = Arc::new(match &cfg.schema_registry {
        Some(url) => Codec::with_registry(url, cfg.subject_strategy),
        None => Codec::registry_free(),
    });
    let cfg = Arc::new(cfg.clone());
    let consumer: Arc<StreamConsumer> = Arc::new(replay_consumer_config(&cfg).create()?);
    let mut tpl = TopicPartitionList::new();
    for r in ranges
        .iter()
        .filter(|r| !matches!(r.end, End::Offset(e) if e <= r.start))
    {
        tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.start))?;
    }
    let (tx, rx) = mpsc::channel(1);
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    if tpl.count() > 0 {
        consumer.assign(&tpl)?;
        tasks.push(tokio::spawn(bounded_source(
            consumer.clone(),
            ranges,
            options,
            shutdown,
            interrupted.clone(),
            tx,
        )));
    } else {
        drop(tx);
    }
    let report: Arc<std::sync::Mutex<WorkerReport>> = Arc::default();
    let (rx, apply) = stages::spawn(
        ApplyLabels {
            scorer: scorer.clone(),
            labels: labels.into(),
        },
        rx,
    );
    let (rx, decode) = stages::spawn(
        // A replay reads what it is given, bad records included: no cap.
        Decode::new(
            cfg.clone(),
            codec,
            report.clone(),
            crate::dlq_limit::DlqLimit {
                max_consecutive: 0,
                max_ratio: 1.0,
            },
        ),
        rx,
    );
    let (rx, enrich) = stages::spawn_concurrent(
        Enrich {
            scorer: scorer.clone(),
        },
        rx,
        cfg.store_in_flight,
    );
    let (mut rx, score) = stages::spawn(
        ScoreOnly {
            scorer,
            buffers: Buffers::default(),
        },
        rx,
    );
    tasks.extend([apply, decode, enrich, score]);
    let mut out = ReplayReport::default();
    let mut sink_error = None;
    while let Some(batch) = rx.recv().await {
        metrics::gauge!(crate::metrics::IN_FLIGHT_BATCHES).decrement(1.0);
        let b = batch.data;
        out.verdicts += b.verdicts.len() as u64;
        out.dead_letters += b.dead_letters;
        if let Err(e) = sink(b) {
            sink_error = Some(e);
            break; // dropping the receiver stops the chain
        }
    }
    drop(rx);
    let result = stages::join(tasks).await;
    tokio::task::spawn_blocking(move || drop(consumer)).await?;
    if let Some(e) = sink_error {
        return Err(e);
    }
    result?;
    out.read = report.lock().expect("report lock").consumed;
    out.interrupted = interrupted.load(std::sync::atomic::Ordering::Relaxed);
    Ok(out)
}

/// Where the source stands on one partition.
struct Position {
    end: End,
    high: i64,
    /// Next offset expected.
    next: i64,
    done: bool,
    /// Records before the first one at or after this time are skipped (then `None`).
    skip_before: Option<i64>,
    /// The partition ends at its first record at or after this time.
    stop_at: Option<i64>,
}

/// Reads the assigned partitions up to their ends, in batches, at most `options.rate` records
/// per second; records past a partition's end are dropped. Batches are cut as in the worker:
/// handed over as soon as the next stage is free, filled up to `batch_max` while it is busy.
async fn bounded_source(
    consumer: Arc<StreamConsumer>,
    ranges: Vec<PartitionRange>,
    options: ReplayOptions,
    mut shutdown: watch::Receiver<bool>,
    interrupted: Arc<std::sync::atomic::AtomicBool>,
    tx: mpsc::Sender<stages::Records>,
) -> Result<(), WorkerError> {
    use futures::FutureExt;
    let mut open: HashMap<(String, i32), Position> = ranges
        .iter()
        .map(|r| {
            let done = matches!(r.end, End::Offset(e) if e <= r.start);
            let p = Position {
                end: r.end,
                high: r.high,
                next: r.start,
                done,
                skip_before: r.from_time,
                stop_at: r.to_time,
            };
            ((r.topic.clone(), r.partition), p)
        })
        .collect();
    let max = options.batch_max.max(1);
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut last_record = Instant::now();
    let mut batch: Vec<OwnedMessage> = Vec::with_capacity(max);
    // Records read but not yet handed over, per partition, in offset order.
    let mut pending: HashMap<(String, i32), VecDeque<OwnedMessage>> = HashMap::new();
    let accept = |m: rdkafka::message::BorrowedMessage<'_>,
                  open: &mut HashMap<(String, i32), Position>,
                  pending: &mut HashMap<(String, i32), VecDeque<OwnedMessage>>| {
        let key = (m.topic().to_string(), m.partition());
        let Some(p) = open.get_mut(&key) else {
            return;
        };
        let ts = m.timestamp().to_millis();
        let mut inside = match p.end {
            End::Offset(e) => m.offset() < e,
            End::Log => true,
        };
        if let (Some(from), Some(ts)) = (p.skip_before, ts) {
            if ts < from {
                inside = false;
            } else {
                p.skip_before = None;
            }
        }
        if let (Some(to), Some(ts)) = (p.stop_at, ts) {
            if ts >= to && p.skip_before.is_none() {
                inside = false;
                p.done = true;
            }
        }
        if inside && !p.done {
            pending.entry(key).or_default().push_back(m.detach());
        }
        p.next = p.next.max(m.offset() + 1);
        if let End::Offset(e) = p.end {
            p.done |= p.next >= e;
        }
    };
    loop {
        let finished = open.values().all(|p| p.done);
        if *shutdown.borrow() && !finished {
            interrupted.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if finished || *shutdown.borrow() {
            break;
        }
        let idle_left = options.idle.saturating_sub(last_record.elapsed());
        tokio::select! {
            m = consumer.recv() => match m {
                Ok(m) => {
                    last_record = Instant::now();
                    accept(m, &mut open, &mut pending);
                    for _ in 0..max {
                        match consumer.recv().now_or_never() {
                            Some(Ok(m)) => accept(m, &mut open, &mut pending),
                            Some(Err(e)) => tracing::warn!(error = %e, "consume error"),
                            None => break,
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "consume error"),
            },
            _ = tokio::time::sleep(idle_left.max(Duration::from_millis(10))) => {
                // Nothing for the idle time: partitions read to the log's end are done once at
                // (or past) the high watermark they had when the replay started.
                if last_record.elapsed() >= options.idle {
                    for p in open.values_mut().filter(|p| p.end == End::Log) {
                        p.done |= p.next >= p.high;
                    }
                }
            }
            _ = shutdown.changed() => {}
        }
        let finished = open.values().all(|p| p.done);
        merge_in_time_order(&mut pending, &open, &mut batch, max, finished);
        let hand_over =
            batch.len() >= max || (!batch.is_empty() && (finished || tx.capacity() > 0));
        if hand_over && !send(&tx, &mut batch, max, options.rate, started, &mut sent).await {
            return Ok(()); // the chain stopped: it reports why
        }
    }
    // Finished or interrupted: what was read goes on, in time order.
    loop {
        merge_in_time_order(&mut pending, &open, &mut batch, max, true);
        if batch.is_empty() {
            break;
        }
        if !send(&tx, &mut batch, max, options.rate, started, &mut sent).await {
            break;
        }
    }
    Ok(())
}

/// Read-ahead the merge may hold before it hands records over out of order (bounded memory
/// when one partition is far behind the others).
const MERGE_WINDOW: usize = 50_000;

/// Moves pending records into `batch` (up to `max`) in record-timestamp order across
/// partitions — the order production wrote them, whatever order the fetches returned them
/// in, so a replay is deterministic and interleaves the two input topics as a live worker
/// would. A partition still expecting records holds the merge back until it has one (unless it
/// is at its high watermark, or `all` is set, or the read-ahead is full).
fn merge_in_time_order(
    pending: &mut HashMap<(String, i32), VecDeque<OwnedMessage>>,
    open: &HashMap<(String, i32), Position>,
    batch: &mut Vec<OwnedMessage>,
    max: usize,
    all: bool,
) {
    let ts = |m: &OwnedMessage| m.timestamp().to_millis().unwrap_or(i64::MIN);
    let buffered: usize = pending.values().map(VecDeque::len).sum();
    let force = all || buffered > MERGE_WINDOW;
    while batch.len() < max {
        let waiting = !force
            && open.iter().any(|(key, p)| {
                !p.done && p.next < p.high && pending.get(key).is_none_or(VecDeque::is_empty)
            });
        if waiting {
            return;
        }
        let next = pending
            .iter()
            .filter_map(|(key, q)| q.front().map(|m| ((ts(m), key.clone()), key.clone())))
            .min_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, key)| key);
        let Some(key) = next else { return };
        let q = pending.get_mut(&key).expect("queue");
        batch.push(q.pop_front().expect("front"));
    }
}

/// Sends `batch` on, first waiting as long as the rate cap needs; false if the chain stopped.
async fn send(
    tx: &mpsc::Sender<stages::Records>,
    batch: &mut Vec<OwnedMessage>,
    max: usize,
    rate: Option<f64>,
    started: Instant,
    sent: &mut u64,
) -> bool {
    if let Some(rate) = rate.filter(|r| *r > 0.0) {
        // The average since the start stays at or under the cap.
        let due = Duration::from_secs_f64((*sent + batch.len() as u64) as f64 / rate);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    *sent += batch.len() as u64;
    let msgs = std::mem::replace(batch, Vec::with_capacity(max));
    metrics::gauge!(crate::metrics::IN_FLIGHT_BATCHES).increment(1.0);
    tx.send(Batch {
        offsets: Offsets::of(&msgs),
        data: msgs,
    })
    .await
    .is_ok()
}

/// score, without encoding: inference, policy, reason codes on the compute pool; the verdicts
/// go to the replay's sink as values.
struct ScoreOnly<S> {
    scorer: Arc<Scorer<S>>,
    buffers: Buffers,
}

impl<S: FeatureStore> Stage for ScoreOnly<S> {
    type In = (Decoded, Enriched);
    type Out = ReplayBatch;
    fn name(&self) -> &'static str {
        "score"
    }
    async fn process(&mut self, batch: Batch<Self::In>) -> Result<Batch<Self::Out>, WorkerError> {
        let scorer = self.scorer.clone();
        let mut buffers = std::mem::take(&mut self.buffers);
        let Batch {
            data: (decoded, enriched),
            offsets,
        } = batch;
        let dead = decoded.dead.len() as u64;
        let events: Vec<Event> = decoded.events;
        let sources = decoded.sources;
        let (buffers, verdicts) = stages::compute(move || {
            let v =
                scorer.score_enriched(&events, &sources, enriched, stages::now_ms(), &mut buffers);
            (buffers, v)
        })
        .await?;
        self.buffers = buffers;
        Ok(Batch {
            data: ReplayBatch {
                verdicts,
                dead_letters: dead,
            },
            offsets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_kcat_style() {
        assert_eq!(parse_offsets("beginning"), Ok(Bound::Beginning));
        assert_eq!(parse_offsets("end"), Ok(Bound::End));
        assert_eq!(
            parse_offsets("transactions:0:15,capture-sessions:3:0"),
            Ok(Bound::Offsets(vec![
                ("transactions".into(), 0, 15),
                ("capture-sessions".into(), 3, 0)
            ]))
        );
        assert_eq!(
            parse_offsets("my:topic:2:7"),
            Ok(Bound::Offsets(vec![("my:topic".into(), 2, 7)])),
            "a topic may contain ':'"
        );
        assert!(parse_offsets("transactions:x:1").is_err());
        assert!(parse_offsets("transactions:1:-4").is_err());
        assert!(parse_offsets("transactions").is_err());
    }

    #[test]
    fn times_parse_as_epoch_ms_or_rfc3339() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        // `date -u -d 2026-12-01T02:14:00Z +%s` = 1796091240
        assert_eq!(parse_time("2026-12-01T02:14:00Z"), Ok(1_796_091_240_000));
        assert_eq!(
            parse_time("2026-12-01T03:14:00.5+01:00"),
            Ok(1_796_091_240_500)
        );
        assert_eq!(
            parse_time("2024-02-29T23:59:59.999-00:30"),
            Ok(1_709_252_999_999)
        );
        assert!(parse_time("2026-13-01T00:00:00Z").is_err());
        assert!(parse_time("yesterday").is_err());
    }
}
