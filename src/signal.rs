//! A request to stop, process-wide: SIGUSR1 (Slurm's warning before a time limit, `--signal`) or
//! SIGTERM (preemption, `scontrol requeue`, `kill`). The handler only records the signal; the
//! training loop (`train::stop`) and the runner look at it when they can stop cleanly.
use std::sync::atomic::{AtomicI32, Ordering};

static REQUESTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(signal: libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    REQUESTED.store(signal, Ordering::SeqCst);
}

/// Routes SIGUSR1 and SIGTERM to the request flag (instead of ending the process).
pub fn install() {
    for signal in [libc::SIGUSR1, libc::SIGTERM] {
        // SAFETY: a handler that performs one atomic store is async-signal-safe; sigaction with a
        // zeroed struct, an empty mask and SA_RESTART is the documented way to install it.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The signal that asked to stop, if one did.
pub fn requested() -> Option<&'static str> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        libc::SIGUSR1 => Some("SIGUSR1"),
        libc::SIGTERM => Some("SIGTERM"),
        _ => Some("a signal"),
    }
}

/// `Continue` unless a stop was asked for: what a long loop's per-step callback returns (a sampler's
/// `on_step`), so that it ends early; its caller then returns [`Interrupted`] (`check`).
pub fn go_on() -> std::ops::ControlFlow<()> {
    match requested() {
        Some(_) => std::ops::ControlFlow::Break(()),
        None => std::ops::ControlFlow::Continue(()),
    }
}

/// A stop asked for during a phase after training (the final samples, an evaluation's sampling,
/// features, bound or classifier): the phase was abandoned, nothing of it was written, and the next
/// attempt does it again (the trained weights are kept).
#[derive(Debug, thiserror::Error)]
#[error("{signal} during {phase}: stopped; the next run redoes {phase} (the training is kept)")]
pub struct Interrupted {
    pub signal: &'static str,
    pub phase: String,
}

/// Between the batches of a long phase: Err when a stop was asked for.
pub fn check(phase: &str) -> Result<(), Interrupted> {
    match requested() {
        Some(signal) => Err(Interrupted { signal, phase: phase.to_string() }),
        None => Ok(()),
    }
}

/// Whether an error is, however deep in its chain, a stop (`Interrupted`) rather than a failure.
pub fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Interrupted>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivered_signal_is_recorded_instead_of_ending_the_process() {
        install();
        assert_eq!(requested(), None);
        // SAFETY: raise delivers SIGUSR1 to this thread; the handler above only stores it.
        unsafe { libc::raise(libc::SIGUSR1) };
        assert_eq!(requested(), Some("SIGUSR1"));
        REQUESTED.store(0, Ordering::SeqCst);
    }
}
