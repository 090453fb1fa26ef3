//! `riskstream run`: one scoring worker.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use riskstream_features::{inputs, AnyStore, MemoryStore, RedisStore, StoreLimits};
use riskstream_pipeline::{metrics as m, Scorer, ServingHandle};
use tokio::sync::watch;

use crate::config::{Settings, StoreChoice, WorkerArgs};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Print the effective configuration (defaults < file < environment < flags) as TOML, with
    /// passwords and secret properties redacted, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Benchmark ceiling: copy input records to the verdict topic unchanged (no decode, features or models).
    #[arg(long, hide = true)]
    pub passthrough: bool,
}

/// Ends the process now with `code`, without exit-time handlers: librdkafka's threads are still
/// running when a worker stops on an error, and OpenSSL's exit-time cleanup under them can
/// hang the process (seen: a fenced worker that printed its error and never exited, so its
/// supervisor never saw code 4). Standard output and error are flushed first; nothing else is
/// left to do (offsets are committed by the chain before it returns, or deliberately not).
fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process at once; no Rust state is observed afterwards.
    unsafe { libc::_exit(code) }
}

/// Builds the feature store chosen by the settings.
pub async fn open_store(settings: &Settings) -> anyhow::Result<AnyStore> {
    Ok(match &settings.store {
        StoreChoice::Memory => AnyStore::Memory(MemoryStore::new(StoreLimits::default())),
        StoreChoice::Redis(url) => AnyStore::Redis(
            RedisStore::connect(
                url,
                &settings.key_prefix,
                StoreLimits::default(),
                settings.store_deadline,
            )
            .await
            .with_context(|| {
                format!(
                    "connecting to the feature store at {}",
                    crate::config::redact_url(url)
                )
            })?
            .with_account_cache(settings.store_account_cache_mb << 20),
        ),
    })
}

/// Opens the feature store, waiting while it is unreachable (a worker restarted during a Redis
/// outage does not crash-loop: it joins the group once the store answers, while the running
/// workers score degraded), at most `--broker-deadline-ms` (0: forever); then the last error.
async fn open_store_waiting(
    settings: &Settings,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<AnyStore> {
    let started = std::time::Instant::now();
    let mut logged: Option<std::time::Instant> = None;
    loop {
        match open_store(settings).await {
            Ok(store) => return Ok(store),
            Err(e) => {
                let waited = started.elapsed();
                if *shutdown.borrow()
                    || (!settings.broker_deadline.is_zero() && waited >= settings.broker_deadline)
                {
                    return Err(e);
                }
                if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(error = %format!("{e:#}"), waited_s = waited.as_secs(), "feature store unreachable at start-up: waiting for it before joining the group");
                    logged = Some(std::time::Instant::now());
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

/// Loads the models directory (serving.toml, models, policy) into a scorer over `store`.
pub fn build_scorer(settings: &Settings, store: AnyStore) -> anyhow::Result<Scorer<AnyStore>> {
    let serving = ServingHandle::load(&settings.models, inputs::input_index)
        .with_context(|| format!("loading models from {}", settings.models.display()))?;
    for (slot, target) in serving.current().targets() {
        let s = serving.current();
        tracing::info!(
            slot = slot.as_str(),
            route = %target.route,
            champion = %format!("{} {}", s.models[target.champion].dir, s.model(target.champion).version()),
            shadows = target.shadows.len(),
            "serving"
        );
    }
    Ok(Scorer::new(store, Arc::new(serving)).with_writeback(settings.store_writeback_max))
}

/// The metrics address: `addr`, unless it is the built-in default and its port is taken (a
/// second worker on this host), then a free port on the same interface — logged, so
/// Prometheus' service discovery or the operator can find it. An address the operator chose is
/// used as given (a clash is then an error at start-up).
fn metrics_addr_to_use(addr: std::net::SocketAddr, is_default: bool) -> std::net::SocketAddr {
    if !is_default || std::net::TcpListener::bind(addr).is_ok() {
        return addr;
    }
    match std::net::TcpListener::bind((addr.ip(), 0)).and_then(|l| l.local_addr()) {
        Ok(free) => {
            tracing::warn!(default = %addr, chosen = %free, "default metrics port is taken (another worker on this host?); serving metrics on a free port");
            free
        }
        Err(_) => addr,
    }
}

/// A watch channel that turns true on SIGTERM or SIGINT, and its sender (to stop for other
/// reasons too).
pub fn shutdown_on_signals() -> anyhow::Result<(watch::Sender<bool>, watch::Receiver<bool>)> {
    let (tx, rx) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = tx.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::info!("shutdown requested: finishing the in-flight batch");
        riskstream_pipeline::health::health().set_shutting_down();
        let _ = tx.send(true);
    });
    Ok((stop, rx))
}

/// Runs `scoring` with the labels consumer beside it. The labels consumer ends before scoring
/// only on shutdown or when it fails: then `stop` stops scoring too, and the failure is returned
/// (the worker exits with an error so that it is restarted, rather than score on while labels
/// silently stop being applied).
async fn side_by_side<R, E: std::fmt::Display, L: std::fmt::Debug>(
    scoring: impl std::future::Future<Output = R>,
    labels: Option<tokio::task::JoinHandle<Result<L, E>>>,
    stop: &watch::Sender<bool>,
) -> (R, Option<String>) {
    let Some(mut labels) = labels else {
        return (scoring.await, None);
    };
    tokio::pin!(scoring);
    tokio::select! {
        r = &mut scoring => {
            // Scoring ended (shutdown, a failure, the dead-letter cap): labels stop too.
            let _ = stop.send(true);
            if let Some(e) = labels_outcome(labels.await) {
                tracing::error!(error = %e, "labels consumer failed");
            }
            (r, None)
        }
        l = &mut labels => {
            let failed = labels_outcome(l);
            if let Some(e) = &failed {
                tracing::error!(error = %e, "labels consumer failed: stopping the worker (it exits with an error so that it is restarted)");
                let _ = stop.send(true);
            }
            (scoring.await, failed)
        }
    }
}

/// How the labels task ended: `None` when it finished (logged), else its failure.
fn labels_outcome<L: std::fmt::Debug, E: std::fmt::Display>(
    ended: Result<Result<L, E>, tokio::task::JoinError>,
) -> Option<String> {
    match ended {
        Ok(Ok(r)) => {
            tracing::info!(?r, "labels consumer finished");
            None
        }
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
    }
}

/// How long a worker stopped by the dead-letter cap keeps serving /metrics before exiting.
const CAP_EXIT_HOLD: std::time::Duration = std::time::Duration::from_secs(15);

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = args.worker.resolve()?;
    if args.print_config {
        print!("{}", settings.to_redacted_toml());
        return Ok(());
    }
    if let Some(addr) = settings.metrics_addr {
        let addr = metrics_addr_to_use(addr, settings.metrics_addr_is_default);
        let addr = m::install_exporter(addr)
            .await
            .with_context(|| format!("starting the metrics endpoint on {addr}"))?;
        tracing::info!(%addr, "metrics, /healthz and /readyz endpoint");
        m::init_zero_series(&[
            &settings.worker.topics.capture_sessions,
            &settings.worker.topics.transactions,
        ]);
    }
    // The worker's stop: a signal, or one of its consumers failing (see the labels below).
    let (stop, shutdown) = shutdown_on_signals()?;
    if !settings.broker_deadline.is_zero() {
        let (deadline, brokers) = (settings.broker_deadline, settings.worker.brokers.clone());
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            if !riskstream_pipeline::health::health().broker_ever_up() {
                tracing::error!(
                    brokers,
                    deadline_ms = deadline.as_millis() as u64,
                    "no broker reachable within the start-up deadline (--broker-deadline-ms): giving up"
                );
                // Nothing was consumed, so nothing is left uncommitted.
                exit_now(2);
            }
        });
    }
    if args.passthrough {
        // No models to load: ready once a broker answers.
        riskstream_pipeline::health::health().set_models_loaded(true);
        let report =
            riskstream_pipeline::run_passthrough(settings.worker.clone(), shutdown).await?;
        tracing::info!(?report, "passthrough stopped");
        return Ok(());
    }
    if settings.store == StoreChoice::Memory {
        tracing::warn!("in-memory feature store: features are not shared between workers");
    }
    let store = open_store_waiting(&settings, shutdown.clone()).await?;
    let scorer = Arc::new(build_scorer(&settings, store)?);
    riskstream_pipeline::health::health().set_models_loaded(true);
    m::init_model_series(
        scorer
            .serving
            .current()
            .models
            .iter()
            .map(|m| m.dir.as_str()),
    );
    // Hot reload: file changes (polled) and SIGHUP.
    let watcher = scorer
        .serving
        .clone()
        .watch(settings.model_poll, shutdown.clone());
    let labels = (!settings.worker.topics.labels.is_empty()).then(|| {
        tokio::spawn(riskstream_pipeline::run_labels(
            settings.worker.clone(),
            scorer.clone(),
            shutdown.clone(),
        ))
    });
    let scoring = riskstream_pipeline::run(settings.worker.clone(), scorer, shutdown);
    let (result, labels_failed) = side_by_side(scoring, labels, &stop).await;
    let report = match result {
        Err(e @ riskstream_pipeline::WorkerError::DeadLetterCap(_)) => {
            // Keep /metrics up for a scrape or two, so the stop is seen (riskstream_stopped_by_cap).
            if settings.metrics_addr.is_some() {
                tokio::time::sleep(CAP_EXIT_HOLD).await;
            }
            eprintln!("riskstream run: {e}");
            exit_now(3);
        }
        Err(e @ riskstream_pipeline::WorkerError::Fenced(_)) => {
            // A zombie: another worker with this transactional.id (or a newer generation of
            // the group) took over. Restarting it with the same id would fence the other one.
            eprintln!("riskstream run: {e}");
            exit_now(4);
        }
        r => r?,
    };
    watcher.abort();
    if let Some(e) = labels_failed {
        anyhow::bail!("the labels consumer failed: {e}");
    }
    println!(
        "riskstream run: consumed {} records in {} batches, {} verdicts, {} dead letters",
        report.consumed, report.batches, report.verdicts, report.dead_letters
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scoring that runs until the stop signal, as the worker does.
    async fn scoring_until(mut stop: watch::Receiver<bool>) -> &'static str {
        let _ = stop.wait_for(|s| *s).await;
        "scoring stopped"
    }

    #[tokio::test]
    async fn a_failed_labels_consumer_stops_scoring_and_is_reported() {
        let (stop, rx) = watch::channel(false);
        let labels = tokio::spawn(async { Err::<(), _>("delivery failed") });
        let (scoring, failed) = side_by_side(scoring_until(rx), Some(labels), &stop).await;
        assert_eq!(scoring, "scoring stopped");
        assert_eq!(failed.as_deref(), Some("delivery failed"));
    }

    #[tokio::test]
    async fn a_labels_consumer_that_panics_is_a_failure_too() {
        let (stop, rx) = watch::channel(false);
        let labels = tokio::spawn(async {
            if true {
                panic!("bug");
            }
            Ok::<(), String>(())
        });
        let (_, failed) = side_by_side(scoring_until(rx), Some(labels), &stop).await;
        assert!(failed.is_some_and(|e| e.contains("panicked")));
    }

    /// A labels consumer that runs until the stop signal and then finishes cleanly.
    fn labels_until(
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<Result<u32, String>> {
        tokio::spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
            Ok(7)
        })
    }

    #[tokio::test]
    async fn when_scoring_ends_on_its_own_the_labels_consumer_is_stopped_too() {
        let (stop, rx) = watch::channel(false);
        let labels = labels_until(rx);
        // E.g. the dead-letter cap: scoring returns without a signal.
        let scoring = async { "cap tripped" };
        let (scoring, failed) = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            side_by_side(scoring, Some(labels), &stop),
        )
        .await
        .expect("the labels consumer was not stopped");
        assert_eq!(scoring, "cap tripped");
        assert_eq!(failed, None);
    }

    #[tokio::test]
    async fn on_shutdown_both_finish_and_nothing_failed() {
        let (stop, rx) = watch::channel(false);
        let labels = labels_until(rx.clone());
        stop.send(true).unwrap();
        let (scoring, failed) = side_by_side(scoring_until(rx), Some(labels), &stop).await;
        assert_eq!(scoring, "scoring stopped");
        assert_eq!(failed, None);
    }
}
