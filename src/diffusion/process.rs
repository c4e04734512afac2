//! The diffusion process of a run as one object, as improved-diffusion's `GaussianDiffusion` is: the
//! schedule's buffers with the run's target, variance, clipping, loss and weighting, and the three
//! things done with them (Ho et al. 2020): `training_losses` (Algorithm 1), `sample` (Algorithm 2, or
//! DDIM) and `bound_terms` (the variational bound, eq. 5). The network is a function of (x_t, t), so
//! this module knows no architecture.
use super::likelihood::{vlb_terms_bpd, TermOptions};
use super::loss::{min_snr_weights, per_sample_loss};
use super::sampler::{self, ModelFn, SampleOptions, SampleOutput};
use super::{forward::q_sample, target::training_target, NoiseSchedule};
use crate::config::{DiffusionConfig, LossKind, RunConfig, SamplerConfig, Target, TrainConfig, Variance, Weighting};
use tch::{Device, Tensor};

pub struct Diffusion {
    pub schedule: NoiseSchedule,
    pub target: Target,
    pub variance: Variance,
    /// Clip the predicted x_0 to [-1, 1] when sampling and in the bound (`sample.clip_x0`).
    pub clip_x0: bool,
    pub loss: LossKind,
    pub huber_delta: f64,
    pub weighting: Weighting,
    pub min_snr_gamma: f64,
}

/// One batch's training losses.
pub struct TrainingLosses {
    /// Each sample's unweighted loss `[B]`.
    pub per_sample: Tensor,
    /// The weighting's per-sample weights (`min_snr`), None for uniform.
    pub weights: Option<Tensor>,
}

impl Diffusion {
    pub fn new(config: &RunConfig, device: Device) -> Self {
        Self::of(&config.diffusion, &config.train, config.sample.clip_x0, device)
    }

    pub fn of(d: &DiffusionConfig, t: &TrainConfig, clip_x0: bool, device: Device) -> Self {
        Self {
            schedule: NoiseSchedule::new(&d.schedule, d.timesteps, device),
            target: d.target,
            variance: d.variance,
            clip_x0,
            loss: t.loss,
            huber_delta: t.huber_delta,
            weighting: t.weighting,
            min_snr_gamma: t.min_snr_gamma,
        }
    }

    pub fn timesteps(&self) -> usize {
        self.schedule.timesteps()
    }

    /// The per-sample loss of the network's `output` at x_t = q_sample(x_0, t, ε) against the target.
    fn loss_of(&self, output: &Tensor, x0: &Tensor, noise: &Tensor, t: &Tensor) -> Tensor {
        let target = training_target(self.target, &self.schedule, x0, noise, t);
        per_sample_loss(self.loss, self.huber_delta, output, &target)
    }

    /// Algorithm 1's loss for images x_0, timestep indices t and noise ε: the network sees
    /// x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε and predicts the target.
    pub fn training_losses(&self, model: &mut ModelFn, x0: &Tensor, t: &Tensor, noise: &Tensor) -> TrainingLosses {
        let x_t = q_sample(&self.schedule, x0, t, noise);
        let output = model(&x_t, t);
        let per_sample = self.loss_of(&output, x0, noise, t);
        let weights = match self.weighting {
            Weighting::Uniform => None,
            Weighting::MinSnr => Some(min_snr_weights(self.target, &self.schedule, t, self.min_snr_gamma)),
        };
        TrainingLosses { per_sample, weights }
    }

    /// Samples with `sampler` from x_T = `x_t`; records x_t at the paper timesteps of `trajectory`.
    pub fn sample(
        &self,
        sampler: &SamplerConfig,
        x_t: Tensor,
        trajectory: &[usize],
        model: &mut ModelFn,
        on_step: &mut dyn FnMut(usize),
    ) -> SampleOutput {
        let opts = SampleOptions { target: self.target, variance: self.variance, clip_x0: self.clip_x0, trajectory };
        sampler::sample(sampler, &self.schedule, x_t, &opts, model, on_step)
    }

    /// The bound's term in bits/dim at each sample's timestep (L_0 at index 0, L_{t−1} above) and the
    /// training loss of the same network call, for x_t = q_sample(x_0, t, ε).
    pub fn bound_terms(&self, model: &mut ModelFn, x0: &Tensor, t: &Tensor, noise: &Tensor) -> (Tensor, Tensor) {
        let opts = TermOptions { target: self.target, variance: self.variance, clip_x0: self.clip_x0 };
        let mut output = None;
        let mut recording = |x: &Tensor, t: &Tensor| {
            let out = model(x, t);
            output = Some(out.shallow_clone());
            out
        };
        let bits = vlb_terms_bpd(&self.schedule, x0, t, noise, &opts, &mut recording);
        let output = output.expect("the bound calls the model");
        (bits, self.loss_of(&output, x0, noise, t))
    }
}
