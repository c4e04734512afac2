//! Checkpoints of the training state: the weights, the optimizer's moments, the EMA, the timestep
//! sampler, the time spent and every hook's state (`Hook::save`), written every
//! `train.checkpoint_every` steps, at the last step and when a stop is requested; after each, the
//! status file says where the run stands.
use super::hook::{Hook, Saved, Step};
use super::{ema, optim};
use crate::diffusion::timesteps::TimestepSampler;
use crate::track::checkpoint::{self, Checkpoint};
use crate::track::run_dir::{State, Status};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;
use tch::{nn, Tensor};

/// The hook that asks for the periodic and the last checkpoint, and writes the status after each.
pub struct Checkpoints {
    pub every: usize,
}

impl Hook for Checkpoints {
    fn name(&self) -> &'static str {
        "checkpoint"
    }

    fn after_step(&mut self, s: &mut Step) -> Result<()> {
        s.checkpoint |= s.step.is_multiple_of(self.every) || s.step == s.steps;
        Ok(())
    }

    fn saved(&mut self, s: &mut Step) -> Result<()> {
        let mut status = Status::new(State::Running, s.spec, s.step);
        status.last_loss = *s.last_loss;
        s.run.write_status(&status)
    }
}

/// Seconds a run has spent through a step, summed over its attempts: in the training loop (for
/// images/s) and in all (wall time). Kept in each checkpoint's state (execution bookkeeping: it does
/// not change what the run computes).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    pub train_seconds: f64,
    pub wall_seconds: f64,
    /// Steps trained before the attempts that recorded their time (checkpoints of older versions).
    pub uncounted_steps: usize,
}

impl Spent {
    pub fn of(state: &serde_json::Value, step: usize) -> Self {
        let (train_seconds, wall_seconds, uncounted_steps) = crate::track::legacy::checkpoint_spent(state, step);
        Spent { train_seconds, wall_seconds, uncounted_steps }
    }

    /// With this attempt's `train` and `wall` seconds so far.
    pub fn plus(&self, train: f64, wall: f64) -> Self {
        Spent { train_seconds: self.train_seconds + train, wall_seconds: self.wall_seconds + wall, ..*self }
    }
}

/// The state every run trains: the weights, the optimizer, the EMA and the timestep sampler.
pub struct Core<'a> {
    pub vs: &'a nn::VarStore,
    pub opt: &'a optim::Adam,
    pub ema: &'a ema::Ema,
    pub timesteps: &'a TimestepSampler,
}

pub fn save(dir: &Path, step: usize, core: Core, spent: &Spent, hooks: &[Box<dyn Hook + '_>]) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> =
        core.vs.variables().into_iter().map(|(k, v)| (format!("model.{k}"), v)).collect();
    tensors.extend(core.opt.state());
    tensors.extend(core.ema.state());
    let mut saved = Saved::default();
    for h in hooks {
        h.save(&mut saved);
    }
    tensors.extend(saved.tensors);
    // safetensors stores row-major bytes: channels-last tensors are written as contiguous copies.
    let tensors: Vec<(String, Tensor)> = tensors.into_iter().map(|(k, t)| (k, t.contiguous())).collect();
    let mut state = serde_json::json!({
        // The device kind that computed these weights: a resume on the other kind is refused unless
        // allowed (`runner::one::check_device_change`).
        "device": if core.vs.device().is_cuda() { "cuda" } else { "cpu" },
        "adam_step": core.opt.step,
        "timestep_sampler": core.timesteps.state(),
        "train_seconds": spent.train_seconds,
        "wall_seconds": spent.wall_seconds,
        "uncounted_steps": spent.uncounted_steps,
    });
    state.as_object_mut().expect("an object").extend(saved.state);
    checkpoint::save(dir, step, &tensors, state)
}

pub fn restore(
    ck: &Checkpoint,
    vs: &nn::VarStore,
    opt: &mut optim::Adam,
    ema: &mut ema::Ema,
    ts: &mut TimestepSampler,
) -> Result<()> {
    let t: &HashMap<String, Tensor> = &ck.tensors;
    for (name, var) in vs.variables() {
        let src = t
            .get(&format!("model.{name}"))
            .with_context(|| format!("checkpoint at step {} lacks model.{name}", ck.step))?;
        tch::no_grad(|| var.shallow_clone().copy_(src));
    }
    opt.load_state(t, crate::track::legacy::checkpoint_adam_step(&ck.state, ck.step))?;
    ema.load_state(t)?;
    ts.load_state(&ck.state["timestep_sampler"])
}
