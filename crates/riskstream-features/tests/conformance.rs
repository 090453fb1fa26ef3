//! The feature-store conformance suite: one set of behaviours, run against the in-memory store
//! and a real `redis-server`. A store that passes is interchangeable with the other.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use riskstream_features::*;
use riskstream_testkit::RedisServer;

const T0: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

#[derive(Clone)]
struct Ev {
    id: String,
    acct: String,
    dev: String,
    t: i64,
    kind: FactKind,
}

fn ev(id: &str, acct: &str, dev: &str, t: i64, kind: FactKind) -> Ev {
    Ev { id: id.into(), acct: acct.into(), dev: dev.into(), t, kind }
}

fn money(usd: i64) -> FactKind {
    FactKind::MoneyOut { usd_cents: usd * 100 }
}

async fn apply(store: &impl FeatureStore, events: &[Ev]) -> Vec<StoreFeatures> {
    let facts: Vec<EventFacts> = events
        .iter()
        .map(|e| EventFacts { event_id: &e.id, account_id: &e.acct, device_id: &e.dev, event_time: e.t, kind: e.kind })
        .collect();
    store.enrich_batch(&facts).await.expect("store answers")
}

fn f(features: &StoreFeatures, name: &str) -> f32 {
    features.get(name).unwrap_or_else(|| panic!("no feature {name}"))
}

async fn velocity_windows(store: impl FeatureStore) {
    let out = apply(
        &store,
        &[
            ev("v1", "a", "d", T0, money(10)),
            ev("v2", "a", "d", T0 + 30 * MIN, money(20)),
            ev("v3", "a", "d", T0 + 2 * HOUR, FactKind::CredentialChange),
            ev("v4", "a", "d", T0 + 2 * HOUR + MIN, money(5)),
            ev("v5", "a", "d", T0 + 25 * HOUR, FactKind::Login),
            ev("other", "b", "d", T0 + 2 * HOUR, money(1000)),
        ],
    )
    .await;
    assert_eq!(f(&out[0], "acct_money_out_count_24h"), 0.0);
    assert_eq!(f(&out[1], "acct_money_out_count_1h"), 1.0);
    assert_eq!(f(&out[1], "acct_money_out_usd_1h"), 10.0);
    // v4 at +2h01: v1 and v2 left the 1 h window but are in the 24 h one; v3 is a credential change.
    assert_eq!(f(&out[3], "acct_money_out_count_1h"), 0.0);
    assert_eq!(f(&out[3], "acct_money_out_count_24h"), 2.0);
    assert_eq!(f(&out[3], "acct_money_out_usd_24h"), 30.0);
    assert_eq!(f(&out[3], "acct_credential_changes_24h"), 1.0);
    // v5 at +25h: v1 (at +0) and v2 (+30 min) are older than 24 h; v3, v4 are not.
    assert_eq!(f(&out[4], "acct_money_out_count_24h"), 1.0);
    assert_eq!(f(&out[4], "acct_money_out_usd_24h"), 5.0);
    assert_eq!(f(&out[4], "acct_credential_changes_24h"), 1.0);
    // Another account's money never counts.
    assert_eq!(f(&out[5], "acct_money_out_count_24h"), 0.0);
}

async fn point_in_time(store: impl FeatureStore) {
    // A later event delivered first is invisible to an earlier one; same-millisecond events
    // do not see each other.
    let out = apply(
        &store,
        &[
            ev("late", "a", "d", T0 + 10 * MIN, money(50)),
            ev("early", "a", "d", T0, money(7)),
            ev("same", "a", "d", T0, money(3)),
            ev("after", "a", "d", T0 + 20 * MIN, money(1)),
        ],
    )
    .await;
    assert_eq!(f(&out[1], "acct_money_out_count_1h"), 0.0, "early must not see the future");
    assert_eq!(f(&out[2], "acct_money_out_count_1h"), 0.0, "same-time events are not 'before'");
    assert_eq!(f(&out[3], "acct_money_out_count_1h"), 3.0);
    assert_eq!(f(&out[3], "acct_money_out_usd_1h"), 60.0);
}

async fn idempotent_redelivery(store: impl FeatureStore) {
    let events = vec![
        ev("i1", "a", "d1", T0, money(10)),
        ev("i2", "a", "d2", T0 + MIN, FactKind::Login),
        ev("i3", "a", "d1", T0 + 2 * MIN, money(10)),
        ev("i4", "c", "d1", T0 + 3 * MIN, FactKind::CaptureSession),
    ];
    let first = apply(&store, &events).await;
    let again = apply(&store, &events).await;
    assert_eq!(first, again, "redelivery must give the same features");
    let next = apply(&store, &[ev("i5", "a", "d3", T0 + 4 * MIN, money(1))]).await;
    assert_eq!(f(&next[0], "acct_money_out_count_1h"), 2.0, "duplicates must not double counters");
    assert_eq!(f(&next[0], "acct_money_out_usd_1h"), 20.0);
    assert_eq!(f(&next[0], "acct_distinct_devices"), 2.0);
}

async fn devices_and_accounts(store: impl FeatureStore) {
    let out = apply(
        &store,
        &[
            ev("g1", "a", "d1", T0, FactKind::Login),
            ev("g2", "a", "d1", T0 + 1, FactKind::Login),
            ev("g3", "a", "d2", T0 + 2, FactKind::Login),
            ev("g4", "b", "d2", T0 + 3, FactKind::CaptureSession),
            ev("g5", "c", "d2", T0 + 4, FactKind::CaptureSession),
            // d1 reappears on a late event older than its first sighting: first-seen moves back.
            ev("g6", "a", "d1", T0 - 5, FactKind::Login),
        ],
    )
    .await;
    assert_eq!(f(&out[0], "acct_device_is_new"), 1.0);
    assert_eq!(f(&out[1], "acct_device_is_new"), 0.0);
    assert_eq!(f(&out[2], "acct_device_is_new"), 1.0);
    assert_eq!(f(&out[2], "acct_distinct_devices"), 1.0);
    assert_eq!(f(&out[3], "device_distinct_accounts"), 1.0);
    assert_eq!(f(&out[4], "device_distinct_accounts"), 2.0);
    assert_eq!(f(&out[4], "device_capture_sessions_24h"), 1.0);
    assert_eq!(f(&out[5], "acct_device_is_new"), 1.0);
    assert_eq!(f(&out[5], "acct_distinct_devices"), 0.0);
    let check = apply(&store, &[ev("g7", "a", "d9", T0 + 10, FactKind::Login)]).await;
    assert_eq!(f(&check[0], "acct_distinct_devices"), 2.0);
}

async fn bounded_retention(store: impl FeatureStore) {
    // Retention = 24 h + 1 h allowed lateness. An event 30 h later trims the first one, so a
    // very late event arriving afterwards no longer sees it (bounded state beats completeness).
    let out = apply(
        &store,
        &[
            ev("r1", "a", "d", T0, money(10)),
            ev("r2", "a", "d", T0 + 30 * HOUR, money(10)),
            ev("r3", "a", "d", T0 + HOUR, money(10)),
        ],
    )
    .await;
    assert_eq!(f(&out[2], "acct_money_out_count_24h"), 0.0);
    // Within the allowed lateness nothing is lost.
    let out = apply(
        &store,
        &[
            ev("w1", "z", "d", T0, money(10)),
            ev("w2", "z", "d", T0 + 24 * HOUR + 30 * MIN, money(10)),
            ev("w3", "z", "d", T0 + 23 * HOUR, money(10)),
        ],
    )
    .await;
    assert_eq!(f(&out[2], "acct_money_out_count_24h"), 1.0);
}

/// Property: the same time-ordered stream delivered with random batch boundaries and random
/// redeliveries gives every event the features of a clean, one-at-a-time delivery.
async fn batching_and_duplicates_do_not_matter<S: FeatureStore>(store_pairs: Vec<(S, S)>) {
    for (seed, (clean, messy)) in store_pairs.into_iter().enumerate() {
        let seed = seed as u64;
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut t = T0;
        let events: Vec<Ev> = (0..300)
            .map(|i| {
                t += rng.gen_range(0..10 * MIN);
                let kind = match rng.gen_range(0..5) {
                    0 => money(rng.gen_range(1..500)),
                    1 => FactKind::CredentialChange,
                    2 => FactKind::Login,
                    3 => FactKind::CaptureSession,
                    _ => FactKind::OtherTransaction,
                };
                ev(&format!("p{seed}-{i}"), &format!("a{}", rng.gen_range(0..8)), &format!("d{}", rng.gen_range(0..6)), t, kind)
            })
            .collect();
        let mut expected = Vec::new();
        for e in &events {
            expected.extend(apply(&clean, std::slice::from_ref(e)).await);
        }
        let mut delivered = 0;
        let mut seen = std::collections::HashMap::new();
        while delivered < events.len() {
            let take = rng.gen_range(1..=40).min(events.len() - delivered);
            let mut batch: Vec<Ev> = events[delivered..delivered + take].to_vec();
            // Redeliver a few events from earlier batches at random places in this one.
            for _ in 0..if delivered > 0 { rng.gen_range(0..4) } else { 0 } {
                let j = rng.gen_range(0..delivered);
                let pos = rng.gen_range(0..=batch.len());
                batch.insert(pos, events[j].clone());
            }
            let out = apply(&messy, &batch).await;
            for (e, feat) in batch.iter().zip(out) {
                // Every delivery, first or repeated, must see exactly the clean features.
                let i: usize = e.id.rsplit('-').next().and_then(|n| n.parse().ok()).expect("index");
                assert_eq!(feat, expected[i], "seed {seed}, delivery of {}", e.id);
                seen.insert(e.id.clone(), feat);
            }
            delivered += take;
        }
        assert_eq!(seen.len(), events.len());
    }
}

fn memory() -> MemoryStore {
    MemoryStore::new(StoreLimits::default())
}

async fn redis(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::connect(&server.url(), prefix, StoreLimits::default(), Duration::from_secs(5)).await.expect("connect")
}

#[tokio::test]
async fn memory_store_conforms() {
    velocity_windows(memory()).await;
    point_in_time(memory()).await;
    idempotent_redelivery(memory()).await;
    devices_and_accounts(memory()).await;
    bounded_retention(memory()).await;
    batching_and_duplicates_do_not_matter((0..5).map(|_| (memory(), memory())).collect()).await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let server = RedisServer::start();
    velocity_windows(redis(&server, "t1").await).await;
    point_in_time(redis(&server, "t2").await).await;
    idempotent_redelivery(redis(&server, "t3").await).await;
    devices_and_accounts(redis(&server, "t4").await).await;
    bounded_retention(redis(&server, "t5").await).await;
    let mut pairs = Vec::new();
    for n in 0..5 {
        pairs.push((redis(&server, &format!("clean{n}")).await, redis(&server, &format!("messy{n}")).await));
    }
    batching_and_duplicates_do_not_matter(pairs).await;
}

#[tokio::test]
async fn namespaces_do_not_share_state() {
    let server = RedisServer::start();
    let prod = redis(&server, "prod").await;
    let replay = redis(&server, "replay").await;
    apply(&prod, &[ev("n1", "a", "d", T0, money(10))]).await;
    let out = apply(&replay, &[ev("n2", "a", "d", T0 + MIN, money(10))]).await;
    assert_eq!(f(&out[0], "acct_money_out_count_1h"), 0.0);
}

#[tokio::test]
async fn redis_down_is_an_error_not_a_hang() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), "x", StoreLimits::default(), Duration::from_millis(300)).await.unwrap();
    server.stop();
    let facts = [EventFacts { event_id: "e", account_id: "a", device_id: "d", event_time: T0, kind: FactKind::Login }];
    let started = std::time::Instant::now();
    assert!(store.enrich_batch(&facts).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(10));
    // And it recovers on its own once Redis is back.
    server.restart();
    let mut ok = false;
    for _ in 0..50 {
        if store.enrich_batch(&facts).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "store did not reconnect after redis-server restarted");
}
