//! `riskstream eval`: evaluate verdicts (a replay file or a topic) against labels (the labels
//! topic or a file), optionally against a baseline run with a regression gate, and write the
//! report. The evaluation itself is [`riskstream_eval`]; this module reads the inputs, prints
//! the summary and sets the exit code.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use rdkafka::Message;
use riskstream_eval::gate::{self, Gate};
use riskstream_eval::render::{self, About};
use riskstream_eval::report::{evaluate, EvalConfig, Evaluation, SeriesKind};
use riskstream_eval::truth::{parse_duration_ms, LabelIndex, Positives, Unlabelled};
use riskstream_events::{Codec, Label, SchemaKind, Schemas, Verdict};
use riskstream_pipeline::replay as rp;
use riskstream_pipeline::WorkerConfig;

use crate::config::parse_kafka_prop;

/// The exit code when the gate fails (a candidate regressed beyond a tolerance).
pub const EXIT_GATE_FAILED: i32 = 3;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Verdicts to evaluate: a file written by `riskstream replay --output` (`.jsonl` or
    /// `.avro`). Without it (and without --verdicts-topic) the `verdicts` topic is read.
    #[arg(long, conflicts_with = "verdicts_topic")]
    pub verdicts: Option<PathBuf>,
    /// Verdicts to evaluate: a topic, read from its beginning to its end (assign(), nothing
    /// committed).
    #[arg(long)]
    pub verdicts_topic: Option<String>,
    /// Labels from a file: `.jsonl` (field names of label.avsc, kinds as symbols) or `.avro`.
    #[arg(long, conflicts_with = "labels_topic")]
    pub labels: Option<PathBuf>,
    /// Labels from this topic, read from its beginning to its end (default `labels`).
    #[arg(long)]
    pub labels_topic: Option<String>,
    /// An account label (no event id) applies to the account's events from this long before
    /// the label's time up to it (`30m`, `24h`, `7d`, or milliseconds).
    #[arg(long, default_value = "7d")]
    pub account_label_window: String,
    /// Events no label applies to: `negative` (no case, no chargeback: legitimate) or `skip`
    /// (left out of every metric).
    #[arg(long, default_value = "negative", value_parser = ["negative", "skip"])]
    pub unlabelled: String,
    /// The label kinds that count as positive for a model, `MODEL=KIND,KIND` (repeatable).
    /// Defaults: behavioral=BOT,CONFIRMED_FRAUD; ato=CONFIRMED_ATO,CHARGEBACK,CONFIRMED_FRAUD;
    /// vendor (the vendors' liveness / face-match scores)=BOT,CONFIRMED_FRAUD; any other model:
    /// every fraud kind.
    #[arg(long = "positive", value_name = "MODEL=KINDS")]
    pub positive: Vec<String>,
    /// Models directories whose manifests give each (model, version) its thresholds
    /// (challenge / review / block) for precision and recall at the thresholds (repeatable:
    /// e.g. the production directory and a candidate's).
    #[arg(long, default_value = "models")]
    pub models: Vec<PathBuf>,
    /// A baseline run to compare with (e.g. the champion's replay file): both runs are
    /// evaluated on the events they both scored, and the gate applies.
    #[arg(long, conflicts_with = "baseline_topic")]
    pub baseline: Option<PathBuf>,
    /// A baseline run on a topic (e.g. the published `verdicts`).
    #[arg(long)]
    pub baseline_topic: Option<String>,
    /// The gate's tolerances, `METRIC=TOL` or `MODEL.METRIC=TOL`, comma-separated (metrics:
    /// auc_roc, auc_pr, recall_at_1pct_fpr, precision_at_<threshold>, recall_at_<threshold>).
    /// Default with a baseline: auc_roc=0.01,auc_pr=0.02,recall_at_1pct_fpr=0.03.
    #[arg(long, conflicts_with = "gate")]
    pub max_regression: Option<String>,
    /// The gate's tolerances from a TOML file with a `[max_regression]` table.
    #[arg(long)]
    pub gate: Option<PathBuf>,
    /// Directory to write the report into (index.html, report.md, report.json, *.svg).
    #[arg(long, default_value = "eval-report")]
    pub report: PathBuf,
    /// Kafka bootstrap servers (when reading a topic).
    #[arg(long, env = "RISKSTREAM_BROKERS")]
    pub brokers: Option<String>,
    /// Extra librdkafka property `key=value` (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub kafka: Vec<String>,
    /// Schema registry URL (when the topics are registry-framed).
    #[arg(long, env = "RISKSTREAM_SCHEMA_REGISTRY")]
    pub schema_registry: Option<String>,
    /// A topic read to its end is done after this long without new records.
    #[arg(long, default_value_t = 2000)]
    pub idle_ms: u64,
}

/// Where a run's verdicts come from.
enum Source {
    File(PathBuf),
    Topic(String),
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Topic(t) => format!("topic {t}"),
        }
    }
}

struct Inputs {
    cfg: Option<WorkerConfig>,
    codec: Codec,
    idle: Duration,
}

impl Inputs {
    fn kafka(&self, what: &str) -> anyhow::Result<&WorkerConfig> {
        self.cfg
            .as_ref()
            .with_context(|| format!("reading {what} from a topic needs --brokers"))
    }

    async fn verdicts(&self, source: &Source) -> anyhow::Result<Vec<Verdict>> {
        // Only what evaluation uses is kept: a verdict's logged inputs are most of its size.
        let lean = |mut v: Verdict| {
            v.model_inputs = Vec::new();
            v.features = Vec::new();
            v.reasons = Vec::new();
            v
        };
        match source {
            Source::File(path) => Ok(read_file::<Verdict>(path, SchemaKind::Verdict)?
                .into_iter()
                .map(lean)
                .collect()),
            Source::Topic(topic) => {
                let mut out = Vec::new();
                let mut bad = 0u64;
                rp::read_topic(self.kafka("verdicts")?, topic, self.idle, |m| {
                    match self
                        .codec
                        .decode_as::<Verdict>(SchemaKind::Verdict, m.payload().unwrap_or(&[]))
                    {
                        Ok(v) => out.push(lean(v)),
                        Err(_) => bad += 1,
                    }
                })
                .await
                .map_err(|e| anyhow::anyhow!("reading {topic}: {e}"))?;
                if bad > 0 {
                    tracing::warn!(
                        topic,
                        records = bad,
                        "records that are not verdicts skipped"
                    );
                }
                Ok(out)
            }
        }
    }

    async fn labels(&self, file: Option<&Path>, topic: &str) -> anyhow::Result<Vec<Label>> {
        if let Some(path) = file {
            return read_file::<Label>(path, SchemaKind::Label);
        }
        let mut out = Vec::new();
        let mut bad = 0u64;
        rp::read_topic(self.kafka("labels")?, topic, self.idle, |m| {
            match self.codec.decode_label(m.payload().unwrap_or(&[])) {
                Ok(l) => out.push(l),
                Err(_) => bad += 1,
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("reading {topic}: {e}"))?;
        if bad > 0 {
            tracing::warn!(topic, records = bad, "undecodable labels skipped");
        }
        Ok(out)
    }
}

/// Reads a `.jsonl` file (one JSON object per line, field names of the schema) or an `.avro`
/// object container file (resolved into the current schema).
fn read_file<T: serde::de::DeserializeOwned>(
    path: &Path,
    kind: SchemaKind,
) -> anyhow::Result<Vec<T>> {
    let file = std::io::BufReader::new(
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
    );
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl") => {
            use std::io::BufRead;
            let mut out = Vec::new();
            for (i, line) in file.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                out.push(
                    serde_json::from_str(&line)
                        .with_context(|| format!("{} line {}", path.display(), i + 1))?,
                );
            }
            Ok(out)
        }
        Some("avro") => {
            let schema = Schemas::embedded().get(kind).schema;
            let reader = apache_avro::Reader::builder(file)
                .reader_schema(schema)
                .build()
                .with_context(|| format!("reading {}", path.display()))?;
            reader
                .map(|value| {
                    let value = value.with_context(|| format!("reading {}", path.display()))?;
                    apache_avro::from_value::<T>(&value)
                        .with_context(|| format!("decoding a record of {}", path.display()))
                })
                .collect()
        }
        _ => bail!("{}: the extension must be .jsonl or .avro", path.display()),
    }
}

/// (model, version) → named thresholds, from every manifest found in `dirs` (one level deep).
fn thresholds(dirs: &[PathBuf]) -> BTreeMap<(String, String), BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            tracing::warn!(dir = %dir.display(), "models directory not readable: no thresholds from it");
            continue;
        };
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path().join("manifest.json")) else {
                continue;
            };
            let Ok(m) = serde_json::from_str::<riskstream_models::Manifest>(&text) else {
                continue;
            };
            let t = &m.thresholds;
            out.insert(
                (m.name.clone(), m.version.clone()),
                [
                    ("challenge".to_string(), t.challenge as f64),
                    ("review".to_string(), t.review as f64),
                    ("block".to_string(), t.block as f64),
                ]
                .into_iter()
                .collect(),
            );
        }
    }
    out
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_string(), |x| format!("{x:.4}"))
}

/// Runs the evaluation; returns the process exit code (0, or [`EXIT_GATE_FAILED`]).
pub async fn eval(args: EvalArgs) -> anyhow::Result<i32> {
    let window_ms = parse_duration_ms(&args.account_label_window).with_context(|| {
        format!(
            "--account-label-window {}: expected e.g. 30m, 24h, 7d or milliseconds",
            args.account_label_window
        )
    })?;
    let mut positives = Positives::default();
    for p in &args.positive {
        positives.set(p)?;
    }
    let baseline_source = match (&args.baseline, &args.baseline_topic) {
        (Some(p), _) => Some(Source::File(p.clone())),
        (_, Some(t)) => Some(Source::Topic(t.clone())),
        _ => None,
    };
    let gate = match (&args.max_regression, &args.gate) {
        (Some(spec), _) => Some(Gate::parse(spec)?),
        (_, Some(file)) => Some(Gate::from_toml(
            &std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?,
        )?),
        _ => None,
    };
    if gate.is_some() && baseline_source.is_none() {
        bail!("--max-regression / --gate compare with a baseline: give --baseline or --baseline-topic");
    }
    let gate = baseline_source.as_ref().map(|_| {
        gate.unwrap_or_else(|| Gate::parse(gate::DEFAULT_GATE).expect("the default gate parses"))
    });
    let source = match (&args.verdicts, &args.verdicts_topic) {
        (Some(p), _) => Source::File(p.clone()),
        (_, Some(t)) => Source::Topic(t.clone()),
        _ => Source::Topic("verdicts".to_string()),
    };

    let cfg = match &args.brokers {
        Some(brokers) => {
            let mut cfg = WorkerConfig::new(brokers, "riskstream-eval");
            cfg.schema_registry = args.schema_registry.clone();
            cfg.kafka = args
                .kafka
                .iter()
                .map(|p| parse_kafka_prop(p))
                .collect::<anyhow::Result<_>>()?;
            Some(cfg)
        }
        None => None,
    };
    let codec = match &args.schema_registry {
        Some(url) => Codec::with_registry(url, riskstream_events::SubjectStrategy::default()),
        None => Codec::registry_free(),
    };
    let inputs = Inputs {
        cfg,
        codec,
        idle: Duration::from_millis(args.idle_ms),
    };

    let labels_topic = args.labels_topic.clone().unwrap_or_else(|| "labels".into());
    let labels = inputs.labels(args.labels.as_deref(), &labels_topic).await?;
    let labels = LabelIndex::new(labels, window_ms);
    let verdicts = inputs.verdicts(&source).await?;
    if verdicts.is_empty() {
        bail!("no verdicts in {}", source.describe());
    }
    let baseline_verdicts = match &baseline_source {
        Some(s) => Some(inputs.verdicts(s).await?),
        None => None,
    };
    let mut config = EvalConfig {
        positives,
        unlabelled: if args.unlabelled == "skip" {
            Unlabelled::Skip
        } else {
            Unlabelled::Negative
        },
        thresholds: thresholds(&args.models),
        ..EvalConfig::default()
    };
    let mut common = None;
    if let Some(b) = &baseline_verdicts {
        let ids: HashSet<&str> = verdicts.iter().map(|v| v.event_id.as_str()).collect();
        let both: HashSet<String> = b
            .iter()
            .filter(|v| ids.contains(v.event_id.as_str()))
            .map(|v| v.event_id.clone())
            .collect();
        if both.is_empty() {
            bail!("the run and its baseline have no event in common");
        }
        common = Some(both.len() as u64);
        config.only_events = Some(both);
    }
    let evaluation = evaluate(verdicts, &labels, &config);
    let baseline: Option<Evaluation> = baseline_verdicts.map(|b| evaluate(b, &labels, &config));
    let result = match (&gate, &baseline) {
        (Some(g), Some(b)) => Some(gate::check(g, &evaluation.report, &b.report)),
        _ => None,
    };
    let about = About {
        verdicts: source.describe(),
        baseline: baseline_source.as_ref().map(Source::describe),
        labels: match &args.labels {
            Some(p) => p.display().to_string(),
            None => format!("topic {labels_topic}"),
        },
        account_label_window: args.account_label_window.clone(),
        common_events: common,
    };
    render::write(
        &args.report,
        &about,
        &evaluation,
        baseline.as_ref(),
        result.as_ref(),
    )
    .with_context(|| format!("writing the report into {}", args.report.display()))?;

    // The summary on stdout.
    let r = &evaluation.report;
    println!(
        "eval: {} events ({}), {} labels ({} ignored){}",
        r.events,
        about.verdicts,
        r.labels_read,
        r.labels_ignored,
        common.map_or(String::new(), |c| format!(
            ", {c} events in common with the baseline"
        ))
    );
    println!(
        "  {:<34} {:>8} {:>6} {:>8} {:>8} {:>10}",
        "series", "events", "pos", "AUC-ROC", "AUC-PR", "rec@1%FPR"
    );
    for s in &r.series {
        println!(
            "  {:<34} {:>8} {:>6} {:>8} {:>8} {:>10}",
            s.name,
            s.overall.n,
            s.overall.positives,
            opt(s.overall.auc_roc),
            opt(s.overall.auc_pr),
            opt(s.overall.recall_at_1pct_fpr)
        );
        if let Some(b) = baseline.as_ref().and_then(|b| b.report.series(&s.name)) {
            if s.kind == SeriesKind::Champion {
                println!(
                    "  {:<34} {:>8} {:>6} {:>8} {:>8} {:>10}",
                    "  (baseline)",
                    b.overall.n,
                    b.overall.positives,
                    opt(b.overall.auc_roc),
                    opt(b.overall.auc_pr),
                    opt(b.overall.recall_at_1pct_fpr)
                );
            }
        }
    }
    println!("  report: {}", args.report.join("index.html").display());
    if let Some(g) = &result {
        if g.passed {
            println!("gate: PASSED ({} checks)", g.checks.len());
        } else {
            for c in g.failures() {
                println!(
                    "gate: FAILED {} {}: baseline {} candidate {} (max regression {})",
                    c.model,
                    c.metric,
                    opt(c.baseline),
                    opt(c.candidate),
                    c.tolerance
                );
            }
            return Ok(EXIT_GATE_FAILED);
        }
    }
    Ok(0)
}
