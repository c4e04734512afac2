//! Analysis of an experiment's runs: which variant won, and by how much. `analyze` writes the tables
//! (Parquet and CSV), the plots (PNG and SVG) and `report.md` to `analysis/<experiment>/`.
pub mod collect;
pub mod decide;
pub mod plots;
pub mod sequential;
pub mod stats;
pub mod tables;
pub mod variance;
pub mod verdict;

use crate::eval::metric::{self, Role};
use crate::experiment::{Experiment, Question};
use crate::track::hparams::flat;
use crate::track::run_dir::{Artifact, RunDir};
use anyhow::{Context, Result};
use collect::{collect, metric_names, paired, summaries, variants, RunRecord};
use stats::Summary;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use variance::Decomposition;
use verdict::{p_text, sig, Comparison, SeedsNeeded, Verdict};

/// What `analyze` wrote, and the runs it left out of the statistics.
pub struct Analysis {
    pub dir: PathBuf,
    pub left_out: Vec<String>,
    /// One line per ranked metric: the verdict table's row in words.
    pub verdicts: Vec<String>,
    /// The primary question's answer, when `[analysis] primary` names a metric the runs have.
    pub primary: Option<PrimaryAnswer>,
}

/// Whether the primary comparison is decided, and the verdict in words (what sequential seeds stop on).
pub struct PrimaryAnswer {
    pub decided: bool,
    pub words: String,
}

pub fn analyze(exp: &Experiment, results_root: &Path, out_root: &Path) -> Result<Analysis> {
    let records = collect(exp, results_root);
    // Each record's run configuration (the records leave out evaluation replicates, and the seeds of
    // sequential looks not taken).
    let configs: Vec<_> = records
        .iter()
        .map(|rec| {
            exp.runs
                .iter()
                .find(|r| r.hash == rec.hash && r.variant() == rec.variant && r.config.eval.replicate == rec.replicate)
                .map(|r| flat(&r.config))
                .unwrap_or_default()
        })
        .collect();
    let order = variants(&records);
    let dir = out_root.join(&exp.name);
    tables::write(&mut tables::runs_table(&records, &configs)?, &dir, "runs")?;
    tables::write(&mut tables::curves_table(&records)?, &dir, "curves")?;
    tables::write(&mut tables::per_t_table(&records)?, &dir, "per_t")?;
    let (summary, _) = summaries(&records);

    let log_y = exp.loss_log_scale;
    let mut figures: Vec<(String, String)> = Vec::new();
    let mut add = |caption: &str, stem: &str| figures.push((caption.to_string(), stem.to_string()));
    plots::loss_curves(&records, &order, log_y)?.save(&dir, "loss")?;
    add("Training loss", "loss");
    if let Some(f) = plots::metric_intervals(&records, &summary, &order)? {
        f.save(&dir, "metrics")?;
        add("Final metrics with 95% intervals", "metrics");
    }
    if let Some((loss, bits)) = plots::per_t_charts(&records, &order, log_y)? {
        loss.save(&dir, "loss_vs_log_snr")?;
        bits.save(&dir, "bound_vs_log_snr")?;
        add("Training loss against log-SNR", "loss_vs_log_snr");
        add("Bound terms against log-SNR", "bound_vs_log_snr");
    }
    for (stem, caption, figure) in plots::em_curves(&records, &order)? {
        figure.save(&dir, stem)?;
        add(caption, stem);
    }
    if let Some(f) = plots::schedules(exp)? {
        f.save(&dir, "schedules")?;
        add("Noise schedules", "schedules");
    }
    if let Some((steps, time)) = plots::sampler_charts(exp, &records)? {
        steps.save(&dir, "fid_vs_steps")?;
        time.save(&dir, "fid_vs_time")?;
        add("FID against sampling steps", "fid_vs_steps");
        add("FID against sampling time", "fid_vs_time");
    }
    for (stem, title, figure) in plots::posthoc_charts(exp, &records)? {
        figure.save(&dir, stem)?;
        add(title, stem);
    }
    let samples = plots::sample_grids(&records, &order)?;
    if let Some(png) = &samples {
        crate::track::atomic_write(&dir.join("samples.png"), png)?;
    }

    // The diff of a dirty working tree the runs were trained from, so that they can be reproduced.
    let patch = records
        .iter()
        .filter(|r| r.state == "done" && r.git_dirty == Some(true))
        .find_map(|r| std::fs::read(RunDir::new(results_root, &r.hash).file(Artifact::CodePatch)).ok());
    match patch {
        Some(p) => crate::track::atomic_write(&dir.join("code.patch"), &p)?,
        None => {
            let _ = std::fs::remove_file(dir.join("code.patch"));
        }
    }
    if records.iter().any(|r| !r.evaluations.is_empty()) {
        tables::write(&mut tables::replicates_table(&records)?, &dir, "replicates")?;
    }
    decide_and_report(exp, &records, &dir, &figures, samples.is_some())
}

/// Decides again from a committed analysis: reads `analysis/<experiment>/runs.parquet` (the record
/// `reproduce` checks, left as it is, with `replicates.parquet` when the experiment has evaluation
/// replicates) and rewrites the summary, paired and verdict tables and `report.md`, keeping the
/// figures the record's report shows.
pub fn analyze_record(exp: &Experiment, out_root: &Path) -> Result<Analysis> {
    let dir = out_root.join(&exp.name);
    let records = collect::from_table(&dir.join("runs.parquet"), &dir.join("replicates.parquet"))?;
    let old = std::fs::read_to_string(dir.join("report.md")).unwrap_or_default();
    // `![caption](stem.png)` lines of the old report whose PNG is still there.
    let figures: Vec<(String, String)> = old
        .lines()
        .filter_map(|l| {
            let (caption, rest) = l.strip_prefix("![")?.split_once("](")?;
            let stem = rest.strip_suffix(".png)")?;
            (stem != "samples" && dir.join(format!("{stem}.png")).exists())
                .then(|| (caption.to_string(), stem.to_string()))
        })
        .collect();
    decide_and_report(exp, &records, &dir, &figures, dir.join("samples.png").exists())
}

/// The statistics, the verdicts and the report of `records`.
fn decide_and_report(
    exp: &Experiment,
    records: &[RunRecord],
    dir: &Path,
    figures: &[(String, String)],
    samples: bool,
) -> Result<Analysis> {
    let order = variants(records);
    let baseline = exp.baseline.clone().or_else(|| order.first().cloned()).unwrap_or_default();
    let (summary, left_out) = summaries(records);
    let pairs = paired(records, &baseline);
    tables::write(&mut tables::summary_table(&summary)?, dir, "summary")?;
    tables::write(&mut tables::paired_table(&pairs, &baseline)?, dir, "paired")?;
    let q = &exp.question;
    let data = Records { records, baseline: &baseline };
    let comparisons = verdict::comparisons(&pairs, q, &data);
    let verdicts = verdict::verdicts(&summary, &comparisons, &order, &baseline, q);
    tables::write(&mut tables::verdict_table(&verdicts, &baseline)?, dir, "verdicts")?;
    let decompositions = variance_rows(records, &order);
    if !decompositions.is_empty() {
        tables::write(&mut tables::variance_table(&decompositions)?, dir, "variance")?;
    }
    let lines = verdicts.iter().map(|v| in_words(v, &baseline)).collect();
    let primary = verdicts.iter().find(|v| v.primary).map(|v| PrimaryAnswer {
        decided: v.comparison.as_ref().is_some_and(|c| c.decided),
        words: match v.comparison.as_ref().and_then(|c| c.looks.last().map(|l| (c, l))) {
            Some((c, l)) => format!(
                "`{}`: `{}` − `{baseline}` {} over {} seeds, e-value {} ({} decides): {}",
                v.metric,
                c.variant,
                sig(l.mean, 4),
                l.seeds,
                sig(l.e_value, 3),
                sig(1.0 / q.alpha, 3),
                if c.decided { "decided" } else { "not decided" }
            ),
            None => in_words(v, &baseline),
        },
    });
    let report = Report { exp, records, summary: &summary, pairs: &pairs, baseline: &baseline };
    let text = report.render(&left_out, &verdicts, &comparisons, &decompositions, figures, samples)?;
    crate::track::atomic_write(&dir.join("report.md"), text.as_bytes())?;
    Ok(Analysis { dir: dir.to_path_buf(), left_out, verdicts: lines, primary })
}

/// The runs' differences, for the sequential rule and the variance decomposition.
struct Records<'a> {
    records: &'a [RunRecord],
    baseline: &'a str,
}

impl verdict::Differences for Records<'_> {
    fn by_seed(&self, variant: &str, metric: &str) -> Vec<f64> {
        collect::differences(self.records, self.baseline, variant, metric)
    }

    fn by_seed_and_replicate(&self, variant: &str, metric: &str) -> Vec<Vec<f64>> {
        variance::paired_groups(self.records, self.baseline, variant, metric)
    }
}

/// Per variant and ranked metric with evaluation replicates: the split of its variance between seeds.
fn variance_rows(records: &[RunRecord], order: &[String]) -> Vec<(String, String, Decomposition)> {
    let mut out = Vec::new();
    for v in order {
        for m in metric::all().into_iter().filter(|m| m.role == Role::Model) {
            if let Some(d) = variance::decompose(&variance::variant_groups(records, v, m.name)) {
                if d.total > 0.0 {
                    out.push((v.clone(), m.name.to_string(), d));
                }
            }
        }
    }
    out
}

fn find<'a>(rows: &'a [(String, String, Summary)], variant: &str, metric: &str) -> Option<&'a Summary> {
    rows.iter().find(|(v, m, _)| v == variant && m == metric).map(|r| &r.2)
}

/// The difference of a verdict's comparison with its interval: "−13.20 [−265.0, 238.6]".
fn difference_text(c: &Comparison) -> String {
    let d = &c.diff;
    if d.ci_low.is_finite() {
        format!("{} [{}, {}]", sig(d.mean, 4), sig(d.ci_low, 4), sig(d.ci_high, 4))
    } else {
        format!("{} (1 seed)", sig(d.mean, 4))
    }
}

/// Whether a comparison is decided, in the table's words.
fn decided_text(c: &Comparison, q: &Question) -> String {
    if let Some(last) = c.looks.last() {
        let e = format!("e = {} after {} seeds", sig(last.e_value, 3), last.seeds);
        return if c.decided {
            format!("**yes** ({e})")
        } else {
            format!("no ({e}; {} decides)", sig(1.0 / q.alpha, 3))
        };
    }
    match (c.p, c.p_holm) {
        (Some(p), Some(_)) if Some(c.metric.as_str()) == q.primary.as_deref() => {
            format!("{} (p {})", if c.decided { "**yes**" } else { "no" }, p_text(p))
        }
        (Some(_), Some(holm)) => format!("{} (Holm p {})", if c.decided { "**yes**" } else { "no" }, p_text(holm)),
        _ if c.diff.n >= 2 => "no (the same difference at every seed: no spread to test)".into(),
        _ => "no (1 seed: no test)".into(),
    }
}

fn seeds_text(s: &SeedsNeeded, n: usize) -> String {
    match s {
        SeedsNeeded::Decided => "-".into(),
        SeedsNeeded::Seeds(n) => n.to_string(),
        SeedsNeeded::AtLeast(n) => format!("≥ {n} (sequential)"),
        SeedsNeeded::Unreachable => format!("> {}", decide::MAX_SEEDS),
        SeedsNeeded::NoSpread if n < 2 => "? (1 seed)".into(),
        SeedsNeeded::NoSpread => "? (no spread)".into(),
    }
}

/// The Holm family in words: "all 9 metric × comparison pairs of the ranked metrics{extra}", or, when no
/// pair could be tested (one seed, or no spread), that there is none.
fn pairs(family: usize, extra: &str) -> String {
    match family {
        0 => "the metric × comparison pairs that can be tested: none here (a paired test needs two seeds and a \
              spread between them), so no verdict is decided"
            .to_string(),
        n => format!("all {n} metric × comparison pairs of the ranked metrics{extra}"),
    }
}

/// Whether more seeds or more samples would help, from the evaluation replicates.
fn seeds_or_samples(c: &Comparison) -> String {
    let (Some(v), Some(exact)) = (&c.variance, &c.seeds_needed_exact_evaluation) else { return "-".into() };
    let share = match v.evaluation_share() {
        s if s.is_finite() => format!("{}% evaluation noise", sig(100.0 * s, 2)),
        _ => "no variance between seeds to split".to_string(),
    };
    match c.more_samples_help() {
        Some(true) => format!("samples ({share}; {} seeds with exact evaluation)", seeds_text(exact, c.diff.n)),
        Some(false) => format!("seeds ({share}; {} with exact evaluation)", seeds_text(exact, c.diff.n)),
        None => format!("- ({share})"),
    }
}

/// A verdict in one line (printed after a run): "fid: best `schedule=cosine` (145.0); `schedule=cosine`
/// − `schedule=linear` −13.20 [−265.0, 238.6], not decided; seeds needed: 67".
fn in_words(v: &Verdict, baseline: &str) -> String {
    let mut s = format!(
        "{}{}: best `{}` ({})",
        v.metric,
        if v.primary { " (primary)" } else { "" },
        v.best,
        sig(v.best_mean, 4)
    );
    match &v.comparison {
        Some(c) => {
            let _ = write!(
                s,
                "; `{}` − `{baseline}` {}, {}",
                c.variant,
                difference_text(c),
                if c.decided {
                    "decided".to_string()
                } else {
                    format!("not decided; seeds needed: {}", seeds_text(&c.seeds_needed, c.diff.n))
                }
            );
        }
        None if v.baseline_is_best => s.push_str(", the baseline; no other variant shares its seeds"),
        None => {
            let _ = write!(s, "; no run of `{}` shares a seed with the baseline `{baseline}`", v.best);
        }
    }
    s
}

/// The context of a verdict: the floor, real images' value or another method's, when there are.
fn context(summary: &[(String, String, Summary)], v: &Verdict) -> Vec<String> {
    let mut out = Vec::new();
    let metric = v.metric.as_str();
    // FID, KID and the classifier FID of n samples are biased up by n: the same metric of n held-out
    // real images against the same reference is what the value is read against.
    if let Some(floor) = find(summary, &v.best, &format!("{metric}_floor")) {
        out.push(format!("floor {} (held-out real images under the same spec)", sig(floor.mean, 4)));
    }
    if let Some(real) = find(summary, &v.best, &format!("{metric}_real")) {
        out.push(format!("real images {}", sig(real.mean, 4)));
    }
    for b in metric::all().into_iter().filter(|b| b.role == Role::Baseline && b.reference_of == Some(metric)) {
        if let Some(x) = find(summary, &v.best, b.name) {
            out.push(format!("{} {} on the same images and seeds", b.title, sig(x.mean, 4)));
        }
    }
    out
}

/// The verdict table, what it means, and each verdict's context.
fn verdict_section(
    exp: &Experiment,
    verdicts: &[Verdict],
    comparisons: &[Comparison],
    summary: &[(String, String, Summary)],
    baseline: &str,
) -> String {
    let q = &exp.question;
    let with_variance = comparisons.iter().any(|c| c.variance.is_some());
    let mut r = String::from("## Verdicts\n\n");
    let _ = write!(
        r,
        "| metric | best variant (mean) | difference against `{baseline}` [95% CI] | seeds | decided | seeds needed |"
    );
    r.push_str(if with_variance {
        " more seeds or samples? |\n|---|---|---|---|---|---|---|\n"
    } else {
        "\n|---|---|---|---|---|---|\n"
    });
    for v in verdicts {
        let name = if v.primary { format!("**{}** (primary)", v.metric) } else { format!("`{}`", v.metric) };
        let best =
            format!("`{}` ({}){}", v.best, sig(v.best_mean, 4), if v.baseline_is_best { ", the baseline" } else { "" });
        match &v.comparison {
            Some(c) => {
                let _ = write!(
                    r,
                    "| {name} | {best} | `{}`: {} | {} | {} | {} |",
                    c.variant,
                    difference_text(c),
                    c.diff.n,
                    decided_text(c, q),
                    seeds_text(&c.seeds_needed, c.diff.n)
                );
                if with_variance {
                    let _ = write!(r, " {} |", seeds_or_samples(c));
                }
                r.push('\n');
            }
            None => {
                let _ = writeln!(
                    r,
                    "| {name} | {best} | no other variant shares its seeds | - | - | - |{}",
                    if with_variance { " - |" } else { "" }
                );
            }
        }
    }
    let family = comparisons.iter().filter(|c| c.p.is_some()).count();
    let _ = write!(
        r,
        "\nDecided means that the seed-paired difference survives the correction for the number of comparisons \
         (α = {}). ",
        q.alpha
    );
    match &q.primary {
        Some(p) => {
            let k = comparisons.iter().filter(|c| &c.metric == p && (q.sequential.is_some() || c.p.is_some())).count();
            let how = match &q.sequential {
                Some(d) => format!(
                    "by the safe (anytime-valid) paired t test over sequential seeds (start {}, max {}, step {}): \
                     decided when its e-value reaches {}/α = {} at a look ({} comparison{}), which keeps the \
                     type-I error at most α over all looks (Ville's inequality; see docs/analysis.md); its seeds \
                     needed are the fixed-n number or the fewest seeds at which the rule can decide at all, a lower \
                     bound",
                    d.start,
                    d.max,
                    d.step,
                    k.max(1),
                    sig(k.max(1) as f64 / q.alpha, 3),
                    k.max(1),
                    if k > 1 { "s" } else { "" }
                ),
                None if k > 1 => format!("by the paired t test at α, Holm-corrected over its {k} comparisons"),
                None => "by the paired t test at α (p: its two-sided p-value)".to_string(),
            };
            let _ = write!(
                r,
                "The primary question, `{p}`, is decided {how}. The other verdicts are secondary: each is \
                 Holm-corrected over {}, at α; the primary and the secondary family are each held at α, not jointly. ",
                pairs(family, " (the primary's included)")
            );
        }
        None => {
            let _ = write!(
                r,
                "No `[analysis] primary` is set, so every verdict is Holm-corrected over {} (p: the two-sided \
                 paired t test). ",
                pairs(family, "")
            );
        }
    }
    let min_effects: Vec<String> = q.min_effect.iter().map(|(m, e)| format!("`{m}` {}", sig(*e, 4))).collect();
    let _ = writeln!(
        r,
        "Seeds needed: the seeds per variant at which the paired t test would decide {} with {:.0}% power, at the \
         observed standard deviation of the paired differences and at the level the verdict is tested at (α for \
         the primary, divided by its comparisons when there are several; {} for the others: Holm's \
         strictest step), from the noncentral t distribution; \
         \"> {}\" when no number of seeds would.",
        if min_effects.is_empty() {
            "the observed difference".to_string()
        } else {
            format!("the observed difference (the smallest effect of interest instead for {})", min_effects.join(", "))
        },
        decide::TARGET_POWER * 100.0,
        if family > 0 { format!("α/{family}") } else { "α/m, m the pairs tested,".to_string() },
        decide::MAX_SEEDS
    );
    if with_variance {
        r.push_str(
            "\nMore seeds or samples: from the evaluation replicates (the same weights evaluated again under other \
             sampling seeds, KID subsets and bound noise, on the same images), the share of the paired differences' variance \
             between seeds that is evaluation noise, and the seeds needed if that noise were gone (more samples per \
             evaluation, or the mean of several evaluations, shrink only that part). \"samples\" when removing it \
             would at least halve the seeds needed; \"seeds\" otherwise.\n",
        );
    } else if comparisons.iter().any(|c| !c.decided) {
        r.push_str(
            "\nMore seeds or samples: not measured here, as no run was evaluated twice. `\"eval.replicate\" = [0, 1]` \
             in `[grid]` evaluates the same weights again (no retraining) and the report then splits each metric's \
             variance between seeds into evaluation noise and training, and says which of the two would decide sooner.\n",
        );
    }
    for c in comparisons.iter().filter(|c| !c.looks.is_empty()) {
        let looks: Vec<String> =
            c.looks.iter().map(|l| format!("{} seeds: e = {}", l.seeds, sig(l.e_value, 3))).collect();
        let _ = writeln!(r, "\nLooks at `{}` − `{baseline}` in `{}`: {}.", c.variant, c.metric, looks.join("; "));
    }
    let notes: Vec<String> = verdicts
        .iter()
        .filter_map(|v| {
            let c = context(summary, v);
            (!c.is_empty()).then(|| format!("- `{}` of `{}`: {}.", v.metric, v.best, c.join("; ")))
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(r, "\nWhat the best values are read against:\n\n{}", notes.join("\n"));
    }
    r
}

/// Where each variant's variance between seeds comes from (with evaluation replicates).
fn variance_section(rows: &[(String, String, Decomposition)]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut r = String::from(
        "\n## Where the variance comes from\n\nPer variant: the variance of one evaluation between seeds, split into \
         evaluation noise (pooled over the replicate evaluations of the same weights) and training (the rest).\n\n\
         | variant | metric | seeds | evaluations per run | sd between seeds | sd of evaluation | evaluation share |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (v, m, d) in rows {
        let _ = writeln!(
            r,
            "| {v} | {m} | {} | {} | {} | {} | {}% |",
            d.seeds,
            d.replicates,
            sig(d.total.sqrt(), 4),
            sig(d.evaluation.sqrt(), 4),
            sig(100.0 * d.evaluation_share(), 3)
        );
    }
    r
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
        verdicts: &[Verdict],
        comparisons: &[Comparison],
        decompositions: &[(String, String, Decomposition)],
        figures: &[(String, String)],
        samples: bool,
    ) -> Result<String> {
        let Report { exp, records, summary, pairs, baseline } = *self;
        let file = std::fs::read_to_string(&exp.path).with_context(|| format!("cannot read {}", exp.path.display()))?;
        let git = crate::track::run_dir::git_state();
        let commit = git.get("commit").and_then(|c| c.as_str()).unwrap_or("unknown").to_string();
        // The analysis' own files (this one being rewritten) are no change to the code.
        let dirty = git.get("dirty").and_then(|d| d.as_bool()).unwrap_or(false)
            && std::process::Command::new("git")
                .args(["status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)analysis"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .is_none_or(|o| !o.stdout.is_empty());
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
        // The profile the record holds (what `reproduce` runs again), and why when it was chosen here.
        if let Some(p) = records.iter().find_map(|r| r.profile.clone()) {
            let here = exp.profile.as_deref().unwrap_or(crate::experiment::DEFAULT_PROFILE) == p;
            let why = exp.profile_reason.as_deref().filter(|_| here).map(|w| format!(" ({w})")).unwrap_or_default();
            let _ = writeln!(r, "Profile: `{p}`{why}.");
        }
        let _ = writeln!(r, "Analysed at commit `{commit}`{}.\n", if dirty { " with uncommitted changes" } else { "" });
        r.push_str(&verdict_section(exp, verdicts, comparisons, summary, baseline));
        r.push_str(&variance_section(decompositions));
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

#[cfg(test)]
mod tests {
    /// One-seed analyses test no pair: the report says so instead of "over all 0 pairs" and "α/0".
    #[test]
    fn a_holm_family_without_testable_pairs_says_so() {
        assert!(super::pairs(0, "").contains("none here") && !super::pairs(0, "").contains('0'));
        assert_eq!(super::pairs(9, " (x)"), "all 9 metric × comparison pairs of the ranked metrics (x)");
    }
}
