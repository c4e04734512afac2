//! The stop hook: a stop requested by a signal (`crate::signal`: SIGUSR1 before a Slurm time limit,
//! SIGTERM on preemption) waits for the end of the logging window, so that the resumed run logs what
//! an uninterrupted one would (the window's sums are not part of the checkpoint); then a checkpoint
//! is written and training returns [`Stopped`].
use super::hook::{Hook, Step};
use anyhow::Result;

/// Training stopped at `step` on request; the checkpoint at `step` resumes it.
#[derive(Debug, thiserror::Error)]
#[error("stopped at step {step} on {signal}; a checkpoint at step {step} resumes it")]
pub struct Stopped {
    pub step: usize,
    pub signal: &'static str,
}

pub struct StopOnSignal;

impl Hook for StopOnSignal {
    fn name(&self) -> &'static str {
        "stop signal"
    }

    fn after_step(&mut self, s: &mut Step) -> Result<()> {
        if let Some(signal) = crate::signal::requested().filter(|_| s.logging && s.step < s.steps) {
            s.stop = Some(signal);
            s.checkpoint = true;
        }
        Ok(())
    }
}
