//! `riskstream bench`: end-to-end throughput and latency against a real broker and Redis,
//! with a passthrough worker (consume → produce the same bytes) measured in the same run as
//! the ceiling. Workers run as child processes (`riskstream run`), so their peak RSS is theirs
//! alone. `scripts/bench` starts tansu and redis-server on loopback and calls this.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::Producer;
use rdkafka::ClientConfig;
use riskstream_events::Codec;
use riskstream_pipeline::Topics;
use riskstream_sim::{SimConfig, Simulator};

use crate::config::parse_kafka_prop;
use crate::kafka_util;
use crate::simulate::produce;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "RISKSTREAM_BROKERS", default_value = "localhost:9092")]
    pub brokers: String,
    /// Redis URL for the feature store.
    #[arg(
        long,
        env = "RISKSTREAM_REDIS",
        default_value = "redis://127.0.0.1:6379/"
    )]
    pub redis: String,
    /// Events for the throughput runs (pre-produced, then drained by the worker).
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Partitions per input topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Offered rate for the latency run, events/s.
    #[arg(long, default_value_t = 10_000.0)]
    pub latency_rate: f64,
    /// Length of the latency run, seconds.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Model directory.
    #[arg(long, default_value = "models")]
    pub models: String,
    /// Extra librdkafka properties for the workers and clients (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub kafka: Vec<String>,
}

/// A worker child process.
struct Worker {
    child: Child,
    metrics_port: u16,
}

impl Worker {
    /// Per-stage costs from the worker's own metrics: mean batch size, and per batch and per
    /// event the feature-store round trip and each model's inference call.
    fn stage_report(&self) -> String {
        let body = http_get(self.metrics_port, "/metrics").unwrap_or_default();
        let value = |name: &str| -> f64 {
            body.lines()
                .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let batches = value("riskstream_batch_size_count");
        let events = value("riskstream_batch_size_sum");
        if batches == 0.0 {
            return "no batches recorded".into();
        }
        let store = value("riskstream_feature_store_seconds_sum");
        let mut out = format!(
            "mean batch {:.0} events; feature store {:.2} ms/batch = {:.1} us/event",
            events / batches,
            1e3 * store / batches,
            1e6 * store / events
        );
        for model in ["behavioral", "ato"] {
            let sum = value(&format!(
                "riskstream_inference_seconds_sum{{model=\"{model}\"}}"
            ));
            let count = value(&format!(
                "riskstream_inference_seconds_count{{model=\"{model}\"}}"
            ));
            if count > 0.0 {
                out += &format!("; {model} {:.3} ms/call", 1e3 * sum / count);
            }
        }
        out
    }

    fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    }

    fn stop(mut self) -> anyhow::Result<()> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        if !status.success() {
            bail!("worker exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let extra = args
        .kafka
        .iter()
        .map(|p| parse_kafka_prop(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let run_id = format!("bench{}", std::process::id());
    let topics = Topics {
        capture_sessions: format!("{run_id}-capture-sessions"),
        transactions: format!("{run_id}-transactions"),
        verdicts: format!("{run_id}-verdicts"),
        dead_letters: format!("{run_id}-dlq"),
        labels: format!("{run_id}-labels"),
    };
    let passthrough_out = format!("{run_id}-passthrough-out");
    let p = args.partitions;
    kafka_util::create_topics(
        &args.brokers,
        &extra,
        &[
            (&topics.capture_sessions, p),
            (&topics.transactions, p),
            (&topics.verdicts, p),
            (&topics.dead_letters, 1),
            (&topics.labels, 1),
            (&passthrough_out, p),
        ],
    )
    .await?;
    println!(
        "riskstream bench: broker {}, redis {}, {} partitions per input topic, 1 worker process",
        args.brokers, args.redis, p
    );

    // Pre-produce the throughput input.
    let codec = Codec::registry_free();
    let (producer, _) = kafka_util::load_producer(&args.brokers, &extra)?;
    let started = Instant::now();
    produce(
        &producer,
        &codec,
        &topics,
        Simulator::new(SimConfig::for_events(args.events, 101)),
        args.events,
        None,
        false,
        |_| {},
    )
    .await?;
    let producer = flush(producer).await?;
    println!(
        "  loaded {} events in {:.1} s",
        args.events,
        started.elapsed().as_secs_f64()
    );

    // 1. Passthrough ceiling.
    let worker = spawn_worker(
        &args,
        &topics,
        &passthrough_out,
        &format!("{run_id}-pass"),
        true,
    )?;
    let pass = drain(
        args.brokers.clone(),
        extra.clone(),
        passthrough_out.clone(),
        args.events,
        None,
    )
    .await?;
    println!(
        "  passthrough       {:>9.0} events/s   worker peak RSS {:>6.1} MB",
        pass.throughput,
        worker.peak_rss_mb()
    );
    let producer = latency_run(
        &args,
        &extra,
        &topics,
        &passthrough_out,
        producer,
        303,
        "passthrough",
    )
    .await?;
    worker.stop()?;

    // 2. Full pipeline: decode, Redis features, both models, policy, verdicts.
    let worker = spawn_worker(
        &args,
        &topics,
        &topics.verdicts,
        &format!("{run_id}-score"),
        false,
    )?;
    let full = drain(
        args.brokers.clone(),
        extra.clone(),
        topics.verdicts.clone(),
        args.events,
        None,
    )
    .await?;
    println!(
        "  pipeline          {:>9.0} events/s   worker peak RSS {:>6.1} MB   ratio pipeline/passthrough {:.2}",
        full.throughput,
        worker.peak_rss_mb(),
        full.throughput / pass.throughput
    );
    println!("                    {}", worker.stage_report());

    // 3. Latency at a fixed offered rate, same worker (now caught up).
    let producer = latency_run(
        &args,
        &extra,
        &topics,
        &topics.verdicts,
        producer,
        202,
        "pipeline",
    )
    .await?;
    let rss = worker.peak_rss_mb();
    println!(
        "                    whole scoring worker: {}",
        worker.stage_report()
    );
    worker.stop()?;
    println!("  worker peak RSS over the whole scoring run {rss:.1} MB");
    tokio::task::spawn_blocking(move || drop(producer)).await?;
    Ok(())
}

/// Offers `latency_rate` events/s for `latency_seconds` to the running worker and prints
/// produce → output-read latency percentiles (matched by the `riskstream.event_id` header).
async fn latency_run(
    args: &BenchArgs,
    extra: &[(String, String)],
    topics: &Topics,
    out_topic: &str,
    producer: kafka_util::LoadProducer,
    seed: u64,
    label: &str,
) -> anyhow::Result<kafka_util::LoadProducer> {
    let n = (args.latency_rate * args.latency_seconds as f64) as u64;
    let sent: Arc<Mutex<HashMap<String, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(n as usize)));
    let reader = tokio::spawn(drain(
        args.brokers.clone(),
        extra.to_vec(),
        out_topic.to_string(),
        n,
        Some(sent.clone()),
    ));
    tokio::time::sleep(Duration::from_secs(4)).await; // let the reader join before timing starts
    let codec = Codec::registry_free();
    produce(
        &producer,
        &codec,
        topics,
        Simulator::new(SimConfig::for_events(n, seed)),
        n,
        Some(args.latency_rate),
        false,
        |e| {
            sent.lock()
                .expect("sent")
                .insert(e.event.event_id().to_string(), Instant::now());
        },
    )
    .await?;
    let lat = reader.await??;
    let h = lat.latency.as_ref().context("latency histogram")?;
    println!(
        "  latency {label:<11} @ {:.0}/s   p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms   ({} events, produce → output read)",
        args.latency_rate,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.9) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    );
    Ok(producer)
}

async fn flush(producer: kafka_util::LoadProducer) -> anyhow::Result<kafka_util::LoadProducer> {
    let (producer, r) = tokio::task::spawn_blocking(move || {
        let r = producer.flush(Duration::from_secs(120));
        (producer, r)
    })
    .await?;
    r.context("flushing")?;
    Ok(producer)
}

fn spawn_worker(
    args: &BenchArgs,
    topics: &Topics,
    out: &str,
    group: &str,
    passthrough: bool,
) -> anyhow::Result<Worker> {
    let exe = std::env::current_exe()?;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = Command::new(exe);
    cmd.args([
        "run",
        "--brokers",
        &args.brokers,
        "--redis",
        &args.redis,
        "--group",
        group,
        "--models",
        &args.models,
    ])
    .args([
        "--topic-capture-sessions",
        &topics.capture_sessions,
        "--topic-transactions",
        &topics.transactions,
    ])
    .args([
        "--topic-verdicts",
        out,
        "--topic-dlq",
        &topics.dead_letters,
        "--topic-labels",
        &topics.labels,
        "--metrics-addr",
        &format!("127.0.0.1:{metrics_port}"),
    ])
    .args(["--key-prefix", group])
    .args([
        "-X",
        "consumer.session.timeout.ms=6000",
        "-X",
        "consumer.heartbeat.interval.ms=2000",
        "-X",
        "consumer.fetch.wait.max.ms=2",
    ]);
    for x in &args.kafka {
        cmd.args(["-X", x]);
    }
    if passthrough {
        cmd.arg("--passthrough");
    }
    let child = cmd
        .env("RISKSTREAM_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting a worker")?;
    Ok(Worker {
        child,
        metrics_port,
    })
}

struct Drained {
    throughput: f64,
    latency: Option<hdrhistogram::Histogram<u64>>,
}

/// Reads `n` records from `topic`; throughput is measured from the first record read to the
/// last (so group-join time does not count). With `sent`, records latency per event id.
async fn drain(
    brokers: String,
    extra: Vec<(String, String)>,
    topic: String,
    n: u64,
    sent: Option<Arc<Mutex<HashMap<String, Instant>>>>,
) -> anyhow::Result<Drained> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<Drained> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &brokers)
            .set("group.id", format!("{topic}-reader-{}", std::process::id()))
            .set("auto.offset.reset", if sent.is_some() { "latest" } else { "earliest" })
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "2000")
            .set("fetch.wait.max.ms", "2");
        for (k, v) in &extra {
            cfg.set(k, v);
        }
        let consumer: BaseConsumer = cfg.create()?;
        consumer.subscribe(&[&topic])?;
        let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let (mut count, mut first, mut last) = (0u64, None, Instant::now());
        let idle_limit = Duration::from_secs(120);
        let mut idle_since = Instant::now();
        while count < n {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(msg)) => {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = now;
                    idle_since = now;
                    count += 1;
                    if let Some(sent) = &sent {
                        let id = msg.headers().and_then(|h| h.iter().find(|h| h.key == "riskstream.event_id")).and_then(|h| h.value);
                        if let Some(id) = id.and_then(|v| std::str::from_utf8(v).ok()) {
                            if let Some(t) = sent.lock().expect("sent").get(id) {
                                let _ = hist.record(now.saturating_duration_since(*t).as_micros().max(1) as u64);
                            }
                        }
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "bench reader"),
                None => {
                    if idle_since.elapsed() > idle_limit {
                        bail!("read {count} of {n} records from {topic}, then nothing for {idle_limit:?}");
                    }
                }
            }
        }
        let secs = first.map(|f| last.duration_since(f).as_secs_f64()).unwrap_or(0.0);
        drop(consumer);
        Ok(Drained {
            throughput: if secs > 0.0 { (count.saturating_sub(1)) as f64 / secs } else { f64::NAN },
            latency: sent.map(|_| hist),
        })
    })
    .await?
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}
