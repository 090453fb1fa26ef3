//! Black-box tests: the `riskstream` binary against a real tansu broker and a real
//! `redis-server`, both started on free loopback ports by `riskstream-testkit`.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use riskstream_events::{dlq_headers, Codec, SchemaKind, Verdict};
use riskstream_testkit::{free_port, metric_names, repo_root, Broker, RedisCluster, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_riskstream");

/// A broker with riskstream's topics, and a Redis.
struct Env {
    broker: Broker,
    redis: RedisServer,
    /// The feature store the workers use: `redis`, or a Redis Cluster.
    store_url: String,
    _cluster: Option<RedisCluster>,
}

impl Env {
    fn start() -> Env {
        let broker = Broker::start();
        for (t, p) in [
            ("capture-sessions", 2),
            ("transactions", 2),
            ("verdicts", 2),
            ("verdicts-dlq", 1),
            ("labels", 1),
        ] {
            broker.create_topic(t, p);
        }
        let redis = RedisServer::start();
        Env {
            broker,
            store_url: redis.url(),
            redis,
            _cluster: None,
        }
    }

    /// Like [`Env::start`], with the feature store on a 3-node Redis Cluster.
    fn start_with_cluster() -> Env {
        let mut env = Env::start();
        let cluster = RedisCluster::start();
        env.store_url = cluster.url();
        env._cluster = Some(cluster);
        env
    }

    fn simulate(&self, events: u64, seed: u64) {
        let out = Command::new(BIN)
            .args([
                "simulate",
                "--brokers",
                &self.broker.bootstrap(),
                "--events",
                &events.to_string(),
                "--seed",
                &seed.to_string(),
            ])
            .output()
            .expect("run riskstream simulate");
        assert!(
            out.status.success(),
            "simulate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `riskstream run` with test-friendly group timings (tansu's join waits half the session timeout).
    fn worker(&self, metrics_port: Option<u16>) -> Child {
        self.worker_with(metrics_port, &repo_root().join("models"), &[])
    }

    /// A worker on another models directory, with extra flags.
    fn worker_with(
        &self,
        metrics_port: Option<u16>,
        models: &std::path::Path,
        extra: &[&str],
    ) -> Child {
        let metrics = metrics_port
            .map(|p| format!("127.0.0.1:{p}"))
            .unwrap_or_else(|| "off".into());
        Command::new(BIN)
            .args([
                "run",
                "--brokers",
                &self.broker.bootstrap(),
                "--redis",
                &self.store_url,
                "--group",
                "e2e",
            ])
            .args([
                "--models",
                &models.to_string_lossy(),
                "--metrics-addr",
                &metrics,
            ])
            .args(extra)
            .args([
                "-X",
                "consumer.session.timeout.ms=6000",
                "-X",
                "consumer.heartbeat.interval.ms=2000",
                "-X",
                "consumer.fetch.wait.max.ms=100",
            ])
            .env("RISKSTREAM_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start riskstream run")
    }

    fn consumer(&self, topic: &str) -> BaseConsumer {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.broker.bootstrap())
            .set("group.id", format!("reader-{topic}-{}", free_port()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "2000")
            .set("fetch.wait.max.ms", "100")
            .create()
            .expect("consumer");
        c.subscribe(&[topic]).expect("subscribe");
        c
    }
}

/// Reads verdicts until `want` distinct event ids were seen or `timeout` passes.
/// Every verdict must decode against the verdict schema.
fn read_verdicts(
    consumer: &BaseConsumer,
    want: usize,
    timeout: Duration,
    seen: &mut HashSet<String>,
) -> Vec<Verdict> {
    let codec = Codec::registry_free();
    let deadline = Instant::now() + timeout;
    let mut all = Vec::new();
    while seen.len() < want && Instant::now() < deadline {
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            let msg = msg.expect("consume verdict");
            let v: Verdict = codec
                .decode_as(SchemaKind::Verdict, msg.payload().expect("payload"))
                .unwrap_or_else(|e| {
                    panic!("verdict at offset {} does not decode: {e}", msg.offset())
                });
            assert_eq!(
                msg.key(),
                Some(v.account_id.as_bytes()),
                "verdicts are keyed by account"
            );
            seen.insert(v.event_id.clone());
            all.push(v);
        }
    }
    all
}

fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("worker did not exit within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn expected_ids(seed: u64, n: u64) -> HashSet<String> {
    (1..=n).map(|i| format!("ev-{seed}-{i}")).collect()
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn every_event_gets_exactly_one_distinct_verdict() {
    let env = Env::start();
    let n = 3000;
    env.simulate(n, 21);
    let metrics_port = free_port();
    let mut worker = env.worker(Some(metrics_port));
    let verdicts = env.consumer("verdicts");
    let mut seen = HashSet::new();
    let all = read_verdicts(&verdicts, n as usize, Duration::from_secs(120), &mut seen);
    assert_eq!(
        seen,
        expected_ids(21, n),
        "verdict event ids must be exactly the produced ones"
    );
    // Scored with both models, with features logged, and real decisions.
    assert!(all.iter().any(|v| v.scores[0].model == "behavioral"));
    assert!(all.iter().any(|v| v.scores[0].model == "ato"));
    assert!(all.iter().all(|v| !v.features.is_empty() && !v.degraded));
    assert!(all
        .iter()
        .any(|v| v.decision != riskstream_events::Decision::Allow));
    assert!(all
        .iter()
        .any(|v| v.decision == riskstream_events::Decision::Allow));

    let metrics = http_get(metrics_port, "/metrics");
    for name in [
        "riskstream_consumed_total",
        "riskstream_produced_total",
        "riskstream_decisions_total",
        "riskstream_feature_store_seconds",
        "riskstream_inference_seconds",
        "riskstream_batch_size",
    ] {
        assert!(
            metrics.contains(name),
            "metric {name} missing from:\n{metrics}"
        );
    }
    // The live scrape passes Prometheus' own linter: HELP and TYPE for every metric, names
    // and suffixes as Prometheus expects (promtool comes with Debian's `prometheus` package,
    // installed by scripts/install-test-deps).
    let body = metrics
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .expect("an HTTP response");
    for name in [
        "riskstream_consumed_total",
        "riskstream_stage_seconds",
        "riskstream_verdict_bytes",
        "riskstream_rebalances_total",
        "riskstream_in_flight_batches",
        "riskstream_build_info",
    ] {
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{body}"
        );
    }
    // Series alerts divide by exist from the start (zero until the first such event).
    assert!(
        body.contains("riskstream_degraded_total{reason=\"feature_store_unavailable\"} 0"),
        "degraded series initialised:\n{body}"
    );
    assert!(body.contains("riskstream_rebalances_total{kind=\"assign\"}"));
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (run scripts/install-test-deps)");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The dashboard and the alert rules query only series a live worker exports (the lag
    // gauge comes with librdkafka's statistics, every 5 s: wait for it).
    let mut wanted: Vec<(String, &str)> = Vec::new();
    for file in [
        "deploy/grafana/riskstream.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        wanted.extend(metric_names(&text).into_iter().map(|name| (name, file)));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let scrape = http_get(metrics_port, "/metrics");
        let missing: Vec<&(String, &str)> = wanted
            .iter()
            .filter(|(name, _)| {
                !scrape.lines().any(|l| {
                    l.starts_with(name.as_str())
                        && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
                })
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queried by the dashboard / alert rules but not exported by a live worker: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Health on the same address: alive, and ready with its state in the body.
    let (status, body) = http_status(metrics_port, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = http_status(metrics_port, "/readyz");
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("readiness JSON");
    assert_eq!(ready["broker"], "up", "{body}");
    assert_eq!(ready["models_loaded"], true, "{body}");
    assert_eq!(ready["feature_store"], "ok", "{body}");
    assert!(ready["assigned_partitions"].as_i64().unwrap() > 0, "{body}");
    let status = sigterm(&mut worker);
    assert!(
        status.success(),
        "worker exited with {status} after SIGTERM"
    );
}

/// Status code and body of a GET.
fn http_status(port: u16, path: &str) -> (u16, String) {
    let response = http_get(port, path);
    let status = response[9..12].parse().expect("status code");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn an_unreachable_broker_makes_the_worker_unready_but_alive() {
    let redis = RedisServer::start();
    let metrics_port = free_port();
    let nobody = free_port(); // nothing listens here
    let mut worker = Command::new(BIN)
        .args(["run", "--brokers", &format!("127.0.0.1:{nobody}")])
        .args(["--redis", &redis.url(), "--group", "unready"])
        .args(["--models", &repo_root().join("models").to_string_lossy()])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .env("RISKSTREAM_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start riskstream run");
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        if std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_ok() {
            let (status, body) = http_status(metrics_port, "/readyz");
            assert_eq!(status, 503, "not ready without a broker: {body}");
            assert_eq!(http_status(metrics_port, "/healthz").0, 200, "but alive");
            if body.contains("\"broker\":\"down\"") {
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the broker was never reported down"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.contains("\"models_loaded\":true"), "{body}");
    assert!(sigterm(&mut worker).success());
    let mut stderr = String::new();
    use std::io::Read as _;
    worker
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        stderr.matches("no broker reachable").count(),
        1,
        "said once, plainly:\n{stderr}"
    );

    // With a start-up deadline it gives up, says why, and exits with code 2.
    let out = Command::new(BIN)
        .args(["run", "--brokers", &format!("127.0.0.1:{nobody}")])
        .args(["--redis", &redis.url(), "--group", "unready"])
        .args(["--models", &repo_root().join("models").to_string_lossy()])
        .args(["--metrics-addr", "off", "--broker-deadline-ms", "2000"])
        .env("RISKSTREAM_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run riskstream run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("giving up"), "{stderr}");
}

#[test]
fn two_workers_in_one_group_share_the_partitions_and_score_each_event_once() {
    let env = Env::start();
    let (p1, p2) = (free_port(), free_port());
    let mut w1 = env.worker(Some(p1));
    let mut w2 = env.worker(Some(p2));
    // Both members joined and the 4 input partitions are spread over them (as /readyz says).
    let assigned = |port: u16| -> i64 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            return 0;
        }
        let (_, body) = http_status(port, "/readyz");
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["assigned_partitions"].as_i64())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (a1, a2) = (assigned(p1), assigned(p2));
        if a1 > 0 && a2 > 0 && a1 + a2 == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions not spread: {a1} + {a2}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let n = 2000;
    env.simulate(n, 41);
    let verdicts = env.consumer("verdicts");
    let mut seen = HashSet::new();
    let mut all = read_verdicts(&verdicts, n as usize, Duration::from_secs(120), &mut seen);
    // Anything arriving later would be a second verdict for an event.
    all.extend(read_verdicts(
        &verdicts,
        usize::MAX,
        Duration::from_secs(3),
        &mut seen,
    ));
    assert_eq!(seen, expected_ids(41, n));
    assert_eq!(all.len(), n as usize, "an event was scored twice");
    let consumed = |port: u16| -> f64 {
        ["capture-sessions", "transactions"]
            .iter()
            .filter_map(|t| metric_value(port, "riskstream_consumed_total", &[("topic", t)]))
            .sum()
    };
    let (c1, c2) = (consumed(p1), consumed(p2));
    assert!(c1 > 0.0 && c2 > 0.0, "both workers scored: {c1} / {c2}");
    assert_eq!(c1 + c2, n as f64, "each event consumed by one worker");
    assert!(sigterm(&mut w1).success());
    assert!(sigterm(&mut w2).success());
}

#[test]
fn a_flood_of_invalid_records_trips_the_dead_letter_cap_and_stops_the_worker() {
    let env = Env::start();
    env.simulate(100, 51);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", env.broker.bootstrap())
        .create()
        .unwrap();
    for i in 0..60 {
        producer
            .send(
                BaseRecord::to("transactions")
                    .key("bad")
                    .payload(format!("not avro {i}").as_bytes())
                    .partition(0),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--brokers", &env.broker.bootstrap()])
        .args(["--redis", &env.store_url, "--group", "capped"])
        .args(["--models", &repo_root().join("models").to_string_lossy()])
        .args(["--metrics-addr", "off", "--dlq-max-consecutive", "20"])
        .args(["-X", "consumer.session.timeout.ms=6000"])
        .args(["-X", "consumer.heartbeat.interval.ms=2000"])
        .env("RISKSTREAM_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run riskstream run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("dead-letter cap tripped"), "{stderr}");
    assert!(stderr.contains("20 invalid records in a row"), "{stderr}");
    // Dead-letter lines are rate-limited: not one per record.
    assert!(
        stderr.matches("dead letter ").count() <= 10,
        "{} dead-letter lines",
        stderr.matches("dead letter ").count()
    );
}

#[test]
fn the_input_contract_is_enforced_and_dead_letters_keep_null_values() {
    let env = Env::start();
    env.simulate(200, 61);
    let codec = Codec::registry_free();
    let mut sessions: Option<riskstream_events::CaptureSession> = None;
    let mut big: Option<riskstream_events::Transaction> = None;
    let mut sim = riskstream_sim::Simulator::new(
        riskstream_sim::SimConfig::for_events(500, 62).ending_at(500, now_ms()),
    );
    while sessions.is_none() || big.is_none() {
        match sim.next_event().event {
            riskstream_events::Event::CaptureSession(c) => sessions = sessions.or(Some(c)),
            riskstream_events::Event::Transaction(t) if t.amount.is_some() => big = big.or(Some(t)),
            _ => {}
        }
    }
    let session = sessions.unwrap();
    let big = big.unwrap();
    let mut absurd = big.clone();
    absurd.amount.as_mut().unwrap().usd_cents = i64::MAX;
    // Produced today, dated 1970-01-02: past the default event-age bound (30 days).
    let mut ancient = big;
    ancient.event_id = "ancient".into();
    ancient.event_time = 86_400_000;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", env.broker.bootstrap())
        .set("message.max.bytes", "4000000")
        .create()
        .unwrap();
    let on_transactions = |payload: Option<&[u8]>, key: &str| {
        let mut r = BaseRecord::<str, [u8]>::to("transactions")
            .key(key)
            .partition(0);
        if let Some(p) = payload {
            r = r.payload(p);
        }
        producer.send(r).map_err(|(e, _)| e).unwrap();
    };
    // A valid capture session on the transaction topic, a null value, an absurd amount.
    let wrong = codec
        .encode(SchemaKind::CaptureSession, "capture-sessions", &session)
        .unwrap();
    on_transactions(Some(&wrong), "wrong-topic");
    on_transactions(None, "null-value");
    let absurd = codec
        .encode(SchemaKind::Transaction, "transactions", &absurd)
        .unwrap();
    on_transactions(Some(&absurd), "absurd");
    let ancient = codec
        .encode(SchemaKind::Transaction, "transactions", &ancient)
        .unwrap();
    on_transactions(Some(&ancient), "ancient");
    // 2 MB: over --max-record-bytes (1 MiB) and over the producer's default message.max.bytes.
    let mut oversized = wrong.clone();
    oversized.resize(2_000_000, 0);
    on_transactions(Some(&oversized), "oversized");
    producer.flush(Duration::from_secs(10)).unwrap();

    let mut worker = env.worker(None);
    let mut seen = HashSet::new();
    read_verdicts(
        &env.consumer("verdicts"),
        200,
        Duration::from_secs(120),
        &mut seen,
    );
    assert_eq!(seen, expected_ids(61, 200), "the good events are scored");
    let dlq = env.consumer("verdicts-dlq");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dead = std::collections::HashMap::new();
    let mut truncated = std::collections::HashMap::new();
    while Instant::now() < deadline && dead.len() < 5 {
        if let Some(m) = dlq.poll(Duration::from_millis(200)) {
            let m = m.unwrap().detach();
            let kind = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == dlq_headers::ERROR_KIND))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            let error = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == dlq_headers::ERROR))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            let truncated_from = m
                .headers()
                .and_then(|h| {
                    h.iter()
                        .find(|h| h.key == dlq_headers::VALUE_TRUNCATED_FROM)
                })
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned());
            let key = String::from_utf8_lossy(m.key().unwrap_or(&[])).into_owned();
            truncated.insert(key.clone(), truncated_from);
            dead.insert(key, (kind, m.payload().map(|p| p.to_vec()), error));
        }
    }
    assert_eq!(dead["wrong-topic"].0, "wrong_topic");
    assert_eq!(dead["wrong-topic"].1.as_deref(), Some(wrong.as_slice()));
    assert_eq!(dead["null-value"].0, "empty");
    assert_eq!(dead["null-value"].1, None, "a null value stays null");
    assert_eq!(dead["absurd"].0, "validation");
    assert_eq!(dead["oversized"].0, "oversized");
    assert_eq!(
        dead["oversized"].1.as_deref(),
        Some(&oversized[..dlq_headers::DEAD_LETTER_MAX_VALUE]),
        "an oversized value is cut to what a dead letter carries"
    );
    assert_eq!(truncated["oversized"].as_deref(), Some("2000000"));
    assert_eq!(
        truncated["wrong-topic"], None,
        "other dead letters are whole"
    );
    assert_eq!(dead["ancient"].0, "validation");
    assert!(
        dead["ancient"].2.contains("--max-event-age-ms"),
        "the default event-age bound: {}",
        dead["ancient"].2
    );
    assert!(sigterm(&mut worker).success());
}

/// The plausibility bounds are configurable: with a 1 000 USD cap, 128-byte strings and event
/// times at most a day before the broker timestamp, records outside them are dead-lettered
/// (naming the option) and the rest is scored — including old records whose broker timestamp
/// is old too (a replay of old data).
#[test]
fn configured_plausibility_bounds_dead_letter_what_is_outside_them() {
    let env = Env::start();
    let models = repo_root().join("models");
    let mut worker = env.worker_with(
        None,
        &models,
        &[
            "--max-amount-usd",
            "1000",
            "--max-string-bytes",
            "128",
            "--max-event-age-ms",
            "86400000",
        ],
    );
    // A transaction with an amount (a transfer, a withdrawal, a card payment).
    let base = riskstream_sim::Simulator::new(riskstream_sim::SimConfig::for_events(500, 5))
        .map(|e| e.event)
        .find_map(|e| match e {
            riskstream_events::Event::Transaction(t) if t.amount.is_some() => Some(t),
            _ => None,
        })
        .expect("a simulated transaction with an amount");
    let now = now_ms();
    let day = 86_400_000;
    let tx = |id: &str, at: i64, usd: i64| {
        let mut t = base.clone();
        t.event_id = id.to_string();
        t.event_time = at;
        if let Some(a) = t.amount.as_mut() {
            a.usd_cents = usd * 100;
        }
        t
    };
    let mut long = tx("long-string", now, 10);
    long.device.fingerprint_hash = "a".repeat(200);
    let codec = Codec::registry_free();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", env.broker.bootstrap())
        .create()
        .unwrap();
    // (record, broker timestamp)
    for (t, ts) in [
        (tx("fine", now, 500), now),
        (tx("too-old", now - 2 * day, 10), now),
        (tx("too-much", now, 2000), now),
        (long, now),
        (tx("old-replayed", now - 3 * day, 10), now - 3 * day),
    ] {
        let payload = codec
            .encode(SchemaKind::Transaction, "transactions", &t)
            .unwrap();
        producer
            .send(
                BaseRecord::to("transactions")
                    .key(t.event_id.as_str())
                    .payload(&payload)
                    .timestamp(ts),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let mut seen = HashSet::new();
    read_verdicts(
        &env.consumer("verdicts"),
        2,
        Duration::from_secs(120),
        &mut seen,
    );
    let dlq = env.consumer("verdicts-dlq");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dead = std::collections::HashMap::new();
    while Instant::now() < deadline && dead.len() < 3 {
        if let Some(m) = dlq.poll(Duration::from_millis(200)) {
            let m = m.unwrap().detach();
            let error = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == dlq_headers::ERROR))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            dead.insert(
                String::from_utf8_lossy(m.key().unwrap_or(&[])).into_owned(),
                error,
            );
        }
    }
    assert_eq!(
        seen,
        ["fine", "old-replayed"]
            .map(String::from)
            .into_iter()
            .collect::<HashSet<_>>(),
        "dead letters: {dead:?}"
    );
    assert!(
        dead["too-old"].contains("--max-event-age-ms"),
        "{}",
        dead["too-old"]
    );
    assert!(
        dead["too-much"].contains("--max-amount-usd"),
        "{}",
        dead["too-much"]
    );
    assert!(
        dead["long-string"].contains("--max-string-bytes"),
        "{}",
        dead["long-string"]
    );
    assert!(sigterm(&mut worker).success());
}

#[test]
fn malformed_record_goes_to_dead_letters_and_neighbours_still_score() {
    let env = Env::start();
    env.simulate(300, 31);
    let bad_payload = b"\xC3\x01this is not a fingerprint nor avro".to_vec();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", env.broker.bootstrap())
        .create()
        .unwrap();
    producer
        .send(
            BaseRecord::to("transactions")
                .key("bad-key")
                .payload(&bad_payload)
                .partition(0),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    env.simulate(300, 32);

    let mut worker = env.worker(None);
    let mut seen = HashSet::new();
    read_verdicts(
        &env.consumer("verdicts"),
        600,
        Duration::from_secs(120),
        &mut seen,
    );
    let mut expected = expected_ids(31, 300);
    expected.extend(expected_ids(32, 300));
    assert_eq!(seen, expected);

    let dlq = env.consumer("verdicts-dlq");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dead = Vec::new();
    while Instant::now() < deadline && dead.is_empty() {
        if let Some(m) = dlq.poll(Duration::from_millis(200)) {
            dead.push(m.unwrap().detach());
        }
    }
    assert_eq!(dead.len(), 1, "exactly one dead letter");
    let d = &dead[0];
    assert_eq!(
        d.payload(),
        Some(bad_payload.as_slice()),
        "original bytes are kept"
    );
    assert_eq!(d.key(), Some(b"bad-key".as_slice()));
    let headers = d.headers().expect("dead-letter headers");
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(
        header(dlq_headers::SOURCE_TOPIC).as_deref(),
        Some("transactions")
    );
    assert_eq!(header(dlq_headers::SOURCE_PARTITION).as_deref(), Some("0"));
    assert!(header(dlq_headers::SOURCE_OFFSET).is_some());
    assert_eq!(
        header(dlq_headers::ERROR_KIND).as_deref(),
        Some("unknown_fingerprint")
    );
    assert!(header(dlq_headers::ERROR).unwrap().contains("fingerprint"));
    assert!(sigterm(&mut worker).success());
}

#[test]
fn sigterm_mid_stream_then_restart_leaves_no_event_without_a_verdict() {
    let env = Env::start();
    let n = 6000;
    env.simulate(n, 41);
    let verdicts = env.consumer("verdicts");
    let mut seen = HashSet::new();

    let mut first = env.worker(None);
    read_verdicts(&verdicts, 500, Duration::from_secs(120), &mut seen);
    let status = sigterm(&mut first);
    assert!(
        status.success(),
        "graceful shutdown must exit 0, got {status}"
    );
    let before_restart = seen.len();
    assert!(before_restart >= 500);

    // Restart as two workers in the same group: the rest is shared out and nothing is lost.
    let mut a = env.worker(None);
    let mut b = env.worker(None);
    read_verdicts(&verdicts, n as usize, Duration::from_secs(180), &mut seen);
    assert_eq!(
        seen,
        expected_ids(41, n),
        "events without a verdict after restart"
    );
    assert!(sigterm(&mut a).success());
    assert!(sigterm(&mut b).success());
}

/// A Redis outage under a running worker: verdicts keep coming, marked degraded; the worker
/// reconnects by itself; and the events scored during the outage reach the store afterwards
/// (outage write-back): a later withdrawal's velocity counts the withdrawals made meanwhile.
#[test]
fn redis_outage_gives_degraded_verdicts_then_recovers_without_restart() {
    use riskstream_events::{Transaction, TransactionKind};
    let mut env = Env::start();
    let metrics_port = free_port();
    let mut worker = env.worker(Some(metrics_port));
    let verdicts = env.consumer("verdicts");
    let mut seen = HashSet::new();

    // Before the outage: normal verdicts.
    env.simulate(300, 51);
    let before = read_verdicts(&verdicts, 300, Duration::from_secs(120), &mut seen);
    assert!(
        before.iter().all(|v| !v.degraded),
        "no degradation while Redis is up"
    );

    // Outage: Redis is killed; events keep coming and still get verdicts, marked degraded.
    // Among them, four withdrawals of one account.
    env.redis.stop();
    env.simulate(300, 52);
    let template = simulated_transaction();
    let now = now_ms();
    let withdrawal = |id: &str, t: i64| {
        let mut x: Transaction = template.clone();
        x.event_id = id.into();
        x.account_id = "acct-outage".into();
        x.kind = TransactionKind::Withdrawal;
        x.event_time = t;
        x
    };
    let during_outage: Vec<Transaction> = (0..4)
        .map(|i| withdrawal(&format!("out-{i}"), now - 10 * 60_000 + i * 60_000))
        .collect();
    produce(&env, &during_outage, &[]);
    let during = read_verdicts(&verdicts, 604, Duration::from_secs(120), &mut seen);
    let degraded: Vec<_> = during
        .iter()
        .filter(|v| v.event_id.starts_with("ev-52-") || v.event_id.starts_with("out-"))
        .collect();
    assert_eq!(degraded.len(), 304);
    // Degraded verdicts say why and which feature groups are missing.
    for v in &degraded {
        assert!(v.degraded, "{} not marked degraded", v.event_id);
        for reason in [
            "feature_store_unavailable",
            "missing_features:velocity",
            "missing_features:account",
            "missing_features:device",
            "missing_features:ip",
            "missing_features:document",
            "missing_features:graph",
        ] {
            assert!(
                v.degraded_reasons.iter().any(|r| r == reason),
                "{}: {reason} missing from {:?}",
                v.event_id,
                v.degraded_reasons
            );
        }
    }
    assert_eq!(
        metric_value(metrics_port, "riskstream_store_writeback_pending", &[]),
        Some(304.0),
        "the outage's events wait to be recorded"
    );

    // Recovery: Redis comes back on the same address; the worker reconnects by itself and
    // records the outage's events even while no traffic comes (idle write-back drain).
    env.redis.restart();
    let idle_deadline = Instant::now() + Duration::from_secs(30);
    while metric_value(
        metrics_port,
        "riskstream_store_writeback_total",
        &[("outcome", "recorded")],
    ) != Some(304.0)
        && Instant::now() < idle_deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        metric_value(
            metrics_port,
            "riskstream_store_writeback_total",
            &[("outcome", "recorded")],
        ),
        Some(304.0),
        "the outage's events were not recorded while the worker was idle:\n{}",
        http_get(metrics_port, "/metrics")
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seed = 53;
    let (mut recovered, mut written_back) = (false, false);
    while !(recovered && written_back) && Instant::now() < deadline {
        env.simulate(50, seed);
        let want = seen.len() + 50;
        let batch = read_verdicts(&verdicts, want, Duration::from_secs(60), &mut seen);
        recovered |= batch
            .iter()
            .any(|v| v.event_id.starts_with(&format!("ev-{seed}-")) && !v.degraded);
        written_back = metric_value(
            metrics_port,
            "riskstream_store_writeback_total",
            &[("outcome", "recorded")],
        ) == Some(304.0);
        seed += 1;
    }
    assert!(recovered, "verdicts stayed degraded after Redis came back");
    assert!(
        written_back,
        "the outage's events were not recorded:\n{}",
        http_get(metrics_port, "/metrics")
    );
    // Nothing was lost on the way.
    let mut expected = expected_ids(51, 300);
    expected.extend(expected_ids(52, 300));
    expected.extend(during_outage.iter().map(|t| t.event_id.clone()));
    for s in 53..seed {
        expected.extend(expected_ids(s, 50));
    }
    assert_eq!(seen, expected);

    // The account's next withdrawal counts the four made during the outage.
    produce(&env, &[withdrawal("out-after", now - 60_000)], &[]);
    let after = read_verdicts(
        &verdicts,
        seen.len() + 1,
        Duration::from_secs(60),
        &mut seen,
    );
    let v = after
        .iter()
        .find(|v| v.event_id == "out-after")
        .expect("verdict of the withdrawal after the outage");
    assert!(!v.degraded);
    assert_eq!(
        ato_input(v, "acct_withdrawal_count_1h"),
        4.0,
        "withdrawals scored during the outage are in the store"
    );
    assert!(sigterm(&mut worker).success());
}

/// The champion ATO model's input `name` as logged in verdict `v` (manifest order).
fn ato_input(v: &Verdict, name: &str) -> f32 {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("models/ato/manifest.json")).unwrap(),
    )
    .unwrap();
    let at = manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .position(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("the ATO model has no input {name}"));
    let inputs = v
        .model_inputs
        .iter()
        .find(|m| m.model == "ato")
        .unwrap_or_else(|| panic!("verdict {} has no ATO inputs", v.event_id));
    inputs.values[at]
}

/// A simulated transaction to build hand-made ones from.
fn simulated_transaction() -> riskstream_events::Transaction {
    riskstream_sim::Simulator::new(riskstream_sim::SimConfig::for_events(100, 5))
        .map(|e| e.event)
        .find_map(|e| match e {
            riskstream_events::Event::Transaction(t) => Some(t),
            _ => None,
        })
        .expect("a simulated transaction")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Produces `events` (transactions) keyed by account, and `labels`, with the registry-free codec.
fn produce(
    env: &Env,
    events: &[riskstream_events::Transaction],
    labels: &[riskstream_events::Label],
) {
    let codec = Codec::registry_free();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", env.broker.bootstrap())
        .create()
        .unwrap();
    for t in events {
        let payload = codec
            .encode(SchemaKind::Transaction, "transactions", t)
            .unwrap();
        producer
            .send(
                BaseRecord::to("transactions")
                    .key(&t.account_id)
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    for l in labels {
        let payload = codec.encode(SchemaKind::Label, "labels", l).unwrap();
        let key = l.account_id.clone().unwrap_or_default();
        producer
            .send(BaseRecord::to("labels").key(&key).payload(&payload))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

fn feature(v: &Verdict, name: &str) -> f64 {
    v.features
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("verdict {} has no feature {name}", v.event_id))
        .value
}

/// The identity graph end to end, on a 3-node Redis Cluster: a fraudster F shares device dF
/// with A; A shares device dA with B. Once F's confirmed-fraud label is consumed, A's next
/// verdict shows one labelled account one hop away and B's one two hops away; a bystander
/// shows neither.
#[test]
fn graph_features_light_up_for_accounts_linked_to_a_labelled_fraudster_on_redis_cluster() {
    use riskstream_events::{Label, LabelKind, Transaction, TransactionKind};
    let env = Env::start_with_cluster();
    let template = simulated_transaction();
    let now = now_ms();
    let tx = |id: &str, account: &str, device: &str, t: i64| {
        let mut x: Transaction = template.clone();
        x.event_id = id.into();
        x.account_id = account.into();
        x.device.fingerprint_hash = device.into();
        x.device.ip_address = format!("ip-of-{device}");
        x.kind = TransactionKind::Login;
        x.amount = None;
        x.destination = None;
        x.event_time = now - 60_000 + t;
        x
    };
    let metrics_port = free_port();
    let mut worker = env.worker(Some(metrics_port));
    let verdicts = env.consumer("verdicts");
    // F's event is scored first: events on different partitions have no order between them,
    // and A must see F on dev-F (the store counts what has arrived).
    produce(&env, &[tx("g-1", "acct-F", "dev-F", 0)], &[]);
    let mut seen = HashSet::new();
    let mut before = read_verdicts(&verdicts, 1, Duration::from_secs(120), &mut seen);
    produce(
        &env,
        &[
            tx("g-2", "acct-A", "dev-F", 1_000),
            tx("g-3", "acct-A", "dev-A", 2_000),
            tx("g-4", "acct-B", "dev-A", 3_000),
        ],
        &[],
    );
    before.extend(read_verdicts(
        &verdicts,
        4,
        Duration::from_secs(120),
        &mut seen,
    ));
    assert_eq!(seen.len(), 4, "phase 1 verdicts");
    let a_before = before.iter().find(|v| v.event_id == "g-2").unwrap();
    assert_eq!(
        feature(a_before, "graph_linked_accounts"),
        1.0,
        "A is linked to F through dev-F"
    );
    assert_eq!(
        feature(a_before, "graph_fraud_accounts_1hop"),
        0.0,
        "no label yet"
    );

    let label = Label {
        event_id: Some("g-1".into()),
        account_id: Some("acct-F".into()),
        kind: LabelKind::ConfirmedFraud,
        source: "investigator".into(),
        label_time: now,
    };
    produce(&env, &[], &[label]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http_get(metrics_port, "/metrics")
        .lines()
        .any(|l| l.starts_with("riskstream_labels_total") && l.contains("outcome=\"applied\""))
    {
        assert!(
            Instant::now() < deadline,
            "the label was not applied within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    produce(
        &env,
        &[
            tx("g-5", "acct-A", "dev-F", 10_000),
            tx("g-6", "acct-B", "dev-A", 11_000),
            tx("g-7", "acct-N", "dev-N", 12_000),
        ],
        &[],
    );
    let after = read_verdicts(&verdicts, 7, Duration::from_secs(120), &mut seen);
    let by_id = |id: &str| {
        after
            .iter()
            .find(|v| v.event_id == id)
            .unwrap_or_else(|| panic!("no verdict for {id}"))
    };
    let (a, b, n) = (by_id("g-5"), by_id("g-6"), by_id("g-7"));
    for v in [a, b, n] {
        assert!(
            !v.degraded,
            "{} degraded: {:?}",
            v.event_id, v.degraded_reasons
        );
    }
    assert_eq!(
        feature(a, "graph_fraud_accounts_1hop"),
        1.0,
        "A shares dev-F with F"
    );
    assert_eq!(feature(b, "graph_fraud_accounts_1hop"), 0.0);
    assert_eq!(
        feature(b, "graph_fraud_accounts_2hop"),
        1.0,
        "B -> dev-A -> A -> dev-F -> F"
    );
    assert_eq!(
        feature(n, "graph_fraud_accounts_1hop") + feature(n, "graph_fraud_accounts_2hop"),
        0.0
    );
    assert!(sigterm(&mut worker).success());
}

/// The value of the first sample of `name` whose labels include every `k="v"` of `labels`.
fn metric_value(port: u16, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = http_get(port, "/metrics");
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn wait_for_metric(port: u16, name: &str, labels: &[(&str, &str)], at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if metric_value(port, name, labels).is_some_and(|v| v >= at_least) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "{name}{labels:?} never reached {at_least}:\n{}",
        http_get(port, "/metrics")
    );
}

/// Copies a committed model directory to `to`, with its manifest's version replaced.
fn copy_model(from: &str, to: &std::path::Path, version: &str) {
    let src = repo_root().join("models").join(from);
    std::fs::create_dir_all(to).unwrap();
    for f in ["model.onnx", "golden.json"] {
        std::fs::copy(src.join(f), to.join(f)).unwrap();
    }
    set_version(to, version);
}

/// Rewrites a model directory's manifest version (write + rename: atomic for the watcher).
fn set_version(dir: &std::path::Path, version: &str) {
    let src = if dir.join("manifest.json").exists() {
        dir.join("manifest.json")
    } else {
        repo_root()
            .join("models")
            .join(if dir.ends_with("behavioral") {
                "behavioral"
            } else {
                "ato"
            })
            .join("manifest.json")
    };
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    m["version"] = serde_json::json!(version);
    let tmp = dir.join(".manifest.json.tmp");
    std::fs::write(&tmp, m.to_string()).unwrap();
    std::fs::rename(&tmp, dir.join("manifest.json")).unwrap();
}

#[test]
fn models_and_policy_hot_reload_shadow_and_routing_on_the_running_worker() {
    let env = Env::start();
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path();
    copy_model("behavioral", &models.join("behavioral"), "2.0.0");
    copy_model("ato", &models.join("ato"), "2.0.0");
    copy_model("ato", &models.join("ato-next"), "2.1.0-canary");
    // The canary decides in the EU with the fleet champion in shadow; elsewhere it shadows.
    std::fs::write(
        models.join("serving.toml"),
        r#"
[slots.behavioral]
champion = "behavioral"
[slots.ato]
champion = "ato"
shadows = ["ato-next"]
[[routes]]
name = "eu-canary"
slot = "ato"
regions = ["eu"]
champion = "ato-next"
shadows = ["ato"]
"#,
    )
    .unwrap();
    let port = free_port();
    let mut worker = env.worker_with(Some(port), models, &["--model-poll-ms", "200"]);
    let verdicts = env.consumer("verdicts");
    let mut seen = HashSet::new();

    // 1. Shadow scores and routing, visible in the verdicts.
    let regions = regions_of(31, 600);
    let first = score_more(&env, &verdicts, &mut seen, 31, 600);
    let (mut eu, mut elsewhere) = (0, 0);
    for v in &first {
        if v.event_type == riskstream_events::EventType::CaptureSession {
            assert_eq!(v.scores.len(), 1, "no behavioral shadow configured");
            assert!(!v.scores[0].shadow);
            continue;
        }
        let versions: Vec<(&str, bool)> = v
            .scores
            .iter()
            .map(|s| (s.version.as_ref(), s.shadow))
            .collect();
        if regions[&v.event_id] == "eu" {
            eu += 1;
            assert_eq!(versions, [("2.1.0-canary", false), ("2.0.0", true)]);
        } else {
            elsewhere += 1;
            assert_eq!(versions, [("2.0.0", false), ("2.1.0-canary", true)]);
        }
    }
    assert!(eu > 20 && elsewhere > 20, "eu {eu}, elsewhere {elsewhere}");
    let active = [
        ("slot", "ato"),
        ("route", "default"),
        ("role", "champion"),
        ("model", "ato"),
    ];
    assert_eq!(
        metric_value(
            port,
            "riskstream_model_active",
            &[active.as_slice(), &[("version", "2.0.0")]].concat()
        ),
        Some(1.0)
    );

    // 2. A new version dropped into the directory is picked up without a restart.
    set_version(&models.join("ato"), "2.0.1");
    wait_for_metric(
        port,
        "riskstream_model_active",
        &[active.as_slice(), &[("version", "2.0.1")]].concat(),
        1.0,
    );
    assert_eq!(
        metric_value(
            port,
            "riskstream_model_active",
            &[active.as_slice(), &[("version", "2.0.0")]].concat()
        ),
        Some(0.0),
        "the replaced version is no longer active"
    );
    let regions = regions_of(32, 300);
    let fresh = transactions(score_more(&env, &verdicts, &mut seen, 32, 300));
    assert!(!fresh.is_empty());
    for v in fresh {
        let champion = if regions[&v.event_id] == "eu" {
            "2.1.0-canary"
        } else {
            "2.0.1"
        };
        assert_eq!(v.scores[0].version, champion);
        assert!(!v.degraded);
    }

    // 3. A broken model announced with SIGHUP: its goldens no longer match its outputs, and the
    //    files keep their size and modification time (as `cp -p` or `rsync -t` can leave them),
    //    so only SIGHUP's forced re-validation sees it. Rejected and counted; the loaded
    //    version keeps serving.
    let golden = models.join("ato-next/golden.json");
    let before = std::fs::metadata(&golden).unwrap();
    let text = std::fs::read_to_string(&golden).unwrap();
    let outputs = text.find("\"outputs\"").unwrap();
    let at = outputs + text[outputs..].find('[').unwrap() + 4; // a digit of the first output
    let digit = text.as_bytes()[at];
    let mut broken = text.into_bytes();
    broken[at] = if digit == b'1' { b'2' } else { b'1' };
    std::fs::write(&golden, &broken).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&golden)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    assert_eq!(std::fs::metadata(&golden).unwrap().len(), before.len());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        metric_value(
            port,
            "riskstream_model_reloads_total",
            &[("model", "ato-next"), ("outcome", "rejected")]
        )
        .unwrap_or(0.0),
        0.0,
        "polling cannot see the change"
    );
    unsafe { libc::kill(worker.id() as i32, libc::SIGHUP) };
    wait_for_metric(
        port,
        "riskstream_model_reloads_total",
        &[("model", "ato-next"), ("outcome", "rejected")],
        1.0,
    );
    let rejected = |port| {
        metric_value(
            port,
            "riskstream_model_reloads_total",
            &[("model", "ato-next"), ("outcome", "rejected")],
        )
        .unwrap_or(0.0)
    };
    let once = rejected(port);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        rejected(port),
        once,
        "a rejected model is not retried until its files change"
    );
    let regions = regions_of(33, 300);
    let fresh = transactions(score_more(&env, &verdicts, &mut seen, 33, 300));
    assert!(!fresh.is_empty());
    for v in fresh {
        if regions[&v.event_id] == "eu" {
            assert_eq!(
                v.scores[0].version, "2.1.0-canary",
                "the old canary keeps serving"
            );
        }
    }

    // 4. The decision policy reloads like the models: a new serving.toml whose only rule holds
    //    every money-out transaction for review.
    let applied = |port| {
        metric_value(
            port,
            "riskstream_serving_reloads_total",
            &[("outcome", "applied")],
        )
        .unwrap_or(0.0)
    };
    let before = applied(port);
    let tmp = models.join(".serving.toml.tmp");
    std::fs::write(
        &tmp,
        r#"
[slots.behavioral]
champion = "behavioral"
[slots.ato]
champion = "ato"
[[policy.rules]]
name = "hold_all_money_out"
slot = "ato"
kinds = ["WITHDRAWAL", "TRANSFER_OUT", "CARD_PAYMENT"]
decision = "REVIEW"
friction = "HUMAN_REVIEW"
"#,
    )
    .unwrap();
    std::fs::rename(&tmp, models.join("serving.toml")).unwrap();
    wait_for_metric(
        port,
        "riskstream_serving_reloads_total",
        &[("outcome", "applied")],
        before + 1.0,
    );
    let fourth = score_more(&env, &verdicts, &mut seen, 34, 300);
    let kinds: std::collections::HashMap<String, riskstream_events::TransactionKind> =
        riskstream_sim::Simulator::new(riskstream_sim::SimConfig::for_events(300, 34))
            .take(300)
            .filter_map(|e| match e.event {
                riskstream_events::Event::Transaction(t) => Some((t.event_id, t.kind)),
                _ => None,
            })
            .collect();
    let mut held = 0;
    for v in &fourth {
        match kinds.get(&v.event_id) {
            Some(k) if k.moves_money_out() => {
                held += 1;
                assert_eq!(
                    (v.decision, v.friction),
                    (
                        riskstream_events::Decision::Review,
                        riskstream_events::Friction::HumanReview
                    )
                );
                assert_eq!(
                    v.reasons.last().map(String::as_str),
                    Some("policy:hold_all_money_out")
                );
            }
            _ => assert_eq!(v.decision, riskstream_events::Decision::Allow),
        }
        assert_eq!(v.scores.len(), 1, "the new serving.toml has no shadows");
    }
    assert!(held > 0);
    assert!(sigterm(&mut worker).success());
}

/// Simulates `n` more events with `seed`, reads verdicts until every event so far has one
/// (none lost across reloads), and returns the verdicts of these `n` events.
fn score_more(
    env: &Env,
    verdicts: &BaseConsumer,
    seen: &mut HashSet<String>,
    seed: u64,
    n: u64,
) -> Vec<Verdict> {
    let want = seen.len() + n as usize;
    env.simulate(n, seed);
    let read = read_verdicts(verdicts, want, Duration::from_secs(120), seen);
    assert_eq!(seen.len(), want, "no verdict lost across reloads");
    let prefix = format!("ev-{seed}-");
    read.into_iter()
        .filter(|v| v.event_id.starts_with(&prefix))
        .collect()
}

/// The transactions' verdicts among `verdicts`.
fn transactions(verdicts: Vec<Verdict>) -> Vec<Verdict> {
    verdicts
        .into_iter()
        .filter(|v| v.event_type == riskstream_events::EventType::Transaction)
        .collect()
}

/// Event id → region of the simulated stream (`simulate --seed seed --events n`).
fn regions_of(seed: u64, n: u64) -> std::collections::HashMap<String, String> {
    riskstream_sim::Simulator::new(riskstream_sim::SimConfig::for_events(n, seed))
        .take(n as usize)
        .map(|e| (e.event.event_id().to_string(), e.event.region().to_string()))
        .collect()
}
