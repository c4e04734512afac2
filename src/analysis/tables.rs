//! The analysis tables as polars DataFrames, written as Parquet and CSV: `runs` (one row per run),
//! `summary` (per variant and metric), `paired` (seed-paired differences against the baseline) and
//! `curves` (the training loss against step, long format). Rows come in a stable order and hold no
//! timestamps, so the files are the same for the same runs.
use super::collect::{metric_names, RunRecord};
use super::stats::Summary;
use super::variance::Decomposition;
use super::verdict::{Comparison, SeedsNeeded, Verdict};
use crate::eval::bpd::PerT;
use crate::track::atomic_replace;
use crate::track::hparams::HValue;
use anyhow::{Context, Result};
use polars::prelude::*;
use std::path::Path;

/// Configuration keys every `runs` row carries, varied or not.
pub const FIXED_KEYS: [&str; 6] =
    ["model.name", "data.name", "diffusion.timesteps", "diffusion.schedule.name", "train.loss", "diffusion.target"];

fn text_column(name: &str, values: Vec<String>) -> Column {
    Column::new(name.into(), values)
}

fn float_column(name: &str, values: Vec<Option<f64>>) -> Column {
    Column::new(name.into(), values)
}

/// A configuration key as a typed column (numbers as f64, strings, booleans).
fn key_column(name: &str, values: Vec<Option<HValue>>) -> Column {
    match values.iter().flatten().next() {
        Some(HValue::Number(_)) => float_column(
            name,
            values.into_iter().map(|v| if let Some(HValue::Number(n)) = v { Some(n) } else { None }).collect(),
        ),
        Some(HValue::Bool(_)) => Column::new(
            name.into(),
            values.into_iter().map(|v| if let Some(HValue::Bool(b)) = v { Some(b) } else { None }).collect::<Vec<_>>(),
        ),
        _ => Column::new(
            name.into(),
            values
                .into_iter()
                .map(|v| match v {
                    Some(HValue::Str(s)) => Some(s),
                    Some(other) => Some(format!("{other:?}")),
                    None => None,
                })
                .collect::<Vec<_>>(),
        ),
    }
}

/// The varied keys of any run, in order of first appearance: a key that only some runs have (a
/// formulation's own keys, `eval.ema_sigma_rel`) is a column too, empty where a run lacks it.
fn varied_columns(records: &[RunRecord]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for (k, _) in records.iter().flat_map(|r| &r.varied) {
        if !keys.contains(k) {
            keys.push(k.clone());
        }
    }
    keys
}

/// One row per run: label, hash, variant, seed, state, every varied key, the fixed keys, the metrics,
/// steps done, device, the git commit (with its dirty flag) the run was trained from, the profile, and
/// the hardware it ran on (`hardware`, `cpu_isa`: what `reproduce` decides its comparison by).
pub fn runs_table(records: &[RunRecord], configs: &[std::collections::BTreeMap<String, HValue>]) -> Result<DataFrame> {
    let mut columns = vec![
        text_column("label", records.iter().map(|r| r.label.clone()).collect()),
        text_column("hash", records.iter().map(|r| r.hash.clone()).collect()),
        text_column("variant", records.iter().map(|r| r.variant.clone()).collect()),
        Column::new("seed".into(), records.iter().map(|r| r.seed as i64).collect::<Vec<_>>()),
        text_column("state", records.iter().map(|r| r.state.clone()).collect()),
    ];
    let mut keys = varied_columns(records);
    for k in FIXED_KEYS {
        if !keys.iter().any(|x| x == k) {
            keys.push(k.to_string());
        }
    }
    for key in &keys {
        columns.push(key_column(key, configs.iter().map(|c| c.get(key).cloned()).collect()));
    }
    for m in metric_names() {
        columns.push(float_column(m, records.iter().map(|r| r.metrics.get(m).copied()).collect()));
    }
    columns.push(Column::new("steps".into(), records.iter().map(|r| r.steps).collect::<Vec<_>>()));
    columns.push(Column::new("device".into(), records.iter().map(|r| r.device.clone()).collect::<Vec<_>>()));
    columns.push(Column::new("git_commit".into(), records.iter().map(|r| r.git_commit.clone()).collect::<Vec<_>>()));
    columns.push(Column::new("git_dirty".into(), records.iter().map(|r| r.git_dirty).collect::<Vec<_>>()));
    columns.push(Column::new("profile".into(), records.iter().map(|r| r.profile.clone()).collect::<Vec<_>>()));
    columns.push(Column::new("hardware".into(), records.iter().map(|r| r.hardware.clone()).collect::<Vec<_>>()));
    columns.push(Column::new("cpu_isa".into(), records.iter().map(|r| r.cpu_isa.clone()).collect::<Vec<_>>()));
    Ok(DataFrame::new_infer_height(columns)?)
}

fn summary_columns(rows: &[(String, String, Summary)]) -> Vec<Column> {
    vec![
        text_column("variant", rows.iter().map(|r| r.0.clone()).collect()),
        text_column("metric", rows.iter().map(|r| r.1.clone()).collect()),
        Column::new("n".into(), rows.iter().map(|r| r.2.n as i64).collect::<Vec<_>>()),
        float_column("mean", rows.iter().map(|r| Some(r.2.mean)).collect()),
        float_column("std", rows.iter().map(|r| finite(r.2.std)).collect()),
        float_column("ci95_low", rows.iter().map(|r| finite(r.2.ci_low)).collect()),
        float_column("ci95_high", rows.iter().map(|r| finite(r.2.ci_high)).collect()),
    ]
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Per variant and metric: n, mean, std and the 95% Student-t interval (null below two runs).
pub fn summary_table(rows: &[(String, String, Summary)]) -> Result<DataFrame> {
    Ok(DataFrame::new_infer_height(summary_columns(rows))?)
}

/// Seed-paired differences variant − baseline: as `summary`, with the baseline and whether the
/// interval excludes zero.
pub fn paired_table(rows: &[(String, String, Summary)], baseline: &str) -> Result<DataFrame> {
    let mut columns = summary_columns(rows);
    columns.insert(1, text_column("baseline", vec![baseline.to_string(); rows.len()]));
    let excludes = rows.iter().map(|r| {
        let s = &r.2;
        (s.ci_low.is_finite() && s.ci_high.is_finite()).then_some(s.ci_low > 0.0 || s.ci_high < 0.0)
    });
    columns.push(Column::new("ci_excludes_zero".into(), excludes.collect::<Vec<_>>()));
    Ok(DataFrame::new_infer_height(columns)?)
}

/// One row per verdict: metric, primary, the best variant and its mean, the compared variant and the
/// baseline, n, the difference with its interval, p, Holm's p, the last e-value of a sequential
/// primary, decided, the effect planned for and the seeds needed (null when decided or unknown).
pub fn verdict_table(verdicts: &[Verdict], baseline: &str) -> Result<DataFrame> {
    fn c(v: &Verdict) -> Option<&Comparison> {
        v.comparison.as_ref()
    }
    let opt = |f: &dyn Fn(&Comparison) -> Option<f64>| -> Vec<Option<f64>> {
        verdicts.iter().map(|v| c(v).and_then(f).filter(|x| x.is_finite())).collect()
    };
    Ok(DataFrame::new_infer_height(vec![
        text_column("metric", verdicts.iter().map(|v| v.metric.clone()).collect()),
        Column::new("primary".into(), verdicts.iter().map(|v| v.primary).collect::<Vec<_>>()),
        text_column("best", verdicts.iter().map(|v| v.best.clone()).collect()),
        float_column("best_mean", verdicts.iter().map(|v| Some(v.best_mean)).collect()),
        Column::new("variant".into(), verdicts.iter().map(|v| c(v).map(|c| c.variant.clone())).collect::<Vec<_>>()),
        text_column("baseline", vec![baseline.to_string(); verdicts.len()]),
        Column::new("n".into(), verdicts.iter().map(|v| c(v).map(|c| c.diff.n as i64)).collect::<Vec<_>>()),
        float_column("diff_mean", opt(&|c| Some(c.diff.mean))),
        float_column("diff_std", opt(&|c| Some(c.diff.std))),
        float_column("ci95_low", opt(&|c| Some(c.diff.ci_low))),
        float_column("ci95_high", opt(&|c| Some(c.diff.ci_high))),
        float_column("p", opt(&|c| c.p)),
        float_column("p_holm", opt(&|c| c.p_holm)),
        float_column("e_value", opt(&|c| c.looks.last().map(|l| l.e_value))),
        Column::new("decided".into(), verdicts.iter().map(|v| c(v).map(|c| c.decided)).collect::<Vec<_>>()),
        float_column("planned_effect", opt(&|c| c.planned_effect)),
        Column::new(
            "seeds_needed".into(),
            verdicts
                .iter()
                .map(|v| match c(v).map(|c| &c.seeds_needed) {
                    Some(SeedsNeeded::Seeds(n) | SeedsNeeded::AtLeast(n)) => Some(*n as i64),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
        float_column("evaluation_share", opt(&|c| c.variance.as_ref().map(Decomposition::evaluation_share))),
        Column::new(
            "seeds_needed_exact_evaluation".into(),
            verdicts
                .iter()
                .map(|v| match c(v).and_then(|c| c.seeds_needed_exact_evaluation.as_ref()) {
                    Some(SeedsNeeded::Seeds(n) | SeedsNeeded::AtLeast(n)) => Some(*n as i64),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        ),
    ])?)
}

/// The metrics of every evaluation replicate of every run, long format: label, variant, seed,
/// replicate, metric, value (replicate 0 is the run's own evaluation, also in `runs`).
pub fn replicates_table(records: &[RunRecord]) -> Result<DataFrame> {
    let rows: Vec<(&RunRecord, usize, &String, f64)> = records
        .iter()
        .flat_map(|r| r.evaluations.iter().flat_map(move |(rep, m)| m.iter().map(move |(k, v)| (r, *rep, k, *v))))
        .collect();
    Ok(DataFrame::new_infer_height(vec![
        text_column("label", rows.iter().map(|r| r.0.label.clone()).collect()),
        text_column("variant", rows.iter().map(|r| r.0.variant.clone()).collect()),
        Column::new("seed".into(), rows.iter().map(|r| r.0.seed as i64).collect::<Vec<_>>()),
        Column::new("replicate".into(), rows.iter().map(|r| r.1 as i64).collect::<Vec<_>>()),
        text_column("metric", rows.iter().map(|r| r.2.clone()).collect()),
        Column::new("value".into(), rows.iter().map(|r| r.3).collect::<Vec<_>>()),
    ])?)
}

/// Per variant and metric with evaluation replicates: seeds, evaluations per run, the variance
/// between seeds of one evaluation, its evaluation part, and that part's share.
pub fn variance_table(rows: &[(String, String, Decomposition)]) -> Result<DataFrame> {
    Ok(DataFrame::new_infer_height(vec![
        text_column("variant", rows.iter().map(|r| r.0.clone()).collect()),
        text_column("metric", rows.iter().map(|r| r.1.clone()).collect()),
        Column::new("seeds".into(), rows.iter().map(|r| r.2.seeds as i64).collect::<Vec<_>>()),
        Column::new("evaluations".into(), rows.iter().map(|r| r.2.replicates as i64).collect::<Vec<_>>()),
        float_column("variance_between_seeds", rows.iter().map(|r| Some(r.2.total)).collect()),
        float_column("variance_evaluation", rows.iter().map(|r| Some(r.2.evaluation)).collect()),
        float_column("evaluation_share", rows.iter().map(|r| finite(r.2.evaluation_share())).collect()),
    ])?)
}

/// The training loss and the evaluations during training of every run against step, long format:
/// label, variant, seed, metric, step, value.
pub fn curves_table(records: &[RunRecord]) -> Result<DataFrame> {
    let rows: Vec<(&RunRecord, &(String, i64, f64))> =
        records.iter().flat_map(|r| r.curves.iter().map(move |c| (r, c))).collect();
    Ok(DataFrame::new_infer_height(vec![
        text_column("label", rows.iter().map(|(r, _)| r.label.clone()).collect()),
        text_column("variant", rows.iter().map(|(r, _)| r.variant.clone()).collect()),
        Column::new("seed".into(), rows.iter().map(|(r, _)| r.seed as i64).collect::<Vec<_>>()),
        text_column("metric", rows.iter().map(|(_, c)| c.0.clone()).collect()),
        Column::new("step".into(), rows.iter().map(|(_, c)| c.1).collect::<Vec<_>>()),
        Column::new("value".into(), rows.iter().map(|(_, c)| c.2).collect::<Vec<_>>()),
    ])?)
}

/// The bound's term (bits/dim) and the training loss per timestep of every evaluated run, long format:
/// label, variant, seed, t, log_snr, bits, loss.
pub fn per_t_table(records: &[RunRecord]) -> Result<DataFrame> {
    let rows: Vec<(&RunRecord, &PerT)> = records.iter().flat_map(|r| r.per_t.iter().map(move |p| (r, p))).collect();
    Ok(DataFrame::new_infer_height(vec![
        text_column("label", rows.iter().map(|(r, _)| r.label.clone()).collect()),
        text_column("variant", rows.iter().map(|(r, _)| r.variant.clone()).collect()),
        Column::new("seed".into(), rows.iter().map(|(r, _)| r.seed as i64).collect::<Vec<_>>()),
        Column::new("t".into(), rows.iter().map(|(_, p)| p.t as i64).collect::<Vec<_>>()),
        Column::new("log_snr".into(), rows.iter().map(|(_, p)| p.log_snr).collect::<Vec<_>>()),
        Column::new("bits".into(), rows.iter().map(|(_, p)| p.bits).collect::<Vec<_>>()),
        Column::new("loss".into(), rows.iter().map(|(_, p)| p.loss).collect::<Vec<_>>()),
    ])?)
}

/// Writes `<dir>/<name>.parquet` and `<dir>/<name>.csv`, each atomically.
pub fn write(df: &mut DataFrame, dir: &Path, name: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    atomic_replace(&dir.join(format!("{name}.parquet")), |tmp| {
        let mut f = std::fs::File::create(tmp)?;
        ParquetWriter::new(&mut f).finish(df)?;
        Ok(())
    })?;
    atomic_replace(&dir.join(format!("{name}.csv")), |tmp| {
        let mut f = std::fs::File::create(tmp)?;
        CsvWriter::new(&mut f).finish(df)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key that only the second run has (a post-hoc EMA width) is a column of the runs table.
    #[test]
    fn a_key_only_some_runs_have_is_a_column() {
        let mk = |label: &str, varied: Vec<(String, HValue)>| RunRecord {
            varied,
            ..crate::analysis::collect::tests::record(label, 0, "done", 1.0)
        };
        let records = vec![
            mk("plain", vec![("eval.sampler.steps".into(), HValue::Number(10.0))]),
            mk(
                "width",
                vec![
                    ("eval.sampler.steps".into(), HValue::Number(20.0)),
                    ("eval.ema_sigma_rel".into(), HValue::Number(0.1)),
                ],
            ),
        ];
        assert_eq!(varied_columns(&records), ["eval.sampler.steps", "eval.ema_sigma_rel"]);
    }
}
