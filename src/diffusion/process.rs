//! The diffusion process of a run as one object, as improved-diffusion's `GaussianDiffusion` is: the
//! schedule's buffers with the run's target, variance, clipping, objective and weighting, and the
//! three things done with them (Ho et al. 2020): `training_losses` (Algorithm 1), `sample`
//! (Algorithm 2, DDIM, DPM-Solver++, the Karras samplers) and `bound_terms` (the variational bound,
//! eq. 5). The network is a function of (input, t), so this module knows no architecture; it does
//! know the network's channels: with `learn_sigma` the output is [prediction; variance] (2·C), with
//! `self_condition` the input is [x̂_0; x_t] (2·C, lucidrains' order).
use super::likelihood::terms_bpd;
use super::loss::{min_snr_weights, per_sample_loss};
use super::posterior::learned_log_variance;
use super::sampler::{self, ModelFn, SampleOptions, SampleOutput};
use super::target::predicted_x0;
use super::{extract, forward::q_sample, target::training_target, NoiseSchedule};
use crate::config::{
    DiffusionConfig, LossKind, Objective, RunConfig, SamplerConfig, Target, TrainConfig, Variance, Weighting,
};
use tch::{Device, Kind, Tensor};

/// λ of L_hybrid = L_simple + λ L_vlb (Nichol & Dhariwal 2021, §3.1).
pub const HYBRID_LAMBDA: f64 = 0.001;

pub struct Diffusion {
    pub schedule: NoiseSchedule,
    pub target: Target,
    pub variance: Variance,
    /// Clip the predicted x_0 to [-1, 1] when sampling and in the bound (`sample.clip_x0`).
    pub clip_x0: bool,
    pub objective: Objective,
    pub loss: LossKind,
    pub huber_delta: f64,
    pub weighting: Weighting,
    pub min_snr_gamma: f64,
    /// The network outputs a variance beside its prediction (`model.learn_sigma`).
    pub learn_sigma: bool,
    /// The network takes its own x̂_0 as input channels (`model.self_condition`).
    pub self_condition: bool,
    /// s of offset noise (`train.offset_noise_strength`).
    pub offset_noise: f64,
}

/// One batch's random draws besides the images: timestep indices, the noise ε, offset noise's
/// n ~ N(0, I) of shape [B, C] (when on) and whether self-conditioning's first pass runs.
pub struct Noise<'a> {
    pub t: &'a Tensor,
    pub noise: &'a Tensor,
    pub offset: Option<&'a Tensor>,
    pub self_condition: bool,
}

/// One batch's training losses.
pub struct TrainingLosses {
    /// Each sample's unweighted loss `[B]` (the objective: L_simple, L_hybrid or L_vlb).
    pub per_sample: Tensor,
    /// The weighting's per-sample weights (`min_snr`), None for uniform.
    pub weights: Option<Tensor>,
}

impl Diffusion {
    pub fn new(config: &RunConfig, device: Device) -> Self {
        let mut d = Self::of(&config.diffusion, &config.train, config.sample.clip_x0, device);
        d.learn_sigma = config.model.learn_sigma();
        d.self_condition = config.model.self_condition();
        d
    }

    /// The process without the network's options (`learn_sigma`, `self_condition` off).
    pub fn of(d: &DiffusionConfig, t: &TrainConfig, clip_x0: bool, device: Device) -> Self {
        Self {
            schedule: NoiseSchedule::new(d, device),
            target: d.target,
            variance: d.variance,
            clip_x0,
            objective: t.objective,
            loss: t.loss,
            huber_delta: t.huber_delta,
            weighting: t.weighting,
            min_snr_gamma: t.min_snr_gamma,
            learn_sigma: false,
            self_condition: false,
            offset_noise: t.offset_noise_strength,
        }
    }

    pub fn timesteps(&self) -> usize {
        self.schedule.timesteps()
    }

    /// The noise the image is diffused with: ε, plus s·n broadcast over each image's pixels with
    /// offset noise (lucidrains' `p_losses`: `noise += s * rearrange(offset, 'b c -> b c 1 1')`).
    pub fn training_noise(&self, noise: &Tensor, offset: Option<&Tensor>) -> Tensor {
        match offset {
            Some(n) if self.offset_noise > 0.0 => {
                let s = n.size();
                noise + n.reshape([s[0], s[1], 1, 1]) * self.offset_noise
            }
            _ => noise.shallow_clone(),
        }
    }

    /// The network's prediction (first C channels) and its variance output (the rest, with
    /// `learn_sigma`).
    pub fn split_output(&self, output: &Tensor, channels: i64) -> (Tensor, Option<Tensor>) {
        if self.learn_sigma {
            (output.narrow(1, 0, channels), Some(output.narrow(1, channels, channels)))
        } else {
            (output.shallow_clone(), None)
        }
    }

    /// log Σ of p_θ(x_{t−1} | x_t) at timestep indices t: learned from the variance output, or fixed.
    pub fn model_log_variance(&self, t: &Tensor, var_out: Option<&Tensor>, ndim: usize) -> Tensor {
        match var_out {
            Some(v) => learned_log_variance(&self.schedule, t, v),
            None => extract(self.schedule.model_log_variance(self.variance), t, ndim),
        }
    }

    /// The network's input at x_t: x_t, or [x̂_0 (zeros without one); x_t] with self-conditioning.
    pub fn network_input(&self, x_t: &Tensor, x0_hat: Option<&Tensor>) -> Tensor {
        if !self.self_condition {
            return x_t.shallow_clone();
        }
        let cond = x0_hat.map_or_else(|| x_t.zeros_like(), Tensor::shallow_clone);
        Tensor::cat(&[cond, x_t.shallow_clone()], 1)
    }

    /// Self-conditioning's first pass (Chen et al. 2022, lucidrains' `p_losses`): the x̂_0 of the
    /// network without self-conditioning input, without gradient, unclipped.
    fn first_pass_x0(&self, model: &mut ModelFn, x_t: &Tensor, t: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        let output = model(&self.network_input(x_t, None), t);
        let (pred, _) = self.split_output(&output, x_t.size()[1]);
        predicted_x0(self.target, &self.schedule, x_t, t, &pred).detach()
    }

    /// The per-sample loss of the network's prediction at x_t = q_sample(x_0, t, ε) against the target.
    fn loss_of(&self, pred: &Tensor, x0: &Tensor, noise: &Tensor, t: &Tensor) -> Tensor {
        let target = training_target(self.target, &self.schedule, x0, noise, t);
        per_sample_loss(self.loss, self.huber_delta, pred, &target)
    }

    /// The bound's term in bits/dim at each sample's t from a prediction and a variance output.
    fn bound_of(&self, x0: &Tensor, x_t: &Tensor, t: &Tensor, pred: &Tensor, var: Option<&Tensor>, clip: bool) -> Tensor {
        let mut x0_hat = predicted_x0(self.target, &self.schedule, x_t, t, pred);
        if clip {
            x0_hat = x0_hat.clamp(-1.0, 1.0);
        }
        terms_bpd(&self.schedule, x0, x_t, t, &x0_hat, &self.model_log_variance(t, var, x0.dim()))
    }

    /// Algorithm 1's loss for images x_0 and the batch's draws: the network sees
    /// x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (ε with offset noise added) and predicts the target. The
    /// objective: L_simple (the `loss` distance); L_hybrid = L_simple + λ T L_t with the mean
    /// detached in L_t (improved-diffusion's `RESCALED_MSE`, whose T/1000 is λT); L_vlb = T L_t
    /// (`RESCALED_KL`). L_t is the bound's term in bits/dim, unclipped, as improved-diffusion's.
    pub fn training_losses(&self, model: &mut ModelFn, x0: &Tensor, draws: &Noise) -> TrainingLosses {
        let (t, c) = (draws.t, x0.size()[1]);
        let noise = self.training_noise(draws.noise, draws.offset);
        let x_t = q_sample(&self.schedule, x0, t, &noise);
        let cond = (self.self_condition && draws.self_condition).then(|| self.first_pass_x0(model, &x_t, t));
        let output = model(&self.network_input(&x_t, cond.as_ref()), t);
        let (pred, var) = self.split_output(&output, c);
        let scale = self.timesteps() as f64;
        let per_sample = match self.objective {
            Objective::Simple => self.loss_of(&pred, x0, &noise, t),
            Objective::Hybrid => {
                let vb = self.bound_of(x0, &x_t, t, &pred.detach(), var.as_ref(), false);
                self.loss_of(&pred, x0, &noise, t) + vb.to_kind(Kind::Float) * (HYBRID_LAMBDA * scale)
            }
            Objective::Vlb => self.bound_of(x0, &x_t, t, &pred, var.as_ref(), false).to_kind(Kind::Float) * scale,
        };
        let weights = match self.weighting {
            Weighting::Uniform => None,
            Weighting::MinSnr => Some(min_snr_weights(self.target, &self.schedule, t, self.min_snr_gamma)),
        };
        TrainingLosses { per_sample, weights }
    }

    /// Samples with `sampler` from x_T = `x_t`; records x_t at the paper timesteps of `trajectory`.
    /// With self-conditioning each network call gets the x̂_0 of the call before (zeros at first),
    /// clipped with `clip_x0`, as lucidrains' samplers feed it.
    pub fn sample(
        &self,
        sampler: &SamplerConfig,
        x_t: Tensor,
        trajectory: &[usize],
        model: &mut ModelFn,
        on_step: &mut dyn FnMut(usize, &Tensor),
    ) -> SampleOutput {
        let opts = SampleOptions {
            target: self.target,
            variance: self.variance,
            clip_x0: self.clip_x0,
            learn_sigma: self.learn_sigma,
            trajectory,
        };
        if !self.self_condition {
            return sampler::sample(sampler, &self.schedule, x_t, &opts, model, on_step);
        }
        let c = x_t.size()[1];
        let mut previous: Option<Tensor> = None;
        let mut conditioned = |x: &Tensor, t: &Tensor| {
            let output = model(&self.network_input(x, previous.as_ref()), t);
            let (pred, _) = self.split_output(&output, c);
            let mut x0 = sampler::x0_at(&self.schedule, self.target, x, t, &pred);
            if self.clip_x0 {
                x0 = x0.clamp(-1.0, 1.0);
            }
            previous = Some(x0);
            output
        };
        sampler::sample(sampler, &self.schedule, x_t, &opts, &mut conditioned, on_step)
    }

    /// The bound's term in bits/dim at each sample's timestep (L_0 at index 0, L_{t−1} above) and the
    /// L_simple loss of the same network call, for x_t = q_sample(x_0, t, ε). A self-conditioned
    /// network gets its own first-pass x̂_0, as in training's conditioned half.
    pub fn bound_terms(&self, model: &mut ModelFn, x0: &Tensor, t: &Tensor, noise: &Tensor) -> (Tensor, Tensor) {
        let x_t = q_sample(&self.schedule, x0, t, noise);
        let cond = self.self_condition.then(|| self.first_pass_x0(model, &x_t, t));
        let output = model(&self.network_input(&x_t, cond.as_ref()), t);
        let (pred, var) = self.split_output(&output, x0.size()[1]);
        let bits = self.bound_of(x0, &x_t, t, &pred, var.as_ref(), self.clip_x0);
        (bits, self.loss_of(&pred, x0, noise, t))
    }
}
