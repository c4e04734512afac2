//! What the training loop calls besides the step itself: logging, the evaluation during training,
//! a clustering's E-steps, the stop signal and the checkpoints are each a `Hook`. The loop trains one
//! step, then calls every hook's `after_step` in order; a hook asks for a checkpoint or a stop through
//! the `Step` it is given. A new training feature is a new hook (and one line in `train::hooks`), not
//! an edit of the loop.
use crate::config::RunSpec;
use crate::data::Dataset;
use crate::diffusion::Diffusion;
use crate::models::Denoiser;
use crate::progress::Reporter;
use crate::track::checkpoint::Checkpoint;
use crate::track::run_dir::RunDir;
use crate::track::tensorboard::EventWriter;
use anyhow::Result;
use std::collections::BTreeMap;
use std::time::Instant;
use tch::{nn, Tensor};

use super::ema::Ema;

/// What every hook sees at the start of an attempt.
pub struct Begin<'a> {
    /// The step this attempt starts from (0: a new run).
    pub start: usize,
    /// The classes the model is conditioned on.
    pub classes: Option<i64>,
    pub run: &'a RunDir,
    pub events: &'a mut EventWriter,
    pub reporter: &'a mut dyn Reporter,
}

/// What every hook sees after a training step, and the requests it may make.
pub struct Step<'a> {
    pub step: usize,
    pub steps: usize,
    /// Whether this step closes a logging window (`train.log_every`, and the last step).
    pub logging: bool,
    /// The step's mean loss, each sample's loss and timestep (on the device: no host sync).
    pub loss: &'a Tensor,
    pub per_sample: &'a Tensor,
    pub t: &'a Tensor,
    /// The gradient norm, computed on logging steps only.
    pub grad_norm: Option<&'a Tensor>,
    pub lr: f64,
    /// When this attempt started (for the logged elapsed time), and when this step began.
    pub started: Instant,
    pub step_started: Instant,
    pub spec: &'a RunSpec,
    pub run: &'a RunDir,
    pub diffusion: &'a Diffusion,
    pub data: &'a Dataset,
    /// The network being trained, its weights and their moving average.
    pub model: &'a dyn Denoiser,
    pub weights: &'a nn::VarStore,
    pub ema: &'a Ema,
    pub events: &'a mut EventWriter,
    pub reporter: &'a mut dyn Reporter,
    /// The loss of the last logging window of this attempt (written by the logging hook).
    pub last_loss: &'a mut Option<f64>,
    /// Requests: write a checkpoint after this step; stop after it (the signal's name).
    pub checkpoint: bool,
    pub stop: Option<&'static str>,
}

impl Step<'_> {
    /// Puts the progress display back on training after a hook showed its own phase.
    pub fn resume_progress(&mut self) {
        self.reporter.phase("train", self.steps as u64);
        self.reporter.advance(self.step as u64);
    }
}

/// What a checkpoint carries for the hooks: tensors (named `<hook>.<name>`) and JSON state by key.
#[derive(Default)]
pub struct Saved {
    pub tensors: Vec<(String, Tensor)>,
    pub state: serde_json::Map<String, serde_json::Value>,
}

/// What every hook sees at the end of training, once the final weights and samples are written, and
/// what it adds to the run's outcome.
pub struct End<'a> {
    pub spec: &'a RunSpec,
    pub run: &'a RunDir,
    pub diffusion: &'a Diffusion,
    pub data: &'a Dataset,
    /// The network that samples (the EMA or the raw weights, as `sample.use_ema` says).
    pub sampling_model: &'a dyn Denoiser,
    pub events: &'a mut EventWriter,
    pub reporter: &'a mut dyn Reporter,
    /// Numbers the training itself measured, by registered metric name.
    pub metrics: BTreeMap<String, f64>,
    /// The loss of the last logging window.
    pub final_loss: Option<f64>,
    /// The best headline metric of the evaluations during training and its step.
    pub best_during: Option<(usize, f64)>,
}

/// One training feature around the loop. Every method has a default that does nothing.
pub trait Hook {
    /// Its name in the step profile (`--profile`).
    fn name(&self) -> &'static str;

    /// Restores the hook's part of the checkpoint this attempt resumes from.
    fn restore(&mut self, _checkpoint: &Checkpoint) -> Result<()> {
        Ok(())
    }

    /// Before the first step of the attempt (after any restore).
    fn begin(&mut self, _at: &mut Begin) -> Result<()> {
        Ok(())
    }

    /// The classes of the batch at `indices` in place of the dataset's labels (a clustering's
    /// clusters), or None.
    fn labels(&self, _indices: &Tensor, _step: usize) -> Option<Tensor> {
        None
    }

    /// After each training step (the optimizer and the EMA updated).
    fn after_step(&mut self, _step: &mut Step) -> Result<()> {
        Ok(())
    }

    /// Adds the hook's state to the checkpoint being written.
    fn save(&self, _into: &mut Saved) {}

    /// After the checkpoint of `step` was written.
    fn saved(&mut self, _step: &mut Step) -> Result<()> {
        Ok(())
    }

    /// After the final weights and samples are written.
    fn finish(&mut self, _end: &mut End) -> Result<()> {
        Ok(())
    }
}
