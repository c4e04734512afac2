//! The experiment as TensorBoard shows it: `results/experiments/<experiment>/` is the log dir, its
//! label links are the runs, and the HParams data (see `track::hparams`) puts one row per run in the
//! HParams dashboard with its hyperparameters and metrics.
use crate::eval::metric;
use crate::experiment::Experiment;
use crate::track::hparams::{self, flat, HParamInfo, HValue, SessionStatus};
use crate::track::run_dir::{RunDir, State};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Shown for every run whether or not it varies, as the issue of comparing ablations asks.
const ALWAYS: [&str; 6] =
    ["model.name", "diffusion.schedule.name", "diffusion.timesteps", "train.loss", "diffusion.target", "seed"];

/// The scalar tags shown as metric columns: every registered evaluation metric's `eval/<tag>` and the
/// training's own scalars.
pub fn metric_tags() -> Vec<String> {
    let mut tags: Vec<String> = metric::all().into_iter().filter_map(|m| m.tag.map(|t| format!("eval/{t}"))).collect();
    tags.extend(["train/loss", "train/images_per_sec"].map(String::from));
    tags.extend(metric::during().iter().filter_map(|m| m.tag.map(|t| format!("eval_during/{t}"))));
    tags
}

pub fn logdir(results_root: &Path, experiment: &str) -> PathBuf {
    results_root.join("experiments").join(experiment)
}

/// The hyperparameters of each run: the keys whose values differ across the experiment, and `ALWAYS`.
pub fn hparams_of(exp: &Experiment) -> (Vec<String>, Vec<BTreeMap<String, HValue>>) {
    let flats: Vec<BTreeMap<String, HValue>> = exp.runs.iter().map(|r| flat(&r.config)).collect();
    let mut keys: Vec<String> = flats
        .first()
        .map(|f| {
            f.keys()
                .filter(|k| flats.iter().any(|g| g.get(*k) != f.get(*k)) || ALWAYS.contains(&k.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for f in &flats[1..] {
        for k in f.keys() {
            if !keys.contains(k) && flats.iter().any(|g| g.get(k) != f.get(k)) {
                keys.push(k.clone());
            }
        }
    }
    (keys, flats)
}

/// Writes the experiment's HParams file and each run's session file (status from `status.json`).
pub fn write_hparams(exp: &Experiment, results_root: &Path) -> Result<()> {
    let (keys, flats) = hparams_of(exp);
    let infos: Vec<HParamInfo> = keys
        .iter()
        .map(|k| {
            let mut values: Vec<HValue> = Vec::new();
            for f in &flats {
                if let Some(v) = f.get(k) {
                    if !values.contains(v) {
                        values.push(v.clone());
                    }
                }
            }
            HParamInfo { name: k.clone(), values }
        })
        .collect();
    let dir = logdir(results_root, &exp.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let description = exp.description.clone().unwrap_or_default();
    hparams::write_file(
        &dir,
        &[(
            hparams::EXPERIMENT_TAG,
            hparams::experiment(
                &exp.name,
                &description,
                &infos,
                &metric_tags().iter().map(String::as_str).collect::<Vec<_>>(),
            ),
        )],
    )?;
    for (i, (spec, f)) in exp.runs.iter().zip(&flats).enumerate() {
        // One row per run directory: runs that share a training (they differ in `[eval]`) show as the
        // first of them; their evaluations are the `eval@<spec-hash>/` tags of that directory.
        if !exp.runs[..i].iter().any(|r| r.hash == spec.hash) {
            write_session(&RunDir::new(results_root, &spec.hash), &spec.label, &keys, f)?;
        }
    }
    Ok(())
}

fn write_session(run: &RunDir, label: &str, keys: &[String], values: &BTreeMap<String, HValue>) -> Result<()> {
    if !run.path.is_dir() {
        return Ok(());
    }
    let hp: Vec<(String, HValue)> = keys.iter().filter_map(|k| values.get(k).map(|v| (k.clone(), v.clone()))).collect();
    let status = run.status()?;
    let started = run.attempts().first().and_then(|a| a.started_unix).unwrap_or(0.0);
    let mut records = vec![(hparams::SESSION_START_TAG, hparams::session_start(&hp, label, started))];
    let end = match status.as_ref().map(|s| s.state) {
        Some(State::Done) => Some(SessionStatus::Success),
        Some(State::Failed) => Some(SessionStatus::Failure),
        _ => None,
    };
    if let (Some(end), Some(s)) = (end, &status) {
        records.push((hparams::SESSION_END_TAG, hparams::session_end(end, s.updated_unix)));
    }
    hparams::write_file(&run.path, &records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RunConfig, RunSpec, ScheduleConfig};

    #[test]
    fn varied_keys_and_the_fixed_ones_are_hyperparameters() {
        let a = RunConfig::default();
        let mut b = a.clone();
        b.diffusion.schedule = ScheduleConfig::default_named("cosine").unwrap();
        b.train.lr = 1e-3;
        let exp = Experiment {
            name: "e".into(),
            description: None,
            path: "e.toml".into(),
            profile: None,
            profile_reason: None,
            cpu_bf16_profile: None,
            runs: vec![RunSpec::new("e", "a".into(), a).unwrap(), RunSpec::new("e", "b".into(), b).unwrap()],
            sources: vec![],
            baseline: None,
            loss_log_scale: true,
            question: Default::default(),
        };
        let (keys, flats) = hparams_of(&exp);
        for k in [
            "train.lr",
            "diffusion.schedule.name",
            "diffusion.schedule.s",
            "diffusion.schedule.beta_end",
            "model.name",
            "seed",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} in {keys:?}");
        }
        assert!(!keys.iter().any(|k| k == "train.batch_size"), "an unvaried, unlisted key is not a column");
        assert_eq!(flats[1]["train.lr"], HValue::Number(1e-3));
    }
}
