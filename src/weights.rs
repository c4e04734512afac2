//! Loading a run's trained weights: the final ones (checked against the sha256 that `status.json`
//! records) or those of one of its checkpoints, into the run's network.
use crate::config::RunConfig;
use crate::models::{self, Denoiser};
use crate::track::run_dir::{Artifact, Folder, RunDir};
use crate::track::{checkpoint, sha256_hex};
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{nn, Device};

/// A run's network with the weights it was asked for.
pub struct Loaded {
    pub config: RunConfig,
    pub vs: nn::VarStore,
    pub model: Box<dyn Denoiser>,
    /// The classes the model is conditioned on (None: unconditional).
    pub classes: Option<i64>,
    pub step: usize,
    pub sha256: String,
}

/// Loads a finished run's final weights (`ema.safetensors` or `model.safetensors`, checked against
/// `status.json`) or the EMA/raw weights of one of its checkpoints.
pub fn load_weights(run_dir: &Path, use_ema: bool, checkpoint: Option<usize>, device: Device) -> Result<Loaded> {
    let dir = RunDir { path: run_dir.to_path_buf() };
    let status =
        dir.status()?.with_context(|| format!("{}: no status.json; is this a run directory?", run_dir.display()))?;
    let config = dir.load_config()?;
    let mut vs = nn::VarStore::new(device);
    let classes = models::num_classes(&config)?;
    let model = models::build_for(&config, classes, &vs.root());
    let (step, sha256) = match checkpoint {
        None => {
            if !status.trained() {
                bail!("{}: the run is {:?}, not done; train it first", run_dir.display(), status.state);
            }
            let (file, recorded) = if use_ema {
                (Artifact::EmaWeights, &status.ema_sha256)
            } else {
                (Artifact::Weights, &status.weights_sha256)
            };
            let weights = RunDir::at(run_dir).file(file);
            let bytes = std::fs::read(&weights).with_context(|| format!("cannot read {}", weights.display()))?;
            let actual = sha256_hex(&bytes);
            if recorded.as_deref() != Some(actual.as_str()) {
                bail!(
                    "{}: checksum mismatch (sha256 {actual}, status.json records {recorded:?}): the weights are corrupt",
                    weights.display()
                );
            }
            vs.load(&weights).with_context(|| format!("cannot load {}", weights.display()))?;
            (config.train.steps, actual)
        }
        Some(step) => {
            let ck_dir = RunDir::at(run_dir).folder(Folder::Checkpoints);
            // The caller says which option asked for it (`--checkpoint`, `eval.checkpoint`).
            let available = checkpoint::steps(&ck_dir);
            if !available.contains(&step) {
                bail!("no checkpoint at step {step} in {}: available are {available:?}", ck_dir.display());
            }
            let ck = checkpoint::load(&ck_dir, step)?;
            let prefix = if use_ema { "ema" } else { "model" };
            for (name, var) in vs.variables() {
                let src = ck
                    .tensors
                    .get(&format!("{prefix}.{name}"))
                    .with_context(|| format!("the checkpoint at step {step} lacks {prefix}.{name}"))?;
                tch::no_grad(|| var.shallow_clone().copy_(src));
            }
            (step, format!("checkpoint {step} ({prefix})"))
        }
    };
    Ok(Loaded { config, vs, model, classes, step, sha256 })
}

/// Loads the post-hoc EMA of relative width `sigma_rel` of a run trained with `train.posthoc_ema`,
/// reconstructed from its snapshots up to its last step (or to `checkpoint`, a step a snapshot was
/// stored at: refused otherwise, with the steps there are). `sha256` is that of the reconstruction's
/// inputs (σ_rel, the step, the snapshots' records).
pub fn load_posthoc(run_dir: &Path, sigma_rel: f64, checkpoint: Option<usize>, device: Device) -> Result<Loaded> {
    let dir = RunDir { path: run_dir.to_path_buf() };
    let status =
        dir.status()?.with_context(|| format!("{}: no status.json; is this a run directory?", run_dir.display()))?;
    let config = dir.load_config()?;
    if config.train.posthoc_ema.is_none() {
        bail!("{}: trained without [train.posthoc_ema]: it stored no snapshots to reconstruct from", run_dir.display());
    }
    if checkpoint.is_none() && !status.trained() {
        bail!("{}: the run is {:?}, not done; train it first", run_dir.display(), status.state);
    }
    let step = checkpoint.unwrap_or(config.train.steps);
    let rec = crate::posthoc::reconstruct(&dir.folder(Folder::EmaSnapshots), sigma_rel, Some(step))?;
    let vs = nn::VarStore::new(device);
    let classes = models::num_classes(&config)?;
    let model = models::build_for(&config, classes, &vs.root());
    for (name, var) in vs.variables() {
        let src = rec.weights.get(&name).with_context(|| format!("the snapshots lack {name}"))?;
        tch::no_grad(|| var.shallow_clone().copy_(src));
    }
    Ok(Loaded { config, vs, model, classes, step, sha256: rec.sha256 })
}
