//! `riskstream eval` against the real broker: simulated traffic with its labels on the labels
//! topic, replayed with the production models and with a deliberately broken candidate; eval
//! joins the verdicts with the labels, writes the report, and its gate fails the candidate with
//! the documented exit code.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};
use riskstream_events::{Codec, LabelKind, Verdict};
use riskstream_testkit::{repo_root, Broker};

const BIN: &str = env!("CARGO_BIN_EXE_riskstream");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RISKSTREAM_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run riskstream")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every label on the topic (read here independently of riskstream's reader).
fn labels_on(broker: &Broker, topic: &str) -> Vec<riskstream_events::Label> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "eval-e2e-reader")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "2000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let codec = Codec::registry_free();
    let mut out = Vec::new();
    let mut idle = 0;
    while idle < 8 {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle = 0;
                out.push(codec.decode_label(m.payload().unwrap()).expect("a label"));
            }
            _ => idle += 1,
        }
    }
    out
}

fn verdicts_in(path: &Path) -> Vec<Verdict> {
    std::fs::read_to_string(path)
        .expect("verdict file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a verdict"))
        .collect()
}

/// AUC-ROC by its pairwise definition (ties count one half), computed here independently.
fn pairwise_auc(pairs: &[(f64, bool)]) -> f64 {
    let pos: Vec<f64> = pairs.iter().filter(|p| p.1).map(|p| p.0).collect();
    let neg: Vec<f64> = pairs.iter().filter(|p| !p.1).map(|p| p.0).collect();
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

fn report_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("report.json"))
        .expect("json")
}

fn series<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["report"]["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("series {name} in the report"))
}

#[test]
fn eval_joins_labels_writes_the_report_and_gates_a_worse_model() {
    let broker = Broker::start();
    for (t, p) in [
        ("capture-sessions", 2),
        ("transactions", 2),
        ("verdicts", 2),
        ("labels", 1),
        ("replayed", 1),
    ] {
        broker.create_topic(t, p);
    }
    let bootstrap = broker.bootstrap();
    let work = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| work.path().join(name).to_string_lossy().into_owned();
    let models = repo_root().join("models").to_string_lossy().into_owned();
    ok(&run(&[
        "simulate",
        "--brokers",
        &bootstrap,
        "--events",
        "3000",
        "--seed",
        "7",
    ]));

    // The champion's replay, to a file and a topic.
    let replay = |models: &str, output: &str, extra: &[&str]| {
        let mut args = vec![
            "replay",
            "--brokers",
            &bootstrap,
            "--idle-ms",
            "1500",
            "--models",
            models,
            "--output",
            output,
            "--compare-topic",
            "none",
        ];
        args.extend_from_slice(extra);
        ok(&run(&args));
    };
    replay(
        &models,
        &path("champion.jsonl"),
        &["--to-topic", "replayed"],
    );

    // A deliberately broken candidate: the ATO model's manifest with its input names rotated
    // by one (every feature lands in its neighbour's column: training/serving skew). Its
    // golden vectors still pass (they are positional), so it loads and serves.
    let cand = work.path().join("candidate");
    for dir in ["ato", "behavioral"] {
        std::fs::create_dir_all(cand.join(dir)).unwrap();
        for f in ["manifest.json", "model.onnx", "golden.json"] {
            std::fs::copy(
                repo_root().join("models").join(dir).join(f),
                cand.join(dir).join(f),
            )
            .unwrap();
        }
    }
    std::fs::copy(
        repo_root().join("models/serving.toml"),
        cand.join("serving.toml"),
    )
    .unwrap();
    let manifest = cand.join("ato/manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let inputs = m["inputs"].as_array_mut().unwrap();
    let names: Vec<serde_json::Value> = inputs.iter().map(|i| i["name"].clone()).collect();
    for (i, input) in inputs.iter_mut().enumerate() {
        input["name"] = names[(i + 1) % names.len()].clone();
    }
    m["version"] = "2.0.1-rotated".into();
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    replay(&cand.to_string_lossy(), &path("candidate.jsonl"), &[]);

    // 1. The champion against the labels topic: the join and the AUC agree with an
    // independent computation from the same verdicts and labels.
    let report = path("report");
    let stdout = ok(&run(&[
        "eval",
        "--brokers",
        &bootstrap,
        "--idle-ms",
        "1500",
        "--verdicts",
        &path("champion.jsonl"),
        "--models",
        &models,
        "--report",
        &report,
    ]));
    for f in [
        "index.html",
        "report.md",
        "report.json",
        "roc.svg",
        "pr.svg",
        "calibration.svg",
        "hist-ato.svg",
        "hist-behavioral.svg",
    ] {
        assert!(
            Path::new(&report).join(f).exists(),
            "{f} written:\n{stdout}"
        );
    }
    let labels = labels_on(&broker, "labels");
    assert!(labels.len() > 100, "the simulator labels its fraud");
    let ato_positive: HashSet<&str> = labels
        .iter()
        .filter(|l| {
            matches!(
                l.kind,
                LabelKind::ConfirmedAto | LabelKind::Chargeback | LabelKind::ConfirmedFraud
            )
        })
        .filter_map(|l| l.event_id.as_deref())
        .collect();
    let champion = verdicts_in(&work.path().join("champion.jsonl"));
    let ato_pairs: Vec<(f64, bool)> = champion
        .iter()
        .filter_map(|v| {
            let s = v.scores.iter().find(|s| s.model == "ato" && !s.shadow)?;
            Some((s.score, ato_positive.contains(v.event_id.as_str())))
        })
        .collect();
    let expected = pairwise_auc(&ato_pairs);
    let r = report_json(Path::new(&report));
    let ato = series(&r, "ato");
    assert_eq!(ato["overall"]["n"], ato_pairs.len());
    assert_eq!(
        ato["overall"]["positives"],
        ato_pairs.iter().filter(|p| p.1).count()
    );
    let got = ato["overall"]["auc_roc"].as_f64().unwrap();
    assert!(
        (got - expected).abs() < 1e-9,
        "eval {got}, independent {expected}"
    );
    assert!(
        expected > 0.8,
        "the production ATO model separates ({expected})"
    );
    // Thresholds from the manifest, slices by the fields verdicts now carry, the vendors.
    assert_eq!(ato["at_thresholds"].as_array().unwrap().len(), 3);
    assert!(ato["slices"]["transaction_kind"].as_array().unwrap().len() > 3);
    assert!(ato["slices"]["region"].as_array().unwrap().len() > 1);
    let vendors = r["report"]["vendors"].as_array().unwrap();
    assert!(!vendors.is_empty(), "vendor comparison");
    assert!(series(
        &r,
        &format!("vendor:{}:liveness", vendors[0]["vendor"].as_str().unwrap())
    )["overall"]["auc_roc"]
        .is_number());

    // 2. The same labels from a file, the same verdicts from a topic: the same numbers.
    let labels_file = work.path().join("labels.jsonl");
    std::fs::write(
        &labels_file,
        labels
            .iter()
            .map(|l| serde_json::to_string(l).unwrap() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let report2 = path("report2");
    ok(&run(&[
        "eval",
        "--brokers",
        &bootstrap,
        "--idle-ms",
        "1500",
        "--verdicts-topic",
        "replayed",
        "--labels",
        &labels_file.to_string_lossy(),
        "--models",
        &models,
        "--report",
        &report2,
    ]));
    let r2 = report_json(Path::new(&report2));
    assert_eq!(series(&r2, "ato")["overall"], ato["overall"]);
    assert_eq!(
        series(&r2, "behavioral")["overall"],
        series(&r, "behavioral")["overall"]
    );

    // 3. The gate: the champion against itself passes; the broken candidate fails with exit
    // code 3 and the report names the regressed metric.
    let stdout = ok(&run(&[
        "eval",
        "--verdicts",
        &path("champion.jsonl"),
        "--baseline",
        &path("champion.jsonl"),
        "--labels",
        &labels_file.to_string_lossy(),
        "--report",
        &path("self"),
    ]));
    assert!(stdout.contains("gate: PASSED"), "{stdout}");
    let gate_report = path("gate");
    let failed = run(&[
        "eval",
        "--verdicts",
        &path("candidate.jsonl"),
        "--baseline",
        &path("champion.jsonl"),
        "--labels",
        &labels_file.to_string_lossy(),
        "--models",
        &models,
        "--models",
        &cand.to_string_lossy(),
        "--max-regression",
        "auc_roc=0.02,behavioral.auc_roc=0.05",
        "--report",
        &gate_report,
    ]);
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(
        failed.status.code(),
        Some(3),
        "{stdout}\n{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    assert!(stdout.contains("gate: FAILED ato auc_roc"), "{stdout}");
    assert!(
        !stdout.contains("FAILED behavioral"),
        "behavioral is unchanged: {stdout}"
    );
    let md = std::fs::read_to_string(Path::new(&gate_report).join("report.md")).unwrap();
    assert!(md.contains("## Gate: FAILED"), "{md}");
    assert!(md.contains("Regressed: ato auc_roc."), "{md}");
    let versions: HashMap<String, serde_json::Value> = report_json(Path::new(&gate_report))
        ["report"]["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["versions"].clone(),
            )
        })
        .collect();
    assert_eq!(versions["ato"][0], "2.0.1-rotated");
}
