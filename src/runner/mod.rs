//! Executes an experiment: every run once, skipping those already done and resuming partial ones.
//! Each run executes in its own process (`ddpm run-one`, killed if the runner dies), one at a time per
//! device (or `runs_per_device` at a time): one worker on the CPU, one per CUDA device. A failed run is recorded and the others still
//! run; a run another runner is executing is left to it.
pub mod board;
mod events;
pub mod one;
mod ranks;
pub mod slurm;
pub mod status;

use crate::config::RunSpec;
use crate::eval::metric;
use crate::experiment::{load_experiment, Experiment, LoadOptions};
use crate::progress::Progress;
use crate::progress::{LogRecord, Reporter};
use crate::track::run_dir::{Artifact, RunDir, State, Status};
use anyhow::{Context, Result};
use events::Event;
use indicatif::MultiProgress;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, IsTerminal};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use tch::Device;

pub struct RunOptions {
    pub experiment: PathBuf,
    pub load: LoadOptions,
    /// One worker per device...
    pub devices: Vec<Device>,
    /// ...times this: runs at once on each device (small models do not fill a large GPU).
    pub runs_per_device: usize,
    pub results_root: PathBuf,
    pub data_dir: PathBuf,
    /// A run checkpointed on one device kind may resume on another (`--allow-device-change`).
    pub allow_device_change: bool,
    /// Only the runs of seeds below this (a look of sequential seeds: seeds 0 … n − 1).
    pub seeds_below: Option<u64>,
}

/// How a run of the experiment ended in this invocation.
#[derive(Debug, Clone)]
pub enum Outcome {
    Trained(Status),
    /// Done before; evaluated now under the experiment's spec.
    Evaluated(Status),
    Skipped(Status),
    Failed {
        error: String,
        log: PathBuf,
    },
    /// Another process holds the run's lock.
    Busy(String),
    /// Stopped by a signal after a checkpoint at this step; the next `run` resumes it.
    Stopped(usize),
    /// The run's process was killed by this signal before it recorded an outcome; the next `run`
    /// resumes it from this step (the newest valid checkpoint; 0: it starts over).
    Killed {
        signal: i32,
        resumable_from: usize,
    },
    /// Not started: the runner was asked to stop (SIGTERM or SIGUSR1) first.
    NotStarted(&'static str),
}

/// `SIGKILL`, `SIGTERM`, ... for a signal number.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGBUS => "SIGBUS",
        _ => return format!("signal {signal}"),
    };
    format!("signal {signal} ({name})")
}

pub struct Report {
    pub experiment: Experiment,
    pub outcomes: Vec<(RunSpec, PathBuf, Outcome)>,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|(_, _, o)| {
                matches!(
                    o,
                    Outcome::Failed { .. } | Outcome::Stopped(_) | Outcome::Killed { .. } | Outcome::NotStarted(_)
                )
            })
            .count()
    }
}

/// `results/experiments/<experiment>/<label>` → `../../runs/<hash>`, so tools that show folder
/// names (TensorBoard) show readable labels.
fn link_label(results_root: &Path, spec: &RunSpec) -> Result<()> {
    let dir = results_root.join("experiments").join(&spec.experiment);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let link = dir.join(crate::experiment::link_name(&spec.label));
    let target = Path::new("../../runs").join(&spec.hash);
    if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
        return Ok(());
    }
    // A link made under a temporary name and renamed over the old one: two runners doing this at
    // once both succeed (rename replaces atomically; remove-then-create would race).
    let tmp = dir.join(format!(".link.{}.{}", std::process::id(), spec.hash));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp).with_context(|| format!("cannot link {}", tmp.display()))?;
    std::fs::rename(&tmp, &link).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("cannot link {} to {}", link.display(), target.display()))
    })
}

/// Writes every run's directory (resolved configuration, spec, provenance), its label link and the
/// experiment's HParams data. Returns, per run, its status when it is done with nothing left to do
/// (said on standard output), or None when it has work left: training, or an evaluation that the
/// experiment asks for and the run has no stored result of on the device kind that will run it
/// (`cuda`).
pub fn prepare(experiment: &Experiment, results_root: &Path, cuda: bool) -> Result<Vec<Option<Status>>> {
    let mut states = Vec::new();
    for (i, spec) in experiment.runs.iter().enumerate() {
        let dir = RunDir::new(results_root, &spec.hash);
        link_label(results_root, spec)?;
        // Runs that differ only in `[eval]` share the directory; the first one's configuration is its.
        if !experiment.runs[..i].iter().any(|r| r.hash == spec.hash) {
            dir.prepare(spec, experiment.profile.as_deref(), experiment.profile_reason.as_deref())?;
        }
        let done = dir.status()?.filter(|s| s.state == State::Done);
        let done = done.filter(|_| !one::needs_evaluation(&dir.path, &spec.config.eval.for_device(cuda)));
        if done.is_some() {
            println!("skip {} ({}): already done in {}", spec.label, spec.hash, dir.path.display());
        }
        states.push(done);
    }
    // A view for TensorBoard: a finished experiment on a read-only folder still runs (it has nothing
    // to write), so failing to update it is a warning.
    if let Err(e) = board::write_hparams(experiment, results_root) {
        eprintln!("warning: cannot update the HParams data: {e:#}");
    }
    Ok(states)
}

/// The processes of the runs under way, so that a SIGTERM to the runner reaches each of them.
#[derive(Default)]
struct Children {
    pids: Mutex<Vec<u32>>,
    /// Those already told to stop.
    signalled: Mutex<Vec<u32>>,
}

impl Children {
    fn add(&self, pid: u32) {
        self.pids.lock().expect("pids").push(pid);
    }

    /// Before the process is reaped: once reaped, its pid may be reused by a new child, which must
    /// then be told to stop too.
    fn remove(&self, pid: u32) {
        self.pids.lock().expect("pids").retain(|&p| p != pid);
        self.signalled.lock().expect("signalled").retain(|&p| p != pid);
    }

    /// Sends SIGTERM once to each run's process not yet told: it finishes its logging window, writes a
    /// checkpoint and exits as stopped, as when a scheduler signals it directly.
    fn stop_all(&self) {
        let pids = self.pids.lock().expect("pids").clone();
        let mut signalled = self.signalled.lock().expect("signalled");
        let new: Vec<u32> = pids.into_iter().filter(|p| !signalled.contains(p)).collect();
        for pid in new {
            // SAFETY: kill(2) on a child this runner started and has not yet reaped (it is removed from
            // `pids` before it is waited for), so the pid cannot have been reused.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            signalled.push(pid);
        }
    }
}

pub fn run(opts: &RunOptions) -> Result<Report> {
    // SIGTERM/SIGUSR1 to the runner (a scheduler, `systemctl stop`, `kill`) are recorded, passed on
    // to every run's process, and no further run is started; the summary follows.
    crate::signal::install();
    let mut experiment = load_experiment(&opts.experiment, &opts.load)?;
    if let Some(n) = opts.seeds_below {
        experiment.keep_seeds_below(n);
    }
    let devices: Vec<String> = opts.devices.iter().map(|d| crate::device::describe(*d)).collect();
    println!(
        "experiment `{}`{}: {} run(s), device(s) {}",
        experiment.name,
        experiment.profile.as_ref().map(|p| format!(" (profile {p})")).unwrap_or_default(),
        experiment.runs.len(),
        devices.join(", ")
    );
    let mut outcomes: Vec<Option<Outcome>> = Vec::new();
    // One work item per training: the runs with work left that share a hash (they differ only in
    // `[eval]`) train once and evaluate each of their specs.
    let mut queue: VecDeque<Vec<usize>> = VecDeque::new();
    let cuda = opts.devices.iter().any(|d| d.is_cuda());
    for (i, done) in prepare(&experiment, &opts.results_root, cuda)?.into_iter().enumerate() {
        match done {
            Some(status) => outcomes.push(Some(Outcome::Skipped(status))),
            None => {
                outcomes.push(None);
                let hash = &experiment.runs[i].hash;
                match queue.iter_mut().find(|g| experiment.runs[g[0]].hash == *hash) {
                    Some(group) => group.push(i),
                    None => queue.push_back(vec![i]),
                }
            }
        }
    }
    let queue = Mutex::new(queue);
    let outcomes = Mutex::new(outcomes);
    let multi = std::io::stderr().is_terminal().then(MultiProgress::new);
    let children = Children::default();
    let working = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<&Device> =
            opts.devices.iter().flat_map(|d| std::iter::repeat_n(d, opts.runs_per_device.max(1))).collect();
        working.store(workers.len(), std::sync::atomic::Ordering::SeqCst);
        // Passes a stop request on to the runs' processes (and to any started while it is passed on).
        scope.spawn(|| {
            while working.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                if crate::signal::requested().is_some() {
                    children.stop_all();
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        for device in workers {
            scope.spawn(|| {
                loop {
                    if crate::signal::requested().is_some() {
                        break;
                    }
                    let Some(group) = queue.lock().expect("queue").pop_front() else { break };
                    let specs: Vec<&RunSpec> = group.iter().map(|&i| &experiment.runs[i]).collect();
                    let dir = RunDir::new(&opts.results_root, &specs[0].hash);
                    let outcome = execute(&specs, &dir, *device, opts, multi.as_ref(), &children);
                    let mut outcomes = outcomes.lock().expect("outcomes");
                    for (k, &i) in group.iter().enumerate() {
                        // The runs after the first share its training: for them it was an evaluation.
                        outcomes[i] = Some(match outcome.clone() {
                            Outcome::Trained(s) if k > 0 => Outcome::Evaluated(s),
                            o => o,
                        });
                    }
                    drop(outcomes);
                    // The HParams row of the finished run shows its end.
                    if let Err(e) = board::write_hparams(&experiment, &opts.results_root) {
                        eprintln!("warning: cannot update the HParams data: {e:#}");
                    }
                }
                working.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
    let signal = crate::signal::requested();
    let mut outcomes = outcomes.into_inner().expect("outcomes");
    for o in outcomes.iter_mut().filter(|o| o.is_none()) {
        *o = Some(Outcome::NotStarted(signal.unwrap_or("a stop request")));
    }
    if let Some(signal) = signal {
        println!("{signal}: the runs under way were told to checkpoint and stop; no further run was started");
    }
    let outcomes = experiment
        .runs
        .iter()
        .zip(outcomes)
        .map(|(spec, o)| {
            (spec.clone(), RunDir::new(&opts.results_root, &spec.hash).path, o.expect("every run has an outcome"))
        })
        .collect();
    let report = Report { experiment, outcomes };
    print_summary(&report);
    Ok(report)
}

fn device_arg(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".into(),
    }
}

/// How a run's process sees its device: a CUDA device alone, through `CUDA_VISIBLE_DEVICES` (so that
/// libtorch opens no context on the other GPUs, and `runs_per_device` processes share only theirs),
/// as `cuda:0` inside. The physical index honours the runner's own `CUDA_VISIBLE_DEVICES`. Returns
/// the child's `--device` and its `CUDA_VISIBLE_DEVICES`.
pub fn child_device(device: Device, visible: Option<&str>) -> (String, Option<String>) {
    match device {
        Device::Cuda(n) => {
            let physical = visible
                .and_then(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).nth(n).map(String::from))
                .unwrap_or_else(|| n.to_string());
            ("cuda:0".into(), Some(physical))
        }
        _ => ("cpu".into(), None),
    }
}

/// Runs one training (the runs `specs`, which share it and differ in `[eval]`) in a child process
/// and reads its events until it exits.
fn execute(
    specs: &[&RunSpec],
    dir: &RunDir,
    device: Device,
    opts: &RunOptions,
    multi: Option<&MultiProgress>,
    children: &Children,
) -> Outcome {
    let spec = specs[0];
    let evals: Vec<&crate::config::EvalConfig> = specs.iter().map(|s| &s.config.eval).collect();
    let label = match specs.len() {
        1 => spec.label.clone(),
        n => format!("{} (+{} evaluation{})", spec.label, n - 1, if n == 2 { "" } else { "s" }),
    };
    let say = |line: String| match multi {
        Some(m) => {
            let _ = m.println(line);
        }
        None => println!("{line}"),
    };
    let evaluate_only = dir.status().ok().flatten().is_some_and(|s| s.trained());
    let verb = if evaluate_only { "eval" } else { "run " };
    say(format!("{verb} {label} ({}) on {} -> {}", spec.hash, device_arg(device), dir.path.display()));
    let log = dir.file(Artifact::Log);
    let result = (|| -> Result<(i32, Option<ranks::RankEnd>)> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let exe = std::env::current_exe().context("cannot find the ddpm executable")?;
        let evals_json = serde_json::to_string(&evals)?;
        // `ddpm run-one` of this run on `device`.
        let command = |device: Device| {
            let mut cmd = Command::new(&exe);
            let (child_device, visible) = child_device(device, std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref());
            if let Some(v) = visible {
                cmd.env("CUDA_VISIBLE_DEVICES", v);
            }
            cmd.arg("run-one").arg(&dir.path).args(["--device", &child_device]);
            if opts.allow_device_change {
                cmd.arg("--allow-device-change");
            }
            cmd.arg("--eval").arg(&evals_json).env("DDPM_DATA_DIR", &opts.data_dir);
            cmd
        };
        let mut cmd = command(device);
        cmd.arg("--events").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log_file));
        // A run of several processes: rank 0 is this one; the others start beside it.
        let n = spec.config.train.processes;
        if device.is_cuda() && n > opts.devices.len() {
            anyhow::bail!(
                "train.processes = {n} needs {n} CUDA devices, one per rank, and this runner has {} (list them with \
                 --devices, e.g. --devices 0,1)",
                opts.devices.len()
            );
        }
        let world = ranks::world(n)?;
        let first = opts.devices.iter().position(|d| *d == device).unwrap_or(0);
        if let Some(w) = &world {
            ranks::configure(&mut cmd, w, device);
        }
        // SAFETY: prctl only sets a flag of the child before exec: it is killed if the runner dies,
        // so a killed runner leaves no run behind holding its lock.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("cannot start `ddpm run-one`")?;
        children.add(child.id());
        let others = match &world {
            Some(w) => {
                let others = ranks::Others::start(w, &log, |rank| {
                    let rank_device = ranks::device_of(&opts.devices, first, rank);
                    let mut cmd = command(rank_device);
                    ranks::configure(&mut cmd, w, rank_device);
                    Ok(cmd)
                });
                match others {
                    Ok(o) => Some(o),
                    Err(e) => {
                        let _ = child.kill();
                        children.remove(child.id());
                        let _ = child.wait();
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        for pid in others.iter().flat_map(|o| o.pids()) {
            children.add(pid);
        }
        let rank0 = child.id();
        // While rank 0 runs, a watcher reaps the other ranks: when one fails, rank 0 fails too at its
        // next collective (gloo sees the closed connection); if it has not ended `GRACE` later (a
        // rendezvous, an NCCL collective or a long phase without collectives), it is killed.
        let rank0_ended = Mutex::new(false);
        let watcher_killed_rank0 = std::sync::atomic::AtomicBool::new(false);
        let status = std::thread::scope(|scope| -> Result<std::process::ExitStatus> {
            if let Some(o) = &others {
                scope.spawn(|| {
                    let mut failed_at: Option<std::time::Instant> = None;
                    while !*rank0_ended.lock().expect("rank 0") {
                        if failed_at.is_none() && o.poll(|pid| children.remove(pid)).is_some() {
                            failed_at = Some(std::time::Instant::now());
                        }
                        if failed_at.is_some_and(|t| t.elapsed() >= ranks::GRACE) {
                            let ended = rank0_ended.lock().expect("rank 0");
                            if !*ended {
                                // SAFETY: rank 0 is not reaped while `rank0_ended` is false and held.
                                unsafe { libc::kill(rank0 as libc::pid_t, libc::SIGKILL) };
                                watcher_killed_rank0.store(true, std::sync::atomic::Ordering::SeqCst);
                            }
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                });
            }
            let mut progress = match multi {
                Some(m) => Progress::in_multi(&label, m),
                None => Progress::new(&label),
            };
            let stdout = child.stdout.take().expect("piped stdout");
            for line in BufReader::new(stdout).lines() {
                let Ok(event) = serde_json::from_str::<Event>(&line?) else { continue };
                match event {
                    Event::Phase { name, total } => progress.phase(&name, total),
                    Event::Advance { position } => progress.advance(position),
                    Event::Logged { step, loss, images_per_sec } => progress.logged(&LogRecord {
                        step,
                        loss,
                        grad_norm: None,
                        loss_quarters: [None; 4],
                        images_per_sec,
                        lr: 0.0,
                        elapsed_seconds: 0.0,
                    }),
                    Event::Note { text } => progress.note(&text),
                    Event::Busy { .. } => {}
                }
            }
            progress.finish();
            // Out of the list before it is reaped, so that no signal can reach a reused pid.
            let mut ended = rank0_ended.lock().expect("rank 0");
            *ended = true;
            children.remove(rank0);
            let status = child.wait();
            drop(ended);
            Ok(status?)
        })?;
        let ends = others.map(|o| o.finish(ranks::GRACE, |pid| children.remove(pid))).unwrap_or_default();
        use std::os::unix::process::ExitStatusExt;
        let code = status.code().unwrap_or_else(|| -status.signal().unwrap_or(0));
        // Rank 0 killed by a signal it was not sent by the watcher: that is the cause.
        let own_death = code < 0 && !watcher_killed_rank0.load(std::sync::atomic::Ordering::SeqCst);
        Ok((code, ranks::failed(&ends).filter(|_| !own_death)))
    })();
    // Another rank failed (killed, or an error): rank 0 failed at its next collective (or was ended);
    // the run is resumable from its last checkpoint, as if rank 0 had been killed.
    let result = match result {
        Ok((code, Some(k))) if code != one::Ended::STOPPED_EXIT => {
            let n = spec.config.train.processes;
            let resumable_from = dir.valid_checkpoint().0.unwrap_or(0);
            let message = format!("{}; resumable from step {resumable_from}", k.describe(n));
            if let Ok(Some(mut status)) = dir.status() {
                if status.state != State::Done {
                    status.state = State::Failed;
                    let before = status.error.map(|e| format!(" ({e})")).unwrap_or_default();
                    status.error = Some(format!("{message}{before}"));
                    let _ = dir.write_status(&status);
                }
            }
            say(format!("run {} interrupted: {message}", spec.label));
            return if k.code < 0 {
                Outcome::Killed { signal: -k.code, resumable_from }
            } else {
                Outcome::Failed { error: message, log }
            };
        }
        other => other.map(|(code, _)| code),
    };
    match result {
        // A negative code: killed by that signal before it could record an outcome.
        Ok(code) if code < 0 => {
            let signal = -code;
            let resumable_from = dir.valid_checkpoint().0.unwrap_or(0);
            let resume = match resumable_from {
                0 => "the next run starts it over (no valid checkpoint)".to_string(),
                s => format!("resumable from step {s}"),
            };
            say(format!("run {} interrupted by {}; {resume}", spec.label, signal_name(signal)));
            Outcome::Killed { signal, resumable_from }
        }
        Ok(code) if code == one::Ended::BUSY_EXIT => {
            let holder = crate::track::lock::held_by(&dir.path).unwrap_or_else(|| "another runner".into());
            say(format!("busy {}: being executed by {holder}", spec.label));
            Outcome::Busy(holder)
        }
        Ok(code) if code == one::Ended::STOPPED_EXIT => {
            let step = dir.valid_checkpoint().0.unwrap_or(0);
            if dir.status().ok().flatten().is_some_and(|s| s.trained()) {
                say(format!("stopped {} during its evaluation; the next run evaluates it (no training)", spec.label));
            } else {
                say(format!("stopped {} at step {step}; the next run resumes it", spec.label));
            }
            Outcome::Stopped(step)
        }
        Ok(code) => match dir.status() {
            Ok(Some(s)) if code == one::Ended::Failed.exit_code() && s.error.is_some() => {
                let error = s.error.unwrap_or_default();
                say(format!("run {} failed: {error}", spec.label));
                Outcome::Failed { error, log }
            }
            Ok(Some(s)) if s.state == State::Done && code == one::Ended::ALREADY_DONE_EXIT => {
                say(format!("skip {}: done by another runner meanwhile", spec.label));
                Outcome::Skipped(s)
            }
            Ok(Some(s)) if s.state == State::Done && code == 0 && evaluate_only => Outcome::Evaluated(s),
            Ok(Some(s)) if s.state == State::Done && code == 0 => Outcome::Trained(s),
            Ok(Some(s)) if s.state == State::Failed => {
                let error = s.error.unwrap_or_else(|| "unknown error".into());
                say(format!("run {} failed: {error}", spec.label));
                Outcome::Failed { error, log }
            }
            _ => {
                let error = format!("`ddpm run-one` exited with code {code} without recording an outcome");
                say(format!("run {} failed: {error}", spec.label));
                Outcome::Failed { error, log }
            }
        },
        Err(e) => Outcome::Failed { error: format!("{e:#}"), log },
    }
}

fn print_summary(report: &Report) {
    println!("\nsummary of `{}`:", report.experiment.name);
    let width = report.outcomes.iter().map(|(s, _, _)| s.label.len()).max().unwrap_or(5).max(5);
    let titles = metric::headline_titles();
    println!(
        "  {:width$}  {:9}  {:>10}  {:>9}  {:>8}{titles}  directory",
        "run", "status", "final loss", "time", "img/s"
    );
    for (spec, path, outcome) in &report.outcomes {
        let (state, status) = match outcome {
            Outcome::Trained(s) if s.resumed_from.is_some() => ("resumed", Some(s)),
            Outcome::Evaluated(s) => ("evaluated", Some(s)),
            Outcome::Trained(s) => ("trained", Some(s)),
            Outcome::Skipped(s) => ("skipped", Some(s)),
            Outcome::Failed { .. } => ("FAILED", None),
            Outcome::Busy(_) => ("busy", None),
            Outcome::Stopped(_) => ("stopped", None),
            Outcome::Killed { .. } => ("killed", None),
            Outcome::NotStarted(_) => ("not run", None),
        };
        let num = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "-".into());
        // The numbers of this run's own `[eval]` (runs sharing a training differ there), else the
        // latest evaluation's in its status file.
        let own = crate::eval::run_eval::stored_as_evaluated(path, &spec.config.eval);
        let values = metric::of_run(status, own.as_ref().map(|r| &r.metrics));
        let cells = metric::headline_cells(&values);
        println!(
            "  {:width$}  {state:9}  {:>10}  {:>9}  {:>8}{cells}  {}",
            spec.label,
            num(status.and_then(|s| s.final_loss), &|v| format!("{v:.5}")),
            num(status.and_then(|s| s.wall_seconds), &|v| format!("{v:.1}s")),
            num(status.and_then(|s| s.images_per_sec), &|v| format!("{v:.1}")),
            path.display()
        );
        match outcome {
            Outcome::Failed { error, log } => {
                println!("  {:width$}  error: {error}\n  {:width$}  log: {}", "", "", log.display())
            }
            Outcome::Busy(holder) => println!("  {:width$}  being executed by {holder}", ""),
            Outcome::Stopped(step) => println!("  {:width$}  checkpoint at step {step}; the next run resumes", ""),
            Outcome::Killed { signal, resumable_from: 0 } => println!(
                "  {:width$}  interrupted by {}; no valid checkpoint: the next run starts it over",
                "",
                signal_name(*signal)
            ),
            Outcome::Killed { signal, resumable_from } => println!(
                "  {:width$}  interrupted by {}; resumable from step {resumable_from}: the next run resumes it",
                "",
                signal_name(*signal)
            ),
            Outcome::NotStarted(signal) => println!("  {:width$}  not started: the runner got {signal}", ""),
            _ => {}
        }
    }
    // What the numbers mean: FIDs of different specs are not comparable.
    let mut specs: Vec<String> = Vec::new();
    for (spec, path, _) in &report.outcomes {
        if let Some(r) = crate::eval::run_eval::stored_as_evaluated(path, &spec.config.eval).filter(|r| r.sampled()) {
            if !specs.contains(&r.spec) {
                specs.push(r.spec);
            }
        }
    }
    for spec in specs {
        println!("  metrics of samples: {spec}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's process sees its GPU alone, as cuda:0; the physical index honours the runner's own
    /// CUDA_VISIBLE_DEVICES.
    #[test]
    fn each_run_process_sees_only_its_gpu() {
        assert_eq!(child_device(Device::Cuda(1), None), ("cuda:0".to_string(), Some("1".to_string())));
        assert_eq!(child_device(Device::Cuda(1), Some("4,6")), ("cuda:0".to_string(), Some("6".to_string())));
        assert_eq!(child_device(Device::Cuda(0), Some(" 3 , 5")), ("cuda:0".to_string(), Some("3".to_string())));
        assert_eq!(child_device(Device::Cpu, Some("4,6")), ("cpu".to_string(), None));
    }
}
