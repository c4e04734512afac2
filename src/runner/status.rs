//! Where each run of an experiment stands (`ddpm plan`, `ddpm status`).
use crate::eval::metric;
use crate::experiment::Experiment;
use crate::track::run_dir::RunDir;
use crate::track::state::{settle, state_of, RunState};
use crate::track::unix_now;
use std::fmt::Write;
use std::path::Path;

/// The state of a run, after a stale `running` status (its process gone) was rewritten as
/// `interrupted` (`settle`; a file that cannot be rewritten is read as it is).
fn settled_state(dir: &RunDir) -> RunState {
    let _ = settle(dir);
    state_of(dir)
}

/// The state of a run as the experiment sees it: a done training whose `[eval]` has no stored result
/// yet has an evaluation pending.
fn shown_state(exp: &Experiment, i: usize, results_root: &Path) -> String {
    let spec = &exp.runs[i];
    let dir = RunDir::new(results_root, &spec.hash);
    let state = settled_state(&dir);
    let mut text = state.to_string();
    if state == RunState::Done && super::one::evaluation_pending(&dir.path, &spec.config.eval) {
        text.push_str(", eval pending");
    }
    if let Some(first) = exp.runs[..i].iter().find(|r| r.hash == spec.hash) {
        text = format!("{text} (training of {})", first.label);
    }
    text
}

/// An experiment in numbers: its runs, its trainings (runs that differ only in `[eval]` share one)
/// and its shown states (`shown_state`), in run order.
struct Summary {
    runs: usize,
    trainings: usize,
    states: Vec<String>,
}

impl Summary {
    fn of(exp: &Experiment, results_root: &Path) -> Self {
        let mut hashes: Vec<&str> = exp.runs.iter().map(|r| r.hash.as_str()).collect();
        hashes.sort();
        hashes.dedup();
        let states = (0..exp.runs.len()).map(|i| shown_state(exp, i, results_root)).collect();
        Summary { runs: exp.runs.len(), trainings: hashes.len(), states }
    }

    fn done(&self) -> usize {
        self.states.iter().filter(|s| s.starts_with("done")).count()
    }
}

/// `ddpm plan`: label, hash and state of every run; runs that differ only in `[eval]` share a
/// training and say whose.
pub fn plan_table(exp: &Experiment, results_root: &Path) -> String {
    let summary = Summary::of(exp, results_root);
    let trainings = match summary.trainings {
        n if n == summary.runs => String::new(),
        1 => ", 1 training (the runs differ only in [eval])".to_string(),
        n => format!(", {n} trainings (runs that differ only in [eval] share one)"),
    };
    let mut out = format!("experiment `{}`: {} run(s){trainings}\n", exp.name, exp.runs.len());
    for (spec, state) in exp.runs.iter().zip(&summary.states) {
        writeln!(out, "  {:16}  {:32}  {}", spec.hash, state, spec.label).expect("String");
    }
    out
}

/// `ddpm plan <folder>`: every experiment file of the folder (sorted): its name, runs, trainings, how
/// many runs are done and its description; a file that does not load shows its error. Returns the
/// table and the number of files that failed. A file gets the profile `chosen` names for it (what `run`
/// would pick by itself on this machine; None: `load`'s), shown beside its description.
pub fn plan_folder(
    folder: &Path,
    load: &crate::experiment::LoadOptions,
    results_root: &Path,
    chosen: &dyn Fn(&Path) -> Option<String>,
) -> anyhow::Result<(String, usize)> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| anyhow::anyhow!("cannot list {}: {e}", folder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out = format!(
        "{} experiment file(s) in {}{}\n",
        files.len(),
        folder.display(),
        load.profile.as_ref().map(|p| format!(" (profile {p})")).unwrap_or_default()
    );
    writeln!(out, "  {:32}  {:>5}  {:>9}  {:>5}  description", "file", "runs", "trainings", "done").expect("String");
    let mut failed = 0;
    for f in &files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let picked = chosen(f);
        let opts = crate::experiment::LoadOptions { profile: picked.clone().or(load.profile.clone()), ..load.clone() };
        match crate::experiment::load_experiment(f, &opts) {
            Ok(exp) => {
                let summary = Summary::of(&exp, results_root);
                writeln!(
                    out,
                    "  {name:32}  {:>5}  {:>9}  {:>5}  {}",
                    summary.runs,
                    summary.trainings,
                    summary.done(),
                    picked.map(|p| format!("[profile `{p}` here] ")).unwrap_or_default()
                        + exp.description.as_deref().unwrap_or("")
                )
                .expect("String");
            }
            Err(e) => {
                failed += 1;
                let first = format!("{e:#}");
                writeln!(out, "  {name:32}  error: {}", first.lines().next().unwrap_or_default()).expect("String");
            }
        }
    }
    Ok((out, failed))
}

/// What `ddpm status` shows of a queue (Slurm): per run hash, its newest task and that task's state;
/// and a line per submission. The queue's module fills it in; this one only prints it.
pub struct View {
    pub tasks: std::collections::BTreeMap<String, String>,
    pub lines: Vec<String>,
}

/// `ddpm status`: label, hash, state, step/total, last loss, device and elapsed time of every run, and
/// the Slurm task of each run when the experiment was submitted there.
pub fn status_table(exp: &Experiment, results_root: &Path, slurm: Option<&View>) -> String {
    let width = exp.runs.iter().map(|r| r.label.len()).max().unwrap_or(3).max(3);
    let titles = metric::headline_titles();
    let mut out = format!(
        "experiment `{}`\n  {:width$}  {:16}  {:32}  {:>13}  {:>10}  {:24}  {:>9}{titles}{}\n",
        exp.name,
        "run",
        "hash",
        "state",
        "step",
        "last loss",
        "device",
        "elapsed",
        if slurm.is_some() { "  slurm" } else { "" }
    );
    for (i, spec) in exp.runs.iter().enumerate() {
        let dir = RunDir::new(results_root, &spec.hash);
        let state = settled_state(&dir);
        let status = dir.status().ok().flatten();
        let own = crate::eval::run_eval::stored_as_evaluated(&dir.path, &spec.config.eval);
        let total = spec.config.train.steps;
        let step = match (&state, &status) {
            (RunState::Done, _) => total,
            (RunState::Partial(s, _), _) => *s,
            (_, Some(s)) => s.step,
            _ => 0,
        };
        // The loss of the step shown: a run that restarts below its status' step (no valid checkpoint
        // there) has none yet.
        let loss = status
            .as_ref()
            .and_then(|s| match &state {
                RunState::Done | RunState::EvaluationStopped => s.final_loss.or(s.last_loss),
                _ if s.step == step => s.last_loss,
                _ => None,
            })
            .map_or("-".into(), |l| format!("{l:.5}"));
        let attempts = dir.attempts();
        let last = attempts.last();
        let device = last.and_then(|a| a.device.as_deref()).unwrap_or("-").to_string();
        let elapsed = match (&state, &status, last) {
            (RunState::Done, Some(s), _) => s.wall_seconds.map_or("-".into(), |w| format!("{w:.0}s")),
            (RunState::Running(_), _, Some(a)) => {
                a.started_unix.map_or("-".into(), |t| format!("{:.0}s", unix_now() - t))
            }
            _ => "-".into(),
        };
        let values = own.map(|r| r.metrics).unwrap_or_default();
        let cells = metric::headline_cells(&values);
        let task =
            slurm.map_or(String::new(), |v| format!("  {}", v.tasks.get(&spec.hash).map_or("-", String::as_str)));
        writeln!(
            out,
            "  {:width$}  {:16}  {:32}  {:>13}  {:>10}  {:24}  {:>9}{cells}{task}",
            spec.label,
            spec.hash,
            shown_state(exp, i, results_root),
            format!("{step}/{total}"),
            loss,
            device,
            elapsed,
        )
        .expect("String");
    }
    for line in slurm.map_or(&[][..], |v| &v.lines[..]) {
        writeln!(out, "  {line}").expect("String");
    }
    out
}
