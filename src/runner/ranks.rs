//! The ranks of a local run of several processes (`train.processes = N`): rank 0 is the run's usual
//! `ddpm run-one` (lock, status, events); ranks 1 … N − 1 are `ddpm run-one` processes of the same
//! run directory told their place by the environment (`crate::distributed::World`). They meet through
//! a `TCPStore` that rank 0 serves on a free loopback port. On the CPU the cores are split among the
//! ranks; on CUDA rank k takes the k-th device after the run's own in the runner's list, alone through
//! `CUDA_VISIBLE_DEVICES`.
use crate::distributed::{free_port, World, THREADS};
use anyhow::{Context, Result};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tch::Device;

/// How long the other ranks may take to end once rank 0 has (they end with its last collective; this
/// bounds one that hangs, or one still waiting for a rank 0 that never joined), and how long rank 0
/// may take to end once another rank has failed (with gloo it fails at its next collective; this
/// bounds a rendezvous or an NCCL collective waiting for the dead rank).
pub const GRACE: Duration = Duration::from_secs(10);

/// The place of each rank of a run of `size` processes, rank 0's first.
pub fn world(size: usize) -> Result<Option<World>> {
    if size <= 1 {
        return Ok(None);
    }
    Ok(Some(World { rank: 0, size, addr: "127.0.0.1".into(), port: free_port()? }))
}

/// CPU threads per rank: the cores split evenly (at least one each).
pub fn threads(size: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / size.max(1)).max(1)
}

/// The device of rank `rank` of a run placed on `devices[first]`.
pub fn device_of(devices: &[Device], first: usize, rank: usize) -> Device {
    match devices.get(first) {
        Some(Device::Cuda(_)) => devices[(first + rank) % devices.len()],
        _ => Device::Cpu,
    }
}

/// The environment of one rank's process.
pub fn configure(cmd: &mut Command, world: &World, device: Device) {
    for (k, v) in world.vars() {
        cmd.env(k, v);
    }
    if !device.is_cuda() {
        cmd.env(THREADS, threads(world.size).to_string());
    }
}

/// Ranks 1 … N − 1, started.
pub struct Others {
    children: Mutex<Vec<(usize, Child)>>,
    ended: Mutex<Vec<RankEnd>>,
}

/// How one of the other ranks ended: its exit code, or minus the signal that killed it; `by_runner`
/// when the runner ended it (rank 0 had ended and it had not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankEnd {
    pub rank: usize,
    pub code: i32,
    pub by_runner: bool,
}

impl RankEnd {
    /// Ended on its own, not as a rank ends (0: done, stopped or nothing to do).
    pub fn failed(&self) -> bool {
        !self.by_runner && self.code != 0
    }

    /// What happened to it, for the runner's line and the run's recorded error.
    pub fn describe(&self, size: usize) -> String {
        if self.code < 0 {
            format!("rank {} of {size} was killed by {}", self.rank, super::signal_name(-self.code))
        } else {
            format!("rank {} of {size} failed with exit code {} (its error is in log.txt)", self.rank, self.code)
        }
    }
}

fn code_of(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    status.map_or(-libc::SIGKILL, |s| s.code().unwrap_or_else(|| -s.signal().unwrap_or(0)))
}

impl Others {
    /// Starts ranks 1 … N − 1 of `world` with `command(rank)` (the run-one command line of each, its
    /// device set), their output appended to the run's log.
    pub fn start(
        world: &World,
        log: &std::path::Path,
        mut command: impl FnMut(usize) -> Result<Command>,
    ) -> Result<Others> {
        let mut children = Vec::new();
        for rank in 1..world.size {
            let mut cmd = command(rank)?;
            let log_file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("cannot open {}", log.display()))?;
            cmd.env(crate::distributed::RANK, rank.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log_file));
            // SAFETY: prctl only sets a flag of the child before exec: killed if the runner dies.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            match cmd.spawn() {
                Ok(child) => children.push((rank, child)),
                Err(e) => {
                    for (_, mut c) in children {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    return Err(e).with_context(|| format!("cannot start rank {rank} of {}", world.size));
                }
            }
        }
        Ok(Others { children: Mutex::new(children), ended: Mutex::new(Vec::new()) })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.lock().expect("children").iter().map(|(_, c)| c.id()).collect()
    }

    /// Reaps the ranks that have ended (`forget` takes each pid out of the runner's list first) and
    /// returns the first of them that failed.
    pub fn poll(&self, forget: impl Fn(u32)) -> Option<RankEnd> {
        let mut children = self.children.lock().expect("children");
        let mut ended = self.ended.lock().expect("ended");
        let mut left = Vec::new();
        for (rank, mut child) in children.drain(..) {
            match child.try_wait() {
                Ok(None) => left.push((rank, child)),
                _ => {
                    forget(child.id());
                    ended.push(RankEnd { rank, code: code_of(child.wait()), by_runner: false });
                }
            }
        }
        *children = left;
        ended.iter().copied().find(RankEnd::failed)
    }

    /// Waits for every rank, killing those still alive after `grace` (`forget` as in `poll`).
    pub fn finish(&self, grace: Duration, forget: impl Fn(u32)) -> Vec<RankEnd> {
        let deadline = Instant::now() + grace;
        loop {
            self.poll(&forget);
            if self.children.lock().expect("children").is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let mut children = self.children.lock().expect("children");
                let mut ended = self.ended.lock().expect("ended");
                for (rank, mut child) in children.drain(..) {
                    let _ = child.kill();
                    forget(child.id());
                    let code = code_of(child.wait());
                    ended.push(RankEnd { rank, code, by_runner: true });
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut ends = self.ended.lock().expect("ended").clone();
        ends.sort_by_key(|e| e.rank);
        ends
    }
}

/// The first rank that failed on its own (not ended by the runner), if any.
pub fn failed(ends: &[RankEnd]) -> Option<RankEnd> {
    ends.iter().copied().find(RankEnd::failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_take_the_devices_after_their_runs() {
        let gpus = [Device::Cuda(0), Device::Cuda(1), Device::Cuda(2)];
        assert_eq!(device_of(&gpus, 1, 0), Device::Cuda(1));
        assert_eq!(device_of(&gpus, 1, 1), Device::Cuda(2));
        assert_eq!(device_of(&gpus, 2, 1), Device::Cuda(0));
        assert_eq!(device_of(&[Device::Cpu], 0, 3), Device::Cpu);
        assert!(threads(1_000_000) == 1 && threads(1) >= 1);
        let end = |rank, code, by_runner| RankEnd { rank, code, by_runner };
        let ends = [end(1, 0, false), end(2, -9, true), end(3, -9, false), end(4, 1, false)];
        assert_eq!(failed(&ends), Some(end(3, -9, false)), "done, and ended by the runner, are not failures");
        assert_eq!(failed(&ends[..2]), None);
        assert_eq!(ends[2].describe(4), "rank 3 of 4 was killed by signal 9 (SIGKILL)");
        assert!(ends[3].describe(4).starts_with("rank 4 of 4 failed with exit code 1"));
    }
}
