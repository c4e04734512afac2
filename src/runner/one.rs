//! `ddpm run-one <run-dir>`: executes one run in this process, holding the run's lock, resuming from
//! its newest valid checkpoint, and recording the outcome in `status.json`.
use super::events::{emit, Event, EventReporter};
use crate::config::{EvalConfig, RunSpec};
use crate::eval::during::DuringTraining;
use crate::eval::run_eval;
use crate::progress::Progress;
use crate::progress::Reporter;
use crate::track::lock::{self, Acquired};
use crate::track::run_dir::{Folder, RunDir, State, Status};
use crate::train::{stop, train_run};
use anyhow::{Context, Result};
use std::path::Path;
use tch::Device;

/// How `run-one` ended; its exit code tells the runner.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Done,
    AlreadyDone,
    Failed,
    Busy,
    /// Stopped by SIGUSR1/SIGTERM after writing a checkpoint; the next attempt resumes.
    Stopped,
}

impl Ended {
    pub const BUSY_EXIT: i32 = 75;
    pub const ALREADY_DONE_EXIT: i32 = 76;
    /// Also written into the Slurm script, which requeues the task on it.
    pub const STOPPED_EXIT: i32 = 77;

    pub fn exit_code(&self) -> i32 {
        match self {
            Ended::Done => 0,
            Ended::Failed => 1,
            Ended::Busy => Self::BUSY_EXIT,
            Ended::AlreadyDone => Self::ALREADY_DONE_EXIT,
            Ended::Stopped => Self::STOPPED_EXIT,
        }
    }
}

/// Puts an evaluation's numbers into the run's `status.json` as its latest evaluation.
pub fn record_evaluation(dir: &RunDir, result: &run_eval::EvalResult) -> Result<()> {
    let mut status = dir.status()?.context("no status.json")?;
    status.eval_spec = Some(result.spec.clone());
    status.metrics = result.metrics.clone();
    status.error = None;
    status.updated_unix = crate::track::unix_now();
    dir.write_status(&status)
}

/// Whether `eval` (resolved for the device that evaluates: `EvalConfig::for_device`) asks for
/// something that this run has no stored result for.
pub fn needs_evaluation(run_dir: &Path, eval: &EvalConfig) -> bool {
    (eval.fid || eval.bpd) && run_eval::stored(run_dir, eval).is_none()
}

/// Whether a reader sees an evaluation of `eval` pending (`run_eval::stored_as_evaluated`).
pub fn evaluation_pending(run_dir: &Path, eval: &EvalConfig) -> bool {
    (eval.fid || eval.bpd) && run_eval::stored_as_evaluated(run_dir, eval).is_none()
}

/// Whether any of `evals` asks for something that this run has no stored result for.
fn needs_any(run_dir: &Path, evals: &[EvalConfig]) -> bool {
    evals.iter().any(|e| needs_evaluation(run_dir, e))
}

/// The `--eval` argument: one spec as a JSON object, or several as an array (runs of an experiment
/// that differ only in `[eval]` share the training and pass all their specs).
pub fn parse_evals(json: &str) -> Result<Vec<EvalConfig>> {
    let value: serde_json::Value = serde_json::from_str(json).context("--eval: not JSON")?;
    let evals = match value {
        serde_json::Value::Array(items) => {
            items.into_iter().map(serde_json::from_value).collect::<Result<Vec<EvalConfig>, _>>()
        }
        other => serde_json::from_value(other).map(|e| vec![e]),
    };
    evals.context("--eval: not an evaluation spec (the `[eval]` table as JSON) or a list of them")
}

/// Trains the run unless done, then evaluates it under each of `evals` (the run's own `[eval]` when
/// empty) whose result is not stored, in order. A run checkpointed on another device kind resumes only
/// with `allow_device_change`.
pub fn run_one(
    run_dir: &Path,
    device: Device,
    data_dir: &Path,
    events: bool,
    evals: Vec<EvalConfig>,
    allow_device_change: bool,
) -> Result<Ended> {
    let dir = RunDir { path: run_dir.to_path_buf() };
    let spec = dir.load_spec()?;
    let evals = if evals.is_empty() { vec![spec.config.eval.clone()] } else { evals };
    // Each spec as it runs here: the batch size the device gives it when the spec leaves it open.
    let evals: Vec<EvalConfig> = evals.iter().map(|e| e.for_device(device.is_cuda())).collect();
    // The math libraries' instruction set, before libtorch's first CPU kernel (this may re-execute
    // the process with the pinned environment). A CPU that cannot run it is the run's recorded error.
    let pinned = crate::hardware::pin_process(spec.config.train.cpu_isa);
    // Before the first cuBLAS call of this process (a run executes in a process of its own).
    crate::device::prepare(&spec.config.train, device);
    let world = crate::distributed::World::from_env()?;
    // Inside a Slurm step the tasks of a node share its GPUs: each takes its own (local rank).
    let device = match (device, world.as_ref(), std::env::var("SLURM_LOCALID").ok()) {
        (Device::Cuda(0), Some(_), Some(local)) if tch::Cuda::device_count() > 1 => {
            Device::Cuda(local.parse::<usize>().unwrap_or(0) % tch::Cuda::device_count() as usize)
        }
        (d, ..) => d,
    };
    if let Some(n) = std::env::var(crate::distributed::THREADS).ok().and_then(|v| v.parse::<i32>().ok()) {
        tch::set_num_threads(n.max(1));
    }
    if let Some(w) = world.as_ref().filter(|w| w.rank > 0) {
        return follow(&spec, &dir, device, data_dir, w);
    }
    let _lock = match lock::try_acquire(&dir.path)? {
        Acquired::Held(l) => l,
        Acquired::Busy(holder) => {
            if events {
                emit(&Event::Busy { holder: holder.clone() });
            }
            eprintln!("run {} is being executed by {holder}", spec.label);
            return Ok(Ended::Busy);
        }
    };
    let mut reporter: Box<dyn Reporter> =
        if events { Box::new(EventReporter::new()) } else { Box::new(Progress::new(&spec.label)) };
    if let Err(e) = pinned {
        let message = format!("{e:#}");
        reporter.note(&format!("not started: {message}"));
        let status = dir.status()?;
        if status.as_ref().is_some_and(|s| s.trained()) {
            // Trained; its evaluation waits for a machine that can run the pinned level.
            return Err(e);
        }
        let mut status = status.unwrap_or_else(|| Status::new(State::Failed, &spec, 0));
        (status.state, status.error) = (State::Failed, Some(message));
        dir.write_status(&status)?;
        return Ok(Ended::Failed);
    }
    let done = dir.status()?.filter(|s| s.trained());
    let status = match done {
        Some(s) if s.state == State::Done && !needs_any(&dir.path, &evals) => return Ok(Ended::AlreadyDone),
        Some(mut status) => {
            if status.state != State::Done {
                // Stopped during its evaluation: trained; what is left is evaluated below.
                reporter.note("trained; stopped during its evaluation before: evaluating (no training)");
                status.state = State::Done;
                dir.write_status(&status)?;
            }
            status
        }
        None => match train(&spec, &dir, device, data_dir, reporter.as_mut(), allow_device_change, world.as_ref())? {
            Trained::Done(status) => *status,
            Trained::Failed => return Ok(Ended::Failed),
            Trained::Stopped => return Ok(Ended::Stopped),
        },
    };
    let mut failures = Vec::new();
    for eval in evals.iter().filter(|e| needs_evaluation(&dir.path, e)) {
        if let Some(signal) = crate::signal::requested() {
            // Trained and saved; the evaluations left run in the next attempt.
            reporter.note(&format!("{signal}: stopping before the evaluation"));
            return Ok(Ended::Stopped);
        }
        let evaluated = crate::device::catching(device, || {
            run_eval::evaluate_run(&dir.path, eval, device, data_dir, reporter.as_mut())
        });
        match evaluated {
            Ok((result, _)) => record_evaluation(&dir, &result)?,
            Err(e) if crate::signal::is_interrupted(&e) => {
                reporter.note(&format!("{e:#}"));
                let mut status = dir.status()?.unwrap_or(status);
                status.state = State::Stopped;
                dir.write_status(&status)?;
                return Ok(Ended::Stopped);
            }
            Err(e) => {
                let message = format!("evaluation failed: {e:#}");
                reporter.note(&message);
                failures.push(message);
            }
        }
    }
    if failures.is_empty() {
        return Ok(Ended::Done);
    }
    // The training stands; the run stays done, with the evaluation's error on record.
    let mut status = dir.status()?.unwrap_or(status);
    status.error = Some(failures.join("; "));
    dir.write_status(&status)?;
    Ok(Ended::Failed)
}

enum Trained {
    Done(Box<Status>),
    /// Recorded in `status.json`.
    Failed,
    /// On request, after a checkpoint (`status.json` says running at its step).
    Stopped,
}

/// The device kind the checkpoint of `step` was written on: its own record (`device`), else, for a
/// checkpoint of an older version, that of the last attempt (`attempts.jsonl`).
fn checkpointed_on(dir: &RunDir, step: usize) -> Option<String> {
    let recorded = crate::track::checkpoint::state(&dir.folder(Folder::Checkpoints), step)
        .ok()
        .and_then(|s| crate::track::legacy::checkpoint_device(&s));
    recorded.or_else(|| {
        dir.attempts()
            .iter()
            .rev()
            .find_map(|a| a.device.as_deref().map(|d| crate::device::kind_of_description(d).to_string()))
    })
}

/// Refuses to resume on another device kind than the checkpoint's unless allowed: CPU and CUDA draw
/// different random numbers from the same seed, so the resumed run would silently be neither the
/// CPU run nor the CUDA one.
pub fn check_device_change(dir: &RunDir, resume: Option<usize>, device: Device, allowed: bool) -> Result<bool> {
    let now = if device.is_cuda() { "cuda" } else { "cpu" };
    match resume.and_then(|step| Some((step, checkpointed_on(dir, step)?))) {
        Some((step, then)) if then != now => {
            if !allowed {
                anyhow::bail!(
                    "{}: its checkpoint at step {step} was written on {then}, and this attempt runs on {now}; \
                     {then} and {now} draw different random numbers, so the resumed run would match neither an \
                     uninterrupted {then} run nor a {now} one. Resume it on {then}, or pass --allow-device-change \
                     to resume here anyway (recorded in attempts.jsonl)",
                    dir.path.display()
                );
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// The processes that trained the checkpoint of the last attempt (1 for attempts before
/// `train.processes`).
fn processes_before(dir: &RunDir) -> usize {
    dir.attempts().last().and_then(|a| a.rest.get("processes")?.as_u64()).map_or(1, |n| n as usize)
}

/// Resuming with another number of processes than the checkpoint's: the same run within the
/// all-reduce's rounding when the network's training forward does not depend on the split (no batch
/// norm, no dropout), so allowed (and recorded); otherwise refused.
pub fn check_processes_change(dir: &RunDir, spec: &RunSpec, resume: Option<usize>, now: usize) -> Result<()> {
    let before = processes_before(dir);
    if let (Some(step), Some(why)) = (resume, spec.config.model.depends_on_the_split()) {
        if before != now {
            anyhow::bail!(
                "{}: its checkpoint at step {step} was trained by {before} process(es) and this attempt has {now} \
                 (train.processes); with {why} the result depends on how each batch is split, so the resumed run \
                 would match neither. Resume it with train.processes = {before} (--set train.processes={before})",
                dir.path.display()
            );
        }
    }
    Ok(())
}

/// A rank other than 0 of a run of several processes: no lock, status or events (rank 0 keeps them);
/// it trains its share, and fails with the reason on stderr or exits 0.
fn follow(
    spec: &RunSpec,
    dir: &RunDir,
    device: Device,
    data_dir: &Path,
    w: &crate::distributed::World,
) -> Result<Ended> {
    // Its exit says only whether it failed (0 otherwise: done, stopped or nothing to train): the run's
    // outcome is rank 0's, and under `srun --kill-on-bad-exit` a non-zero exit would end rank 0 too.
    if dir.status()?.is_some_and(|s| s.trained()) {
        return Ok(Ended::Done);
    }
    let g = crate::distributed::Group::join(w, device.is_cuda(), crate::distributed::timeout_from_env())?;
    let trained = crate::device::catching(device, || crate::train::follow(spec, dir, device, data_dir, &g));
    match trained {
        Ok(o) => {
            let d = o.metrics.get("ranks_max_weight_difference").copied().unwrap_or(f64::NAN);
            eprintln!("rank {} of {}: done; weights differ from rank 0's by at most {d:e}", w.rank, w.size);
            Ok(Ended::Done)
        }
        Err(e) if e.is::<stop::Stopped>() => {
            eprintln!("rank {} of {}: stopped with rank 0", w.rank, w.size);
            Ok(Ended::Done)
        }
        Err(e) => Err(e.context(format!("rank {} of {}", w.rank, w.size))),
    }
}

/// Trains the run.
fn train(
    spec: &RunSpec,
    dir: &RunDir,
    device: Device,
    data_dir: &Path,
    reporter: &mut dyn Reporter,
    allow_device_change: bool,
    world: Option<&crate::distributed::World>,
) -> Result<Trained> {
    let device_name = crate::device::describe(device);
    // What the loop will load: the newest checkpoint that verifies, not the newest file.
    let (resume, _) = dir.valid_checkpoint();
    let processes = world.map_or(1, |w| w.size);
    // Refusals before the attempt starts are the run's recorded error (the runner prints it).
    let checked = check_device_change(dir, resume, device, allow_device_change)
        .and_then(|changed| check_processes_change(dir, spec, resume, processes).map(|_| changed))
        .and_then(|changed| Ok((changed, crate::device::check_free_memory(device)?)));
    let (changed, memory) = match checked {
        Ok(c) => c,
        Err(e) => {
            let message = format!("{e:#}");
            reporter.note(&format!("not started: {message}"));
            let mut status = Status::new(State::Failed, spec, resume.unwrap_or(0));
            status.error = Some(message);
            dir.write_status(&status)?;
            return Ok(Trained::Failed);
        }
    };
    let mut extra = serde_json::Map::new();
    if let Some((free, total)) = memory {
        extra.insert("device_memory_free_bytes".into(), free.into());
        extra.insert("device_memory_total_bytes".into(), total.into());
    }
    if changed {
        extra.insert("device_change_allowed".into(), true.into());
    }
    let hardware = crate::hardware::Hardware::here(device, spec.config.train.cpu_isa);
    extra.insert("hardware_key".into(), hardware.key().into());
    extra.insert("processes".into(), processes.into());
    extra.insert("hardware".into(), serde_json::to_value(&hardware)?);
    dir.record_attempt(&device_name, resume, crate::device::determinism(), extra)?;
    dir.write_status(&Status::new(State::Running, spec, resume.unwrap_or(0)))?;
    // A libtorch error (tch panics on one) is the run's recorded error, not a crash without an outcome.
    let trained = crate::device::catching(device, || {
        let during = DuringTraining::for_run(&spec.config, &dir.path, device, data_dir);
        let hooks: Vec<Box<dyn crate::train::Hook>> =
            during.into_iter().map(|d| Box::new(d) as Box<dyn crate::train::Hook>).collect();
        let group = match world {
            Some(w) => {
                Some(crate::distributed::Group::join(w, device.is_cuda(), crate::distributed::timeout_from_env())?)
            }
            None => None,
        };
        train_run(spec, dir, device, data_dir, reporter, hooks, group.as_ref())
    });
    match trained {
        Ok(o) => {
            let mut status = Status::new(State::Done, spec, spec.config.train.steps);
            status.final_loss = Some(o.final_loss);
            status.images_per_sec = Some(o.images_per_sec);
            status.wall_seconds = Some(o.wall_seconds);
            status.weights_sha256 = Some(o.weights_sha256);
            status.ema_sha256 = Some(o.ema_sha256);
            status.parameters = Some(o.parameters);
            status.resumed_from = o.resumed_from;
            status.best_fid_during = o.best_fid_during;
            status.train_metrics = o.metrics;
            dir.write_status(&status)?;
            Ok(Trained::Done(Box::new(status)))
        }
        Err(e) if e.is::<stop::Stopped>() => {
            let stopped = e.downcast_ref::<stop::Stopped>().map_or(0, |s| s.step);
            dir.write_status(&Status::new(State::Stopped, spec, stopped))?;
            Ok(Trained::Stopped)
        }
        Err(e) if crate::signal::is_interrupted(&e) => {
            // After the last step (the final samples, the cluster grids; its checkpoint written) or
            // before the first (the reference statistics): the next attempt resumes from the newest
            // valid checkpoint and redoes what follows it.
            let step = dir.valid_checkpoint().0.unwrap_or(0);
            reporter.note(&format!("{e:#}; the next run resumes from the checkpoint at step {step}"));
            dir.write_status(&Status::new(State::Stopped, spec, step))?;
            Ok(Trained::Stopped)
        }
        Err(e) => {
            let message = format!("{e:#}");
            reporter.note(&format!("failed: {message}"));
            let mut status = Status::new(State::Failed, spec, dir.checkpoint_step().unwrap_or(0));
            status.error = Some(message);
            dir.write_status(&status)?;
            Ok(Trained::Failed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run whose checkpoint was written on CUDA does not resume on the CPU (nor the reverse) unless
    /// allowed; the same kind, or no checkpoint, is no change.
    #[test]
    fn resuming_on_another_device_kind_needs_permission() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir { path: dir.path().to_path_buf() };
        let attempt =
            |device: &str| run.record_attempt(device, None, serde_json::json!({}), Default::default()).unwrap();
        attempt("cuda:0 (of 1 CUDA devices; CUDA_VISIBLE_DEVICES=2)");
        let err = check_device_change(&run, Some(250), Device::Cpu, false).unwrap_err().to_string();
        assert!(err.contains("written on cuda") && err.contains("--allow-device-change"), "{err}");
        assert!(check_device_change(&run, Some(250), Device::Cpu, true).unwrap(), "allowed, and said so");
        assert!(!check_device_change(&run, Some(250), Device::Cuda(0), false).unwrap(), "same kind");
        assert!(!check_device_change(&run, None, Device::Cpu, false).unwrap(), "nothing to resume");
        attempt("cpu (2 threads)");
        assert!(check_device_change(&run, Some(500), Device::Cuda(0), false).is_err(), "and the reverse");
    }

    /// Another number of processes resumes a run whose result does not depend on the split, and is
    /// refused, naming the key and the count to use, for batch norm or dropout.
    #[test]
    fn resuming_with_another_number_of_processes() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir { path: dir.path().to_path_buf() };
        let mut extra = serde_json::Map::new();
        extra.insert("processes".into(), 2.into());
        run.record_attempt("cpu (1 threads)", None, serde_json::json!({}), extra).unwrap();
        let spec = |model: &str| {
            let mut config = crate::config::RunConfig::default();
            config.model = crate::config::model::ModelConfig::default_named(model).unwrap();
            RunSpec { experiment: "e".into(), label: "e".into(), config, hash: "h".into() }
        };
        assert!(check_processes_change(&run, &spec("simple"), Some(10), 1).is_ok(), "no batch norm, no dropout");
        assert!(check_processes_change(&run, &spec("simple_bn"), Some(10), 2).is_ok(), "the same number");
        assert!(check_processes_change(&run, &spec("simple_bn"), None, 1).is_ok(), "nothing to resume");
        let err = check_processes_change(&run, &spec("simple_bn"), Some(10), 1).unwrap_err().to_string();
        assert!(err.contains("trained by 2 process(es)") && err.contains("train.processes = 2"), "{err}");
        assert!(err.contains("batch norm"), "{err}");
        let mut dropout = spec("unet");
        if let crate::config::model::ModelConfig::Unet(c) = &mut dropout.config.model {
            c.dropout = 0.1;
        }
        let err = check_processes_change(&run, &dropout, Some(10), 3).unwrap_err().to_string();
        assert!(err.contains("dropout"), "{err}");
    }
}
