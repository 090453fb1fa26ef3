//! `manifest.json`: what a model is, what it takes and what it returns.

use serde::{Deserialize, Serialize};

/// A model's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Model name, e.g. `ato`.
    pub name: String,
    /// Version string, reported in every verdict.
    pub version: String,
    /// ONNX file, relative to the manifest.
    pub onnx: String,
    /// Golden vectors file, relative to the manifest.
    pub golden: String,
    /// Ordered inputs: column `i` of the model's input tensor is the feature named `inputs[i].name`.
    pub inputs: Vec<InputSpec>,
    /// What the single output column means.
    pub output: OutputSpec,
    /// Suggested decision thresholds on the output.
    pub thresholds: Thresholds,
    /// The ONNX node of the model's first linear layer (`Gemm`) after an elementwise
    /// preparation of its ungrouped inputs: reason codes then occlude those inputs by moving
    /// the layer's output instead of re-running the front of the model (checked against full
    /// occlusion on the golden rows at load; see `layered.rs`). Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain_layer: Option<String>,
}

/// One model input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Feature name as computed by the pipeline (see the feature catalogue).
    pub name: String,
    /// Training mean; the ONNX graph normalises internally, this is for explanations.
    #[serde(default)]
    pub mean: f32,
    /// Training standard deviation (see `mean`).
    #[serde(default = "one")]
    pub std: f32,
    /// Inputs sharing a group are explained together (e.g. the `telemetry_sequence` block of a
    /// sequence model): reason codes name the group, not each of its values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

fn one() -> f32 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSpec {
    pub name: String,
    pub meaning: String,
}

/// Score thresholds suggested by training (the decision policy may override them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub challenge: f32,
    pub review: f32,
    pub block: f32,
}

/// Golden vectors: inputs in manifest order and the outputs the model must produce.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Golden {
    pub inputs: Vec<Vec<f32>>,
    pub outputs: Vec<f32>,
}
