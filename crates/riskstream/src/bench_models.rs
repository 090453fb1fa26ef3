//! `riskstream bench-models`: what inference costs per event, for each committed champion at
//! batch sizes 1, 64 and 256 (tract, fixed-size plans), and what reason codes cost per flagged
//! event (one occluded row per attribution candidate). Rows are real: simulated events through the
//! serving feature code. No broker or Redis needed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use riskstream_events::Event;
use riskstream_features::inputs::{self, N_INPUTS};
use riskstream_features::{FeatureStore, MemoryStore, StoreLimits};
use riskstream_models::{Model, Slot};
use riskstream_pipeline::scorer::attribution_candidates_for;
use riskstream_pipeline::ServingHandle;
use riskstream_sim::{SimConfig, Simulator};

#[derive(Args, Debug)]
pub struct BenchModelsArgs {
    /// Model directory.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Seconds of inference per measurement.
    #[arg(long, default_value_t = 0.5)]
    pub seconds: f64,
    /// Measurements per point; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
}

const ROWS_PER_SLOT: usize = 2048;

pub async fn bench_models(args: BenchModelsArgs) -> anyhow::Result<()> {
    let serving = ServingHandle::load(&args.models, inputs::input_index)
        .with_context(|| format!("loading models from {}", args.models.display()))?;
    let rows = simulated_rows().await?;
    println!(
        "riskstream bench-models: {} threads available; median of {} x {:.1} s per point\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.repeats,
        args.seconds
    );
    println!("| model | inputs | batch 1 µs/event | batch 64 µs/event | batch 256 µs/event | reason codes µs per flagged event (rows) |");
    println!("|---|---|---|---|---|---|");
    let current = serving.current();
    for (slot, rows) in Slot::ALL.iter().zip(&rows) {
        let model = current.champion(*slot);
        let mut cells = Vec::new();
        for batch in [1usize, 64, 256] {
            let per_event = median(
                (0..args.repeats)
                    .map(|_| time_per_event(model, rows, batch, args.seconds))
                    .collect::<anyhow::Result<Vec<_>>>()?,
            );
            cells.push(format!("{per_event:.2}"));
        }
        let runs = (0..args.repeats)
            .map(|_| time_attribution(model, rows, args.seconds))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let rows_per_event = runs[0].1;
        let attribution = median(runs.into_iter().map(|r| r.0).collect());
        println!(
            "| {} {} | {} | {} | {:.1} ({}) |",
            model.name(),
            model.version(),
            model.input_names().len(),
            cells.join(" | "),
            attribution,
            rows_per_event
        );
    }
    Ok(())
}

/// Full input rows of simulated capture sessions and transactions, [behavioral, ato].
async fn simulated_rows() -> anyhow::Result<[Vec<f32>; 2]> {
    let store = MemoryStore::new(StoreLimits::default());
    let mut sim = Simulator::new(SimConfig::for_events(200_000, 7));
    let (mut capture, mut tx) = (Vec::new(), Vec::new());
    let mut row = vec![0f32; N_INPUTS];
    while capture.len() < ROWS_PER_SLOT * N_INPUTS || tx.len() < ROWS_PER_SLOT * N_INPUTS {
        let batch: Vec<Event> = (0..256).map(|_| sim.next_event().event).collect();
        let facts: Vec<_> = batch.iter().map(inputs::facts).collect();
        let features = store.enrich_batch(&facts).await?;
        for (e, f) in batch.iter().zip(&features) {
            inputs::fill_row(e, f, &mut row);
            let out = match e {
                Event::CaptureSession(_) => &mut capture,
                Event::Transaction(_) => &mut tx,
            };
            if out.len() < ROWS_PER_SLOT * N_INPUTS {
                out.extend_from_slice(&row);
            }
        }
    }
    Ok([capture, tx])
}

/// µs per event scoring consecutive batches of `batch` rows for about `seconds`.
fn time_per_event(model: &Model, rows: &[f32], batch: usize, seconds: f64) -> anyhow::Result<f64> {
    let n = rows.len() / N_INPUTS;
    let budget = Duration::from_secs_f64(seconds);
    let mut out = Vec::with_capacity(batch);
    let (mut events, mut at) = (0usize, 0usize);
    let started = Instant::now();
    while started.elapsed() < budget {
        if at + batch > n {
            at = 0;
        }
        out.clear();
        model.score(
            &rows[at * N_INPUTS..(at + batch) * N_INPUTS],
            N_INPUTS,
            batch,
            &mut out,
        )?;
        at += batch;
        events += batch;
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / events as f64)
}

/// µs per flagged event for its reason codes, as the scorer computes them: one occluded score
/// per attribution candidate (through the explain layer where the model has one), 16 events
/// per call.
fn time_attribution(model: &Model, rows: &[f32], seconds: f64) -> anyhow::Result<(f64, usize)> {
    let k = model.input_names().len();
    let events_per_call = 16;
    let mut base = Vec::with_capacity(events_per_call * k);
    let mut candidates = Vec::new();
    for i in 0..events_per_call {
        let at = base.len();
        model.gather(&rows[i * N_INPUTS..(i + 1) * N_INPUTS], &mut base);
        let mut c = Vec::new();
        model.attribution_candidates(&base[at..], attribution_candidates_for(model), &mut c);
        candidates.push(c);
    }
    let n_rows: usize = candidates.iter().map(Vec::len).sum();
    let budget = Duration::from_secs_f64(seconds);
    let mut out = Vec::new();
    let mut events = 0usize;
    let started = Instant::now();
    while started.elapsed() < budget {
        out.clear();
        model.occluded_scores(&base, events_per_call, &candidates, &mut out)?;
        events += events_per_call;
    }
    Ok((
        started.elapsed().as_secs_f64() * 1e6 / events as f64,
        n_rows / events_per_call,
    ))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
