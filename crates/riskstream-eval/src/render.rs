//! The report people read: `index.html` and `report.md` (the same sections), `report.json`
//! (the [`Report`]s and the gate), and SVG plots drawn with plotters — ROC and
//! precision-recall curves of every series (the baseline's champions dashed), a score
//! histogram by truth per series, and calibration.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde::Serialize;

use crate::gate::GateResult;
use crate::metrics::{pr_curve, roc_curve};
use crate::report::{Evaluation, Metrics, Report, SeriesKind, DIMENSIONS};

/// What the report is about, for its header.
#[derive(Debug, Clone, Default, Serialize)]
pub struct About {
    /// Where the verdicts came from (a file or a topic).
    pub verdicts: String,
    /// Where the baseline's verdicts came from, if any.
    pub baseline: Option<String>,
    /// Where the labels came from.
    pub labels: String,
    /// The account-label window, human-readable.
    pub account_label_window: String,
    /// With a baseline: the events both runs scored (all metrics are on these).
    pub common_events: Option<u64>,
}

/// A report section element, rendered to both Markdown and HTML.
enum Block {
    H2(String),
    H3(String),
    P(String),
    Table {
        head: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    Img {
        src: String,
        alt: String,
    },
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_string(), |x| format!("{x:.4}"))
}

fn delta(c: Option<f64>, b: Option<f64>) -> String {
    match (c, b) {
        (Some(c), Some(b)) => format!("{:+.4}", c - b),
        _ => "–".to_string(),
    }
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// Writes the report into `dir` (created if needed); returns the files written.
pub fn write(
    dir: &Path,
    about: &About,
    eval: &Evaluation,
    baseline: Option<&Evaluation>,
    gate: Option<&GateResult>,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    let r = &eval.report;

    // Plots.
    let roc = dir.join("roc.svg");
    curve_plot(
        &roc,
        "ROC",
        ("false-positive rate", "true-positive rate"),
        eval,
        baseline,
        roc_curve,
    )
    .map_err(std::io::Error::other)?;
    files.push(roc);
    let pr = dir.join("pr.svg");
    curve_plot(
        &pr,
        "Precision-recall",
        ("recall", "precision"),
        eval,
        baseline,
        pr_curve,
    )
    .map_err(std::io::Error::other)?;
    files.push(pr);
    let cal = dir.join("calibration.svg");
    calibration_plot(&cal, r).map_err(std::io::Error::other)?;
    files.push(cal);
    let mut histograms = Vec::new();
    for (name, pairs) in &eval.pairs {
        let file = format!("hist-{}.svg", slug(name));
        histogram_plot(&dir.join(&file), name, pairs).map_err(std::io::Error::other)?;
        files.push(dir.join(&file));
        histograms.push((name.clone(), file));
    }

    // Sections.
    let mut doc: Vec<Block> = Vec::new();
    let mut intro = format!(
        "Verdicts: `{}`. Labels: `{}`. {} events evaluated ({} further verdicts of the same \
         events ignored: the first counts). Account labels apply to the account's events up to \
         {} before the label. Unlabelled events: {}. Positive label kinds: {}.",
        about.verdicts,
        about.labels,
        r.events,
        r.duplicate_verdicts,
        about.account_label_window,
        if r.unlabelled == "negative" {
            "negatives"
        } else {
            "left out"
        },
        r.positives
            .iter()
            .map(|(m, k)| format!("{m}: {}", k.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    );
    if let Some(b) = &about.baseline {
        let _ = write!(
            intro,
            " Baseline: `{b}`; both runs are evaluated on the {} events they both scored.",
            about.common_events.unwrap_or(0)
        );
    }
    doc.push(Block::P(intro));

    if let Some(g) = gate {
        doc.push(Block::H2(format!(
            "Gate: {}",
            if g.passed { "PASSED" } else { "FAILED" }
        )));
        let failed: Vec<String> = g
            .failures()
            .map(|c| format!("{} {}", c.model, c.metric))
            .collect();
        if !failed.is_empty() {
            doc.push(Block::P(format!("Regressed: {}.", failed.join(", "))));
        }
        doc.push(Block::Table {
            head: [
                "model",
                "metric",
                "baseline",
                "candidate",
                "change",
                "max regression",
                "result",
            ]
            .map(String::from)
            .to_vec(),
            rows: g
                .checks
                .iter()
                .map(|c| {
                    vec![
                        c.model.clone(),
                        c.metric.clone(),
                        opt(c.baseline),
                        opt(c.candidate),
                        delta(c.candidate, c.baseline),
                        format!("{:.4}", c.tolerance),
                        if c.passed { "pass" } else { "**FAIL**" }.to_string(),
                    ]
                })
                .collect(),
        });
    }

    doc.push(Block::H2("Models and vendors".into()));
    let mut head: Vec<String> = [
        "series",
        "kind",
        "versions",
        "events",
        "positives",
        "AUC-ROC",
        "AUC-PR",
        "recall @ 1% FPR",
        "threshold @ 1% FPR",
    ]
    .map(String::from)
    .to_vec();
    if baseline.is_some() {
        head.extend(
            [
                "baseline AUC-ROC",
                "baseline AUC-PR",
                "baseline recall @ 1% FPR",
            ]
            .map(String::from),
        );
    }
    let rows = r
        .series
        .iter()
        .map(|s| {
            let mut row = vec![
                s.name.clone(),
                s.kind.as_str().to_string(),
                s.versions.join(", "),
                s.overall.n.to_string(),
                s.overall.positives.to_string(),
                opt(s.overall.auc_roc),
                opt(s.overall.auc_pr),
                opt(s.overall.recall_at_1pct_fpr),
                opt(s.overall.threshold_at_1pct_fpr),
            ];
            if let Some(b) = baseline {
                let bs = b.report.series(&s.name);
                row.extend([
                    opt(bs.and_then(|b| b.overall.auc_roc)),
                    opt(bs.and_then(|b| b.overall.auc_pr)),
                    opt(bs.and_then(|b| b.overall.recall_at_1pct_fpr)),
                ]);
            }
            row
        })
        .collect();
    doc.push(Block::Table { head, rows });
    doc.push(Block::Img {
        src: "roc.svg".into(),
        alt: "ROC curves".into(),
    });
    doc.push(Block::Img {
        src: "pr.svg".into(),
        alt: "precision-recall curves".into(),
    });
    doc.push(Block::Img {
        src: "calibration.svg".into(),
        alt: "calibration".into(),
    });

    if !r.vendors.is_empty() {
        doc.push(Block::H2("Vendors on our labels".into()));
        doc.push(Block::P(
            "Each vendor's sessions, scored by the vendor (liveness and face match, as risk: 1 − \
             score) and by our models."
                .into(),
        ));
        doc.push(Block::Table {
            head: [
                "vendor",
                "series",
                "sessions",
                "positives",
                "AUC-ROC",
                "AUC-PR",
                "recall @ 1% FPR",
            ]
            .map(String::from)
            .to_vec(),
            rows: r
                .vendors
                .iter()
                .flat_map(|v| {
                    v.series.iter().map(move |(name, m)| {
                        let mut row = vec![v.vendor.clone(), name.clone()];
                        row.extend(metric_cells(m));
                        row
                    })
                })
                .collect(),
        });
    }

    for s in &r.series {
        doc.push(Block::H2(format!("{} ({})", s.name, s.kind.as_str())));
        if !s.at_thresholds.is_empty() {
            doc.push(Block::H3("At the model's thresholds".into()));
            doc.push(Block::Table {
                head: [
                    "threshold",
                    "score ≥",
                    "flagged",
                    "precision",
                    "recall",
                    "false-positive rate",
                ]
                .map(String::from)
                .to_vec(),
                rows: s
                    .at_thresholds
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            format!("{:.4}", t.threshold),
                            t.flagged.to_string(),
                            format!("{:.4}", t.precision),
                            format!("{:.4}", t.recall),
                            format!("{:.5}", t.false_positive_rate),
                        ]
                    })
                    .collect(),
            });
        }
        if !s.decisions.is_empty() {
            doc.push(Block::H3("Decisions by truth".into()));
            doc.push(Block::Table {
                head: ["decision", "positives", "negatives"]
                    .map(String::from)
                    .to_vec(),
                rows: s
                    .decisions
                    .iter()
                    .map(|d| {
                        vec![
                            d.decision.clone(),
                            d.positives.to_string(),
                            d.negatives.to_string(),
                        ]
                    })
                    .collect(),
            });
        }
        for dim in DIMENSIONS {
            let Some(rows) = s.slices.get(dim) else {
                continue;
            };
            doc.push(Block::H3(format!("By {}", dim.replace('_', " "))));
            let champion = s.kind == SeriesKind::Champion;
            let mut head: Vec<String> = [
                dim,
                "events",
                "positives",
                "AUC-ROC",
                "AUC-PR",
                "recall @ 1% FPR",
            ]
            .map(String::from)
            .to_vec();
            if champion {
                head.extend(
                    ["not allowed", "not-allowed precision", "not-allowed recall"]
                        .map(String::from),
                );
            }
            doc.push(Block::Table {
                head,
                rows: rows
                    .iter()
                    .map(|row| {
                        let mut cells = vec![row.value.clone()];
                        cells.extend(metric_cells(&row.metrics));
                        if champion {
                            cells.extend([
                                opt(row.not_allowed_share),
                                opt(row.not_allowed_precision),
                                opt(row.not_allowed_recall),
                            ]);
                        }
                        cells
                    })
                    .collect(),
            });
        }
        doc.push(Block::H3("Calibration".into()));
        doc.push(Block::Table {
            head: ["score bin", "events", "mean score", "positive rate"]
                .map(String::from)
                .to_vec(),
            rows: s
                .calibration
                .iter()
                .map(|b| {
                    vec![
                        format!("[{:.1}, {:.1})", b.lo, b.hi),
                        b.count.to_string(),
                        format!("{:.4}", b.mean_score),
                        format!("{:.4}", b.positive_rate),
                    ]
                })
                .collect(),
        });
        if let Some((_, file)) = histograms.iter().find(|(n, _)| *n == s.name) {
            doc.push(Block::Img {
                src: file.clone(),
                alt: format!("score histogram of {} by truth", s.name),
            });
        }
    }

    let title = "riskstream eval";
    let md = dir.join("report.md");
    std::fs::write(&md, markdown(title, &doc))?;
    files.push(md);
    let html = dir.join("index.html");
    std::fs::write(&html, html_page(title, &doc))?;
    files.push(html);
    let json = dir.join("report.json");
    #[derive(Serialize)]
    struct Json<'a> {
        about: &'a About,
        report: &'a Report,
        baseline: Option<&'a Report>,
        gate: Option<&'a GateResult>,
    }
    std::fs::write(
        &json,
        serde_json::to_vec_pretty(&Json {
            about,
            report: r,
            baseline: baseline.map(|b| &b.report),
            gate,
        })
        .map_err(std::io::Error::other)?,
    )?;
    files.push(json);
    Ok(files)
}

fn metric_cells(m: &Metrics) -> [String; 5] {
    [
        m.n.to_string(),
        m.positives.to_string(),
        opt(m.auc_roc),
        opt(m.auc_pr),
        opt(m.recall_at_1pct_fpr),
    ]
}

fn markdown(title: &str, doc: &[Block]) -> String {
    let mut out = format!("# {title}\n\n");
    let cell = |s: &str| s.replace('|', "\\|");
    for b in doc {
        match b {
            Block::H2(t) => {
                let _ = writeln!(out, "## {t}\n");
            }
            Block::H3(t) => {
                let _ = writeln!(out, "### {t}\n");
            }
            Block::P(t) => {
                let _ = writeln!(out, "{t}\n");
            }
            Block::Table { head, rows } => {
                let _ = writeln!(
                    out,
                    "| {} |",
                    head.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | ")
                );
                let _ = writeln!(out, "|{}", "---|".repeat(head.len()));
                for r in rows {
                    let _ = writeln!(
                        out,
                        "| {} |",
                        r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
                    );
                }
                out.push('\n');
            }
            Block::Img { src, alt } => {
                let _ = writeln!(out, "![{alt}]({src})\n");
            }
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Minimal inline Markdown for HTML: `code` and **bold**.
fn inline(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in esc(s).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            for (j, p) in part.split("**").enumerate() {
                if j % 2 == 1 {
                    let _ = write!(out, "<strong>{p}</strong>");
                } else {
                    out.push_str(p);
                }
            }
        }
    }
    out
}

fn html_page(title: &str, doc: &[Block]) -> String {
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
         body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}}\
         table{{border-collapse:collapse;margin:0.5em 0 1.5em}}th,td{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}img{{max-width:100%;margin:0.5em 0}}\
         h2{{border-bottom:1px solid #ddd;margin-top:2em}}</style></head><body>\n<h1>{t}</h1>\n",
        t = esc(title)
    );
    for b in doc {
        match b {
            Block::H2(t) => {
                let _ = writeln!(out, "<h2>{}</h2>", inline(t));
            }
            Block::H3(t) => {
                let _ = writeln!(out, "<h3>{}</h3>", inline(t));
            }
            Block::P(t) => {
                let _ = writeln!(out, "<p>{}</p>", inline(t));
            }
            Block::Table { head, rows } => {
                out.push_str("<table><tr>");
                for h in head {
                    let _ = write!(out, "<th>{}</th>", inline(h));
                }
                out.push_str("</tr>\n");
                for r in rows {
                    out.push_str("<tr>");
                    for c in r {
                        let _ = write!(out, "<td>{}</td>", inline(c));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</table>\n");
            }
            Block::Img { src, alt } => {
                let _ = writeln!(out, "<img src=\"{}\" alt=\"{}\">", esc(src), esc(alt));
            }
        }
    }
    out.push_str("</body></html>\n");
    out
}

/// At most `max` points of a curve (every k-th and the last).
fn thin(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max {
        return points;
    }
    let k = points.len().div_ceil(max);
    let last = points[points.len() - 1];
    let mut out: Vec<(f64, f64)> = points.into_iter().step_by(k).collect();
    out.push(last);
    out
}

/// A curve of `(score, positive)` pairs, e.g. [`roc_curve`].
type Curve = fn(&[(f64, bool)]) -> Vec<(f64, f64)>;

type PlotResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn boxed<E: std::fmt::Display>(e: E) -> Box<dyn std::error::Error + Send + Sync> {
    e.to_string().into()
}

/// The chart [`plot`] hands its `draw` callback: [0, 1] × [0, y_max].
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One SVG chart: the frame, caption and mesh, what `draw` adds, the legend.
fn plot(
    path: &Path,
    size: (u32, u32),
    title: &str,
    (x, y): (&str, &str),
    y_max: f64,
    legend: SeriesLabelPosition,
    draw: impl FnOnce(&mut Chart<'_, '_>) -> PlotResult,
) -> PlotResult {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(boxed)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..y_max)
        .map_err(boxed)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(238, 238, 238))
        .x_desc(x)
        .y_desc(y)
        .draw()
        .map_err(boxed)?;
    draw(&mut chart)?;
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(boxed)?;
    root.present().map_err(boxed)?;
    Ok(())
}

/// A line's legend mark.
fn line_mark(color: RGBAColor, width: u32) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
}

fn curve_plot(
    path: &Path,
    title: &str,
    axes: (&str, &str),
    eval: &Evaluation,
    baseline: Option<&Evaluation>,
    curve: Curve,
) -> PlotResult {
    plot(
        path,
        (760, 560),
        title,
        axes,
        1.01,
        SeriesLabelPosition::LowerRight,
        |chart| {
            for (i, s) in eval.report.series.iter().enumerate() {
                let Some(pairs) = eval.pairs.get(&s.name) else {
                    continue;
                };
                let points = thin(curve(pairs), 800);
                if points.is_empty() {
                    continue;
                }
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))
                    .map_err(boxed)?
                    .label(s.name.clone())
                    .legend(line_mark(color, 2));
                // The baseline's champion, dashed in the same colour.
                let Some(bp) = baseline
                    .filter(|_| s.kind == SeriesKind::Champion)
                    .and_then(|b| b.pairs.get(&s.name))
                else {
                    continue;
                };
                chart
                    .draw_series(DashedLineSeries::new(
                        thin(curve(bp), 800),
                        6,
                        4,
                        color.stroke_width(1),
                    ))
                    .map_err(boxed)?
                    .label(format!("{} (baseline)", s.name))
                    .legend(line_mark(color, 1));
            }
            Ok(())
        },
    )
}

fn histogram_plot(path: &Path, name: &str, pairs: &[(f64, bool)]) -> PlotResult {
    const BINS: usize = 20;
    let mut counts = [[0u64; BINS]; 2];
    for (s, y) in pairs {
        let i = ((s.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1);
        counts[*y as usize][i] += 1;
    }
    let totals = counts.map(|c| c.iter().sum::<u64>());
    let share = |c: usize, i: usize| counts[c][i] as f64 / totals[c].max(1) as f64;
    let top = (0..BINS)
        .flat_map(|i| [share(0, i), share(1, i)])
        .fold(0.0f64, f64::max)
        .max(0.01);
    let title = format!("{name}: scores by truth");
    let axes = ("score", "share of the class");
    plot(
        path,
        (760, 400),
        &title,
        axes,
        top * 1.05,
        SeriesLabelPosition::UpperMiddle,
        |chart| {
            let w = 1.0 / BINS as f64;
            for (class, color, label) in [(0usize, BLUE, "negatives"), (1usize, RED, "positives")] {
                chart
                    .draw_series((0..BINS).map(|i| {
                        let x0 = i as f64 * w;
                        Rectangle::new(
                            [(x0, 0.0), (x0 + w, share(class, i))],
                            color.mix(0.45).filled(),
                        )
                    }))
                    .map_err(boxed)?
                    .label(format!("{label} ({})", totals[class]))
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.mix(0.45).filled())
                    });
            }
            Ok(())
        },
    )
}

fn calibration_plot(path: &Path, r: &Report) -> PlotResult {
    let axes = ("mean score in bin", "positive rate in bin");
    plot(
        path,
        (760, 560),
        "Calibration",
        axes,
        1.01,
        SeriesLabelPosition::UpperLeft,
        |chart| {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, 0.0), (1.0, 1.0)],
                    4,
                    4,
                    BLACK.mix(0.4).stroke_width(1),
                ))
                .map_err(boxed)?;
            for (i, s) in r.series.iter().enumerate() {
                if s.calibration.is_empty() {
                    continue;
                }
                let color = Palette99::pick(i).to_rgba();
                let points: Vec<(f64, f64)> = s
                    .calibration
                    .iter()
                    .map(|b| (b.mean_score, b.positive_rate))
                    .collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .map_err(boxed)?
                    .label(s.name.clone())
                    .legend(line_mark(color, 2));
                chart
                    .draw_series(
                        points
                            .into_iter()
                            .map(|p| Circle::new(p, 3, color.filled())),
                    )
                    .map_err(boxed)?;
            }
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{check, Gate};
    use crate::report::{evaluate, tests::verdict, EvalConfig};
    use crate::truth::LabelIndex;
    use riskstream_events::{Decision, Label, LabelKind};

    #[test]
    fn the_report_has_its_sections_tables_and_plots() {
        let verdicts: Vec<_> = (0..40)
            .map(|i| {
                let model = if i % 2 == 0 { "ato" } else { "behavioral" };
                verdict(
                    &format!("e{i}"),
                    model,
                    (i % 10) as f64 / 10.0,
                    Decision::Allow,
                )
            })
            .collect();
        let labels = LabelIndex::new(
            (0..40).filter(|i| i % 10 >= 7).map(|i| Label {
                event_id: Some(format!("e{i}")),
                account_id: None,
                kind: if i % 2 == 0 {
                    LabelKind::ConfirmedAto
                } else {
                    LabelKind::Bot
                },
                source: "t".into(),
                label_time: 0,
            }),
            0,
        );
        let eval = evaluate(verdicts.clone(), &labels, &EvalConfig::default());
        let worse = evaluate(
            verdicts.into_iter().map(|mut v| {
                v.scores[0].score = 1.0 - v.scores[0].score;
                v
            }),
            &labels,
            &EvalConfig::default(),
        );
        let gate = check(
            &Gate::parse("auc_roc=0.01").unwrap(),
            &worse.report,
            &eval.report,
        );
        let dir = tempfile::tempdir().unwrap();
        let files = write(
            dir.path(),
            &About::default(),
            &worse,
            Some(&eval),
            Some(&gate),
        )
        .unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "roc.svg",
            "pr.svg",
            "calibration.svg",
            "hist-ato.svg",
            "index.html",
            "report.md",
            "report.json",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        let svg = std::fs::read_to_string(dir.path().join("roc.svg")).unwrap();
        assert!(
            svg.contains("<svg") && (svg.contains("<polyline") || svg.contains("<path")),
            "a drawn curve"
        );
        assert!(
            svg.contains("ato (baseline)"),
            "the baseline's curve is in the legend"
        );
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("## Gate: FAILED"), "{md}");
        assert!(
            md.contains("Regressed: ato auc_roc, behavioral auc_roc."),
            "{md}"
        );
        assert!(md.contains("### By region") && md.contains("## Vendors on our labels"));
        let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
        assert!(html.contains("<img src=\"roc.svg\"") && html.contains("<strong>FAIL</strong>"));
    }
}
