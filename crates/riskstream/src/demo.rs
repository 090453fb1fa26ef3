//! `riskstream demo`: simulator → embedded Kafka → workers → verdicts, in one process, with a
//! summary of throughput, latency and decisions by scenario.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use riskstream_events::{Codec, SchemaKind, Verdict};
use riskstream_models::Slot;
use riskstream_pipeline::{metrics as m, Topics, WorkerConfig};
use riskstream_sim::{Scenario, SimConfig, Simulator};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Settings, StoreChoice};
use crate::embedded::EmbeddedKafka;
use crate::kafka_util;
use crate::run::{build_scorer, open_store};
use crate::simulate::{produce, produce_events, send_blocking};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Number of simulated events (at least 1). Then the steps of journeys already under way
    /// follow (a slow takeover's payouts hours after its sign-in, a new phone's follow-ups; no
    /// new journey starts), so families are scored on whole journeys: the summary's event count
    /// includes them (about 2 000 for the default).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events: u64,
    /// Events per second offered by the simulator (0 = as fast as possible).
    #[arg(long, default_value_t = 5_000.0)]
    pub rate: f64,
    /// Worker tasks in the consumer group. The embedded mock broker rebalances slowly (seconds,
    /// with redelivery), so the default is one; use a real broker to watch a group scale out.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..64))]
    pub workers: u64,
    /// Malformed records to inject (they must end up in the dead-letter topic).
    #[arg(long, default_value_t = 3)]
    pub bad_records: u64,
    /// Use Redis for features instead of the in-memory store.
    #[arg(long)]
    pub redis: Option<String>,
    /// Model directory.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Simulator seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Days of customers' history emitted first (a login on each customer's device and a
    /// payment to each of its payees, spread over these days before the scenarios start), so the
    /// store knows established customers' devices and payees; counted in --events. 0: every
    /// account starts cold.
    #[arg(long, default_value_t = 14)]
    pub warmup_days: u32,
    /// Serve Prometheus metrics here while the demo runs (e.g. 127.0.0.1:9464).
    #[arg(long)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Also write every verdict to this file, one JSON object per line with the event's
    /// simulated family (`scenario`) beside the decision, friction, scores and reason codes.
    #[arg(long)]
    pub verdicts_jsonl: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
}

#[derive(Debug, Serialize)]
struct Summary {
    events: u64,
    verdicts: u64,
    dead_letters: u64,
    duplicates: u64,
    elapsed_s: f64,
    throughput_eps: f64,
    latency_ms: Latency,
    decisions: BTreeMap<String, u64>,
    by_scenario: BTreeMap<String, BTreeMap<String, u64>>,
    /// Shares over every fraud family / every legitimate family together (warm-up history left
    /// out: it is there so that the store knows customers' devices and payees).
    outcome: Outcome,
    degraded: u64,
    feature_store: String,
}

/// What a fraud team reads first: fraud stopped, legitimate customers stopped and blocked
/// (stopped = any decision other than ALLOW).
#[derive(Debug, Default, serde::Serialize)]
struct Outcome {
    fraud_events: u64,
    fraud_stopped: f64,
    legit_events: u64,
    legit_stopped: f64,
    legit_blocked: f64,
}

impl Outcome {
    fn of(by_scenario: &BTreeMap<String, BTreeMap<String, u64>>) -> Outcome {
        let (mut fraud, mut fraud_stopped, mut legit, mut legit_stopped, mut legit_blocked) =
            (0, 0, 0, 0, 0);
        for (scenario, d) in by_scenario {
            let total: u64 = d.values().sum();
            let allowed = d.get("ALLOW").copied().unwrap_or(0);
            let family = Scenario::parse(scenario);
            if family == Some(Scenario::Warmup) {
                continue; // accounts' history before the scenarios: not counted
            }
            if family.is_some_and(Scenario::is_fraud) {
                fraud += total;
                fraud_stopped += total - allowed;
            } else {
                legit += total;
                legit_stopped += total - allowed;
                legit_blocked += d.get("BLOCK").copied().unwrap_or(0);
            }
        }
        let share = |n: u64, of: u64| n as f64 / of.max(1) as f64;
        Outcome {
            fraud_events: fraud,
            fraud_stopped: share(fraud_stopped, fraud),
            legit_events: legit,
            legit_stopped: share(legit_stopped, legit),
            legit_blocked: share(legit_blocked, legit),
        }
    }
}

/// What the verdict reader has seen.
#[derive(Default)]
struct Seen {
    verdicts: HashMap<String, Verdict>,
    duplicates: u64,
    latency: Option<hdrhistogram::Histogram<u64>>,
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let kafka = EmbeddedKafka::start(1)?;
    let topics = Topics::default();
    for (t, p) in [
        (&topics.capture_sessions, 4),
        (&topics.transactions, 4),
        (&topics.verdicts, 8),
        (&topics.dead_letters, 1),
        (&topics.labels, 2),
    ] {
        kafka.create_topic(t, p)?;
    }
    let brokers = kafka.bootstrap_servers().to_string();
    if let Some(addr) = args.metrics_addr {
        m::install_exporter(addr).await?;
    }
    let latency_props = vec![("fetch.wait.max.ms".to_string(), "5".to_string())];
    let mut worker = WorkerConfig::new(&brokers, "riskstream-demo");
    // As for `run` (see its --revoke-drain-ms); the demo reads only the environment variable.
    if let Some(ms) = std::env::var("RISKSTREAM_REVOKE_DRAIN_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        worker.revoke_drain = Duration::from_millis(ms);
    }
    // The mock coordinator can hold a join until a member's session times out when members
    // join at the same instant: keep sessions short and stagger the workers' start.
    worker.kafka = vec![
        ("consumer.fetch.wait.max.ms".to_string(), "5".to_string()),
        (
            "consumer.session.timeout.ms".to_string(),
            "6000".to_string(),
        ),
        (
            "consumer.heartbeat.interval.ms".to_string(),
            "1000".to_string(),
        ),
    ];
    let settings = Settings {
        worker,
        store: match &args.redis {
            Some(url) => StoreChoice::Redis(url.clone()),
            None => StoreChoice::Memory,
        },
        key_prefix: format!("riskstream-demo-{}", std::process::id()),
        models: args.models.clone(),
        model_poll: Duration::ZERO,
        metrics_addr: None,
        metrics_addr_is_default: false,
        store_deadline: Duration::from_millis(200),
        store_writeback_max: 100_000,
        store_account_cache_mb: 0,
        broker_deadline: Duration::ZERO,
    };
    let store = open_store(&settings).await?;
    let scorer = Arc::new(build_scorer(&settings, store)?);
    let store_name = match &settings.store {
        StoreChoice::Memory => "in-memory".to_string(),
        StoreChoice::Redis(url) => format!("redis {}", crate::config::redact_url(url)),
    };
    eprintln!(
        "demo: embedded Kafka at {brokers}; {} workers; feature store {store_name}; models behavioral {} / ato {}",
        args.workers,
        scorer.serving.current().champion(Slot::Behavioral).version(),
        scorer.serving.current().champion(Slot::Ato).version()
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..args.workers {
        // One stop signal per worker: they leave the group one after another (no commit races).
        let (tx, rx) = watch::channel(false);
        workers.push((
            tx,
            tokio::spawn(riskstream_pipeline::run(
                settings.worker.clone(),
                scorer.clone(),
                rx,
            )),
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Readers: verdicts and dead letters.
    let sent: Arc<Mutex<HashMap<String, (Scenario, Instant)>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(args.events as usize)));
    let seen = Arc::new(Mutex::new(Seen {
        latency: Some(hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3)?),
        ..Default::default()
    }));
    let dead = Arc::new(AtomicU64::new(0));
    let codec = Arc::new(Codec::registry_free());
    let verdict_reader = kafka_util::reader(&brokers, &latency_props, &topics.verdicts)?;
    let dlq_reader = kafka_util::reader(&brokers, &latency_props, &topics.dead_letters)?;
    let reader_task = {
        let (sent, seen, codec) = (sent.clone(), seen.clone(), codec.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = verdict_reader.recv() => m,
                    _ = stop.changed() => return verdict_reader,
                };
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "verdict reader");
                        continue;
                    }
                };
                let received = Instant::now();
                let v: Verdict = match codec
                    .decode_as(SchemaKind::Verdict, msg.payload().unwrap_or(&[]))
                {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::error!(error = %e, "a verdict does not decode against the verdict schema");
                        continue;
                    }
                };
                let sent_at = sent
                    .lock()
                    .expect("sent map")
                    .get(&v.event_id)
                    .map(|(_, t)| *t);
                let mut seen = seen.lock().expect("seen");
                if let Some(t) = sent_at {
                    let us = received.saturating_duration_since(t).as_micros().max(1) as u64;
                    let _ = seen.latency.as_mut().expect("histogram").record(us);
                }
                if seen.verdicts.insert(v.event_id.clone(), v).is_some() {
                    seen.duplicates += 1;
                }
            }
        })
    };
    let dlq_task = {
        let dead = dead.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = dlq_reader.recv() => if m.is_ok() { dead.fetch_add(1, Ordering::Relaxed); },
                    _ = stop.changed() => return dlq_reader,
                }
            }
        })
    };

    // Progress.
    let progress = {
        let (seen, dead, sent) = (seen.clone(), dead.clone(), sent.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let start = Instant::now();
            loop {
                tick.tick().await;
                let produced = sent.lock().expect("sent").len();
                let verdicts = seen.lock().expect("seen").verdicts.len();
                eprintln!(
                    "demo: {:>5.1}s  produced {produced:>8}  verdicts {verdicts:>8}  dead letters {:>3}",
                    start.elapsed().as_secs_f64(),
                    dead.load(Ordering::Relaxed)
                );
            }
        })
    };

    // Produce.
    let started = Instant::now();
    let (producer, counter) = kafka_util::load_producer(&brokers, &[])?;
    // Event times (those of the journeys finished after the cut too) end now: none is in the
    // future, and the newest are near the records' broker timestamps.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let sim = Simulator::new(
        SimConfig::for_events(args.events, args.seed)
            .with_warmup(i64::from(args.warmup_days) * 86_400_000)
            .finishing_at(args.events, now),
    );
    let rate = if args.rate > 0.0 {
        Some(args.rate)
    } else {
        None
    };
    // Half the stream, then the malformed records, then the rest: the events around them must
    // still get verdicts.
    let first_half = args.events / 2;
    let mut sim = sim;
    let on_sent = |e: &riskstream_sim::SimEvent| {
        sent.lock()
            .expect("sent")
            .insert(e.event.event_id().to_string(), (e.scenario, Instant::now()));
    };
    for (part, n) in [(0, first_half), (1, args.events - first_half)] {
        sim = produce(&producer, &codec, &topics, sim, n, rate, false, &on_sent).await?;
        if part == 0 {
            // Not Avro at all, a truncated header, an unknown schema fingerprint.
            let bad: [&[u8]; 3] = [
                b"{\"not\":\"avro\"}",
                &[0xC3, 0x01, 0x12],
                &[0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0],
            ];
            for i in 0..args.bad_records {
                let payload = bad[(i % 3) as usize];
                send_blocking(
                    &producer,
                    BaseRecord::to(&topics.transactions)
                        .key("bad")
                        .payload(payload),
                )
                .await?;
            }
        }
    }
    // Then the steps of journeys under way (a slow takeover's payouts hours after its sign-in),
    // starting none: families are scored on whole journeys, not on where the stream was cut.
    let finishing = std::iter::from_fn(|| sim.next_planned());
    produce_events(&producer, &codec, &topics, finishing, rate, false, &on_sent).await?;
    let producer = tokio::task::spawn_blocking(move || {
        let r = producer.flush(Duration::from_secs(30));
        (producer, r)
    })
    .await?;
    producer.1.context("flushing the demo producer")?;
    tokio::task::spawn_blocking(move || drop(producer.0)).await?;
    if counter.failed.load(Ordering::Relaxed) > 0 {
        bail!("the embedded broker refused some events");
    }

    // Wait for every verdict and dead letter.
    let expected = sent.lock().expect("sent").len() as u64;
    let deadline = Instant::now() + Duration::from_secs(60 + expected / 1000);
    let mut last_verdict_at = Instant::now();
    loop {
        let n = seen.lock().expect("seen").verdicts.len() as u64;
        let d = dead.load(Ordering::Relaxed);
        if n >= expected && d >= args.bad_records {
            last_verdict_at = Instant::now();
            break;
        }
        if Instant::now() > deadline {
            eprintln!(
                "demo: timed out waiting for verdicts ({n} of {expected}, {d} of {} dead letters)",
                args.bad_records
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = last_verdict_at.duration_since(started).as_secs_f64();
    for (stop, w) in workers {
        let _ = stop.send(true);
        w.await??;
    }
    let _ = stop_tx.send(true);
    progress.abort();
    let readers = (reader_task.await?, dlq_task.await?);
    // Dropping a consumer blocks while it leaves its group.
    tokio::task::spawn_blocking(move || drop(readers)).await?;

    let seen = seen.lock().expect("seen");
    let sent = sent.lock().expect("sent");
    let hist = seen.latency.as_ref().expect("histogram");
    let mut decisions = BTreeMap::new();
    let mut by_scenario: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut degraded = 0;
    for v in seen.verdicts.values() {
        *decisions
            .entry(v.decision.as_str().to_string())
            .or_default() += 1;
        degraded += v.degraded as u64;
        if let Some((scenario, _)) = sent.get(&v.event_id) {
            *by_scenario
                .entry(scenario.as_str().to_string())
                .or_default()
                .entry(v.decision.as_str().to_string())
                .or_default() += 1;
        }
    }
    let summary = Summary {
        events: expected,
        verdicts: seen.verdicts.len() as u64,
        dead_letters: dead.load(Ordering::Relaxed),
        duplicates: seen.duplicates,
        elapsed_s: elapsed,
        throughput_eps: seen.verdicts.len() as f64 / elapsed.max(1e-9),
        latency_ms: Latency {
            p50: hist.value_at_quantile(0.5) as f64 / 1000.0,
            p99: hist.value_at_quantile(0.99) as f64 / 1000.0,
            max: hist.max() as f64 / 1000.0,
        },
        decisions,
        outcome: Outcome::of(&by_scenario),
        by_scenario,
        degraded,
        feature_store: store_name,
    };
    print_summary(&summary);
    if let Some(path) = &args.verdicts_jsonl {
        write_verdicts(path, &seen.verdicts, &sent)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.summary_json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    drop(kafka);
    if summary.verdicts < summary.events {
        bail!(
            "{} of {} events got no verdict",
            summary.events - summary.verdicts,
            summary.events
        );
    }
    Ok(())
}

fn write_verdicts(
    path: &std::path::Path,
    verdicts: &HashMap<String, Verdict>,
    sent: &HashMap<String, (Scenario, Instant)>,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut ids: Vec<&String> = verdicts.keys().collect();
    ids.sort();
    for id in ids {
        let v = &verdicts[id];
        let line = serde_json::json!({
            "event_id": v.event_id,
            "scenario": sent.get(id).map(|(s, _)| s.as_str()),
            "event_type": v.event_type.as_str(),
            "decision": v.decision.as_str(),
            "friction": v.friction,
            "scores": v.scores.iter().map(|s| serde_json::json!({"model": s.model, "score": s.score, "shadow": s.shadow})).collect::<Vec<_>>(),
            "reasons": v.reasons,
        });
        writeln!(out, "{line}")?;
    }
    out.flush()
}

fn print_summary(s: &Summary) {
    println!();
    println!("riskstream demo summary");
    println!("  events              {}", s.events);
    println!(
        "  verdicts            {} (every event: {})",
        s.verdicts,
        if s.verdicts == s.events { "yes" } else { "NO" }
    );
    println!("  dead letters        {}", s.dead_letters);
    println!("  redelivered         {}", s.duplicates);
    println!("  feature store       {}", s.feature_store);
    println!(
        "  throughput          {:.0} events/s over {:.1} s (offered rate limits it; see --rate)",
        s.throughput_eps, s.elapsed_s
    );
    println!(
        "  latency (produce → verdict read)  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        s.latency_ms.p50, s.latency_ms.p99, s.latency_ms.max
    );
    println!(
        "  decisions           {}",
        s.decisions
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!(
        "  {:<15} {:>8} {:>8} {:>10} {:>8} {:>8}   stopped*",
        "family", "events", "ALLOW", "CHALLENGE", "REVIEW", "BLOCK"
    );
    for (scenario, d) in &s.by_scenario {
        let get = |k: &str| d.get(k).copied().unwrap_or(0);
        let total: u64 = d.values().sum();
        let stopped = total - get("ALLOW");
        println!(
            "  {:<15} {:>8} {:>8} {:>10} {:>8} {:>8}   {:>5.1}%",
            scenario,
            total,
            get("ALLOW"),
            get("CHALLENGE"),
            get("REVIEW"),
            get("BLOCK"),
            100.0 * stopped as f64 / total.max(1) as f64
        );
    }
    println!("  * stopped = challenged, sent to review or blocked; warm-up = customers' history before the scenarios, not in the totals");
    let o = &s.outcome;
    println!(
        "  fraud stopped {:.1}% of {} events; legitimate stopped {:.2}%, blocked {:.2}% of {} events",
        100.0 * o.fraud_stopped,
        o.fraud_events,
        100.0 * o.legit_stopped,
        100.0 * o.legit_blocked,
        o.legit_events
    );
}
