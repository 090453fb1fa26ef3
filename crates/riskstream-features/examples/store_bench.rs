//! Feature-store benchmark: how many events/s one store sustains, the per-batch round trip,
//! and (for Redis) the server-side cost per event from `INFO commandstats`.
//!
//!     cargo run --release -p riskstream-features --example store_bench -- redis://127.0.0.1:6379/ [events] [batch]
//!     cargo run --release -p riskstream-features --example store_bench -- memory

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
    if let (Some(b), Some(a)) = (before, redis_eval_usec(&url)) {
        println!(
            "  redis server time: {:.1} us/event",
            (a - b) / events as f64
        );
    }
}

/// Total microseconds Redis spent in commands so far (except INFO).
fn redis_eval_usec(url: &str) -> Option<f64> {
    if url == "memory" {
        return None;
    }
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_connection().ok()?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .ok()?;
    Some(
        info.lines()
            .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
            .filter_map(|l| {
                l.split(',')
                    .find_map(|kv| kv.strip_prefix("usec="))
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .sum(),
    )
}
