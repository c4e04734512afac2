//! Analysis of an experiment's runs: which variant won, and by how much. `analyze` writes the tables
//! (Parquet and CSV), the plots (PNG and SVG) and `report.md` to `analysis/<experiment>/`.
pub mod collect;
pub mod plots;
pub mod stats;
pub mod tables;

use crate::eval::metric::{self, Role};
use crate::experiment::Experiment;
use crate::runner::board::flat;
use anyhow::{Context, Result};
use collect::{collect, metric_names, paired, summaries, variants, RunRecord};
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

pub fn analyze(exp: &Experiment, results_root: &Path, out_root: &Path) -> Result<Analysis> {
    let records = collect(exp, results_root);
    let configs: Vec<_> = exp.runs.iter().map(|r| flat(&r.config)).collect();
    let order = variants(&records);
    let baseline = exp.baseline.clone().or_else(|| order.first().cloned()).unwrap_or_default();
    let (summary, left_out) = summaries(&records);
    let pairs = paired(&records, &baseline);
    let dir = out_root.join(&exp.name);
    tables::write(&mut tables::runs_table(&records, &configs)?, &dir, "runs")?;
    tables::write(&mut tables::summary_table(&summary)?, &dir, "summary")?;
    tables::write(&mut tables::paired_table(&pairs, &baseline)?, &dir, "paired")?;
    tables::write(&mut tables::curves_table(&records)?, &dir, "curves")?;
    tables::write(&mut tables::per_t_table(&records)?, &dir, "per_t")?;

    let log_y = exp.loss_log_scale;
    let mut figures: Vec<(&str, &str)> = Vec::new();
    plots::loss_curves(&records, &order, log_y)?.save(&dir, "loss")?;
    figures.push(("Training loss", "loss"));
    if let Some(f) = plots::metric_intervals(&records, &summary, &order)? {
        f.save(&dir, "metrics")?;
        figures.push(("Final metrics with 95% intervals", "metrics"));
    }
    if let Some((loss, bits)) = plots::per_t_charts(&records, &order, log_y)? {
        loss.save(&dir, "loss_vs_log_snr")?;
        bits.save(&dir, "bound_vs_log_snr")?;
        figures.push(("Training loss against log-SNR", "loss_vs_log_snr"));
        figures.push(("Bound terms against log-SNR", "bound_vs_log_snr"));
    }
    for (stem, caption, figure) in plots::em_curves(&records, &order)? {
        figure.save(&dir, stem)?;
        figures.push((caption, stem));
    }
    plots::schedules(exp)?.save(&dir, "schedules")?;
    figures.push(("Noise schedules", "schedules"));
    if let Some((steps, time)) = plots::sampler_charts(exp, &records)? {
        steps.save(&dir, "fid_vs_steps")?;
        time.save(&dir, "fid_vs_time")?;
        figures.push(("FID against sampling steps", "fid_vs_steps"));
        figures.push(("FID against sampling time", "fid_vs_time"));
    }
    let samples = plots::sample_grids(&records, &order)?;
    if let Some(png) = &samples {
        crate::track::atomic_write(&dir.join("samples.png"), png)?;
    }

    // The diff of a dirty working tree the runs were trained from, so that they can be reproduced.
    let patch = records
        .iter()
        .filter(|r| r.state == "done" && r.git_dirty == Some(true))
        .find_map(|r| std::fs::read(results_root.join("runs").join(&r.hash).join("code.patch")).ok());
    match patch {
        Some(p) => crate::track::atomic_write(&dir.join("code.patch"), &p)?,
        None => {
            let _ = std::fs::remove_file(dir.join("code.patch"));
        }
    }

    let verdicts = verdicts(&summary, &pairs, &order, &baseline);
    let report = Report { exp, records: &records, summary: &summary, pairs: &pairs, baseline: &baseline };
    let text = report.render(&left_out, &verdicts, &figures, samples.is_some())?;
    crate::track::atomic_write(&dir.join("report.md"), text.as_bytes())?;
    Ok(Analysis { dir, left_out, verdicts })
}

fn find<'a>(rows: &'a [(String, String, Summary)], variant: &str, metric: &str) -> Option<&'a Summary> {
    rows.iter().find(|(v, m, _)| v == variant && m == metric).map(|r| &r.2)
}

/// The paired difference `variant` − baseline of a metric, in words: its mean, interval and whether
/// the interval excludes zero.
fn difference_in_words(pairs: &[(String, String, Summary)], variant: &str, metric: &str, baseline: &str) -> String {
    match find(pairs, variant, metric) {
        Some(d) if d.ci_low.is_finite() => {
            let excludes = d.ci_low > 0.0 || d.ci_high < 0.0;
            format!(
                "paired difference `{variant}` − `{baseline}` {:.5} [{:.5}, {:.5}] over {} seed(s) {}",
                d.mean,
                d.ci_low,
                d.ci_high,
                d.n,
                if excludes { "excludes zero" } else { "includes zero: not a demonstrated difference" }
            )
        }
        Some(d) => format!(
            "paired difference `{variant}` − `{baseline}` {:.5} from {} seed: no interval (run more seeds to call it)",
            d.mean, d.n
        ),
        None => format!("no run of `{variant}` shares a seed with the baseline `{baseline}`"),
    }
}

/// One sentence per metric: the best variant by mean, and its seed-paired difference against the
/// baseline (or, when the baseline is best, the runner-up's), e.g. "`fid`: best `schedule=cosine`
/// (mean 41.2); paired difference `schedule=cosine` − `schedule=linear` −3.1 [−5.0, −1.2] over 3
/// seed(s) excludes zero."
fn verdicts(
    summary: &[(String, String, Summary)],
    pairs: &[(String, String, Summary)],
    order: &[String],
    baseline: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    // The model's numbers are ranked; the floors and ceilings of real images and the timings are not.
    for m in metric::all().into_iter().filter(|m| m.role == Role::Model) {
        let metric = m.name;
        let mut ranked: Vec<(&String, f64)> =
            order.iter().filter_map(|v| find(summary, v, metric).map(|s| (v, s.mean))).collect();
        ranked.sort_by(|a, b| if m.lower_is_better() { a.1.total_cmp(&b.1) } else { b.1.total_cmp(&a.1) });
        let Some(&(best, mean)) = ranked.first() else { continue };
        if ranked.len() > 1 && ranked.iter().all(|r| r.1 == mean) {
            // The same in every variant: variants that share their training (they differ only in
            // `[eval]`) have nothing to compare in its metrics.
            continue;
        }
        let mut sentence = format!("`{metric}`: best `{best}` (mean {mean:.5})");
        if best != baseline {
            let _ = write!(sentence, "; {}", difference_in_words(pairs, best, metric, baseline));
        } else if let Some(&(second, _)) = ranked.get(1) {
            let _ =
                write!(sentence, ", the baseline; runner-up {}", difference_in_words(pairs, second, metric, baseline));
        } else {
            sentence.push_str(", the baseline; no other variant has this metric");
        }
        // FID, KID and the classifier FID of n samples are biased up by n: the same metric of n
        // held-out real images against the same reference is what the value is read against.
        if let Some(floor) = find(summary, best, &format!("{metric}_floor")) {
            let _ = write!(sentence, " (floor {:.5}: held-out real images under the same spec)", floor.mean);
        }
        if let Some(real) = find(summary, best, &format!("{metric}_real")) {
            let _ = write!(sentence, " (real images: {:.5})", real.mean);
        }
        for b in metric::all().into_iter().filter(|b| b.role == Role::Baseline && b.reference_of == Some(metric)) {
            if let Some(v) = find(summary, best, b.name) {
                let _ = write!(sentence, " ({}: {:.5} on the same images and seeds)", b.title, v.mean);
            }
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

/// What the report is written from.
struct Report<'a> {
    exp: &'a Experiment,
    records: &'a [RunRecord],
    summary: &'a [(String, String, Summary)],
    pairs: &'a [(String, String, Summary)],
    baseline: &'a str,
}

impl Report<'_> {
    fn render(
        &self,
        left_out: &[String],
        verdicts: &[String],
        figures: &[(&str, &str)],
        samples: bool,
    ) -> Result<String> {
        let Report { exp, records, summary, pairs, baseline } = *self;
        let file = std::fs::read_to_string(&exp.path).with_context(|| format!("cannot read {}", exp.path.display()))?;
        let git = crate::track::run_dir::git_state();
        let commit = git.get("commit").and_then(|c| c.as_str()).unwrap_or("unknown").to_string();
        let dirty = git.get("dirty").and_then(|d| d.as_bool()).unwrap_or(false);
        let mut r = format!("# Analysis of `{}`\n\n", exp.name);
        if let Some(d) = &exp.description {
            let _ = writeln!(r, "{d}\n");
        }
        let mut trained: Vec<String> = Vec::new();
        for rec in records.iter().filter(|r| r.git_commit.is_some()) {
            let c = format!(
                "`{}`{}",
                rec.git_commit.as_deref().unwrap_or_default(),
                if rec.git_dirty == Some(true) { " with uncommitted changes (see `code.patch`)" } else { "" }
            );
            if !trained.contains(&c) {
                trained.push(c);
            }
        }
        if !trained.is_empty() {
            let _ = writeln!(r, "Runs trained from commit {}.", trained.join(", "));
        }
        let _ = writeln!(r, "Analysed at commit `{commit}`{}.\n", if dirty { " with uncommitted changes" } else { "" });
        r.push_str("## Verdicts\n\n");
        for v in verdicts {
            let _ = writeln!(r, "- {v}");
        }
        if !left_out.is_empty() {
            let _ = writeln!(r, "\nLeft out of the statistics (not done): {}.", left_out.join(", "));
        }
        r.push_str("\n## Runs\n\n| run | hash | state | ");
        // The metrics some run has (a clustering's scores only in a clustering experiment).
        let names: Vec<&str> =
            metric_names().into_iter().filter(|m| records.iter().any(|r| r.metrics.contains_key(*m))).collect();
        r.push_str(&names.join(" | "));
        r.push_str(" |\n|---|---|---|");
        r.push_str(&"---|".repeat(names.len()));
        r.push('\n');
        for rec in records {
            let _ = write!(r, "| {} | `{}` | {} |", rec.label, rec.hash, rec.state);
            for m in &names {
                let _ = write!(r, " {} |", rec.metrics.get(*m).map_or("-".into(), |v| format!("{v:.5}")));
            }
            r.push('\n');
        }
        let _ = write!(r, "\n## Summary per variant\n\n{}", markdown_rows(summary));
        let _ = write!(r, "\n## Paired differences against `{baseline}` (same seed)\n\n{}", markdown_rows(pairs));
        for (title, stem) in figures {
            let _ = write!(r, "\n## {title}\n\n![{title}]({stem}.png)\n\n([SVG]({stem}.svg))\n");
        }
        if samples {
            r.push_str("\n## Samples at the same seed\n\n![samples of each variant](samples.png)\n");
        }
        let _ = write!(r, "\n## Experiment file `{}`\n\n```toml\n{}\n```\n", exp.path.display(), file.trim_end());
        Ok(r)
    }
}
