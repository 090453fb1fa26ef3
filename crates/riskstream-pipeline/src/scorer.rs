//! enrich → score → decide for one batch: one feature-store call (a pipelined read and write), one inference call per
//! model, then the policy. No Kafka here, so the demo, the replay tool and tests share it.

use std::borrow::Cow;
use std::time::Instant;

use riskstream_events::{
    Decision, Event, EventType, FeatureValue, ModelScore, SourcePosition, Verdict,
};
use riskstream_features::inputs::{self, N_INPUTS};
use riskstream_features::{FeatureStore, StoreFeatures};
use riskstream_models::{Model, ModelSet};

use crate::metrics as m;
use crate::policy::Policy;

/// Degraded reason when the feature store did not answer; followed in the verdict by one
/// `missing_features:<group>` per feature group the store computes (see the catalogue).
pub const DEGRADED_FEATURE_STORE: &str = "feature_store_unavailable";

/// The degraded reasons of a verdict scored without the feature store.
pub fn store_missing_reasons() -> Vec<String> {
    std::iter::once(DEGRADED_FEATURE_STORE.to_string())
        .chain(
            riskstream_features::GROUPS
                .iter()
                .map(|g| format!("missing_features:{g}")),
        )
        .collect()
}

/// Store features every verdict carries besides the model's inputs: the identity-graph group,
/// for the rules engine and investigators.
fn context_columns() -> &'static [(usize, &'static str)] {
    static COLUMNS: std::sync::LazyLock<Vec<(usize, &'static str)>> =
        std::sync::LazyLock::new(|| {
            riskstream_features::store_features()
                .iter()
                .enumerate()
                .filter(|(_, f)| f.group == "graph")
                .map(|(i, f)| (i, f.name))
                .collect()
        });
    &COLUMNS
}

/// Scores batches of decoded events.
pub struct Scorer<S> {
    pub store: S,
    pub models: ModelSet,
    pub policy: Policy,
}

/// Reusable per-batch buffers (the hot path allocates them once per worker).
#[derive(Default)]
pub struct Buffers {
    rows: Vec<f32>,
    capture_idx: Vec<usize>,
    tx_idx: Vec<usize>,
    sub_rows: Vec<f32>,
    scores: Vec<f32>,
    event_scores: Vec<f32>,
}

impl<S: FeatureStore> Scorer<S> {
    pub fn new(store: S, models: ModelSet, policy: Policy) -> Self {
        Scorer {
            store,
            models,
            policy,
        }
    }

    /// Verdicts for `events` (same order). `sources[i]` is where `events[i]` was read.
    pub async fn score_batch(
        &self,
        events: &[Event],
        sources: &[SourcePosition],
        now_ms: i64,
        buf: &mut Buffers,
    ) -> Vec<Verdict> {
        let n = events.len();
        if n == 0 {
            return Vec::new();
        }
        // enrich: one store call
        let facts: Vec<_> = events.iter().map(inputs::facts).collect();
        let started = Instant::now();
        let (store_features, degraded) = match self.store.enrich_batch(&facts).await {
            Ok(f) => (f, false),
            Err(e) => {
                tracing::warn!(error = %e, events = n, "feature store unavailable; scoring degraded");
                metrics::counter!(m::DEGRADED, "reason" => DEGRADED_FEATURE_STORE)
                    .increment(n as u64);
                (vec![StoreFeatures::default(); n], true)
            }
        };
        metrics::histogram!(m::FEATURE_STORE_SECONDS).record(started.elapsed().as_secs_f64());
        drop(facts);

        buf.rows.clear();
        buf.rows.resize(n * N_INPUTS, 0.0);
        for (i, (event, features)) in events.iter().zip(&store_features).enumerate() {
            inputs::fill_row(
                event,
                features,
                &mut buf.rows[i * N_INPUTS..(i + 1) * N_INPUTS],
            );
        }

        // score: one call per model
        buf.capture_idx.clear();
        buf.tx_idx.clear();
        for (i, e) in events.iter().enumerate() {
            match e {
                Event::CaptureSession(_) => buf.capture_idx.push(i),
                Event::Transaction(_) => buf.tx_idx.push(i),
            }
        }
        buf.event_scores.clear();
        buf.event_scores.resize(n, f32::NAN);
        for (model, idx) in [
            (&self.models.behavioral, &buf.capture_idx),
            (&self.models.ato, &buf.tx_idx),
        ] {
            if idx.is_empty() {
                continue;
            }
            buf.sub_rows.clear();
            for &i in idx.iter() {
                buf.sub_rows
                    .extend_from_slice(&buf.rows[i * N_INPUTS..(i + 1) * N_INPUTS]);
            }
            buf.scores.clear();
            let started = Instant::now();
            match model.score(&buf.sub_rows, N_INPUTS, idx.len(), &mut buf.scores) {
                Ok(()) => {
                    for (k, &i) in idx.iter().enumerate() {
                        buf.event_scores[i] = buf.scores[k];
                    }
                }
                Err(e) => tracing::error!(error = %e, "inference failed; events go to review"),
            }
            metrics::histogram!(m::INFERENCE_SECONDS, "model" => model.name())
                .record(started.elapsed().as_secs_f64());
        }

        // decide
        let mut verdicts = Vec::with_capacity(n);
        for (i, event) in events.iter().enumerate() {
            let model = match event {
                Event::CaptureSession(_) => &self.models.behavioral,
                Event::Transaction(_) => &self.models.ato,
            };
            let row = &buf.rows[i * N_INPUTS..(i + 1) * N_INPUTS];
            let score = buf.event_scores[i];
            let mut degraded_reasons = if degraded {
                store_missing_reasons()
            } else {
                Vec::new()
            };
            let (decision, friction, mut reasons) = if score.is_nan() {
                degraded_reasons.push(format!("model_{}_failed", model.name()));
                (
                    Decision::Review,
                    riskstream_events::Friction::HumanReview,
                    vec!["model_unavailable".to_string()],
                )
            } else {
                let (d, f) = self.policy.decide(event, score, degraded);
                let reasons = if d == Decision::Allow {
                    Vec::new()
                } else {
                    explain(model, row)
                };
                (d, f, reasons)
            };
            if degraded {
                reasons.push("degraded:features_missing".to_string());
            }
            verdicts.push(Verdict {
                event_id: event.event_id().to_string(),
                event_type: event.event_type(),
                account_id: event.account_id().to_string(),
                event_time: event.event_time(),
                scored_at: now_ms,
                decision,
                friction,
                scores: vec![ModelScore {
                    model: Cow::Borrowed(model.name()),
                    version: Cow::Borrowed(model.version()),
                    score: if score.is_nan() { -1.0 } else { score as f64 },
                    shadow: false,
                }],
                reasons,
                features: {
                    let inputs = model.input_names().iter().zip(model.columns());
                    let mut features: Vec<FeatureValue> = inputs
                        .map(|(name, &c)| FeatureValue {
                            name: Cow::Borrowed(name),
                            value: row[c] as f64,
                        })
                        .collect();
                    for &(c, name) in context_columns() {
                        if !model.input_names().contains(&name) {
                            features.push(FeatureValue {
                                name: Cow::Borrowed(name),
                                value: row[c] as f64,
                            });
                        }
                    }
                    features
                },
                degraded: !degraded_reasons.is_empty(),
                degraded_reasons,
                source: sources[i].clone(),
            });
        }
        for d in Decision::ALL {
            for t in [EventType::CaptureSession, EventType::Transaction] {
                let count = verdicts
                    .iter()
                    .filter(|v| v.decision == d && v.event_type == t)
                    .count();
                if count > 0 {
                    let t = if t == EventType::CaptureSession {
                        "capture_session"
                    } else {
                        "transaction"
                    };
                    metrics::counter!(m::DECISIONS, "decision" => d.as_str(), "event_type" => t)
                        .increment(count as u64);
                }
            }
        }
        verdicts
    }
}

/// Reason codes: the model inputs furthest from their training distribution, as
/// `name:+3.2sd`, strongest first (at most three, only beyond 1.5 standard deviations).
fn explain(model: &Model, row: &[f32]) -> Vec<String> {
    let mut z: Vec<(f32, &str)> = model
        .manifest
        .inputs
        .iter()
        .zip(model.columns())
        .zip(model.input_names())
        .map(|((spec, &c), name)| ((row[c] - spec.mean) / spec.std.max(1e-6), *name))
        .filter(|(z, _)| z.abs() >= 1.5)
        .collect();
    z.sort_by(|a, b| b.0.abs().total_cmp(&a.0.abs()));
    z.into_iter()
        .take(3)
        .map(|(z, name)| format!("{name}:{z:+.1}sd"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyConfig;
    use riskstream_features::inputs::input_index;
    use riskstream_features::{EventFacts, MemoryStore, StoreError, StoreLimits};
    use riskstream_sim::{SimConfig, Simulator};

    struct DownStore;
    impl FeatureStore for DownStore {
        async fn enrich_batch(
            &self,
            _: &[EventFacts<'_>],
        ) -> Result<Vec<StoreFeatures>, StoreError> {
            Err(StoreError::Timeout(std::time::Duration::from_millis(1)))
        }
        async fn apply_label(
            &self,
            _: &str,
            _: bool,
            _: i64,
        ) -> Result<riskstream_features::LabelOutcome, StoreError> {
            Err(StoreError::Timeout(std::time::Duration::from_millis(1)))
        }
    }

    fn scorer<S: FeatureStore>(store: S) -> Scorer<S> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let models = ModelSet::load(&dir, &input_index).expect("committed models");
        let policy = Policy::new(
            &PolicyConfig::default(),
            models.behavioral.manifest.thresholds,
            models.ato.manifest.thresholds,
        );
        Scorer::new(store, models, policy)
    }

    fn batch(n: usize) -> (Vec<Event>, Vec<SourcePosition>) {
        let events: Vec<Event> = Simulator::new(SimConfig::for_events(n as u64, 3))
            .take(n)
            .map(|e| e.event)
            .collect();
        let sources = (0..n)
            .map(|i| SourcePosition {
                topic: "t".into(),
                partition: 0,
                offset: i as i64,
            })
            .collect();
        (events, sources)
    }

    #[tokio::test]
    async fn one_verdict_per_event_in_order_with_logged_features() {
        let s = scorer(MemoryStore::new(StoreLimits::default()));
        let (events, sources) = batch(300);
        let verdicts = s
            .score_batch(&events, &sources, 42, &mut Buffers::default())
            .await;
        assert_eq!(verdicts.len(), 300);
        for (i, (v, e)) in verdicts.iter().zip(&events).enumerate() {
            assert_eq!(v.event_id, e.event_id());
            assert_eq!(v.source.offset, i as i64);
            assert_eq!(v.scored_at, 42);
            assert!(!v.degraded);
            let model = if matches!(e, Event::CaptureSession(_)) {
                &s.models.behavioral
            } else {
                &s.models.ato
            };
            assert_eq!(v.scores[0].model, model.name());
            assert_eq!(
                v.features.len(),
                model.input_names().len() + 4,
                "model inputs and the graph features"
            );
            assert!(v
                .features
                .iter()
                .any(|f| f.name == "graph_fraud_accounts_1hop"));
            assert!((0.0..=1.0).contains(&v.scores[0].score));
            if v.decision != Decision::Allow {
                assert!(!v.reasons.is_empty(), "a non-ALLOW verdict says why");
            }
        }
    }

    #[tokio::test]
    async fn store_outage_scores_degraded_instead_of_failing() {
        let s = scorer(DownStore);
        let (events, sources) = batch(50);
        let verdicts = s
            .score_batch(&events, &sources, 1, &mut Buffers::default())
            .await;
        assert_eq!(verdicts.len(), 50);
        assert!(verdicts
            .iter()
            .all(|v| v.degraded && v.degraded_reasons == store_missing_reasons()));
        assert!(verdicts[0]
            .degraded_reasons
            .contains(&"missing_features:velocity".to_string()));
        assert!(verdicts[0]
            .degraded_reasons
            .contains(&"missing_features:graph".to_string()));
    }
}
