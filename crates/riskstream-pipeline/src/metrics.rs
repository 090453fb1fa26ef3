//! The metrics catalogue: every metric the worker exports, named once. Served in Prometheus
//! text format at `--metrics-addr` (see README, "Metrics").

/// Records consumed, by `topic`.
pub const CONSUMED: &str = "riskstream_consumed_total";
/// Records produced (verdicts and dead letters), by `topic`.
pub const PRODUCED: &str = "riskstream_produced_total";
/// Records dead-lettered, by source `topic` and `reason`.
pub const DEAD_LETTERS: &str = "riskstream_dead_letters_total";
/// Records per batch.
pub const BATCH_SIZE: &str = "riskstream_batch_size";
/// Event time → verdict produced, seconds (meaningful when producers stamp real time).
pub const EVENT_TO_VERDICT_SECONDS: &str = "riskstream_event_to_verdict_seconds";
/// Broker timestamp of the input record → verdict acknowledged, seconds.
pub const CONSUME_TO_PRODUCE_SECONDS: &str = "riskstream_consume_to_produce_seconds";
/// One feature-store call (per batch: read and write), seconds.
pub const FEATURE_STORE_SECONDS: &str = "riskstream_feature_store_seconds";
pub const STORE_CHUNK_EVENTS: &str = "riskstream_store_chunk_events";
pub const STORE_WRITEBACK_PENDING: &str = "riskstream_store_writeback_pending";
pub const STORE_WRITEBACK: &str = "riskstream_store_writeback_total";
/// Time one stage of the worker spent on one batch, seconds, by `stage` (decode, enrich,
/// score, publish; copy in passthrough).
pub const STAGE_SECONDS: &str = "riskstream_stage_seconds";
/// Encoded size of one verdict, bytes (framing included).
pub const VERDICT_BYTES: &str = "riskstream_verdict_bytes";
/// One inference call (per batch and model), seconds, by `model`.
pub const INFERENCE_SECONDS: &str = "riskstream_inference_seconds";
/// Reason codes for one batch's flagged (not simply allowed) events, seconds.
pub const EXPLAIN_SECONDS: &str = "riskstream_explain_seconds";
/// CPU time of the thread that computed one batch's reason codes, seconds (the wall time of
/// [`EXPLAIN_SECONDS`] less the waits for a core on a busy host).
pub const EXPLAIN_CPU_SECONDS: &str = "riskstream_explain_cpu_seconds";
/// Verdicts by `decision` and `event_type`.
pub const DECISIONS: &str = "riskstream_decisions_total";
/// Events scored without some inputs, by `reason`.
pub const DEGRADED: &str = "riskstream_degraded_total";
/// Labels read from the labels topic, by `kind` and `outcome` (applied, ignored, retried).
pub const LABELS: &str = "riskstream_labels_total";
/// Consumer lag in records, by `topic` and `partition` (from librdkafka statistics).
pub const CONSUMER_LAG: &str = "riskstream_consumer_lag";
/// 1 for each model serving now, 0 once replaced; labels `slot`, `route` (`default` or the
/// route's name), `role` (`champion` or `shadow`), `model` (directory) and `version`.
pub const MODEL_ACTIVE: &str = "riskstream_model_active";
/// Model loads by hot reload, by `model` (directory) and `outcome` (`loaded`, `rejected`).
pub const MODEL_RELOADS: &str = "riskstream_model_reloads_total";
/// Serving reloads (models and policy), by `outcome` (`applied`, `rejected`).
pub const SERVING_RELOADS: &str = "riskstream_serving_reloads_total";
/// Events whose shadow score would have led to another decision than the champion's, by `model`.
pub const SHADOW_DISAGREEMENTS: &str = "riskstream_shadow_disagreements_total";

/// Rebalance callbacks, by `kind` (assign, revoke, error).
pub const REBALANCES: &str = "riskstream_rebalances_total";
/// Exactly-once transactions, by `outcome` (`committed`, `aborted`, `stale`).
pub const TRANSACTIONS: &str = "riskstream_transactions_total";
/// Revocations that waited for in-flight batches, by `outcome` (`drained`, `timeout`).
pub const REVOKE_DRAINS: &str = "riskstream_revoke_drains_total";
/// Batches read from Kafka whose outputs are not yet acknowledged (in the stages or waiting
/// for the broker).
pub const IN_FLIGHT_BATCHES: &str = "riskstream_in_flight_batches";
/// Always 1; labels `version` (the crate version) of the running binary.
pub const BUILD_INFO: &str = "riskstream_build_info";
/// 1 once a cap stopped this worker (label `cap`: `dead_letters`); it exits shortly after.
pub const STOPPED_BY_CAP: &str = "riskstream_stopped_by_cap";

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric with its kind and HELP text (what `/metrics` says about it; `promtool check
/// metrics` wants one for each).
pub const CATALOGUE: &[(&str, Kind, &str)] = &[
    (CONSUMED, Kind::Counter, "Records consumed, by topic."),
    (PRODUCED, Kind::Counter, "Records produced (verdicts and dead letters), by topic."),
    (DEAD_LETTERS, Kind::Counter, "Records sent to the dead-letter topic, by source topic and reason."),
    (BATCH_SIZE, Kind::Histogram, "Records per batch handed from the source to the first stage."),
    (EVENT_TO_VERDICT_SECONDS, Kind::Histogram, "Event time to verdict produced, seconds (meaningful when producers stamp real time)."),
    (CONSUME_TO_PRODUCE_SECONDS, Kind::Histogram, "Oldest input broker timestamp of a batch to its outputs acknowledged, seconds."),
    (FEATURE_STORE_SECONDS, Kind::Histogram, "One feature-store call (a batch's or a chunk's writes and reads), seconds."),
    (STORE_WRITEBACK_PENDING, Kind::Gauge, "Events scored during a feature-store outage waiting to be recorded in the store."),
    (STORE_WRITEBACK, Kind::Counter, "Events scored during a feature-store outage, by outcome: recorded in the store later, or dropped (queue full, or refused by the store)."),
    (STORE_CHUNK_EVENTS, Kind::Gauge, "Most events per feature-store call now (batches are cut so one call takes about half the store deadline)."),
    (STAGE_SECONDS, Kind::Histogram, "Time one worker stage spent on one batch, seconds, by stage."),
    (VERDICT_BYTES, Kind::Histogram, "Encoded size of one verdict, bytes."),
    (INFERENCE_SECONDS, Kind::Histogram, "One batched inference call, seconds, by model directory."),
    (EXPLAIN_SECONDS, Kind::Histogram, "Reason codes for one batch's flagged events, seconds."),
    (EXPLAIN_CPU_SECONDS, Kind::Histogram, "CPU time of the thread that computed one batch's reason codes, seconds."),
    (DECISIONS, Kind::Counter, "Verdicts by decision and event type."),
    (DEGRADED, Kind::Counter, "Events scored without some inputs, by reason."),
    (LABELS, Kind::Counter, "Labels read from the labels topic, by kind and outcome (applied, ignored, retried)."),
    (CONSUMER_LAG, Kind::Gauge, "Records behind the high watermark, by topic and partition (librdkafka statistics)."),
    (MODEL_ACTIVE, Kind::Gauge, "1 for each model serving now, 0 once replaced, by slot, route, role, model and version."),
    (MODEL_RELOADS, Kind::Counter, "Model loads by hot reload, by model directory and outcome (loaded, rejected)."),
    (SERVING_RELOADS, Kind::Counter, "Reloads of models and serving.toml, by outcome (applied, rejected)."),
    (SHADOW_DISAGREEMENTS, Kind::Counter, "Events whose shadow score would have led to another decision than the champion's, by model."),
    (REBALANCES, Kind::Counter, "Consumer-group rebalance callbacks, by kind (assign, revoke, error)."),
    (TRANSACTIONS, Kind::Counter, "Exactly-once mode: batch transactions by outcome (committed, aborted and retried, stale: read before a revocation and aborted)."),
    (REVOKE_DRAINS, Kind::Counter, "Revocations that waited for in-flight batches before committing, by outcome (drained, timeout)."),
    (IN_FLIGHT_BATCHES, Kind::Gauge, "Batches consumed whose outputs are not yet acknowledged by the broker."),
    (BUILD_INFO, Kind::Gauge, "Always 1, labelled with the running binary's version."),
    (STOPPED_BY_CAP, Kind::Gauge, "1 once a cap (label cap: dead_letters) stopped this worker; it exits after a short hold so this is scraped."),
];

/// Series that dashboards and alerts divide by or alert on must exist before the first event
/// of their kind: they start at zero (rates then read 0, not "no data").
pub fn init_zero_series(input_topics: &[&str]) {
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::gauge!(IN_FLIGHT_BATCHES).set(0.0);
    metrics::gauge!(STOPPED_BY_CAP, "cap" => "dead_letters").set(0.0);
    metrics::gauge!(STORE_WRITEBACK_PENDING).set(0.0);
    for outcome in ["recorded", "dropped"] {
        metrics::counter!(STORE_WRITEBACK, "outcome" => outcome).absolute(0);
    }
    for topic in input_topics {
        metrics::counter!(CONSUMED, "topic" => topic.to_string()).absolute(0);
        // One reason per topic is enough for the dead-letter rate to exist.
        metrics::counter!(DEAD_LETTERS, "topic" => topic.to_string(), "reason" => "validation")
            .absolute(0);
    }
    for outcome in ["applied", "rejected"] {
        metrics::counter!(SERVING_RELOADS, "outcome" => outcome).absolute(0);
    }
    metrics::counter!(DEGRADED, "reason" => "feature_store_unavailable").absolute(0);
    for decision in ["ALLOW", "CHALLENGE", "REVIEW", "BLOCK"] {
        for event_type in ["capture_session", "transaction"] {
            metrics::counter!(DECISIONS, "decision" => decision, "event_type" => event_type)
                .absolute(0);
        }
    }
    for kind in ["assign", "revoke", "error"] {
        metrics::counter!(REBALANCES, "kind" => kind).absolute(0);
    }
    for outcome in ["drained", "timeout"] {
        metrics::counter!(REVOKE_DRAINS, "outcome" => outcome).absolute(0);
    }
    for outcome in ["committed", "aborted", "stale"] {
        metrics::counter!(TRANSACTIONS, "outcome" => outcome).absolute(0);
    }
}

/// Reload counters of the models serving at start-up, at zero (so the first rejected reload
/// is an increase an alert sees).
pub fn init_model_series<'a>(model_dirs: impl IntoIterator<Item = &'a str>) {
    for dir in model_dirs {
        for outcome in ["loaded", "rejected"] {
            metrics::counter!(MODEL_RELOADS, "model" => dir.to_string(), "outcome" => outcome)
                .absolute(0);
        }
    }
}

/// Registers the HELP text of every metric in [`CATALOGUE`] with the installed recorder.
pub fn describe_all() {
    for &(name, kind, help) in CATALOGUE {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// Installs the process-wide Prometheus recorder and serves `/metrics`, `/healthz` and
/// `/readyz` ([`crate::health`]) on `addr` (e.g. `0.0.0.0:9464`); returns the bound address.
/// Must run inside a tokio runtime.
pub async fn install_exporter(addr: std::net::SocketAddr) -> std::io::Result<std::net::SocketAddr> {
    use metrics_exporter_prometheus::Matcher;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let builder = || -> Result<_, metrics_exporter_prometheus::BuildError> {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            )?
            .set_buckets_for_metric(
                Matcher::Full(BATCH_SIZE.into()),
                &[1.0, 8.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0],
            )?
            .set_buckets_for_metric(
                Matcher::Full(VERDICT_BYTES.into()),
                &[128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0],
            )?
            .install_recorder()
    };
    let handle = builder().map_err(std::io::Error::other)?;
    describe_all();
    // Histograms are drained into their buckets by upkeep (the exporter's own listener did this).
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(crate::health::serve(listener, move || handle.render()));
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_the_code_emits_is_in_the_catalogue() {
        // The constants above are the only names the code uses (`m::NAME`); each must be
        // described, once.
        let src = include_str!("metrics.rs");
        let consts: Vec<&str> = src
            .lines()
            .filter_map(|l| l.strip_prefix("pub const "))
            .filter(|l| l.contains(": &str = \"riskstream_"))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        assert!(consts.len() >= 22, "{consts:?}");
        for name in &consts {
            let n = CATALOGUE.iter().filter(|(c, ..)| c == name).count();
            assert_eq!(n, 1, "{name} described {n} times");
        }
        assert_eq!(consts.len(), CATALOGUE.len());
        for (name, kind, _) in CATALOGUE {
            assert_eq!(
                name.ends_with("_total"),
                *kind == Kind::Counter,
                "{name}: counters and only counters end in _total"
            );
        }
    }
}
