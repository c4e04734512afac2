//! The diffusion process of a run as one object, as improved-diffusion's `GaussianDiffusion` is: the
//! schedule's buffers with the run's target, variance, clipping, objective and weighting, and the
//! three things done with them (Ho et al. 2020): `training_losses` (Algorithm 1), `sample`
//! (Algorithm 2, DDIM, DPM-Solver++, the Karras samplers) and `bound_terms` (the variational bound,
//! eq. 5). The network is a function of (input, t), so this module knows no architecture; it does
//! know the network's channels: with `learn_sigma` the output is [prediction; variance] (2·C), with
//! `self_condition` the input is [x̂_0; x_t] (2·C, lucidrains' order).
use super::formulation::Formulation;
use super::likelihood::terms_bpd;
use super::loss::{min_snr_weights, per_sample_loss};
use super::posterior::learned_log_variance;
use super::sampler::{self, ModelFn, SampleOptions, SampleOutput};
use super::target::predicted_x0;
use super::{extract, forward::q_sample, target::training_target, NoiseSchedule};
use crate::config::{
    DiffusionConfig, LossKind, Objective, RunConfig, SamplerConfig, Target, TrainConfig, Variance, Weighting,
};
use std::ops::ControlFlow;
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
    /// DDPM (this chain), or EDM / flow matching, which train and sample through their own modules.
    pub formulation: Formulation,
}

/// One batch's random draws besides the images: timestep indices, the noise ε, offset noise's
/// n ~ N(0, I) of shape [B, C] (when on), whether self-conditioning's first pass runs, and a
/// continuous formulation's per-image draw of its noise level (`formulation::TimeDraw`).
pub struct Noise<'a> {
    pub t: &'a Tensor,
    pub time: Option<&'a Tensor>,
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
            formulation: Formulation::of(&d.formulation),
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
    fn bound_of(
        &self,
        x0: &Tensor,
        x_t: &Tensor,
        t: &Tensor,
        pred: &Tensor,
        var: Option<&Tensor>,
        clip: bool,
    ) -> Tensor {
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
        fn continuous(time: Option<&Tensor>) -> &Tensor {
            time.expect("a continuous formulation draws its noise levels")
        }
        match &self.formulation {
            Formulation::Ddpm => {}
            Formulation::Edm(edm) => {
                let per_sample = edm.training_loss(model, x0, draws.noise, continuous(draws.time));
                return TrainingLosses { per_sample, weights: None };
            }
            Formulation::Flow(flow) => {
                let per_sample = flow.training_loss(model, x0, draws.noise, continuous(draws.time));
                return TrainingLosses { per_sample, weights: None };
            }
        }
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
        on_step: &mut dyn FnMut(usize, &Tensor) -> ControlFlow<()>,
    ) -> SampleOutput {
        let run = sampler::Sampling { clip: self.clip_x0, trajectory, timesteps: self.timesteps() };
        match &self.formulation {
            Formulation::Ddpm => {}
            Formulation::Edm(edm) => return edm.sample(sampler, x_t, &run, model, on_step),
            Formulation::Flow(flow) => return flow.sample(sampler, x_t, &run, model, on_step),
        }
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

    /// One image `x0` (`[1, C, H, W]`) noised to five levels from clean to the noisiest with `noise`
    /// (`[5, C, H, W]`), as the network sees them: DDPM's x_t at t = 0, T/4, T/2, 3T/4 and T; EDM's
    /// x_0 + σ n at σ = 0, 0.25, 1, 4 and σ_max, shown as x/√(σ² + 1); flow's x_t at t = 0, ¼, ½, ¾, 1.
    pub fn forward_strip(&self, x0: &Tensor, noise: &Tensor) -> Tensor {
        let x0 = x0.repeat([5, 1, 1, 1]);
        let levels = |v: [f64; 5]| Tensor::from_slice(&v).to_kind(Kind::Float).to_device(x0.device());
        match &self.formulation {
            Formulation::Ddpm => {
                let t_max = self.timesteps();
                let ts: Vec<i64> =
                    [0, t_max / 4, t_max / 2, 3 * t_max / 4, t_max - 1].iter().map(|&t| t as i64).collect();
                q_sample(&self.schedule, &x0, &Tensor::from_slice(&ts).to_device(x0.device()), noise)
            }
            Formulation::Edm(edm) => {
                let sigma = levels([0.0, 0.25, 1.0, 4.0, edm.config.sigma_max]).reshape([-1, 1, 1, 1]);
                (&x0 + noise * &sigma) / (sigma.square() + 1.0).sqrt()
            }
            Formulation::Flow(flow) => flow.path(&x0, noise, &levels([0.0, 0.25, 0.5, 0.75, 1.0])).0,
        }
    }

    /// The bound's term in bits/dim at each sample's timestep (L_0 at index 0, L_{t−1} above) and the
    /// L_simple loss of the same network call, for x_t = q_sample(x_0, t, ε). A self-conditioned
    /// network gets its own first-pass x̂_0, as in training's conditioned half.
    pub fn bound_terms(&self, model: &mut ModelFn, x0: &Tensor, t: &Tensor, noise: &Tensor) -> (Tensor, Tensor) {
        assert!(matches!(self.formulation, Formulation::Ddpm), "the bound is DDPM's (refused by validation)");
        let x_t = q_sample(&self.schedule, x0, t, noise);
        let cond = self.self_condition.then(|| self.first_pass_x0(model, &x_t, t));
        let output = model(&self.network_input(&x_t, cond.as_ref()), t);
        let (pred, var) = self.split_output(&output, x0.size()[1]);
        let bits = self.bound_of(x0, &x_t, t, &pred, var.as_ref(), self.clip_x0);
        (bits, self.loss_of(&pred, x0, noise, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::{alpha_bar, linear_betas};

    /// erf by its Taylor series 2/√π Σ (−1)^n x^{2n+1}/(n!(2n+1)), summed to 1e-17 (|x| < 3 here).
    fn erf(x: f64) -> f64 {
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 * sum.abs().max(1e-300) {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
    fn phi(x: f64) -> f64 {
        0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
    }

    /// A process of T = 4 (β = 0.1 … 0.4) with a learned variance, L_simple as the mse of ε.
    fn process(objective: Objective) -> Diffusion {
        let tc = TrainConfig { objective, ..TrainConfig::default() };
        let mut d = Diffusion::of(&DiffusionConfig::default(), &tc, false, Device::Cpu);
        d.schedule = NoiseSchedule::from_betas(linear_betas(4, 0.1, 0.4), Device::Cpu);
        d.learn_sigma = true;
        d
    }

    /// The hybrid and vlb losses of one image of two pixels (x_0 = (−1, 0.2), on the 8-bit grid
    /// only for the first), for a fixed network output (ε̂, v) at t = 3 (index 2: a Gaussian KL) and
    /// t = 1 (index 0: the discretised decoder), against the values worked out here in f64 scalars
    /// from the closed forms: x̂_0 = (x_t − √(1 − ᾱ) ε̂)/√ᾱ, μ = c1 x + c2 x_t,
    /// log Σ = v' log β + (1 − v') log β̃ (v' = (v + 1)/2, β̃_1 → β̃_2),
    /// KL = ½(−1 + log Σ − log β̃ + β̃/Σ + (μ − μ̂)²/Σ), decoder −log(Φ(b₊) − Φ(b₋)) with the edge bin
    /// at −1 reaching −∞; L_t = mean over pixels / ln 2; L_vlb = T L_t, L_hybrid = mse + 0.001 T L_t.
    #[test]
    fn hybrid_and_vlb_losses_match_the_closed_forms() {
        let betas = linear_betas(4, 0.1, 0.4);
        let ab = alpha_bar(&betas);
        let x0v = [-1.0, 0.2];
        let epsv = [0.3, -0.7];
        let (e_hat, v_out) = ([0.1, -0.5], [0.4, -0.6]);
        let x0 = Tensor::from_slice(&x0v).to_kind(Kind::Float).reshape([1, 1, 1, 2]);
        let noise = Tensor::from_slice(&epsv).to_kind(Kind::Float).reshape([1, 1, 1, 2]);
        let output =
            Tensor::from_slice(&[e_hat[0], e_hat[1], v_out[0], v_out[1]]).to_kind(Kind::Float).reshape([1, 2, 1, 2]);
        for i in [2usize, 0] {
            let ab_prev = if i == 0 { 1.0 } else { ab[i - 1] };
            let post = |j: usize| {
                let p = if j == 0 { 1.0 } else { ab[j - 1] };
                betas[j] * (1.0 - p) / (1.0 - ab[j])
            };
            let (c1, c2) =
                (ab_prev.sqrt() * betas[i] / (1.0 - ab[i]), (1.0 - betas[i]).sqrt() * (1.0 - ab_prev) / (1.0 - ab[i]));
            let log_tilde = if i == 0 { post(1).ln() } else { post(i).ln() };
            let mut bits = 0.0;
            let mut mse = 0.0;
            for p in 0..2 {
                let x_t = ab[i].sqrt() * x0v[p] + (1.0 - ab[i]).sqrt() * epsv[p];
                let x0_hat = (x_t - (1.0 - ab[i]).sqrt() * e_hat[p]) / ab[i].sqrt();
                let (mu_true, mu) = (c1 * x0v[p] + c2 * x_t, c1 * x0_hat + c2 * x_t);
                let frac = (v_out[p] + 1.0) / 2.0;
                let log_var = frac * betas[i].ln() + (1.0 - frac) * log_tilde;
                let nats = if i == 0 {
                    let sd = (0.5 * log_var).exp();
                    let upper = phi((x0v[p] + 1.0 / 255.0 - mu) / sd);
                    if x0v[p] < -0.999 {
                        -upper.ln()
                    } else {
                        -(upper - phi((x0v[p] - 1.0 / 255.0 - mu) / sd)).ln()
                    }
                } else {
                    0.5 * (-1.0 + log_var - post(i).ln()
                        + post(i) / log_var.exp()
                        + (mu_true - mu).powi(2) / log_var.exp())
                };
                bits += nats / 2.0 / std::f64::consts::LN_2;
                mse += (e_hat[p] - epsv[p]).powi(2) / 2.0;
            }
            let t = Tensor::from_slice(&[i as i64]);
            let draws = Noise { t: &t, time: None, noise: &noise, offset: None, self_condition: false };
            let mut model = |_: &Tensor, _: &Tensor| output.shallow_clone();
            let mut got =
                |objective| process(objective).training_losses(&mut model, &x0, &draws).per_sample.double_value(&[0]);
            let vlb = got(Objective::Vlb);
            let hybrid = got(Objective::Hybrid);
            assert!(
                (vlb - 4.0 * bits).abs() < 1e-5 * (4.0 * bits).abs().max(1.0),
                "t index {i}: vlb {vlb} vs {}",
                4.0 * bits
            );
            let want = mse + 0.001 * 4.0 * bits;
            assert!((hybrid - want).abs() < 1e-5, "t index {i}: hybrid {hybrid} vs {want}");
        }
    }

    /// The hybrid's bound term does not train the mean: its gradient reaches only the variance
    /// channels (the mean is detached), while L_vlb's reaches both.
    #[test]
    fn hybrid_detaches_the_mean_in_its_bound_term() {
        let x0 = Tensor::from_slice(&[-1.0f32, 0.2]).reshape([1, 1, 1, 2]);
        let noise = Tensor::from_slice(&[0.3f32, -0.7]).reshape([1, 1, 1, 2]);
        let t = Tensor::from_slice(&[2i64]);
        let draws = Noise { t: &t, time: None, noise: &noise, offset: None, self_condition: false };
        for (objective, mean_gets_bound_gradient) in [(Objective::Hybrid, false), (Objective::Vlb, true)] {
            let out = Tensor::from_slice(&[0.3f32, -0.7, 0.4, -0.6]).reshape([1, 2, 1, 2]).set_requires_grad(true);
            let mut model = |_: &Tensor, _: &Tensor| &out * 1.0;
            let loss = process(objective).training_losses(&mut model, &x0, &draws).per_sample.sum(Kind::Float);
            loss.backward();
            let g = Vec::<f64>::try_from(out.grad().to_kind(Kind::Double).reshape([-1])).unwrap();
            // ε̂ = ε exactly: L_simple's gradient on the mean is 0, so any mean gradient is the bound's.
            assert_eq!(g[0] != 0.0 || g[1] != 0.0, mean_gets_bound_gradient, "{objective:?}: {g:?}");
            assert!(g[2] != 0.0 && g[3] != 0.0, "{objective:?}: the variance channels train");
        }
    }
}
