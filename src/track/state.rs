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
        }
    }
}

/// A run with checkpoints: the step it resumes at (0 when none verifies) and the corrupt ones.
fn partial(dir: &RunDir) -> Option<RunState> {
    let (valid, corrupt) = dir.valid_checkpoint();
    (valid.is_some() || !corrupt.is_empty()).then(|| RunState::Partial(valid.unwrap_or(0), corrupt))
}

pub fn state_of(dir: &RunDir) -> RunState {
    if let Some(holder) = lock::held_by(&dir.path) {
        return RunState::Running(holder);
    }
    match dir.status().ok().flatten().map(|s| s.state) {
        Some(State::Done) => RunState::Done,
        Some(State::Failed) => RunState::Failed(dir.valid_checkpoint().0),
        Some(State::Running | State::Stopped) => partial(dir).unwrap_or(RunState::Interrupted),
        None => partial(dir).unwrap_or(RunState::New),
    }
}
