//! enrich → score → decide for one batch: one feature-store call (a pipelined read and write), one inference call per
//! model, then the policy. No Kafka here, so the demo, the replay tool and tests share it.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use riskstream_events::{
    Decision, Event, EventType, FeatureValue, ModelInputs, ModelScore, SourcePosition, Verdict,
};
use riskstream_features::inputs::{self, N_INPUTS};
use riskstream_features::{FeatureStore, StoreError, StoreFeatures, Turn, Turns};
use std::sync::Arc;

use crate::metrics as m;
use crate::policy::Decided;
use crate::serving::{Serving, ServingHandle, Target};
use crate::writeback::{self, WriteBack};

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

/// Scores batches of decoded events.
pub struct Scorer<S> {
    pub store: S,
    /// Models, routes and policy; swapped by hot reload, read once per batch.
    pub serving: Arc<ServingHandle>,
    /// How batches are cut into feature-store calls.
    pub chunks: StoreChunks,
    /// Events scored while the store did not answer, to record once it does.
    pub writeback: WriteBack,
    /// The last feature-store call answered.
    answered: AtomicBool,
    /// Batches in [`Scorer::enrich`] now, and when the last one ended: the write-back is
    /// drained between batches while the worker is idle ([`Scorer::drain_writeback_when_idle`]).
    busy: std::sync::atomic::AtomicUsize,
    last_enrich: std::sync::Mutex<std::time::Instant>,
    /// The order of batches' store calls when they overlap ([`Scorer::turn`]).
    turns: Turns,
}

/// Reusable per-batch buffers (the hot path allocates them once per worker).
#[derive(Default)]
pub struct Buffers {
    rows: Vec<f32>,
    idx: Vec<usize>,
    sub_rows: Vec<f32>,
    scores: Vec<f32>,
    /// `n_events x n_models`, NaN where a model did not score an event.
    model_scores: Vec<f32>,
}

/// (name, input-row column) of the values verdicts log by name (`features`): the
/// identity-graph features, for the rules engine and investigators. The models' own inputs go
/// compactly in `model_inputs` (see [`riskstream_models::Model::logged_columns`]).
fn graph_features() -> &'static [(&'static str, usize)] {
    static GRAPH: std::sync::OnceLock<Vec<(&'static str, usize)>> = std::sync::OnceLock::new();
    GRAPH.get_or_init(|| {
        riskstream_features::store_features()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.group == "graph")
            .map(|(c, f)| (f.name, c))
            .collect()
    })
}

/// Attribution differences (log-odds) below this are not reason codes.
const MIN_ATTRIBUTION: f32 = 0.1;
/// Ungrouped inputs occluded per flagged event (besides every input group).
pub const ATTRIBUTION_CANDIDATES: usize = 8;
/// The same for models with grouped inputs (a sequence encoder such as the behavioral model's
/// telemetry encoder) whose occlusion does not all go through the explain layer: there each
/// occluded row is a full recurrent pass (~25× an MLP row), and the sequence group is usually
/// what drives them, so fewer ungrouped inputs are screened.
pub const ATTRIBUTION_CANDIDATES_SEQUENCE: usize = 3;

/// Ungrouped inputs screened for `model`'s reason codes: [`ATTRIBUTION_CANDIDATES`] when
/// every unit is occluded through the explain layer (a row costs the layers above it, however
/// deep the model's front), else [`ATTRIBUTION_CANDIDATES_SEQUENCE`] for a model with a group.
pub fn attribution_candidates_for(model: &riskstream_models::Model) -> usize {
    let units = model.attribution_units();
    let all_fast = (0..units.len()).all(|u| model.occludes_through_layer(u));
    if !all_fast && units.iter().any(|(_, u)| u.len() > 1) {
        ATTRIBUTION_CANDIDATES_SEQUENCE
    } else {
        ATTRIBUTION_CANDIDATES
    }
}
/// Most attribution reason codes per verdict.
const MAX_ATTRIBUTIONS: usize = 3;

impl<S: FeatureStore> Scorer<S> {
    pub fn new(store: S, serving: Arc<ServingHandle>) -> Self {
        Scorer {
            store,
            serving,
            chunks: StoreChunks::default(),
            writeback: WriteBack::new(0),
            busy: Default::default(),
            last_enrich: std::sync::Mutex::new(std::time::Instant::now()),
            answered: AtomicBool::new(true),
            turns: Turns::default(),
        }
    }

    /// Keeps up to `max` events scored during a store outage to record once it answers
    /// (`writeback.rs`; 0: off, the default).
    pub fn with_writeback(mut self, max: usize) -> Self {
        self.writeback = WriteBack::new(max);
        self
    }

    /// Verdicts for `events` (same order). `sources[i]` is where `events[i]` was read.
    /// [`Scorer::enrich`] then [`Scorer::score_enriched`] in one call (tests and simple callers;
    /// the worker runs the two as separate stages, the second on the compute pool).
    pub async fn score_batch(
        &self,
        events: &[Event],
        sources: &[SourcePosition],
        now_ms: i64,
        buf: &mut Buffers,
    ) -> Vec<Verdict> {
        let enriched = self.enrich(events).await;
        self.score_enriched(events, sources, enriched, now_ms, buf)
    }

    /// enrich: the batch's feature-store calls (features as of each event's time, and the
    /// batch recorded), cut into chunks that each fit the store's deadline ([`StoreChunks`]).
    /// When a call fails or is too slow, its events and the rest of the batch are degraded.
    pub async fn enrich(&self, events: &[Event]) -> Enriched {
        self.enrich_in_turn(events, self.turn()).await
    }

    /// The next batch's place in the store's order: take it where batches are still in order
    /// (the enrich stage's `start`), then [`Scorer::enrich_in_turn`] — overlapping calls read
    /// and compute in that order (`riskstream_features::order`).
    pub fn turn(&self) -> Turn {
        self.turns.take()
    }

    /// [`Scorer::enrich`] in `turn`'s place among overlapping batches.
    pub async fn enrich_in_turn(&self, events: &[Event], turn: Turn) -> Enriched {
        let n = events.len();
        if n == 0 {
            return Enriched::default();
        }
        self.busy.fetch_add(1, Ordering::SeqCst);
        let enriched = self.enrich_busy(events, turn).await;
        *self.last_enrich.lock().expect("scorer lock") = std::time::Instant::now();
        self.busy.fetch_sub(1, Ordering::SeqCst);
        enriched
    }

    /// Records what the outage write-back holds while no batch comes (traffic that stops
    /// during an outage would otherwise keep it until the next batch): when no batch has been
    /// in the enrich stage for `idle`, one chunk after another until it is empty, a batch
    /// arrives, or the store refuses (then kept for later). Returns the events recorded.
    pub async fn drain_writeback_when_idle(&self, idle: Duration) -> usize {
        let mut recorded = 0;
        while !self.writeback.is_empty()
            && self.busy.load(Ordering::SeqCst) == 0
            && self.last_enrich.lock().expect("scorer lock").elapsed() >= idle
        {
            match self.record_writeback_chunk(StoreChunks::MIN).await {
                Ok(n) => {
                    recorded += n;
                    self.answered.store(true, Ordering::Relaxed);
                    crate::health::health().set_store_degraded(false);
                }
                Err((pending, _)) => {
                    // Still down: kept, tried again at the next tick or batch.
                    self.writeback.put_back(pending);
                    break;
                }
            }
        }
        recorded
    }

    /// The time one feature-store call should take (a share of the store's deadline).
    fn call_target(&self) -> Option<Duration> {
        self.store
            .deadline()
            .map(|d| d.mul_f64(StoreChunks::TARGET_SHARE))
    }

    /// Records one chunk (sized from `events`) of the outage write-back: the events recorded,
    /// or the ones the store did not take and why.
    async fn record_writeback_chunk(
        &self,
        events: usize,
    ) -> Result<usize, (Vec<riskstream_features::OwnedFacts>, StoreError)> {
        let pending = self.writeback.take(self.chunks.next(events));
        let pending_facts: Vec<_> = pending.iter().map(|p| p.facts()).collect();
        let call = self.store.record_batch(&pending_facts);
        match self
            .timed_call(pending.len(), self.call_target(), None, call)
            .await
        {
            Ok(()) => {
                writeback::recorded(pending.len());
                Ok(pending.len())
            }
            Err(e) => Err((pending, e)),
        }
    }

    async fn enrich_busy(&self, events: &[Event], turn: Turn) -> Enriched {
        let n = events.len();
        let facts: Vec<_> = events.iter().map(inputs::facts).collect();
        let target = self.call_target();
        // This batch's turn first (the earlier batches' round trips answered), before the
        // write-back chunk below too, whose writes and reads must also follow theirs.
        turn.reads().await;
        // Events scored during an outage first (earlier times: this batch's features count
        // them), one chunk per batch, once the store answered the last call.
        let mut refused = Vec::new();
        if self.answered.load(Ordering::Relaxed) && !self.writeback.is_empty() {
            if let Err((pending, e)) = self.record_writeback_chunk(n.max(StoreChunks::MIN)).await {
                tracing::warn!(error = %e, events = pending.len(), "recording events scored during a store outage failed");
                refused = pending;
            }
        }
        let mut features = Vec::with_capacity(n);
        let mut at = 0;
        while at < n {
            let take = target.map_or(n - at, |_| self.chunks.next(n - at));
            let call =
                self.store
                    .enrich_batch_in_turn(&facts[at..at + take], &turn, at + take == n);
            match self.timed_call(take, target, Some(&turn), call).await {
                Ok(f) => {
                    features.extend(f);
                    at += take;
                }
                Err(e) => {
                    self.writeback.keep(&facts[at..]);
                    crate::health::health().set_store_degraded(true);
                    tracing::warn!(error = %e, events = n - at, call_events = take, waited_for_turn_ms = turn.waited().as_millis() as u64, "feature store unavailable; scoring degraded");
                    metrics::counter!(m::DEGRADED, "reason" => DEGRADED_FEATURE_STORE)
                        .increment((n - at) as u64);
                    break;
                }
            }
        }
        self.answered.store(at == n, Ordering::Relaxed);
        if at == n {
            crate::health::health().set_store_degraded(false);
            if !refused.is_empty() {
                // The store serves this batch but refused those: they are the problem.
                writeback::dropped(
                    refused.len(),
                    "the store refused them while it served others",
                );
            }
        } else if !refused.is_empty() {
            self.writeback.put_back(refused);
        }
        let degraded = (0..n).map(|i| i >= at).collect();
        features.resize(n, StoreFeatures::default());
        Enriched { features, degraded }
    }

    /// One feature-store call of `events` events, timed: its time feeds the chunk sizing
    /// (towards `target`, when the store has a deadline) and the call histogram. The time
    /// `turn` spent waiting for earlier batches meanwhile is left out (it is theirs).
    async fn timed_call<T>(
        &self,
        events: usize,
        target: Option<Duration>,
        turn: Option<&Turn>,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let waited = turn.map(Turn::waited).unwrap_or_default();
        let result = call.await;
        let waited = turn.map(Turn::waited).unwrap_or_default() - waited;
        let took = started.elapsed().saturating_sub(waited);
        metrics::histogram!(m::FEATURE_STORE_SECONDS).record(took.as_secs_f64());
        match (&result, target) {
            (Ok(_), Some(target)) => self.chunks.observe(events, took, target),
            (Ok(_), None) => {}
            (Err(_), _) => self.chunks.failed(events),
        }
        result
    }
}

/// How [`Scorer::enrich`] cuts a batch into feature-store calls when the store has a deadline:
/// each call sized to take about [`StoreChunks::TARGET_SHARE`] of it, from the time per event
/// the last calls took. Under normal load a whole batch is one call; when the store slows down
/// (long histories, a busy Redis) calls get smaller instead of missing the deadline and
/// degrading whole batches, and they grow back as it recovers.
#[derive(Debug)]
pub struct StoreChunks {
    size: AtomicUsize,
    /// A call was measured (until then: [`StoreChunks::START`]).
    measured: AtomicBool,
}

impl Default for StoreChunks {
    fn default() -> Self {
        StoreChunks {
            size: AtomicUsize::new(Self::START),
            measured: AtomicBool::new(false),
        }
    }
}

impl StoreChunks {
    /// The share of the store's deadline one call aims at.
    pub const TARGET_SHARE: f64 = 0.5;
    /// Fewest events per call (below that the round trip itself dominates).
    pub const MIN: usize = 16;
    /// Most events per call (more than any batch).
    pub const MAX: usize = 1 << 16;
    /// Events per call until a call was measured: small enough for a cold store, a store with
    /// long histories, or a worker still warming up to answer within the deadline (a starting
    /// worker's first batches went whole and missed it: 512–2 048 events degraded per start
    /// in session 12's benchmark); the size grows from the first measured call.
    pub const START: usize = 128;

    /// Events in the next call, out of `remaining`: equal chunks no larger than the size.
    pub fn next(&self, remaining: usize) -> usize {
        let size = self.size.load(Ordering::Relaxed).max(1);
        let calls = remaining.div_ceil(size);
        remaining.div_ceil(calls)
    }

    /// A call of `events` took `took`: the size moves halfway towards what would take `target`.
    pub fn observe(&self, events: usize, took: Duration, target: Duration) {
        let fits = (events as f64 * target.as_secs_f64() / took.as_secs_f64().max(1e-6))
            .clamp(Self::MIN as f64, Self::MAX as f64) as usize;
        let size = self.size.load(Ordering::Relaxed).min(Self::MAX);
        // Halfway, except that the first measurement is taken as it is.
        let next = if self.measured.swap(true, Ordering::Relaxed) {
            (size + fits) / 2
        } else {
            fits
        };
        self.size.store(next.max(Self::MIN), Ordering::Relaxed);
        metrics::gauge!(m::STORE_CHUNK_EVENTS).set(next as f64);
    }

    /// A call of `events` failed (the store was down, or missed its deadline): next time, a
    /// quarter of it.
    pub fn failed(&self, events: usize) {
        let next = (events / 4).max(Self::MIN);
        self.size.store(next, Ordering::Relaxed);
        metrics::gauge!(m::STORE_CHUNK_EVENTS).set(next as f64);
    }
}

/// What the feature store answered for one batch (same order as its events).
#[derive(Debug, Default)]
pub struct Enriched {
    pub features: Vec<StoreFeatures>,
    /// Per event: the store did not answer for it (its `features` are all zero).
    pub degraded: Vec<bool>,
}

impl<S> Scorer<S> {
    /// score → decide → explain → assemble, CPU only (no I/O): one inference call per model
    /// over every event it scores, the policy, reason codes for events not simply allowed.
    /// Runs on the compute pool in the worker, never on the async threads.
    pub fn score_enriched(
        &self,
        events: &[Event],
        sources: &[SourcePosition],
        enriched: Enriched,
        now_ms: i64,
        buf: &mut Buffers,
    ) -> Vec<Verdict> {
        let n = events.len();
        if n == 0 {
            return Vec::new();
        }
        // One snapshot for the whole batch: a reload lands between batches.
        let serving = self.serving.current();
        let Enriched {
            features: store_features,
            degraded,
        } = enriched;

        buf.rows.clear();
        buf.rows.resize(n * N_INPUTS, 0.0);
        for (i, (event, features)) in events.iter().zip(&store_features).enumerate() {
            inputs::fill_row(
                event,
                features,
                &mut buf.rows[i * N_INPUTS..(i + 1) * N_INPUTS],
            );
        }

        // score: route each event, then one inference call per model over every event it scores
        let targets: Vec<&Target> = events.iter().map(|e| serving.target(e)).collect();
        let n_models = serving.models.len();
        buf.model_scores.clear();
        buf.model_scores.resize(n * n_models, f32::NAN);
        for mi in 0..n_models {
            buf.idx.clear();
            buf.idx.extend(
                (0..n).filter(|&i| targets[i].champion == mi || targets[i].shadows.contains(&mi)),
            );
            if buf.idx.is_empty() {
                continue;
            }
            let model = serving.model(mi);
            buf.sub_rows.clear();
            for &i in &buf.idx {
                buf.sub_rows
                    .extend_from_slice(&buf.rows[i * N_INPUTS..(i + 1) * N_INPUTS]);
            }
            buf.scores.clear();
            let started = Instant::now();
            match model.score(&buf.sub_rows, N_INPUTS, buf.idx.len(), &mut buf.scores) {
                Ok(()) => {
                    for (k, &i) in buf.idx.iter().enumerate() {
                        buf.model_scores[i * n_models + mi] = buf.scores[k];
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "inference failed; its champion events go to review")
                }
            }
            metrics::histogram!(m::INFERENCE_SECONDS, "model" => serving.models[mi].dir.clone())
                .record(started.elapsed().as_secs_f64());
        }

        // decide
        let score_of = |i: usize, mi: usize| buf.model_scores[i * n_models + mi];
        let decided: Vec<Option<Decided>> = (0..n)
            .map(|i| {
                let champion = serving.model(targets[i].champion);
                let score = score_of(i, targets[i].champion);
                (!score.is_nan()).then(|| {
                    serving.policy.decide(
                        &events[i],
                        &buf.rows[i * N_INPUTS..(i + 1) * N_INPUTS],
                        score,
                        &champion.manifest.thresholds,
                        degraded[i],
                    )
                })
            })
            .collect();
        for (i, t) in targets.iter().enumerate() {
            let Some(d) = decided[i] else { continue };
            for &si in &t.shadows {
                let s = score_of(i, si);
                if !s.is_nan()
                    && serving
                        .policy
                        .decide(
                            &events[i],
                            &buf.rows[i * N_INPUTS..(i + 1) * N_INPUTS],
                            s,
                            &serving.model(si).manifest.thresholds,
                            degraded[i],
                        )
                        .decision
                        != d.decision
                {
                    metrics::counter!(m::SHADOW_DISAGREEMENTS, "model" => serving.models[si].dir.clone())
                        .increment(1);
                }
            }
        }

        // explain: attributions for every event not simply allowed
        let flagged: Vec<usize> = (0..n)
            .filter(|&i| decided[i].is_some_and(|d| d.decision != Decision::Allow))
            .collect();
        let started = Instant::now();
        let cpu_started = (!flagged.is_empty()).then(thread_cpu_seconds).flatten();
        let mut explanations = explain(&serving, &targets, &flagged, &buf.rows, |i| {
            score_of(i, targets[i].champion)
        });
        if !flagged.is_empty() {
            metrics::histogram!(m::EXPLAIN_SECONDS).record(started.elapsed().as_secs_f64());
            if let (Some(a), Some(b)) = (cpu_started, thread_cpu_seconds()) {
                metrics::histogram!(m::EXPLAIN_CPU_SECONDS).record((b - a).max(0.0));
            }
        }

        let mut verdicts = Vec::with_capacity(n);
        for (i, event) in events.iter().enumerate() {
            let target = targets[i];
            let champion = serving.model(target.champion);
            let row = &buf.rows[i * N_INPUTS..(i + 1) * N_INPUTS];
            let mut degraded_reasons = if degraded[i] {
                store_missing_reasons()
            } else {
                Vec::new()
            };
            let (decision, friction, mut reasons) = match decided[i] {
                None => {
                    degraded_reasons.push(format!("model_{}_failed", champion.name()));
                    (
                        Decision::Review,
                        riskstream_events::Friction::HumanReview,
                        vec!["model_unavailable".to_string()],
                    )
                }
                Some(d) => {
                    let mut reasons = explanations.remove(&i).unwrap_or_default();
                    reasons.extend(d.signal_reasons(row));
                    if let Some(rule) = d.rule {
                        reasons.push(format!("policy:{rule}"));
                    }
                    (d.decision, d.friction, reasons)
                }
            };
            if degraded[i] {
                reasons.push("degraded:features_missing".to_string());
            }
            let mut scores = Vec::with_capacity(1 + target.shadows.len());
            for (mi, shadow) in std::iter::once((target.champion, false))
                .chain(target.shadows.iter().map(|&s| (s, true)))
            {
                let model = serving.model(mi);
                let s = score_of(i, mi);
                scores.push(ModelScore {
                    model: Cow::Borrowed(model.name()),
                    version: Cow::Borrowed(model.version()),
                    score: if s.is_nan() { -1.0 } else { s as f64 },
                    shadow,
                });
            }
            // What evaluation slices by: the transaction kind, or the vendor and its scores.
            let (transaction_kind, vendor, vendor_liveness_score, vendor_face_match_score) =
                match event {
                    Event::Transaction(t) => {
                        (Cow::Borrowed(t.kind.as_str()), String::new(), None, None)
                    }
                    Event::CaptureSession(c) => (
                        Cow::Borrowed(""),
                        c.vendor.vendor.clone(),
                        Some(c.vendor.liveness_score),
                        Some(c.vendor.face_match_score),
                    ),
                };
            verdicts.push(Verdict {
                event_id: event.event_id().to_string(),
                event_type: event.event_type(),
                account_id: event.account_id().to_string(),
                event_time: event.event_time(),
                scored_at: now_ms,
                decision,
                friction,
                scores,
                reasons,
                features: graph_features()
                    .iter()
                    .map(|&(name, c)| FeatureValue {
                        name: Cow::Borrowed(name),
                        value: row[c] as f64,
                    })
                    .collect(),
                model_inputs: std::iter::once(target.champion)
                    .chain(target.shadows.iter().copied())
                    .map(|mi| {
                        let model = serving.model(mi);
                        ModelInputs {
                            model: Cow::Borrowed(model.name()),
                            version: Cow::Borrowed(model.version()),
                            values: model.logged_columns().iter().map(|&c| row[c]).collect(),
                        }
                    })
                    .collect(),
                degraded: !degraded_reasons.is_empty(),
                degraded_reasons,
                source: sources[i].clone(),
                region: event.region().to_string(),
                transaction_kind,
                vendor,
                vendor_liveness_score,
                vendor_face_match_score,
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

/// Reason codes for the `flagged` events: what drove each champion's score, by occlusion.
/// Candidates are every input group (e.g. the telemetry sequence) and the
/// [`ATTRIBUTION_CANDIDATES`] ([`ATTRIBUTION_CANDIDATES_SEQUENCE`] for models with a sequence
/// group) inputs furthest from their training distribution; each is
/// re-scored with that unit set to its training mean (from the manifest), and the drop in
/// log-odds is its contribution (log-odds, not probability: a saturated score near 1 still
/// shows what holds it up). The strongest positive contributions become `name:+2.31` (at most
/// three; at least the strongest one). All occluded rows of a model go through one inference
/// call; inputs the model's explain layer handles skip the front of the model
/// ([`riskstream_models::Model::occluded_scores`]).
fn logit(p: f32) -> f32 {
    let p = p.clamp(1e-7, 1.0 - 1e-7);
    (p / (1.0 - p)).ln()
}

/// CPU time this thread has used, seconds (`CLOCK_THREAD_CPUTIME_ID`); `None` if unavailable.
/// What one step costs in CPU, apart from the time its thread waited for a core.
fn thread_cpu_seconds() -> Option<f64> {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to write.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
    ok.then_some(t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9)
}

fn explain(
    serving: &Serving,
    targets: &[&Target],
    flagged: &[usize],
    rows: &[f32],
    score: impl Fn(usize) -> f32,
) -> std::collections::HashMap<usize, Vec<String>> {
    let mut out = std::collections::HashMap::with_capacity(flagged.len());
    for mi in 0..serving.models.len() {
        let events: Vec<usize> = flagged
            .iter()
            .copied()
            .filter(|&i| targets[i].champion == mi)
            .collect();
        if events.is_empty() {
            continue;
        }
        let model = serving.model(mi);
        let units = model.attribution_units();
        let max_inputs = attribution_candidates_for(model);
        let k = model.input_names().len();
        let mut base = Vec::with_capacity(events.len() * k);
        let mut candidates: Vec<Vec<usize>> = Vec::with_capacity(events.len());
        for &i in &events {
            let at = base.len();
            model.gather(&rows[i * N_INPUTS..(i + 1) * N_INPUTS], &mut base);
            let mut c = Vec::new();
            model.attribution_candidates(&base[at..], max_inputs, &mut c);
            candidates.push(c);
        }
        let mut scores = Vec::new();
        if let Err(e) = model.occluded_scores(&base, events.len(), &candidates, &mut scores) {
            tracing::warn!(error = %e, "attribution failed; reason codes name the policy rule only");
            continue;
        }
        let mut at = 0;
        for (&i, c) in events.iter().zip(&candidates) {
            let s = score(i);
            let mut contributions: Vec<(f32, &str)> = c
                .iter()
                .enumerate()
                .map(|(j, &u)| (logit(s) - logit(scores[at + j]), units[u].0))
                .collect();
            at += c.len();
            contributions.sort_by(|a, b| b.0.total_cmp(&a.0));
            let codes = contributions
                .iter()
                .enumerate()
                .take_while(|(rank, (c, _))| *rank == 0 || *c >= MIN_ATTRIBUTION)
                .take(MAX_ATTRIBUTIONS)
                .map(|(_, (c, label))| format!("{label}:{c:+.2}"))
                .collect();
            out.insert(i, codes);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::test_models;
    use riskstream_features::inputs::input_index;
    use riskstream_features::{EventFacts, MemoryStore, StoreError, StoreLimits};
    use riskstream_sim::{SimConfig, Simulator};

    #[test]
    fn thread_cpu_time_counts_this_threads_work() {
        let before = thread_cpu_seconds().expect("CLOCK_THREAD_CPUTIME_ID on Linux");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        std::hint::black_box(x);
        let after = thread_cpu_seconds().expect("CLOCK_THREAD_CPUTIME_ID on Linux");
        assert!(after > before, "{before} → {after}");
    }

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

    /// A store whose calls cost 0.5 ms per event, with a 100 ms deadline: a call of more than
    /// 200 events misses it (and, like a timed-out call, is not known to have written).
    struct SlowStore(MemoryStore);
    impl FeatureStore for SlowStore {
        async fn enrich_batch(
            &self,
            batch: &[EventFacts<'_>],
        ) -> Result<Vec<StoreFeatures>, StoreError> {
            let cost = Duration::from_micros(500) * batch.len() as u32;
            let deadline = Duration::from_millis(100);
            if cost > deadline {
                tokio::time::sleep(deadline).await;
                return Err(StoreError::Timeout(deadline));
            }
            tokio::time::sleep(cost).await;
            self.0.enrich_batch(batch).await
        }
        fn deadline(&self) -> Option<Duration> {
            Some(Duration::from_millis(100))
        }
        async fn apply_label(
            &self,
            _: &str,
            _: bool,
            _: i64,
        ) -> Result<riskstream_features::LabelOutcome, StoreError> {
            unreachable!("not used")
        }
    }

    #[test]
    fn store_chunks_follow_the_time_per_event() {
        let c = StoreChunks::default();
        assert_eq!(c.next(512), 128, "small calls until a call was measured");
        // 128 events took a tenth of the target: the size goes to what fits at once.
        c.observe(128, Duration::from_millis(5), Duration::from_millis(50));
        assert_eq!(c.next(2000), 1000, "two calls of 1000");
        // 512 events took twice the target: halfway from 1280 to 256.
        c.observe(512, Duration::from_millis(100), Duration::from_millis(50));
        assert_eq!(c.next(1000), 500, "size 768: two calls of 500");
        c.failed(1024);
        assert_eq!(c.next(512), 256);
        assert_eq!(c.next(300), 150, "equal chunks, none larger than the size");
        // Fast calls: back towards whole batches.
        c.observe(256, Duration::from_millis(10), Duration::from_millis(50));
        assert_eq!(c.next(512), 512);
        // A failed call: a quarter of it next time, never below the minimum.
        c.failed(512);
        assert_eq!(c.next(512), 128);
        c.failed(20);
        assert_eq!(c.next(512), 16);
        c.observe(16, Duration::from_secs(1), Duration::from_millis(50));
        assert_eq!(c.next(512), 16);
    }

    #[tokio::test]
    async fn a_slow_store_gets_smaller_calls_instead_of_degraded_batches() {
        let s = scorer(SlowStore(MemoryStore::new(StoreLimits::default())));
        let (events, sources) = batch(900);
        // The k-th batch of 300.
        async fn score<S: FeatureStore>(
            s: &Scorer<S>,
            (events, sources): (&[Event], &[SourcePosition]),
            k: usize,
        ) -> Vec<Verdict> {
            let r = k * 300..(k + 1) * 300;
            s.score_batch(&events[r.clone()], &sources[r], 1, &mut Buffers::default())
                .await
        }
        let all = (&events[..], &sources[..]);
        // A starting worker's first calls are small: nothing degraded although the store
        // takes 500 us per event against a 100 ms deadline.
        let v1 = score(&s, all, 0).await;
        assert!(v1.iter().all(|v| !v.degraded));
        // Measured fast meanwhile: the next batch goes in one call of 300, misses the deadline
        // and is degraded whole.
        s.chunks
            .observe(128, Duration::from_millis(1), Duration::from_millis(50));
        assert_eq!(s.chunks.next(300), 300);
        let v2 = score(&s, all, 1).await;
        assert!(v2.iter().all(|v| v.degraded));
        // The next batch goes in calls that fit: nothing degraded, and the same verdicts as
        // one call to a store without a deadline (batching does not change features).
        let v3 = score(&s, all, 2).await;
        assert!(v3.iter().all(|v| !v.degraded));
        assert!(s.chunks.next(300) < 300);
        let reference = scorer(MemoryStore::new(StoreLimits::default()));
        score(&reference, all, 0).await;
        assert_eq!(v3, score(&reference, all, 2).await);
    }

    fn scorer_from<S: FeatureStore>(store: S, dir: &std::path::Path) -> Scorer<S> {
        let serving = ServingHandle::load(dir, input_index).expect("models load");
        Scorer::new(store, Arc::new(serving))
    }

    fn scorer<S: FeatureStore>(store: S) -> Scorer<S> {
        scorer_from(store, &test_models::committed())
    }

    /// A models directory with the committed models, a copy of `ato` as version `version` in
    /// `ato-next`, and `serving` as its serving file.
    fn models_with_challenger(version: &str, serving: &str) -> tempfile::TempDir {
        let dirs = [
            ("behavioral", "behavioral"),
            ("behavioral", "behavioral-b"),
            ("ato", "ato"),
            ("ato", "ato-next"),
        ];
        let dir = test_models::copy(&dirs, Some(serving));
        test_models::set_version(&dir.path().join("ato-next"), version);
        test_models::set_version(&dir.path().join("behavioral-b"), "2.0.0-vendor-b");
        dir
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
            let serving = s.serving.current();
            let model = serving.model(serving.target(e).champion);
            assert_eq!(v.scores.len(), 1, "no shadows configured");
            assert_eq!(v.scores[0].model, model.name());
            let ungrouped = model
                .manifest
                .inputs
                .iter()
                .filter(|i| i.group.is_none())
                .count();
            assert_eq!(v.features.len(), 5, "the graph features, by name");
            assert_eq!(v.model_inputs.len(), 1, "the champion's inputs");
            assert_eq!(v.model_inputs[0].model, model.name());
            assert_eq!(v.model_inputs[0].version, model.version());
            assert_eq!(
                v.model_inputs[0].values.len(),
                ungrouped,
                "model inputs in manifest order, without the telemetry sequence"
            );
            assert!(v
                .features
                .iter()
                .any(|f| f.name == "graph_fraud_accounts_1hop"));
            assert!((0.0..=1.0).contains(&v.scores[0].score));
            if v.decision != Decision::Allow {
                assert!(
                    v.reasons.last().unwrap().starts_with("policy:"),
                    "{:?}",
                    v.reasons
                );
                // Attributions (`input:+1.23`, the strongest even when negative), then the
                // deciding rule's signals (`signal:input=value`) and the rule.
                let attributed: Vec<_> = v
                    .reasons
                    .iter()
                    .filter(|r| !r.starts_with("policy:") && !r.starts_with("signal:"))
                    .collect();
                assert!(!attributed.is_empty(), "{:?}", v.reasons);
                for r in attributed {
                    let name = r.split(':').next().unwrap();
                    assert!(
                        name == "telemetry_sequence" || model.input_names().contains(&name),
                        "reason `{r}` names a model input"
                    );
                }
            }
        }
        assert!(
            verdicts.iter().any(|v| v.decision != Decision::Allow),
            "the batch has flagged events"
        );
    }

    #[tokio::test]
    async fn attribution_reports_the_score_drop_when_the_feature_is_neutralised() {
        // For flagged transactions, rebuild the model input row from the verdict's logged
        // features, check it reproduces the score, then set the top reason's feature to its
        // training mean: the score's log-odds must drop by the reported contribution.
        let s = scorer(MemoryStore::new(StoreLimits::default()));
        let (events, sources) = batch(3000);
        let verdicts = s
            .score_batch(&events, &sources, 1, &mut Buffers::default())
            .await;
        let serving = s.serving.current();
        let model = serving.champion(riskstream_models::Slot::Ato);
        let mut checked = 0;
        for v in verdicts
            .iter()
            .filter(|v| v.event_type == EventType::Transaction && v.decision != Decision::Allow)
        {
            // (A signal rule may stop a transaction the model scores low: nothing raised its
            // score enough to be named then.)
            let Some(top) = v.reasons.iter().find(|r| r.contains(":+")) else {
                assert!(
                    v.reasons.iter().any(|r| r.starts_with("signal:")),
                    "a transaction stopped on its score has a reason: {:?}",
                    v.reasons
                );
                continue;
            };
            // Within 1e-4 of certainty a score's log-odds move by tenths with float noise between
            // plan batch sizes (d logit = d p / (p (1 - p))): not a check of the attribution.
            if v.scores[0].score > 1.0 - 1e-4 {
                continue;
            }
            let (name, contribution) = top.rsplit_once(':').unwrap();
            let contribution: f32 = contribution.parse().unwrap();
            // The ato model has no grouped inputs: the logged values are its whole row.
            assert_eq!(v.model_inputs[0].model, model.name());
            let mut row: Vec<f32> = v.model_inputs[0].values.clone();
            assert_eq!(row.len(), model.input_names().len());
            let mut out = Vec::new();
            model.score_model_rows(&row, 1, &mut out).unwrap();
            assert!((out[0] as f64 - v.scores[0].score).abs() < 1e-5);
            let p = model.input_names().iter().position(|n| *n == name).unwrap();
            row[p] = model.manifest.inputs[p].mean;
            out.clear();
            model.score_model_rows(&row, 1, &mut out).unwrap();
            let drop = logit(v.scores[0].score as f32) - logit(out[0]);
            // (two decimals; float noise between plan batch sizes is amplified near 0 and 1)
            assert!(
                (drop - contribution).abs() < 0.01 + 0.02 * contribution.abs(),
                "{top}: log-odds drop {drop}"
            );
            if contribution >= MIN_ATTRIBUTION {
                checked += 1;
            }
        }
        assert!(checked >= 5, "only {checked} flagged transactions");
    }

    #[tokio::test]
    async fn shadows_are_scored_and_marked_and_routes_choose_the_champion() {
        let serving = r#"
            [slots.behavioral]
            champion = "behavioral"
            [slots.ato]
            champion = "ato"
            shadows = ["ato-next"]
            [[routes]]
            name = "eu-canary"
            slot = "ato"
            regions = ["eu"]
            champion = "ato-next"
            shadows = ["ato"]
            [[routes]]
            name = "vendor-b"
            slot = "behavioral"
            vendors = ["vendor_b"]
            champion = "behavioral-b"
        "#;
        let dir = models_with_challenger("9.9.9-canary", serving);
        let s = scorer_from(MemoryStore::new(StoreLimits::default()), dir.path());
        let (events, sources) = batch(400);
        let verdicts = s
            .score_batch(&events, &sources, 1, &mut Buffers::default())
            .await;
        let (mut eu, mut other) = (0, 0);
        for (v, e) in verdicts.iter().zip(&events) {
            match e {
                Event::CaptureSession(c) => {
                    assert_eq!(v.scores.len(), 1);
                    assert_eq!(
                        v.scores[0].version == "2.0.0-vendor-b",
                        c.vendor.vendor == "vendor_b",
                        "capture sessions from vendor_b go to the vendor's model"
                    );
                }
                Event::Transaction(t) => {
                    assert_eq!(v.scores.len(), 2);
                    assert!(!v.scores[0].shadow && v.scores[1].shadow);
                    let ato = s.serving.current().models[0..]
                        .iter()
                        .find(|m| m.dir == "ato")
                        .unwrap()
                        .model
                        .version();
                    let expected = if t.region == "eu" {
                        eu += 1;
                        ["9.9.9-canary", ato]
                    } else {
                        other += 1;
                        [ato, "9.9.9-canary"]
                    };
                    assert_eq!(
                        [v.scores[0].version.as_ref(), v.scores[1].version.as_ref()],
                        expected
                    );
                    // Each scored model logs its own inputs, in the order of the scores.
                    let logged: Vec<&str> =
                        v.model_inputs.iter().map(|m| m.version.as_ref()).collect();
                    assert_eq!(logged, expected);
                    assert_eq!(v.model_inputs[0].values, v.model_inputs[1].values);
                    // Same weights: the shadow agrees; it never decides.
                    assert!((v.scores[0].score - v.scores[1].score).abs() < 1e-6);
                }
            }
        }
        assert!(eu > 0 && other > 0, "eu {eu}, other {other}");
    }

    #[tokio::test]
    async fn a_shadow_never_changes_the_decision() {
        // Decisions and reasons with a shadow equal those without it.
        let with = models_with_challenger(
            "2.0.0-shadow",
            "[slots.behavioral]\nchampion = \"behavioral\"\n[slots.ato]\nchampion = \"ato\"\nshadows = [\"ato-next\"]\n",
        );
        let (events, sources) = batch(300);
        let a = scorer_from(MemoryStore::new(StoreLimits::default()), with.path())
            .score_batch(&events, &sources, 1, &mut Buffers::default())
            .await;
        let b = scorer(MemoryStore::new(StoreLimits::default()))
            .score_batch(&events, &sources, 1, &mut Buffers::default())
            .await;
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.decision, x.friction), (y.decision, y.friction));
            assert_eq!(x.reasons, y.reasons);
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
