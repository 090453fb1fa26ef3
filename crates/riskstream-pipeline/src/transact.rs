//! Exactly-once delivery (`--delivery exactly-once`): each batch's verdicts, dead letters and
//! consumed offsets go to Kafka in one transaction (KIP-98), the offsets committed through the
//! producer with the consumer's group metadata (`send_offsets_to_transaction`, KIP-447).
//!
//! - **One transaction per batch**, in batch order: publish and commit serialise here while
//!   decode, enrich and scoring of the next batches overlap with it.
//! - **Errors**: a failed delivery or an abortable commit error aborts the transaction and the
//!   batch is sent again in a new one (at most [`ATTEMPTS`] times, then the worker stops
//!   without committing). A fatal producer error re-initialises the producer (a new one with
//!   the same `transactional.id`, whose `init_transactions` aborts what the old one left open)
//!   and retries. Being **fenced** — another worker started with the same `transactional.id`,
//!   or the group moved on without this zombie — stops the worker ([`WorkerError::Fenced`]).
//! - **Rebalances** (eager assignor in this mode): a revocation first waits (bounded) for the
//!   batches already read to commit, then starts a new *assignment epoch*. A batch read in an
//!   earlier epoch is aborted instead of committed: its partitions are re-read from their
//!   committed offsets by whoever owns them now. The check and the commit hold the epoch's read
//!   lock, so no commit can straddle a revocation.
//! - Every transactional call blocks: all of them run on the blocking pool.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::stages::{Offsets, Progress};
use crate::worker::WorkerError;

/// Times one batch is tried in a fresh transaction before the worker gives up.
pub const ATTEMPTS: usize = 3;
/// Deadline of one blocking transactional call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the publish stage needs for transactions besides the producer.
pub struct Txn {
    /// The producer's configuration (with its `transactional.id`), to re-initialise it.
    pub producer_cfg: ClientConfig,
    /// The consumer's group metadata, read at each commit (generation and member id).
    pub group_metadata: Box<dyn Fn() -> Option<ConsumerGroupMetadata> + Send + Sync>,
    /// Assignment epochs (bumped on revocation) and the drain of in-flight batches.
    pub progress: Arc<Progress>,
}

/// How one attempt to commit a batch ended.
#[derive(Debug)]
pub enum Outcome {
    Committed,
    /// Read in an earlier assignment epoch: aborted, its records are re-read by their owner.
    Stale,
}

/// Creates a transactional producer and initialises it (fencing its predecessor with the same
/// `transactional.id` and aborting what that one left open).
pub async fn init(cfg: &ClientConfig) -> Result<FutureProducer, WorkerError> {
    let producer: FutureProducer = cfg.create()?;
    let p = producer.clone();
    tokio::task::spawn_blocking(move || p.init_transactions(CALL_TIMEOUT))
        .await?
        .map_err(classify)?;
    Ok(producer)
}

/// A transactional error as the worker sees it: fenced, or something else.
fn classify(e: KafkaError) -> WorkerError {
    if fenced(&e) {
        WorkerError::Fenced(e.to_string())
    } else {
        WorkerError::Transaction(e)
    }
}

fn fenced(e: &KafkaError) -> bool {
    e.rdkafka_error_code().is_some_and(fenced_code)
}

fn fenced_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::FencedInstanceId
    )
}

fn fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.is_fatal(),
        _ => false,
    }
}

/// After a failed attempt at a batch's transaction: stops the worker when it was fenced, the
/// error is not a transactional one, or this was the last attempt; otherwise aborts (or, after
/// a fatal error, re-creates the producer) so the batch can be sent again.
pub async fn recover(
    producer: &mut FutureProducer,
    txn: &Txn,
    error: WorkerError,
    attempt: usize,
) -> Result<(), WorkerError> {
    let WorkerError::Transaction(ref k) = error else {
        return Err(error);
    };
    if fenced(k) {
        return Err(WorkerError::Fenced(k.to_string()));
    }
    // After a fatal error, later calls fail with a generic code (e.g. `_FATAL`, or a purged
    // delivery): the producer's fatal error says whether it was fenced. A fenced producer must
    // not be re-created with the same transactional.id — that would fence the newer worker.
    if let Some((code, reason)) = producer.client().fatal_error() {
        if fenced_code(code) {
            return Err(WorkerError::Fenced(reason));
        }
    }
    metrics::counter!(crate::metrics::TRANSACTIONS, "outcome" => "aborted").increment(1);
    if fatal(k) {
        // The producer cannot go on: a new one with the same transactional.id.
        tracing::warn!(error = %k, attempt, "fatal transaction error: re-initialising the producer");
        *producer = init(&txn.producer_cfg).await?;
    } else {
        tracing::warn!(error = %k, attempt, "transaction failed: aborted");
        abort(producer).await?;
    }
    if attempt >= ATTEMPTS {
        return Err(error);
    }
    Ok(())
}

/// Begins a transaction.
pub async fn begin(producer: &FutureProducer) -> Result<(), WorkerError> {
    let p = producer.clone();
    tokio::task::spawn_blocking(move || p.begin_transaction())
        .await?
        .map_err(WorkerError::Transaction)
}

/// Waits for the deliveries of the records sent in the open transaction.
pub async fn delivered(deliveries: Vec<DeliveryFuture>) -> Result<(), WorkerError> {
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(WorkerError::Transaction(e)),
            Err(_canceled) => return Err(WorkerError::Transaction(KafkaError::Canceled)),
        }
    }
    Ok(())
}

async fn abort(producer: &FutureProducer) -> Result<(), WorkerError> {
    let p = producer.clone();
    match tokio::task::spawn_blocking(move || p.abort_transaction(CALL_TIMEOUT)).await? {
        Ok(()) => Ok(()),
        Err(e) if fenced(&e) => Err(WorkerError::Fenced(e.to_string())),
        // Nothing open (the failure came before begin), or the abort itself failed: the next
        // begin tells; a fatal state is handled there.
        Err(e) => {
            tracing::debug!(error = %e, "abort_transaction");
            Ok(())
        }
    }
}

/// Commits the open transaction with the batch's `offsets`, unless the batch was read in an
/// earlier assignment epoch (then it is aborted: [`Outcome::Stale`]).
pub async fn commit(
    producer: &FutureProducer,
    txn: &Txn,
    offsets: &Offsets,
) -> Result<Outcome, WorkerError> {
    let mut tpl = TopicPartitionList::with_capacity(offsets.next.len());
    for (topic, partition, next) in &offsets.next {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
    }
    let (p, progress, epoch) = (producer.clone(), txn.progress.clone(), offsets.epoch);
    let metadata = (txn.group_metadata)();
    let result = tokio::task::spawn_blocking(move || {
        // Held until committed: a revocation waits for it rather than slip in between.
        let Some(_epoch) = progress.hold_epoch(epoch) else {
            return Ok(Outcome::Stale);
        };
        // No group metadata: not (or no longer) a group member; abort and try again.
        let metadata = metadata.ok_or(KafkaError::Global(RDKafkaErrorCode::State))?;
        p.send_offsets_to_transaction(&tpl, &metadata, CALL_TIMEOUT)?;
        p.commit_transaction(CALL_TIMEOUT)?;
        Ok(Outcome::Committed)
    })
    .await?;
    match result {
        Ok(Outcome::Stale) => {
            abort(producer).await?;
            Ok(Outcome::Stale)
        }
        Ok(Outcome::Committed) => Ok(Outcome::Committed),
        Err(e) => Err(WorkerError::Transaction(e)),
    }
}
