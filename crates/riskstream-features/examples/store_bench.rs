//! Feature-store benchmark: how many events/s one store sustains, the per-batch round trip,
//! and (for Redis) the server-side cost per event from `INFO commandstats`.
//!
//!     cargo run --release -p riskstream-features --example store_bench -- redis://127.0.0.1:6379/ [events] [batch]
//!     cargo run --release -p riskstream-features --example store_bench -- redis+cluster://127.0.0.1:7000,127.0.0.1:7001 [events] [batch]
//!     cargo run --release -p riskstream-features --example store_bench -- memory
//!
//! `scripts/bench-store` starts a server and a 3-node cluster and runs all three.

use std::time::{Duration, Instant};

use riskstream_features::{inputs, AnyStore, FeatureStore, MemoryStore, RedisStore, StoreLimits};
use riskstream_sim::{SimConfig, Simulator};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).cloned().unwrap_or_else(|| "memory".into());
    let events: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let batch: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(512);
    let prefix = format!("store-bench-{}", std::process::id());
    let store = if url == "memory" {
        AnyStore::Memory(MemoryStore::new(StoreLimits::default()))
    } else {
        AnyStore::Redis(
            RedisStore::connect(
                &url,
                &prefix,
                StoreLimits::default(),
                Duration::from_secs(10),
            )
            .await
            .expect("connect"),
        )
    };
    let sim: Vec<_> = Simulator::new(SimConfig::for_events(events as u64, 5))
        .take(events)
        .map(|e| e.event)
        .collect();
    let before = redis_eval_usec(&url);
    let mut per_batch = Vec::new();
    let started = Instant::now();
    for chunk in sim.chunks(batch) {
        let facts: Vec<_> = chunk.iter().map(inputs::facts).collect();
        let t = Instant::now();
        store.enrich_batch(&facts).await.expect("store answers");
        per_batch.push(t.elapsed());
    }
    let secs = started.elapsed().as_secs_f64();
    per_batch.sort();
    let q = |p: f64| per_batch[((per_batch.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "store {url}: {events} events in batches of {batch}: {:.0} events/s; round trip p50 {:.2} ms p99 {:.2} ms",
        events as f64 / secs,
        q(0.5),
        q(0.99)
    );
    if let (Some((b_us, b_calls)), Some((a_us, a_calls))) = (before, redis_eval_usec(&url)) {
        println!(
            "  redis server time: {:.1} us/event (all nodes), {:.1} commands/event",
            (a_us - b_us) / events as f64,
            (a_calls - b_calls) / events as f64
        );
    }
}

/// Total microseconds and calls Redis spent in commands so far (except INFO), summed over
/// the nodes of a cluster URL.
fn redis_eval_usec(url: &str) -> Option<(f64, f64)> {
    if url == "memory" {
        return None;
    }
    let nodes: Vec<String> = match url.strip_prefix("redis+cluster://") {
        Some(list) => list
            .trim_end_matches('/')
            .split(',')
            .map(|n| format!("redis://{n}/"))
            .collect(),
        None => vec![url.to_string()],
    };
    let (mut usec, mut calls) = (0.0, 0.0);
    for node in nodes {
        let client = redis::Client::open(node.as_str()).ok()?;
        let mut conn = client.get_connection().ok()?;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut conn)
            .ok()?;
        for l in info
            .lines()
            .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
        {
            let field = |name: &str| {
                l.split([',', ':'])
                    .find_map(|kv| kv.strip_prefix(name))
                    .and_then(|v| v.parse::<f64>().ok())
            };
            usec += field("usec=").unwrap_or(0.0);
            calls += field("calls=").unwrap_or(0.0);
        }
    }
    Some((usec, calls))
}
