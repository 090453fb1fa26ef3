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
use riskstream_testkit::{free_port, repo_root, Broker, RedisCluster, RedisServer};

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
                &repo_root().join("models").to_string_lossy(),
                "--metrics-addr",
                &metrics,
            ])
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
    let status = sigterm(&mut worker);
    assert!(
        status.success(),
        "worker exited with {status} after SIGTERM"
    );
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

#[test]
fn redis_outage_gives_degraded_verdicts_then_recovers_without_restart() {
    let mut env = Env::start();
    let mut worker = env.worker(None);
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
    env.redis.stop();
    env.simulate(300, 52);
    let during = read_verdicts(&verdicts, 600, Duration::from_secs(120), &mut seen);
    let degraded: Vec<_> = during
        .iter()
        .filter(|v| v.event_id.starts_with("ev-52-"))
        .collect();
    assert_eq!(degraded.len(), 300);
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

    // Recovery: Redis comes back on the same address; the worker reconnects by itself.
    env.redis.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seed = 53;
    let mut recovered = false;
    while !recovered && Instant::now() < deadline {
        env.simulate(50, seed);
        let want = seen.len() + 50;
        let batch = read_verdicts(&verdicts, want, Duration::from_secs(60), &mut seen);
        recovered = batch
            .iter()
            .any(|v| v.event_id.starts_with(&format!("ev-{seed}-")) && !v.degraded);
        seed += 1;
    }
    assert!(recovered, "verdicts stayed degraded after Redis came back");
    // Nothing was lost on the way.
    let mut expected = expected_ids(51, 300);
    expected.extend(expected_ids(52, 300));
    for s in 53..seed {
        expected.extend(expected_ids(s, 50));
    }
    assert_eq!(seen, expected);
    assert!(sigterm(&mut worker).success());
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
    let template = riskstream_sim::Simulator::new(riskstream_sim::SimConfig::for_events(100, 5))
        .map(|e| e.event)
        .find_map(|e| match e {
            riskstream_events::Event::Transaction(t) => Some(t),
            _ => None,
        })
        .expect("a simulated transaction");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
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
    produce(
        &env,
        &[
            tx("g-1", "acct-F", "dev-F", 0),
            tx("g-2", "acct-A", "dev-F", 1_000),
            tx("g-3", "acct-A", "dev-A", 2_000),
            tx("g-4", "acct-B", "dev-A", 3_000),
        ],
        &[],
    );
    let mut seen = HashSet::new();
    let before = read_verdicts(&verdicts, 4, Duration::from_secs(120), &mut seen);
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
