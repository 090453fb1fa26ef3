//! Evaluation of verdicts against labels, for `riskstream eval`, the model cards and the
//! benchmarks.
//!
//! In: verdicts (the scores each model gave, the decision, the event's region / kind / vendor and
//! the vendor's own scores) and labels (by event or by account). Out: a [`report::Report`] per
//! run — per model and vendor the ranking metrics, precision and recall at the model's
//! thresholds, decision × truth, calibration and slices — the [`gate`] comparing a candidate
//! run with a baseline, and the HTML / Markdown [`render`]ing with SVG plots.
//!
//! - [`metrics`]: the metrics on `(score, positive)` pairs;
//! - [`truth`]: which labels make an event a positive for a model;
//! - [`report`]: evaluating a run;
//! - [`gate`]: the regression gate;
//! - [`render`]: the report files.

pub mod gate;
pub mod metrics;
pub mod render;
pub mod report;
pub mod truth;

pub use metrics::{
    auc_pr, auc_roc, calibration, confusion_at, pr_curve, recall_at_fpr, roc_curve, CalibrationBin,
    Confusion,
};
