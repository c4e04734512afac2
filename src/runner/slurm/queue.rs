//! What Slurm's commands say: `sbatch` submits, `squeue` tells job and array-task states (it works
//! without Slurm's accounting database), `scancel` cancels.
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// One job, or one task of an array, as `squeue` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// `1234` or `1234_5` (array job 1234, task 5).
    pub id: String,
    /// PENDING, RUNNING, COMPLETED, FAILED, ...
    pub state: String,
    /// Why it is pending, or `None`.
    pub reason: String,
}

impl Job {
    /// Still queued or running (not ended).
    pub fn active(&self) -> bool {
        !matches!(
            self.state.as_str(),
            "COMPLETED"
                | "FAILED"
                | "CANCELLED"
                | "TIMEOUT"
                | "NODE_FAIL"
                | "PREEMPTED"
                | "BOOT_FAIL"
                | "DEADLINE"
                | "OUT_OF_MEMORY"
                | "SPECIAL_EXIT"
                | "REVOKED"
        )
    }

    /// `RUNNING`, or `PENDING (Priority)` when a reason is given.
    pub fn describe(&self) -> String {
        if self.reason.is_empty() || self.reason == "None" {
            self.state.clone()
        } else {
            format!("{} ({})", self.state, self.reason)
        }
    }
}

fn run(command: &mut Command, what: &str) -> Result<String> {
    let out = command.output().with_context(|| format!("cannot run `{what}` (is Slurm's client installed?)"))?;
    if !out.status.success() {
        bail!("`{what}` failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submits a script; returns the job id.
pub fn sbatch(script: &Path) -> Result<String> {
    let out = run(Command::new("sbatch").arg("--parsable").arg(script), &format!("sbatch {}", script.display()))?;
    parse_job_id(&out).with_context(|| format!("sbatch printed no job id: {out:?}"))
}

/// `--parsable` prints `<id>` or `<id>;<cluster>`.
fn parse_job_id(out: &str) -> Option<String> {
    let id = out.trim().split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then(|| id.to_string())
}

/// This user's jobs that Slurm still knows, one line per array task, by id.
pub fn jobs() -> Result<BTreeMap<String, Job>> {
    let out = run(
        Command::new("squeue").args(["--me", "--noheader", "--array", "--states=all", "--format=%i|%T|%r"]),
        "squeue --me --array --states=all",
    )?;
    Ok(parse_squeue(&out))
}

fn parse_squeue(out: &str) -> BTreeMap<String, Job> {
    out.lines()
        .filter_map(|line| {
            let mut parts = line.trim().splitn(3, '|');
            let id = parts.next()?.trim().to_string();
            let state = parts.next()?.trim().to_string();
            let reason = parts.next().unwrap_or("").trim().to_string();
            (!id.is_empty()).then(|| (id.clone(), Job { id, state, reason }))
        })
        .collect()
}

pub fn scancel(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    run(Command::new("scancel").args(ids), &format!("scancel {}", ids.join(" ")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sbatch_and_squeue_output() {
        assert_eq!(parse_job_id("1234\n").as_deref(), Some("1234"));
        assert_eq!(parse_job_id("1234;cluster2\n").as_deref(), Some("1234"));
        assert_eq!(parse_job_id("Submitted batch job 12"), None);
        let jobs =
            parse_squeue("12_0|RUNNING|None\n12_1|PENDING|BeginTime\n13|PENDING|Dependency\n12_2|COMPLETED|None\n");
        assert_eq!(jobs.len(), 4);
        assert_eq!(jobs["12_1"].describe(), "PENDING (BeginTime)");
        assert_eq!(jobs["12_0"].describe(), "RUNNING");
        assert!(jobs["12_1"].active() && jobs["13"].active());
        assert!(!jobs["12_2"].active());
    }
}
