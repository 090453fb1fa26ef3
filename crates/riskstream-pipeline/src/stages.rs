//! The worker as a chain of small stages (after rust-arroyo's processing strategies):
//!
//! ```text
//! source ─► stage ─► stage ─► … ─► acknowledge
//! (batches)  Batch<T> in order, each carrying its committable offsets
//! ```
//!
//! - [`source`] reads the consumer and cuts batches **adaptively**: it hands the next stage
//!   everything that is ready as soon as that stage can take it, so batches are small (low
//!   latency) when the worker keeps up and grow towards `batch_max` under backlog.
//! - A [`Stage`] turns a `Batch<In>` into a `Batch<Out>`; [`spawn`] runs it as its own task
//!   joined to the next by a channel of one batch, so stages overlap (the store round trip of
//!   batch N+1 runs while batch N is inferred and batch N−1 published) and in-flight work is
//!   bounded: at most one batch in each stage and one waiting between two stages.
//! - CPU-heavy stages (decode, inference, explanations, encode) run their work through
//!   [`compute`], on the blocking pool, never on the async threads.
//! - [`acknowledge`] ends every chain: it awaits the broker's acknowledgement of everything a
//!   batch produced, in batch order, and only then stores the batch's offsets.
//!
//! A stage that fails ends its task with the error; the stages before it then stop (their
//! next send fails), the ones after it drain what they hold, and the chain reports the error.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::producer::DeliveryFuture;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::metrics as m;
use crate::worker::WorkerError;

/// What a batch commits once everything it produced is acknowledged.
#[derive(Debug, Clone, Default)]
pub struct Offsets {
    /// (topic, partition, next offset to consume)
    pub next: Vec<(String, i32, i64)>,
    /// Oldest broker timestamp in the batch (ms), for consume → produce latency.
    pub oldest_ts: Option<i64>,
    /// Records in the batch.
    pub records: usize,
    /// The assignment epoch the batch was read in (see [`Progress::epoch`]).
    pub epoch: u64,
}

impl Offsets {
    /// The offsets and timestamps `msgs` acknowledge.
    pub fn of(msgs: &[OwnedMessage]) -> Offsets {
        let mut out = Offsets {
            records: msgs.len(),
            ..Offsets::default()
        };
        for msg in msgs {
            if let Some(ts) = msg.timestamp().to_millis() {
                out.oldest_ts = Some(out.oldest_ts.map_or(ts, |o| o.min(ts)));
            }
            match out
                .next
                .iter_mut()
                .find(|(t, p, _)| t == msg.topic() && *p == msg.partition())
            {
                Some(entry) => entry.2 = entry.2.max(msg.offset() + 1),
                None => out
                    .next
                    .push((msg.topic().to_string(), msg.partition(), msg.offset() + 1)),
            }
        }
        out
    }
}

/// A batch of `T` and the offsets it commits.
#[derive(Debug)]
pub struct Batch<T> {
    pub data: T,
    pub offsets: Offsets,
}

impl<T> Batch<T> {
    /// The same batch (same offsets) carrying other data.
    pub fn with<U>(self, data: U) -> Batch<U> {
        Batch {
            data,
            offsets: self.offsets,
        }
    }
}

/// One step of a chain.
pub trait Stage: Send + 'static {
    type In: Send + 'static;
    type Out: Send + 'static;
    /// Label of the stage's `riskstream_stage_seconds` series.
    fn name(&self) -> &'static str;
    fn process(
        &mut self,
        batch: Batch<Self::In>,
    ) -> impl Future<Output = Result<Batch<Self::Out>, WorkerError>> + Send;
}

/// The task running one stage; its result is the stage's error, if any.
pub type StageTask = JoinHandle<Result<(), WorkerError>>;
/// What the source hands the first stage: records read from Kafka.
pub type Records = Batch<Vec<OwnedMessage>>;
/// What the last stage hands `acknowledge`: the deliveries of everything a batch produced.
pub type Acks = Batch<Vec<DeliveryFuture>>;
/// A chain between the source and `acknowledge`: its output and its stage tasks.
pub type Chain = (mpsc::Receiver<Acks>, Vec<StageTask>);

/// Runs `stage` as its own task over the batches from `rx`, in order; returns the channel of
/// its output (capacity one batch: back-pressure reaches the source).
pub fn spawn<S: Stage>(
    mut stage: S,
    mut rx: mpsc::Receiver<Batch<S::In>>,
) -> (mpsc::Receiver<Batch<S::Out>>, StageTask) {
    let (tx, out) = mpsc::channel(1);
    let task = tokio::spawn(async move {
        let name = stage.name();
        let histogram = metrics::histogram!(m::STAGE_SECONDS, "stage" => name);
        while let Some(batch) = rx.recv().await {
            let started = Instant::now();
            let out = stage.process(batch).await?;
            histogram.record(started.elapsed().as_secs_f64());
            if tx.send(out).await.is_err() {
                break; // a later stage stopped: it reports why
            }
        }
        Ok(())
    });
    (out, task)
}

/// A stage whose batches may overlap: [`ConcurrentStage::start`] returns the work for one
/// batch as an owned future, [`spawn_concurrent`] runs up to `max_in_flight` of them at once
/// (each its own task) and passes their results on in batch order. For I/O-bound stages
/// (the feature store): batch N+1's round trip goes out while batch N's answer is computed on.
pub trait ConcurrentStage: Send + 'static {
    type In: Send + 'static;
    type Out: Send + 'static;
    /// Label of the stage's `riskstream_stage_seconds` series.
    fn name(&self) -> &'static str;
    /// The work for one batch; it starts when polled, on its own task.
    fn start(
        &mut self,
        batch: Batch<Self::In>,
    ) -> impl Future<Output = Result<Batch<Self::Out>, WorkerError>> + Send + 'static;
}

/// Runs `stage` with up to `max_in_flight` batches at once; output in input order, capacity
/// one batch downstream (so in-flight work stays bounded: `max_in_flight` here, one queued).
pub fn spawn_concurrent<S: ConcurrentStage>(
    mut stage: S,
    mut rx: mpsc::Receiver<Batch<S::In>>,
    max_in_flight: usize,
) -> (mpsc::Receiver<Batch<S::Out>>, StageTask) {
    let max_in_flight = max_in_flight.max(1);
    let (tx, out) = mpsc::channel(1);
    let task = tokio::spawn(async move {
        let name = stage.name();
        let histogram = metrics::histogram!(m::STAGE_SECONDS, "stage" => name);
        type Running<T> = JoinHandle<(Result<T, WorkerError>, Duration)>;
        let mut running: std::collections::VecDeque<Running<Batch<S::Out>>> =
            std::collections::VecDeque::with_capacity(max_in_flight);
        let mut input_open = true;
        loop {
            if running.is_empty() && !input_open {
                return Ok(());
            }
            tokio::select! {
                biased;
                // The oldest batch first: results leave in input order.
                done = async { running.front_mut().expect("not empty").await }, if !running.is_empty() => {
                    running.pop_front();
                    let (result, took) = done?;
                    histogram.record(took.as_secs_f64());
                    if tx.send(result?).await.is_err() {
                        return Ok(()); // a later stage stopped: it reports why
                    }
                }
                batch = rx.recv(), if input_open && running.len() < max_in_flight => match batch {
                    Some(batch) => {
                        let work = stage.start(batch);
                        running.push_back(tokio::spawn(async move {
                            let started = Instant::now();
                            let out = work.await;
                            (out, started.elapsed())
                        }));
                    }
                    None => input_open = false,
                },
            }
        }
    });
    (out, task)
}

/// How far a chain got: batches the source handed in and batches `acknowledge` finished
/// (deliveries confirmed, offsets stored). A revocation waits on it ([`Progress::drain`]) so
/// the work read from the partitions that go is committed before they go.
///
/// It also keeps the **assignment epoch** of exactly-once mode: bumped on each revocation
/// ([`Progress::next_epoch`]); the source drops records it holds from an earlier epoch and a
/// transaction commits only a batch of the current one ([`Progress::hold_epoch`]). And, in
/// either mode, the partitions revoked ([`Progress::revoked`]): records the source still holds
/// from them (fetched before the revocation, not yet handed on) are dropped, not scored by a
/// worker that no longer owns them — their new owner reads them from the committed offsets.
#[derive(Debug, Default)]
pub struct Progress {
    /// (batches sent by the source, batches acknowledged, chain stopped)
    counts: std::sync::Mutex<(u64, u64, bool)>,
    acked: std::sync::Condvar,
    epoch: std::sync::RwLock<u64>,
    revocations: std::sync::Mutex<Revocations>,
    /// `revocations.count`, readable per record without the lock.
    revoked_count: std::sync::atomic::AtomicU64,
}

/// Revocations so far, and the most recent revoked partitions with their revocation's number.
#[derive(Debug, Default)]
struct Revocations {
    count: u64,
    partitions: Vec<(u64, String, i32)>,
}

/// Revoked partitions remembered for the source (it looks at them at its next record).
const REVOKED_KEPT: usize = 1024;

impl Progress {
    /// Partitions revoked from this worker: records of theirs the source holds are dropped.
    pub fn revoked(&self, partitions: impl IntoIterator<Item = (String, i32)>) {
        let mut r = self.revocations.lock().expect("revocations lock");
        r.count += 1;
        let n = r.count;
        r.partitions
            .extend(partitions.into_iter().map(|(t, p)| (n, t, p)));
        let excess = r.partitions.len().saturating_sub(REVOKED_KEPT);
        r.partitions.drain(..excess);
        self.revoked_count
            .store(n, std::sync::atomic::Ordering::Release);
    }

    /// The number of revocations so far.
    fn revocation_count(&self) -> u64 {
        self.revoked_count
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Drops from `msgs` the records of partitions revoked after revocation `seen`; returns the
    /// current revocation count.
    fn drop_revoked(&self, seen: u64, msgs: &mut Vec<OwnedMessage>) -> u64 {
        if self.revocation_count() == seen {
            return seen; // the common case: no lock per record
        }
        let r = self.revocations.lock().expect("revocations lock");
        if r.count == seen {
            return seen;
        }
        let gone: Vec<(&str, i32)> = r
            .partitions
            .iter()
            .filter(|(n, ..)| *n > seen)
            .map(|(_, t, p)| (t.as_str(), *p))
            .collect();
        let before = msgs.len();
        msgs.retain(|m| !gone.contains(&(m.topic(), m.partition())));
        if msgs.len() < before {
            tracing::info!(
                records = before - msgs.len(),
                "records of revoked partitions dropped (their new owner reads them from the committed offsets)"
            );
        }
        r.count
    }

    /// The current assignment epoch.
    pub fn epoch(&self) -> u64 {
        *self.epoch.read().expect("epoch lock")
    }

    /// Holds the epoch (a revocation waits) if it is still `epoch`.
    pub fn hold_epoch(&self, epoch: u64) -> Option<std::sync::RwLockReadGuard<'_, u64>> {
        let guard = self.epoch.read().expect("epoch lock");
        (*guard == epoch).then_some(guard)
    }

    /// Starts a new epoch, once no commit holds the current one (blocking).
    pub fn next_epoch(&self) {
        *self.epoch.write().expect("epoch lock") += 1;
    }

    fn sent(&self) {
        self.counts.lock().expect("progress lock").0 += 1;
    }

    fn acknowledged(&self) {
        self.counts.lock().expect("progress lock").1 += 1;
        self.acked.notify_all();
    }

    /// Whether the chain stopped.
    pub fn closed(&self) -> bool {
        self.counts.lock().expect("progress lock").2
    }

    /// The chain stopped: nothing more will be acknowledged, so a drain returns at once.
    pub fn close(&self) {
        self.counts.lock().expect("progress lock").2 = true;
        self.acked.notify_all();
    }

    /// Blocks until every batch sent so far is acknowledged, the chain stopped or `timeout`
    /// passes; returns the batches still unacknowledged (0: drained). A blocking wait: call it off the async
    /// threads, or through [`block_in_place`].
    pub fn drain(&self, timeout: Duration) -> u64 {
        let guard = self.counts.lock().expect("progress lock");
        let target = guard.0;
        let (guard, _) = self
            .acked
            .wait_timeout_while(guard, timeout, |(_, acked, closed)| {
                *acked < target && !*closed
            })
            .expect("progress lock");
        target.saturating_sub(guard.1)
    }
}

/// Runs blocking `work` from synchronous code that may be on an async thread (a librdkafka
/// callback called inside `recv`): on a multi-thread runtime the thread's other tasks move
/// elsewhere meanwhile; elsewhere it just runs.
pub fn block_in_place<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Runs CPU-heavy work on the compute (blocking) pool and waits for it.
pub async fn compute<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, WorkerError> {
    Ok(tokio::task::spawn_blocking(work).await?)
}

/// How the source cuts batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most records in one batch.
    pub max: usize,
    /// Extra wait for more records after the first one, even when the next stage is free
    /// (0: none — batches then form while the next stage is busy).
    pub linger: Duration,
}

/// Reads `consumer` until `shutdown` turns true and sends batches of records to `tx`
/// (counted in `progress`).
pub async fn source<C: ConsumerContext + 'static>(
    consumer: Arc<StreamConsumer<C>>,
    batching: Batching,
    mut shutdown: watch::Receiver<bool>,
    tx: mpsc::Sender<Records>,
    progress: Arc<Progress>,
) -> Result<(), WorkerError> {
    let max = batching.max.max(1);
    let mut batch = Held {
        msgs: Vec::with_capacity(max),
        epoch: progress.epoch(),
        revocations: progress.revocation_count(),
        progress: progress.clone(),
    };
    loop {
        // The first record (or shutdown).
        while batch.msgs.is_empty() {
            if *shutdown.borrow() {
                return Ok(());
            }
            tokio::select! {
                msg = consumer.recv() => if !batch.keep(msg) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                },
                _ = shutdown.changed() => {}
                _ = tx.closed() => return Ok(()), // the chain stopped: it reports why
            }
        }
        take_ready(&consumer, &mut batch, max);
        if !batching.linger.is_zero() {
            let deadline = tokio::time::Instant::now() + batching.linger;
            while batch.msgs.len() < max {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(msg) => {
                        batch.keep(msg);
                    }
                    Err(_) => break,
                }
            }
        }
        // Hand over as soon as the next stage takes it; until then keep filling.
        let permit = loop {
            if batch.msgs.len() >= max {
                break tx.reserve().await;
            }
            tokio::select! {
                biased;
                permit = tx.reserve() => break permit,
                msg = consumer.recv() => if batch.keep(msg) {
                    take_ready(&consumer, &mut batch, max);
                },
            }
        };
        let Ok(permit) = permit else {
            return Ok(()); // the chain stopped: it reports why
        };
        batch.drop_revoked();
        if batch.msgs.is_empty() {
            continue; // all of it was from a revoked assignment
        }
        let msgs = std::mem::replace(&mut batch.msgs, Vec::with_capacity(max));
        metrics::histogram!(m::BATCH_SIZE).record(msgs.len() as f64);
        metrics::gauge!(m::IN_FLIGHT_BATCHES).increment(1.0);
        progress.sent();
        permit.send(Batch {
            offsets: Offsets {
                epoch: batch.epoch,
                ..Offsets::of(&msgs)
            },
            data: msgs,
        });
    }
}

/// Moves the records already fetched (no waiting) into `batch`, up to `max`.
fn take_ready<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    batch: &mut Held,
    max: usize,
) {
    while batch.msgs.len() < max {
        match consumer.recv().now_or_never() {
            Some(msg) => {
                batch.keep(msg);
            }
            None => break,
        }
    }
}

/// The records the source holds for its next batch, and the assignment epoch they were read in.
struct Held {
    msgs: Vec<OwnedMessage>,
    epoch: u64,
    /// Revocations already applied to `msgs`.
    revocations: u64,
    progress: Arc<Progress>,
}

impl Held {
    /// Drops the records of partitions revoked since they were read.
    fn drop_revoked(&mut self) {
        self.revocations = self.progress.drop_revoked(self.revocations, &mut self.msgs);
    }

    /// Adds a consumed record; a consume error is logged (false). A record read after a new
    /// epoch began (exactly-once: a revocation ran inside this `recv`) replaces the records
    /// held from the old one: their partitions are re-read from the committed offsets.
    fn keep(&mut self, msg: KafkaResult<BorrowedMessage<'_>>) -> bool {
        match msg {
            Ok(m) => {
                let now = self.progress.epoch();
                if now != self.epoch {
                    if !self.msgs.is_empty() {
                        tracing::info!(records = self.msgs.len(), "records read before a revocation dropped (re-read from the committed offsets)");
                    }
                    self.msgs.clear();
                    self.epoch = now;
                }
                self.drop_revoked();
                self.msgs.push(m.detach());
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "consume error");
                false
            }
        }
    }
}

/// Wall-clock time, epoch ms.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The end of every chain: awaits each batch's deliveries in order and only then stores its
/// offsets (librdkafka commits stored offsets in the background), counted in `progress`.
///
/// With `store_offsets` false (exactly-once: the offsets went with the batch's transaction) it
/// only counts.
pub async fn acknowledge<C: ConsumerContext + 'static>(
    consumer: Arc<StreamConsumer<C>>,
    mut rx: mpsc::Receiver<Acks>,
    progress: Arc<Progress>,
    store_offsets: bool,
) -> Result<(), WorkerError> {
    while let Some(batch) = rx.recv().await {
        for delivery in batch.data {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(WorkerError::Delivery(e)),
                Err(_canceled) => return Err(WorkerError::Delivery(KafkaError::Canceled)),
            }
        }
        metrics::gauge!(m::IN_FLIGHT_BATCHES).decrement(1.0);
        let offsets = batch.offsets;
        if let Some(ts) = offsets.oldest_ts {
            metrics::histogram!(m::CONSUME_TO_PRODUCE_SECONDS)
                .record((now_ms() - ts).max(0) as f64 / 1000.0);
        }
        if !store_offsets {
            progress.acknowledged();
            continue;
        }
        let mut tpl = TopicPartitionList::with_capacity(offsets.next.len());
        for (topic, partition, next) in &offsets.next {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            // The partition was revoked meanwhile: its new owner re-reads from the last commit.
            tracing::debug!(error = %e, records = offsets.records, "offsets not stored (partition revoked?)");
        }
        progress.acknowledged();
    }
    Ok(())
}

/// Waits for every task of a chain; the first error (in chain order) wins.
pub async fn join(tasks: Vec<StageTask>) -> Result<(), WorkerError> {
    let mut first = None;
    for task in tasks {
        let result = match task.await {
            Ok(r) => r,
            Err(e) => Err(WorkerError::Join(e)),
        };
        if let (Err(e), None) = (result, &first) {
            first = Some(e);
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds `add` to every number; fails on the batch whose first number is `fail_at`.
    struct AddOrFail {
        add: u32,
        fail_at: Option<u32>,
        seen: Arc<std::sync::Mutex<Vec<u32>>>,
    }

    impl Stage for AddOrFail {
        type In = Vec<u32>;
        type Out = Vec<u32>;
        fn name(&self) -> &'static str {
            "test"
        }
        async fn process(
            &mut self,
            batch: Batch<Vec<u32>>,
        ) -> Result<Batch<Vec<u32>>, WorkerError> {
            self.seen.lock().unwrap().push(batch.data[0]);
            if Some(batch.data[0]) == self.fail_at {
                return Err(WorkerError::Delivery(KafkaError::Canceled));
            }
            let out = batch.data.iter().map(|x| x + self.add).collect();
            Ok(batch.with(out))
        }
    }

    fn batch(first: u32, partition_next: i64) -> Batch<Vec<u32>> {
        Batch {
            data: vec![first, first + 1],
            offsets: Offsets {
                next: vec![("t".into(), 0, partition_next)],
                oldest_ts: None,
                records: 2,
                epoch: 0,
            },
        }
    }

    #[tokio::test]
    async fn stages_keep_batch_order_and_carry_offsets_through() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel(1);
        let stage = |add| AddOrFail {
            add,
            fail_at: None,
            seen: seen.clone(),
        };
        let (rx, a) = spawn(stage(10), rx);
        let (mut rx, b) = spawn(stage(100), rx);
        let feeder = tokio::spawn(async move {
            for i in 0..20 {
                tx.send(batch(i * 2, i as i64 + 1)).await.unwrap();
            }
        });
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.push((b.data[0], b.offsets.next[0].2));
        }
        feeder.await.unwrap();
        join(vec![a, b]).await.unwrap();
        let expected: Vec<(u32, i64)> = (0..20).map(|i| (i * 2 + 110, i as i64 + 1)).collect();
        assert_eq!(out, expected, "every batch, in order, with its own offsets");
    }

    #[tokio::test]
    async fn a_failing_stage_stops_the_chain_and_nothing_after_it_is_passed_on() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel(1);
        let (rx, a) = spawn(
            AddOrFail {
                add: 0,
                fail_at: Some(6),
                seen: seen.clone(),
            },
            rx,
        );
        let (mut rx, b) = spawn(
            AddOrFail {
                add: 0,
                fail_at: None,
                seen: Arc::default(),
            },
            rx,
        );
        // The feeder stops when the chain stops taking batches (its send fails).
        let feeder = tokio::spawn(async move {
            let mut sent = 0;
            for i in 0..1000 {
                if tx.send(batch(i * 2, 1)).await.is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        });
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.push(b.data[0]);
        }
        assert!(
            feeder.await.unwrap() < 1000,
            "the source saw the chain stop"
        );
        assert_eq!(out, vec![0, 2, 4], "batches before the failure only");
        let err = join(vec![a, b]).await.unwrap_err();
        assert!(matches!(err, WorkerError::Delivery(_)), "{err}");
    }

    /// Sleeps longer for earlier batches (so later ones finish first) and counts how many run
    /// at once.
    struct SlowFirst {
        running: Arc<std::sync::atomic::AtomicUsize>,
        most: Arc<std::sync::atomic::AtomicUsize>,
        fail_at: Option<u32>,
    }

    impl ConcurrentStage for SlowFirst {
        type In = Vec<u32>;
        type Out = Vec<u32>;
        fn name(&self) -> &'static str {
            "test"
        }
        fn start(
            &mut self,
            batch: Batch<Vec<u32>>,
        ) -> impl Future<Output = Result<Batch<Vec<u32>>, WorkerError>> + Send + 'static {
            use std::sync::atomic::Ordering::SeqCst;
            let (running, most, fail_at) = (self.running.clone(), self.most.clone(), self.fail_at);
            async move {
                let now = running.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                let first = batch.data[0];
                tokio::time::sleep(Duration::from_millis(30u64.saturating_sub(first as u64))).await;
                running.fetch_sub(1, SeqCst);
                if Some(first) == fail_at {
                    return Err(WorkerError::Delivery(KafkaError::Canceled));
                }
                Ok(batch)
            }
        }
    }

    #[tokio::test]
    async fn a_concurrent_stage_overlaps_batches_up_to_its_bound_and_keeps_their_order() {
        for bound in [1, 3] {
            let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let stage = SlowFirst {
                running: Arc::default(),
                most: most.clone(),
                fail_at: None,
            };
            let (tx, rx) = mpsc::channel(1);
            let (mut rx, task) = spawn_concurrent(stage, rx, bound);
            let feeder = tokio::spawn(async move {
                for i in 0..12 {
                    tx.send(batch(i * 2, i as i64 + 1)).await.unwrap();
                }
            });
            let mut out = Vec::new();
            while let Some(b) = rx.recv().await {
                out.push((b.data[0], b.offsets.next[0].2));
            }
            feeder.await.unwrap();
            join(vec![task]).await.unwrap();
            let expected: Vec<(u32, i64)> = (0..12).map(|i| (i * 2, i as i64 + 1)).collect();
            assert_eq!(
                out, expected,
                "bound {bound}: every batch, in order, with its offsets"
            );
            let most = most.load(std::sync::atomic::Ordering::SeqCst);
            assert!(most <= bound, "bound {bound}: {most} batches ran at once");
            if bound > 1 {
                assert!(most > 1, "batches overlapped");
            }
        }
        // A failed batch ends the stage with its error; nothing after it is passed on.
        let stage = SlowFirst {
            running: Arc::default(),
            most: Arc::default(),
            fail_at: Some(4),
        };
        let (tx, rx) = mpsc::channel(1);
        let (mut rx, task) = spawn_concurrent(stage, rx, 3);
        tokio::spawn(async move {
            for i in 0..12 {
                if tx.send(batch(i * 2, 1)).await.is_err() {
                    break;
                }
            }
        });
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.push(b.data[0]);
        }
        assert_eq!(out, vec![0, 2], "batches before the failure only");
        assert!(join(vec![task]).await.is_err());
    }

    #[test]
    fn offsets_are_the_next_offset_per_partition_and_the_oldest_timestamp() {
        use rdkafka::Timestamp;
        let msg = |topic: &str, partition, offset, ts| {
            OwnedMessage::new(
                None,
                None,
                topic.to_string(),
                Timestamp::CreateTime(ts),
                partition,
                offset,
                None,
            )
        };
        let o = Offsets::of(&[
            msg("a", 0, 10, 500),
            msg("a", 1, 7, 300),
            msg("a", 0, 11, 900),
            msg("b", 0, 3, 400),
        ]);
        assert_eq!(
            o.next,
            vec![("a".into(), 0, 12), ("a".into(), 1, 8), ("b".into(), 0, 4)]
        );
        assert_eq!(o.oldest_ts, Some(300));
        assert_eq!(o.records, 4);
        assert!(Offsets::of(&[]).next.is_empty());
    }

    #[test]
    fn drain_waits_for_the_batches_sent_before_it_and_no_longer_than_its_timeout() {
        let p = Arc::new(Progress::default());
        assert_eq!(p.drain(Duration::ZERO), 0, "nothing sent: drained");
        p.sent();
        p.sent();
        assert_eq!(
            p.drain(Duration::from_millis(10)),
            2,
            "times out with both pending"
        );
        let acker = {
            let p = p.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                p.acknowledged();
                std::thread::sleep(Duration::from_millis(50));
                p.acknowledged();
            })
        };
        assert_eq!(p.drain(Duration::from_secs(30)), 0, "waits for both");
        acker.join().unwrap();
        // A batch sent after the drain started is not waited for.
        p.sent();
        assert_eq!(p.drain(Duration::ZERO), 1);
        // Once the chain stopped, a drain does not wait for what will never be acknowledged.
        p.close();
        let started = std::time::Instant::now();
        assert_eq!(p.drain(Duration::from_secs(30)), 1);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn records_held_from_revoked_partitions_are_dropped_once_and_others_kept() {
        let msg = |topic: &str, partition: i32, offset: i64| {
            OwnedMessage::new(
                None,
                None,
                topic.to_string(),
                rdkafka::Timestamp::CreateTime(1),
                partition,
                offset,
                None,
            )
        };
        let progress = Arc::new(Progress::default());
        let mut held = Held {
            msgs: vec![msg("a", 0, 1), msg("a", 1, 1), msg("b", 0, 1)],
            epoch: 0,
            revocations: progress.revocation_count(),
            progress: progress.clone(),
        };
        held.drop_revoked();
        assert_eq!(held.msgs.len(), 3, "nothing revoked yet");
        progress.revoked([("a".to_string(), 1), ("c".to_string(), 0)]);
        held.drop_revoked();
        let left: Vec<_> = held
            .msgs
            .iter()
            .map(|m| (m.topic(), m.partition()))
            .collect();
        assert_eq!(left, [("a", 0), ("b", 0)]);
        // Partition a/1 assigned again later: its new records are kept.
        held.msgs.push(msg("a", 1, 2));
        held.drop_revoked();
        assert_eq!(held.msgs.len(), 3);
    }

    #[test]
    fn batch_with_keeps_the_offsets() {
        let b = batch(1, 42).with("other data");
        assert_eq!(b.data, "other data");
        assert_eq!(b.offsets.next, vec![("t".to_string(), 0, 42)]);
        assert_eq!(b.offsets.records, 2);
    }
}
