//! The README's first command, `riskstream demo`, keeps its promise: every event gets a
//! verdict, the malformed records land in the dead-letter topic, and the summary JSON has
//! the documented keys.

use std::process::Command;

use riskstream_testkit::repo_root;

#[test]
fn demo_gives_every_event_a_verdict_and_writes_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let summary_path = dir.path().join("summary.json");
    let verdicts_path = dir.path().join("verdicts.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .args(["demo", "--events", "20000", "--bad-records", "3"])
        .args(["--models", &repo_root().join("models").to_string_lossy()])
        .arg("--summary-json")
        .arg(&summary_path)
        .arg("--verdicts-jsonl")
        .arg(&verdicts_path)
        .output()
        .expect("run riskstream demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("every event: yes"), "{stdout}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    // 20 000 events, then the steps of the journeys under way at the cut (a slow takeover's
    // payouts hours after its sign-in): about 2 000 more (22 338 on this seed).
    let events = s["events"].as_u64().unwrap();
    assert!((20_500..25_000).contains(&events), "{events} events");
    assert_eq!(s["verdicts"], events);
    assert_eq!(s["dead_letters"], 3);
    assert!(s["throughput_eps"].as_f64().unwrap() > 0.0);
    assert!(s["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(s["latency_ms"]["p99"].as_f64().unwrap() >= s["latency_ms"]["p50"].as_f64().unwrap());
    let decisions = s["decisions"].as_object().unwrap();
    assert_eq!(
        decisions.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        events
    );
    // The models and the policy do their job on the simulator's families. (The README's demo
    // size and rate: much shorter streams are mostly cold start — accounts without history in
    // the store; as fast as possible (`--rate 0`), partitions drift apart by hours of event time,
    // events arrive later than the tiles' allowed lateness and the shares move by a few tenths of
    // a point from run to run, as in a backfill.)
    let by = &s["by_scenario"];
    let share = |family: &str, decision: Option<&str>| {
        let d = by[family]
            .as_object()
            .unwrap_or_else(|| panic!("no {family} in {by}"));
        let total: u64 = d.values().map(|v| v.as_u64().unwrap()).sum();
        let n = match decision {
            Some(k) => d.get(k).and_then(|v| v.as_u64()).unwrap_or(0),
            None => total - d.get("ALLOW").and_then(|v| v.as_u64()).unwrap_or(0),
        };
        n as f64 / total as f64
    };
    let stopped = |family: &str| share(family, None);
    for (family, at_least) in [
        ("bot_scripted", 0.95),
        ("bot_imitating", 0.95),
        ("injection", 0.85),
        // (14 and 44 events on this seed: one event is 7 and 2 points.)
        ("ring", 0.8),
        ("mule", 0.8),
        ("ato_fast", 0.8),
        ("ato_delayed", 0.8),
        ("ato_slow", 0.75),
        ("scam", 0.8),
    ] {
        assert!(
            stopped(family) >= at_least,
            "{family} stopped: {:.3}",
            stopped(family)
        );
    }
    let outcome = &s["outcome"];
    let num = |k: &str| outcome[k].as_f64().unwrap();
    // (Measured on this seed: 95.7 % of fraud stopped, 1.79 % of legitimate events stopped,
    // 0.02 % blocked; warm-up history is not counted.)
    assert!(num("fraud_stopped") >= 0.85, "{outcome}");
    assert!(num("legit_stopped") <= 0.02, "{outcome}");
    assert!(num("legit_blocked") <= 0.002, "{outcome}");
    assert!(
        stopped("legit") < 0.005,
        "legit stopped: {}",
        stopped("legit")
    );
    // Newly opened accounts verified on their own device and document pass (rings and mules
    // open accounts too, so a new account alone must not be the signal). 1.7 % on this seed.
    assert!(
        stopped("new_customer") < 0.05,
        "new customers stopped: {}",
        stopped("new_customer")
    );
    // The warm-up history is there and left out of the totals.
    assert!(by["warmup"].as_object().is_some_and(|d| !d.is_empty()));
    assert!(stdout.contains("fraud stopped"), "{stdout}");
    // Travellers are never blocked on the model's word alone: every block names a signal.
    let verdicts = std::fs::read_to_string(&verdicts_path).unwrap();
    let mut travellers = 0;
    for line in verdicts.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["scenario"] != "traveller" {
            continue;
        }
        travellers += 1;
        let reasons: Vec<&str> = v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        if v["decision"] == "BLOCK" {
            assert!(
                reasons.iter().any(|r| r.starts_with("signal:")),
                "a traveller blocked by the model alone: {reasons:?}"
            );
        }
    }
    assert!(travellers > 100, "{travellers} traveller verdicts");
}

/// A second worker joins mid-stream, so the first gives up partitions while it is busy (the
/// embedded broker, librdkafka's mock cluster, rebalances an active member when another joins;
/// the tansu test broker does not). The worker giving them up waits for the batches it already
/// read to be published and commits them before they go: nothing is scored twice. (With
/// `RISKSTREAM_REVOKE_DRAIN_MS=0` the same run re-scores the batches in flight: 0–6
/// redelivered events in the runs tried.)
#[test]
fn a_rebalance_mid_stream_drains_in_flight_batches_and_scores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let summary_path = dir.path().join("summary.json");
    let out = Command::new(env!("CARGO_BIN_EXE_riskstream"))
        .args([
            "demo",
            "--events",
            "20000",
            "--rate",
            "4000",
            "--workers",
            "2",
        ])
        .args(["--bad-records", "0"])
        .args(["--models", &repo_root().join("models").to_string_lossy()])
        .arg("--summary-json")
        .arg(&summary_path)
        .env("RISKSTREAM_LOG", "info,librdkafka=warn")
        .output()
        .expect("run riskstream demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stderr}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    assert_eq!(s["verdicts"], s["events"]);
    let refused = stderr.contains("but the broker refused the commit");
    assert!(
        stderr.contains("in-flight batches drained and committed before revocation") || refused,
        "no partition was revoked mid-stream (or the drain did not run)"
    );
    if refused {
        // The mock broker refused the commit during the rebalance (RebalanceInProgress, about
        // one run in ten): the new owner re-scores from the last commit, as at-least-once
        // allows. Then the duplicates are what the last second of auto-commit left uncommitted.
        eprintln!(
            "the broker refused the revocation commit; {} events re-scored",
            s["duplicates"]
        );
        assert!(
            s["duplicates"].as_u64().unwrap() < 8000,
            "{}",
            s["duplicates"]
        );
        return;
    }
    let group_log: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            [
                "revok",
                "drain",
                "assign",
                "rebalance",
                "partition",
                "worker",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .collect();
    assert_eq!(
        s["duplicates"],
        0,
        "events scored twice after the rebalance; the group's log:\n{}",
        group_log.join("\n")
    );
}
