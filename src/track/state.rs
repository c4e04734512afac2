//! Where a run directory stands, from its lock, status file and checkpoints: new, running, done,
//! failed, partial (resumable) or interrupted.
use super::lock;
use super::run_dir::{RunDir, State};

#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    New,
    Done,
    /// Failed; the next `run` tries again, from this step's checkpoint when one verifies.
    Failed(Option<usize>),
    /// A live process holds the run's lock.
    Running(String),
    /// Stopped before the end with checkpoints: the next `run` resumes at this step (0: no checkpoint
    /// verifies); the newer steps whose checkpoints are corrupt.
    Partial(usize, Vec<usize>),
    /// Stopped before its first checkpoint: the next `run` starts it over.
    Interrupted,
    /// Trained, and stopped on request during its evaluation: the next `run` evaluates it (no training).
    EvaluationStopped,
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunState::New => write!(f, "new"),
            RunState::Done => write!(f, "done"),
            RunState::Failed(None) => write!(f, "failed"),
            RunState::Failed(Some(step)) => write!(f, "failed (resumes at step {step})"),
            RunState::Running(holder) => write!(f, "running ({holder})"),
            RunState::Partial(step, corrupt) => {
                let skipped = if corrupt.is_empty() {
                    String::new()
                } else {
                    let steps: Vec<String> = corrupt.iter().map(|s| s.to_string()).collect();
                    format!("; corrupt checkpoint(s) at step {} skipped", steps.join(", "))
                };
                match step {
                    0 => write!(f, "partial (restarts at step 0: no valid checkpoint{skipped})"),
                    s => write!(f, "partial (resumes at step {s}{skipped})"),
                }
            }
            RunState::Interrupted => write!(f, "interrupted"),
            RunState::EvaluationStopped => write!(f, "stopped (trained; evaluation left)"),
        }
    }
}

/// A run with checkpoints: the step it resumes at (0 when none verifies) and the corrupt ones.
fn partial(dir: &RunDir) -> Option<RunState> {
    let (valid, corrupt) = dir.valid_checkpoint();
    (valid.is_some() || !corrupt.is_empty()).then(|| RunState::Partial(valid.unwrap_or(0), corrupt))
}

/// Whether process `pid` of this machine is alive (signal 0 reaches it, or exists without permission).
fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A `status.json` that says `running` though its process is gone (killed by SIGKILL or SIGINT, or
/// the machine crashed) is rewritten as `interrupted`, with the step the next attempt resumes at, so
/// that every reader (the analysis, TensorBoard's HParams, a user's script) sees what `plan` sees.
/// Only for a process of this machine (another's pid cannot be checked from here) whose run lock is
/// free; done under the lock, so that a runner starting meanwhile is not overwritten. Returns whether
/// it rewrote the file.
pub fn settle(dir: &RunDir) -> anyhow::Result<bool> {
    let stale = |s: &super::run_dir::Status| s.state == State::Running && s.host == super::hostname() && !alive(s.pid);
    if !dir.status().ok().flatten().is_some_and(|s| stale(&s)) || lock::held_by(&dir.path).is_some() {
        return Ok(false);
    }
    // Before the lock (verifying checkpoints reads them): the lock is held only to re-read and write,
    // so that a runner starting meanwhile finds it busy for milliseconds at most.
    let resumes = dir.valid_checkpoint().0.unwrap_or(0);
    let _lock = match lock::try_acquire(&dir.path)? {
        lock::Acquired::Held(l) => l,
        lock::Acquired::Busy(_) => return Ok(false),
    };
    let Some(mut status) = dir.status()?.filter(|s| stale(s)) else { return Ok(false) };
    status.error = Some(format!(
        "process {} on {} ended without recording an outcome (killed by SIGKILL or SIGINT, or a crash) at step {} \
         or later; the next run resumes at step {resumes}",
        status.pid, status.host, status.step
    ));
    status.state = State::Interrupted;
    dir.write_status(&status)?;
    Ok(true)
}

pub fn state_of(dir: &RunDir) -> RunState {
    if let Some(holder) = lock::held_by(&dir.path) {
        return RunState::Running(holder);
    }
    let status = dir.status().ok().flatten();
    if status.as_ref().is_some_and(|s| s.state == State::Stopped && s.trained()) {
        return RunState::EvaluationStopped;
    }
    match status.map(|s| s.state) {
        Some(State::Done) => RunState::Done,
        Some(State::Failed) => RunState::Failed(dir.valid_checkpoint().0),
        Some(State::Running | State::Stopped | State::Interrupted) => partial(dir).unwrap_or(RunState::Interrupted),
        None => partial(dir).unwrap_or(RunState::New),
    }
}
