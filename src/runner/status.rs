//! Where each run of an experiment stands (`ddpm plan`, `ddpm status`).
use crate::config::Experiment;
use crate::track::run_dir::{RunDir, State};
use crate::track::{lock, unix_now};
use std::fmt::Write;
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    New,
    Done,
    Failed,
    /// A live process holds the run's lock.
    Running(String),
    /// Stopped before the end with a checkpoint at this step: the next `run` resumes.
    Partial(usize),
    /// Stopped before its first checkpoint: the next `run` starts it over.
    Interrupted,
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunState::New => write!(f, "new"),
            RunState::Done => write!(f, "done"),
            RunState::Failed => write!(f, "failed"),
            RunState::Running(holder) => write!(f, "running ({holder})"),
            RunState::Partial(step) => write!(f, "partial (resumes at step {step})"),
            RunState::Interrupted => write!(f, "interrupted"),
        }
    }
}

pub fn state_of(dir: &RunDir) -> RunState {
    if let Some(holder) = lock::held_by(&dir.path) {
        return RunState::Running(holder);
    }
    match dir.status().ok().flatten().map(|s| s.state) {
        Some(State::Done) => RunState::Done,
        Some(State::Failed) => RunState::Failed,
        Some(State::Running) => dir.checkpoint_step().map_or(RunState::Interrupted, RunState::Partial),
        None => dir.checkpoint_step().map_or(RunState::New, RunState::Partial),
    }
}

/// `ddpm plan`: label, hash and state of every run.
pub fn plan_table(exp: &Experiment, results_root: &Path) -> String {
    let mut out = format!("experiment `{}`: {} run(s)\n", exp.name, exp.runs.len());
    for spec in &exp.runs {
        let state = state_of(&RunDir::new(results_root, &spec.hash));
        writeln!(out, "  {:16}  {:32}  {}", spec.hash, state.to_string(), spec.label).expect("String");
    }
    out
}

/// `ddpm status`: label, hash, state, step/total, last loss, device and elapsed time of every run, and
/// the Slurm task of each run when the experiment was submitted there.
pub fn status_table(exp: &Experiment, results_root: &Path, slurm: Option<&super::slurm::View>) -> String {
    let width = exp.runs.iter().map(|r| r.label.len()).max().unwrap_or(3).max(3);
    let mut out = format!(
        "experiment `{}`\n  {:width$}  {:16}  {:32}  {:>13}  {:>10}  {:24}  {:>9}  {:>8}  {:>8}{}\n",
        exp.name,
        "run",
        "hash",
        "state",
        "step",
        "last loss",
        "device",
        "elapsed",
        "FID",
        "bits/dim",
        if slurm.is_some() { "  slurm" } else { "" }
    );
    for spec in &exp.runs {
        let dir = RunDir::new(results_root, &spec.hash);
        let state = state_of(&dir);
        let status = dir.status().ok().flatten();
        let total = spec.config.train.steps;
        let step = match (&state, &status) {
            (RunState::Done, _) => total,
            (RunState::Partial(s), _) => *s,
            (_, Some(s)) => s.step,
            _ => 0,
        };
        let loss = status.as_ref().and_then(|s| s.final_loss.or(s.last_loss)).map_or("-".into(), |l| format!("{l:.5}"));
        let attempts = dir.attempts();
        let last = attempts.last();
        let device = last.and_then(|a| a["device"].as_str()).unwrap_or("-").to_string();
        let elapsed = match (&state, &status, last) {
            (RunState::Done, Some(s), _) => s.wall_seconds.map_or("-".into(), |w| format!("{w:.0}s")),
            (RunState::Running(_), _, Some(a)) => {
                a["started_unix"].as_f64().map_or("-".into(), |t| format!("{:.0}s", unix_now() - t))
            }
            _ => "-".into(),
        };
        let task =
            slurm.map_or(String::new(), |v| format!("  {}", v.tasks.get(&spec.hash).map_or("-", String::as_str)));
        writeln!(
            out,
            "  {:width$}  {:16}  {:32}  {:>13}  {:>10}  {:24}  {:>9}  {:>8}  {:>8}{task}",
            spec.label,
            spec.hash,
            state.to_string(),
            format!("{step}/{total}"),
            loss,
            device,
            elapsed,
            status.as_ref().and_then(|s| s.fid).map_or("-".into(), |v| format!("{v:.2}")),
            status.as_ref().and_then(|s| s.bpd).map_or("-".into(), |v| format!("{v:.4}")),
        )
        .expect("String");
    }
    for line in slurm.map_or(&[][..], |v| &v.lines[..]) {
        writeln!(out, "  {line}").expect("String");
    }
    out
}
