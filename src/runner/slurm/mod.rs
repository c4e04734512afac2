//! Runs an experiment on a Slurm cluster through Slurm's own machinery: ONE job array over the runs
//! that are not done (task i executes run i with `ddpm run-one`, which takes the run's lock and resumes
//! a partial run), submitted with `--requeue` and `--signal=B:USR1@<s>` so that a run warned of its
//! time limit or preempted writes a checkpoint and comes back, and an analysis job that starts when
//! the array has ended (`--dependency=afterany`). The content-hashed run directories on a shared
//! filesystem make submitting twice safe: what is done is skipped, and a run queued by an earlier
//! submission that Slurm still holds is not queued again.
//!
//! Each submission's scripts and its index → run map stay in `results/experiments/<experiment>/slurm/`
//! (`submit-<n>.sbatch`, `submit-<n>.tsv`, `analyze-<n>.sbatch`, `logs/`), and `submissions.jsonl`
//! records the job ids for `ddpm status` and `ddpm cancel`.
pub mod config;
mod queue;
pub mod script;

use crate::experiment::{load_experiment, Experiment, LoadOptions};
use crate::runner::status::View;
use crate::track::run_dir::RunDir;
use crate::track::state::{state_of, RunState};
use crate::track::{atomic_write, unix_now};
use anyhow::{Context, Result};
use config::SlurmConfig;
use script::{Paths, Task};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct SubmitOptions {
    pub experiment: PathBuf,
    pub load: LoadOptions,
    pub results_root: PathBuf,
    pub data_dir: PathBuf,
    /// `--device` of each task (`auto`: the GPU Slurm gives it, else the CPU).
    pub device: String,
    /// The arguments of the analysis job's `ddpm analyze` (experiment file and its layers).
    pub analyze_args: Vec<String>,
    pub config: SlurmConfig,
    /// Each task may resume its run on another device kind (`--allow-device-change`).
    pub allow_device_change: bool,
}

/// Whether the tasks will run on CUDA: `--device cuda[:N]`, or `auto` with a `--gres` that names a GPU
/// (`gpu:1`, `gpu:a100:2`).
pub fn uses_cuda(device: &str, gres: Option<&str>) -> bool {
    match device {
        "auto" => gres.is_some_and(|g| g.split(',').any(|r| r.trim().starts_with("gpu"))),
        d => d == "cuda" || d.starts_with("cuda:"),
    }
}

/// One `ddpm run --launcher slurm` that submitted something; a line of `submissions.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submission {
    pub number: usize,
    pub array_job: String,
    pub analyze_job: Option<String>,
    /// Array index → run.
    pub runs: Vec<SubmittedRun>,
    pub script: PathBuf,
    pub submitted_unix: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmittedRun {
    pub hash: String,
    pub label: String,
}

impl Submission {
    fn task_id(&self, index: usize) -> String {
        format!("{}_{index}", self.array_job)
    }
}

/// `results/experiments/<experiment>/slurm`
pub fn dir(results_root: &Path, experiment: &str) -> PathBuf {
    results_root.join("experiments").join(experiment).join("slurm")
}

fn record_path(results_root: &Path, experiment: &str) -> PathBuf {
    dir(results_root, experiment).join("submissions.jsonl")
}

/// The experiment's submissions, oldest first.
pub fn submissions(results_root: &Path, experiment: &str) -> Result<Vec<Submission>> {
    let path = record_path(results_root, experiment);
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Vec::new()) };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}: line {}", path.display(), i + 1)))
        .collect()
}

fn save_submissions(results_root: &Path, experiment: &str, all: &[Submission]) -> Result<()> {
    let mut text = String::new();
    for s in all {
        text.push_str(&serde_json::to_string(s)?);
        text.push('\n');
    }
    atomic_write(&record_path(results_root, experiment), text.as_bytes())
}

/// Run hash → the newest array task that holds it and Slurm still lists as queued or running.
fn queued(all: &[Submission], jobs: &BTreeMap<String, queue::Job>) -> BTreeMap<String, queue::Job> {
    let mut out = BTreeMap::new();
    for s in all {
        for (i, run) in s.runs.iter().enumerate() {
            if let Some(job) = jobs.get(&s.task_id(i)).filter(|j| j.active()) {
                out.insert(run.hash.clone(), job.clone());
            }
        }
    }
    out
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot make {} absolute", p.display()))
}

/// Prepares the runs and submits the array over those with work left (and the analysis job after it).
/// Returns None when there was nothing to submit.
pub fn submit(opts: &SubmitOptions) -> Result<Option<Submission>> {
    let exp = load_experiment(&opts.experiment, &opts.load)?;
    let root = &opts.results_root;
    println!("experiment `{}`: {} run(s), launcher slurm", exp.name, exp.runs.len());
    let done = crate::runner::prepare(&exp, root, uses_cuda(&opts.device, opts.config.gres.as_deref()))?;
    let mut previous = submissions(root, &exp.name)?;
    let in_queue = if previous.is_empty() { BTreeMap::new() } else { queued(&previous, &queue::jobs()?) };
    let mut tasks: Vec<Task> = Vec::new();
    let mut evals: BTreeMap<String, Vec<&crate::config::EvalConfig>> = BTreeMap::new();
    for (spec, done) in exp.runs.iter().zip(done) {
        if done.is_some() {
            continue;
        }
        if let Some(job) = in_queue.get(&spec.hash) {
            println!("skip {} ({}): already queued as job {} ({})", spec.label, spec.hash, job.id, job.describe());
            continue;
        }
        if let RunState::Running(holder) = state_of(&RunDir::new(root, &spec.hash)) {
            println!("skip {} ({}): being executed by {holder}", spec.label, spec.hash);
            continue;
        }
        evals.entry(spec.hash.clone()).or_default().push(&spec.config.eval);
        // Runs that differ only in `[eval]` are one task: one training, each run's evaluation.
        match tasks.iter_mut().find(|t| t.hash == spec.hash) {
            Some(t) => t.label = format!("{} + {}", t.label, spec.label),
            None => tasks.push(Task {
                hash: spec.hash.clone(),
                label: spec.label.clone(),
                evals: String::new(),
                processes: spec.config.train.processes,
            }),
        }
    }
    for t in &mut tasks {
        t.evals = serde_json::to_string(&evals[&t.hash])?;
    }
    if tasks.is_empty() {
        println!("nothing to submit: every run is done, queued or running");
        return Ok(None);
    }
    let slurm_dir = dir(root, &exp.name);
    let paths = Paths {
        binary: match &opts.config.binary {
            Some(b) => b.clone(),
            None => std::env::current_exe().context("cannot find the ddpm executable")?,
        },
        workdir: std::env::current_dir()?,
        runs: absolute(&root.join(crate::track::run_dir::RUNS))?,
        data: absolute(&opts.data_dir)?,
        logs: absolute(&slurm_dir.join("logs"))?,
    };
    std::fs::create_dir_all(&paths.logs).with_context(|| format!("cannot create {}", paths.logs.display()))?;
    let number = previous.last().map_or(1, |s| s.number + 1);
    let script = absolute(&slurm_dir.join(format!("submit-{number}.sbatch")))?;
    atomic_write(
        &script,
        script::array_script(
            &exp.name,
            &tasks,
            &opts.device,
            if opts.allow_device_change { "--allow-device-change" } else { "" },
            &paths,
            &opts.config,
        )
        .as_bytes(),
    )?;
    let mut map = String::from("index\thash\tlabel\trun_dir\n");
    for (i, t) in tasks.iter().enumerate() {
        map.push_str(&format!("{i}\t{}\t{}\t{}\n", t.hash, t.label, paths.runs.join(&t.hash).display()));
    }
    atomic_write(&slurm_dir.join(format!("submit-{number}.tsv")), map.as_bytes())?;
    let array_job = queue::sbatch(&script)?;
    let mut submission = Submission {
        number,
        array_job: array_job.clone(),
        analyze_job: None,
        runs: tasks.iter().map(|t| SubmittedRun { hash: t.hash.clone(), label: t.label.clone() }).collect(),
        script: script.clone(),
        submitted_unix: unix_now(),
    };
    previous.push(submission.clone());
    save_submissions(root, &exp.name, &previous)?;
    println!("submitted job array {array_job}: {} run(s), script {}", tasks.len(), script.display());
    for (i, t) in tasks.iter().enumerate() {
        println!("  {array_job}_{i}  {}  {}", t.hash, t.label);
    }
    if opts.config.analyze {
        let analyze = slurm_dir.join(format!("analyze-{number}.sbatch"));
        let text = script::analyze_script(&exp.name, &array_job, &opts.analyze_args, &paths, &opts.config);
        atomic_write(&analyze, text.as_bytes())?;
        let job = queue::sbatch(&analyze)?;
        println!("submitted analysis job {job} (after job array {array_job} ends)");
        submission.analyze_job = Some(job);
        *previous.last_mut().expect("just pushed") = submission.clone();
        save_submissions(root, &exp.name, &previous)?;
    }
    println!("follow it with `ddpm status {}`; logs in {}", opts.experiment.display(), paths.logs.display());
    Ok(Some(submission))
}

/// None when the experiment was never submitted to Slurm.
pub fn view(exp: &Experiment, results_root: &Path) -> Result<Option<View>> {
    let all = submissions(results_root, &exp.name)?;
    if all.is_empty() {
        return Ok(None);
    }
    let (jobs, problem) = match queue::jobs() {
        Ok(j) => (j, None),
        Err(e) => (BTreeMap::new(), Some(format!("{e:#}"))),
    };
    let state = |id: &str| jobs.get(id).map_or("ended (squeue no longer lists it)".into(), |j| j.describe());
    let mut view = View { tasks: BTreeMap::new(), lines: Vec::new() };
    for s in &all {
        for (i, run) in s.runs.iter().enumerate() {
            let id = s.task_id(i);
            view.tasks.insert(run.hash.clone(), format!("{id} {}", state(&id)));
        }
        let analyze = s.analyze_job.as_ref().map_or(String::new(), |a| format!(", analysis job {a}: {}", state(a)));
        view.lines.push(format!(
            "submission {}: job array {} ({} run(s), {}){analyze}",
            s.number,
            s.array_job,
            s.runs.len(),
            s.script.display()
        ));
    }
    if let Some(p) = problem {
        view.lines.push(format!("cannot ask Slurm: {p}"));
    }
    Ok(Some(view))
}

/// Cancels the experiment's jobs that Slurm still lists as queued or running; returns their ids.
pub fn cancel(exp: &Experiment, results_root: &Path) -> Result<Vec<String>> {
    let all = submissions(results_root, &exp.name)?;
    if all.is_empty() {
        return Ok(Vec::new());
    }
    let jobs = queue::jobs()?;
    let active = |id: &str| jobs.iter().any(|(k, j)| j.active() && (k == id || k.starts_with(&format!("{id}_"))));
    let mut ids = Vec::new();
    for s in &all {
        for id in std::iter::once(&s.array_job).chain(&s.analyze_job) {
            if active(id) {
                ids.push(id.clone());
            }
        }
    }
    queue::scancel(&ids)?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::uses_cuda;

    #[test]
    fn a_gpu_in_gres_or_a_cuda_device_means_cuda() {
        assert!(uses_cuda("auto", Some("gpu:1")) && uses_cuda("auto", Some("gpu:a100:2")));
        assert!(uses_cuda("auto", Some("tmpfs:10G,gpu:1")));
        assert!(!uses_cuda("auto", None) && !uses_cuda("auto", Some("tmpfs:10G")));
        assert!(uses_cuda("cuda", None) && uses_cuda("cuda:1", Some("gpu:2")));
        assert!(!uses_cuda("cpu", Some("gpu:1")), "--device cpu says no");
    }
}
