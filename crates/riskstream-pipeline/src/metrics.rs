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
/// Time one stage of the worker spent on one batch, seconds, by `stage` (decode, enrich,
/// score, publish; copy in passthrough).
pub const STAGE_SECONDS: &str = "riskstream_stage_seconds";
/// Encoded size of one verdict, bytes (framing included).
pub const VERDICT_BYTES: &str = "riskstream_verdict_bytes";
/// One inference call (per batch and model), seconds, by `model`.
pub const INFERENCE_SECONDS: &str = "riskstream_inference_seconds";
/// Reason codes for one batch's flagged (not simply allowed) events, seconds.
pub const EXPLAIN_SECONDS: &str = "riskstream_explain_seconds";
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

/// Starts the Prometheus exporter's HTTP listener on `addr` (e.g. `0.0.0.0:9464`).
/// Must run inside a tokio runtime. Installs the process-wide recorder once.
pub fn install_exporter(
    addr: std::net::SocketAddr,
) -> Result<(), metrics_exporter_prometheus::BuildError> {
    use metrics_exporter_prometheus::Matcher;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
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
        .install()
}
