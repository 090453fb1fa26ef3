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

use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use riskstream_events::{Codec, LabelKind};
use riskstream_features::FeatureStore;
use tokio::sync::watch;

use crate::config::WorkerConfig;
use crate::metrics as m;
use crate::scorer::Scorer;
use crate::stages::{self, Batch, Offsets, Stage};
use crate::worker::{client_configs, dead_letter, drive_chain, send, Input, Shared, WorkerError};

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
/// The chain: source → apply → acknowledge (the same stages as the scoring worker).
pub async fn run_labels<S: FeatureStore>(
    cfg: WorkerConfig,
    scorer: Arc<Scorer<S>>,
    shutdown: watch::Receiver<bool>,
) -> Result<LabelsReport, WorkerError> {
    let codec = Arc::new(match &cfg.schema_registry {
        Some(url) => Codec::with_registry(url, cfg.subject_strategy),
        None => Codec::registry_free(),
    });
    // Labels are applied to the store (idempotent), not published: at-least-once whatever the
    // scoring chain's delivery mode.
    let cfg = WorkerConfig {
        delivery: crate::config::Delivery::AtLeastOnce,
        ..cfg
    };
    let (mut consumer_cfg, producer_cfg) = client_configs(&cfg);
    consumer_cfg
        .set("group.id", format!("{}.labels", cfg.group))
        .remove("statistics.interval.ms");
    let cfg = Arc::new(cfg);
    let input = Input {
        consumer: consumer_cfg,
        topics: vec![&cfg.topics.labels],
        reports_assignment: false,
        transactional: false,
    };
    let stop = shutdown.clone();
    let report = drive_chain(
        &cfg,
        input,
        producer_cfg,
        shutdown,
        |rx, producer, report, _| {
            let (rx, apply) = stages::spawn(
                Apply {
                    cfg: cfg.clone(),
                    codec,
                    scorer,
                    producer,
                    shutdown: stop,
                    report,
                },
                rx,
            );
            (rx, vec![apply])
        },
    )
    .await?;
    tracing::info!(?report, "labels consumer stopped");
    Ok(report)
}

/// apply: each label of the batch, in order, to the identity graph; retried while the store
/// is down. On shutdown during a retry, the batch goes on with only the labels applied so far
/// (their offsets alone are stored: the rest is read again by the next owner).
struct Apply<S> {
    cfg: Arc<WorkerConfig>,
    codec: Arc<Codec>,
    scorer: Arc<Scorer<S>>,
    producer: FutureProducer,
    shutdown: watch::Receiver<bool>,
    report: Shared<LabelsReport>,
}

impl<S: FeatureStore> Stage for Apply<S> {
    type In = Vec<OwnedMessage>;
    type Out = Vec<DeliveryFuture>;
    fn name(&self) -> &'static str {
        "apply_labels"
    }
    async fn process(&mut self, batch: Batch<Self::In>) -> Result<Batch<Self::Out>, WorkerError> {
        let mut deliveries = Vec::new();
        let mut applied = 0;
        let mut report = *self.report.lock().expect("report lock");
        for msg in &batch.data {
            let done = self.apply_one(msg, &mut report, &mut deliveries).await?;
            if !done {
                break; // shutdown while waiting for the store: not applied, not committed
            }
            applied += 1;
        }
        *self.report.lock().expect("report lock") = report;
        if applied == batch.data.len() {
            Ok(batch.with(deliveries))
        } else {
            Ok(Batch {
                offsets: Offsets::of(&batch.data[..applied]),
                data: deliveries,
            })
        }
    }
}

impl<S: FeatureStore> Apply<S> {
    /// Applies one label record (a dead letter's delivery goes to `deliveries`); false if
    /// shutdown came first.
    async fn apply_one(
        &mut self,
        msg: &OwnedMessage,
        report: &mut LabelsReport,
        deliveries: &mut Vec<DeliveryFuture>,
    ) -> Result<bool, WorkerError> {
        let (cfg, codec, store, producer) =
            (&*self.cfg, &*self.codec, &self.scorer.store, &self.producer);
        let shutdown = &mut self.shutdown;
        metrics::counter!(m::CONSUMED, "topic" => cfg.topics.labels.clone()).increment(1);
        let reject = |reason: String, kind: &'static str| async move {
            tracing::warn!(reason = %reason, offset = msg.offset(), "label dead-lettered");
            metrics::counter!(m::DEAD_LETTERS, "topic" => cfg.topics.labels.clone(), "reason" => kind)
            .increment(1);
            send(producer, dead_letter(cfg, msg, &reason, kind)).await
        };
        let label = match codec.decode_label(msg.payload().unwrap_or(&[])) {
            Ok(l) => l,
            Err(e) => {
                deliveries.push(reject(e.to_string(), e.kind()).await?);
                report.dead_letters += 1;
                return Ok(true);
            }
        };
        let Some(account) = label.account_id.filter(|a| !a.is_empty()) else {
            deliveries.push(
                reject(
                    "label without an account_id: the identity graph is keyed by account".into(),
                    "label_without_account",
                )
                .await?,
            );
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
                    tracing::info!(account = %riskstream_events::log_ids::Id(&account), kind = kind_label(label.kind), ?outcome, "label applied");
                    metrics::counter!(m::LABELS, "kind" => kind_label(label.kind), "outcome" => "applied").increment(1);
                    report.applied += 1;
                    return Ok(true);
                }
                Err(e) => {
                    tracing::warn!(error = %e, account = %riskstream_events::log_ids::Id(&account), "label not applied yet; retrying");
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
}
