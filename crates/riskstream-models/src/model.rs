//! Loading a model directory into tract plans and scoring batches.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use tract_onnx::prelude::*;

use crate::layered::{self, Layered};
use crate::manifest::{Golden, Manifest};
use crate::plans;

/// Batch sizes with a compiled plan. Larger batches are split; smaller ones padded up.
pub const PLAN_BATCH_SIZES: [usize; 6] = [1, 16, 32, 64, 128, 256];

/// Max allowed difference between tract's outputs and the golden outputs.
const GOLDEN_TOLERANCE: f32 = 1e-5;

/// Why a model was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: bad manifest: {source}")]
    Manifest {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("model {model}: input `{input}` is not a feature the pipeline computes")]
    UnknownInput { model: String, input: String },
    #[error("model {model}: tract could not load {path}: {why}")]
    Tract {
        model: String,
        path: PathBuf,
        why: String,
    },
    #[error(
        "{path}: model `{model}` cannot serve slot `{slot}` (the manifest name must be the slot)"
    )]
    WrongSlot {
        path: PathBuf,
        model: String,
        slot: String,
    },
    #[error("model {model}: golden check failed: {why}")]
    Golden { model: String, why: String },
    #[error("model {model}: explain layer `{layer}` refused: {why}")]
    ExplainLayer {
        model: String,
        layer: String,
        why: String,
    },
    #[error("model {model}: inference failed: {why}")]
    Inference { model: String, why: String },
}

/// The model slots the pipeline fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    /// Capture sessions: bot / presentation attack.
    Behavioral,
    /// Transactions: account takeover.
    Ato,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::Behavioral, Slot::Ato];
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Behavioral => "behavioral",
            Slot::Ato => "ato",
        }
    }
}

/// A loaded, validated model.
pub struct Model {
    pub manifest: Manifest,
    /// Column of each model input in the caller's full input row.
    columns: Vec<usize>,
    /// Input names, interned (for logging features in verdicts without allocation).
    input_names: Vec<&'static str>,
    name: &'static str,
    version: &'static str,
    /// (batch size, plan), ascending by batch size.
    plans: plans::Plans,
    /// Attribution units: (label, input positions in model order) — one per ungrouped input,
    /// one per group.
    units: Vec<(&'static str, Vec<usize>)>,
    /// Columns of the inputs a verdict logs for this model: every input without a `group`,
    /// in manifest order (`ModelInputs.values` in the verdict).
    logged_columns: Vec<usize>,
    /// The model cut at its manifest's `explain_layer`, for cheaper occlusion.
    layered: Option<Layered>,
}

impl Model {
    /// Loads `dir/manifest.json` and its ONNX file. `column_of` maps a feature name to its
    /// column in the rows the caller will pass to [`Model::score`]; an unknown name refuses the model.
    pub fn load(
        dir: &Path,
        column_of: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<Model, ModelError> {
        let manifest_path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&manifest_path).map_err(|source| ModelError::Io {
            path: manifest_path.clone(),
            source,
        })?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|source| ModelError::Manifest {
                path: manifest_path.clone(),
                source,
            })?;
        let columns = manifest
            .inputs
            .iter()
            .map(|i| {
                column_of(&i.name).ok_or_else(|| ModelError::UnknownInput {
                    model: manifest.name.clone(),
                    input: i.name.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let onnx_path = dir.join(&manifest.onnx);
        let n_inputs = manifest.inputs.len();
        let tract_err = |why: String| ModelError::Tract {
            model: manifest.name.clone(),
            path: onnx_path.clone(),
            why,
        };
        let proto = catch_unwind(AssertUnwindSafe(|| {
            tract_onnx::onnx().model_for_path(&onnx_path)
        }))
        .map_err(|panic| tract_err(format!("tract panicked: {}", panic_message(&panic))))?
        .map_err(|e| tract_err(format!("{e:#}")))?;
        let plans = catch_unwind(AssertUnwindSafe(|| {
            plans::compile(&proto, n_inputs, &PLAN_BATCH_SIZES)
        }))
        .map_err(|panic| tract_err(format!("tract panicked: {}", panic_message(&panic))))?
        .map_err(|e| tract_err(format!("{e:#}")))?;
        let input_names: Vec<&'static str> = manifest
            .inputs
            .iter()
            .map(|i| crate::intern(&i.name))
            .collect();
        let (name, version) = (
            crate::intern(&manifest.name),
            crate::intern(&manifest.version),
        );
        let mut units: Vec<(&'static str, Vec<usize>)> = Vec::new();
        for (i, spec) in manifest.inputs.iter().enumerate() {
            match &spec.group {
                Some(g) => match units.iter_mut().find(|(label, _)| *label == g.as_str()) {
                    Some((_, members)) => members.push(i),
                    None => units.push((crate::intern(g), vec![i])),
                },
                None => units.push((input_names[i], vec![i])),
            }
        }
        let logged_columns = manifest
            .inputs
            .iter()
            .zip(&columns)
            .filter(|(spec, _)| spec.group.is_none())
            .map(|(_, &c)| c)
            .collect();
        let mut model = Model {
            manifest,
            logged_columns,
            columns,
            input_names,
            name,
            version,
            plans,
            units,
            layered: None,
        };
        let golden = model.check_golden(dir)?;
        if let Some(layer) = model.manifest.explain_layer.clone() {
            let name = model.manifest.name.clone();
            let err = |why: String| ModelError::ExplainLayer {
                model: name.clone(),
                layer: layer.clone(),
                why,
            };
            let units: Vec<(bool, Vec<usize>)> = (0..model.units.len())
                .map(|u| (model.grouped(u), model.units[u].1.clone()))
                .collect();
            let means: Vec<f32> = model.manifest.inputs.iter().map(|i| i.mean).collect();
            let steps: Vec<f32> = model.manifest.inputs.iter().map(|i| i.std).collect();
            let cut = catch_unwind(AssertUnwindSafe(|| {
                Layered::build(
                    &proto,
                    &layer,
                    n_inputs,
                    &PLAN_BATCH_SIZES,
                    &units,
                    &means,
                    &steps,
                )
            }))
            .map_err(|panic| err(format!("tract panicked: {}", panic_message(&panic))))?
            .map_err(|e| err(format!("{e:#}")))?;
            model.layered = Some(cut);
            model.check_layered(&golden).map_err(err)?;
        }
        Ok(model)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn version(&self) -> &'static str {
        self.version
    }

    /// Input names in model order.
    pub fn input_names(&self) -> &[&'static str] {
        &self.input_names
    }

    /// Columns (in the caller's rows) of this model's inputs, in model order.
    pub fn columns(&self) -> &[usize] {
        &self.columns
    }

    /// Columns (in the caller's rows) of the inputs a verdict logs for this model: every input
    /// without a `group`, in manifest order (`ModelInputs.values` in the verdict).
    pub fn logged_columns(&self) -> &[usize] {
        &self.logged_columns
    }

    /// Names of the logged inputs, in the order of `ModelInputs.values`.
    pub fn logged_input_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.manifest
            .inputs
            .iter()
            .zip(&self.input_names)
            .filter(|(spec, _)| spec.group.is_none())
            .map(|(_, &name)| name)
    }

    /// Attribution units: (label, positions in model input order). Every input is in exactly
    /// one unit; grouped inputs (see [`crate::InputSpec::group`]) share one.
    pub fn attribution_units(&self) -> &[(&'static str, Vec<usize>)] {
        &self.units
    }

    /// The attribution units worth occluding for one row (in model order): every group, and
    /// the `max_inputs` ungrouped inputs furthest from their training mean in standard
    /// deviations (screening keeps reason codes cheap: one inference row per candidate).
    pub fn attribution_candidates(&self, row: &[f32], max_inputs: usize, out: &mut Vec<usize>) {
        out.clear();
        let mut scored: Vec<(f32, usize)> = Vec::with_capacity(self.units.len());
        for (u, (_, members)) in self.units.iter().enumerate() {
            if self.manifest.inputs[members[0]].group.is_some() {
                out.push(u);
            } else {
                let spec = &self.manifest.inputs[members[0]];
                let z = ((row[members[0]] - spec.mean) / spec.std.max(1e-6)).abs();
                scored.push((z, u));
            }
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        out.extend(scored.iter().take(max_inputs).map(|&(_, u)| u));
    }

    /// Appends `row` (model order) with attribution unit `unit` set to its training means.
    pub fn push_occluded(&self, row: &[f32], unit: usize, out: &mut Vec<f32>) {
        let start = out.len();
        out.extend_from_slice(row);
        for &p in &self.units[unit].1 {
            out[start + p] = self.manifest.inputs[p].mean;
        }
    }

    /// Copies the model's inputs out of one of the caller's full rows, in model order.
    pub fn gather(&self, row: &[f32], out: &mut Vec<f32>) {
        out.extend(self.columns.iter().map(|&c| row[c]));
    }

    /// Runs the golden inputs and compares with the golden outputs; returns the inputs (rows
    /// back to back).
    fn check_golden(&self, dir: &Path) -> Result<Vec<f32>, ModelError> {
        let path = dir.join(&self.manifest.golden);
        let err = |why: String| ModelError::Golden {
            model: self.manifest.name.clone(),
            why,
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let golden: Golden =
            serde_json::from_str(&text).map_err(|e| err(format!("{}: {e}", path.display())))?;
        if golden.inputs.is_empty() || golden.inputs.len() != golden.outputs.len() {
            return Err(err(
                "golden file needs as many outputs as inputs, at least one".into(),
            ));
        }
        let k = self.columns.len();
        let mut flat = Vec::with_capacity(golden.inputs.len() * k);
        for row in &golden.inputs {
            if row.len() != k {
                return Err(err(format!(
                    "golden row has {} values, the model takes {k}",
                    row.len()
                )));
            }
            flat.extend_from_slice(row);
        }
        let mut got = Vec::new();
        self.score_model_rows(&flat, golden.inputs.len(), &mut got)?;
        for (i, (g, want)) in got.iter().zip(&golden.outputs).enumerate() {
            if (g - want).abs() > GOLDEN_TOLERANCE || !g.is_finite() {
                return Err(err(format!("row {i}: tract gives {g}, golden says {want}")));
            }
        }
        Ok(flat)
    }

    /// On every golden row, each input occluded through the explain layer scores as the
    /// occluded row re-scored in full, within [`layered::TOLERANCE`]. A group (several inputs
    /// through several columns) that does not is occluded in full from then on
    /// ([`Model::occludes_through_layer`] says which); an input that does not refuses the layer.
    fn check_layered(&mut self, golden: &[f32]) -> Result<(), String> {
        let k = self.columns.len();
        let n = golden.len() / k;
        loop {
            let fast_units: Vec<usize> = (0..self.units.len())
                .filter(|&u| self.occludes_through_layer(u))
                .collect();
            if fast_units.is_empty() {
                return Err("no input moves exactly one column of the layer's input".into());
            }
            let candidates = vec![fast_units.clone(); n];
            let mut fast = Vec::new();
            self.occluded_scores(golden, n, &candidates, &mut fast)
                .map_err(|e| e.to_string())?;
            let mut full = Vec::new();
            self.rescore_occluded(golden, &candidates, |_| true, &mut full)
                .map_err(|e| e.to_string())?;
            let (worst, at) = fast
                .iter()
                .zip(&full)
                .map(|(a, b)| (a - b).abs())
                .enumerate()
                .fold((0f32, 0), |(w, at), (i, d)| {
                    if d > w || d.is_nan() {
                        (d, i)
                    } else {
                        (w, at)
                    }
                });
            if !(worst.is_nan() || worst > layered::TOLERANCE) {
                return Ok(());
            }
            let unit = fast_units[at % fast_units.len()];
            let why = format!(
                "golden row {}, input `{}`: {} through the layer, {} re-scored in full",
                at / fast_units.len(),
                self.units[unit].0,
                fast[at],
                full[at]
            );
            let grouped = self.grouped(unit);
            match self.layered.as_mut() {
                Some(l) if grouped => l.refuse(unit),
                _ => return Err(why),
            }
        }
    }

    /// Re-scores in full each row of `base` (model order) with each of its `candidates` that
    /// `which` selects occluded, in order.
    fn rescore_occluded(
        &self,
        base: &[f32],
        candidates: &[Vec<usize>],
        which: impl Fn(usize) -> bool,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let k = self.columns.len();
        let mut occluded = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            for &u in c.iter().filter(|&&u| which(u)) {
                self.push_occluded(&base[i * k..(i + 1) * k], u, &mut occluded);
            }
        }
        self.score_model_rows(&occluded, occluded.len() / k, out)
    }

    /// Whether attribution unit `unit` is an input group (the manifest's `group`).
    fn grouped(&self, unit: usize) -> bool {
        self.manifest.inputs[self.units[unit].1[0]].group.is_some()
    }

    /// Whether attribution unit `unit` is occluded through the manifest's `explain_layer`
    /// (otherwise its occluded rows are re-scored in full).
    pub fn occludes_through_layer(&self, unit: usize) -> bool {
        self.layered.as_ref().is_some_and(|l| l.fast(unit))
    }

    /// The scores of `n` rows of `base` (model order), each with its `candidates` (attribution
    /// units) occluded in turn, in order: what reason codes compare against each row's score.
    /// Inputs the explain layer handles skip the model's front; the rest are re-scored in full.
    pub fn occluded_scores(
        &self,
        base: &[f32],
        n: usize,
        candidates: &[Vec<usize>],
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let fast = |u: usize| self.occludes_through_layer(u);
        let mut slow = Vec::new();
        self.rescore_occluded(base, &candidates[..n], |u| !fast(u), &mut slow)?;
        let mut quick = Vec::new();
        if let Some(l) = &self.layered {
            l.occluded(base, n, self.columns.len(), &candidates[..n], &mut quick)
                .map_err(|e| ModelError::Inference {
                    model: self.manifest.name.clone(),
                    why: format!("{e:#}"),
                })?;
        }
        let (mut s, mut q) = (slow.into_iter(), quick.into_iter());
        for c in &candidates[..n] {
            for &u in c {
                let next = if fast(u) { q.next() } else { s.next() };
                out.push(next.ok_or_else(|| ModelError::Inference {
                    model: self.manifest.name.clone(),
                    why: "fewer occluded scores than candidates".into(),
                })?);
            }
        }
        Ok(())
    }

    /// Scores `n` rows of the caller's full input matrix (`rows.len() == n * row_len`),
    /// appending one score per row to `out`.
    pub fn score(
        &self,
        rows: &[f32],
        row_len: usize,
        n: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let k = self.columns.len();
        let mut gathered = Vec::with_capacity(n * k);
        for r in 0..n {
            self.gather(&rows[r * row_len..(r + 1) * row_len], &mut gathered);
        }
        self.score_model_rows(&gathered, n, out)
    }

    /// Scores `n` rows already in model input order (`rows.len() == n * inputs`), splitting
    /// and padding them onto the fixed-size plans; appends one score per row to `out`.
    pub fn score_model_rows(
        &self,
        rows: &[f32],
        n: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        plans::scores(&self.plans, rows, n, self.columns.len(), out).map_err(|e| {
            ModelError::Inference {
                model: self.manifest.name.clone(),
                why: format!("{e:#}"),
            }
        })
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The load's check against full occlusion on the golden rows refuses a cut whose
    /// arithmetic is off (here its weights, 1 % too large).
    #[test]
    fn the_golden_check_refuses_a_layer_that_does_not_reproduce_full_occlusion() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/ato");
        let mut model = Model::load(&dir, &|_| Some(0)).expect("the committed model loads");
        let golden = model.check_golden(&dir).unwrap();
        assert_eq!(model.check_layered(&golden), Ok(()));
        model.layered.as_mut().unwrap().scale_weights(1.01);
        let err = model.check_layered(&golden).unwrap_err();
        assert!(err.starts_with("golden row"), "{err}");
    }

    /// A group whose fast occlusion does not match a full re-score on the golden rows is
    /// occluded in full; the inputs keep the layer.
    #[test]
    fn a_group_that_does_not_reproduce_full_occlusion_is_occluded_in_full() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/behavioral");
        let mut model = Model::load(&dir, &|_| Some(0)).expect("the committed model loads");
        let golden = model.check_golden(&dir).unwrap();
        let n = model.units.len();
        let group = (0..n).find(|&u| model.units[u].1.len() > 1).unwrap();
        assert!((0..n).all(|u| model.occludes_through_layer(u)));
        model.layered.as_mut().unwrap().shift_means(group, 0.5);
        assert_eq!(model.check_layered(&golden), Ok(()));
        assert!(!model.occludes_through_layer(group));
        assert!((0..n)
            .filter(|&u| u != group)
            .all(|u| model.occludes_through_layer(u)));
    }
}
