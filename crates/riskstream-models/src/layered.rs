//! Occlusion through the first linear layer: cheaper reason codes for the same numbers.
//!
//! A reason code occludes one input (sets it to its training mean) and re-scores the row. When
//! the model's first linear layer `z = W u + b` takes the inputs through an elementwise
//! preparation (`u_c` depends on one input only: log-compression, normalisation), occluding
//! that input changes one column of `u`, so the layer's output moves by `W[:, c] · (u_c(mean) −
//! u_c)` — a vector addition, no inference. Only the rest of the network (`z` → score) runs
//! per occluded row. For the ATO MLP (97 → 128 → 64 → 1) that skips the widest layer; for the
//! behavioral model, whose static inputs join the sequence encoder's output at its head, it
//! skips the encoder too.
//!
//! A group of inputs (the telemetry sequence) whose columns of `u` depend on the group alone —
//! the behavioral model's sequence encoder output — is occluded the same way: set to the
//! training means, the group puts the same values in its columns for every row (read once at
//! load), so the layer's output moves by `Σ_c W[:, c] · (u_c(mean) − u_c)` over its columns.
//!
//! A manifest opts in by naming the layer (`explain_layer`, an ONNX node: a `Gemm` or
//! `MatMul`+bias whose first input is `u`). At load the model is cut there into a *front*
//! (features → `u`, `z`) and a *back* (`z` → score); `W` is read by probing the layer with unit
//! vectors, and which column of `u` each input moves by perturbing it. Nothing is trusted: on
//! every golden row, every input's fast occlusion must match a full re-score of the occluded
//! row within [`TOLERANCE`], or the model keeps full occlusion (and says so in its log).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::{bail, TractErrorContext as _};

use crate::plans::{compile, run_rows, scores, take_rows, values, Plans};

/// Most difference between a fast occluded score and the full re-score, on any golden row.
pub(crate) const TOLERANCE: f32 = 1e-4;

/// A model cut at its first linear layer.
pub(crate) struct Layered {
    /// features → [u, z]
    front: Plans,
    /// z → score
    back: Plans,
    width: usize,
    hidden: usize,
    /// Column `c` of `W` (how `z` moves per unit of `u_c`) at `w[c * hidden..(c + 1) * hidden]`.
    w: Vec<f32>,
    /// Per attribution unit: the columns of `u` it moves and their values at the training means
    /// (`None`: occluded in full — an input that moves more than one column, a unit sharing a
    /// column with another, or a group the load check found not to match a full re-score).
    cols: Vec<Option<Vec<(usize, f32)>>>,
}

/// Makes `node` the graph's only input (its op becomes a source, its inputs are cut).
fn cut_above(mut m: InferenceModel, node: usize) -> TractResult<InferenceModel> {
    for i in m.nodes[node].inputs.clone() {
        m.nodes[i.node].outputs[i.slot]
            .successors
            .retain(|s| s.node != node);
    }
    m.nodes[node].inputs.clear();
    m.nodes[node].op = Box::new(tract_onnx::tract_hir::ops::source::Source::new());
    m.with_input_outlets(&[OutletId::new(node, 0)])
}

impl Layered {
    /// Cuts `proto` (input `[b, k]`) at `layer`; `units` are the attribution units (input
    /// positions, `true` for a group), `means` the inputs' training means and
    /// `steps` a perturbation per input (its std). `Ok(None)` with the reason when the cut does
    /// not reproduce full occlusion.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build(
        proto: &InferenceModel,
        layer: &str,
        k: usize,
        sizes: &[usize],
        units: &[(bool, Vec<usize>)],
        means: &[f32],
        steps: &[f32],
    ) -> TractResult<Layered> {
        let node = proto.node_by_name(layer)?;
        let (layer_id, u_outlet) = (node.id, *node.inputs.first().context("layer has no input")?);
        if u_outlet.slot != 0 {
            bail!(
                "the layer's input is output {} of its node (expected 0)",
                u_outlet.slot
            );
        }
        let front_m = proto
            .clone()
            .with_output_outlets(&[u_outlet, OutletId::new(layer_id, 0)])?;
        let one = compile(&front_m, k, &[1])?;
        // Widths of u and z, from one row.
        let (width, hidden) = {
            let out = one[0]
                .1
                .run(tvec!(Tensor::from_shape(&[1, k], means)?.into()))?;
            (values(&out, 0)?.len(), values(&out, 1)?.len())
        };
        // W by probing the layer alone (u → z) with unit vectors.
        let layer_m = cut_above(proto.clone(), u_outlet.node)?
            .with_output_outlets(&[OutletId::new(layer_id, 0)])?;
        let layer_plans = compile(&layer_m, width, &[width + 1])?;
        let mut probe = vec![0f32; (width + 1) * width];
        for c in 0..width {
            probe[(c + 1) * width + c] = 1.0;
        }
        let out = layer_plans[0].1.run(tvec!(
            Tensor::from_shape(&[width + 1, width], &probe)?.into()
        ))?;
        let z = values(&out, 0)?;
        let w: Vec<f32> = (0..width)
            .flat_map(|c| (0..hidden).map(move |h| (c, h)))
            .map(|(c, h)| z[(c + 1) * hidden + h] - z[h])
            .collect();
        let front = compile(&front_m, k, sizes)?;
        let back_m = cut_above(proto.clone(), layer_id)?;
        let back = compile(&back_m, hidden, sizes)?;
        // Which columns of u each unit moves: the means row, then each unit moved twice (by its
        // step, then by minus half of it: a column a group moves one way only still shows).
        let mut rows = means.to_vec();
        for (_, members) in units {
            for by in [1.0f32, -0.5] {
                let mut row = means.to_vec();
                for &m in members {
                    row[m] += by * steps[m].max(1.0);
                }
                rows.extend_from_slice(&row);
            }
        }
        let mut u = Vec::new();
        run_rows(&front, &rows, 2 * units.len() + 1, k, |r, take, _| {
            take_rows(values(r, 0)?, take, width, &mut u);
            Ok(())
        })?;
        let at_mean = &u[..width];
        let mut moved: Vec<Vec<usize>> = (0..units.len())
            .map(|i| {
                let a = &u[(2 * i + 1) * width..(2 * i + 2) * width];
                let b = &u[(2 * i + 2) * width..(2 * i + 3) * width];
                (0..width)
                    .filter(|&c| {
                        (a[c] - at_mean[c]).abs() > 1e-6 || (b[c] - at_mean[c]).abs() > 1e-6
                    })
                    .collect()
            })
            .collect();
        // A column moved by two units belongs to neither; one moved by none (a column the
        // probes left still, e.g. a unit at zero in both) goes to the only group if there is
        // one (the load check tells whether it was right).
        let mut owners = vec![0u32; width];
        for c in moved.iter().flatten() {
            owners[*c] += 1;
        }
        let groups: Vec<usize> = (0..units.len()).filter(|&i| units[i].0).collect();
        if let [g] = groups[..] {
            for (c, o) in owners.iter_mut().enumerate().filter(|(_, o)| **o == 0) {
                *o = 1;
                moved[g].push(c);
            }
            moved[g].sort_unstable();
        }
        let cols = units
            .iter()
            .zip(&moved)
            .map(|((grouped, _), cs)| {
                let ok = !cs.is_empty()
                    && (*grouped || cs.len() == 1)
                    && cs.iter().all(|&c| owners[c] == 1);
                ok.then(|| cs.iter().map(|&c| (c, at_mean[c])).collect())
            })
            .collect();
        Ok(Layered {
            front,
            back,
            width,
            hidden,
            w,
            cols,
        })
    }

    #[cfg(test)]
    pub(crate) fn scale_weights(&mut self, by: f32) {
        self.w.iter_mut().for_each(|w| *w *= by);
    }

    /// Moves the values unit `unit` puts in its columns at the training means by `by`.
    #[cfg(test)]
    pub(crate) fn shift_means(&mut self, unit: usize, by: f32) {
        for (_, m) in self.cols[unit].iter_mut().flatten() {
            *m += by;
        }
    }

    /// Whether unit `u` is occluded through the layer.
    pub(crate) fn fast(&self, unit: usize) -> bool {
        self.cols.get(unit).is_some_and(|c| c.is_some())
    }

    /// Occludes unit `u` in full from now on (its columns did not reproduce a full re-score).
    pub(crate) fn refuse(&mut self, unit: usize) {
        if let Some(c) = self.cols.get_mut(unit) {
            *c = None;
        }
    }

    /// Scores of `n` `base` rows (model order) each with those of its `candidates` this cut
    /// handles ([`Layered::fast`]) occluded, in order (the others are skipped).
    pub(crate) fn occluded(
        &self,
        base: &[f32],
        n: usize,
        k: usize,
        candidates: &[Vec<usize>],
        out: &mut Vec<f32>,
    ) -> TractResult<()> {
        if !candidates.iter().flatten().any(|&unit| self.fast(unit)) {
            return Ok(());
        }
        let (mut u, mut z) = (Vec::with_capacity(n * self.width), Vec::new());
        run_rows(&self.front, base, n, k, |r, take, _| {
            take_rows(values(r, 0)?, take, self.width, &mut u);
            take_rows(values(r, 1)?, take, self.hidden, &mut z);
            Ok(())
        })?;
        let h = self.hidden;
        let mut rows = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            for &unit in c {
                let Some(Some(cols)) = self.cols.get(unit) else {
                    continue;
                };
                let start = rows.len();
                rows.extend_from_slice(&z[i * h..(i + 1) * h]);
                for &(col, at_mean) in cols {
                    let delta = at_mean - u[i * self.width + col];
                    if delta == 0.0 {
                        continue;
                    }
                    let wc = &self.w[col * h..(col + 1) * h];
                    for (v, w) in rows[start..].iter_mut().zip(wc) {
                        *v += w * delta;
                    }
                }
            }
        }
        scores(&self.back, &rows, rows.len() / h, h, out)
    }
}
