//! Feature-store benchmark: how many events/s one store sustains, the per-batch round trip,
//! and (for Redis) the server-side cost per event from `INFO commandstats`.
//!
//!     cargo run --release -p riskstream-features --example store_bench -- redis://127.0.0.1:6379/ [events] [batch]
//!     cargo run --release -p riskstream-features --example store_bench -- redis+cluster://127.0.0.1:7000,127.0.0.1:7001 [events] [batch]
//!     cargo run --release -p riskstream-features --example store_bench -- memory
//!     cargo run --release -p riskstream-features --example store_bench -- memory 100000 512 500
//!
//! `STORE_BENCH_ACCOUNT_CACHE_MB` sets the account cache (default 0 = off, as the worker's).
//!
//! A fourth argument pre-loads that many events per account over the 7 days before the run
//! (the history-scaling case of `scripts/bench`), untimed.
//!
//! `scripts/bench-store` starts a server and a 3-node cluster and runs all three.
//!
//! Besides events/s it prints this process's CPU per event (user + system from `getrusage`,
//! over the timed batches: the store's client-side cost, which the worker pays) and the host's
//! steal time over them (`/proc/stat`): on a virtual machine whose host is busy every CPU
//! figure rises with steal (here ~21 µs/event at 0 % against ~33 at 15 %), so compare runs with
//! little of it. It allocates with mimalloc, as the `riskstream` binary does.

/// The allocator of the `riskstream` binary, so the CPU figures match the worker's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    // The account cache (off, as the worker's default); STORE_BENCH_ACCOUNT_CACHE_MB=64 turns it on.
    let cache_mb: usize = std::env::var("STORE_BENCH_ACCOUNT_CACHE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
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
            .expect("connect")
            .with_account_cache(cache_mb << 20),
        )
    };
    let sim: Vec<_> = Simulator::new(SimConfig::for_events(events as u64, 5))
        .take(events)
        .map(|e| e.event)
        .collect();
    let history: i64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(0);
    if history > 0 {
        preload(&store, &sim, history).await;
    }
    let before = redis_eval_usec(&url);
    let commands_before = command_usecs(&url);
    let mut per_batch = Vec::new();
    let (cpu_before, steal_before) = (own_cpu_seconds(), cpu_ticks());
    let started = Instant::now();
    for chunk in sim.chunks(batch) {
        let facts: Vec<_> = chunk.iter().map(inputs::facts).collect();
        let t = Instant::now();
        store.enrich_batch(&facts).await.expect("store answers");
        per_batch.push(t.elapsed());
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = own_cpu_seconds() - cpu_before;
    let steal = steal_before
        .zip(cpu_ticks())
        .and_then(|((s0, t0), (s1, t1))| {
            (t1 > t0).then(|| 100.0 * s1.saturating_sub(s0) as f64 / (t1 - t0) as f64)
        });
    per_batch.sort();
    let q = |p: f64| per_batch[((per_batch.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "store {url}: {events} events in batches of {batch}: {:.0} events/s; round trip p50 {:.2} ms p99 {:.2} ms",
        events as f64 / secs,
        q(0.5),
        q(0.99)
    );
    println!(
        "  this process's CPU: {:.1} us/event (user+sys){}",
        1e6 * cpu / events as f64,
        steal.map_or(String::new(), |s| format!(
            "; host steal {s:.1} % of CPU time"
        ))
    );
    if let (Some((b_us, b_calls)), Some((a_us, a_calls))) = (before, redis_eval_usec(&url)) {
        println!(
            "  redis server time: {:.1} us/event (all nodes), {:.1} commands/event",
            (a_us - b_us) / events as f64,
            (a_calls - b_calls) / events as f64
        );
    }
    if let AnyStore::Redis(r) = &store {
        if let Some((hits, reread)) = r.account_cache_counts() {
            println!("  account cache: {hits} timelines from the cache, {reread} read again");
        }
    }
    if let (Some(b), Some(a)) = (commands_before, command_usecs(&url)) {
        for (cmd, (us, calls)) in a {
            let (b_us, b_calls) = b.get(&cmd).copied().unwrap_or_default();
            if calls > b_calls {
                println!(
                    "    {cmd}: {:.2} us/event, {:.2} calls/event",
                    (us - b_us) / events as f64,
                    (calls - b_calls) / events as f64
                );
            }
        }
    }
}

/// Per-command (usec, calls) of a single server (with `STORE_BENCH_COMMANDS` set).
fn command_usecs(url: &str) -> Option<std::collections::BTreeMap<String, (f64, f64)>> {
    if std::env::var_os("STORE_BENCH_COMMANDS").is_none() || !url.starts_with("redis://") {
        return None;
    }
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_connection().ok()?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .ok()?;
    let mut out = std::collections::BTreeMap::new();
    for l in info.lines().filter_map(|l| l.strip_prefix("cmdstat_")) {
        let (cmd, rest) = l.split_once(':')?;
        let field = |name: &str| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(name))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        out.insert(cmd.to_string(), (field("usec="), field("calls=")));
    }
    Some(out)
}

/// `per` events for every account of `sim`, spread over the week before its first event.
async fn preload(store: &AnyStore, sim: &[riskstream_events::Event], per: i64) {
    use riskstream_features::{EventFacts, FactKind, TransactionKind};
    const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;
    let start = sim
        .iter()
        .map(|e| inputs::facts(e).event_time)
        .min()
        .unwrap_or(0);
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<_> = sim
        .iter()
        .map(inputs::facts)
        .filter(|f| seen.insert(f.account_id))
        .collect();
    let step = (WEEK_MS - 3_600_000) / per;
    let ids: Vec<Vec<String>> = firsts
        .iter()
        .map(|f| {
            (0..per)
                .map(|k| format!("hist-{}-{k}", f.account_id))
                .collect()
        })
        .collect();
    let t = Instant::now();
    // In time order, as a live worker would have written it: per chunk of accounts, one call
    // per slice of about 6 hours, then the newest event alone (`backfill_slices`).
    let ranges = riskstream_features::backfill_slices(per as usize, 28);
    let per_slice = ranges.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
    for chunk in firsts
        .iter()
        .zip(&ids)
        .collect::<Vec<_>>()
        .chunks((20_000 / per_slice).max(1))
    {
        for ks in &ranges {
            let mut facts = Vec::new();
            for (f, ids) in chunk {
                for k in ks.clone() {
                    facts.push(EventFacts {
                        event_id: &ids[k],
                        document: "",
                        destination: "",
                        event_time: start - WEEK_MS + 3_600_000 + k as i64 * step,
                        kind: FactKind::Transaction {
                            kind: if k % 2 == 0 {
                                TransactionKind::Login
                            } else {
                                TransactionKind::CardPayment
                            },
                            usd_cents: 2_500,
                        },
                        ..**f
                    });
                }
            }
            store.record_batch(&facts).await.expect("store answers");
        }
    }
    println!(
        "pre-loaded {} events per account for {} accounts in {:.1} s",
        per,
        firsts.len(),
        t.elapsed().as_secs_f64()
    );
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

/// This process's CPU seconds so far (user + system).
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given; zeroes are a valid rusage.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// (steal, total) CPU ticks of the machine so far, from `/proc/stat`.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    Some((*ticks.get(7)?, ticks.iter().take(8).sum()))
}
