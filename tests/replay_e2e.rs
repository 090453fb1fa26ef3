//! Black-box tests of `riskstream replay` against a real tansu broker and `redis-server`: a
//! worker scores live traffic, then replays re-score it and are compared with what it published.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use riskstream_testkit::{free_port, repo_root, Broker, RedisServer};

const BIN: &str = env!("CARGO_BIN_EXE_riskstream");

fn sigterm(child: &mut Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("worker did not exit within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every record of `topic` as (partition, offset, timestamp), read to the end (assign(): no
/// group join to wait for).
fn records(broker: &Broker, topic: &str) -> Vec<(i32, i64, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", format!("reader-{topic}-{}", free_port()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(3) {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            out.push((
                m.partition(),
                m.offset(),
                m.timestamp().to_millis().unwrap_or(0),
            ));
            quiet = Instant::now();
        }
    }
    out
}

fn redis_keys(url: &str) -> BTreeSet<String> {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client.get_connection().expect("redis");
    redis::cmd("KEYS").arg("*").query(&mut conn).expect("keys")
}

fn replay(broker: &Broker, args: &[&str]) -> Output {
    Command::new(BIN)
        .args([
            "replay",
            "--brokers",
            &broker.bootstrap(),
            "--idle-ms",
            "1500",
        ])
        .args(["--models", &repo_root().join("models").to_string_lossy()])
        .args(args)
        .env("RISKSTREAM_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run riskstream replay")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "replay failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("summary file")).expect("summary json")
}

/// (topic, partition, offset) of every verdict in a `.jsonl` replay output.
fn sources(path: &Path) -> BTreeSet<(String, i64, i64)> {
    std::fs::read_to_string(path)
        .expect("output")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            let s = &v["source"];
            (
                s["topic"].as_str().expect("topic").to_string(),
                s["partition"].as_i64().expect("partition"),
                s["offset"].as_i64().expect("offset"),
            )
        })
        .collect()
}

#[test]
fn replay_reproduces_decisions_selects_ranges_and_never_touches_production() {
    let broker = Broker::start();
    for (t, p) in [
        ("capture-sessions", 2),
        ("transactions", 2),
        ("verdicts", 2),
        ("verdicts-dlq", 1),
        ("labels", 1),
        ("replayed", 1),
    ] {
        broker.create_topic(t, p);
    }
    let redis = RedisServer::start();
    let work = tempfile::tempdir().expect("tempdir");

    // A worker scores 1 500 events produced live at 300 events/s.
    let mut worker = Command::new(BIN)
        .args([
            "run",
            "--brokers",
            &broker.bootstrap(),
            "--redis",
            &redis.url(),
        ])
        .args(["--group", "e2e", "--metrics-addr", "off"])
        .args(["--models", &repo_root().join("models").to_string_lossy()])
        .args(["-X", "consumer.session.timeout.ms=6000"])
        .args(["-X", "consumer.heartbeat.interval.ms=2000"])
        .args(["-X", "consumer.fetch.wait.max.ms=50"])
        .env("RISKSTREAM_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start worker");
    std::thread::sleep(Duration::from_secs(4)); // joined the group
    let sim = Command::new(BIN)
        .args(["simulate", "--brokers", &broker.bootstrap()])
        .args(["--events", "1500", "--rate", "300", "--seed", "21"])
        .output()
        .expect("simulate");
    assert!(sim.status.success());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n = records(&broker, "verdicts").len();
        if n >= 1500 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker scored {n} of 1500");
    }
    sigterm(&mut worker);

    let verdicts_before = records(&broker, "verdicts").len();
    let keys_before = redis_keys(&redis.url());
    assert!(keys_before.iter().all(|k| k.starts_with("riskstream:")));

    // 1. Both topics from the beginning, unchanged models, Redis store: the published decisions.
    let out_file = work.path().join("all.jsonl");
    let sum_file = work.path().join("all.json");
    let stdout = ok(&replay(
        &broker,
        &[
            "--redis",
            &redis.url(),
            "--output",
            &out_file.to_string_lossy(),
            "--summary-json",
            &sum_file.to_string_lossy(),
        ],
    ));
    let s = summary(&sum_file);
    assert_eq!(s["read"], 1500, "{stdout}");
    assert_eq!(
        s["verdicts"].as_u64().unwrap() + s["dead_letters"].as_u64().unwrap(),
        1500
    );
    let c = &s["comparison"];
    assert_eq!(c["matched"], 1500, "{stdout}");
    let agreement = c["same_decision"].as_f64().unwrap() / 1500.0;
    assert!(
        agreement >= 0.995,
        "only {agreement} of decisions reproduced:\n{stdout}"
    );
    assert!(stdout.contains("decision flips"), "{stdout}");
    assert_eq!(sources(&out_file).len(), 1500);
    // Production untouched: same keys (the replay's namespace was deleted), no new verdicts.
    assert_eq!(
        redis_keys(&redis.url()),
        keys_before,
        "production keys changed"
    );
    assert_eq!(records(&broker, "verdicts").len(), verdicts_before);

    // 2. By time: per partition, from the first record whose timestamp is at or after the
    // time (Kafka's ListOffsets definition, computed here from the records themselves).
    let txs = records(&broker, "transactions");
    let mut times: Vec<i64> = txs.iter().map(|r| r.2).collect();
    times.sort();
    let from = times[times.len() / 2];
    let mut starts: HashMap<i32, i64> = HashMap::new();
    for (p, o, ts) in &txs {
        if *ts >= from {
            let s = starts.entry(*p).or_insert(*o);
            *s = (*s).min(*o);
        }
    }
    let expected: BTreeSet<(String, i64, i64)> = txs
        .iter()
        .filter(|(p, o, _)| starts.get(p).is_some_and(|s| o >= s))
        .map(|(p, o, _)| ("transactions".to_string(), *p as i64, *o))
        .collect();
    assert!(!expected.is_empty() && expected.len() < txs.len());
    let by_time = work.path().join("by-time.jsonl");
    ok(&replay(
        &broker,
        &[
            "--topics",
            "transactions",
            "--from-time",
            &from.to_string(),
            "--output",
            &by_time.to_string_lossy(),
            "--compare-topic",
            "none",
        ],
    ));
    assert_eq!(
        sources(&by_time),
        expected,
        "replay by time selected other offsets"
    );

    // 2b. The same start time over both topics, the namespace warmed from the beginning:
    // the windows are complete again, so the published decisions come back (without warming,
    // a trial reproduced 666 of 748).
    let warm_sum = work.path().join("warm.json");
    let stdout = ok(&replay(
        &broker,
        &[
            "--from-time",
            &from.to_string(),
            "--warm-from",
            "0",
            "--summary-json",
            &warm_sum.to_string_lossy(),
        ],
    ));
    let s = summary(&warm_sum);
    let c = &s["comparison"];
    assert!(s["read"].as_u64().unwrap() < 1500, "{stdout}");
    assert_eq!(c["matched"], s["verdicts"], "{stdout}");
    let agreement = c["same_decision"].as_f64().unwrap() / c["matched"].as_f64().unwrap();
    assert!(
        agreement >= 0.995,
        "warmed: only {agreement} reproduced:\n{stdout}"
    );

    // 2c. From the worker's group: it committed everything it scored, so nothing is left.
    let group_sum = work.path().join("group.json");
    let group_out = work.path().join("group.jsonl");
    ok(&replay(
        &broker,
        &[
            "--from-group",
            "e2e",
            "--compare-topic",
            "none",
            "--output",
            &group_out.to_string_lossy(),
            "--summary-json",
            &group_sum.to_string_lossy(),
        ],
    ));
    assert_eq!(
        summary(&group_sum)["read"],
        0,
        "the group's offsets are at the end"
    );

    // 3. Guards: the production topic and namespace need explicit flags.
    let refused = replay(&broker, &["--to-topic", "verdicts"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--allow-production-topic"));
    let refused = replay(
        &broker,
        &["--key-prefix", "riskstream", "--output", "/dev/null"],
    );
    assert!(!refused.status.success());
    assert_eq!(records(&broker, "verdicts").len(), verdicts_before);

    // 4. A side topic, an Avro file and the rate cap: 300 offsets at 150 events/s take at
    // least ~2 s.
    let avro = work.path().join("side.avro");
    let started = Instant::now();
    ok(&replay(
        &broker,
        &[
            "--topics",
            "transactions",
            "--to-offsets",
            "transactions:0:150,transactions:1:150",
            "--to-topic",
            "replayed",
            "--rate",
            "150",
            "--compare-topic",
            "none",
            "--output",
            &avro.to_string_lossy(),
        ],
    ));
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "the rate cap was not applied ({:?})",
        started.elapsed()
    );
    let file = std::fs::File::open(&avro).expect("avro output");
    let reader = apache_avro::Reader::new(file).expect("an Avro object container file");
    let from_file: Vec<riskstream_events::Verdict> = reader
        .map(|v| apache_avro::from_value(&v.expect("record")).expect("a verdict"))
        .collect();
    assert_eq!(from_file.len(), 300);
    assert!(from_file.iter().all(|v| v.source.topic == "transactions"));
    let side = records(&broker, "replayed");
    assert_eq!(side.len(), 300);
    let distinct: HashSet<(i32, i64)> = side.iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(distinct.len(), 300);
    assert_eq!(records(&broker, "verdicts").len(), verdicts_before);
}
