//! A run's directory `results/runs/<hash>/`: its resolved config, provenance and status.
use super::{atomic_write, hostname, unix_now};
use crate::config::RunSpec;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Done,
    Failed,
    /// Stopped on request (SIGTERM, SIGUSR1) after a checkpoint at `step`; the next attempt resumes.
    Stopped,
    /// The process that said `running` ended without recording an outcome (SIGKILL, SIGINT, a crash):
    /// written by `ddpm plan`/`status` when they find its pid gone and the lock free
    /// (`state::settle`); the next attempt resumes from the last valid checkpoint.
    Interrupted,
}

impl Status {
    /// Whether the training is finished: done, or stopped after it (during the final evaluation: the
    /// final weights are recorded, and the next attempt only evaluates).
    pub fn trained(&self) -> bool {
        self.state == State::Done || (self.state == State::Stopped && self.weights_sha256.is_some())
    }
}

/// `status.json`: where the run stands, and its headline numbers once done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub state: State,
    pub label: String,
    pub step: usize,
    pub steps: usize,
    pub pid: u32,
    pub host: String,
    pub updated_unix: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The loss of the last logging window while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_loss: Option<f64>,
    /// Mean training loss over the last logging window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_loss: Option<f64>,
    /// Training images per second over the whole run (excluding sampling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_per_sec: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f64>,
    /// Trainable parameters of the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<i64>,
    /// sha256 of `ema.safetensors`, the averaged weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_sha256: Option<String>,
    /// The checkpoint step the last invocation resumed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<usize>,
    /// sha256 of `model.safetensors`, the final weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
    /// The latest evaluation: its spec (what the numbers mean) and its metrics by name (FID, KID,
    /// bits/dim, the floors, …: the evaluation result's map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_spec: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Status files written before the metric map kept these in fields; `RunDir::status` moves them
    /// into `metrics`.
    #[serde(flatten, skip_serializing)]
    legacy: super::legacy::MetricFields,
    /// The lowest FID of the evaluations during training (`eval.every`) and its step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_fid_during: Option<(usize, f64)>,
    /// What the training itself measured (a cluster-conditional run's clustering scores), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub train_metrics: BTreeMap<String, f64>,
}

impl Status {
    fn upgrade(mut self) -> Self {
        self.legacy.move_into(&mut self.metrics);
        self
    }

    pub fn new(state: State, spec: &RunSpec, step: usize) -> Self {
        Self {
            state,
            label: spec.label.clone(),
            step,
            steps: spec.config.train.steps,
            pid: std::process::id(),
            host: hostname(),
            updated_unix: unix_now(),
            error: None,
            last_loss: None,
            final_loss: None,
            images_per_sec: None,
            wall_seconds: None,
            parameters: None,
            ema_sha256: None,
            resumed_from: None,
            weights_sha256: None,
            eval_spec: None,
            metrics: BTreeMap::new(),
            legacy: Default::default(),
            best_fid_during: None,
            train_metrics: BTreeMap::new(),
        }
    }
}

/// Every file of a run folder, by what it is: the one place that names them (`RunDir::file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    /// The resolved configuration (written at every start, the same bytes unless the code changed).
    Config,
    /// What the hash was computed from, and where and how the run was made (first start only).
    Provenance,
    /// The uncommitted changes of the checkout the run was made from, when it had any.
    CodePatch,
    /// Where the run stands, and its headline numbers once done: `Status`.
    Status,
    /// One line per attempt: device, host, determinism, hardware (`Attempt`).
    Attempts,
    /// The runner's log of the run's process (appended by every attempt).
    Log,
    /// The `flock` that keeps one process per run (`track::lock`).
    Lock,
    /// One line per logging window (`progress::LogRecord`).
    MetricsLog,
    /// One line per evaluation during training (`EvalHistoryLine`).
    EvalHistory,
    /// A clustering's E-steps (`cluster::EmRecord`s).
    EmHistory,
    /// A clustering's assignment of every training image.
    Assignments,
    /// The final weights and their exponential moving average.
    Weights,
    EmaWeights,
    /// The grids drawn at the end of training, and the forward process drawn at its start.
    Samples,
    Trajectory,
    ForwardProcess,
    /// A clustering's overview grid (one row per cluster).
    Clusters,
    /// `ddpm eval --bpd`'s report of the bound over the test images.
    BoundReport,
}

impl Artifact {
    pub const ALL: [Artifact; 18] = [
        Artifact::Config,
        Artifact::Provenance,
        Artifact::CodePatch,
        Artifact::Status,
        Artifact::Attempts,
        Artifact::Log,
        Artifact::Lock,
        Artifact::MetricsLog,
        Artifact::EvalHistory,
        Artifact::EmHistory,
        Artifact::Assignments,
        Artifact::Weights,
        Artifact::EmaWeights,
        Artifact::Samples,
        Artifact::Trajectory,
        Artifact::ForwardProcess,
        Artifact::Clusters,
        Artifact::BoundReport,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Artifact::Config => "config.toml",
            Artifact::Provenance => "provenance.json",
            Artifact::CodePatch => "code.patch",
            Artifact::Status => "status.json",
            Artifact::Attempts => "attempts.jsonl",
            Artifact::Log => "log.txt",
            Artifact::Lock => "lock",
            Artifact::MetricsLog => "metrics.jsonl",
            Artifact::EvalHistory => "eval_history.jsonl",
            Artifact::EmHistory => "em_history.json",
            Artifact::Assignments => "assignments.parquet",
            Artifact::Weights => "model.safetensors",
            Artifact::EmaWeights => "ema.safetensors",
            Artifact::Samples => "samples.png",
            Artifact::Trajectory => "trajectory.png",
            Artifact::ForwardProcess => "forward_process.png",
            Artifact::Clusters => "clusters.png",
            Artifact::BoundReport => "bpd.json",
        }
    }

    /// Written by a training attempt from its first step: removed when a run starts over.
    pub const fn per_attempt(self) -> bool {
        matches!(
            self,
            Artifact::MetricsLog
                | Artifact::EvalHistory
                | Artifact::EmHistory
                | Artifact::Assignments
                | Artifact::Weights
                | Artifact::EmaWeights
                | Artifact::Samples
                | Artifact::Trajectory
                | Artifact::ForwardProcess
                | Artifact::Clusters
        )
    }
}

/// The folders of a run folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// `step-<step>.safetensors` and `.json` (`track::checkpoint`).
    Checkpoints,
    /// One folder per evaluation spec: `eval/<spec-hash>/metrics.json` and `samples.png`.
    Eval,
    /// The grids of the evaluations during training, `samples-<step>.png`.
    EvalDuring,
    /// A clustering's grid per cluster, `cluster_<k>.png`.
    ClusterGrids,
    /// Post-hoc EMA's snapshots of its two averaging profiles, `step-<step>.safetensors` and `.json`
    /// (`posthoc`): all of them kept.
    EmaSnapshots,
}

impl Folder {
    pub const ALL: [Folder; 5] =
        [Folder::Checkpoints, Folder::Eval, Folder::EvalDuring, Folder::ClusterGrids, Folder::EmaSnapshots];

    pub const fn name(self) -> &'static str {
        match self {
            Folder::Checkpoints => "checkpoints",
            Folder::Eval => "eval",
            Folder::EvalDuring => "eval_during",
            Folder::ClusterGrids => "clusters",
            Folder::EmaSnapshots => "ema_snapshots",
        }
    }

    /// Written by a training attempt from its first step (and what it evaluates): removed when a run
    /// starts over.
    pub const fn per_attempt(self) -> bool {
        !matches!(self, Folder::Checkpoints)
    }
}

/// A line of `eval_history.jsonl`: the metrics of one evaluation during training, by registered name
/// (a value that was not finite is written as `null`: None).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalHistoryLine {
    pub step: usize,
    #[serde(flatten)]
    pub metrics: BTreeMap<String, Option<f64>>,
    pub spec: String,
}

/// A line of `metrics.jsonl` as readers need it (the writer's full record is `progress::LogRecord`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct LossLine {
    pub step: usize,
    pub loss: f64,
}

/// A line of `attempts.jsonl`: where one attempt ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Attempt {
    /// `cpu (2 threads)`, `cuda:0 (NVIDIA H100 ...)`.
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub started_unix: Option<f64>,
    /// `hardware::Hardware::key`: what the bits of the result depend on (None before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_key: Option<String>,
    /// Everything else the attempt recorded (host, pid, start, determinism, Slurm, hardware, …).
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

impl Attempt {
    pub fn on_cuda(&self) -> bool {
        self.device.as_deref().is_some_and(|d| d.starts_with("cuda"))
    }

    /// The `train.cpu_isa` the attempt pinned (`hardware.cpu_isa`).
    pub fn cpu_isa(&self) -> Option<&str> {
        self.rest.get("hardware")?.get("cpu_isa")?.as_str()
    }
}

/// `provenance.json` as readers need it (the writer records more: see `RunDir::prepare`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Provenance {
    /// The run's hash, and the fingerprint of the code that made it.
    #[serde(default)]
    pub hash: Option<String>,
    #[serde(default)]
    pub code_sha256: Option<String>,
    #[serde(default)]
    pub experiment: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub git: GitState,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GitState {
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub dirty: Option<bool>,
}

/// A run folder, `results/runs/<hash>/`: the paths of its artifacts and typed readers of its records.
pub struct RunDir {
    pub path: PathBuf,
}

/// The Slurm job this process runs in (null outside Slurm): which array task, which restart, and the
/// GPUs Slurm gave it.
fn slurm_task() -> serde_json::Value {
    let var = |name: &str| std::env::var(name).ok();
    match var("SLURM_JOB_ID") {
        None => serde_json::Value::Null,
        Some(job) => json!({
            "job_id": job,
            "array_job_id": var("SLURM_ARRAY_JOB_ID"),
            "array_task_id": var("SLURM_ARRAY_TASK_ID"),
            "restart_count": var("SLURM_RESTART_COUNT").and_then(|c| c.parse::<u32>().ok()).unwrap_or(0),
            "node": var("SLURMD_NODENAME"),
            "cuda_visible_devices": var("CUDA_VISIBLE_DEVICES"),
        }),
    }
}

/// The folder of run folders under a results root.
pub const RUNS: &str = "runs";

impl RunDir {
    pub fn new(results_root: &Path, hash: &str) -> Self {
        Self { path: results_root.join(RUNS).join(hash) }
    }

    /// The run folder at `path` (a run folder given on the command line, or a label link).
    pub fn at(path: &Path) -> Self {
        Self { path: path.to_path_buf() }
    }

    pub fn file(&self, artifact: Artifact) -> PathBuf {
        self.path.join(artifact.name())
    }

    pub fn folder(&self, folder: Folder) -> PathBuf {
        self.path.join(folder.name())
    }

    /// `eval/<spec-hash>/`: one evaluation spec's results.
    pub fn eval_spec(&self, spec_hash: &str) -> PathBuf {
        self.folder(Folder::Eval).join(spec_hash)
    }

    /// `eval/<spec-hash>/metrics.json`.
    pub fn eval_result(&self, spec_hash: &str) -> PathBuf {
        self.eval_spec(spec_hash).join("metrics.json")
    }

    /// `eval/<spec-hash>/samples.png`.
    pub fn eval_samples(&self, spec_hash: &str) -> PathBuf {
        self.eval_spec(spec_hash).join(Artifact::Samples.name())
    }

    /// `eval_during/samples-<step>.png`.
    pub fn during_samples(&self, step: usize) -> PathBuf {
        self.folder(Folder::EvalDuring).join(format!("samples-{step:08}.png"))
    }

    /// `clusters/cluster_<k>.png`.
    pub fn cluster_grid(&self, k: i64) -> PathBuf {
        self.folder(Folder::ClusterGrids).join(format!("cluster_{k}.png"))
    }

    /// Removes what an earlier attempt without a checkpoint left (every per-attempt artifact and
    /// folder, and the training's TensorBoard event files), since the run starts over: an old event
    /// file beside the new one would show TensorBoard two overlapping curves. The HParams session
    /// file is the runner's, not an attempt's.
    pub fn clear_attempt(&self) -> Result<()> {
        let remove = |path: &Path, dir: bool| -> Result<()> {
            let result = if dir { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
            match result {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("cannot remove stale {}", path.display()))
                }
                _ => Ok(()),
            }
        };
        for a in Artifact::ALL.into_iter().filter(|a| a.per_attempt()) {
            remove(&self.file(a), false)?;
        }
        for f in Folder::ALL.into_iter().filter(|f| f.per_attempt()) {
            if self.folder(f).is_dir() {
                remove(&self.folder(f), true)?;
            }
        }
        for entry in std::fs::read_dir(&self.path)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if super::tensorboard::is_event_file(name) && name != super::hparams::EVENT_FILE {
                remove(&path, false)?;
            }
        }
        Ok(())
    }

    pub fn status_path(&self) -> PathBuf {
        self.file(Artifact::Status)
    }

    /// The lines of a JSON-lines artifact that parse as `T` (a line cut by a crash is skipped).
    pub fn lines<T: serde::de::DeserializeOwned>(&self, artifact: Artifact) -> Vec<T> {
        std::fs::read_to_string(self.file(artifact))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// A JSON artifact as `T`; None when it is absent or unreadable.
    pub fn record<T: serde::de::DeserializeOwned>(&self, artifact: Artifact) -> Option<T> {
        serde_json::from_str(&std::fs::read_to_string(self.file(artifact)).ok()?).ok()
    }

    /// `provenance.json` (None when absent or unreadable).
    pub fn provenance(&self) -> Option<Provenance> {
        self.record(Artifact::Provenance)
    }

    /// The training loss of every logging window, `(step, loss)`.
    pub fn loss_curve(&self) -> Vec<LossLine> {
        self.lines(Artifact::MetricsLog)
    }

    /// The evaluations during training, oldest first.
    pub fn eval_history(&self) -> Vec<EvalHistoryLine> {
        self.lines(Artifact::EvalHistory)
    }

    pub fn status(&self) -> Result<Option<Status>> {
        let path = self.status_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(
                serde_json::from_str::<Status>(&text)
                    .with_context(|| format!("{}: invalid status file", path.display()))?
                    .upgrade(),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn write_status(&self, status: &Status) -> Result<()> {
        atomic_write(&self.status_path(), serde_json::to_string_pretty(status)?.as_bytes())
    }

    /// Creates the directory and writes `config.toml` (the resolved configuration) and, on the run's
    /// first start, `provenance.json` (what the hash was computed from, and where and how the run
    /// was made; with `code.patch` when the checkout has uncommitted changes).
    /// `profile` is the experiment's profile (None: the file's default) and `profile_reason` why.
    pub fn prepare(&self, spec: &RunSpec, profile: Option<&str>, profile_reason: Option<&str>) -> Result<()> {
        std::fs::create_dir_all(&self.path).with_context(|| format!("cannot create {}", self.path.display()))?;
        let header = format!(
            "# Resolved configuration of run {} (experiment `{}`, label `{}`).\n# Generated by ddpm; editing it does not change the run.\n\n",
            spec.hash, spec.experiment, spec.label
        );
        let body = toml::to_string_pretty(&spec.config).context("cannot serialize the run configuration")?;
        let config = self.file(Artifact::Config);
        let text = header + &body;
        // Written only when it changes: a finished experiment reads (plan, run) on a read-only folder.
        if std::fs::read(&config).ok().as_deref() != Some(text.as_bytes()) {
            atomic_write(&config, text.as_bytes())?;
        }
        let provenance = self.file(Artifact::Provenance);
        if provenance.exists() {
            return Ok(());
        }
        let git = git_state();
        if let Some(patch) = git.get("patch").and_then(|p| p.as_str()) {
            atomic_write(&self.file(Artifact::CodePatch), patch.as_bytes())?;
        }
        let record = json!({
            "hash": spec.hash,
            "hash_inputs": spec.identity(),
            "experiment": spec.experiment,
            "label": spec.label,
            "seed": spec.config.seed,
            "profile": profile.unwrap_or("default"),
            "profile_reason": profile_reason,
            "command": std::env::args().collect::<Vec<_>>(),
            "ddpm_version": env!("CARGO_PKG_VERSION"),
            "code_sha256": env!("DDPM_CODE_SHA256"),
            "tch_version": "0.24.0",
            "libtorch_version": env!("DDPM_LIBTORCH_VERSION"),
            "libtorch_cuda": env!("DDPM_LIBTORCH_CUDA"),
            "git": { "commit": git.get("commit"), "dirty": git.get("dirty") },
            "host": hostname(),
            "created_unix": unix_now(),
        });
        atomic_write(&provenance, serde_json::to_string_pretty(&record)?.as_bytes())
    }

    /// Records where an attempt runs (device, pid, start, the determinism settings, and the fields
    /// of `extra`: the device's free memory, an allowed device change) in `attempts.jsonl`, one line
    /// per attempt.
    pub fn record_attempt(
        &self,
        device: &str,
        resumed_from: Option<usize>,
        determinism: serde_json::Value,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        use std::io::Write;
        let mut line = json!({
            "device": device,
            "host": hostname(),
            "pid": std::process::id(),
            "started_unix": unix_now(),
            "resumed_from": resumed_from,
            "determinism": determinism,
            "slurm": slurm_task(),
        });
        line.as_object_mut().expect("an object").extend(extra);
        let path = self.file(Artifact::Attempts);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(f, "{line}").with_context(|| format!("cannot write {}", path.display()))
    }

    /// The attempts made so far (oldest first).
    pub fn attempts(&self) -> Vec<Attempt> {
        self.lines(Artifact::Attempts)
    }

    /// The run's resolved configuration (`config.toml`), without checking that it hashes to the
    /// directory's name: what evaluating a run made by an earlier version of the code needs.
    pub fn load_config(&self) -> Result<crate::config::RunConfig> {
        let config_path = self.file(Artifact::Config);
        let text =
            std::fs::read_to_string(&config_path).with_context(|| format!("cannot read {}", config_path.display()))?;
        toml::from_str(&text).with_context(|| format!("{}: invalid configuration", config_path.display()))
    }

    /// The run spec stored in this directory: `config.toml` and the labels of `provenance.json`. The
    /// hash is recomputed and must be the directory's name (through a label link: the target's).
    pub fn load_spec(&self) -> Result<RunSpec> {
        let config = self.load_config()?;
        let prov_path = self.file(Artifact::Provenance);
        let prov: Provenance =
            serde_json::from_str(&std::fs::read_to_string(&prov_path).unwrap_or_else(|_| "{}".into()))
                .with_context(|| format!("{}: invalid JSON", prov_path.display()))?;
        let text_of = |k: Option<String>| k.unwrap_or_else(|| "unknown".into());
        let spec = RunSpec::new(&text_of(prov.experiment), text_of(prov.label), config)
            .with_context(|| format!("{}: cannot identify the run's training data", self.path.display()))?;
        let real = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        let name = real.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if spec.hash != name {
            anyhow::bail!(
                "{}: its configuration hashes to {}, not to the directory's name; the run was made by another version of ddpm (code fingerprint {})",
                self.path.display(),
                spec.hash,
                env!("DDPM_CODE_SHA256")
            );
        }
        Ok(spec)
    }

    /// The newest complete checkpoint's step, without verifying it.
    pub fn checkpoint_step(&self) -> Option<usize> {
        crate::track::checkpoint::steps(&self.folder(Folder::Checkpoints)).first().copied()
    }

    /// The step a resume would load (the newest checkpoint that passes its checksum) and the newer
    /// steps whose checkpoints are corrupt.
    pub fn valid_checkpoint(&self) -> (Option<usize>, Vec<usize>) {
        crate::track::checkpoint::valid_step(&self.folder(Folder::Checkpoints))
    }
}

/// The commit, dirty flag and (when dirty) the diff of the working directory's git checkout.
pub fn git_state() -> serde_json::Map<String, serde_json::Value> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let mut out = serde_json::Map::new();
    if let Some(commit) = git(&["rev-parse", "HEAD"]) {
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.trim().is_empty());
        out.insert("commit".into(), json!(commit.trim()));
        out.insert("dirty".into(), json!(dirty));
        if dirty {
            if let Some(diff) = git(&["diff", "HEAD"]) {
                out.insert("patch".into(), json!(diff));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;

    /// Starting over removes exactly what an attempt writes: every per-attempt artifact and folder and
    /// the training's event files, not the run's identity, status, attempts, lock, log, checkpoints or
    /// the runner's HParams file.
    #[test]
    fn clear_attempt_removes_what_an_attempt_wrote_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let dir = RunDir::at(root.path());
        for a in Artifact::ALL {
            std::fs::write(dir.file(a), a.name()).unwrap();
        }
        for f in Folder::ALL {
            std::fs::create_dir_all(dir.folder(f)).unwrap();
            std::fs::write(dir.folder(f).join("x"), "x").unwrap();
        }
        let events = root.path().join("events.out.tfevents.1.host.2.0");
        std::fs::write(&events, "e").unwrap();
        std::fs::write(root.path().join(super::super::hparams::EVENT_FILE), "h").unwrap();
        dir.clear_attempt().unwrap();
        let mut left: Vec<String> =
            std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        let mut kept: Vec<String> =
            Artifact::ALL.iter().filter(|a| !a.per_attempt()).map(|a| a.name().to_string()).collect();
        kept.extend(["checkpoints".to_string(), super::super::hparams::EVENT_FILE.to_string()]);
        kept.sort();
        assert_eq!(left, kept);
        for name in ["config.toml", "status.json", "attempts.jsonl", "lock", "log.txt", "provenance.json"] {
            assert!(left.contains(&name.to_string()), "{name} kept");
        }
        for name in ["metrics.jsonl", "model.safetensors", "samples.png", "em_history.json", "eval_history.jsonl"] {
            assert!(!left.contains(&name.to_string()), "{name} removed");
        }
        dir.clear_attempt().unwrap();
    }

    #[test]
    fn artifact_names_are_distinct() {
        let mut names: Vec<&str> =
            Artifact::ALL.iter().map(|a| a.name()).chain(Folder::ALL.iter().map(|f| f.name())).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    /// A line of `eval_history.jsonl` keeps the layout of the files written before it was typed.
    #[test]
    fn an_eval_history_line_reads_and_writes_the_known_layout() {
        let text = r#"{"step":10,"fid":61.5,"kid":0.012,"spec":"16 samples"}"#;
        let line: EvalHistoryLine = serde_json::from_str(text).unwrap();
        assert_eq!((line.step, line.metrics["fid"], line.spec.as_str()), (10, Some(61.5), "16 samples"));
        assert_eq!(serde_json::to_string(&line).unwrap(), text);
        // A FID that was NaN is written as null; the line still reads, with its KID.
        let nan = EvalHistoryLine {
            metrics: BTreeMap::from([("fid".into(), Some(f64::NAN)), ("kid".into(), Some(0.5))]),
            ..line
        };
        let back: EvalHistoryLine = serde_json::from_str(&serde_json::to_string(&nan).unwrap()).unwrap();
        assert_eq!((back.metrics["fid"], back.metrics["kid"]), (None, Some(0.5)));
    }

    /// A status file of the format before the metric map: its fields are read into `metrics`.
    #[test]
    fn an_old_status_file_reads_into_the_metric_map() {
        let root = tempfile::tempdir().unwrap();
        let dir = RunDir::at(root.path());
        let old = r#"{"state": "done", "label": "a", "step": 5, "steps": 5, "pid": 1, "host": "h",
            "updated_unix": 0.0, "fid": 12.5, "kid": 0.25, "bpd": 1.5, "scores": {"confident": 0.75}}"#;
        std::fs::write(dir.status_path(), old).unwrap();
        let status = dir.status().unwrap().unwrap();
        let expected = [("bpd", 1.5), ("confident", 0.75), ("fid", 12.5), ("kid", 0.25)];
        assert_eq!(status.metrics, expected.iter().map(|(k, v)| (k.to_string(), *v)).collect());
        dir.write_status(&status).unwrap();
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.status_path()).unwrap()).unwrap();
        assert!(written.get("fid").is_none() && written["metrics"]["fid"] == 12.5, "{written}");
    }

    #[test]
    fn status_round_trips_and_config_is_written() {
        let root = tempfile::tempdir().unwrap();
        let spec = RunSpec::new("exp", "schedule=cosine".into(), RunConfig::default()).unwrap();
        let dir = RunDir::new(root.path(), &spec.hash);
        assert!(dir.status().unwrap().is_none());
        dir.prepare(&spec, None, None).unwrap();
        let mut st = Status::new(State::Done, &spec, 5);
        st.final_loss = Some(0.25);
        dir.write_status(&st).unwrap();
        let back = dir.status().unwrap().unwrap();
        assert_eq!(back.state, State::Done);
        assert_eq!(back.final_loss, Some(0.25));
        let config: RunConfig =
            toml::from_str(&std::fs::read_to_string(dir.path.join("config.toml")).unwrap()).unwrap();
        assert_eq!(config, spec.config, "config.toml reads back as the same configuration");
    }
}
