//! Loading a model directory into tract plans and scoring batches.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::manifest::{Golden, Manifest};

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
    plans: Vec<(usize, Arc<TypedRunnableModel>)>,
    /// Attribution units: (label, input positions in model order) — one per ungrouped input,
    /// one per group.
    units: Vec<(&'static str, Vec<usize>)>,
    /// Columns of the inputs a verdict logs for this model: every input without a `group`,
    /// in manifest order (`ModelInputs.values` in the verdict).
    logged_columns: Vec<usize>,
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
        let plans = catch_unwind(AssertUnwindSafe(
            || -> TractResult<Vec<(usize, Arc<TypedRunnableModel>)>> {
                let proto = tract_onnx::onnx().model_for_path(&onnx_path)?;
                PLAN_BATCH_SIZES
                    .iter()
                    .map(|&b| {
                        let plan = proto
                            .clone()
                            .with_input_fact(0, f32::fact([b, n_inputs]).into())?
                            .into_optimized()?
                            .into_runnable()?;
                        Ok((b, plan))
                    })
                    .collect()
            },
        ))
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
        let model = Model {
            manifest,
            logged_columns,
            columns,
            input_names,
            name,
            version,
            plans,
            units,
        };
        model.check_golden(dir)?;
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

    /// Runs the golden inputs and compares with the golden outputs.
    fn check_golden(&self, dir: &Path) -> Result<(), ModelError> {
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

    /// The plan for the next chunk of `left` rows: the smallest plan that holds them all if
    /// it wastes at most half its rows (or is one of the small plans, ≤ 16), otherwise the
    /// largest plan that is full — 120 rows go as 64 + 64, not as one padded 256.
    fn plan_for(&self, left: usize) -> &(usize, Arc<TypedRunnableModel>) {
        let fits = self.plans.iter().find(|(b, _)| *b >= left);
        match fits {
            Some(p) if p.0 <= (2 * left).max(16) => p,
            _ => self
                .plans
                .iter()
                .rev()
                .find(|(b, _)| *b <= left)
                .or(fits)
                .expect("plans"),
        }
    }

    /// Scores `n` rows already in model input order (`rows.len() == n * inputs`), splitting
    /// and padding them onto the fixed-size plans; appends one score per row to `out`.
    pub fn score_model_rows(
        &self,
        rows: &[f32],
        n: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let k = self.columns.len();
        let infer_err = |why: String| ModelError::Inference {
            model: self.manifest.name.clone(),
            why,
        };
        let mut done = 0;
        while done < n {
            let left = n - done;
            let (size, plan) = self.plan_for(left);
            let take = left.min(*size);
            let mut padded = vec![0f32; size * k];
            padded[..take * k].copy_from_slice(&rows[done * k..(done + take) * k]);
            let input =
                Tensor::from_shape(&[*size, k], &padded).map_err(|e| infer_err(e.to_string()))?;
            // plan.run spawns a fresh state: no recurrent state leaks between batches.
            let result = plan
                .run(tvec!(input.into()))
                .map_err(|e| infer_err(format!("{e:#}")))?;
            let view = result[0]
                .try_as_plain_ram()
                .map_err(|e| infer_err(e.to_string()))?;
            let scores = view
                .as_slice::<f32>()
                .map_err(|e| infer_err(e.to_string()))?;
            if scores.len() < take {
                return Err(infer_err(format!(
                    "{} outputs for a batch of {size}",
                    scores.len()
                )));
            }
            // One output per row: [batch, 1] or [batch].
            let per_row = scores.len() / size;
            out.extend((0..take).map(|i| scores[i * per_row + per_row - 1]));
            done += take;
        }
        Ok(())
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
