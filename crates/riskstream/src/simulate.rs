//! `riskstream simulate`: synthetic traffic to a broker, or training data to a file.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use riskstream_events::{Codec, Event, SchemaKind};
use riskstream_features::inputs::{self, N_INPUTS};
use riskstream_features::{FeatureStore, MemoryStore, StoreLimits};
use riskstream_pipeline::Topics;
use riskstream_sim::{SimConfig, SimEvent, Simulator};

use crate::config::parse_kafka_prop;
use crate::kafka_util::{self, LoadProducer};

/// Header carrying a simulated event's ground-truth scenario.
pub const SCENARIO_HEADER: &str = "riskstream.scenario";
/// Header carrying the event id (also on verdicts), so tools can match records without decoding.
pub const EVENT_ID_HEADER: &str = "riskstream.event_id";

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "RISKSTREAM_BROKERS", default_value = "localhost:9092")]
    pub brokers: String,
    /// Number of events (0 with --create-topics: only create the topics).
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Events per second (wall clock); unlimited when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Random seed: the same seed gives the same stream.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Days of customers' history emitted first (a login on each customer's device and a
    /// payment to each of its payees, spread over these days before the scenarios start), so the
    /// store knows established customers' devices and payees; counted in --events. 0: every
    /// account starts cold (the default here, so that a short stream is all scenarios; the
    /// training data and the demo use 14).
    #[arg(long, default_value_t = 0)]
    pub warmup_days: u32,
    /// After the --events events, also emit the steps of journeys already under way (a slow
    /// takeover's payouts hours after its sign-in, a scam's second payment; no new journey
    /// starts), so every family is there whole, as the demo scores it. To Kafka without
    /// --start-ms the stream then ends about now.
    #[arg(long)]
    pub finish_journeys: bool,
    /// Event time of the first event, epoch ms. Default: to Kafka, the stream ends about now
    /// (event times near the records' broker timestamps, as real traffic); with `--output`,
    /// 2026-01-01 (training files the same from run to run).
    #[arg(long)]
    pub start_ms: Option<i64>,
    /// Any librdkafka property for the producer (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub kafka: Vec<String>,
    #[arg(long, default_value = "capture-sessions")]
    pub topic_capture_sessions: String,
    #[arg(long, default_value = "transactions")]
    pub topic_transactions: String,
    #[arg(long, default_value = "labels")]
    pub topic_labels: String,
    /// Verdict topic (only used by --create-topics).
    #[arg(long, default_value = "verdicts")]
    pub topic_verdicts: String,
    /// Dead-letter topic (only used by --create-topics).
    #[arg(long, default_value = "verdicts-dlq")]
    pub topic_dlq: String,
    /// Do not write ground-truth labels to the labels topic.
    #[arg(long)]
    pub no_labels: bool,
    /// Create riskstream's topics first (inputs, labels, verdicts with this many partitions;
    /// dead letters with one). Brokers like tansu do not auto-create. Existing topics are kept.
    #[arg(long, value_name = "PARTITIONS")]
    pub create_topics: Option<i32>,
    /// Schema registry URL: write the Confluent wire format instead of single-object encoding.
    #[arg(long)]
    pub schema_registry: Option<String>,
    /// Registry subject naming: topic, record or topic-record (as `run`).
    #[arg(long, default_value = "topic", value_parser = parse_subject_strategy)]
    pub subject_name_strategy: riskstream_events::SubjectStrategy,
    /// Write training data (JSON lines: event, ground truth, and every model input as the
    /// pipeline computes it) to this file instead of producing to Kafka.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

pub async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    if args.events == 0 && args.create_topics.is_none() {
        anyhow::bail!("--events 0 produces nothing: give a positive number (or --create-topics N to only create topics)");
    }
    let mut cfg = SimConfig::for_events(args.events, args.seed)
        .with_warmup(i64::from(args.warmup_days) * 86_400_000);
    match args.start_ms {
        Some(start) => cfg.start_ms = start,
        None if args.output.is_none() && args.finish_journeys => {
            cfg = cfg.finishing_at(args.events, now_ms())
        }
        None if args.output.is_none() => cfg = cfg.ending_at(args.events, now_ms()),
        None => {}
    }
    let sim = Simulator::new(cfg);
    if let Some(path) = &args.output {
        let events = sim.into_stream(args.events, args.finish_journeys);
        let n = write_training_data(events, path).await?;
        println!(
            "simulate: wrote {n} events with features to {}",
            path.display()
        );
        return Ok(());
    }
    let extra = args
        .kafka
        .iter()
        .map(|p| parse_kafka_prop(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let topics = Topics {
        capture_sessions: args.topic_capture_sessions.clone(),
        transactions: args.topic_transactions.clone(),
        labels: args.topic_labels.clone(),
        ..Topics::default()
    };
    if let Some(p) = args.create_topics {
        kafka_util::create_topics(
            &args.brokers,
            &extra,
            &[
                (&topics.capture_sessions, p),
                (&topics.transactions, p),
                (&topics.labels, p),
                (&args.topic_verdicts, p),
                (&args.topic_dlq, 1),
            ],
        )
        .await?;
        println!("simulate: topics ready");
        if args.events == 0 {
            return Ok(());
        }
    }
    let codec = match &args.schema_registry {
        Some(url) => Codec::with_registry(url, args.subject_name_strategy),
        None => Codec::registry_free(),
    };
    let (producer, counter) = kafka_util::load_producer(&args.brokers, &extra)?;
    let started = Instant::now();
    let mut by_scenario: HashMap<&'static str, u64> = HashMap::new();
    let labels = !args.no_labels;
    // Progress on stderr every 10 s of a long run: count, rate, ETA.
    let (mut sent, mut last_report) = (0u64, Instant::now());
    produce_events(
        &producer,
        &codec,
        &topics,
        sim.into_stream(args.events, args.finish_journeys),
        args.rate,
        labels,
        |e| {
            *by_scenario.entry(e.scenario.as_str()).or_default() += 1;
            sent += 1;
            if sent % 1024 == 0 && last_report.elapsed() >= Duration::from_secs(10) {
                last_report = Instant::now();
                let rate = sent as f64 / started.elapsed().as_secs_f64();
                eprintln!(
                    "simulate: {sent} of {} events ({rate:.0}/s, ETA {:.0} s)",
                    args.events,
                    args.events.saturating_sub(sent) as f64 / rate.max(1.0)
                );
            }
        },
    )
    .await?;
    let producer = tokio::task::spawn_blocking(move || {
        let r = producer.flush(Duration::from_secs(60));
        (producer, r)
    })
    .await?;
    producer.1.context("flushing the producer")?;
    let failed = counter.failed.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "simulate: produced {sent} events in {secs:.1} s ({:.0}/s), {failed} failed deliveries; by scenario: {:?}",
        sent as f64 / secs,
        by_scenario
    );
    if failed > 0 {
        anyhow::bail!("{failed} records were not delivered");
    }
    Ok(())
}

/// Produces `n` simulated events (and their labels), paced to `rate` per second if given.
/// `on_sent` sees each event as it is handed to the producer. Returns the simulator, so a
/// stream can be produced in parts.
#[allow(clippy::too_many_arguments)]
pub async fn produce(
    producer: &LoadProducer,
    codec: &Codec,
    topics: &Topics,
    mut sim: Simulator,
    n: u64,
    rate: Option<f64>,
    labels: bool,
    on_sent: impl FnMut(&SimEvent),
) -> anyhow::Result<Simulator> {
    let events = sim.by_ref().take(n as usize);
    produce_events(producer, codec, topics, events, rate, labels, on_sent).await?;
    Ok(sim)
}

/// Produces `events` (their labels too when `labels`), at `rate` events/s when given.
#[allow(clippy::too_many_arguments)]
pub async fn produce_events(
    producer: &LoadProducer,
    codec: &Codec,
    topics: &Topics,
    events: impl Iterator<Item = SimEvent>,
    rate: Option<f64>,
    labels: bool,
    mut on_sent: impl FnMut(&SimEvent),
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut payload = Vec::with_capacity(2048);
    for (i, e) in events.enumerate() {
        if let Some(rate) = rate {
            if i % 16 == 0 {
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep(due - now).await;
                }
            }
        }
        payload.clear();
        let topic = match &e.event {
            Event::CaptureSession(c) => {
                codec.encode_into(
                    SchemaKind::CaptureSession,
                    &topics.capture_sessions,
                    c,
                    &mut payload,
                )?;
                &topics.capture_sessions
            }
            Event::Transaction(t) => {
                codec.encode_into(
                    SchemaKind::Transaction,
                    &topics.transactions,
                    t,
                    &mut payload,
                )?;
                &topics.transactions
            }
        };
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: SCENARIO_HEADER,
                value: Some(e.scenario.as_str()),
            })
            .insert(Header {
                key: EVENT_ID_HEADER,
                value: Some(e.event.event_id()),
            });
        let record = BaseRecord::to(topic)
            .key(e.event.account_id())
            .payload(payload.as_slice())
            .headers(headers);
        send_blocking(producer, record).await?;
        if labels {
            if let Some(label) = e.label() {
                let bytes = codec.encode(SchemaKind::Label, &topics.labels, &label)?;
                let key = label.account_id.clone().unwrap_or_default();
                send_blocking(
                    producer,
                    BaseRecord::to(&topics.labels)
                        .key(key.as_str())
                        .payload(bytes.as_slice()),
                )
                .await?;
            }
        }
        on_sent(&e);
    }
    Ok(())
}

/// Sends, waiting while the local queue is full.
pub async fn send_blocking<'a>(
    producer: &LoadProducer,
    mut record: BaseRecord<'a, str, [u8]>,
) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) => return Err(e).context("producing"),
        }
    }
}

/// Runs the stream through the in-memory feature store (the serving code path) and writes one
/// JSON line per event: ids, ground truth, and every model input by name.
async fn write_training_data(
    mut events: impl Iterator<Item = SimEvent>,
    path: &PathBuf,
) -> anyhow::Result<u64> {
    let store = MemoryStore::new(StoreLimits::default());
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    // First line: the input names; then one line per event with its inputs in that order.
    let names: Vec<&str> = inputs::input_names().collect();
    writeln!(out, "{}", serde_json::json!({ "inputs": names }))?;
    let mut written = 0;
    let mut row = vec![0f32; N_INPUTS];
    loop {
        let batch: Vec<SimEvent> = events.by_ref().take(256).collect();
        if batch.is_empty() {
            break;
        }
        let facts: Vec<_> = batch.iter().map(|e| inputs::facts(&e.event)).collect();
        let features = store.enrich_batch(&facts).await?;
        for (e, f) in batch.iter().zip(&features) {
            inputs::fill_row(&e.event, f, &mut row);
            let (event_type, kind, vendor) = match &e.event {
                Event::CaptureSession(c) => ("capture_session", "", c.vendor.vendor.as_str()),
                Event::Transaction(t) => ("transaction", t.kind.as_str(), ""),
            };
            let line = serde_json::json!({
                "event_id": e.event.event_id(),
                "event_type": event_type,
                "kind": kind,
                "vendor": vendor,
                "scenario": e.scenario.as_str(),
                "fraud": e.scenario.is_fraud() as u8,
                "region": e.event.region(),
                "x": row,
            });
            writeln!(out, "{line}")?;
        }
        written += batch.len() as u64;
    }
    out.flush()?;
    Ok(written)
}

fn parse_subject_strategy(s: &str) -> Result<riskstream_events::SubjectStrategy, String> {
    riskstream_events::SubjectStrategy::parse(s).ok_or_else(|| {
        format!(
            "`{s}` is not one of {}",
            riskstream_events::SubjectStrategy::NAMES
        )
    })
}

/// Wall-clock time, epoch ms.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
