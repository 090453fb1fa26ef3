//! Fixed-shape tract plans: one compiled plan per batch size, and running any number of rows
//! through them (split onto the plans, the last chunk padded).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{bail, TractErrorContext as _};

/// Compiled plans of one graph, (batch size, plan) ascending by batch size.
pub(crate) type Plans = Vec<(usize, Arc<TypedRunnableModel>)>;

/// One plan per batch size with input 0 of shape `[b, width]`.
pub(crate) fn compile(m: &InferenceModel, width: usize, sizes: &[usize]) -> TractResult<Plans> {
    sizes
        .iter()
        .map(|&b| {
            let plan = m
                .clone()
                .with_input_fact(0, f32::fact([b, width]).into())?
                .into_optimized()?
                .into_runnable()?;
            Ok((b, plan))
        })
        .collect()
}

/// The plan for the next chunk of `left` rows: the smallest plan that holds them all if it
/// wastes at most half its rows (or is one of the small plans, ≤ 16), otherwise the largest
/// plan that is full — 120 rows go as 64 + 64, not as one padded 256.
pub(crate) fn plan_for(plans: &Plans, left: usize) -> &(usize, Arc<TypedRunnableModel>) {
    let fits = plans.iter().find(|(b, _)| *b >= left);
    match fits {
        Some(p) if p.0 <= (2 * left).max(16) => p,
        _ => plans
            .iter()
            .rev()
            .find(|(b, _)| *b <= left)
            .or(fits)
            .expect("plans"),
    }
}

/// Runs `n` rows of `width` values through `plans` (split and padded onto them); for each
/// chunk, `each(outputs, rows in the chunk, padded size)`.
pub(crate) fn run_rows(
    plans: &Plans,
    rows: &[f32],
    n: usize,
    width: usize,
    mut each: impl FnMut(&TVec<TValue>, usize, usize) -> TractResult<()>,
) -> TractResult<()> {
    let mut done = 0;
    while done < n {
        let left = n - done;
        let (size, plan) = plan_for(plans, left);
        let take = left.min(*size);
        let mut padded = vec![0f32; size * width];
        padded[..take * width].copy_from_slice(&rows[done * width..(done + take) * width]);
        let input = Tensor::from_shape(&[*size, width], &padded)?;
        // plan.run spawns a fresh state: no recurrent state leaks between batches.
        let result = plan.run(tvec!(input.into()))?;
        each(&result, take, *size)?;
        done += take;
    }
    Ok(())
}

/// The values of output `ix` as a slice.
pub(crate) fn values(out: &TVec<TValue>, ix: usize) -> TractResult<&[f32]> {
    out.get(ix)
        .context("missing output")?
        .try_as_plain_ram()?
        .as_slice::<f32>()
}

/// Appends the first `take` rows of `per_row`-wide `v` to `out`.
pub(crate) fn take_rows(v: &[f32], take: usize, per_row: usize, out: &mut Vec<f32>) {
    out.extend_from_slice(&v[..take * per_row]);
}

/// Scores `n` rows through `plans`: one score per row (the last value of each output row).
pub(crate) fn scores(
    plans: &Plans,
    rows: &[f32],
    n: usize,
    width: usize,
    out: &mut Vec<f32>,
) -> TractResult<()> {
    run_rows(plans, rows, n, width, |result, take, size| {
        let v = values(result, 0)?;
        if v.len() < take {
            bail!("{} outputs for a batch of {size}", v.len());
        }
        // One output per row: [batch, 1] or [batch].
        let per_row = v.len() / size;
        out.extend((0..take).map(|i| v[i * per_row + per_row - 1]));
        Ok(())
    })
}
