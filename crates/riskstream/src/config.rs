//! Worker configuration: defaults, then a TOML file (`--config`), then `RISKSTREAM_*`
//! environment variables, then flags. Every option is documented once, here (the README's
//! reference table is generated from the same names).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use riskstream_events::SubjectStrategy;
use riskstream_pipeline::{Delivery, Topics, WorkerConfig};
use serde::Deserialize;

/// Options shared by `run` (and, where they make sense, other commands).
#[derive(Args, Debug, Clone, Default)]
pub struct WorkerArgs {
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "RISKSTREAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers. [default: localhost:9092]
    #[arg(long, env = "RISKSTREAM_BROKERS")]
    pub brokers: Option<String>,
    /// Consumer group id; scale by starting more workers with the same group. [default: riskstream]
    #[arg(long, env = "RISKSTREAM_GROUP")]
    pub group: Option<String>,
    /// Feature store: `redis://host:port/` (one server), `redis+cluster://host:port,host:port,...`
    /// (Redis Cluster: any reachable nodes), or `memory` (process-local, single worker only).
    /// [default: redis://127.0.0.1:6379/]
    #[arg(long, env = "RISKSTREAM_REDIS")]
    pub redis: Option<String>,
    /// Prefix of every feature-store key: one namespace per deployment (or per replay). [default: riskstream]
    #[arg(long, env = "RISKSTREAM_KEY_PREFIX")]
    pub key_prefix: Option<String>,
    /// Model directory: `serving.toml` (champions, shadows, routes, decision policy) and the
    /// model directories it names. [default: models]
    #[arg(long, env = "RISKSTREAM_MODELS")]
    pub models: Option<PathBuf>,
    /// How often to look for changed models or serving.toml, ms (0: only on SIGHUP). [default: 2000]
    #[arg(long, env = "RISKSTREAM_MODEL_POLL_MS")]
    pub model_poll_ms: Option<u64>,
    /// Schema registry URL. Without it, output uses Avro single-object encoding (registry-free).
    #[arg(long, env = "RISKSTREAM_SCHEMA_REGISTRY")]
    pub schema_registry: Option<String>,
    /// Registry subject naming for output schemas: `topic` (`<topic>-value`), `record`
    /// (`<record full name>`) or `topic-record` (`<topic>-<record full name>`). [default: topic]
    #[arg(long, env = "RISKSTREAM_SUBJECT_NAME_STRATEGY")]
    pub subject_name_strategy: Option<String>,
    /// Address for the Prometheus metrics endpoint, or `off`. [default: 0.0.0.0:9464]
    #[arg(long, env = "RISKSTREAM_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Capture-session input topic. [default: capture-sessions]
    #[arg(long, env = "RISKSTREAM_TOPIC_CAPTURE_SESSIONS")]
    pub topic_capture_sessions: Option<String>,
    /// Transaction input topic. [default: transactions]
    #[arg(long, env = "RISKSTREAM_TOPIC_TRANSACTIONS")]
    pub topic_transactions: Option<String>,
    /// Verdict output topic. [default: verdicts]
    #[arg(long, env = "RISKSTREAM_TOPIC_VERDICTS")]
    pub topic_verdicts: Option<String>,
    /// Dead-letter topic. [default: verdicts-dlq]
    #[arg(long, env = "RISKSTREAM_TOPIC_DLQ")]
    pub topic_dlq: Option<String>,
    /// Labels topic, applied to the identity graph by every worker (empty: off). [default: labels]
    #[arg(long, env = "RISKSTREAM_TOPIC_LABELS")]
    pub topic_labels: Option<String>,
    /// Most records per batch. [default: 512]
    #[arg(long, env = "RISKSTREAM_BATCH_MAX")]
    pub batch_max: Option<usize>,
    /// Extra wait for a batch to fill even when the pipeline is idle, ms; 0 = adaptive: batches
    /// grow (up to --batch-max) only while the next stage is busy. [default: 0]
    #[arg(long, env = "RISKSTREAM_BATCH_LINGER_MS")]
    pub batch_linger_ms: Option<u64>,
    /// Deadline of one feature-store call, ms; a slower call's events are scored degraded.
    /// Batches are cut into calls that take about half of it. [default: 100]
    #[arg(long, env = "RISKSTREAM_STORE_DEADLINE_MS")]
    pub store_deadline_ms: Option<u64>,
    /// Events scored during a feature-store outage kept in memory to be recorded in the store
    /// once it answers (0 = off; past the bound the oldest are dropped). [default: 100000]
    #[arg(long, env = "RISKSTREAM_STORE_WRITEBACK_MAX")]
    pub store_writeback_max: Option<usize>,
    /// Memory for accounts' events and tiles kept between batches, checked against Redis by a
    /// token on every write (0 = off; plain redis:// only). [default: 0]
    #[arg(long, env = "RISKSTREAM_STORE_ACCOUNT_CACHE_MB")]
    pub store_account_cache_mb: Option<usize>,
    /// Batches whose feature-store calls may overlap (1 = one at a time); they still read
    /// and compute in batch order. [default: 2]
    #[arg(long, env = "RISKSTREAM_STORE_IN_FLIGHT")]
    pub store_in_flight: Option<usize>,
    /// How long a starting worker waits for a broker to answer, ms; then it exits with code 2
    /// and says so (0 = wait forever). [default: 60000]
    #[arg(long, env = "RISKSTREAM_BROKER_DEADLINE_MS")]
    pub broker_deadline_ms: Option<u64>,
    /// Plausibility bound: largest input record (its value), bytes; larger → dead-lettered
    /// (`oversized`) without being decoded. [default: 1048576]
    #[arg(long, env = "RISKSTREAM_MAX_RECORD_BYTES")]
    pub max_record_bytes: Option<usize>,
    /// Plausibility bound: longest string field of an input event (ids, hashes, names), bytes;
    /// longer → dead-lettered. [default: 1024]
    #[arg(long, env = "RISKSTREAM_MAX_STRING_BYTES")]
    pub max_string_bytes: Option<usize>,
    /// Plausibility bound: largest USD value of a transaction, whole dollars; larger →
    /// dead-lettered. [default: 10000000000]
    #[arg(long, env = "RISKSTREAM_MAX_AMOUNT_USD")]
    pub max_amount_usd: Option<i64>,
    /// Plausibility bound: how far an event time may be ahead of the worker's clock, ms.
    /// [default: 3600000]
    #[arg(long, env = "RISKSTREAM_MAX_FUTURE_SKEW_MS")]
    pub max_future_skew_ms: Option<u64>,
    /// Plausibility bound: how far an event time may be before the record's broker timestamp,
    /// ms (0 = unchecked; 30 days, the longest feature window, by default). [default: 2592000000]
    #[arg(long, env = "RISKSTREAM_MAX_EVENT_AGE_MS")]
    pub max_event_age_ms: Option<u64>,
    /// Delivery guarantee: `at-least-once` (offsets committed after the broker acknowledged a
    /// batch's outputs) or `exactly-once` (outputs and offsets in one Kafka transaction per
    /// batch). [default: at-least-once]
    #[arg(long, env = "RISKSTREAM_DELIVERY")]
    pub delivery: Option<String>,
    /// Exactly-once: this worker's stable, unique id in the group; its `transactional.id` is
    /// `<group>.<worker id>`, so a restarted worker fences its predecessor. Use the pod name of
    /// a StatefulSet. [default: $HOSTNAME, else the host name]
    #[arg(long, env = "RISKSTREAM_WORKER_ID")]
    pub worker_id: Option<String>,
    /// On a partition revocation (rebalance), how long to wait for the batches already read
    /// to be published and acknowledged, so their offsets are committed before the
    /// partitions go, ms (0 = do not wait). [default: 10000]
    #[arg(long, env = "RISKSTREAM_REVOKE_DRAIN_MS")]
    pub revoke_drain_ms: Option<u64>,
    /// Dead-letter cap: stop the worker (exit code 3) after this many invalid records in a row
    /// (0 = off). [default: 1000]
    #[arg(long, env = "RISKSTREAM_DLQ_MAX_CONSECUTIVE")]
    pub dlq_max_consecutive: Option<u64>,
    /// Dead-letter cap: stop the worker (exit code 3) when more than this share of the last
    /// 10 000 records is invalid, checked from 1 000 records on (1 = off). [default: 0.5]
    #[arg(long, env = "RISKSTREAM_DLQ_MAX_RATIO")]
    pub dlq_max_ratio: Option<f64>,
    /// Any librdkafka property, as in kcat: `-X linger.ms=5` (repeatable; env: semicolon-separated).
    /// Prefix the key with `consumer.` or `producer.` to set it on one client only.
    #[arg(
        short = 'X',
        value_name = "KEY=VALUE",
        env = "RISKSTREAM_KAFKA",
        value_delimiter = ';'
    )]
    pub kafka: Vec<String>,
}

/// The TOML file: the same options as the flags (snake_case), plus `[topics]` and `[kafka]`.
/// (The decision policy lives with the models, in `<models>/serving.toml`, and reloads with them.)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    brokers: Option<String>,
    group: Option<String>,
    redis: Option<String>,
    key_prefix: Option<String>,
    models: Option<PathBuf>,
    model_poll_ms: Option<u64>,
    schema_registry: Option<String>,
    subject_name_strategy: Option<String>,
    metrics_addr: Option<String>,
    batch_max: Option<usize>,
    batch_linger_ms: Option<u64>,
    store_deadline_ms: Option<u64>,
    store_writeback_max: Option<usize>,
    store_account_cache_mb: Option<usize>,
    store_in_flight: Option<usize>,
    broker_deadline_ms: Option<u64>,
    dlq_max_consecutive: Option<u64>,
    dlq_max_ratio: Option<f64>,
    revoke_drain_ms: Option<u64>,
    delivery: Option<String>,
    worker_id: Option<String>,
    max_record_bytes: Option<usize>,
    max_string_bytes: Option<usize>,
    max_amount_usd: Option<i64>,
    max_future_skew_ms: Option<u64>,
    max_event_age_ms: Option<u64>,
    topics: Option<Topics>,
    #[serde(default)]
    kafka: std::collections::BTreeMap<String, String>,
}

/// Where features live.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreChoice {
    Memory,
    Redis(String),
}

/// Fully resolved settings for a worker.
#[derive(Debug, Clone)]
pub struct Settings {
    pub worker: WorkerConfig,
    pub store: StoreChoice,
    pub key_prefix: String,
    pub models: PathBuf,
    /// 0: no polling (SIGHUP only).
    pub model_poll: Duration,
    pub metrics_addr: Option<SocketAddr>,
    /// The metrics address is the built-in default (not chosen by the operator): when its port
    /// is taken (a second worker on the host), another free port is used and logged.
    pub metrics_addr_is_default: bool,
    pub store_deadline: Duration,
    /// Events scored during a store outage kept to record later (0: off).
    pub store_writeback_max: usize,
    /// Memory for the Redis store's account cache, MB (0: off).
    pub store_account_cache_mb: usize,
    /// 0: wait for a broker forever.
    pub broker_deadline: Duration,
}

pub use riskstream_events::log_ids::redact_url;

/// Whether a librdkafka property holds a secret (its value is never printed).
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "ssl.key.pem",
        "ssl_key",
        "token",
    ]
    .iter()
    .any(|s| k.contains(s))
}

impl Settings {
    /// The effective configuration as TOML (the file format of `--config`), secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let w = &self.worker;
        let q = |s: &str| format!("{s:?}");
        let mut out = String::new();
        out += &format!("brokers = {}\n", q(&w.brokers));
        out += &format!("group = {}\n", q(&w.group));
        out += &format!(
            "redis = {}\n",
            q(&match &self.store {
                StoreChoice::Memory => "memory".to_string(),
                StoreChoice::Redis(url) => redact_url(url),
            })
        );
        out += &format!("key_prefix = {}\n", q(&self.key_prefix));
        out += &format!("models = {}\n", q(&self.models.display().to_string()));
        out += &format!("model_poll_ms = {}\n", self.model_poll.as_millis());
        if let Some(r) = &w.schema_registry {
            out += &format!("schema_registry = {}\n", q(&redact_url(r)));
        }
        out += &format!(
            "subject_name_strategy = {}\n",
            q(match w.subject_strategy {
                SubjectStrategy::Topic => "topic",
                SubjectStrategy::Record => "record",
                SubjectStrategy::TopicRecord => "topic-record",
            })
        );
        out += &format!(
            "metrics_addr = {}\n",
            q(&self.metrics_addr.map_or("off".into(), |a| a.to_string()))
        );
        out += &format!("batch_max = {}\n", w.batch_max);
        out += &format!("dlq_max_consecutive = {}\n", w.dlq_limit.max_consecutive);
        out += &format!("dlq_max_ratio = {}\n", w.dlq_limit.max_ratio);
        out += &format!("batch_linger_ms = {}\n", w.batch_linger.as_millis());
        out += &format!("store_deadline_ms = {}\n", self.store_deadline.as_millis());
        out += &format!("store_writeback_max = {}\n", self.store_writeback_max);
        out += &format!("store_account_cache_mb = {}\n", self.store_account_cache_mb);
        out += &format!("store_in_flight = {}\n", w.store_in_flight);
        out += &format!("revoke_drain_ms = {}\n", w.revoke_drain.as_millis());
        out += &format!("max_record_bytes = {}\n", w.bounds.max_record_bytes);
        out += &format!("max_string_bytes = {}\n", w.bounds.max_string_bytes);
        out += &format!("max_amount_usd = {}\n", w.bounds.max_usd_cents / 100);
        out += &format!("max_future_skew_ms = {}\n", w.bounds.max_future_ms);
        out += &format!("max_event_age_ms = {}\n", w.bounds.max_age_ms);
        match &w.delivery {
            Delivery::AtLeastOnce => out += "delivery = \"at-least-once\"\n",
            Delivery::ExactlyOnce { transactional_id } => {
                out += "delivery = \"exactly-once\"\n";
                out += &format!("# transactional.id = {}\n", q(transactional_id));
            }
        }
        out += &format!(
            "broker_deadline_ms = {}\n",
            self.broker_deadline.as_millis()
        );
        out += "\n[topics]\n";
        for (k, v) in [
            ("capture_sessions", &w.topics.capture_sessions),
            ("transactions", &w.topics.transactions),
            ("verdicts", &w.topics.verdicts),
            ("dead_letters", &w.topics.dead_letters),
            ("labels", &w.topics.labels),
        ] {
            out += &format!("{k} = {}\n", q(v));
        }
        out += "\n[kafka]\n";
        for (k, v) in &w.kafka {
            let v = if is_secret_property(k) {
                "***"
            } else {
                v.as_str()
            };
            out += &format!("{} = {}\n", q(k), q(v));
        }
        out
    }
}

pub fn parse_kafka_prop(s: &str) -> anyhow::Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => bail!("-X expects KEY=VALUE (a librdkafka property), got `{s}`"),
    }
}

impl WorkerArgs {
    pub fn resolve(&self) -> anyhow::Result<Settings> {
        let file: FileConfig = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let pick = |flag: &Option<String>, file: &Option<String>, default: &str| {
            flag.clone()
                .or_else(|| file.clone())
                .unwrap_or_else(|| default.to_string())
        };
        let brokers = pick(&self.brokers, &file.brokers, "localhost:9092");
        let group = pick(&self.group, &file.group, "riskstream");
        let mut worker = WorkerConfig::new(&brokers, &group);
        let mut topics = file.topics.unwrap_or_default();
        for (flag, slot) in [
            (&self.topic_capture_sessions, &mut topics.capture_sessions),
            (&self.topic_transactions, &mut topics.transactions),
            (&self.topic_verdicts, &mut topics.verdicts),
            (&self.topic_dlq, &mut topics.dead_letters),
            (&self.topic_labels, &mut topics.labels),
        ] {
            if let Some(v) = flag {
                *slot = v.clone();
            }
        }
        worker.topics = topics;
        worker.batch_max = self.batch_max.or(file.batch_max).unwrap_or(512);
        worker.dlq_limit = riskstream_pipeline::dlq_limit::DlqLimit {
            max_consecutive: self
                .dlq_max_consecutive
                .or(file.dlq_max_consecutive)
                .unwrap_or(1_000),
            max_ratio: self.dlq_max_ratio.or(file.dlq_max_ratio).unwrap_or(0.5),
        };
        if worker.dlq_limit.max_ratio.is_nan() || worker.dlq_limit.max_ratio <= 0.0 {
            bail!("dlq_max_ratio: expected a share in (0, 1] (1 = off)");
        }
        if worker.batch_max == 0 {
            bail!("batch_max must be at least 1");
        }
        worker.store_in_flight = self.store_in_flight.or(file.store_in_flight).unwrap_or(2);
        if worker.store_in_flight == 0 {
            bail!("store_in_flight must be at least 1");
        }
        worker.batch_linger =
            Duration::from_millis(self.batch_linger_ms.or(file.batch_linger_ms).unwrap_or(0));
        worker.delivery = match pick(&self.delivery, &file.delivery, "at-least-once").as_str() {
            "at-least-once" => Delivery::AtLeastOnce,
            "exactly-once" => {
                let id = self
                    .worker_id
                    .clone()
                    .or(file.worker_id.clone())
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .or_else(|| {
                        std::fs::read_to_string("/etc/hostname")
                            .ok()
                            .map(|h| h.trim().to_string())
                    })
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "worker_id: exactly-once needs a stable worker id (--worker-id)"
                        )
                    })?;
                Delivery::ExactlyOnce {
                    transactional_id: format!("{}.{id}", worker.group),
                }
            }
            other => bail!("delivery: expected `at-least-once` or `exactly-once`, got `{other}`"),
        };
        let defaults = riskstream_events::Bounds::default();
        let max_amount_usd = self
            .max_amount_usd
            .or(file.max_amount_usd)
            .unwrap_or(defaults.max_usd_cents / 100);
        worker.bounds = riskstream_events::Bounds {
            max_record_bytes: self
                .max_record_bytes
                .or(file.max_record_bytes)
                .unwrap_or(defaults.max_record_bytes),
            max_string_bytes: self
                .max_string_bytes
                .or(file.max_string_bytes)
                .unwrap_or(defaults.max_string_bytes),
            max_usd_cents: max_amount_usd
                .checked_mul(100)
                .filter(|c| *c > 0)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "max_amount_usd: expected 1 ..= 92233720368547758, got {max_amount_usd}"
                    )
                })?,
            max_future_ms: self
                .max_future_skew_ms
                .or(file.max_future_skew_ms)
                .map_or(defaults.max_future_ms, |v| v.min(i64::MAX as u64) as i64),
            max_age_ms: self
                .max_event_age_ms
                .or(file.max_event_age_ms)
                .map_or(defaults.max_age_ms, |v| v.min(i64::MAX as u64) as i64),
        };
        if worker.bounds.max_record_bytes == 0 {
            bail!("max_record_bytes must be at least 1");
        }
        if worker.bounds.max_string_bytes == 0 {
            bail!("max_string_bytes must be at least 1");
        }
        worker.revoke_drain = Duration::from_millis(
            self.revoke_drain_ms
                .or(file.revoke_drain_ms)
                .unwrap_or(10_000),
        );
        worker.schema_registry = self.schema_registry.clone().or(file.schema_registry);
        let strategy = pick(
            &self.subject_name_strategy,
            &file.subject_name_strategy,
            "topic",
        );
        worker.subject_strategy = SubjectStrategy::parse(&strategy).ok_or_else(|| {
            anyhow::anyhow!(
                "subject_name_strategy: `{strategy}` is not one of {}",
                SubjectStrategy::NAMES
            )
        })?;
        worker.kafka = file.kafka.into_iter().collect();
        for p in &self.kafka {
            worker.kafka.push(parse_kafka_prop(p)?);
        }
        let redis = pick(&self.redis, &file.redis, "redis://127.0.0.1:6379/");
        let store = match redis.as_str() {
            "memory" | "memory://" => StoreChoice::Memory,
            url if url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("redis+cluster://") =>
            {
                StoreChoice::Redis(url.to_string())
            }
            other => bail!(
                "redis: expected a redis:// or redis+cluster:// URL, or `memory`, got `{other}`"
            ),
        };
        let metrics = pick(&self.metrics_addr, &file.metrics_addr, "0.0.0.0:9464");
        let metrics_addr = match metrics.as_str() {
            "off" | "" => None,
            addr => Some(addr.parse().with_context(|| {
                format!("metrics_addr: expected HOST:PORT or `off`, got `{addr}`")
            })?),
        };
        Ok(Settings {
            worker,
            store,
            key_prefix: pick(&self.key_prefix, &file.key_prefix, "riskstream"),
            models: self
                .models
                .clone()
                .or(file.models)
                .unwrap_or_else(|| PathBuf::from("models")),
            metrics_addr,
            metrics_addr_is_default: self.metrics_addr.is_none() && file.metrics_addr.is_none(),
            store_deadline: Duration::from_millis(
                self.store_deadline_ms
                    .or(file.store_deadline_ms)
                    .unwrap_or(100),
            ),
            store_writeback_max: self
                .store_writeback_max
                .or(file.store_writeback_max)
                .unwrap_or(100_000),
            store_account_cache_mb: self
                .store_account_cache_mb
                .or(file.store_account_cache_mb)
                .unwrap_or(0),
            model_poll: Duration::from_millis(
                self.model_poll_ms.or(file.model_poll_ms).unwrap_or(2000),
            ),
            broker_deadline: Duration::from_millis(
                self.broker_deadline_ms
                    .or(file.broker_deadline_ms)
                    .unwrap_or(60_000),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("rs-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "brokers = \"file:1\"\ngroup = \"g-file\"\nbatch_max = 7\n[topics]\nverdicts = \"v-file\"\n[kafka]\n\"fetch.wait.max.ms\" = \"10\"\n").unwrap();
        let args = WorkerArgs {
            config: Some(path),
            group: Some("g-flag".into()),
            kafka: vec!["linger.ms=1".into()],
            ..Default::default()
        };
        let s = args.resolve().unwrap();
        assert_eq!(s.worker.brokers, "file:1");
        assert_eq!(s.worker.group, "g-flag");
        assert_eq!(s.worker.batch_max, 7);
        assert_eq!(s.worker.topics.verdicts, "v-file");
        assert_eq!(s.worker.topics.transactions, "transactions");
        assert_eq!(
            s.worker.kafka,
            vec![
                ("fetch.wait.max.ms".into(), "10".into()),
                ("linger.ms".into(), "1".into())
            ]
        );
        assert_eq!(
            s.store,
            StoreChoice::Redis("redis://127.0.0.1:6379/".into())
        );
    }

    #[test]
    fn the_example_config_parses() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/riskstream.example.toml");
        let s = WorkerArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(s.model_poll, Duration::from_millis(2000));
        assert_eq!(s.models, PathBuf::from("/opt/riskstream/models"));
    }

    #[test]
    fn printed_config_hides_secrets_and_parses_back() {
        assert_eq!(
            redact_url("redis://app:s3cret@redis:6379/0"),
            "redis://app:***@redis:6379/0"
        );
        assert_eq!(redact_url("redis://s3cret@redis/"), "redis://***@redis/");
        assert_eq!(
            redact_url("redis+cluster://u:p@a:1,b:2"),
            "redis+cluster://u:***@a:1,b:2"
        );
        assert_eq!(redact_url("redis://redis:6379/"), "redis://redis:6379/");
        let s = WorkerArgs {
            redis: Some("redis://app:s3cret@redis:6379/".into()),
            kafka: vec![
                "sasl.password=hunter2".into(),
                "security.protocol=SASL_SSL".into(),
            ],
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let text = s.to_redacted_toml();
        assert!(
            !text.contains("s3cret") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(
            text.contains("SASL_SSL") && text.contains("app:***@redis"),
            "{text}"
        );
        // The output is a valid --config file.
        let parsed: FileConfig = toml::from_str(&text).expect("printed config parses");
        assert_eq!(parsed.batch_max, Some(512));
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = WorkerArgs {
            redis: Some("mysql://x".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("redis"), "{err}");
        let err = WorkerArgs {
            kafka: vec!["nokey".into()],
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("-X"), "{err}");
        let err = WorkerArgs {
            subject_name_strategy: Some("TopicNameStrategy".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(
            err.to_string().contains("subject_name_strategy")
                && err.to_string().contains("topic-record"),
            "{err}"
        );
        let ok = WorkerArgs {
            subject_name_strategy: Some("record".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(ok.worker.subject_strategy, SubjectStrategy::Record);
    }
}
