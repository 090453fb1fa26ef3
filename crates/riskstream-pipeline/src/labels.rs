//! The labels consumer: reads the labels topic (confirmed fraud, ATO, chargebacks, bots, and
//! "legitimate" corrections from investigators and chargeback feeds) and applies each label to
//! the feature store's identity graph, which propagates the taint to the account's devices, IPs
//! and documents (one hop) and its neighbours' (two hops).
//!
//! It runs beside the scoring loop in every worker process, in its own consumer group
//! (`<group>.labels`), so each label is applied once however many workers run. A label is
//! committed only after the store applied it: while the store is down, labels wait (retried
//! with back-off), they are not dropped. Undecodable labels, and labels without an account,
//! go to the dead-letter topic.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use riskstream_events::{Codec, LabelKind};
use riskstream_features::FeatureStore;
use tokio::sync::watch;

use crate::config::WorkerConfig;
use crate::metrics as m;
use crate::scorer::Scorer;
use crate::worker::{client_configs, dead_letter, send, WorkerError};

/// What the labels consumer did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LabelsReport {
    pub applied: u64,
    pub ignored: u64,
    pub dead_letters: u64,
}

/// Whether a label kind taints (`Some(true)`), clears (`Some(false)`) or says nothing (`None`).
pub fn taint_of(kind: LabelKind) -> Option<bool> {
    match kind {
        LabelKind::ConfirmedFraud
        | LabelKind::ConfirmedAto
        | LabelKind::Chargeback
        | LabelKind::Bot => Some(true),
        LabelKind::Legitimate => Some(false),
        LabelKind::Unknown => None,
    }
}

fn kind_label(kind: LabelKind) -> &'static str {
    match kind {
        LabelKind::Unknown => "unknown",
        LabelKind::ConfirmedFraud => "confirmed_fraud",
        LabelKind::ConfirmedAto => "confirmed_ato",
        LabelKind::Chargeback => "chargeback",
        LabelKind::Legitimate => "legitimate",
        LabelKind::Bot => "bot",
    }
}

/// Resolves once shutdown was requested (or the sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Consumes `cfg.topics.labels` until `shutdown`, applying labels to the scorer's store.
pub async fn run_labels<S: FeatureStore>(
    cfg: WorkerConfig,
    scorer: Arc<Scorer<S>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<LabelsReport, WorkerError> {
    let codec = match &cfg.schema_registry {
        Some(url) => Codec::with_registry(url),
        None => Codec::registry_free(),
    };
    let (mut consumer_cfg, producer_cfg) = client_configs(&cfg);
    consumer_cfg
        .set("group.id", format!("{}.labels", cfg.group))
        .remove("statistics.interval.ms");
    let consumer: Arc<StreamConsumer> = Arc::new(consumer_cfg.create()?);
    let producer: FutureProducer = producer_cfg.create()?;
    consumer.subscribe(&[&cfg.topics.labels])?;
    tracing::info!(topic = %cfg.topics.labels, "labels consumer subscribed");
    let mut report = LabelsReport::default();
    let result = async {
        loop {
            let msg = tokio::select! {
                _ = stopped(&mut shutdown) => break,
                msg = consumer.recv() => match msg {
                    Ok(msg) => msg.detach(),
                    Err(e) => {
                        // e.g. the topic does not exist yet: keep polling, slowly.
                        tracing::warn!(error = %e, "labels consumer: broker error");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            if !apply_one(
                &cfg,
                &codec,
                &scorer.store,
                &producer,
                &msg,
                &mut shutdown,
                &mut report,
            )
            .await?
            {
                break; // shutdown while waiting for the store: not applied, not committed
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(
                msg.topic(),
                msg.partition(),
                Offset::Offset(msg.offset() + 1),
            )?;
            consumer.store_offsets(&tpl)?;
        }
        Ok::<(), WorkerError>(())
    }
    .await;
    let c = consumer.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = c.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "labels: final commit");
        }
        c.unsubscribe();
    })
    .await?;
    tokio::task::spawn_blocking(move || drop(consumer)).await?;
    tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await??;
    result?;
    tracing::info!(?report, "labels consumer stopped");
    Ok(report)
}

/// Applies one label record; false if shutdown came first.
async fn apply_one<S: FeatureStore>(
    cfg: &WorkerConfig,
    codec: &Codec,
    store: &S,
    producer: &FutureProducer,
    msg: &OwnedMessage,
    shutdown: &mut watch::Receiver<bool>,
    report: &mut LabelsReport,
) -> Result<bool, WorkerError> {
    metrics::counter!(m::CONSUMED, "topic" => cfg.topics.labels.clone()).increment(1);
    let reject = |reason: String, kind: &'static str| async move {
        tracing::warn!(reason = %reason, offset = msg.offset(), "label dead-lettered");
        metrics::counter!(m::DEAD_LETTERS, "topic" => cfg.topics.labels.clone(), "reason" => kind)
            .increment(1);
        let delivery = send(producer, dead_letter(cfg, msg, &reason, kind)).await?;
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(WorkerError::Delivery(e)),
            Err(_) => Err(WorkerError::Delivery(rdkafka::error::KafkaError::Canceled)),
        }
    };
    let label = match codec.decode_label(msg.payload().unwrap_or(&[])) {
        Ok(l) => l,
        Err(e) => {
            reject(e.to_string(), e.kind()).await?;
            report.dead_letters += 1;
            return Ok(true);
        }
    };
    let Some(account) = label.account_id.filter(|a| !a.is_empty()) else {
        reject(
            "label without an account_id: the identity graph is keyed by account".into(),
            "label_without_account",
        )
        .await?;
        report.dead_letters += 1;
        return Ok(true);
    };
    let Some(tainted) = taint_of(label.kind) else {
        metrics::counter!(m::LABELS, "kind" => kind_label(label.kind), "outcome" => "ignored")
            .increment(1);
        report.ignored += 1;
        return Ok(true);
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        match store.apply_label(&account, tainted, label.label_time).await {
            Ok(outcome) => {
                tracing::info!(account = %account, kind = kind_label(label.kind), ?outcome, "label applied");
                metrics::counter!(m::LABELS, "kind" => kind_label(label.kind), "outcome" => "applied").increment(1);
                report.applied += 1;
                return Ok(true);
            }
            Err(e) => {
                tracing::warn!(error = %e, account = %account, "label not applied yet; retrying");
                metrics::counter!(m::LABELS, "kind" => kind_label(label.kind), "outcome" => "retried").increment(1);
                tokio::select! {
                    _ = stopped(shutdown) => return Ok(false),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
