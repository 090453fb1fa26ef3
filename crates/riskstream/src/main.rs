//! The `riskstream` command line. Parses arguments, loads configuration, and calls into the
//! library crates; business logic lives there.

mod bench;
mod bench_models;
mod config;
mod demo;
mod embedded;
mod eval;
mod kafka_util;
mod replay;
mod run;
mod simulate;

use clap::{Parser, Subcommand};

/// mimalloc (its v2 line, without transparent huge pages) instead of glibc's malloc: the worker
/// folds, builds and drops many small buffers per event across threads, where glibc's malloc
/// cost the store path ~40 % more CPU per event (`scripts/bench-store`; README, Benchmark).
/// mimalloc v3 held ~10 % more memory than v2 for no less CPU; with huge pages the worker's RSS
/// doubled and clearing them took a quarter of its CPU. Freed memory goes back to the OS after
/// [`PURGE_DELAY_MS`] (see [`tune_allocator`]).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long mimalloc keeps freed pages before returning them to the OS, ms (its default: 10).
/// A batch's buffers are freed and allocated again every few ms under load: returned after 10 ms
/// they were faulted in and zeroed again (page faults were ~5 % of the worker's CPU samples). At
/// 1000 ms the scoring worker takes half the page faults (48–53 k against 99–115 k over a
/// 100 000-event benchmark run), its RSS the same within noise; its CPU per event was lower in six
/// of nine pairs, within the benchmark box's noise (BENCHMARKS.md, session 22; at 1 ms, session
/// 17, throughput halved). Memory still goes back to the OS after a second of quiet.
const PURGE_DELAY_MS: std::os::raw::c_long = 1000;

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`] unless `MIMALLOC_PURGE_DELAY` sets it.
/// Runs first in `main`, before any other thread exists (mimalloc's option setter is not
/// thread-safe).
fn tune_allocator() {
    /// `mi_option_purge_delay` in mimalloc v2's `mi_option_t` (`mimalloc.h`).
    const MI_OPTION_PURGE_DELAY: std::os::raw::c_int = 15;
    extern "C" {
        // Linked from the mimalloc library that `libmimalloc-sys` builds for the allocator.
        fn mi_option_set(option: std::os::raw::c_int, value: std::os::raw::c_long);
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain C call with an option index and a value, made before other threads.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

/// Streaming fraud scoring on Kafka: capture sessions and transactions in, verdicts out.
#[derive(Parser)]
#[command(name = "riskstream", version, about)]
struct Cli {
    /// Log format on stderr: `text` (coloured only on a terminal) or `json` (one object per
    /// line, for log shippers). Levels: RISKSTREAM_LOG (or RUST_LOG), e.g. `info,librdkafka=warn`.
    #[arg(long, global = true, env = "RISKSTREAM_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Print account ids, device fingerprints, IP addresses and store keys in logs and errors as
    /// they are (debugging). Default: as pseudonyms, `id:` + 8 hex digits of a hash keyed per
    /// process (lines about one account still match within a process).
    #[arg(long, global = true, env = "RISKSTREAM_LOG_IDENTIFIERS",
          value_parser = clap::builder::BoolishValueParser::new())]
    log_identifiers: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scoring worker (join the consumer group, score until SIGTERM/SIGINT).
    Run(run::RunArgs),
    /// Run the whole pipeline in-process on an embedded Kafka and print a summary.
    Demo(demo::DemoArgs),
    /// Produce synthetic traffic to a broker, or write training data to a file.
    Simulate(simulate::SimulateArgs),
    /// Re-score a range of the input topics (offsets, times or a group's position) with a
    /// chosen models directory in an isolated feature-store namespace, into a file or a side
    /// topic, and compare with the verdicts originally published.
    Replay(replay::ReplayArgs),
    /// Evaluate verdicts (a replay file or a topic) against labels: per model and vendor
    /// AUC-ROC, AUC-PR, recall at 1% FPR, thresholds, decisions, calibration and slices, an
    /// HTML / Markdown report with plots, and with --baseline a regression gate (exit code 3
    /// when it fails).
    Eval(eval::EvalArgs),
    /// Measure end-to-end throughput, latency and memory against a broker and Redis.
    Bench(bench::BenchArgs),
    /// Measure inference cost per event for each model at batch 1, 64 and 256.
    BenchModels(bench_models::BenchModelsArgs),
    /// Print the embedded Avro schemas (current and historical versions) and their single-object fingerprints.
    Schema,
    /// Print the feature catalogue (every model input) as a Markdown table.
    Features,
}

fn main() -> anyhow::Result<()> {
    tune_allocator();
    let cli = Cli::parse();
    riskstream_events::log_ids::log_raw_identifiers(cli.log_identifiers);
    // The demo prints its own progress; keep library chatter down there.
    let default_filter = match cli.command {
        Command::Demo(_) | Command::Bench(_) => "warn,librdkafka=error,rdkafka=error",
        _ => "info,librdkafka=warn,rdkafka=warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RISKSTREAM_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        use std::io::IsTerminal;
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(args) => runtime.block_on(run::run(args)),
        Command::Demo(args) => runtime.block_on(demo::demo(args)),
        Command::Simulate(args) => runtime.block_on(simulate::simulate(args)),
        Command::Bench(args) => runtime.block_on(bench::bench(args)),
        Command::Replay(args) => runtime.block_on(replay::replay(args)),
        Command::Eval(args) => {
            let code = runtime.block_on(eval::eval(args))?;
            if code != 0 {
                drop(runtime);
                std::process::exit(code);
            }
            Ok(())
        }
        Command::BenchModels(args) => runtime.block_on(bench_models::bench_models(args)),
        Command::Features => {
            print!("{}", riskstream_features::inputs::catalogue_markdown());
            Ok(())
        }
        Command::Schema => {
            let schemas = riskstream_events::Schemas::embedded();
            let hex = |fp: &[u8]| -> String { fp.iter().map(|b| format!("{b:02x}")).collect() };
            println!(
                "single-object fingerprints (CRC-64-AVRO of the spec's canonical form, wire order); \
                 legacy = what releases up to 2026-12-01 wrote, still accepted until {}",
                riskstream_events::schemas::LEGACY_FINGERPRINTS_UNTIL
            );
            for kind in riskstream_events::SchemaKind::ALL {
                let l = schemas.get(kind);
                println!(
                    "{:<22} {:<30} v{} (current)  single-object fingerprint {}  legacy {}",
                    kind.file_name(),
                    kind.full_name(),
                    riskstream_events::schemas::current_version(kind),
                    hex(&l.fingerprint),
                    hex(&l.legacy_fingerprint)
                );
            }
            for h in schemas.history() {
                println!(
                    "{:<22} {:<30} v{} (schema-history/)  single-object fingerprint {}  legacy {}",
                    h.file,
                    h.kind.full_name(),
                    h.version,
                    hex(&h.fingerprint),
                    hex(&h.legacy_fingerprint)
                );
            }
            Ok(())
        }
    }
}
