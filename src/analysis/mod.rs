//! Analysis of an experiment's runs: which variant won, and by how much. `analyze` writes the tables
//! (Parquet and CSV), the loss-curve plot and `report.md` to `analysis/<experiment>/`.
pub mod collect;
pub mod stats;
pub mod tables;

use crate::config::Experiment;
use crate::runner::board::flat;
use anyhow::{Context, Result};
use collect::{collect, paired, summaries, variants, RunRecord, METRICS};
use stats::Summary;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What `analyze` wrote, and the runs it left out of the statistics.
pub struct Analysis {
    pub dir: PathBuf,
    pub left_out: Vec<String>,
    /// One sentence per metric.
    pub verdicts: Vec<String>,
}

/// Whether a lower value of the metric is better.
fn lower_is_better(metric: &str) -> bool {
    metric != "images_per_sec"
}

pub fn analyze(exp: &Experiment, results_root: &Path, out_root: &Path) -> Result<Analysis> {
    let records = collect(exp, results_root);
    let configs: Vec<_> = exp.runs.iter().map(|r| flat(&r.config)).collect();
    let order = variants(&records);
    let baseline = order.first().cloned().unwrap_or_default();
    let (summary, left_out) = summaries(&records);
    let pairs = paired(&records, &baseline);
    let dir = out_root.join(&exp.name);
    tables::write(&mut tables::runs_table(&records, &configs)?, &dir, "runs")?;
    tables::write(&mut tables::summary_table(&summary)?, &dir, "summary")?;
    tables::write(&mut tables::paired_table(&pairs, &baseline)?, &dir, "paired")?;
    tables::write(&mut tables::curves_table(&records, results_root)?, &dir, "curves")?;
    let plot = loss_plot(&records, results_root, &order)?;
    crate::track::atomic_write(&dir.join("loss.png"), &plot)?;
    let verdicts = verdicts(&summary, &pairs, &order, &baseline);
    let report = report(exp, &records, &summary, &pairs, &baseline, &left_out, &verdicts)?;
    crate::track::atomic_write(&dir.join("report.md"), report.as_bytes())?;
    Ok(Analysis { dir, left_out, verdicts })
}

/// The mean training loss of each variant's finished runs against step.
fn loss_plot(records: &[RunRecord], results_root: &Path, order: &[String]) -> Result<Vec<u8>> {
    let mut series = Vec::new();
    for variant in order {
        let mut by_step: std::collections::BTreeMap<i64, (f64, usize)> = Default::default();
        for r in records.iter().filter(|r| &r.variant == variant && r.state == "done") {
            let text = std::fs::read_to_string(results_root.join("runs").join(&r.hash).join("metrics.jsonl"))
                .unwrap_or_default();
            for v in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
                if let (Some(s), Some(x)) = (v["step"].as_i64(), v["loss"].as_f64()) {
                    let e = by_step.entry(s).or_insert((0.0, 0));
                    *e = (e.0 + x, e.1 + 1);
                }
            }
        }
        let points = by_step.into_iter().map(|(s, (sum, n))| (s as f64, sum / n as f64)).collect();
        series.push(crate::plot::Series { name: variant.clone(), points });
    }
    crate::plot::line_chart_png("training loss (mean over seeds)", "step", "loss", &series, (900, 540))
}

fn find<'a>(rows: &'a [(String, String, Summary)], variant: &str, metric: &str) -> Option<&'a Summary> {
    rows.iter().find(|(v, m, _)| v == variant && m == metric).map(|r| &r.2)
}

/// "fid: best schedule=cosine (mean 41.2); against the baseline schedule=linear its paired difference
/// −3.1 [−5.0, −1.2] excludes zero."
fn verdicts(
    summary: &[(String, String, Summary)],
    pairs: &[(String, String, Summary)],
    order: &[String],
    baseline: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for metric in METRICS.iter().filter(|m| !["images_per_sec", "wall_seconds"].contains(m)) {
        let candidates: Vec<(&String, f64)> =
            order.iter().filter_map(|v| find(summary, v, metric).map(|s| (v, s.mean))).collect();
        let Some(&(best, mean)) = candidates.iter().min_by(|a, b| {
            let (x, y) = if lower_is_better(metric) { (a.1, b.1) } else { (b.1, a.1) };
            x.total_cmp(&y)
        }) else {
            continue;
        };
        let mut sentence = format!("`{metric}`: best `{best}` (mean {mean:.5})");
        if best != baseline {
            match find(pairs, best, metric) {
                Some(d) if d.ci_low.is_finite() => {
                    let excludes = d.ci_low > 0.0 || d.ci_high < 0.0;
                    let _ = write!(
                        sentence,
                        "; paired difference against the baseline `{baseline}` {:.5} [{:.5}, {:.5}] over {} seed(s) {}",
                        d.mean,
                        d.ci_low,
                        d.ci_high,
                        d.n,
                        if excludes { "excludes zero" } else { "includes zero: not a demonstrated difference" }
                    );
                }
                Some(d) => {
                    let _ = write!(
                        sentence,
                        "; paired difference against the baseline `{baseline}` {:.5} from {} seed: no interval \
                         (run more seeds to call it)",
                        d.mean, d.n
                    );
                }
                None => sentence.push_str("; no run shares a seed with the baseline"),
            }
        } else {
            sentence.push_str(" (the baseline)");
        }
        sentence.push('.');
        out.push(sentence);
    }
    out
}

fn markdown_rows(rows: &[(String, String, Summary)]) -> String {
    let mut s = String::from("| variant | metric | n | mean | std | 95% CI |\n|---|---|---|---|---|---|\n");
    for (v, m, x) in rows {
        let ci = if x.ci_low.is_finite() { format!("[{:.5}, {:.5}]", x.ci_low, x.ci_high) } else { "-".into() };
        let std = if x.std.is_finite() { format!("{:.5}", x.std) } else { "-".into() };
        let _ = writeln!(s, "| {v} | {m} | {} | {:.5} | {std} | {ci} |", x.n, x.mean);
    }
    s
}

fn report(
    exp: &Experiment,
    records: &[RunRecord],
    summary: &[(String, String, Summary)],
    pairs: &[(String, String, Summary)],
    baseline: &str,
    left_out: &[String],
    verdicts: &[String],
) -> Result<String> {
    let file = std::fs::read_to_string(&exp.path).with_context(|| format!("cannot read {}", exp.path.display()))?;
    let git = crate::track::run_dir::git_state();
    let commit = git.get("commit").and_then(|c| c.as_str()).unwrap_or("unknown").to_string();
    let dirty = git.get("dirty").and_then(|d| d.as_bool()).unwrap_or(false);
    let mut r = format!("# Analysis of `{}`\n\n", exp.name);
    if let Some(d) = &exp.description {
        let _ = writeln!(r, "{d}\n");
    }
    let _ = writeln!(r, "Code: commit `{commit}`{}.\n", if dirty { " with uncommitted changes" } else { "" });
    r.push_str("## Verdicts\n\n");
    for v in verdicts {
        let _ = writeln!(r, "- {v}");
    }
    if !left_out.is_empty() {
        let _ = writeln!(r, "\nLeft out of the statistics (not done): {}.", left_out.join(", "));
    }
    r.push_str("\n## Runs\n\n| run | hash | state | ");
    r.push_str(&METRICS.join(" | "));
    r.push_str(" |\n|---|---|---|");
    r.push_str(&"---|".repeat(METRICS.len()));
    r.push('\n');
    for rec in records {
        let _ = write!(r, "| {} | `{}` | {} |", rec.label, rec.hash, rec.state);
        for m in METRICS {
            let _ = write!(r, " {} |", rec.metrics.get(m).map_or("-".into(), |v| format!("{v:.5}")));
        }
        r.push('\n');
    }
    let _ = write!(r, "\n## Summary per variant\n\n{}", markdown_rows(summary));
    let _ = write!(r, "\n## Paired differences against `{baseline}` (same seed)\n\n{}", markdown_rows(pairs));
    r.push_str("\n## Training loss\n\n![training loss](loss.png)\n");
    let _ = write!(r, "\n## Experiment file `{}`\n\n```toml\n{}\n```\n", exp.path.display(), file.trim_end());
    Ok(r)
}
