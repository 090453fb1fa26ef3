//! Evaluation of a set of verdicts against labels: per *series* (each champion model, each
//! shadow version, each vendor's liveness and face-match score) the metrics overall, at the
//! model's thresholds, by decision, by calibration bin, and sliced by region, event type,
//! transaction kind and vendor.
//!
//! A vendor's scores say "1 = certainly live / the same face"; evaluated as risk they are turned
//! around (`1 − score`), so every series ranks "more likely fraud" higher and the same metrics
//! compare vendors with our models on our labels.

use std::collections::{BTreeMap, HashMap, HashSet};

use riskstream_events::{Decision, Verdict};
use serde::Serialize;

use crate::metrics::{self, CalibrationBin};
use crate::truth::{LabelIndex, Positives, Truth, Unlabelled};

/// The false-positive rate at which recall is reported (`recall_at_1pct_fpr`).
pub const MAX_FPR: f64 = 0.01;

/// Slice dimensions, in report order.
pub const DIMENSIONS: [&str; 4] = ["region", "event_type", "transaction_kind", "vendor"];

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    pub positives: Positives,
    pub unlabelled: Unlabelled,
    /// Named thresholds (`challenge`, `review`, `block`) per (model, version), from the models'
    /// manifests.
    pub thresholds: BTreeMap<(String, String), BTreeMap<String, f64>>,
    pub calibration_bins: usize,
    /// Evaluate only these events (e.g. the events two runs have in common).
    pub only_events: Option<HashSet<String>>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            positives: Positives::default(),
            unlabelled: Unlabelled::Negative,
            thresholds: BTreeMap::new(),
            calibration_bins: 10,
            only_events: None,
        }
    }
}

/// What a series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesKind {
    /// The deciding model of its slot (named by the model).
    Champion,
    /// A challenger scored in shadow (named `model@version (shadow)`).
    Shadow,
    /// A vendor's own score (named `vendor:NAME:liveness` / `vendor:NAME:face_match`).
    Vendor,
}

impl SeriesKind {
    /// As in `report.json`: `champion`, `shadow`, `vendor`.
    pub fn as_str(self) -> &'static str {
        match self {
            SeriesKind::Champion => "champion",
            SeriesKind::Shadow => "shadow",
            SeriesKind::Vendor => "vendor",
        }
    }
}

/// The ranking metrics of one set of scored, labelled events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub n: u64,
    pub positives: u64,
    pub auc_roc: Option<f64>,
    pub auc_pr: Option<f64>,
    /// Best recall with a false-positive rate of at most [`MAX_FPR`], and its threshold.
    pub recall_at_1pct_fpr: Option<f64>,
    pub threshold_at_1pct_fpr: Option<f64>,
}

impl Metrics {
    pub fn of(pairs: &[(f64, bool)]) -> Metrics {
        let at = metrics::recall_at_fpr(pairs, MAX_FPR);
        Metrics {
            n: pairs.len() as u64,
            positives: pairs.iter().filter(|(_, y)| *y).count() as u64,
            auc_roc: metrics::auc_roc(pairs),
            auc_pr: metrics::auc_pr(pairs),
            recall_at_1pct_fpr: at.map(|a| a.0),
            threshold_at_1pct_fpr: at.map(|a| a.1).filter(|t| t.is_finite()),
        }
    }
}

/// Precision and recall at one named threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AtThreshold {
    pub name: String,
    pub threshold: f64,
    pub flagged: u64,
    pub precision: f64,
    pub recall: f64,
    pub false_positive_rate: f64,
}

/// How many events of each truth got a decision (champions only: shadows never decide).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRow {
    pub decision: String,
    pub positives: u64,
    pub negatives: u64,
}

/// One value of a slice dimension.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliceRow {
    pub value: String,
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Champions: the share of events not allowed, and that set's precision and recall.
    pub not_allowed_share: Option<f64>,
    pub not_allowed_precision: Option<f64>,
    pub not_allowed_recall: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: u64,
    pub mean_score: f64,
    pub positive_rate: f64,
}

impl From<CalibrationBin> for Bin {
    fn from(b: CalibrationBin) -> Bin {
        Bin {
            lo: b.lo,
            hi: b.hi,
            count: b.count,
            mean_score: b.mean_score,
            positive_rate: b.positive_rate,
        }
    }
}

/// Everything measured for one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesReport {
    pub name: String,
    pub kind: SeriesKind,
    /// The name its positive label kinds are configured under (`vendor` for vendors).
    pub model: String,
    /// Model versions seen, most frequent first.
    pub versions: Vec<String>,
    pub overall: Metrics,
    pub at_thresholds: Vec<AtThreshold>,
    pub decisions: Vec<DecisionRow>,
    pub calibration: Vec<Bin>,
    /// Dimension → rows (dimensions where every event has the same value are left out).
    pub slices: BTreeMap<String, Vec<SliceRow>>,
}

impl SeriesReport {
    /// A named headline metric, as the gate names them: `auc_roc`, `auc_pr`,
    /// `recall_at_1pct_fpr`, `precision_at_<threshold>`, `recall_at_<threshold>`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        match name {
            "auc_roc" => self.overall.auc_roc,
            "auc_pr" => self.overall.auc_pr,
            "recall_at_1pct_fpr" => self.overall.recall_at_1pct_fpr,
            _ => {
                let (what, at) = name.split_once("_at_")?;
                let t = self.at_thresholds.iter().find(|t| t.name == at)?;
                match what {
                    "precision" => Some(t.precision),
                    "recall" => Some(t.recall),
                    _ => None,
                }
            }
        }
    }
}

/// A vendor next to the models that scored its sessions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VendorRow {
    pub vendor: String,
    /// Series name → its metrics on this vendor's sessions.
    pub series: BTreeMap<String, Metrics>,
}

/// The whole evaluation (also written as `report.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Distinct events evaluated.
    pub events: u64,
    /// Further verdicts for an event already seen (redeliveries): the first one counts.
    pub duplicate_verdicts: u64,
    pub labels_read: u64,
    pub labels_ignored: u64,
    pub positives: BTreeMap<String, Vec<String>>,
    pub unlabelled: String,
    pub series: Vec<SeriesReport>,
    pub vendors: Vec<VendorRow>,
}

impl Report {
    pub fn series(&self, name: &str) -> Option<&SeriesReport> {
        self.series.iter().find(|s| s.name == name)
    }
}

/// The report and, per series, its `(score, positive)` pairs (for the plots).
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub report: Report,
    pub pairs: BTreeMap<String, Vec<(f64, bool)>>,
}

/// One scored, labelled event of a series.
struct Row {
    score: f64,
    positive: bool,
    decision: Decision,
    /// Interned values of [`DIMENSIONS`].
    dims: [u32; 4],
}

#[derive(Default)]
struct SeriesRows {
    kind: Option<SeriesKind>,
    model: String,
    versions: HashMap<String, u64>,
    rows: Vec<Row>,
}

/// Interns slice values.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(s.to_string());
        self.ids.insert(s.to_string(), id);
        id
    }
}

/// Evaluates `verdicts` (the first verdict of each event counts) against `labels`.
pub fn evaluate(
    verdicts: impl IntoIterator<Item = Verdict>,
    labels: &LabelIndex,
    cfg: &EvalConfig,
) -> Evaluation {
    let mut seen: HashSet<String> = HashSet::new();
    let mut duplicates = 0u64;
    let mut series: BTreeMap<String, SeriesRows> = BTreeMap::new();
    let mut interner = Interner::default();
    for v in verdicts {
        if cfg
            .only_events
            .as_ref()
            .is_some_and(|only| !only.contains(&v.event_id))
        {
            continue;
        }
        if !seen.insert(v.event_id.clone()) {
            duplicates += 1;
            continue;
        }
        let dims = [
            interner.id(&v.region),
            interner.id(v.event_type.as_str()),
            interner.id(&v.transaction_kind),
            interner.id(&v.vendor),
        ];
        let mut add = |name: String, kind: SeriesKind, model: &str, version: &str, score: f64| {
            if !(0.0..=1.0).contains(&score) {
                return; // a failed model (-1) or a missing score
            }
            let positive = match labels.truth(
                &v.event_id,
                &v.account_id,
                v.event_time,
                cfg.positives.of(model),
            ) {
                Truth::Positive => true,
                Truth::Negative => false,
                Truth::Unlabelled => match cfg.unlabelled {
                    Unlabelled::Negative => false,
                    Unlabelled::Skip => return,
                },
            };
            let s = series.entry(name).or_default();
            s.kind = Some(kind);
            s.model = model.to_string();
            if !version.is_empty() {
                *s.versions.entry(version.to_string()).or_default() += 1;
            }
            s.rows.push(Row {
                score,
                positive,
                decision: v.decision,
                dims,
            });
        };
        for s in &v.scores {
            let (name, kind) = if s.shadow {
                (
                    format!("{}@{} (shadow)", s.model, s.version),
                    SeriesKind::Shadow,
                )
            } else {
                (s.model.to_string(), SeriesKind::Champion)
            };
            add(name, kind, &s.model, &s.version, s.score);
        }
        if !v.vendor.is_empty() {
            for (what, score) in [
                ("liveness", v.vendor_liveness_score),
                ("face_match", v.vendor_face_match_score),
            ] {
                if let Some(score) = score {
                    add(
                        format!("vendor:{}:{what}", v.vendor),
                        SeriesKind::Vendor,
                        "vendor",
                        "",
                        1.0 - score,
                    );
                }
            }
        }
    }

    let mut reports = Vec::new();
    let mut pairs_by_series = BTreeMap::new();
    for (name, s) in series {
        let kind = s.kind.unwrap_or(SeriesKind::Champion);
        let pairs: Vec<(f64, bool)> = s.rows.iter().map(|r| (r.score, r.positive)).collect();
        let mut versions: Vec<(String, u64)> = s.versions.into_iter().collect();
        versions.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let thresholds = versions
            .first()
            .and_then(|(v, _)| cfg.thresholds.get(&(s.model.clone(), v.clone())));
        let mut at_thresholds: Vec<AtThreshold> = thresholds
            .into_iter()
            .flatten()
            .map(|(tname, &t)| {
                let c = metrics::confusion_at(&pairs, t);
                AtThreshold {
                    name: tname.clone(),
                    threshold: t,
                    flagged: c.tp + c.fp,
                    precision: c.precision(),
                    recall: c.recall(),
                    false_positive_rate: c.false_positive_rate(),
                }
            })
            .collect();
        at_thresholds.sort_by(|a, b| a.threshold.total_cmp(&b.threshold));
        let champion = kind == SeriesKind::Champion;
        let decisions = if champion {
            // [decision][positive] counts, in one pass.
            let mut counts = [[0u64; 2]; Decision::ALL.len()];
            for r in &s.rows {
                counts[r.decision as usize][r.positive as usize] += 1;
            }
            Decision::ALL
                .iter()
                .map(|d| DecisionRow {
                    decision: d.as_str().to_string(),
                    positives: counts[*d as usize][1],
                    negatives: counts[*d as usize][0],
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut slices = BTreeMap::new();
        for (d, dim) in DIMENSIONS.iter().enumerate() {
            let mut by_value: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
            for r in &s.rows {
                by_value
                    .entry(interner.names[r.dims[d] as usize].as_str())
                    .or_default()
                    .push(r);
            }
            if by_value.len() < 2 && by_value.keys().all(|v| v.is_empty()) {
                continue; // e.g. transaction kind for capture sessions
            }
            let rows = by_value
                .into_iter()
                .map(|(value, rows)| {
                    let p: Vec<(f64, bool)> = rows.iter().map(|r| (r.score, r.positive)).collect();
                    let (mut blocked, mut blocked_pos) = (0u64, 0u64);
                    for r in &rows {
                        if r.decision != Decision::Allow {
                            blocked += 1;
                            blocked_pos += r.positive as u64;
                        }
                    }
                    let pos = p.iter().filter(|(_, y)| *y).count() as u64;
                    SliceRow {
                        value: if value.is_empty() {
                            "(none)".to_string()
                        } else {
                            value.to_string()
                        },
                        metrics: Metrics::of(&p),
                        not_allowed_share: champion.then(|| blocked as f64 / rows.len() as f64),
                        not_allowed_precision: (champion && blocked > 0)
                            .then(|| blocked_pos as f64 / blocked as f64),
                        not_allowed_recall: (champion && pos > 0)
                            .then(|| blocked_pos as f64 / pos as f64),
                    }
                })
                .collect();
            slices.insert(dim.to_string(), rows);
        }
        reports.push(SeriesReport {
            overall: Metrics::of(&pairs),
            calibration: metrics::calibration(&pairs, cfg.calibration_bins)
                .into_iter()
                .map(Bin::from)
                .collect(),
            name: name.clone(),
            kind,
            model: s.model,
            versions: versions.into_iter().map(|(v, _)| v).collect(),
            at_thresholds,
            decisions,
            slices,
        });
        pairs_by_series.insert(name, pairs);
    }
    reports.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));

    // Vendors next to the models that scored their sessions: every series' vendor slice (a
    // vendor's own series has one row, its vendor).
    let mut vendors: BTreeMap<String, BTreeMap<String, Metrics>> = BTreeMap::new();
    for r in &reports {
        for row in r.slices.get("vendor").into_iter().flatten() {
            if row.value != "(none)" {
                vendors
                    .entry(row.value.clone())
                    .or_default()
                    .insert(r.name.clone(), row.metrics.clone());
            }
        }
    }

    Evaluation {
        report: Report {
            events: seen.len() as u64,
            duplicate_verdicts: duplicates,
            labels_read: labels.read,
            labels_ignored: labels.ignored,
            positives: cfg.positives.describe(),
            unlabelled: match cfg.unlabelled {
                Unlabelled::Negative => "negative",
                Unlabelled::Skip => "skip",
            }
            .to_string(),
            series: reports,
            vendors: vendors
                .into_iter()
                .map(|(vendor, series)| VendorRow { vendor, series })
                .collect(),
        },
        pairs: pairs_by_series,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use riskstream_events::{EventType, Label, LabelKind, ModelScore, SourcePosition};

    pub(crate) fn verdict(id: &str, model: &str, score: f64, decision: Decision) -> Verdict {
        let capture = model == "behavioral";
        Verdict {
            event_id: id.to_string(),
            event_type: if capture {
                EventType::CaptureSession
            } else {
                EventType::Transaction
            },
            account_id: format!("acct-{id}"),
            event_time: 1_000,
            scored_at: 1_001,
            decision,
            friction: riskstream_events::Friction::None,
            scores: vec![ModelScore {
                model: model.to_string().into(),
                version: "1.0.0".into(),
                score,
                shadow: false,
            }],
            reasons: vec![],
            features: vec![],
            model_inputs: vec![],
            degraded: false,
            degraded_reasons: vec![],
            source: SourcePosition {
                topic: "t".into(),
                partition: 0,
                offset: 0,
            },
            region: if id.ends_with('1') { "eu" } else { "us" }.into(),
            transaction_kind: if capture { "" } else { "WITHDRAWAL" }.into(),
            vendor: if capture { "acme" } else { "" }.into(),
            vendor_liveness_score: capture.then_some(1.0 - score / 2.0),
            vendor_face_match_score: capture.then_some(0.5),
        }
    }

    fn label(id: &str, kind: LabelKind) -> Label {
        Label {
            event_id: Some(id.to_string()),
            account_id: None,
            kind,
            source: "t".into(),
            label_time: 2_000,
        }
    }

    #[test]
    fn series_per_model_and_vendor_with_slices_and_decisions() {
        use Decision::*;
        let verdicts = vec![
            verdict("a1", "ato", 0.9, Block),
            verdict("a2", "ato", 0.8, Challenge),
            verdict("a3", "ato", 0.7, Allow),
            verdict("a4", "ato", 0.6, Allow),
            verdict("a1", "ato", 0.1, Allow), // a redelivery: the first verdict counts
            verdict("b1", "behavioral", 0.95, Block),
            verdict("b2", "behavioral", 0.2, Allow),
            verdict("b3", "behavioral", 0.3, Allow),
        ];
        let labels = LabelIndex::new(
            [
                label("a1", LabelKind::ConfirmedAto),
                label("a4", LabelKind::Chargeback),
                label("b1", LabelKind::Bot),
                label("a3", LabelKind::Legitimate),
            ],
            0,
        );
        let mut cfg = EvalConfig::default();
        cfg.thresholds.insert(
            ("ato".into(), "1.0.0".into()),
            [("review".to_string(), 0.75)].into_iter().collect(),
        );
        let e = evaluate(verdicts, &labels, &cfg);
        let r = &e.report;
        assert_eq!((r.events, r.duplicate_verdicts), (7, 1));
        let ato = r.series("ato").unwrap();
        assert_eq!((ato.overall.n, ato.overall.positives), (4, 2));
        // Positives 0.9 and 0.6; negatives 0.8 and 0.7: 0.9 beats both, 0.6 neither.
        assert_eq!(ato.overall.auc_roc, Some(0.5));
        assert_eq!(ato.metric("precision_at_review"), Some(0.5));
        assert_eq!(ato.metric("recall_at_review"), Some(0.5));
        let allow = ato
            .decisions
            .iter()
            .find(|d| d.decision == "ALLOW")
            .unwrap();
        assert_eq!((allow.positives, allow.negatives), (1, 1));
        let regions = &ato.slices["region"];
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[0].value, "eu");
        assert_eq!((regions[0].metrics.n, regions[0].metrics.positives), (1, 1));
        assert!(ato.slices.contains_key("transaction_kind"));
        assert!(
            !ato.slices.contains_key("vendor"),
            "transactions have no vendor"
        );
        // The vendor, turned into a risk score, next to our behavioral model.
        let live = r.series("vendor:acme:liveness").unwrap();
        assert_eq!(live.kind, SeriesKind::Vendor);
        assert_eq!(live.overall.auc_roc, Some(1.0));
        assert_eq!(
            r.series("vendor:acme:face_match").unwrap().overall.auc_roc,
            Some(0.5)
        );
        assert_eq!(r.vendors.len(), 1);
        assert_eq!(
            r.vendors[0].series.len(),
            3,
            "behavioral + two vendor scores"
        );
        assert_eq!(e.pairs["behavioral"].len(), 3);
    }

    #[test]
    fn unlabelled_events_can_be_left_out_and_only_some_events_evaluated() {
        use Decision::*;
        let verdicts = vec![
            verdict("a1", "ato", 0.9, Block),
            verdict("a2", "ato", 0.8, Allow),
            verdict("a3", "ato", 0.1, Allow),
        ];
        let labels = LabelIndex::new([label("a1", LabelKind::ConfirmedAto)], 0);
        let cfg = EvalConfig {
            unlabelled: Unlabelled::Skip,
            ..EvalConfig::default()
        };
        let e = evaluate(verdicts.clone(), &labels, &cfg);
        assert_eq!(e.report.series("ato").unwrap().overall.n, 1);
        let cfg = EvalConfig {
            only_events: Some(["a1".to_string(), "a3".to_string()].into_iter().collect()),
            ..EvalConfig::default()
        };
        let e = evaluate(verdicts, &labels, &cfg);
        assert_eq!(e.report.events, 2);
        assert_eq!(e.report.series("ato").unwrap().overall.auc_roc, Some(1.0));
    }
}
