//! The regression gate: a candidate run passes when none of the configured metrics of any
//! champion model is worse than the baseline's by more than its tolerance.
//!
//! Tolerances are `metric=tolerance` (every champion model) or `model.metric=tolerance` (one
//! model, overriding the former), from `--max-regression` or a TOML file:
//!
//! ```toml
//! [max_regression]
//! auc_pr = 0.01
//! "ato.recall_at_1pct_fpr" = 0.02
//! ```
//!
//! Metrics are those [`SeriesReport::metric`] names. A metric the baseline has and the candidate
//! lacks (e.g. no positives left) fails; a model missing from the candidate fails.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::report::{Report, SeriesKind, SeriesReport};

/// The tolerances when none are given.
pub const DEFAULT_GATE: &str = "auc_roc=0.01,auc_pr=0.02,recall_at_1pct_fpr=0.03";

/// Tolerances by metric, for all models (`None`) or one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Gate {
    rules: BTreeMap<(Option<String>, String), f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gate `{spec}`: {why}")]
pub struct GateError {
    pub spec: String,
    pub why: String,
}

impl Gate {
    /// Parses `metric=tol,model.metric=tol,…`.
    pub fn parse(spec: &str) -> Result<Gate, GateError> {
        let mut gate = Gate::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, tol) = item.split_once('=').ok_or_else(|| GateError {
                spec: item.to_string(),
                why: "expected METRIC=TOLERANCE or MODEL.METRIC=TOLERANCE".into(),
            })?;
            let tol: f64 = tol.trim().parse().map_err(|_| GateError {
                spec: item.to_string(),
                why: "the tolerance must be a number".into(),
            })?;
            gate.add(key.trim(), tol)?;
        }
        Ok(gate)
    }

    /// Reads the `[max_regression]` table of a TOML gate file.
    pub fn from_toml(text: &str) -> Result<Gate, GateError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            max_regression: BTreeMap<String, f64>,
        }
        let file: File = toml::from_str(text).map_err(|e| GateError {
            spec: "gate file".into(),
            why: e.to_string(),
        })?;
        let mut gate = Gate::default();
        for (k, v) in file.max_regression {
            gate.add(&k, v)?;
        }
        Ok(gate)
    }

    fn add(&mut self, key: &str, tol: f64) -> Result<(), GateError> {
        let (model, metric) = match key.rsplit_once('.') {
            Some((m, metric)) => (Some(m.to_string()), metric),
            None => (None, key),
        };
        let known = matches!(metric, "auc_roc" | "auc_pr" | "recall_at_1pct_fpr")
            || metric.starts_with("precision_at_")
            || metric.starts_with("recall_at_");
        if !known || tol.is_nan() || tol < 0.0 {
            return Err(GateError {
                spec: key.to_string(),
                why: "metrics are auc_roc, auc_pr, recall_at_1pct_fpr, precision_at_<threshold>, \
                      recall_at_<threshold>; tolerances are ≥ 0"
                    .into(),
            });
        }
        self.rules.insert((model, metric.to_string()), tol);
        Ok(())
    }

    /// The (metric, tolerance) pairs that apply to `model`.
    fn for_model(&self, model: &str) -> BTreeMap<&str, f64> {
        let mut out: BTreeMap<&str, f64> = BTreeMap::new();
        for ((m, metric), tol) in &self.rules {
            if m.is_none() {
                out.insert(metric, *tol);
            }
        }
        for ((m, metric), tol) in &self.rules {
            if m.as_deref() == Some(model) {
                out.insert(metric, *tol);
            }
        }
        out
    }
}

/// One gated comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub model: String,
    pub metric: String,
    pub baseline: Option<f64>,
    pub candidate: Option<f64>,
    pub tolerance: f64,
    pub passed: bool,
}

/// The gate's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateResult {
    pub passed: bool,
    pub checks: Vec<Check>,
}

impl GateResult {
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }
}

/// Checks `candidate` against `baseline`, model by model (the baseline's champions).
pub fn check(gate: &Gate, candidate: &Report, baseline: &Report) -> GateResult {
    let mut checks = Vec::new();
    let champions = |r: &Report| -> Vec<SeriesReport> {
        r.series
            .iter()
            .filter(|s| s.kind == SeriesKind::Champion)
            .cloned()
            .collect()
    };
    for base in champions(baseline) {
        let cand = candidate.series(&base.name);
        for (metric, tol) in gate.for_model(&base.name) {
            let b = base.metric(metric);
            let c = cand.and_then(|c| c.metric(metric));
            let passed = match (b, c) {
                (None, _) => true, // nothing to regress from
                (Some(_), None) => false,
                (Some(b), Some(c)) => b - c <= tol + 1e-12,
            };
            checks.push(Check {
                model: base.name.clone(),
                metric: metric.to_string(),
                baseline: b,
                candidate: c,
                tolerance: tol,
                passed,
            });
        }
    }
    GateResult {
        passed: checks.iter().all(|c| c.passed),
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{evaluate, tests::verdict, EvalConfig};
    use crate::truth::LabelIndex;
    use riskstream_events::{Decision, Label, LabelKind};

    fn run(scores: &[f64]) -> Report {
        let verdicts = scores
            .iter()
            .enumerate()
            .map(|(i, s)| verdict(&format!("e{i}"), "ato", *s, Decision::Allow));
        let labels = LabelIndex::new(
            (0..scores.len()).step_by(2).map(|i| Label {
                event_id: Some(format!("e{i}")),
                account_id: None,
                kind: LabelKind::ConfirmedAto,
                source: "t".into(),
                label_time: 0,
            }),
            0,
        );
        evaluate(verdicts, &labels, &EvalConfig::default()).report
    }

    #[test]
    fn a_worse_candidate_fails_and_names_the_metric() {
        // Even events are positive. The baseline ranks them all on top; the candidate does not.
        let baseline = run(&[0.9, 0.1, 0.8, 0.2, 0.7, 0.3]);
        let candidate = run(&[0.9, 0.1, 0.2, 0.8, 0.7, 0.3]);
        let gate = Gate::parse("auc_roc=0.05,ato.auc_pr=0.5").unwrap();
        let r = check(&gate, &candidate, &baseline);
        assert!(!r.passed);
        let failed: Vec<(&str, &str)> = r
            .failures()
            .map(|c| (c.model.as_str(), c.metric.as_str()))
            .collect();
        assert_eq!(failed, vec![("ato", "auc_roc")], "auc_pr is within its 0.5");
        // Against itself every check passes; so does a better candidate.
        assert!(check(&gate, &baseline, &baseline).passed);
        assert!(check(&gate, &baseline, &candidate).passed);
        // A model the candidate no longer scores fails.
        let other = run(&[]);
        assert!(!check(&gate, &other, &baseline).passed);
    }

    #[test]
    fn gates_parse_from_flags_and_toml() {
        let g = Gate::parse(DEFAULT_GATE).unwrap();
        assert_eq!(g.for_model("ato").len(), 3);
        let g = Gate::from_toml(
            "[max_regression]\nauc_pr = 0.01\n\"ato.auc_pr\" = 0.2\n\"ato.recall_at_review\" = 0.05\n",
        )
        .unwrap();
        assert_eq!(g.for_model("ato")["auc_pr"], 0.2);
        assert_eq!(g.for_model("behavioral")["auc_pr"], 0.01);
        assert_eq!(g.for_model("ato").len(), 2);
        assert!(Gate::parse("auc=0.1").is_err());
        assert!(Gate::parse("auc_pr=-1").is_err());
        assert!(Gate::parse("auc_pr").is_err());
        assert!(Gate::from_toml("[other]\nx = 1\n").is_err());
    }
}
