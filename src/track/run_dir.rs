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
    #[serde(default, rename = "fid", skip_serializing)]
    legacy_fid: Option<f64>,
    #[serde(default, rename = "kid", skip_serializing)]
    legacy_kid: Option<f64>,
    #[serde(default, rename = "bpd", skip_serializing)]
    legacy_bpd: Option<f64>,
    #[serde(default, rename = "scores", skip_serializing)]
    legacy_scores: BTreeMap<String, f64>,
    /// The lowest FID of the evaluations during training (`eval.every`) and its step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_fid_during: Option<(usize, f64)>,
    /// What the training itself measured (a cluster-conditional run's clustering scores), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub train_metrics: BTreeMap<String, f64>,
}

impl Status {
    fn upgrade(mut self) -> Self {
        for (k, v) in
            [("fid", self.legacy_fid.take()), ("kid", self.legacy_kid.take()), ("bpd", self.legacy_bpd.take())]
        {
            if let Some(v) = v {
                self.metrics.entry(k.to_string()).or_insert(v);
            }
        }
        for (k, v) in std::mem::take(&mut self.legacy_scores) {
            self.metrics.entry(k).or_insert(v);
        }
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
            legacy_fid: None,
            legacy_kid: None,
            legacy_bpd: None,
            legacy_scores: BTreeMap::new(),
            best_fid_during: None,
            train_metrics: BTreeMap::new(),
        }
    }
}

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

impl RunDir {
    pub fn new(results_root: &Path, hash: &str) -> Self {
        Self { path: results_root.join("runs").join(hash) }
    }

    pub fn status_path(&self) -> PathBuf {
        self.path.join("status.json")
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
        let config = self.path.join("config.toml");
        let text = header + &body;
        // Written only when it changes: a finished experiment reads (plan, run) on a read-only folder.
        if std::fs::read(&config).ok().as_deref() != Some(text.as_bytes()) {
            atomic_write(&config, text.as_bytes())?;
        }
        let provenance = self.path.join("provenance.json");
        if provenance.exists() {
            return Ok(());
        }
        let git = git_state();
        if let Some(patch) = git.get("patch").and_then(|p| p.as_str()) {
            atomic_write(&self.path.join("code.patch"), patch.as_bytes())?;
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
        let path = self.path.join("attempts.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(f, "{line}").with_context(|| format!("cannot write {}", path.display()))
    }

    /// The attempts made so far (oldest first).
    pub fn attempts(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path.join("attempts.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The run's resolved configuration (`config.toml`), without checking that it hashes to the
    /// directory's name: what evaluating a run made by an earlier version of the code needs.
    pub fn load_config(&self) -> Result<crate::config::RunConfig> {
        let config_path = self.path.join("config.toml");
        let text =
            std::fs::read_to_string(&config_path).with_context(|| format!("cannot read {}", config_path.display()))?;
        toml::from_str(&text).with_context(|| format!("{}: invalid configuration", config_path.display()))
    }

    /// The run spec stored in this directory: `config.toml` and the labels of `provenance.json`. The
    /// hash is recomputed and must be the directory's name (through a label link: the target's).
    pub fn load_spec(&self) -> Result<RunSpec> {
        let config = self.load_config()?;
        let prov_path = self.path.join("provenance.json");
        let prov: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&prov_path).unwrap_or_else(|_| "{}".into()))
                .with_context(|| format!("{}: invalid JSON", prov_path.display()))?;
        let text_of = |k: &str| prov[k].as_str().unwrap_or("unknown").to_string();
        let spec = RunSpec::new(&text_of("experiment"), text_of("label"), config)
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
        crate::track::checkpoint::steps(&self.path.join("checkpoints")).first().copied()
    }

    /// The step a resume would load (the newest checkpoint that passes its checksum) and the newer
    /// steps whose checkpoints are corrupt.
    pub fn valid_checkpoint(&self) -> (Option<usize>, Vec<usize>) {
        crate::track::checkpoint::valid_step(&self.path.join("checkpoints"))
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
