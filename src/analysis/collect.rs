//! The runs of an experiment as records: their varied keys, state and final metrics, grouped into
//! variants (the varied keys other than the seed), with summaries per variant and seed-paired
//! differences against the baseline variant.
use super::stats::{summarize, Summary};
use crate::cluster::history::EmRecord;
use crate::eval::bpd::PerT;
use crate::eval::metric::{self, Role};
use crate::experiment::Experiment;
use crate::track::hparams::flat;
use crate::track::hparams::HValue;
use crate::track::run_dir::{Artifact, Attempt, RunDir, State};
use std::collections::BTreeMap;
use std::path::Path;

/// The metrics a run can have, in table order: every registered metric (`eval::metric::all`).
pub fn metric_names() -> Vec<&'static str> {
    metric::all().into_iter().map(|m| m.name).collect()
}

/// The metrics of the wall clock, not of the model: neither ranked in the verdicts nor compared by
/// `reproduce`.
pub fn is_timing(name: &str) -> bool {
    metric::find(name).is_some_and(|m| m.role == Role::Timing)
}

#[derive(Debug, Clone)]
pub struct RunRecord {
    pub label: String,
    pub hash: String,
    /// done, failed, running, partial or new.
    pub state: String,
    pub seed: u64,
    /// The varied keys other than `seed` with their values, in the experiment's key order.
    pub varied: Vec<(String, HValue)>,
    /// The variant: the label without its seed (`schedule=cosine`), the experiment's name when nothing
    /// but the seed varies.
    pub variant: String,
    pub metrics: BTreeMap<String, f64>,
    /// Training steps done (status.json).
    pub steps: Option<i64>,
    /// The device of the run's last attempt (`cpu (2 threads)`, `cuda:0 (NVIDIA H100 ...)`).
    pub device: Option<String>,
    /// The git commit the run was trained from, and whether the working tree had uncommitted changes.
    pub git_commit: Option<String>,
    pub git_dirty: Option<bool>,
    /// The experiment's profile the run was analysed under (`default`: none), so that `reproduce`
    /// runs the same one wherever it runs (the default profile depends on the machine).
    pub profile: Option<String>,
    /// Where the run's attempts ran, as far as the bits of its result depend on it
    /// (`hardware::Hardware::key`; several joined by ` | ` when it was resumed elsewhere), and the
    /// last attempt's `train.cpu_isa`; None for runs made before attempts recorded them.
    pub hardware: Option<String>,
    pub cpu_isa: Option<String>,
    /// (metric, step, value): `train_loss` from `metrics.jsonl`, `eval_during_<name>` of every metric
    /// computed during training (`metric::during`) from `eval_history.jsonl`, in file order.
    pub curves: Vec<(String, i64, f64)>,
    /// The bound's terms and the training loss per timestep, from the run's evaluation (empty when the
    /// bound was not evaluated).
    pub per_t: Vec<PerT>,
    /// Network evaluations per image of the evaluation's sampler (when FID was computed).
    pub model_evaluations: Option<usize>,
    /// The sample grid of this run: its evaluation's when the experiment varies `[eval]` (runs that
    /// share a training differ only there), else the one drawn at the end of training.
    pub samples: std::path::PathBuf,
    /// The evaluation replicate (`eval.replicate`) this record's metrics come from.
    pub replicate: usize,
    /// When the experiment varies `eval.replicate`: the metrics of every replicate evaluation of
    /// these weights, this record's own (replicate 0) first. Empty otherwise.
    pub evaluations: Vec<(usize, BTreeMap<String, f64>)>,
}

/// The last attempt of a run, and the distinct hardware keys of all its attempts joined by ` | ` (a
/// run resumed on other hardware names each; None before attempts recorded it).
fn attempts_of(dir: &RunDir) -> (Attempt, Option<String>) {
    let all = dir.attempts();
    let mut keys: Vec<&str> = Vec::new();
    for k in all.iter().filter_map(|a| a.hardware_key.as_deref()) {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let hardware = (!keys.is_empty()).then(|| keys.join(" | "));
    (all.last().cloned().unwrap_or_default(), hardware)
}

/// The curves of a run directory: see `RunRecord::curves`.
fn read_curves(dir: &RunDir) -> Vec<(String, i64, f64)> {
    let mut out = Vec::new();
    for l in dir.loss_curve() {
        out.push(("train_loss".to_string(), l.step as i64, l.loss));
    }
    for l in dir.eval_history() {
        for m in metric::during() {
            if let Some(x) = l.metrics.get(m.name).copied().flatten() {
                out.push((format!("eval_during_{}", m.name), l.step as i64, x));
            }
        }
    }
    // A clustering's E-steps: every π_k, the largest, the share of images that changed cluster, and
    // the assignment's scores against the labels.
    for e in dir.record::<Vec<EmRecord>>(Artifact::EmHistory).unwrap_or_default() {
        let step = e.step as i64;
        for (k, p) in e.pi.iter().enumerate() {
            out.push((format!("em_pi_{k}"), step, *p));
        }
        if let Some(max) = e.pi.iter().copied().reduce(f64::max) {
            out.push(("em_pi_max".to_string(), step, max));
        }
        out.push(("em_changed".to_string(), step, e.changed));
        if let Some(max) = e.pi_estimate.as_ref().and_then(|p| p.iter().copied().reduce(f64::max)) {
            out.push(("em_pi_estimate_max".to_string(), step, max));
        }
        if let Some(k) = e.estimate_keeps {
            out.push(("em_estimate_keeps".to_string(), step, k));
        }
        if let Some(s) = e.estimate_scores {
            out.push(("em_estimate_nmi".to_string(), step, s.nmi));
        }
        if let Some(s) = e.scores {
            for (score, x) in [("accuracy", s.accuracy), ("nmi", s.nmi), ("ari", s.ari)] {
                out.push((format!("em_{score}"), step, x));
            }
        }
    }
    out
}

/// Keys whose values differ between runs, in sorted order.
pub fn varied_keys(exp: &Experiment) -> Vec<String> {
    let flats: Vec<_> = exp.runs.iter().map(|r| flat(&r.config)).collect();
    let mut keys: Vec<String> = flats.iter().flat_map(|f| f.keys().cloned()).collect();
    keys.sort();
    keys.dedup();
    keys.retain(|k| flats.iter().any(|f| f.get(k) != flats[0].get(k)));
    keys
}

/// Reads every run of the experiment from `results_root`.
pub fn collect(exp: &Experiment, results_root: &Path) -> Vec<RunRecord> {
    let keys: Vec<String> = varied_keys(exp).into_iter().filter(|k| k != "seed").collect();
    let eval_varies = keys.iter().any(|k| k.starts_with("eval."));
    let mut records = exp
        .runs
        .iter()
        .map(|spec| {
            let values = flat(&spec.config);
            let varied: Vec<(String, HValue)> =
                keys.iter().filter_map(|k| values.get(k).map(|v| (k.clone(), v.clone()))).collect();
            let variant = spec.variant();
            let dir = RunDir::new(results_root, &spec.hash);
            // A `running` status whose process is gone reads as interrupted (as in `plan`).
            let _ = crate::track::state::settle(&dir);
            let status = dir.status().ok().flatten();
            let state = match (&status, dir.checkpoint_step()) {
                (Some(s), _) if s.state == State::Done => "done",
                (Some(s), _) if s.state == State::Failed => "failed",
                (Some(s), _) if s.state == State::Running => "running",
                (Some(s), _) if s.state == State::Stopped => "stopped",
                (Some(s), _) if s.state == State::Interrupted => "interrupted",
                (_, Some(_)) => "partial",
                _ => "new",
            };
            let mut metrics = BTreeMap::new();
            let mut per_t = Vec::new();
            let provenance = dir.provenance();
            // The numbers of this run's own `[eval]`, not the latest evaluation of its directory (runs
            // that share a training are evaluated under several specs).
            let evaluation = crate::eval::run_eval::stored_as_evaluated(&dir.path, &spec.config.eval);
            let mut model_evaluations = None;
            let mut samples = dir.file(Artifact::Samples);
            if let Some(s) = &status {
                metrics.extend(metric::run::of_status(s));
            }
            if let Some(r) = evaluation {
                metrics.extend(r.metrics);
                model_evaluations = r.model_evaluations;
                let own = dir.eval_samples(&r.spec_hash);
                if eval_varies && own.exists() {
                    samples = own;
                }
                if let Some(b) = r.bpd {
                    per_t = b.per_t;
                }
            }
            let (attempt, hardware) = attempts_of(&dir);
            RunRecord {
                label: spec.label.clone(),
                hash: spec.hash.clone(),
                state: state.to_string(),
                seed: spec.config.seed,
                varied,
                variant,
                metrics,
                steps: status.as_ref().map(|s| s.step as i64),
                device: attempt.device.clone(),
                hardware,
                cpu_isa: attempt.cpu_isa().map(String::from),
                git_commit: provenance.as_ref().and_then(|p| p.git.commit.clone()),
                git_dirty: provenance.as_ref().and_then(|p| p.git.dirty),
                profile: Some(exp.profile.clone().unwrap_or_else(|| crate::experiment::DEFAULT_PROFILE.into())),
                curves: read_curves(&dir),
                per_t,
                model_evaluations,
                samples,
                replicate: spec.config.eval.replicate,
                evaluations: Vec::new(),
            }
        })
        .collect::<Vec<_>>();
    // Evaluation replicates are repeats of their run's evaluation, not runs: each joins the record of
    // the same weights (hash) and variant evaluated as replicate 0.
    if records.iter().any(|r| r.replicate > 0) {
        let (repeats, mut own): (Vec<RunRecord>, Vec<RunRecord>) = records.into_iter().partition(|r| r.replicate > 0);
        for r in own.iter_mut() {
            r.evaluations.push((0, r.metrics.clone()));
            // A run's label, not its evaluation's: `schedule=linear,seed=0`.
            r.label = r.label.split(',').filter(|p| !p.starts_with("replicate=")).collect::<Vec<_>>().join(",");
        }
        for rep in repeats {
            match own.iter_mut().find(|r| r.hash == rep.hash && r.variant == rep.variant) {
                Some(r) if rep.state == "done" => r.evaluations.push((rep.replicate, rep.metrics)),
                Some(_) => {}
                None => own.push(rep),
            }
        }
        records = own;
    }
    // Sequential seeds: the seeds of looks not taken yet are not runs of this experiment (yet).
    if exp.question.sequential.is_some() {
        let reached = records.iter().filter(|r| r.state != "new").map(|r| r.seed + 1).max().unwrap_or(0);
        records.retain(|r| r.seed < reached);
    }
    records
}

/// The records of a committed analysis (`analysis/<experiment>/runs.parquet`, written by
/// `tables::runs_table`): label, hash, variant, seed, state, the metrics, steps, device, git
/// state and profile. What the table does not hold (curves, the bound per timestep, sample grids) stays empty:
/// enough to decide again, not to draw again.
pub fn from_table(path: &Path, replicates: &Path) -> anyhow::Result<Vec<RunRecord>> {
    use anyhow::{anyhow, Context};
    use polars::prelude::*;
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let df =
        ParquetReader::new(file).finish().map_err(|e| anyhow!("cannot read {} as Parquet: {e}", path.display()))?;
    let texts = |name: &str| -> anyhow::Result<Vec<Option<String>>> {
        let c = df.column(name).map_err(|_| anyhow!("{}: no column `{name}`", path.display()))?;
        let c = c.cast(&DataType::String)?;
        let c = c.str()?;
        Ok((0..c.len()).map(|i| c.get(i).map(String::from)).collect())
    };
    let numbers = |name: &str| -> Option<Vec<Option<f64>>> {
        let c = df.column(name).ok()?.cast(&DataType::Float64).ok()?;
        let c = c.f64().ok()?.clone();
        Some((0..c.len()).map(|i| c.get(i)).collect())
    };
    let (labels, hashes, variants, states) = (texts("label")?, texts("hash")?, texts("variant")?, texts("state")?);
    let seeds = numbers("seed").ok_or_else(|| anyhow!("{}: no column `seed`", path.display()))?;
    let steps = numbers("steps").unwrap_or_else(|| vec![None; df.height()]);
    let devices = texts("device").unwrap_or_else(|_| vec![None; df.height()]);
    let commits = texts("git_commit").unwrap_or_else(|_| vec![None; df.height()]);
    let dirty = texts("git_dirty").unwrap_or_else(|_| vec![None; df.height()]);
    let profiles = texts("profile").unwrap_or_else(|_| vec![None; df.height()]);
    let hardware = texts("hardware").unwrap_or_else(|_| vec![None; df.height()]);
    let cpu_isas = texts("cpu_isa").unwrap_or_else(|_| vec![None; df.height()]);
    let metrics: Vec<(&str, Vec<Option<f64>>)> =
        metric_names().into_iter().filter_map(|m| numbers(m).map(|v| (m, v))).collect();
    let mut records = (0..df.height())
        .map(|i| RunRecord {
            label: labels[i].clone().unwrap_or_default(),
            hash: hashes[i].clone().unwrap_or_default(),
            state: states[i].clone().unwrap_or_default(),
            seed: seeds[i].unwrap_or_default() as u64,
            varied: Vec::new(),
            variant: variants[i].clone().unwrap_or_default(),
            metrics: metrics.iter().filter_map(|(m, v)| v[i].map(|x| (m.to_string(), x))).collect(),
            steps: steps[i].map(|s| s as i64),
            device: devices[i].clone(),
            git_commit: commits[i].clone(),
            git_dirty: dirty[i].as_deref().map(|d| d == "true"),
            profile: profiles[i].clone(),
            hardware: hardware[i].clone(),
            cpu_isa: cpu_isas[i].clone(),
            curves: Vec::new(),
            per_t: Vec::new(),
            model_evaluations: None,
            samples: Default::default(),
            replicate: 0,
            evaluations: Vec::new(),
        })
        .collect::<Vec<_>>();
    // The replicate evaluations (`tables::replicates_table`), when the experiment has them.
    if let Ok(file) = std::fs::File::open(replicates) {
        let df = ParquetReader::new(file)
            .finish()
            .map_err(|e| anyhow!("cannot read {} as Parquet: {e}", replicates.display()))?;
        let col = |name: &str| df.column(name).map_err(|_| anyhow!("{}: no column `{name}`", replicates.display()));
        let labels = col("label")?.str()?.clone();
        let reps = col("replicate")?.cast(&DataType::Int64)?;
        let reps = reps.i64()?.clone();
        let metrics = col("metric")?.str()?.clone();
        let values = col("value")?.cast(&DataType::Float64)?;
        let values = values.f64()?.clone();
        for i in 0..df.height() {
            let (Some(label), Some(rep), Some(m), Some(v)) =
                (labels.get(i), reps.get(i), metrics.get(i), values.get(i))
            else {
                continue;
            };
            let Some(r) = records.iter_mut().find(|r| r.label == label) else { continue };
            let rep = rep as usize;
            match r.evaluations.iter_mut().find(|(x, _)| *x == rep) {
                Some((_, map)) => {
                    map.insert(m.to_string(), v);
                }
                None => r.evaluations.push((rep, BTreeMap::from([(m.to_string(), v)]))),
            }
        }
    }
    Ok(records)
}

/// The variants in the order of their first run (the first is the baseline unless named).
pub fn variants(records: &[RunRecord]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in records {
        if !out.contains(&r.variant) {
            out.push(r.variant.clone());
        }
    }
    out
}

/// Per variant and metric, the summary over its finished runs; and the labels of runs left out
/// because they are not done.
pub fn summaries(records: &[RunRecord]) -> (Vec<(String, String, Summary)>, Vec<String>) {
    let left_out: Vec<String> =
        records.iter().filter(|r| r.state != "done").map(|r| format!("{} ({})", r.label, r.state)).collect();
    let mut out = Vec::new();
    for variant in variants(records) {
        for metric in metric_names() {
            let values: Vec<f64> = records
                .iter()
                .filter(|r| r.variant == variant && r.state == "done")
                .filter_map(|r| r.metrics.get(metric).copied())
                .collect();
            if !values.is_empty() {
                out.push((variant.clone(), metric.to_string(), summarize(&values)));
            }
        }
    }
    (out, left_out)
}

/// The differences `variant` − `baseline` of a metric over the seeds both have done, in seed order
/// (runs of the same seed share batches, timesteps and noise).
pub fn differences(records: &[RunRecord], baseline: &str, variant: &str, metric: &str) -> Vec<f64> {
    let done =
        |variant: &str, seed: u64| records.iter().find(|r| r.variant == variant && r.seed == seed && r.state == "done");
    let mut seeds: Vec<u64> = records.iter().filter(|r| r.variant == variant).map(|r| r.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    seeds
        .into_iter()
        .filter_map(|seed| Some(done(variant, seed)?.metrics.get(metric)? - done(baseline, seed)?.metrics.get(metric)?))
        .collect()
}

/// For each variant other than `baseline` and each metric: the seed-paired differences, summarised.
pub fn paired(records: &[RunRecord], baseline: &str) -> Vec<(String, String, Summary)> {
    let mut out = Vec::new();
    for variant in variants(records).into_iter().filter(|v| v != baseline) {
        for metric in metric_names() {
            let diffs = differences(records, baseline, &variant, metric);
            if !diffs.is_empty() {
                out.push((variant.clone(), metric.to_string(), summarize(&diffs)));
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A finished-or-not run of `variant` and `seed` with one FID, for the analysis' unit tests.
    pub(crate) fn record(variant: &str, seed: u64, state: &str, fid: f64) -> RunRecord {
        RunRecord {
            label: format!("{variant},seed={seed}"),
            hash: format!("{variant}{seed}"),
            state: state.into(),
            seed,
            varied: vec![],
            variant: variant.into(),
            metrics: BTreeMap::from([("fid".to_string(), fid)]),
            steps: None,
            device: None,
            git_commit: None,
            git_dirty: None,
            profile: None,
            hardware: None,
            cpu_isa: None,
            curves: vec![],
            per_t: vec![],
            model_evaluations: None,
            samples: Default::default(),
            replicate: 0,
            evaluations: vec![],
        }
    }

    #[test]
    fn summaries_leave_out_unfinished_runs_and_pairs_match_seeds() {
        let records = vec![
            record("linear", 0, "done", 10.0),
            record("linear", 1, "done", 12.0),
            record("linear", 2, "done", 14.0),
            record("cosine", 0, "done", 9.0),
            record("cosine", 1, "done", 10.0),
            record("cosine", 2, "failed", 1.0),
        ];
        let (s, left_out) = summaries(&records);
        assert_eq!(left_out, vec!["cosine,seed=2 (failed)".to_string()]);
        let cos = &s.iter().find(|(v, m, _)| v == "cosine" && m == "fid").unwrap().2;
        assert_eq!((cos.n, cos.mean), (2, 9.5));
        let lin = &s.iter().find(|(v, m, _)| v == "linear" && m == "fid").unwrap().2;
        // 10, 12, 14: sd 2, half-width t₀.₉₇₅,₂ · 2/√3 = 4.302653 · 1.154701.
        assert!((lin.ci_high - 12.0 - 4.302653 * 2.0 / 3f64.sqrt()).abs() < 1e-5, "{lin:?}");
        // Seeds 0 and 1 pair up: differences −1 and −2.
        let p = paired(&records, "linear");
        assert_eq!(p.len(), 1);
        let d = &p[0].2;
        assert_eq!((p[0].0.as_str(), d.n, d.mean), ("cosine", 2, -1.5));
        assert!((d.std - 0.5f64.sqrt()).abs() < 1e-12);
    }
}
