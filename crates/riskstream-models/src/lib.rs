//! Models: manifests, tract loading, batched inference.
//!
//! In: a model directory (`manifest.json`, an ONNX file, golden vectors) and, per batch, a
//! row-major matrix of every input the pipeline computes. Out: one score per row.
//! Knows nothing of Kafka or Redis: the caller says which input names it can compute.
//!
//! Each model is compiled into one tract plan per batch size in [`PLAN_BATCH_SIZES`] (fixed
//! shapes run faster than a symbolic batch); a batch is split and padded onto those plans.
//! Loading runs under `catch_unwind` (some malformed graphs panic inside tract), and a model
//! whose outputs on its golden inputs differ from the golden outputs is refused.

mod intern;
mod layered;
mod manifest;
mod model;
mod plans;

pub use intern::intern;
pub use manifest::{InputSpec, Manifest, OutputSpec, Thresholds};
pub use model::{Model, ModelError, Slot, PLAN_BATCH_SIZES};
