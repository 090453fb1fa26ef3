//! The feature-store conformance suite: one set of behaviours, run against the in-memory store,
//! a real `redis-server`, and a real 3-node Redis Cluster. A store that passes is
//! interchangeable with the others.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use riskstream_features::*;
use riskstream_testkit::{RedisCluster, RedisServer};

const T0: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

#[derive(Clone, Debug)]
struct Ev {
    id: String,
    acct: String,
    dev: String,
    ip: String,
    country: String,
    doc: String,
    dest: String,
    t: i64,
    kind: FactKind,
}

fn ev(id: &str, acct: &str, dev: &str, t: i64, kind: FactKind) -> Ev {
    Ev {
        id: id.into(),
        acct: acct.into(),
        dev: dev.into(),
        ip: String::new(),
        country: String::new(),
        doc: String::new(),
        dest: String::new(),
        t,
        kind,
    }
}

impl Ev {
    fn ip(mut self, ip: &str, country: &str) -> Self {
        self.ip = ip.into();
        self.country = country.into();
        self
    }
    fn doc(mut self, doc: &str) -> Self {
        self.doc = doc.into();
        self
    }
    fn dest(mut self, dest: &str) -> Self {
        self.dest = dest.into();
        self
    }
}

fn tx(kind: TransactionKind, usd: i64) -> FactKind {
    FactKind::Transaction {
        kind,
        usd_cents: usd * 100,
    }
}
fn money(usd: i64) -> FactKind {
    tx(TransactionKind::TransferOut, usd)
}
fn login() -> FactKind {
    tx(TransactionKind::Login, 0)
}
fn capture(failed: bool) -> FactKind {
    FactKind::CaptureSession {
        failed_check: failed,
    }
}

fn facts_of(events: &[Ev]) -> Vec<EventFacts<'_>> {
    events
        .iter()
        .map(|e| EventFacts {
            event_id: &e.id,
            account_id: &e.acct,
            device_id: &e.dev,
            ip: &e.ip,
            country: &e.country,
            document: &e.doc,
            destination: &e.dest,
            event_time: e.t,
            kind: e.kind,
        })
        .collect()
}

async fn apply(store: &impl FeatureStore, events: &[Ev]) -> Vec<StoreFeatures> {
    store
        .enrich_batch(&facts_of(events))
        .await
        .expect("store answers")
}

/// A backfill (`record_batch`) leaves the store as scoring the same events would: later
/// events get the same features, and scoring a backfilled event again gets what it would have.
async fn backfill_matches_scoring(backfilled: impl FeatureStore, scored: impl FeatureStore) {
    let history = random_stream(7, 300, 10 * MIN);
    let (old, new) = history.split_at(250);
    backfilled
        .record_batch(&facts_of(old))
        .await
        .expect("store answers");
    apply(&scored, old).await;
    assert_eq!(
        apply(&backfilled, new).await,
        apply(&scored, new).await,
        "events after a backfill see it"
    );
    assert_eq!(
        apply(&backfilled, &old[200..]).await,
        apply(&scored, &old[200..]).await,
        "a backfilled event scored again"
    );
}

fn f(features: &StoreFeatures, name: &str) -> f32 {
    features
        .get(name)
        .unwrap_or_else(|| panic!("no feature {name}"))
}

async fn velocity_windows(store: impl FeatureStore) {
    let out = apply(
        &store,
        &[
            ev("v1", "a", "d", T0, money(10)),
            ev(
                "v2",
                "a",
                "d",
                T0 + 30 * MIN,
                tx(TransactionKind::Withdrawal, 20),
            ),
            ev(
                "v3",
                "a",
                "d",
                T0 + 2 * HOUR,
                tx(TransactionKind::PasswordChange, 0),
            ),
            ev(
                "v4",
                "a",
                "d",
                T0 + 2 * HOUR + MIN,
                tx(TransactionKind::CardPayment, 5),
            ),
            ev("v5", "a", "d", T0 + 25 * HOUR, login()),
            ev(
                "v6",
                "a",
                "d",
                T0 + 25 * HOUR + 5 * MIN,
                tx(TransactionKind::Deposit, 900),
            ),
            ev("v7", "a", "d", T0 + 8 * DAY, login()),
            ev("other", "b", "d", T0 + 2 * HOUR, money(1000)),
        ],
    )
    .await;
    assert_eq!(f(&out[0], "acct_money_out_count_24h"), 0.0);
    assert_eq!(f(&out[1], "acct_money_out_count_1h"), 1.0);
    assert_eq!(f(&out[1], "acct_money_out_usd_1h"), 10.0);
    assert_eq!(f(&out[1], "acct_transfer_out_count_1h"), 1.0);
    assert_eq!(f(&out[1], "acct_withdrawal_count_1h"), 0.0);
    assert_eq!(
        f(&out[1], "acct_money_out_count_10m"),
        0.0,
        "30 min ago is outside 10 min"
    );
    // v4 at +2h01: v1 and v2 left the 1 h window but are in the 24 h one; v3 is a credential change.
    assert_eq!(f(&out[3], "acct_money_out_count_1h"), 0.0);
    assert_eq!(f(&out[3], "acct_money_out_count_24h"), 2.0);
    assert_eq!(f(&out[3], "acct_money_out_usd_24h"), 30.0);
    assert_eq!(f(&out[3], "acct_money_out_usd_max_24h"), 20.0);
    assert_eq!(f(&out[3], "acct_withdrawal_usd_24h"), 20.0);
    assert_eq!(f(&out[3], "acct_credential_changes_24h"), 1.0);
    assert_eq!(
        f(&out[3], "acct_credential_changes_10m"),
        1.0,
        "v3 was a minute before"
    );
    assert_eq!(f(&out[3], "acct_money_out_count_10m"), 0.0);
    // v5 at +25h: v1 (at +0) and v2 (+30 min) are older than 24 h; v3, v4 are not; all are in 7 d.
    assert_eq!(f(&out[4], "acct_money_out_count_24h"), 1.0);
    assert_eq!(f(&out[4], "acct_money_out_usd_24h"), 5.0);
    assert_eq!(f(&out[4], "acct_card_payment_count_24h"), 1.0);
    assert_eq!(f(&out[4], "acct_money_out_count_7d"), 3.0);
    assert_eq!(f(&out[4], "acct_money_out_usd_7d"), 35.0);
    assert_eq!(f(&out[4], "acct_credential_changes_24h"), 1.0);
    // Deposits are not money out; logins count as logins.
    assert_eq!(f(&out[5], "acct_money_out_count_7d"), 3.0);
    assert_eq!(f(&out[5], "acct_logins_10m"), 1.0);
    // v7 at +8 d: v1..v4 are older than 7 d, v5 is not.
    assert_eq!(f(&out[6], "acct_money_out_count_7d"), 0.0);
    assert_eq!(f(&out[6], "acct_logins_7d"), 1.0);
    // Another account's money never counts.
    assert_eq!(f(&out[7], "acct_money_out_count_24h"), 0.0);
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
    assert_eq!(
        f(&out[0], "acct_money_out_count_1h"),
        2.0,
        "late sees the earlier events of its batch"
    );
    assert_eq!(
        f(&out[1], "acct_money_out_count_1h"),
        0.0,
        "early must not see the future"
    );
    assert_eq!(
        f(&out[2], "acct_money_out_count_1h"),
        0.0,
        "same-time events are not 'before'"
    );
    assert_eq!(f(&out[3], "acct_money_out_count_1h"), 3.0);
    assert_eq!(f(&out[3], "acct_money_out_usd_1h"), 60.0);
    // A later batch with an earlier event: still only the past.
    let out = apply(&store, &[ev("older", "a", "d", T0 + 5 * MIN, login())]).await;
    assert_eq!(f(&out[0], "acct_money_out_count_1h"), 2.0);
    assert_eq!(f(&out[0], "acct_money_out_usd_1h"), 10.0);
}

async fn idempotent_redelivery(store: impl FeatureStore) {
    let events = vec![
        ev("i1", "a", "d1", T0, money(10)).ip("1.1.1.1", "FR"),
        ev("i2", "a", "d2", T0 + MIN, login()).ip("2.2.2.2", "DE"),
        ev("i3", "a", "d1", T0 + 2 * MIN, money(10)).dest("x1"),
        ev("i4", "c", "d1", T0 + 3 * MIN, capture(true)).doc("doc1"),
    ];
    let first = apply(&store, &events).await;
    let again = apply(&store, &events).await;
    assert_eq!(first, again, "redelivery must give the same features");
    let next = apply(&store, &[ev("i5", "a", "d3", T0 + 4 * MIN, money(1))]).await;
    assert_eq!(
        f(&next[0], "acct_money_out_count_1h"),
        2.0,
        "duplicates must not double counters"
    );
    assert_eq!(f(&next[0], "acct_money_out_usd_1h"), 20.0);
    assert_eq!(f(&next[0], "acct_distinct_devices"), 2.0);
    assert_eq!(f(&next[0], "acct_distinct_ips_24h"), 2.0);
    let next = apply(&store, &[ev("i6", "c", "d1", T0 + 5 * MIN, capture(false))]).await;
    assert_eq!(f(&next[0], "device_capture_sessions_24h"), 1.0);
    assert_eq!(f(&next[0], "device_failed_checks_24h"), 1.0);
}

async fn entities_and_links(store: impl FeatureStore) {
    let out = apply(
        &store,
        &[
            ev("g1", "a", "d1", T0, login()).ip("9.9.9.9", "FR"),
            ev("g2", "a", "d1", T0 + 1000, login()).ip("9.9.9.9", "FR"),
            ev("g3", "a", "d2", T0 + 2000, money(5))
                .ip("8.8.8.8", "US")
                .dest("x1"),
            ev("g4", "b", "d2", T0 + 3000, capture(false))
                .ip("9.9.9.9", "FR")
                .doc("doc1"),
            ev("g5", "c", "d2", T0 + 4000, capture(true)).doc("doc1"),
            // d1 reappears on a late event older than its first sighting: first-seen moves back.
            ev("g6", "a", "d1", T0 - 5000, login()),
            ev("g7", "a", "d1", T0 + 5000, money(5)).dest("x1"),
        ],
    )
    .await;
    assert_eq!(
        f(&out[0], "acct_device_is_new"),
        0.0,
        "g6 (earlier, same batch) already used d1"
    );
    assert_eq!(f(&out[5], "acct_device_is_new"), 1.0);
    assert_eq!(f(&out[5], "acct_distinct_devices"), 0.0);
    assert_eq!(f(&out[2], "acct_device_is_new"), 1.0);
    assert_eq!(f(&out[2], "acct_distinct_devices"), 1.0);
    assert_eq!(f(&out[2], "acct_destination_is_new"), 1.0);
    assert_eq!(f(&out[6], "acct_destination_is_new"), 0.0);
    assert_eq!(
        f(&out[0], "acct_destination_is_new"),
        0.0,
        "no destination, not new"
    );
    assert_eq!(f(&out[2], "acct_distinct_ips_24h"), 1.0);
    assert_eq!(f(&out[6], "acct_distinct_ips_24h"), 2.0);
    assert_eq!(f(&out[6], "acct_distinct_countries_24h"), 2.0);
    assert_eq!(f(&out[6], "acct_distinct_devices_24h"), 2.0);
    assert_eq!(f(&out[3], "device_distinct_accounts"), 1.0);
    assert_eq!(f(&out[4], "device_distinct_accounts"), 2.0);
    assert_eq!(f(&out[4], "device_capture_sessions_24h"), 1.0);
    assert_eq!(f(&out[4], "device_failed_checks_24h"), 0.0);
    assert_eq!(
        f(&out[3], "device_first_seen_age_s"),
        1.0,
        "d2 first seen at +2 s"
    );
    assert_eq!(
        f(&out[1], "device_first_seen_age_s"),
        6.0,
        "d1 first seen at -5 s"
    );
    assert_eq!(f(&out[3], "ip_distinct_accounts"), 1.0);
    assert_eq!(f(&out[4], "document_distinct_accounts"), 1.0);
    assert_eq!(f(&out[4], "ip_distinct_accounts"), 0.0, "no IP");
    assert_eq!(
        f(&out[4], "graph_linked_accounts"),
        2.0,
        "a and b through d2, b through doc1"
    );
    let check = apply(&store, &[ev("g8", "a", "d9", T0 + 10_000, login())]).await;
    assert_eq!(f(&check[0], "acct_distinct_devices"), 2.0);
    assert_eq!(f(&check[0], "device_first_seen_age_s"), 0.0);
}

/// Fan-in of payout addresses and documents within windows, and the account's age. A shared
/// destination counts accounts but is not an identity-graph link.
async fn fan_in_and_account_age(store: impl FeatureStore) {
    const H: i64 = 60 * MIN;
    let out = apply(
        &store,
        &[
            ev("h1", "p1", "e1", T0, money(5)).dest("payA"),
            ev("h2", "p2", "e2", T0 + MIN, money(5)).dest("payA"),
            ev("h3", "p1", "e1", T0 + 10 * MIN, money(5)).dest("payA"),
            ev("h4", "p3", "e3", T0 + 25 * H, money(5)).dest("payA"),
            ev("h5", "p4", "e4", T0 + 25 * H + MIN, money(5)).dest("payA"),
            ev("h6", "q1", "k1", T0, capture(false)).doc("docR"),
            ev("h7", "q2", "k2", T0 + H, capture(false)).doc("docR"),
            ev("h8", "q3", "k3", T0 + 30 * H, capture(false)).doc("docR"),
            ev("h9", "q4", "k4", T0 + 30 * H + MIN, capture(false)).doc("docR"),
        ],
    )
    .await;
    let fan = |i: usize| {
        (
            f(&out[i], "dest_distinct_accounts"),
            f(&out[i], "dest_accounts_24h"),
        )
    };
    assert_eq!(fan(0), (0.0, 0.0));
    assert_eq!(fan(1), (1.0, 1.0));
    assert_eq!(fan(2), (2.0, 2.0), "p1 paid before too");
    assert_eq!(fan(3), (2.0, 0.0), "p1 and p2 paid more than 24 h before");
    assert_eq!(fan(4), (3.0, 1.0));
    assert_eq!(f(&out[5], "dest_distinct_accounts"), 0.0, "no destination");
    assert_eq!(
        f(&out[1], "graph_linked_accounts"),
        0.0,
        "a shared destination is not a graph link"
    );
    let doc = |i: usize| {
        (
            f(&out[i], "document_distinct_accounts"),
            f(&out[i], "document_accounts_24h"),
        )
    };
    assert_eq!(doc(6), (1.0, 1.0));
    assert_eq!(doc(7), (2.0, 0.0));
    assert_eq!(doc(8), (3.0, 1.0));
    // How long the account has paid the destination: 0 for its first payment there.
    assert_eq!(
        f(&out[0], "acct_dest_tenure_s"),
        0.0,
        "p1's first payment to payA"
    );
    assert_eq!(
        f(&out[2], "acct_dest_tenure_s"),
        600.0,
        "p1 paid payA 10 min before"
    );
    assert_eq!(
        f(&out[3], "acct_dest_tenure_s"),
        0.0,
        "p3's first payment to payA"
    );
    assert_eq!(
        f(&out[5], "acct_dest_tenure_s"),
        30.0 * 86_400.0,
        "no destination: as if never"
    );
    assert_eq!(f(&out[0], "acct_age_s"), 0.0, "first event");
    assert_eq!(f(&out[2], "acct_age_s"), 600.0);
    assert_eq!(
        f(&out[2], "acct_device_tenure_s"),
        600.0,
        "e1 on p1 since T0"
    );
    assert_eq!(
        f(&out[2], "acct_device_after_first_s"),
        0.0,
        "p1 started on e1"
    );
    // A second device on an established account: tenure from its first use there, and how long
    // after the account's start it came.
    let second = apply(
        &store,
        &[
            ev("h12", "p1", "e9", T0 + 2 * H, login()),
            ev(
                "h13",
                "p1",
                "e9",
                T0 + 3 * H,
                tx(TransactionKind::PasswordChange, 0),
            ),
        ],
    )
    .await;
    assert_eq!(
        f(&second[0], "acct_device_tenure_s"),
        0.0,
        "first use of e9"
    );
    assert_eq!(f(&second[0], "acct_device_after_first_s"), 7200.0);
    assert_eq!(f(&second[1], "acct_device_tenure_s"), 3600.0);
    assert_eq!(f(&second[1], "acct_device_after_first_s"), 7200.0);
    // A late event older than the account's first moves its first event back.
    let late = apply(&store, &[ev("h10", "p1", "e1", T0 - H, login())]).await;
    assert_eq!(f(&late[0], "acct_age_s"), 0.0);
    let next = apply(&store, &[ev("h11", "p1", "e1", T0 + H, login())]).await;
    assert_eq!(f(&next[0], "acct_age_s"), 7200.0);
}

async fn recency(store: impl FeatureStore) {
    let out = apply(
        &store,
        &[
            ev("r0", "a", "d", T0, money(1)),
            ev("r1", "a", "d", T0 + MIN, login()),
            ev(
                "r2",
                "a",
                "d",
                T0 + 2 * MIN,
                tx(TransactionKind::PasswordChange, 0),
            ),
        ],
    )
    .await;
    // Ten days later (a later batch: the old events are trimmed from the event window).
    let later = apply(
        &store,
        &[
            ev(
                "r3",
                "a",
                "d",
                T0 + 10 * DAY,
                tx(TransactionKind::MfaChange, 0),
            ),
            ev("r4", "a", "d", T0 + 10 * DAY + 30_000, money(1)),
        ],
    )
    .await;
    let out: Vec<StoreFeatures> = out.into_iter().chain(later).collect();
    let never = 30.0 * 86_400.0;
    assert_eq!(f(&out[0], "acct_secs_since_login"), never);
    assert_eq!(f(&out[2], "acct_secs_since_login"), 60.0);
    assert_eq!(f(&out[2], "acct_secs_since_password_change"), never);
    assert_eq!(f(&out[4], "acct_secs_since_mfa_change"), 30.0);
    // The password change is 10 days old: older than the 7 d event window, still known.
    assert_eq!(
        f(&out[4], "acct_secs_since_password_change"),
        (10 * DAY - 2 * MIN + 30_000) as f32 / 1000.0
    );
    // The login is older than the event window (7 d + lateness): unknown.
    assert_eq!(f(&out[4], "acct_secs_since_login"), never);
}

async fn bounded_retention(store: impl FeatureStore) {
    // Retention = 7 d + 1 h allowed lateness. An event 8 days later trims the first one, so a
    // very late event arriving afterwards no longer sees it (bounded state beats completeness).
    apply(&store, &[ev("r1", "a", "d", T0, money(10))]).await;
    apply(&store, &[ev("r2", "a", "d", T0 + 8 * DAY, money(10))]).await;
    let out = apply(&store, &[ev("r3", "a", "d", T0 + HOUR, money(10))]).await;
    assert_eq!(f(&out[0], "acct_money_out_count_24h"), 0.0);
    // Within one batch, trimming never takes what an event of that batch needs.
    let out = apply(
        &store,
        &[
            ev("b1", "b", "d", T0, money(10)),
            ev("b2", "b", "d", T0 + 8 * DAY, money(10)),
            ev("b3", "b", "d", T0 + HOUR, money(10)),
        ],
    )
    .await;
    assert_eq!(f(&out[2], "acct_money_out_count_24h"), 1.0);
    // Within the allowed lateness nothing is lost.
    let out = apply(
        &store,
        &[
            ev("w1", "z", "d", T0, money(10)),
            ev("w2", "z", "d", T0 + 7 * DAY + 30 * MIN, money(10)),
            ev("w3", "z", "d", T0 + 6 * DAY, money(10)),
        ],
    )
    .await;
    assert_eq!(f(&out[2], "acct_money_out_count_7d"), 1.0);
    // Per-entity caps: an account keeps at most 1000 events.
    for chunk in 0..12 {
        let batch: Vec<Ev> = (0..100)
            .map(|i| {
                ev(
                    &format!("cap-{chunk}-{i}"),
                    "busy",
                    "d",
                    T0 + (chunk * 100 + i) * 1000,
                    login(),
                )
            })
            .collect();
        apply(&store, &batch).await;
    }
    let out = apply(
        &store,
        &[ev("cap-last", "busy", "d", T0 + 2 * HOUR, login())],
    )
    .await;
    // The cap is enforced after a batch's reads: between batches an account holds at most 1 000.
    assert_eq!(
        f(&out[0], "acct_logins_24h"),
        1000.0,
        "capped at 1000 events"
    );
    let out = apply(
        &store,
        &[ev("cap-next", "busy", "d", T0 + 2 * HOUR + 1, login())],
    )
    .await;
    assert_eq!(f(&out[0], "acct_logins_24h"), 1000.0, "still capped");
}

async fn identity_graph(store: impl FeatureStore) {
    // fraudster F and account A share device dF; A also uses device dA, which B uses; C is
    // behind a public IP shared by 60 accounts (a hub), one of them F.
    let mut events = vec![
        ev("k1", "F", "dF", T0, login()).ip("6.6.6.6", "RU"),
        ev("k2", "A", "dF", T0 + 1000, login()),
        ev("k3", "A", "dA", T0 + 2000, login()),
        ev("k4", "B", "dA", T0 + 3000, login()),
    ];
    for i in 0..60 {
        events.push(
            ev(
                &format!("hub{i}"),
                &format!("H{i}"),
                &format!("dh{i}"),
                T0 + 4000 + i,
                login(),
            )
            .ip("1.2.3.4", "FR"),
        );
    }
    events.push(ev("k5", "F", "dF", T0 + 5000, login()).ip("1.2.3.4", "FR"));
    apply(&store, &events).await;

    let outcome = store
        .apply_label("F", true, T0 + 10_000)
        .await
        .expect("label");
    assert_eq!(outcome.entities, 3, "dF, 6.6.6.6 and the hub IP");
    assert_eq!(outcome.neighbours, 1, "A (the hub is not crossed)");

    let out = apply(
        &store,
        &[
            ev("q1", "A", "dF", T0 + 20_000, login()),
            ev("q2", "B", "dA", T0 + 21_000, login()),
            ev("q3", "H1", "dh1", T0 + 22_000, login()).ip("1.2.3.4", "FR"),
            ev("q4", "F", "dF", T0 + 23_000, login()),
            ev("q5", "N", "dN", T0 + 24_000, login()),
        ],
    )
    .await;
    assert_eq!(
        f(&out[0], "graph_fraud_accounts_1hop"),
        1.0,
        "A shares dF with F"
    );
    assert_eq!(f(&out[0], "graph_linked_accounts"), 1.0);
    assert_eq!(f(&out[1], "graph_fraud_accounts_1hop"), 0.0);
    assert_eq!(
        f(&out[1], "graph_fraud_accounts_2hop"),
        1.0,
        "B -> dA -> A -> dF -> F"
    );
    assert_eq!(
        f(&out[2], "graph_fraud_accounts_1hop"),
        0.0,
        "hubs are not crossed"
    );
    assert_eq!(f(&out[2], "ip_distinct_accounts"), 61.0);
    assert_eq!(f(&out[3], "acct_labelled_fraud"), 1.0);
    assert_eq!(
        f(&out[3], "graph_fraud_accounts_1hop"),
        0.0,
        "an account is not its own neighbour"
    );
    assert_eq!(
        f(&out[4], "graph_linked_accounts") + f(&out[4], "graph_fraud_accounts_1hop"),
        0.0
    );

    // A new account joining the fraudster's device is tainted at once; one joining A's other
    // device after that gets the two-hop taint from the join.
    let out = apply(&store, &[ev("q6", "J", "dF", T0 + 30_000, login())]).await;
    assert_eq!(f(&out[0], "graph_fraud_accounts_1hop"), 1.0);
    apply(&store, &[ev("q7", "J", "dJ", T0 + 31_000, login())]).await;
    let out = apply(&store, &[ev("q8", "K", "dJ", T0 + 32_000, login())]).await;
    assert_eq!(
        f(&out[0], "graph_fraud_accounts_2hop"),
        1.0,
        "K -> dJ -> J -> dF -> F"
    );
    // The fraudster's new device is tainted by its own event.
    apply(&store, &[ev("q9", "F", "dF2", T0 + 33_000, login())]).await;
    let out = apply(&store, &[ev("q10", "M", "dF2", T0 + 34_000, login())]).await;
    assert_eq!(f(&out[0], "graph_fraud_accounts_1hop"), 1.0);

    // Clearing the label (confirmed legitimate) removes the taint it propagated.
    store
        .apply_label("F", false, T0 + 40_000)
        .await
        .expect("clear");
    let out = apply(
        &store,
        &[
            ev("q11", "A", "dF", T0 + 41_000, login()),
            ev("q12", "B", "dA", T0 + 42_000, login()),
        ],
    )
    .await;
    assert_eq!(f(&out[0], "graph_fraud_accounts_1hop"), 0.0);
    assert_eq!(f(&out[1], "graph_fraud_accounts_2hop"), 0.0);
}

/// A random stream: 8 accounts, 6 devices, 4 IPs, 3 documents, all kinds; `spread` ms apart at most.
fn random_stream(seed: u64, n: usize, spread: i64) -> Vec<Ev> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut t = T0;
    (0..n)
        .map(|i| {
            t += rng.gen_range(0..spread);
            let kind = match rng.gen_range(0..8) {
                0 => money(rng.gen_range(1..500)),
                1 => tx(TransactionKind::Withdrawal, rng.gen_range(1..500)),
                2 => tx(TransactionKind::CardPayment, rng.gen_range(1..50)),
                3 => tx(TransactionKind::PasswordChange, 0),
                4 => login(),
                5 => capture(rng.gen_bool(0.3)),
                6 => tx(TransactionKind::MfaChange, 0),
                _ => tx(TransactionKind::Trade, 0),
            };
            let mut e = ev(
                &format!("p{seed}-{i}"),
                &format!("a{}", rng.gen_range(0..8)),
                &format!("d{}", rng.gen_range(0..6)),
                t,
                kind,
            );
            if rng.gen_bool(0.8) {
                let ip = rng.gen_range(0..4);
                e = e.ip(&format!("10.0.0.{ip}"), ["FR", "DE", "US", "BR"][ip]);
            }
            if matches!(kind, FactKind::CaptureSession { .. }) && rng.gen_bool(0.7) {
                e = e.doc(&format!("doc{}", rng.gen_range(0..3)));
            }
            if matches!(
                kind,
                FactKind::Transaction {
                    kind: TransactionKind::TransferOut,
                    ..
                }
            ) {
                e = e.dest(&format!("x{}", rng.gen_range(0..5)));
            }
            e
        })
        .collect()
}

fn index_of(e: &Ev) -> usize {
    e.id.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("index")
}

/// Features of every event of `events` after all of them were delivered one by one in time order.
async fn reference(store: &impl FeatureStore, events: &[Ev]) -> Vec<StoreFeatures> {
    let mut out = Vec::new();
    for e in events {
        out.extend(apply(store, std::slice::from_ref(e)).await);
    }
    out
}

/// Property: the same time-ordered stream delivered with random batch boundaries and random
/// redeliveries gives every delivery, first or repeated, the features of a clean, one-at-a-time
/// delivery.
async fn batching_and_duplicates_do_not_matter<S: FeatureStore>(store_pairs: Vec<(S, S)>) {
    for (seed, (clean, messy)) in store_pairs.into_iter().enumerate() {
        let seed = seed as u64;
        let mut rng = SmallRng::seed_from_u64(seed + 100);
        let events = random_stream(seed, 300, 10 * MIN);
        let expected = reference(&clean, &events).await;
        let mut delivered = 0;
        while delivered < events.len() {
            let take = rng.gen_range(1..=40).min(events.len() - delivered);
            let mut batch: Vec<Ev> = events[delivered..delivered + take].to_vec();
            // Redeliver a few events from earlier batches at random places in this one.
            for _ in 0..if delivered > 0 {
                rng.gen_range(0..4)
            } else {
                0
            } {
                let j = rng.gen_range(0..delivered);
                let pos = rng.gen_range(0..=batch.len());
                batch.insert(pos, events[j].clone());
            }
            let out = apply(&messy, &batch).await;
            for (e, feat) in batch.iter().zip(out) {
                assert_eq!(
                    feat,
                    expected[index_of(e)],
                    "seed {seed}, delivery of {}",
                    e.id
                );
            }
            delivered += take;
        }
    }
}

/// Property: shuffled (each event late by up to 50 min, within the 1 h allowed lateness),
/// duplicated, randomly batched deliveries leave the store in the same state as a clean,
/// one-at-a-time delivery in time order: once everything has arrived, probe events (new ids,
/// the facts and times of the stream's events) get the same features from both stores. Every
/// redelivery, during the stream or after it, gets the features of that event's first delivery.
/// `spread`: mean gap between events; a long stream (over 7 days) also exercises the tiles and
/// the trims, and then only events within the allowed lateness of the newest are probed.
async fn shuffled_deliveries_converge<S: FeatureStore>(store_pairs: Vec<(S, S)>, spread: i64) {
    for (seed, (clean, messy)) in store_pairs.into_iter().enumerate() {
        let seed = seed as u64;
        let mut rng = SmallRng::seed_from_u64(seed + 200);
        let events = random_stream(seed + 50, 400, 2 * spread);
        reference(&clean, &events).await;
        // Arrival order: event time plus a random delay of up to 50 minutes, plus duplicates.
        let mut arrivals: Vec<(i64, Ev)> = events
            .iter()
            .map(|e| (e.t + rng.gen_range(0..50 * MIN), e.clone()))
            .collect();
        for _ in 0..60 {
            let e = events.choose(&mut rng).expect("events").clone();
            arrivals.push((e.t + rng.gen_range(0..50 * MIN), e));
        }
        arrivals.sort_by_key(|(at, _)| *at);
        let mut first: std::collections::HashMap<String, StoreFeatures> = Default::default();
        let mut rest = &arrivals[..];
        while !rest.is_empty() {
            let take = rng.gen_range(1..=30).min(rest.len());
            let mut batch: Vec<Ev> = rest[..take].iter().map(|(_, e)| e.clone()).collect();
            batch.shuffle(&mut rng);
            for (e, feat) in batch.iter().zip(apply(&messy, &batch).await) {
                let was = *first.entry(e.id.clone()).or_insert(feat);
                assert_eq!(feat, was, "seed {seed}: redelivery of {} changed", e.id);
            }
            rest = &rest[take..];
        }
        // Everything has arrived: probes see the same state in both stores.
        let newest = events.last().expect("events").t;
        let trims = newest - T0 > 7 * DAY;
        let probes: Vec<Ev> = events
            .iter()
            .filter(|e| !trims || e.t > newest - 50 * MIN)
            .map(|e| Ev {
                id: format!("probe-{}", e.id),
                ..e.clone()
            })
            .collect();
        assert!(probes.len() >= if trims { 1 } else { 400 });
        let (a, b) = (apply(&messy, &probes).await, apply(&clean, &probes).await);
        for ((e, fa), fb) in probes.iter().zip(a).zip(b) {
            assert_eq!(fa, fb, "seed {seed}, spread {spread}, {}", e.id);
        }
        // Redeliveries after everything arrived: the first features come back.
        let again: Vec<Ev> = events.iter().step_by(7).cloned().collect();
        for (e, feat) in again.iter().zip(apply(&messy, &again).await) {
            assert_eq!(feat, first[&e.id], "late redelivery of {}", e.id);
        }
    }
}

/// A long history (9 days, an event every 7 minutes, delivered in order in batches of 20):
/// older events live in tiles (`tiles.rs`). The 10 min and 1 h windows and the last login stay
/// exact; the 24 h and 7 d windows may start up to half a tile (30 min, 12 h) early or late.
async fn long_history(store: impl FeatureStore) {
    let kinds = [
        money(10),
        login(),
        tx(TransactionKind::Withdrawal, 7),
        tx(TransactionKind::Trade, 0),
    ];
    let events: Vec<Ev> = (0..9 * DAY / (7 * MIN))
        .map(|i| {
            ev(
                &format!("long-{i}"),
                "old",
                &format!("dev{}", i % 3),
                T0 + i * 7 * MIN,
                kinds[i as usize % kinds.len()],
            )
        })
        .collect();
    let money_out = |e: &Ev| {
        matches!(
            e.kind,
            FactKind::Transaction {
                kind: TransactionKind::TransferOut | TransactionKind::Withdrawal,
                ..
            }
        )
    };
    // Exact count of money-out events in [from, t).
    let exact = |from: i64, t: i64| {
        events
            .iter()
            .filter(|e| e.t >= from && e.t < t && money_out(e))
            .count() as f32
    };
    for chunk in events.chunks(20) {
        let out = apply(&store, chunk).await;
        for (e, feat) in chunk.iter().zip(out) {
            let t = e.t;
            assert_eq!(
                f(&feat, "acct_money_out_count_10m"),
                exact(t - 10 * MIN, t),
                "{}",
                e.id
            );
            assert_eq!(
                f(&feat, "acct_money_out_count_1h"),
                exact(t - HOUR, t),
                "{}",
                e.id
            );
            let day = f(&feat, "acct_money_out_count_24h");
            assert!(
                (exact(t - DAY + 30 * MIN, t)..=exact(t - DAY - 30 * MIN, t)).contains(&day),
                "{}: 24 h count {day}",
                e.id
            );
            let week = f(&feat, "acct_money_out_count_7d");
            assert!(
                (exact(t - 7 * DAY + 12 * HOUR, t)..=exact(t - 7 * DAY - 12 * HOUR, t))
                    .contains(&week),
                "{}: 7 d count {week}",
                e.id
            );
            let last_login = events
                .iter()
                .filter(|x| {
                    x.t < t
                        && matches!(
                            x.kind,
                            FactKind::Transaction {
                                kind: TransactionKind::Login,
                                ..
                            }
                        )
                })
                .map(|x| x.t)
                .max();
            assert_eq!(
                f(&feat, "acct_secs_since_login"),
                last_login.map_or(30.0 * 86_400.0, |l| ((t - l) as f64 / 1000.0) as f32)
            );
            if t > T0 + 8 * HOUR {
                assert_eq!(f(&feat, "acct_distinct_devices_24h"), 3.0);
            }
        }
    }
    // A redelivery long after (its hour is sealed by now) gets its first features back.
    let first = apply(&store, &events[100..101]).await;
    let fresh = StoreFeatures::default();
    assert_ne!(first[0], fresh);
    assert_eq!(
        f(&first[0], "acct_money_out_count_1h"),
        exact(events[100].t - HOUR, events[100].t)
    );
}

/// Every behaviour above, on stores made by `make` (each call a fresh, isolated store).
/// The event's cluster: accounts on its own device, document and payout address, then on those
/// accounts' devices, documents and payout addresses, as of the event; IPs do not link; hubs
/// (more than 50 accounts) are skipped.
async fn cluster_size(store: impl FeatureStore) {
    let c = |x: &StoreFeatures| f(x, "graph_cluster_accounts");
    let setup = apply(
        &store,
        &[
            // c2 shares device D1 with c1 (below) and pays X1; c3 pays X1 too.
            ev("k1", "c2", "D1", T0, money(5)).dest("X1"),
            ev("k2", "c3", "D3", T0 + MIN, money(5)).dest("X1"),
            // c4 presents c3's document: three hops from c1.
            ev("k3", "c4", "D4", T0 + 2 * MIN, capture(false)).doc("M1"),
            ev("k4", "c3", "D3", T0 + 3 * MIN, capture(false)).doc("M1"),
            // c5 shares only an IP with c1.
            ev("k5", "c5", "D5", T0 + 4 * MIN, login()).ip("ip9", "FR"),
        ],
    )
    .await;
    assert_eq!(c(&setup[0]), 0.0, "c2 alone on D1 and X1");
    assert_eq!(c(&setup[1]), 1.0, "c3: c2 through X1");
    // The walk starts from the event's own device, document and payout address: c3's capture
    // reaches c4 through M1, not c2 (X1 is not this event's).
    assert_eq!(c(&setup[3]), 1.0, "c3's capture: c4 through M1");
    let out = apply(
        &store,
        &[
            ev("k6", "c1", "D1", T0 + 10 * MIN, login()).ip("ip9", "FR"),
            // Before anyone else used D1: nothing yet (point in time).
            ev("k7", "c1", "D1", T0 - 60 * MIN, login()),
        ],
    )
    .await;
    assert_eq!(
        c(&out[0]),
        2.0,
        "c2 (D1) and c3 (D1 -> c2 -> X1); not c4 (3 hops), not c5 (IP)"
    );
    assert_eq!(c(&out[1]), 0.0, "as of its time");
    // A device shared by more than 50 accounts is a hub: no cluster through it.
    let hub: Vec<Ev> = (0..51)
        .map(|i| ev(&format!("hub{i}"), &format!("h{i}"), "DH", T0 + i, login()))
        .collect();
    apply(&store, &hub).await;
    let late = apply(&store, &[ev("k8", "c9", "DH", T0 + 20 * MIN, login())]).await;
    assert_eq!(c(&late[0]), 0.0, "hub skipped");
}

async fn conformance<S: FeatureStore, F: std::future::Future<Output = S>>(
    mut make: impl FnMut(&str) -> F,
) {
    velocity_windows(make("vel").await).await;
    point_in_time(make("pit").await).await;
    idempotent_redelivery(make("idem").await).await;
    entities_and_links(make("ent").await).await;
    fan_in_and_account_age(make("fan").await).await;
    recency(make("rec").await).await;
    bounded_retention(make("ret").await).await;
    identity_graph(make("graph").await).await;
    cluster_size(make("cluster").await).await;
    backfill_matches_scoring(make("bfill-a").await, make("bfill-b").await).await;
    long_history(make("long").await).await;
    let mut pairs = Vec::new();
    for n in 0..4 {
        pairs.push((
            make(&format!("clean{n}")).await,
            make(&format!("messy{n}")).await,
        ));
    }
    batching_and_duplicates_do_not_matter(pairs).await;
    for spread in [10 * MIN, 40 * MIN] {
        let mut pairs = Vec::new();
        for n in 0..3 {
            pairs.push((
                make(&format!("sclean{spread}-{n}")).await,
                make(&format!("smessy{spread}-{n}")).await,
            ));
        }
        shuffled_deliveries_converge(pairs, spread).await;
    }
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(|_| async { MemoryStore::new(StoreLimits::default()) }).await;
}

async fn redis_at(url: &str, prefix: &str) -> RedisStore {
    redis_with_deadline(url, prefix, Duration::from_secs(5)).await
}

async fn redis_with_deadline(url: &str, prefix: &str, deadline: Duration) -> RedisStore {
    RedisStore::connect(url, prefix, StoreLimits::default(), deadline)
        .await
        .expect("connect")
}

#[tokio::test]
async fn redis_store_conforms() {
    let server = RedisServer::start();
    let url = server.url();
    conformance(|prefix| {
        let (url, prefix) = (url.clone(), prefix.to_string());
        async move { redis_at(&url, &prefix).await }
    })
    .await;
}

/// The account cache changes no feature: the whole suite again, with it.
#[tokio::test]
async fn redis_store_with_account_cache_conforms() {
    let server = RedisServer::start();
    let url = server.url();
    conformance(|prefix| {
        let (url, prefix) = (url.clone(), prefix.to_string());
        async move { redis_at(&url, &prefix).await.with_account_cache(64 << 20) }
    })
    .await;
}

/// Two workers writing the same accounts (accounts not co-partitioned, or a rebalance), each
/// with its cache: every batch gets the features a single store without a cache gives the same
/// batches in the same order. The cache is used (hits) and its check catches the other writer
/// (timelines read after all).
#[tokio::test]
async fn account_cache_sees_other_writers() {
    let server = RedisServer::start();
    let url = server.url();
    let cached = [
        redis_at(&url, "shared").await.with_account_cache(64 << 20),
        redis_at(&url, "shared").await.with_account_cache(64 << 20),
    ];
    let plain = redis_at(&url, "plain").await;
    let events = random_stream(41, 600, 5 * MIN);
    let mut rng = SmallRng::seed_from_u64(41);
    let mut delivered = 0;
    while delivered < events.len() {
        let take = rng.gen_range(1..=30).min(events.len() - delivered);
        let batch = &events[delivered..delivered + take];
        // Mostly the first worker; now and then the second writes the same accounts.
        let writer = &cached[usize::from(rng.gen_bool(0.2))];
        assert_eq!(
            apply(writer, batch).await,
            apply(&plain, batch).await,
            "batch at {delivered}"
        );
        delivered += take;
    }
    let (hits, reread) = cached[0].account_cache_counts().expect("cache on");
    assert!(hits > 100, "{hits} timelines from the cache");
    assert!(
        reread > 5,
        "{reread} timelines read again after another writer"
    );
}

/// Overlapping batches (`--store-in-flight` > 1): each batch's call takes its turn in batch
/// order, and the calls are started in the *reverse* order (the later batch first), as a
/// scheduler may run them. Every batch must get what one call at a time gives the same batches
/// in the same order: reads after the earlier batches' writes, and a redelivery of an earlier
/// batch's event (with late events of the same accounts around it) its first features.
async fn overlapping_batches_in_turns_match_one_at_a_time(store: RedisStore, serial: RedisStore) {
    let store = std::sync::Arc::new(store);
    // Shuffled arrivals (up to 50 min late) and redeliveries of the batch before.
    let events = random_stream(61, 600, 2 * MIN);
    let mut rng = SmallRng::seed_from_u64(61);
    let mut arrivals: Vec<(i64, Ev)> = events
        .iter()
        .map(|e| (e.t + rng.gen_range(0..50 * MIN), e.clone()))
        .collect();
    arrivals.sort_by_key(|(at, _)| *at);
    let mut batches: Vec<Vec<Ev>> = Vec::new();
    let mut rest = &arrivals[..];
    while !rest.is_empty() {
        let take = rng.gen_range(5..=25).min(rest.len());
        let mut batch: Vec<Ev> = rest[..take].iter().map(|(_, e)| e.clone()).collect();
        if let Some(before) = batches.last() {
            for _ in 0..3 {
                let again = before.choose(&mut rng).expect("non-empty").clone();
                batch.insert(rng.gen_range(0..=batch.len()), again);
            }
        }
        batches.push(batch);
        rest = &rest[take..];
    }
    let turns = Turns::default();
    let mut redelivered_with_earlier = 0;
    for (w, window) in batches.chunks(3).enumerate() {
        let mut tasks = Vec::new();
        let taken: Vec<Turn> = window.iter().map(|_| turns.take()).collect();
        // Later batches start first, a little ahead of the earlier ones.
        for (batch, turn) in window.iter().zip(taken).rev() {
            let (store, batch) = (store.clone(), batch.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .enrich_batch_in_turn(&facts_of(&batch), &turn, true)
                    .await
                    .expect("store answers")
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tasks.reverse();
        for (i, (batch, task)) in window.iter().zip(tasks).enumerate() {
            let got = task.await.expect("no panic");
            assert_eq!(got, apply(&serial, batch).await, "window {w}, batch {i}");
        }
        for pair in window.windows(2) {
            // A redelivery of the batch before next to an earlier event of its account: only
            // the first features can give it the same answer.
            redelivered_with_earlier += pair[1]
                .iter()
                .filter(|e| pair[0].iter().any(|p| p.id == e.id))
                .filter(|e| pair[1].iter().any(|o| o.acct == e.acct && o.t < e.t))
                .count();
        }
    }
    assert!(
        redelivered_with_earlier >= 10,
        "{redelivered_with_earlier} telling redeliveries"
    );
}

// Two runtime threads: a batch's feature computation (`block_in_place`) lets the next batch's
// round trip go out meanwhile, as in the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_batches_read_and_compute_in_turn() {
    let server = RedisServer::start();
    let url = server.url();
    overlapping_batches_in_turns_match_one_at_a_time(
        redis_at(&url, "turns").await,
        redis_at(&url, "turns-serial").await,
    )
    .await;
    overlapping_batches_in_turns_match_one_at_a_time(
        redis_at(&url, "turns-cached")
            .await
            .with_account_cache(64 << 20),
        redis_at(&url, "turns-cached-serial").await,
    )
    .await;
}

/// The store's deadline is its own time: a batch that waits longer than the deadline for the
/// batch before it to compute its features is not failed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_the_earlier_batch_does_not_count_against_the_deadline() {
    let server = RedisServer::start();
    let store =
        redis_with_deadline(&server.url(), "turn-deadline", Duration::from_millis(100)).await;
    let turns = Turns::default();
    let (earlier, turn) = (turns.take(), turns.take());
    // The earlier batch's round trip was answered; its features take 300 ms.
    earlier.release_reads();
    let events = vec![ev("late-1", "acct", "dev", T0, login())];
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        earlier.release_evaluate();
    };
    let facts = facts_of(&events);
    let (result, ()) = tokio::join!(store.enrich_batch_in_turn(&facts, &turn, true), release);
    assert!(result.is_ok(), "{result:?}");
    assert!(turn.waited() >= Duration::from_millis(250));
}

/// Data gone behind the store's back (`FLUSHDB`, or the account's keys expired): the cached
/// timeline is not used.
#[tokio::test]
async fn account_cache_notices_lost_data() {
    let server = RedisServer::start();
    let store = redis_at(&server.url(), "lost")
        .await
        .with_account_cache(64 << 20);
    for (i, dev) in ["d1", "d2", "d3"].into_iter().enumerate() {
        let e = ev(&format!("l{i}"), "q", dev, T0 + i as i64 * MIN, login());
        apply(&store, &[e]).await;
    }
    let before = apply(&store, &[ev("l3", "q", "d4", T0 + 3 * MIN, login())]).await;
    assert_eq!(f(&before[0], "acct_distinct_devices_24h"), 3.0);
    assert!(
        store.account_cache_counts().expect("cache on").0 >= 3,
        "cache used"
    );
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client.get_connection().expect("connect");
    let _: () = redis::cmd("FLUSHDB").query(&mut conn).expect("flushdb");
    let after = apply(&store, &[ev("l4", "q", "d5", T0 + 4 * MIN, login())]).await;
    assert_eq!(
        f(&after[0], "acct_distinct_devices_24h"),
        0.0,
        "the store lost every earlier event of the account"
    );
}

/// A namespace can be deleted whole (a finished replay's), on one server and on a cluster,
/// without touching another namespace.
#[tokio::test]
async fn namespaces_can_be_deleted() {
    let server = RedisServer::start();
    let cluster = RedisCluster::start();
    for url in [server.url(), cluster.url()] {
        let (gone, kept) = (redis_at(&url, "gone").await, redis_at(&url, "kept").await);
        apply(&gone, &random_stream(5, 100, 10 * MIN)).await;
        let before = apply(&kept, &random_stream(6, 100, 10 * MIN)).await;
        let n = gone.delete_namespace().await.expect("delete");
        assert!(n > 20, "{url}: {n} keys deleted");
        // Nothing of it is left on any node (the second pass scans every master again).
        assert_eq!(gone.delete_namespace().await.expect("again"), 0, "{url}");
        // The other namespace is intact: it still answers as before, and it has its keys.
        assert_eq!(apply(&kept, &random_stream(6, 100, 10 * MIN)).await, before);
        assert!(kept.delete_namespace().await.expect("kept") > 20, "{url}");
    }
}

/// Every key the store writes carries a TTL, including keys first written while the store skips
/// recent TTL refreshes of others.
#[tokio::test]
async fn every_redis_key_expires() {
    let server = RedisServer::start();
    let store = redis_at(&server.url(), "ttl").await;
    apply(&store, &random_stream(3, 200, 10 * MIN)).await;
    apply(&store, &random_stream(4, 200, 10 * MIN)).await;
    // New entities next to known ones, within the refresh interval.
    apply(
        &store,
        &[
            ev("n1", "a0", "new-device", T0 + 2 * DAY, capture(true)).doc("new-doc"),
            ev("n2", "new-account", "d0", T0 + 2 * DAY, money(5)).ip("10.9.9.9", "NL"),
        ],
    )
    .await;
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client.get_connection().expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("ttl:*")
        .query(&mut conn)
        .expect("keys");
    assert!(keys.len() > 20, "{} keys", keys.len());
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).expect("pttl");
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

#[tokio::test]
async fn redis_cluster_store_conforms() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    conformance(|prefix| {
        let (url, prefix) = (url.clone(), prefix.to_string());
        async move {
            let store = redis_at(&url, &prefix).await;
            assert!(store.is_cluster());
            store
        }
    })
    .await;
    let keys = cluster.keys_per_node();
    assert!(
        keys.iter().all(|n| *n > 100),
        "keys should spread over all three nodes: {keys:?}"
    );
}

#[tokio::test]
async fn namespaces_do_not_share_state() {
    let server = RedisServer::start();
    let prod = redis_at(&server.url(), "prod").await;
    let replay = redis_at(&server.url(), "replay").await;
    apply(&prod, &[ev("n1", "a", "d", T0, money(10))]).await;
    let out = apply(&replay, &[ev("n2", "a", "d", T0 + MIN, money(10))]).await;
    assert_eq!(f(&out[0], "acct_money_out_count_1h"), 0.0);
    assert_eq!(f(&out[0], "device_distinct_accounts"), 0.0);
}

#[tokio::test]
async fn redis_down_is_an_error_not_a_hang() {
    let mut server = RedisServer::start();
    let store = redis_with_deadline(&server.url(), "x", Duration::from_millis(300)).await;
    server.stop();
    let e = ev("e", "a", "d", T0, login());
    let started = std::time::Instant::now();
    let facts = [EventFacts {
        event_id: &e.id,
        account_id: &e.acct,
        device_id: &e.dev,
        ip: "",
        country: "",
        document: "",
        destination: "",
        event_time: e.t,
        kind: e.kind,
    }];
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

#[tokio::test]
async fn an_error_reply_fails_the_batch_and_the_next_batch_is_served() {
    let server = RedisServer::start();
    let store = redis_at(&server.url(), "w").await;
    let e = ev("e1", "acct-w", "dev-w", T0, login());
    let facts = facts_of(std::slice::from_ref(&e));
    // Someone wrote a hash where the account's log lives: Redis answers WRONGTYPE.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = "w:{a:acct-w}:l";
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("x")
        .arg("y")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = store.enrich_batch(&facts).await.unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    // The connection stayed in step with its replies (or was replaced): once the key is gone
    // the same store serves the batch, with the features of a first event.
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    for _ in 0..3 {
        let out = store.enrich_batch(&facts).await.unwrap();
        assert_eq!(out.len(), 1);
    }
}

#[tokio::test]
async fn a_password_protected_redis_with_a_user_and_a_database_is_served() {
    let port = riskstream_testkit::free_port();
    let _server = RedisServer::start_with(port, &["--requirepass", "s3cret"]);
    let e = ev("e1", "acct-p", "dev-p", T0, login());
    let facts = facts_of(std::slice::from_ref(&e));
    let wrong = format!("redis://default:nope@127.0.0.1:{port}/3");
    assert!(
        RedisStore::connect(&wrong, "p", StoreLimits::default(), Duration::from_secs(5))
            .await
            .is_err(),
        "a wrong password is refused at connect"
    );
    let url = format!("redis://default:s3cret@127.0.0.1:{port}/3");
    let store = redis_at(&url, "p").await;
    store.enrich_batch(&facts).await.unwrap();
    // The keys went to database 3, as the URL says.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert!(n > 0, "database 3 holds the store's keys");
    let other = format!("redis://:s3cret@127.0.0.1:{port}/0");
    let client = redis::Client::open(other.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(n, 0, "database 0 is untouched");
}

/// On Redis an entity is a log of its set's commands (`log.rs`): removals (tiles replacing raw
/// events, trims) leave dead records, which reads compact away, so a long-lived account's key
/// stays near the size of what it holds instead of growing with everything ever written.
#[tokio::test]
async fn entity_logs_stay_near_their_live_size() {
    let server = RedisServer::start();
    let store = redis_at(&server.url(), "sz").await;
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client.get_connection().expect("connect");
    let mut sizes = Vec::new();
    // 20 days of an account's logins every 7 minutes, in batches of 20.
    let events: Vec<Ev> = (0..20 * DAY / (7 * MIN))
        .map(|i| ev(&format!("sz-{i}"), "old", "dev", T0 + i * 7 * MIN, login()))
        .collect();
    for chunk in events.chunks(20) {
        apply(&store, chunk).await;
        let n: usize = redis::cmd("STRLEN")
            .arg("sz:{a:old}:l")
            .query(&mut conn)
            .expect("strlen");
        sizes.push(n);
    }
    // It holds ~4.5 KB (the last hours' raw events and the tiles of 7 days); its 4 100 events
    // alone took ~220 KB of add records, and as many removals again when tiles replaced them.
    // A log is compacted once its dead bytes pass its live ones: at most about twice the live
    // size, plus a batch's appends.
    let most = *sizes.iter().max().unwrap();
    let compacted = sizes.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(compacted > 10, "compacted {compacted} times: {sizes:?}");
    assert!(most < 16_000, "{most} bytes: {sizes:?}");
}

/// A batch that brings a long raw history (a backfill, a replay, a consumer catching up) seals
/// it into tiles in its follow-up write and compacts the log with that write — also when the
/// batch needs extra reads (here: the device is shared, so the identity-graph walk reads the
/// other account's links), whose round trip must not carry a compaction that keeps the sealed
/// raw events and their removals behind it.
#[tokio::test]
async fn a_long_history_in_one_batch_leaves_its_log_compacted() {
    let server = RedisServer::start();
    let store = redis_at(&server.url(), "lh").await;
    let client = redis::Client::open(server.url()).expect("url");
    let mut conn = client.get_connection().expect("connect");
    // Long device and network names: the batch's repeated link records (one per event and
    // entity) outweigh its raw events, so the read already finds the log due.
    let (dev, ip) = ("shared-device-".repeat(4), "203.0.113.77-".repeat(4));
    let at = |id: &str, acct: &str, t: i64| ev(id, acct, &dev, t, login()).ip(&ip, "PT");
    apply(&store, &[at("lh-other", "other", T0)]).await;
    let history: Vec<Ev> = (0..400)
        .map(|i| at(&format!("lh-{i}"), "long", T0 + MIN + i * 25 * MIN))
        .collect();
    apply(&store, &history).await;
    let n: usize = redis::cmd("STRLEN")
        .arg("lh:{a:long}:l")
        .query(&mut conn)
        .expect("strlen");
    // ~7 days of tiles and a few raw events: ~4 KB live; the 400 raw events alone were ~21 KB
    // of add records and their removals as many again.
    assert!(n < 10_000, "{n} bytes");
}
