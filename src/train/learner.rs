//! What a run trains and updates every step: the network and its weights, Adam, the EMA, and the
//! timestep sampler (the loss history of importance-sampled t).
use super::checkpoints::{self, Core};
use super::{ema, optim, step};
use crate::config::{RunConfig, TimestepSampling, TrainConfig};
use crate::diffusion::timesteps::TimestepSampler;
use crate::diffusion::Diffusion;
use crate::models::{self, Denoiser};
use crate::progress::phases::Phases;
use crate::rng::reseed;
use crate::track::checkpoint::Checkpoint;
use anyhow::Result;
use tch::{nn, Device, Tensor};

pub struct Learner {
    pub vs: nn::VarStore,
    pub model: Box<dyn Denoiser>,
    pub opt: optim::Adam,
    pub ema: ema::Ema,
    pub timesteps: TimestepSampler,
}

/// One step's results: the loss (the optimised scalar and each sample's), the gradient norm on
/// logging steps, the learning rate used.
pub struct Update {
    pub loss: step::BatchLoss,
    pub grad_norm: Option<Tensor>,
    pub lr: f64,
}

fn mark(phases: &mut Option<Phases>, phase: &'static str) {
    if let Some(p) = phases.as_mut() {
        p.mark(phase)
    }
}

impl Learner {
    /// The network initialised from the run's "init" stream, and fresh optimizer state.
    pub fn new(cfg: &RunConfig, classes: Option<i64>, device: Device) -> Self {
        let tc = &cfg.train;
        reseed(cfg.seed, "init", 0);
        let vs = nn::VarStore::new(device);
        let model = models::build_for(cfg, classes, &vs.root());
        if tc.channels_last {
            for (_, mut v) in vs.variables() {
                v.set_data(&crate::device::channels_last(&v));
            }
        }
        let opt = optim::Adam::new(&vs, tc.lr);
        let ema = ema::Ema::new(&vs, tc.ema_decay, tc.ema_warmup);
        let timesteps = match tc.timestep_sampling {
            TimestepSampling::Uniform => TimestepSampler::uniform(cfg.diffusion.timesteps),
            TimestepSampling::LossSecondMoment => TimestepSampler::loss_second_moment(cfg.diffusion.timesteps),
        };
        Learner { vs, model, opt, ema, timesteps }
    }

    pub fn core(&self) -> Core<'_> {
        Core { vs: &self.vs, opt: &self.opt, ema: &self.ema, timesteps: &self.timesteps }
    }

    pub fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        checkpoints::restore(ck, &self.vs, &mut self.opt, &mut self.ema, &mut self.timesteps)
    }

    /// One optimizer step on `batch` (Ho et al. Algorithm 1): the loss, its gradient, Adam at the
    /// step's learning rate, the EMA, and the timestep sampler's history; the gradient norm only on
    /// logging steps (it costs a reduction).
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        diffusion: &Diffusion,
        tc: &TrainConfig,
        device: Device,
        batch: step::Batch,
        step: usize,
        logging: bool,
        phases: &mut Option<Phases>,
    ) -> Update {
        let t = batch.t;
        let loss = step::batch_loss(self.model.as_ref(), diffusion, tc, device, batch);
        mark(phases, "forward and loss");
        self.opt.zero_grad();
        loss.loss.backward();
        mark(phases, "backward");
        let grad_norm = logging.then(|| self.opt.grad_norm());
        let lr = optim::lr_at(tc.lr, tc.warmup_steps, tc.lr_decay, step, tc.steps);
        self.opt.set_lr(lr);
        self.opt.step();
        mark(phases, "adam");
        self.ema.update(&self.vs, step as i64 - 1);
        mark(phases, "ema");
        self.timesteps.update(t, &loss.per_sample.detach());
        mark(phases, "timestep sampler");
        Update { loss, grad_norm, lr }
    }
}
