//! `deploy/` and `docker-compose.yml` stay consistent with the binary, so they cannot rot
//! silently (Docker and Kubernetes do not run on the CI machines): alert rules pass `promtool
//! check rules` and `promtool test rules`; the dashboard and the rules query only catalogued
//! metrics (that a live scrape has them is checked in `pipeline_e2e`); every `riskstream`
//! command, flag and `RISKSTREAM_*` variable the manifests and the compose file use exists; the
//! ConfigMap's configuration is accepted by `riskstream run --print-config`; images are pinned;
//! the probes hit the worker's health endpoints.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use riskstream_testkit::{metric_names, repo_root};
use serde_yaml::Value;

const BIN: &str = env!("CARGO_BIN_EXE_riskstream");

fn promtool(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (scripts/install-test-deps installs Debian's prometheus package)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `riskstream [cmd] --help`.
fn help(cmd: Option<&str>) -> String {
    let out = Command::new(BIN)
        .args(cmd)
        .arg("--help")
        .output()
        .expect("riskstream --help");
    assert!(out.status.success(), "riskstream {cmd:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks a riskstream command line (`[subcommand, args…]`) and its environment against the
/// binary's help.
fn check_command(args: &[String], env: &[String], what: &str) {
    let sub = args.first().unwrap_or_else(|| panic!("{what}: no command"));
    let global = help(None);
    assert!(
        global
            .lines()
            .any(|l| l.trim_start().starts_with(sub.as_str())),
        "{what}: `{sub}` is not a riskstream command"
    );
    let h = help(Some(sub));
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        let flag = flag.split('=').next().unwrap();
        assert!(
            h.contains(&format!("{flag} ")) || h.contains(&format!("{flag}\n")),
            "{what}: `riskstream {sub}` has no {flag}"
        );
    }
    for var in env.iter().filter(|v| v.starts_with("RISKSTREAM_")) {
        assert!(
            h.contains(&format!("env: {var}="))
                || global.contains(&format!("env: {var}="))
                || var == "RISKSTREAM_LOG",
            "{what}: `riskstream {sub}` reads no {var}"
        );
    }
}

fn pinned(image: &str) -> bool {
    image.rsplit_once(':').is_some_and(|(_, tag)| {
        !tag.is_empty() && tag != "latest" && tag.chars().any(|c| c.is_ascii_digit())
    })
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn alert_rules_pass_promtool_and_use_catalogued_metrics() {
    let dir = repo_root().join("deploy/prometheus");
    promtool(&["check", "rules", "alerts.yml"], &dir);
    promtool(&["test", "rules", "alerts.test.yml"], &dir);
    promtool(&["check", "config", "prometheus.yml"], &dir);
    let catalogue: BTreeSet<&str> = riskstream_pipeline::metrics::CATALOGUE
        .iter()
        .map(|(name, ..)| *name)
        .collect();
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/riskstream.json",
    ] {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{file} queries riskstream's metrics");
        for name in names {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| catalogue.contains(b)))
                .unwrap_or(&name);
            assert!(
                catalogue.contains(base),
                "{file} uses {name}, not in the metrics catalogue"
            );
        }
    }
    // The dashboard is valid JSON with a query in every panel.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana/riskstream.json")).unwrap(),
    )
    .expect("dashboard JSON");
    for p in dash["panels"].as_array().unwrap() {
        assert!(
            p["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "panel {} has no query",
            p["title"]
        );
    }
}

#[test]
fn kubernetes_manifests_match_the_binary() {
    let text = std::fs::read_to_string(repo_root().join("deploy/k8s/worker.yaml")).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect();
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} in deploy/k8s/worker.yaml"))
    };
    for kind in [
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ScaledObject",
    ] {
        find(kind);
    }
    let spec = &find("Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        spec["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    let c = &spec["containers"][0];
    let image = c["image"].as_str().unwrap();
    assert!(pinned(image), "image {image} is not pinned to a version");
    let env: Vec<String> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    check_command(&strings(&c["args"]), &env, "Deployment");
    // Probes on the worker's health endpoints, on the port the configuration serves them on.
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    let port_name = c["readinessProbe"]["httpGet"]["port"].as_str().unwrap();
    let port = c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(port_name))
        .and_then(|p| p["containerPort"].as_u64())
        .expect("the probe's named port");
    // The ConfigMap's configuration is one the binary accepts, and serves health on that port.
    let toml = find("ConfigMap")["data"]["riskstream.toml"]
        .as_str()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("riskstream.toml");
    std::fs::write(&file, toml).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config", &file.to_string_lossy(), "--print-config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the ConfigMap's configuration is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective = String::from_utf8_lossy(&out.stdout);
    assert!(
        effective.contains(&format!(":{port}\"")),
        "metrics_addr is not on the probed port {port}:\n{effective}"
    );
    let svc_port = &find("Service")["spec"]["ports"][0]["targetPort"];
    assert_eq!(svc_port.as_str(), Some(port_name));
}

#[test]
fn compose_file_matches_the_binary() {
    let text = std::fs::read_to_string(repo_root().join("docker-compose.yml")).unwrap();
    let mut compose: Value = serde_yaml::from_str(&text).expect("YAML");
    compose.apply_merge().expect("merge keys");
    let services = compose["services"].as_mapping().expect("services");
    let mut riskstream_commands = Vec::new();
    for (name, s) in services {
        let name = name.as_str().unwrap();
        let image = s["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no image"));
        assert!(
            pinned(image),
            "{name}: image {image} is not pinned to a version"
        );
        for v in strings(&s["volumes"]) {
            let host = v.split(':').next().unwrap();
            assert!(
                repo_root().join(host).exists(),
                "{name}: mounts {host}, which does not exist"
            );
        }
        if image.starts_with("riskstream:") {
            let args = strings(&s["command"]);
            let env: Vec<String> = s["environment"]
                .as_mapping()
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            check_command(&args, &env, name);
            riskstream_commands.push(args[0].clone());
        }
    }
    let count = |c: &str| riskstream_commands.iter().filter(|x| *x == c).count();
    assert!(count("run") >= 2, "two workers");
    assert!(count("simulate") >= 1, "the simulator");
    for s in ["kafka", "redis", "prometheus", "grafana"] {
        assert!(services.contains_key(s), "no {s} service");
    }
    assert!(
        services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
            .as_str()
            .is_some_and(|r| r.contains("controller")),
        "Kafka in KRaft mode"
    );
}

#[test]
fn the_image_is_multi_stage_slim_and_non_root() {
    let text = std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage");
    assert!(
        froms.last().unwrap().contains("-slim"),
        "slim runtime image"
    );
    assert!(froms
        .iter()
        .all(|f| pinned(f.split_whitespace().nth(1).unwrap())));
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "non-root user"
    );
}
