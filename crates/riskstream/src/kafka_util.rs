//! Small Kafka helpers for the commands that are not the worker: producing simulated traffic,
//! creating topics, reading verdicts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};

/// Counts delivery outcomes of a [`ThreadedProducer`].
#[derive(Default, Clone)]
pub struct DeliveryCounter {
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                tracing::warn!(error = %e, "delivery failed");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

pub type LoadProducer = ThreadedProducer<DeliveryCounter>;

/// A producer for load generation (polls itself on a background thread).
pub fn load_producer(
    brokers: &str,
    extra: &[(String, String)],
) -> anyhow::Result<(LoadProducer, DeliveryCounter)> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "500000")
        .set("compression.type", "lz4")
        .set("enable.idempotence", "true");
    for (k, v) in extra {
        cfg.set(k, v);
    }
    let counter = DeliveryCounter::default();
    let producer = cfg
        .create_with_context(counter.clone())
        .context("creating the producer")?;
    Ok((producer, counter))
}

/// Creates topics (an already existing topic is fine).
pub async fn create_topics(
    brokers: &str,
    extra: &[(String, String)],
    topics: &[(&str, i32)],
) -> anyhow::Result<()> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers);
    for (k, v) in extra {
        cfg.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> =
        cfg.create().context("creating the admin client")?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, p)| NewTopic::new(name, *p, TopicReplication::Fixed(1)))
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .context("creating topics")?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, e)) => anyhow::bail!("creating topic {name}: {e}"),
        }
    }
    tokio::task::spawn_blocking(move || drop(admin)).await?;
    Ok(())
}

/// A consumer that reads a topic from the beginning under a fresh group.
pub fn reader(
    brokers: &str,
    extra: &[(String, String)],
    topic: &str,
) -> anyhow::Result<StreamConsumer> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("riskstream-reader-{}-{}", std::process::id(), rand_suffix()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    for (k, v) in extra {
        cfg.set(k, v);
    }
    let c: StreamConsumer = cfg.create().context("creating the reader")?;
    c.subscribe(&[topic])?;
    Ok(c)
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    /// librdkafka is built with OpenSSL: TLS (`security.protocol=SSL` / `SASL_SSL`) and SASL
    /// SCRAM are available, besides PLAIN (README "Security").
    #[test]
    fn librdkafka_is_built_with_tls_and_sasl_scram() {
        let features = rdkafka::ClientConfig::new()
            .create_native_config()
            .expect("native config")
            .get("builtin.features")
            .expect("builtin.features");
        for f in ["ssl", "sasl_plain", "sasl_scram"] {
            assert!(
                features.split(',').any(|x| x == f),
                "{f} missing: {features}"
            );
        }
    }
}
