//! The worker's chains: consume → decode → enrich → score → publish → acknowledge → store
//! offsets for scoring, consume → copy → acknowledge for the passthrough ceiling, built from
//! the stages in [`crate::stages`] around one Kafka lifecycle ([`drive`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use riskstream_events::{dlq_headers, Codec, Event, SourcePosition};
use riskstream_features::FeatureStore;
use tokio::sync::{mpsc, watch};

use crate::config::WorkerConfig;
use crate::metrics as m;
use crate::scorer::{Buffers, Enriched, Scorer};
use crate::stages::{self, now_ms, Batch, Batching, Chain, Records, Stage};
use crate::transact::Txn;

/// The worker stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("a verdict or dead letter was not acknowledged by the broker ({0}); offsets were not committed past it")]
    Delivery(KafkaError),
    #[error("encoding output: {0}")]
    Encode(#[from] riskstream_events::EncodeError),
    #[error("worker task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// Exactly-once: another producer with this worker's `transactional.id` took over, or the
    /// group moved on without this worker. It must stop: it is a zombie.
    #[error("fenced: another worker with the same transactional.id (or a newer group generation) took over ({0}); this worker stops")]
    Fenced(String),
    /// Exactly-once: a batch's transaction failed every attempt.
    #[error("transaction failed: {0}")]
    Transaction(KafkaError),
    /// A replay's sink (file, side topic) failed.
    #[error("{0}")]
    Sink(String),
    /// Too many invalid records: the worker stops instead of dead-lettering all traffic.
    #[error("stopped by the dead-letter cap: {0}")]
    DeadLetterCap(#[from] crate::dlq_limit::CapTripped),
}

/// What one worker did, returned when it stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerReport {
    pub consumed: u64,
    pub verdicts: u64,
    pub dead_letters: u64,
    pub batches: u64,
}

/// Consumer context: exports consumer lag from librdkafka statistics, logs rebalances, and
/// reports broker reachability (and, for the scoring consumer, its assignment) to the health
/// state.
struct WorkerContext {
    reports_assignment: bool,
    /// The chain's progress, drained on revocation for at most `revoke_drain`.
    progress: Arc<stages::Progress>,
    revoke_drain: Duration,
    /// Exactly-once: offsets go with transactions; a revocation starts a new epoch instead of
    /// committing.
    transactional: bool,
}

impl ClientContext for WorkerContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode as Code;
        match error.rdkafka_error_code() {
            // Said once, by the health state, when it changes.
            Some(Code::AllBrokersDown) => crate::health::health().set_broker_up(false),
            Some(Code::BrokerTransportFailure) => tracing::debug!(%error, reason, "librdkafka"),
            _ => tracing::error!(%error, reason, "librdkafka"),
        }
    }
    fn stats(&self, stats: Statistics) {
        crate::health::observe_brokers(&stats);
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!(m::CONSUMER_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                        .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for WorkerContext {
    /// Before partitions go: wait (bounded) until every batch already read is published and
    /// acknowledged, then commit the stored offsets synchronously, so the new owner starts
    /// after them instead of re-scoring them. Runs inside the source's `recv`; the wait and the
    /// commit block, so they run in place of the async thread's other tasks.
    fn pre_rebalance(
        &self,
        c: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        let rdkafka::consumer::Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        // After the chain stopped (shutdown: the final commit already ran) there is nothing
        // to wait for or commit.
        if tpl.count() == 0 || self.progress.closed() {
            return;
        }
        // Records the source fetched from these partitions and still holds are not scored here.
        self.progress.revoked(
            tpl.elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition())),
        );
        if self.revoke_drain.is_zero() && !self.transactional {
            return;
        }
        let started = Instant::now();
        stages::block_in_place(|| {
            let pending = self.progress.drain(self.revoke_drain);
            if self.transactional {
                // Batches read before this point and not committed yet are aborted, not
                // committed late (their partitions are re-read from the committed offsets).
                self.progress.next_epoch();
            }
            let committed = self.transactional
                || match c.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "commit on revocation failed; the new owner re-scores from the last commit");
                        false
                    }
                };
            let took_ms = started.elapsed().as_millis() as u64;
            if pending > 0 {
                tracing::warn!(pending, took_ms, "revocation drain timed out; batches still in flight are re-scored by the new owner");
            } else if committed {
                tracing::info!(
                    partitions = tpl.count(),
                    took_ms,
                    "in-flight batches drained and committed before revocation"
                );
            } else {
                tracing::warn!(
                    partitions = tpl.count(),
                    took_ms,
                    "in-flight batches drained before revocation, but the broker refused the commit; the new owner re-scores from the last commit"
                );
            }
            let outcome = if pending > 0 {
                "timeout"
            } else if committed {
                "drained"
            } else {
                "commit_failed"
            };
            metrics::counter!(m::REVOKE_DRAINS, "outcome" => outcome).increment(1);
        });
    }

    fn post_rebalance(
        &self,
        _c: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        let kind = match rebalance {
            rdkafka::consumer::Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                if self.reports_assignment {
                    crate::health::health().add_assigned(tpl.count() as i64);
                }
                // An assignment came from the group coordinator: a broker answers.
                crate::health::health().set_broker_up(true);
                "assign"
            }
            rdkafka::consumer::Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                if self.reports_assignment {
                    crate::health::health().add_assigned(-(tpl.count() as i64));
                }
                "revoke"
            }
            rdkafka::consumer::Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error");
                "error"
            }
        };
        metrics::counter!(m::REBALANCES, "kind" => kind).increment(1);
    }
}

type WorkerConsumer = StreamConsumer<WorkerContext>;

/// Builds the consumer and producer configs (defaults, then the user's `-X` overrides; a
/// `consumer.` or `producer.` prefix applies a property to that client only).
pub fn client_configs(cfg: &WorkerConfig) -> (ClientConfig, ClientConfig) {
    let mut consumer = ClientConfig::new();
    consumer
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", &cfg.group)
        .set("enable.auto.commit", "true")
        // Offsets are stored by the acker only after delivery; auto-commit commits what is stored.
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("statistics.interval.ms", "5000")
        // Latency: a fetch waits at most 10 ms for data (librdkafka's default, 500 ms, is what an
        // idle partition adds to the next record's latency on brokers that hold fetches until
        // the wait expires, as tansu does). Not lower: every fetch costs the broker work (tansu
        // lists each partition's stored batches per fetch), and at 2 000 events/s on a shared
        // box 5 ms gave a worse p99 than 10 in five of six benchmark pairs (BENCHMARKS.md).
        .set("fetch.wait.max.ms", "10");
    let mut producer = ClientConfig::new();
    producer
        .set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set("compression.type", "lz4");
    if let crate::config::Delivery::ExactlyOnce { transactional_id } = &cfg.delivery {
        // Offsets go with each batch's transaction, never by auto-commit; inputs written in
        // transactions upstream are read once committed; the eager assignor revokes everything
        // on a rebalance, so positions restart from committed offsets (see `transact`).
        consumer
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("partition.assignment.strategy", "range");
        producer.set("transactional.id", transactional_id);
    }
    for (k, v) in &cfg.kafka {
        if let Some(k) = k.strip_prefix("consumer.") {
            consumer.set(k, v);
        } else if let Some(k) = k.strip_prefix("producer.") {
            producer.set(k, v);
        } else {
            match client_of(k) {
                Client::Consumer => {
                    consumer.set(k, v);
                }
                Client::Producer => {
                    producer.set(k, v);
                }
                Client::Both => {
                    consumer.set(k, v);
                    producer.set(k, v);
                }
            }
        }
    }
    (consumer, producer)
}

/// Which librdkafka client a property belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Consumer,
    Producer,
    Both,
}

/// Consumer-only properties (librdkafka CONFIGURATION.md, "C"): set on the producer they only
/// make librdkafka print CONFWARN lines.
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.protocol.type",
    "group.remote.assignor",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "isolation.level",
    "enable.partition.eof",
    "check.crcs",
    "auto.offset.reset",
    "consume.callback.max.messages",
    "offset.store.method",
];

/// Producer-only properties (librdkafka CONFIGURATION.md, "P").
const PRODUCER_ONLY: &[&str] = &[
    "transactional.id",
    "transaction.timeout.ms",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.ms",
    "linger.ms",
    "message.send.max.retries",
    "retries",
    "queue.buffering.backpressure.threshold",
    "compression.codec",
    "compression.type",
    "compression.level",
    "batch.num.messages",
    "batch.size",
    "delivery.report.only.error",
    "sticky.partitioning.linger.ms",
    "request.required.acks",
    "acks",
    "request.timeout.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "partitioner",
    "message.copy.max.bytes",
];

/// The client an unprefixed `-X` property goes to: the one that knows it, or both.
pub fn client_of(key: &str) -> Client {
    if CONSUMER_ONLY.contains(&key) {
        Client::Consumer
    } else if PRODUCER_ONLY.contains(&key) {
        Client::Producer
    } else {
        Client::Both
    }
}

/// Runs one worker until `shutdown` turns true (then drains, commits and leaves the group)
/// or a fatal error occurs. The scoring chain:
/// source → decode → enrich → score → publish → acknowledge (see [`crate::stages`]).
pub async fn run<S: FeatureStore>(
    cfg: WorkerConfig,
    scorer: Arc<Scorer<S>>,
    shutdown: watch::Receiver<bool>,
) -> Result<WorkerReport, WorkerError> {
    let codec = Arc::new(
        match &cfg.schema_registry {
            Some(url) => Codec::with_registry(url, cfg.subject_strategy),
            None => Codec::registry_free(),
        }
        .with_bounds(cfg.bounds),
    );
    let cfg = Arc::new(cfg);
    // The outage write-back, recorded while no traffic comes (`Scorer::drain_writeback_when_idle`).
    let idle_drain = {
        let (scorer, mut shutdown) = (scorer.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WRITEBACK_IDLE_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        scorer.drain_writeback_when_idle(WRITEBACK_IDLE_TICK).await;
                    }
                    _ = shutdown.changed() => return,
                }
                if *shutdown.borrow() {
                    return;
                }
            }
        })
    };
    let report = drive(&cfg, shutdown, |rx, producer, report, txn| {
        let (rx, decode) = stages::spawn(
            Decode::new(cfg.clone(), codec.clone(), report.clone(), cfg.dlq_limit),
            rx,
        );
        let (rx, enrich) = stages::spawn_concurrent(
            Enrich {
                scorer: scorer.clone(),
            },
            rx,
            cfg.store_in_flight,
        );
        let (rx, score) = stages::spawn(
            Score {
                scorer,
                codec,
                topic: cfg.topics.verdicts.clone(),
                buffers: Buffers::default(),
            },
            rx,
        );
        let (rx, publish) = stages::spawn(
            Publish {
                cfg: cfg.clone(),
                producer,
                report,
                txn,
            },
            rx,
        );
        (rx, vec![decode, enrich, score, publish])
    })
    .await;
    idle_drain.abort();
    report
}

/// How long the enrich stage must have been idle before the outage write-back is recorded
/// without a batch, and how often that is checked.
const WRITEBACK_IDLE_TICK: std::time::Duration = std::time::Duration::from_millis(500);

/// Like [`run`], but copies each input record to the verdict topic unchanged, with the same
/// consumer, batching, producer and acknowledgement path: the ceiling for benchmarks.
/// The chain: source → copy → acknowledge.
pub async fn run_passthrough(
    cfg: WorkerConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<WorkerReport, WorkerError> {
    let cfg = Arc::new(cfg);
    // Passthrough is a benchmark ceiling: at-least-once whatever `delivery` says.
    let cfg = Arc::new(WorkerConfig {
        delivery: crate::config::Delivery::AtLeastOnce,
        ..(*cfg).clone()
    });
    drive(&cfg, shutdown, |rx, producer, report, _| {
        let (rx, copy) = stages::spawn(
            CopyRecords {
                topic: cfg.topics.verdicts.clone(),
                producer,
                report,
            },
            rx,
        );
        (rx, vec![copy])
    })
    .await
}

/// Counters shared by a chain's stages.
pub(crate) type Shared<R> = Arc<std::sync::Mutex<R>>;
type SharedReport = Shared<WorkerReport>;

/// What a chain consumes: a consumer config (group included) and its topics.
pub(crate) struct Input<'a> {
    pub consumer: ClientConfig,
    pub topics: Vec<&'a str>,
    /// This consumer's assignment is the worker's (reported by `/readyz`); the labels
    /// consumer's is not.
    pub reports_assignment: bool,
    /// Exactly-once: the producer is transactional and the chain's last stage commits each
    /// batch's offsets in its transaction.
    pub transactional: bool,
}

/// Runs a chain ([`drive_chain`]) on the worker's input topics and its consumer group.
async fn drive<F>(
    cfg: &WorkerConfig,
    shutdown: watch::Receiver<bool>,
    build: F,
) -> Result<WorkerReport, WorkerError>
where
    F: FnOnce(mpsc::Receiver<Records>, FutureProducer, SharedReport, Option<Txn>) -> Chain,
{
    let (consumer, producer) = client_configs(cfg);
    let input = Input {
        consumer,
        topics: vec![&cfg.topics.capture_sessions, &cfg.topics.transactions],
        reports_assignment: true,
        transactional: matches!(cfg.delivery, crate::config::Delivery::ExactlyOnce { .. }),
    };
    let report = drive_chain(cfg, input, producer, shutdown, build).await?;
    tracing::info!(?report, "worker stopped");
    Ok(report)
}

/// The Kafka lifecycle around a chain: consumer and producer, the source, the chain that
/// `build` makes between them, the acknowledgement stage, and at the end one synchronous
/// commit, leaving the group and flushing the producer (each off the async threads).
pub(crate) async fn drive_chain<R, F>(
    cfg: &WorkerConfig,
    input: Input<'_>,
    producer_cfg: ClientConfig,
    shutdown: watch::Receiver<bool>,
    build: F,
) -> Result<R, WorkerError>
where
    R: Default + Copy + Send + 'static,
    F: FnOnce(mpsc::Receiver<Records>, FutureProducer, Shared<R>, Option<Txn>) -> Chain,
{
    let progress = Arc::new(stages::Progress::default());
    let consumer: Arc<WorkerConsumer> =
        Arc::new(input.consumer.create_with_context(WorkerContext {
            reports_assignment: input.reports_assignment,
            progress: progress.clone(),
            revoke_drain: cfg.revoke_drain,
            transactional: input.transactional,
        })?);
    let (producer, txn) = if input.transactional {
        // Fences a predecessor with the same transactional.id before anything is consumed.
        let producer = crate::transact::init(&producer_cfg).await?;
        tracing::info!("exactly-once: transactional producer initialised");
        let c = consumer.clone();
        let txn = Txn {
            producer_cfg,
            group_metadata: Box::new(move || c.group_metadata()),
            progress: progress.clone(),
        };
        (producer, Some(txn))
    } else {
        (producer_cfg.create()?, None)
    };
    consumer.subscribe(&input.topics)?;
    tracing::info!(topics = ?input.topics, brokers = %cfg.brokers, "subscribed");

    let report: Shared<R> = Arc::default();
    let (tx, rx) = mpsc::channel(1);
    let batching = Batching {
        max: cfg.batch_max,
        linger: cfg.batch_linger,
    };
    let mut tasks = vec![tokio::spawn(stages::source(
        consumer.clone(),
        batching,
        shutdown,
        tx,
        progress.clone(),
    ))];
    let (rx, chain) = build(rx, producer.clone(), report.clone(), txn);
    tasks.extend(chain);
    tasks.push(tokio::spawn(stages::acknowledge(
        consumer.clone(),
        rx,
        progress.clone(),
        !input.transactional,
    )));
    let result = stages::join(tasks).await;
    progress.close();
    let report = *report.lock().expect("report lock");
    if result.is_ok() {
        // Final commit of everything stored (exactly-once: committed with the transactions),
        // then leave the group; both block, so off the async threads.
        let c = consumer.clone();
        let commit = !input.transactional;
        tokio::task::spawn_blocking(move || {
            match if commit { c.commit_consumer_state(CommitMode::Sync) } else { Ok(()) } {
                Ok(()) => {}
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                // Another member leaving at the same moment bumps the generation; what was stored is
                // re-delivered at worst (at-least-once), and the periodic auto-commit covered the rest.
                Err(e) => tracing::warn!(error = %e, "final commit failed; uncommitted records will be redelivered"),
            }
            c.unsubscribe();
        })
        .await?;
    }
    tokio::task::spawn_blocking(move || drop(consumer)).await?;
    tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await??;
    result?;
    Ok(report)
}

/// Sends a record, waiting while the producer queue is full.
pub(crate) async fn send(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, [u8], [u8]>,
) -> Result<DeliveryFuture, WorkerError> {
    loop {
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// copy: each record to `topic` unchanged (key, payload, headers).
struct CopyRecords {
    topic: String,
    producer: FutureProducer,
    report: SharedReport,
}

impl Stage for CopyRecords {
    type In = Vec<OwnedMessage>;
    type Out = Vec<DeliveryFuture>;
    fn name(&self) -> &'static str {
        "copy"
    }
    async fn process(&mut self, batch: Batch<Self::In>) -> Result<Batch<Self::Out>, WorkerError> {
        let mut deliveries = Vec::with_capacity(batch.data.len());
        for msg in &batch.data {
            let mut record = FutureRecord::to(&self.topic).payload(msg.payload().unwrap_or(&[]));
            if let Some(k) = msg.key() {
                record = record.key(k);
            }
            if let Some(h) = msg.headers() {
                record = record.headers(h.clone());
            }
            deliveries.push(send(&self.producer, record).await?);
        }
        {
            let mut r = self.report.lock().expect("report lock");
            r.batches += 1;
            r.consumed += batch.data.len() as u64;
            r.verdicts += batch.data.len() as u64;
        }
        Ok(batch.with(deliveries))
    }
}

/// A record that goes to the dead-letter topic, and why.
pub(crate) struct DeadLetter {
    msg: OwnedMessage,
    error: String,
    kind: &'static str,
}

/// A batch after decoding: the events (with where each was read) and the dead letters.
pub(crate) struct Decoded {
    pub(crate) events: Vec<Event>,
    pub(crate) sources: Vec<SourcePosition>,
    pub(crate) dead: Vec<DeadLetter>,
}

/// decode: Avro records → validated events; what fails becomes a dead letter (compute pool:
/// decoding is CPU work and may call the schema registry on a cache miss).
pub(crate) struct Decode {
    pub(crate) cfg: Arc<WorkerConfig>,
    pub(crate) codec: Arc<Codec>,
    pub(crate) report: SharedReport,
    limit: crate::dlq_limit::DlqLimitState,
    /// Dead-letter log lines: at most [`LOG_LINES_PER_SECOND`] a second, then one summary.
    log_second: std::time::Instant,
    logged: u32,
    suppressed: u64,
}

/// Dead-letter WARN lines per second; the rest are counted and summarised.
const LOG_LINES_PER_SECOND: u32 = 10;

impl Decode {
    pub(crate) fn new(
        cfg: Arc<WorkerConfig>,
        codec: Arc<Codec>,
        report: SharedReport,
        limit: crate::dlq_limit::DlqLimit,
    ) -> Self {
        Decode {
            cfg,
            codec,
            report,
            limit: crate::dlq_limit::DlqLimitState::new(limit),
            log_second: std::time::Instant::now(),
            logged: 0,
            suppressed: 0,
        }
    }

    fn log_dead_letter(&mut self, d: &DeadLetter) {
        if self.log_second.elapsed() >= std::time::Duration::from_secs(1) {
            if self.suppressed > 0 {
                tracing::warn!(suppressed = self.suppressed, "more dead letters in the last second (not logged one by one; riskstream_dead_letters_total counts them)");
            }
            self.log_second = std::time::Instant::now();
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < LOG_LINES_PER_SECOND {
            self.logged += 1;
            tracing::warn!(topic = d.msg.topic(), partition = d.msg.partition(), offset = d.msg.offset(), error = %d.error, "dead letter");
        } else {
            self.suppressed += 1;
        }
    }
}

impl Stage for Decode {
    type In = Vec<OwnedMessage>;
    type Out = Decoded;
    fn name(&self) -> &'static str {
        "decode"
    }
    async fn process(&mut self, batch: Batch<Self::In>) -> Result<Batch<Self::Out>, WorkerError> {
        {
            let mut r = self.report.lock().expect("report lock");
            r.batches += 1;
            r.consumed += batch.data.len() as u64;
        }
        for topic in [
            &self.cfg.topics.capture_sessions,
            &self.cfg.topics.transactions,
        ] {
            let n = batch
                .data
                .iter()
                .filter(|b| b.topic() == topic.as_str())
                .count();
            if n > 0 {
                metrics::counter!(m::CONSUMED, "topic" => topic.clone()).increment(n as u64);
            }
        }
        let codec = self.codec.clone();
        let cfg = self.cfg.clone();
        let Batch {
            data: msgs,
            offsets,
        } = batch;
        let decoded = stages::compute(move || {
            let now = now_ms();
            let mut out = Decoded {
                events: Vec::with_capacity(msgs.len()),
                sources: Vec::with_capacity(msgs.len()),
                dead: Vec::new(),
            };
            // Per record, in order: dead-lettered? (for the cap)
            let mut invalid = Vec::with_capacity(msgs.len());
            for msg in msgs {
                let payload = msg.payload().unwrap_or(&[]);
                let result = codec.decode_event(payload).and_then(|e| {
                    // decode_event checked the rest with the same bounds (the codec's).
                    e.validate_at(now, msg.timestamp().to_millis(), &cfg.bounds)?;
                    Ok(e)
                });
                // The topic contract: capture sessions on the capture-session topic, transactions
                // on the transaction topic (records from a topic that is neither, e.g. a replay
                // of differently named topics, are taken as they come).
                let result = result.and_then(|e| {
                    let expected = match &e {
                        Event::CaptureSession(_) => &cfg.topics.capture_sessions,
                        Event::Transaction(_) => &cfg.topics.transactions,
                    };
                    let known = msg.topic() == cfg.topics.capture_sessions
                        || msg.topic() == cfg.topics.transactions;
                    if !known || msg.topic() == expected.as_str() {
                        Ok(e)
                    } else {
                        Err(riskstream_events::DecodeError::WrongTopic {
                            record: match e {
                                Event::CaptureSession(_) => "CaptureSession",
                                Event::Transaction(_) => "Transaction",
                            },
                            expected: expected.clone(),
                        })
                    }
                });
                invalid.push(result.is_err());
                match result {
                    Ok(event) => {
                        out.sources.push(SourcePosition {
                            topic: msg.topic().to_string(),
                            partition: msg.partition(),
                            offset: msg.offset(),
                        });
                        out.events.push(event);
                    }
                    Err(err) => out.dead.push(DeadLetter {
                        error: err.to_string(),
                        kind: err.kind(),
                        msg,
                    }),
                }
            }
            (out, invalid)
        })
        .await?;
        let (decoded, invalid) = decoded;
        for d in &decoded.dead {
            self.log_dead_letter(d);
            metrics::counter!(m::DEAD_LETTERS, "topic" => d.msg.topic().to_string(), "reason" => d.kind).increment(1);
        }
        for bad in invalid {
            if let Err(tripped) = self.limit.observe(bad) {
                tracing::error!(cause = %tripped, "dead-letter cap tripped: stopping this worker instead of dead-lettering all traffic; fix the producers (see the dead-letter topic's riskstream.error headers) or raise the cap");
                metrics::gauge!(m::STOPPED_BY_CAP, "cap" => "dead_letters").set(1.0);
                crate::health::health().set_shutting_down();
                return Err(tripped.into());
            }
        }
        Ok(Batch {
            data: decoded,
            offsets,
        })
    }
}

/// enrich: one feature-store call per batch (async I/O); up to `store_in_flight` batches'
/// calls overlap (see [`stages::spawn_concurrent`]).
pub(crate) struct Enrich<S> {
    pub(crate) scorer: Arc<Scorer<S>>,
}

impl<S: FeatureStore> stages::ConcurrentStage for Enrich<S> {
    type In = Decoded;
    type Out = (Decoded, Enriched);
    fn name(&self) -> &'static str {
        "enrich"
    }
    fn start(
        &mut self,
        batch: Batch<Self::In>,
    ) -> impl std::future::Future<Output = Result<Batch<Self::Out>, WorkerError>> + Send + 'static
    {
        let scorer = self.scorer.clone();
        // Taken here, in batch order: the overlapping calls read and compute in this order.
        let turn = scorer.turn();
        async move {
            let enriched = scorer.enrich_in_turn(&batch.data.events, turn).await;
            Ok(Batch {
                data: (batch.data, enriched),
                offsets: batch.offsets,
            })
        }
    }
}

/// One verdict, encoded and ready to publish.
struct Encoded {
    key: String,
    event_id: String,
    event_time: i64,
    payload: Vec<u8>,
}

/// A batch ready to publish: its dead letters and its verdicts.
struct Scored {
    dead: Vec<DeadLetter>,
    verdicts: Vec<Encoded>,
}

/// score: inference, policy, reason codes, verdict assembly and encoding (compute pool).
struct Score<S> {
    scorer: Arc<Scorer<S>>,
    codec: Arc<Codec>,
    topic: String,
    buffers: Buffers,
}

impl<S: FeatureStore> Stage for Score<S> {
    type In = (Decoded, Enriched);
    type Out = Scored;
    fn name(&self) -> &'static str {
        "score"
    }
    async fn process(&mut self, batch: Batch<Self::In>) -> Result<Batch<Self::Out>, WorkerError> {
        let (scorer, codec, topic) = (self.scorer.clone(), self.codec.clone(), self.topic.clone());
        let mut buffers = std::mem::take(&mut self.buffers);
        let Batch {
            data: (decoded, enriched),
            offsets,
        } = batch;
        let (buffers, result) = stages::compute(move || {
            let verdicts = scorer.score_enriched(
                &decoded.events,
                &decoded.sources,
                enriched,
                now_ms(),
                &mut buffers,
            );
            let encoded: Result<Vec<Encoded>, WorkerError> = verdicts
                .into_iter()
                .map(|v| {
                    let mut payload = Vec::with_capacity(1024);
                    codec.encode_verdict_into(&topic, &v, &mut payload)?;
                    Ok(Encoded {
                        key: v.account_id,
                        event_id: v.event_id,
                        event_time: v.event_time,
                        payload,
                    })
                })
                .collect();
            (
                buffers,
                encoded.map(|verdicts| Scored {
                    dead: decoded.dead,
                    verdicts,
                }),
            )
        })
        .await?;
        self.buffers = buffers;
        Ok(Batch {
            data: result?,
            offsets,
        })
    }
}

/// publish: dead letters and verdicts to the producer (keyed by account, with the
/// `riskstream.event_id` header); passes the delivery futures on. Exactly-once: the batch's
/// records and offsets in one transaction ([`crate::transact`]), committed before it is passed on.
struct Publish {
    cfg: Arc<WorkerConfig>,
    producer: FutureProducer,
    report: SharedReport,
    txn: Option<Txn>,
}

/// Sends a batch's dead letters and verdicts; returns their deliveries.
async fn send_scored(
    cfg: &WorkerConfig,
    producer: &FutureProducer,
    scored: &Scored,
) -> Result<Vec<DeliveryFuture>, WorkerError> {
    let Scored { dead, verdicts } = scored;
    let mut deliveries = Vec::with_capacity(dead.len() + verdicts.len());
    for d in dead {
        deliveries.push(send(producer, dead_letter(cfg, &d.msg, &d.error, d.kind)).await?);
    }
    let verdict_bytes = metrics::histogram!(m::VERDICT_BYTES);
    for v in verdicts {
        verdict_bytes.record(v.payload.len() as f64);
        let headers = OwnedHeaders::new().insert(Header {
            key: "riskstream.event_id",
            value: Some(v.event_id.as_bytes()),
        });
        let record = FutureRecord::to(&cfg.topics.verdicts)
            .key(v.key.as_bytes())
            .payload(v.payload.as_slice())
            .headers(headers);
        deliveries.push(send(producer, record).await?);
    }
    Ok(deliveries)
}

impl Stage for Publish {
    type In = Scored;
    type Out = Vec<DeliveryFuture>;
    fn name(&self) -> &'static str {
        "publish"
    }
    async fn process(&mut self, batch: Batch<Self::In>) -> Result<Batch<Self::Out>, WorkerError> {
        let deliveries = match &self.txn {
            None => send_scored(&self.cfg, &self.producer, &batch.data).await?,
            Some(txn) => {
                use crate::transact::{self as t, Outcome};
                let mut outcome = Outcome::Stale;
                for attempt in 1..=t::ATTEMPTS {
                    if txn.progress.epoch() != batch.offsets.epoch {
                        break; // read before a revocation: nothing to abort yet
                    }
                    let tried = async {
                        t::begin(&self.producer).await?;
                        let sent = send_scored(&self.cfg, &self.producer, &batch.data).await?;
                        t::delivered(sent).await?;
                        t::commit(&self.producer, txn, &batch.offsets).await
                    }
                    .await;
                    match tried {
                        Ok(o) => {
                            outcome = o;
                            break;
                        }
                        Err(e) => t::recover(&mut self.producer, txn, e, attempt).await?,
                    }
                }
                let label = match outcome {
                    Outcome::Committed => "committed",
                    Outcome::Stale => "stale",
                };
                metrics::counter!(m::TRANSACTIONS, "outcome" => label).increment(1);
                if let Outcome::Stale = outcome {
                    tracing::info!(records = batch.offsets.records, "batch read before a revocation aborted; its records are re-read from the committed offsets");
                    return Ok(batch.with(Vec::new()));
                }
                Vec::new() // acknowledged by the commit
            }
        };
        let Scored { dead, verdicts } = &batch.data;
        let now = now_ms();
        for v in verdicts {
            metrics::histogram!(m::EVENT_TO_VERDICT_SECONDS)
                .record((now - v.event_time).max(0) as f64 / 1000.0);
        }
        let (n_verdicts, n_dead) = (verdicts.len() as u64, dead.len() as u64);
        metrics::counter!(m::PRODUCED, "topic" => self.cfg.topics.verdicts.clone())
            .increment(n_verdicts);
        if n_dead > 0 {
            metrics::counter!(m::PRODUCED, "topic" => self.cfg.topics.dead_letters.clone())
                .increment(n_dead);
        }
        {
            let mut r = self.report.lock().expect("report lock");
            r.verdicts += n_verdicts;
            r.dead_letters += n_dead;
        }
        Ok(batch.with(deliveries))
    }
}

/// The dead-letter record: original key, payload and headers, plus headers naming the error
/// and where the record came from.
pub(crate) fn dead_letter<'a>(
    cfg: &'a WorkerConfig,
    msg: &'a OwnedMessage,
    err: &str,
    kind: &str,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = msg.headers() {
        for h in original.iter() {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let error = format!(
        "{} (topic {} partition {} offset {})",
        err,
        msg.topic(),
        msg.partition(),
        msg.offset()
    );
    headers = headers
        .insert(Header {
            key: dlq_headers::ERROR,
            value: Some(error.as_bytes()),
        })
        .insert(Header {
            key: dlq_headers::ERROR_KIND,
            value: Some(kind.as_bytes()),
        })
        .insert(Header {
            key: dlq_headers::SOURCE_TOPIC,
            value: Some(msg.topic().as_bytes()),
        })
        .insert(Header {
            key: dlq_headers::SOURCE_PARTITION,
            value: Some(msg.partition().to_string().as_bytes()),
        })
        .insert(Header {
            key: dlq_headers::SOURCE_OFFSET,
            value: Some(msg.offset().to_string().as_bytes()),
        });
    // The original value as it was: a null value stays null. An oversized one is cut (its
    // size in a header), so the dead letter's delivery cannot fail on the producer's size limit.
    let payload = msg.payload();
    if let Some(p) = payload.filter(|p| p.len() > dlq_headers::DEAD_LETTER_MAX_VALUE) {
        headers = headers.insert(Header {
            key: dlq_headers::VALUE_TRUNCATED_FROM,
            value: Some(p.len().to_string().as_bytes()),
        });
    }
    let mut record = FutureRecord::to(&cfg.topics.dead_letters).headers(headers);
    if let Some(p) = payload {
        record = record.payload(&p[..p.len().min(dlq_headers::DEAD_LETTER_MAX_VALUE)]);
    }
    if let Some(k) = msg.key() {
        record = record.key(k);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_properties_go_to_the_client_that_knows_them() {
        let mut cfg = WorkerConfig::new("b:9092", "g");
        cfg.kafka = vec![
            ("session.timeout.ms".into(), "6000".into()),
            ("linger.ms".into(), "7".into()),
            ("security.protocol".into(), "SSL".into()),
            ("producer.client.id".into(), "p".into()),
            ("consumer.client.id".into(), "c".into()),
        ];
        let (consumer, producer) = client_configs(&cfg);
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        assert_eq!(producer.get("session.timeout.ms"), None);
        assert_eq!(producer.get("linger.ms"), Some("7"));
        assert_eq!(consumer.get("linger.ms"), None);
        assert_eq!(consumer.get("security.protocol"), Some("SSL"));
        assert_eq!(producer.get("security.protocol"), Some("SSL"));
        assert_eq!(consumer.get("client.id"), Some("c"));
        assert_eq!(producer.get("client.id"), Some("p"));
    }
}
