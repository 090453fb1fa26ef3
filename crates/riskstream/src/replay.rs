//! `riskstream replay`: re-score a range of the input topics with a chosen models directory in
//! an isolated feature-store namespace, into a file or a side topic, and compare with the
//! verdicts originally published. The scoring chain is the worker's
//! ([`riskstream_pipeline::replay`]); this module parses the options, guards production, and
//! writes the outputs and the summary.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::message::Headers;
use rdkafka::producer::BaseRecord;
use rdkafka::Message;
use riskstream_events::{Codec, Decision, SchemaKind, Schemas, Verdict};
use riskstream_features::{AnyStore, MemoryStore, RedisStore, StoreLimits};
use riskstream_pipeline::replay::{self as rp, Bound, End, PartitionRange, ReplayBatch};
use riskstream_pipeline::{Topics, WorkerConfig, WorkerError};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::parse_kafka_prop;

/// The key prefix production workers use by default: a replay refuses to write under it.
const PRODUCTION_PREFIX: &str = "riskstream";

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "RISKSTREAM_BROKERS")]
    pub brokers: String,
    /// Extra librdkafka property `key=value` (repeatable; `consumer.` / `producer.` prefixes
    /// send it to one client only).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub kafka: Vec<String>,
    /// Input topics to replay, comma-separated (default: both input topics).
    #[arg(long, value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Where to start: `beginning`, `end`, or `TOPIC:PARTITION:OFFSET,…` (partitions not named
    /// start at the beginning). Default: `beginning`, unless --from-time / --from-group.
    #[arg(long, conflicts_with_all = ["from_time", "from_group"])]
    pub from_offsets: Option<String>,
    /// Start at the first record at or after this time (RFC 3339 or epoch ms) in each
    /// partition: reading starts where the broker maps the time (ListOffsets by timestamp) and
    /// skips any earlier records.
    #[arg(long, conflicts_with = "from_group")]
    pub from_time: Option<String>,
    /// Start at this consumer group's committed offsets (read only: a replay commits nothing).
    #[arg(long)]
    pub from_group: Option<String>,
    /// Where to stop (exclusive): `end` (default: the end of the log as the replay finds it),
    /// or `TOPIC:PARTITION:OFFSET,…`.
    #[arg(long, conflicts_with = "to_time")]
    pub to_offsets: Option<String>,
    /// Stop before the first record at or after this time (RFC 3339 or epoch ms).
    #[arg(long)]
    pub to_time: Option<String>,
    /// Models directory (with its serving.toml policy) to score with.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Feature store: `memory` (default) or a Redis URL (`redis://…`, `redis+cluster://…`).
    /// Always used under the replay's own --key-prefix.
    #[arg(long, default_value = "memory")]
    pub redis: String,
    /// Feature-store namespace (default: a fresh `replay-<epoch s>`). The production prefix
    /// `riskstream` is refused.
    #[arg(long)]
    pub key_prefix: Option<String>,
    /// Keep the replay's namespace in Redis when it ends (default: delete it).
    #[arg(long)]
    pub keep_namespace: bool,
    /// Warm the namespace first by replaying the records from this time (RFC 3339 or epoch
    /// ms) up to the start of the range, without emitting anything.
    #[arg(long)]
    pub warm_from: Option<String>,
    /// Write verdicts to this file: `.jsonl` (field names of verdict.avsc, enums as symbols) or
    /// `.avro` (Avro object container file).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Publish verdicts to this topic (Avro, like the worker's).
    #[arg(long)]
    pub to_topic: Option<String>,
    /// Allow --to-topic to name the production verdict topic (--verdicts-topic).
    #[arg(long)]
    pub allow_production_topic: bool,
    /// The production verdict topic.
    #[arg(long, default_value = "verdicts")]
    pub verdicts_topic: String,
    /// Compare with the verdicts originally published on this topic (default: the production
    /// verdict topic; `none` to skip).
    #[arg(long)]
    pub compare_topic: Option<String>,
    /// Apply the labels on this topic while replaying, each when the replay passes its record's
    /// timestamp, as the worker's labels consumer did (`none`: replay without labels).
    #[arg(long, default_value = "labels")]
    pub labels_topic: String,
    /// When labels apply: `record-time` (as the replay passes each label record's timestamp:
    /// what a worker consuming live saw) or `start` (all of them before the first event: what
    /// a worker that started on a backlog saw, and what a re-score wants to know now).
    #[arg(long, default_value = "record-time", value_parser = ["record-time", "start"])]
    pub labels_at: String,
    /// At most this many events per second (a replay must not starve production).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write the summary as JSON to this file too.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Most records per batch.
    #[arg(long, default_value_t = 512)]
    pub batch_max: usize,
    /// A partition read to the log's end is done after this long without new records.
    #[arg(long, default_value_t = 2000)]
    pub idle_ms: u64,
    /// Schema registry URL (when the inputs are registry-framed).
    #[arg(long, env = "RISKSTREAM_SCHEMA_REGISTRY")]
    pub schema_registry: Option<String>,
}

/// Decision flips and score changes against the original verdicts.
#[derive(Debug, Default, Serialize)]
struct Comparison {
    topic: String,
    /// original decision -> replayed decision -> count
    flips: BTreeMap<String, BTreeMap<String, u64>>,
    matched: u64,
    same_decision: u64,
    /// Replayed events with no original verdict on the topic.
    missing_original: u64,
    /// Per champion model: percentiles of |replayed − original| score.
    score_delta: BTreeMap<String, Percentiles>,
    /// Up to 10 flipped events (by event id), to investigate.
    examples: Vec<Flip>,
}

#[derive(Debug, Default, Serialize)]
struct Percentiles {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Summary {
    key_prefix: String,
    models: String,
    ranges: Vec<RangeOut>,
    read: u64,
    verdicts: u64,
    dead_letters: u64,
    interrupted: bool,
    seconds: f64,
    events_per_second: f64,
    decisions: BTreeMap<String, u64>,
    output: Option<String>,
    to_topic: Option<String>,
    comparison: Option<Comparison>,
}

#[derive(Debug, Serialize)]
struct RangeOut {
    topic: String,
    partition: i32,
    start: i64,
    end: String,
}

/// What the replay keeps of each verdict for the comparison: decision, champion scores, and
/// the reasons (for the flipped examples).
type Brief = (Decision, Vec<(String, f64)>, Vec<String>);

fn brief(v: &Verdict) -> Brief {
    let scores = v
        .scores
        .iter()
        .filter(|s| !s.shadow)
        .map(|s| (s.model.to_string(), s.score))
        .collect();
    (v.decision, scores, v.reasons.clone())
}

/// One flipped decision, as an example to investigate.
#[derive(Debug, Serialize)]
struct Flip {
    event_id: String,
    original: String,
    replayed: String,
    original_reasons: Vec<String>,
    replayed_reasons: Vec<String>,
}

fn decision_name(d: Decision) -> String {
    d.as_str().to_string()
}

/// Where verdicts go.
enum Output {
    Jsonl(std::io::BufWriter<std::fs::File>),
    Avro(Box<apache_avro::Writer<'static, std::io::BufWriter<std::fs::File>>>),
}

impl Output {
    fn create(path: &Path) -> anyhow::Result<Output> {
        let file = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl") => Ok(Output::Jsonl(file)),
            Some("avro") => {
                let schema = Schemas::embedded().get(SchemaKind::Verdict).schema;
                Ok(Output::Avro(Box::new(apache_avro::Writer::new(
                    schema, file,
                )?)))
            }
            _ => bail!(
                "--output {}: the extension must be .jsonl or .avro",
                path.display()
            ),
        }
    }
    fn write(&mut self, v: &Verdict) -> anyhow::Result<()> {
        match self {
            Output::Jsonl(w) => {
                serde_json::to_writer(&mut *w, v)?;
                w.write_all(b"\n")?;
            }
            Output::Avro(w) => {
                w.append_ser(v)?;
            }
        }
        Ok(())
    }
    fn finish(self) -> anyhow::Result<()> {
        match self {
            Output::Jsonl(mut w) => w.flush()?,
            Output::Avro(w) => {
                w.into_inner()?.flush()?;
            }
        }
        Ok(())
    }
}

pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    // Guards first: nothing touches production unless asked for explicitly.
    let prefix = args.key_prefix.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        format!("replay-{secs}")
    });
    if prefix == PRODUCTION_PREFIX {
        bail!(
            "--key-prefix {PRODUCTION_PREFIX} is the production namespace; a replay uses its own"
        );
    }
    if args.to_topic.as_deref() == Some(args.verdicts_topic.as_str())
        && !args.allow_production_topic
    {
        bail!(
            "--to-topic {} is the production verdict topic; add --allow-production-topic if you mean it",
            args.verdicts_topic
        );
    }
    if args.output.is_none()
        && args.to_topic.is_none()
        && args.compare_topic.as_deref() == Some("none")
    {
        bail!("nothing to do: give --output, --to-topic, or a --compare-topic");
    }
    let mut cfg = WorkerConfig::new(&args.brokers, "riskstream-replay");
    cfg.kafka = args
        .kafka
        .iter()
        .map(|p| parse_kafka_prop(p))
        .collect::<anyhow::Result<_>>()?;
    cfg.batch_max = args.batch_max;
    cfg.schema_registry = args.schema_registry.clone();
    cfg.topics = Topics::default();
    let topics = if args.topics.is_empty() {
        vec![
            cfg.topics.capture_sessions.clone(),
            cfg.topics.transactions.clone(),
        ]
    } else {
        args.topics.clone()
    };
    let from = match (&args.from_offsets, &args.from_time, &args.from_group) {
        (Some(o), _, _) => rp::parse_offsets(o).map_err(anyhow::Error::msg)?,
        (_, Some(t), _) => Bound::Time(rp::parse_time(t).map_err(anyhow::Error::msg)?),
        (_, _, Some(g)) => Bound::Group(g.clone()),
        _ => Bound::Beginning,
    };
    let to = match (&args.to_offsets, &args.to_time) {
        (Some(o), _) => rp::parse_offsets(o).map_err(anyhow::Error::msg)?,
        (_, Some(t)) => Bound::Time(rp::parse_time(t).map_err(anyhow::Error::msg)?),
        _ => Bound::End,
    };
    if matches!(to, Bound::Beginning | Bound::Group(_)) {
        bail!("--to-offsets takes `end` or TOPIC:PARTITION:OFFSET,…");
    }
    let ranges = {
        let (cfg, topics, from, to) = (cfg.clone(), topics.clone(), from.clone(), to.clone());
        tokio::task::spawn_blocking(move || {
            rp::resolve(&cfg, &topics, &from, &to, Duration::from_secs(10))
        })
        .await?
        .map_err(anyhow::Error::msg)?
    };

    // The replay's own store namespace and scorer.
    let store = match args.redis.as_str() {
        "memory" => AnyStore::Memory(MemoryStore::new(StoreLimits::default())),
        url => AnyStore::Redis(
            RedisStore::connect(url, &prefix, StoreLimits::default(), Duration::from_secs(5))
                .await
                .with_context(|| format!("connecting to the feature store at {url}"))?,
        ),
    };
    let serving = riskstream_pipeline::ServingHandle::load(
        &args.models,
        riskstream_features::inputs::input_index,
    )
    .with_context(|| format!("loading models from {}", args.models.display()))?;
    let scorer = Arc::new(riskstream_pipeline::Scorer::new(store, Arc::new(serving)));

    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nreplay: interrupted; finishing the batches in flight");
            let _ = shutdown_tx.send(true);
        }
    });
    let options = rp::ReplayOptions {
        rate: args.rate,
        batch_max: args.batch_max,
        idle: Duration::from_millis(args.idle_ms),
    };

    let labels = if args.labels_topic == "none" {
        Vec::new()
    } else {
        let idle = Duration::from_millis(args.idle_ms);
        match rp::read_labels(&cfg, &args.labels_topic, idle).await {
            Ok(labels) => labels,
            Err(e) => {
                eprintln!(
                    "replay: no labels applied ({}: {e}); --labels-topic none silences this",
                    args.labels_topic
                );
                Vec::new()
            }
        }
    };
    if args.labels_topic != "none" {
        eprintln!(
            "replay: {} labels from {}, applied at {}",
            labels.len(),
            args.labels_topic,
            args.labels_at
        );
    }
    let labels = if args.labels_at == "start" {
        labels
            .into_iter()
            .map(|l| rp::TimedLabel { at: i64::MIN, ..l })
            .collect()
    } else {
        labels
    };
    // Labels before the warm-up's start would have been applied before it: the warm-up
    // applies them as it passes their time too.
    if let Some(warm) = &args.warm_from {
        let warm_ms = rp::parse_time(warm).map_err(anyhow::Error::msg)?;
        let starts = Bound::Offsets(
            ranges
                .iter()
                .map(|r| (r.topic.clone(), r.partition, r.start))
                .collect(),
        );
        let warm_ranges = {
            let (cfg, topics) = (cfg.clone(), topics.clone());
            tokio::task::spawn_blocking(move || {
                rp::resolve(
                    &cfg,
                    &topics,
                    &Bound::Time(warm_ms),
                    &starts,
                    Duration::from_secs(10),
                )
            })
            .await?
            .map_err(anyhow::Error::msg)?
        };
        let n: u64 = warm_ranges.iter().map(PartitionRange::len_hint).sum();
        eprintln!("replay: warming namespace {prefix} with ~{n} records from {warm}");
        rp::replay(
            &cfg,
            scorer.clone(),
            warm_ranges,
            labels.clone(),
            options,
            shutdown.clone(),
            |_| Ok(()),
        )
        .await?;
    }

    let total: u64 = ranges.iter().map(PartitionRange::len_hint).sum();
    let shown: Vec<String> = ranges
        .iter()
        .map(|r| {
            let end = match r.end {
                End::Offset(o) => o.to_string(),
                End::Log => "end".into(),
            };
            format!("{}:{}:{}..{}", r.topic, r.partition, r.start, end)
        })
        .collect();
    eprintln!("replay: ranges {}", shown.join(" "));
    eprintln!(
        "replay: {} partitions, ~{total} records, models {}, namespace {prefix} on {}",
        ranges.len(),
        args.models.display(),
        args.redis
    );
    let mut output = args.output.as_deref().map(Output::create).transpose()?;
    let producer = match &args.to_topic {
        Some(_) => Some(crate::kafka_util::load_producer(&args.brokers, &cfg.kafka)?),
        None => None,
    };
    let codec = Codec::registry_free();
    let compare_topic = match args.compare_topic.as_deref() {
        Some("none") => None,
        Some(t) => Some(t.to_string()),
        None => Some(args.verdicts_topic.clone()),
    };
    let mut replayed: HashMap<String, Brief> = HashMap::new();
    let mut decisions: BTreeMap<String, u64> = BTreeMap::new();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut done: u64 = 0;
    let terminal = std::io::stderr().is_terminal();
    let mut sink_error: Option<anyhow::Error> = None;
    let report = rp::replay(
        &cfg,
        scorer.clone(),
        ranges.clone(),
        labels,
        options,
        shutdown,
        |b: ReplayBatch| {
            let fail = |e: anyhow::Error, what: &str| {
                WorkerError::Sink(format!("replay sink ({what}): {e:#}"))
            };
            for v in &b.verdicts {
                *decisions.entry(decision_name(v.decision)).or_default() += 1;
                if compare_topic.is_some() {
                    replayed.insert(v.event_id.clone(), brief(v));
                }
                if let Some(out) = output.as_mut() {
                    if let Err(e) = out.write(v) {
                        let err = fail(e, "output");
                        sink_error = Some(anyhow::anyhow!("{err}"));
                        return Err(err);
                    }
                }
                if let (Some((p, _)), Some(topic)) = (&producer, &args.to_topic) {
                    let payload = codec
                        .encode(SchemaKind::Verdict, topic, v)
                        .map_err(|e| fail(e.into(), "encode"))?;
                    let mut record = BaseRecord::to(topic)
                        .key(v.account_id.as_bytes())
                        .payload(&payload);
                    loop {
                        match p.send(record) {
                            Ok(()) => break,
                            Err((
                                rdkafka::error::KafkaError::MessageProduction(
                                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                                ),
                                r,
                            )) => {
                                record = r;
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            Err((e, _)) => return Err(fail(e.into(), "publish")),
                        }
                    }
                }
            }
            done += b.verdicts.len() as u64 + b.dead_letters;
            if last_progress.elapsed() >= Duration::from_secs(if terminal { 1 } else { 10 }) {
                last_progress = Instant::now();
                let secs = started.elapsed().as_secs_f64();
                let rate = done as f64 / secs.max(1e-9);
                let eta = total.saturating_sub(done) as f64 / rate.max(1e-9);
                let line = format!(
                    "replay: {done} / ~{total} records ({:.0}%), {rate:.0}/s, ETA {eta:.0} s",
                    100.0 * done as f64 / total.max(1) as f64
                );
                if terminal {
                    eprint!("\r{line}   ");
                } else {
                    eprintln!("{line}");
                }
            }
            Ok(())
        },
    )
    .await;
    if terminal {
        eprintln!();
    }
    if let Some(e) = sink_error {
        return Err(e);
    }
    let report = report?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(out) = output {
        out.finish()?;
    }
    if let Some((p, counter)) = producer {
        tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            p.flush(Duration::from_secs(30))
        })
        .await??;
        let failed = counter.failed.load(std::sync::atomic::Ordering::Relaxed);
        if failed > 0 {
            bail!(
                "{failed} verdicts could not be published to {}",
                args.to_topic.as_deref().unwrap_or("")
            );
        }
    }
    let comparison = match &compare_topic {
        Some(topic) if !replayed.is_empty() => {
            Some(compare(&cfg, topic, &replayed, &codec, args.idle_ms).await?)
        }
        _ => None,
    };
    if let (AnyStore::Redis(store), false) = (&scorer.store, args.keep_namespace) {
        match store.delete_namespace().await {
            Ok(n) => eprintln!("replay: deleted namespace {prefix} ({n} keys)"),
            Err(e) => eprintln!(
                "replay: namespace {prefix} not deleted ({e}); its keys expire by their TTLs"
            ),
        }
    }
    let summary = Summary {
        key_prefix: prefix,
        models: args.models.display().to_string(),
        ranges: ranges
            .iter()
            .map(|r| RangeOut {
                topic: r.topic.clone(),
                partition: r.partition,
                start: r.start,
                end: match r.end {
                    End::Offset(o) => o.to_string(),
                    End::Log => "end".into(),
                },
            })
            .collect(),
        read: report.read,
        verdicts: report.verdicts,
        dead_letters: report.dead_letters,
        interrupted: report.interrupted,
        seconds,
        events_per_second: report.read as f64 / seconds.max(1e-9),
        decisions,
        output: args.output.as_ref().map(|p| p.display().to_string()),
        to_topic: args.to_topic.clone(),
        comparison,
    };
    print_summary(&summary);
    if let Some(path) = &args.summary_json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Reads `topic` from the beginning to its end and joins it with the replayed verdicts.
async fn compare(
    cfg: &WorkerConfig,
    topic: &str,
    replayed: &HashMap<String, Brief>,
    codec: &Codec,
    idle_ms: u64,
) -> anyhow::Result<Comparison> {
    let mut originals: HashMap<String, Brief> = HashMap::new();
    rp::read_topic(cfg, topic, Duration::from_millis(idle_ms), |m| {
        let id = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == "riskstream.event_id")
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        if !id.as_ref().is_none_or(|id| replayed.contains_key(id)) {
            return;
        }
        if let Ok(v) = codec.decode_as::<Verdict>(SchemaKind::Verdict, m.payload().unwrap_or(&[])) {
            if replayed.contains_key(&v.event_id) {
                // A redelivered event may have several verdicts: the first one counts.
                originals
                    .entry(v.event_id.clone())
                    .or_insert_with(|| brief(&v));
            }
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("reading {topic}: {e}"))?;
    let mut c = Comparison {
        topic: topic.to_string(),
        ..Comparison::default()
    };
    let mut deltas: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut ids: Vec<&String> = replayed.keys().collect();
    ids.sort();
    for id in ids {
        let (decision, scores, reasons) = &replayed[id];
        let Some((orig, orig_scores, orig_reasons)) = originals.get(id) else {
            c.missing_original += 1;
            continue;
        };
        if orig != decision && c.examples.len() < 10 {
            c.examples.push(Flip {
                event_id: id.clone(),
                original: decision_name(*orig),
                replayed: decision_name(*decision),
                original_reasons: orig_reasons.clone(),
                replayed_reasons: reasons.clone(),
            });
        }
        c.matched += 1;
        c.same_decision += (orig == decision) as u64;
        *c.flips
            .entry(decision_name(*orig))
            .or_default()
            .entry(decision_name(*decision))
            .or_default() += 1;
        for (model, score) in scores {
            if let Some((_, o)) = orig_scores.iter().find(|(m, _)| m == model) {
                deltas
                    .entry(model.clone())
                    .or_default()
                    .push((score - o).abs());
            }
        }
    }
    for (model, mut d) in deltas {
        d.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| d[((d.len() - 1) as f64 * p).round() as usize];
        c.score_delta.insert(
            model,
            Percentiles {
                n: d.len(),
                p50: q(0.5),
                p90: q(0.9),
                p99: q(0.99),
                max: *d.last().unwrap_or(&0.0),
            },
        );
    }
    Ok(c)
}

fn print_summary(s: &Summary) {
    println!(
        "replay: {} records read, {} verdicts, {} dead letters in {:.1} s ({:.0} events/s){}",
        s.read,
        s.verdicts,
        s.dead_letters,
        s.seconds,
        s.events_per_second,
        if s.interrupted {
            " — INTERRUPTED, partial"
        } else {
            ""
        }
    );
    let decisions: Vec<String> = s
        .decisions
        .iter()
        .map(|(d, n)| format!("{d} {n}"))
        .collect();
    println!("  decisions: {}", decisions.join(", "));
    if let Some(out) = &s.output {
        println!("  written to {out}");
    }
    let Some(c) = &s.comparison else { return };
    println!(
        "  against {}: {} matched, {} same decision ({:.2} %), {} without an original verdict",
        c.topic,
        c.matched,
        c.same_decision,
        100.0 * c.same_decision as f64 / c.matched.max(1) as f64,
        c.missing_original
    );
    let names = ["ALLOW", "CHALLENGE", "REVIEW", "BLOCK"];
    println!("  decision flips (rows: original, columns: replayed)");
    println!(
        "  {:>10} {}",
        "",
        names.map(|n| format!("{n:>10}")).join(" ")
    );
    for row in names {
        let cells = names.map(|col| {
            let n = c
                .flips
                .get(row)
                .and_then(|r| r.get(col))
                .copied()
                .unwrap_or(0);
            format!("{n:>10}")
        });
        println!("  {row:>10} {}", cells.join(" "));
    }
    for (model, p) in &c.score_delta {
        println!(
            "  |score delta| {model}: p50 {:.4} p90 {:.4} p99 {:.4} max {:.4} (n {})",
            p.p50, p.p90, p.p99, p.max, p.n
        );
    }
    for f in c.examples.iter().take(5) {
        println!(
            "  flipped {}: {} [{}] -> {} [{}]",
            f.event_id,
            f.original,
            f.original_reasons.join(" "),
            f.replayed,
            f.replayed_reasons.join(" ")
        );
    }
}
