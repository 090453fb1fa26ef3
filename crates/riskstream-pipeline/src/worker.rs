//! The Kafka side of the worker: consume → batch → (scorer) → produce → acknowledge → store offsets.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use riskstream_events::{dlq_headers, Codec, DecodeError, Event, SchemaKind, SourcePosition};
use riskstream_features::FeatureStore;
use tokio::sync::{mpsc, watch};

use crate::config::WorkerConfig;
use crate::metrics as m;
use crate::scorer::{Buffers, Scorer};

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
}

/// What one worker did, returned when it stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerReport {
    pub consumed: u64,
    pub verdicts: u64,
    pub dead_letters: u64,
    pub batches: u64,
}

/// Consumer context: exports consumer lag from librdkafka statistics, logs rebalances.
struct WorkerContext;

impl ClientContext for WorkerContext {
    fn stats(&self, stats: Statistics) {
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
    fn post_rebalance(
        &self,
        _c: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        match rebalance {
            rdkafka::consumer::Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions assigned")
            }
            rdkafka::consumer::Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked")
            }
            rdkafka::consumer::Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

type WorkerConsumer = StreamConsumer<WorkerContext>;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

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
        .set("statistics.interval.ms", "5000");
    let mut producer = ClientConfig::new();
    producer
        .set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("compression.type", "lz4");
    for (k, v) in &cfg.kafka {
        if let Some(k) = k.strip_prefix("consumer.") {
            consumer.set(k, v);
        } else if let Some(k) = k.strip_prefix("producer.") {
            producer.set(k, v);
        } else {
            consumer.set(k, v);
            producer.set(k, v);
        }
    }
    (consumer, producer)
}

/// One batch's acknowledgements: wait for these deliveries, then store these offsets.
struct PendingAcks {
    deliveries: Vec<DeliveryFuture>,
    /// (topic, partition, next offset to consume)
    offsets: Vec<(String, i32, i64)>,
    /// Oldest broker timestamp in the batch (ms), for consume→produce latency.
    oldest_ts: Option<i64>,
    records: usize,
}

/// What the worker does with each batch.
enum Mode<S> {
    /// decode → enrich → score → decide → publish verdicts.
    Score {
        scorer: Arc<Scorer<S>>,
        codec: Arc<Codec>,
        buffers: Buffers,
    },
    /// Copy records unchanged to the verdict topic: the benchmark's ceiling.
    Passthrough,
}

/// Runs one worker until `shutdown` turns true (then drains, commits and leaves the group)
/// or a fatal error occurs.
pub async fn run<S: FeatureStore>(
    cfg: WorkerConfig,
    scorer: Arc<Scorer<S>>,
    shutdown: watch::Receiver<bool>,
) -> Result<WorkerReport, WorkerError> {
    let codec = Arc::new(match &cfg.schema_registry {
        Some(url) => Codec::with_registry(url),
        None => Codec::registry_free(),
    });
    drive(
        cfg,
        Mode::Score {
            scorer,
            codec,
            buffers: Buffers::default(),
        },
        shutdown,
    )
    .await
}

/// Like [`run`], but copies each input record to the verdict topic unchanged, with the same
/// consumer, batching, producer and acknowledgement path: the ceiling for benchmarks.
pub async fn run_passthrough(
    cfg: WorkerConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<WorkerReport, WorkerError> {
    drive::<riskstream_features::MemoryStore>(cfg, Mode::Passthrough, shutdown).await
}

async fn drive<S: FeatureStore>(
    cfg: WorkerConfig,
    mut mode: Mode<S>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<WorkerReport, WorkerError> {
    let (consumer_cfg, producer_cfg) = client_configs(&cfg);
    let consumer: Arc<WorkerConsumer> = Arc::new(consumer_cfg.create_with_context(WorkerContext)?);
    let producer: FutureProducer = producer_cfg.create()?;
    consumer.subscribe(&[&cfg.topics.capture_sessions, &cfg.topics.transactions])?;
    tracing::info!(group = %cfg.group, brokers = %cfg.brokers, "worker subscribed");

    let (ack_tx, ack_rx) = mpsc::channel::<PendingAcks>(4);
    let acker = tokio::spawn(acker(consumer.clone(), ack_rx));

    let mut report = WorkerReport::default();
    let result = async {
        while let Some(batch) = next_batch(&consumer, &cfg, &mut shutdown).await {
            let pending = match &mut mode {
                Mode::Score {
                    scorer,
                    codec,
                    buffers,
                } => {
                    process_batch(&cfg, codec, scorer, &producer, batch, buffers, &mut report)
                        .await?
                }
                Mode::Passthrough => copy_batch(&cfg, &producer, batch, &mut report).await?,
            };
            if ack_tx.send(pending).await.is_err() {
                break; // the acker stopped: it reports why below
            }
        }
        Ok::<(), WorkerError>(())
    }
    .await;
    drop(ack_tx);
    let acked = acker.await?;
    result?;
    acked?;
    // Final commit of everything stored, then leave the group; both block, so off the async threads.
    let c = consumer.clone();
    tokio::task::spawn_blocking(move || {
        match c.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            // Another member leaving at the same moment bumps the generation; what was stored is
            // re-delivered at worst (at-least-once), and the periodic auto-commit covered the rest.
            Err(e) => tracing::warn!(error = %e, "final commit failed; uncommitted records will be redelivered"),
        }
        c.unsubscribe();
    })
    .await?;
    tokio::task::spawn_blocking(move || drop(consumer)).await?;
    tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await??;
    tracing::info!(?report, "worker stopped");
    Ok(report)
}

async fn copy_batch(
    cfg: &WorkerConfig,
    producer: &FutureProducer,
    batch: Vec<OwnedMessage>,
    report: &mut WorkerReport,
) -> Result<PendingAcks, WorkerError> {
    report.batches += 1;
    report.consumed += batch.len() as u64;
    let mut deliveries = Vec::with_capacity(batch.len());
    for msg in &batch {
        let mut record =
            FutureRecord::to(&cfg.topics.verdicts).payload(msg.payload().unwrap_or(&[]));
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(h) = msg.headers() {
            record = record.headers(h.clone());
        }
        deliveries.push(send(producer, record).await?);
    }
    report.verdicts += batch.len() as u64;
    Ok(acks_for(&batch, deliveries))
}

/// The offsets (next to consume, per partition) and timestamps a batch acknowledges.
fn acks_for(batch: &[OwnedMessage], deliveries: Vec<DeliveryFuture>) -> PendingAcks {
    let mut offsets: Vec<(String, i32, i64)> = Vec::new();
    let mut oldest_ts: Option<i64> = None;
    for msg in batch {
        if let Some(ts) = msg.timestamp().to_millis() {
            oldest_ts = Some(oldest_ts.map_or(ts, |o: i64| o.min(ts)));
        }
        match offsets
            .iter_mut()
            .find(|(t, p, _)| t == msg.topic() && *p == msg.partition())
        {
            Some(entry) => entry.2 = entry.2.max(msg.offset() + 1),
            None => offsets.push((msg.topic().to_string(), msg.partition(), msg.offset() + 1)),
        }
    }
    PendingAcks {
        deliveries,
        offsets,
        oldest_ts,
        records: batch.len(),
    }
}

/// Waits for the first record, then fills the batch until it is full or the linger expires.
/// `None` on shutdown.
async fn next_batch(
    consumer: &WorkerConsumer,
    cfg: &WorkerConfig,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Vec<OwnedMessage>> {
    let mut batch = Vec::with_capacity(cfg.batch_max);
    loop {
        if *shutdown.borrow() {
            return None;
        }
        tokio::select! {
            msg = consumer.recv() => match msg {
                Ok(m) => { batch.push(m.detach()); break; }
                Err(e) => { tracing::warn!(error = %e, "consume error"); tokio::time::sleep(Duration::from_millis(100)).await; }
            },
            _ = shutdown.changed() => {}
        }
    }
    let deadline = tokio::time::Instant::now() + cfg.batch_linger;
    while batch.len() < cfg.batch_max {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => batch.push(m.detach()),
            Ok(Err(e)) => tracing::warn!(error = %e, "consume error"),
            Err(_) => break,
        }
    }
    Some(batch)
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

async fn process_batch<S: FeatureStore>(
    cfg: &WorkerConfig,
    codec: &Arc<Codec>,
    scorer: &Scorer<S>,
    producer: &FutureProducer,
    batch: Vec<OwnedMessage>,
    buffers: &mut Buffers,
    report: &mut WorkerReport,
) -> Result<PendingAcks, WorkerError> {
    metrics::histogram!(m::BATCH_SIZE).record(batch.len() as f64);
    report.batches += 1;
    report.consumed += batch.len() as u64;
    for topic in [&cfg.topics.capture_sessions, &cfg.topics.transactions] {
        let n = batch.iter().filter(|b| b.topic() == topic.as_str()).count();
        if n > 0 {
            metrics::counter!(m::CONSUMED, "topic" => topic.clone()).increment(n as u64);
        }
    }
    // decode (may call the schema registry on a cache miss: off the async threads)
    let skew = cfg.max_future_skew.as_millis() as i64;
    let codec2 = codec.clone();
    let (batch, decoded) = tokio::task::spawn_blocking(move || {
        let now = now_ms();
        let decoded: Vec<Result<Event, DecodeError>> = batch
            .iter()
            .map(|msg| {
                let payload = msg.payload().unwrap_or(&[]);
                codec2.decode_event(payload).and_then(|e| {
                    e.validate_at(now, skew)?;
                    Ok(e)
                })
            })
            .collect();
        (batch, decoded)
    })
    .await?;

    let mut events = Vec::with_capacity(batch.len());
    let mut sources = Vec::with_capacity(batch.len());
    let mut dead = 0u64;
    let mut deliveries = Vec::with_capacity(batch.len());
    for (msg, result) in batch.iter().zip(decoded) {
        match result {
            Ok(event) => {
                sources.push(SourcePosition {
                    topic: msg.topic().to_string(),
                    partition: msg.partition(),
                    offset: msg.offset(),
                });
                events.push(event);
            }
            Err(err) => {
                tracing::warn!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %err, "dead letter");
                metrics::counter!(m::DEAD_LETTERS, "topic" => msg.topic().to_string(), "reason" => err.kind()).increment(1);
                deliveries.push(
                    send(
                        producer,
                        dead_letter(cfg, msg, &err.to_string(), err.kind()),
                    )
                    .await?,
                );
                dead += 1;
            }
        }
    }

    // enrich → score → decide
    let verdicts = scorer
        .score_batch(&events, &sources, now_ms(), buffers)
        .await;

    // publish
    let mut payload = Vec::with_capacity(1024);
    let now = now_ms();
    for verdict in &verdicts {
        payload.clear();
        codec.encode_into(
            SchemaKind::Verdict,
            &cfg.topics.verdicts,
            verdict,
            &mut payload,
        )?;
        let headers = OwnedHeaders::new().insert(Header {
            key: "riskstream.event_id",
            value: Some(verdict.event_id.as_bytes()),
        });
        let record = FutureRecord::to(&cfg.topics.verdicts)
            .key(verdict.account_id.as_bytes())
            .payload(payload.as_slice())
            .headers(headers);
        deliveries.push(send(producer, record).await?);
        metrics::histogram!(m::EVENT_TO_VERDICT_SECONDS)
            .record((now - verdict.event_time).max(0) as f64 / 1000.0);
    }
    report.verdicts += verdicts.len() as u64;
    metrics::counter!(m::PRODUCED, "topic" => cfg.topics.verdicts.clone())
        .increment(verdicts.len() as u64);
    if dead > 0 {
        report.dead_letters += dead;
        metrics::counter!(m::PRODUCED, "topic" => cfg.topics.dead_letters.clone()).increment(dead);
    }

    Ok(acks_for(&batch, deliveries))
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
    let mut record = FutureRecord::to(&cfg.topics.dead_letters)
        .payload(msg.payload().unwrap_or(&[]))
        .headers(headers);
    if let Some(k) = msg.key() {
        record = record.key(k);
    }
    record
}

/// Awaits each batch's deliveries in order and only then stores its offsets.
async fn acker(
    consumer: Arc<WorkerConsumer>,
    mut rx: mpsc::Receiver<PendingAcks>,
) -> Result<(), WorkerError> {
    while let Some(pending) = rx.recv().await {
        for delivery in pending.deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(WorkerError::Delivery(e)),
                Err(_canceled) => return Err(WorkerError::Delivery(KafkaError::Canceled)),
            }
        }
        if let Some(ts) = pending.oldest_ts {
            metrics::histogram!(m::CONSUME_TO_PRODUCE_SECONDS)
                .record((now_ms() - ts).max(0) as f64 / 1000.0);
        }
        let mut tpl = TopicPartitionList::with_capacity(pending.offsets.len());
        for (topic, partition, next) in &pending.offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            // The partition was revoked meanwhile: its new owner re-reads from the last commit.
            tracing::debug!(error = %e, records = pending.records, "offsets not stored (partition revoked?)");
        }
    }
    Ok(())
}
