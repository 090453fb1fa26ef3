//! Security, black-box: a worker on Kafka over TLS (tansu behind a TLS-terminating proxy, the
//! broker's certificate checked against a CA file) and on Redis over TLS (`rediss://`) as an ACL
//! user allowed only its key prefix, its password from the environment; what it logs holds
//! neither the password nor the events' account ids, device fingerprints or IP addresses.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use riskstream_events::{Codec, SchemaKind, Verdict};
use riskstream_testkit::{free_port, repo_root, Broker, RedisServer, TlsFiles};

const BIN: &str = env!("CARGO_BIN_EXE_riskstream");
const PASSWORD: &str = "s3cret-Pw-42";

fn sigterm(child: &mut std::process::Child) -> std::process::ExitStatus {
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

/// redis-server with a TLS port beside its plain one (used only to see it is up), the default
/// user off and one ACL user, `app`, allowed only keys under `sec:`. Returns it and its TLS port.
fn redis_with_tls_and_acl(tls: &TlsFiles) -> (RedisServer, u16) {
    let tls_port = free_port();
    let (cert, key) = (tls.cert(), tls.key());
    let server = RedisServer::start_with(
        free_port(),
        &[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &cert.to_string_lossy(),
            "--tls-key-file",
            &key.to_string_lossy(),
            "--tls-ca-cert-file",
            &cert.to_string_lossy(),
            "--tls-auth-clients",
            "no",
            "--user",
            "default",
            "off",
            "--user",
            "app",
            "on",
            &format!(">{PASSWORD}"),
            "~sec:*",
            "+@all",
        ],
    );
    (server, tls_port)
}

#[test]
fn a_worker_on_tls_kafka_and_tls_redis_with_an_acl_user_logs_no_secrets_or_identifiers() {
    let tls = TlsFiles::generate();
    let broker = Broker::start_behind_tls(&tls);
    for (t, p) in [
        ("capture-sessions", 2),
        ("transactions", 2),
        ("verdicts", 2),
        ("verdicts-dlq", 1),
        ("labels", 1),
    ] {
        broker.create_topic(t, p);
    }
    let (_redis, redis_tls_port) = redis_with_tls_and_acl(&tls);
    let ca = tls.cert().to_string_lossy().into_owned();
    let kafka_tls = ["-X", "security.protocol=SSL", "-X"];
    let ca_location = format!("ssl.ca.location={ca}");

    // Traffic, over TLS too (the broker advertises only the proxy).
    let n = 400;
    let out = Command::new(BIN)
        .args(["simulate", "--brokers", &broker.bootstrap()])
        .args(["--events", &n.to_string(), "--seed", "71"])
        .args(kafka_tls)
        .arg(&ca_location)
        .output()
        .expect("simulate");
    assert!(
        out.status.success(),
        "simulate over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without the CA the broker's certificate is refused: nothing is consumed.
    let refused = Command::new(BIN)
        .args([
            "simulate",
            "--brokers",
            &broker.bootstrap(),
            "--events",
            "1",
        ])
        .args([
            "-X",
            "security.protocol=SSL",
            "-X",
            "message.timeout.ms=3000",
        ])
        .output()
        .expect("simulate");
    assert!(
        !refused.status.success(),
        "a producer that does not trust the broker's certificate must fail"
    );

    let store_url = format!("rediss://app:{PASSWORD}@127.0.0.1:{redis_tls_port}/");
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut worker = Command::new(BIN)
        .args(["run", "--brokers", &broker.bootstrap(), "--group", "sec"])
        .args(["--models", &repo_root().join("models").to_string_lossy()])
        .args(["--metrics-addr", "off", "--key-prefix", "sec"])
        .args(kafka_tls)
        .arg(&ca_location)
        .args(["-X", "consumer.session.timeout.ms=6000"])
        .args(["-X", "consumer.heartbeat.interval.ms=2000"])
        .env("RISKSTREAM_REDIS", &store_url)
        .env("SSL_CERT_FILE", &ca) // the CA of rediss:// (OpenSSL's default verify paths)
        .env("RISKSTREAM_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("log"))
        .spawn()
        .expect("run");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("security.protocol", "SSL")
        .set("ssl.ca.location", &ca)
        .set("group.id", "sec-reader")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "2000")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    consumer.subscribe(&["verdicts"]).expect("subscribe");
    let codec = Codec::registry_free();
    let mut verdicts: Vec<Verdict> = Vec::new();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consume over TLS");
            let v: Verdict = codec
                .decode_as(SchemaKind::Verdict, m.payload().expect("payload"))
                .expect("verdict");
            if seen.insert(v.event_id.clone()) {
                verdicts.push(v);
            }
        }
    }
    assert_eq!(seen.len(), n, "every event scored over TLS");
    assert!(
        verdicts.iter().all(|v| !v.degraded),
        "the ACL user reaches every key it needs: nothing degraded"
    );
    // Labels (simulate writes them) go through the same user; give them a moment.
    std::thread::sleep(Duration::from_secs(2));
    assert!(sigterm(&mut worker).success());

    // The store's keys are all under the user's prefix, and there are some.
    let keys = Command::new("redis-cli")
        .args(["--tls", "--cacert", &ca, "-p", &redis_tls_port.to_string()])
        .args(["--user", "app", "--pass", PASSWORD, "--no-auth-warning"])
        .args(["--scan", "--pattern", "sec:*"])
        .output()
        .expect("redis-cli");
    let keys = String::from_utf8_lossy(&keys.stdout);
    assert!(
        keys.lines().count() > 100,
        "the store wrote through TLS: {keys}"
    );

    let logged = std::fs::read_to_string(log.path()).expect("log");
    assert!(
        !logged.contains(PASSWORD),
        "the password was logged:\n{logged}"
    );
    assert!(
        logged.contains("label applied") && logged.contains("account=id:"),
        "labels are logged, accounts as pseudonyms:\n{logged}"
    );
    // No account id of the stream appears (simulated ids look like acct-<n>-<n>).
    for v in &verdicts {
        assert!(
            !logged.contains(&v.account_id),
            "account id {} was logged:\n{logged}",
            v.account_id
        );
    }
    assert!(
        !logged.contains("acct-"),
        "an account id was logged:\n{logged}"
    );

    // A wrong password: the worker says so and stops, without printing the password it was given.
    let wrong = format!("rediss://app:Wr0ng-{PASSWORD}@127.0.0.1:{redis_tls_port}/");
    let out = Command::new(BIN)
        .args([
            "run",
            "--brokers",
            &broker.bootstrap(),
            "--group",
            "sec-wrong",
        ])
        .args(["--models", &repo_root().join("models").to_string_lossy()])
        .args(["--metrics-addr", "off", "--broker-deadline-ms", "3000"])
        .args(kafka_tls)
        .arg(&ca_location)
        .env("RISKSTREAM_REDIS", &wrong)
        .env("SSL_CERT_FILE", &ca)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("rediss://app:***@127.0.0.1"), "{said}");
    assert!(
        !said.contains(PASSWORD),
        "the password was printed:\n{said}"
    );
}
