//! Reverse-process samplers. They take the model as a function of (x_t, t) returning the configured
//! target, so they know nothing of architectures (the diffusers split between models and schedulers).
//! Every step costs one or two model calls and element-wise ops on the device, with no host sync.
//!
//! The σ-based samplers (`karras`: Euler, Heun, Euler ancestral; DPM-Solver++) follow diffusers'
//! schedulers: σ_t = √((1 − ᾱ_t)/ᾱ_t), the model called at (possibly fractional) timesteps found
//! from σ by interpolating log σ (`sigma_to_t`); the Karras samplers step x/√ᾱ (the variance-exploding
//! form x + σ ε) and hand the model x/√(σ² + 1), which is the x_t it was trained on.
use super::posterior::posterior_mean;
use super::target::{predict_eps_from_x0, predicted_x0};
use super::{extract, NoiseSchedule};
use crate::config::{SamplerConfig, Spacing, Target, Variance};
use std::ops::ControlFlow;
use tch::{Kind, Tensor};

/// The network as the samplers see it: (x_t, timestep indices) → the target's prediction (and,
/// with `learn_sigma`, its variance output in the second half of the channels). The σ-based
/// samplers pass timesteps as a float tensor, possibly fractional.
pub type ModelFn<'a> = dyn FnMut(&Tensor, &Tensor) -> Tensor + 'a;

pub struct SampleOptions<'a> {
    pub target: Target,
    pub variance: Variance,
    /// Clip the predicted x_0 to [-1, 1] at each step (Ho et al.'s and improved-diffusion's default).
    pub clip_x0: bool,
    /// The model's output has a learned variance in its second half (DDPM uses it; the others
    /// take the prediction only).
    pub learn_sigma: bool,
    /// Paper timesteps t (T..1; 0 is the final image) at which to record the state x_t.
    pub trajectory: &'a [usize],
}

/// What a continuous formulation's sampler needs besides the sampler and x_T: whether x̂_0 is clipped
/// (`sample.clip_x0`), the trajectory's paper timesteps to record, and T (the cap on its steps).
pub struct Sampling<'a> {
    pub clip: bool,
    pub trajectory: &'a [usize],
    pub timesteps: usize,
}

impl Sampling<'_> {
    /// No clipping, no trajectory, with T = `timesteps`.
    pub fn plain(timesteps: usize) -> Self {
        Sampling { clip: false, trajectory: &[], timesteps }
    }
}

pub struct SampleOutput {
    pub x0: Tensor,
    /// (requested t, x_t): the state when the sampler first reached a step at or below t.
    pub trajectory: Vec<(usize, Tensor)>,
}

/// The increasing timestep indices a K-step sampler visits out of T (diffusers' `timestep_spacing`).
pub fn spaced_timesteps(timesteps: usize, k: usize, spacing: Spacing) -> Vec<usize> {
    let (t, k) = (timesteps, k.clamp(1, timesteps));
    let mut steps: Vec<usize> = match spacing {
        Spacing::Linspace if k == 1 => vec![0],
        Spacing::Linspace => (0..k).map(|i| (i as f64 * (t - 1) as f64 / (k - 1) as f64).round() as usize).collect(),
        Spacing::Leading => (0..k).map(|i| i * (t / k)).collect(),
        Spacing::Trailing => {
            (0..k).map(|i| ((t as f64 - i as f64 * t as f64 / k as f64).round() as usize).saturating_sub(1)).collect()
        }
    };
    steps.sort_unstable();
    steps.dedup();
    steps
}

/// Samples with the configured sampler, starting from the batch `x_t` = x_T (usually drawn from
/// N(0, I) by the caller). `on_step` is called after each step with the number of steps done and
/// the state x_t (as the model sees it: for the Karras samplers, x/√(σ² + 1)); when it returns
/// `Break`, sampling ends there and the output is that partial state (the caller discards it).
pub fn sample(
    cfg: &SamplerConfig,
    s: &NoiseSchedule,
    x_t: Tensor,
    opts: &SampleOptions,
    model: &mut ModelFn,
    on_step: &mut dyn FnMut(usize, &Tensor) -> ControlFlow<()>,
) -> SampleOutput {
    let _guard = tch::no_grad_guard();
    let (device, t_max) = (x_t.device(), s.timesteps());
    if opts.learn_sigma && !matches!(cfg, SamplerConfig::Ddpm(_)) {
        let c = x_t.size()[1];
        let mut mean_only = |x: &Tensor, t: &Tensor| model(x, t).narrow(1, 0, c);
        let opts = SampleOptions { learn_sigma: false, ..*opts };
        return sample(cfg, s, x_t, &opts, &mut mean_only, on_step);
    }
    match cfg {
        SamplerConfig::Ddpm(c) => match c.steps.filter(|&k| k < t_max) {
            None => {
                let all: Vec<usize> = (0..t_max).collect();
                ddpm(s, &all, x_t, opts, model, on_step)
            }
            Some(k) => {
                let kept = spaced_timesteps(t_max, k, c.spacing);
                ddpm(&s.respaced(&kept, device), &kept, x_t, opts, model, on_step)
            }
        },
        SamplerConfig::Ddim(c) => {
            ddim(s, &spaced_timesteps(t_max, c.steps, c.spacing), c.eta, x_t, opts, model, on_step)
        }
        SamplerConfig::DpmSolver(c) => dpm_solver_2m(s, c.steps.min(t_max), x_t, opts, model, on_step),
        SamplerConfig::Euler(c) => {
            karras(s, Karras::Euler, &karras_sigmas(s, c.steps, c.karras), x_t, opts, model, on_step)
        }
        SamplerConfig::Heun(c) => {
            karras(s, Karras::Heun, &karras_sigmas(s, c.steps, c.karras), x_t, opts, model, on_step)
        }
        SamplerConfig::EulerAncestral(c) => {
            karras(s, Karras::Ancestral, &karras_sigmas(s, c.steps, false), x_t, opts, model, on_step)
        }
        SamplerConfig::Midpoint(_) => panic!("midpoint is flow matching's sampler (refused by validation)"),
    }
}

/// Records the state for every requested t not yet recorded that `paper_t` has reached.
pub fn record(trajectory: &mut Vec<(usize, Tensor)>, requested: &[usize], paper_t: usize, x: &Tensor) {
    for &r in requested {
        if paper_t <= r && !trajectory.iter().any(|(t, _)| *t == r) {
            trajectory.push((r, x.copy()));
        }
    }
}

/// DDPM ancestral sampling (Ho et al. Algorithm 2) over schedule `s`, whose index i the model sees
/// as timestep `model_t[i]` (the identity, or the kept steps of a respaced schedule):
/// x_{t−1} = μ̃_t(x_t, x̂_0) + σ_t z, no noise at the last step.
///
/// The mean is computed through x̂_0 and eq. 7, which equals Algorithm 2's
/// 1/√α_t (x_t − β_t/√(1 − ᾱ_t) ε_θ) exactly; with `clip_x0`, x̂_0 is first clipped to [-1, 1]. Without
/// the clip, a schedule whose last β is near 1 (cosine, β_T = 0.999) multiplies the model's error at
/// t = T by 1/√(1 − β_T) ≈ 32 and the samples saturate.
fn ddpm(
    s: &NoiseSchedule,
    model_t: &[usize],
    mut x: Tensor,
    opts: &SampleOptions,
    model: &mut ModelFn,
    on_step: &mut dyn FnMut(usize, &Tensor) -> ControlFlow<()>,
) -> SampleOutput {
    let (n, device) = (x.size()[0], x.device());
    let mut trajectory = Vec::new();
    for i in (0..s.timesteps()).rev() {
        record(&mut trajectory, opts.trajectory, model_t[i] + 1, &x);
        let output = model(&x, &Tensor::full([n], model_t[i] as i64, (Kind::Int64, device)));
        x = ddpm_step(s, i, &x, &output, opts);
        if on_step(s.timesteps() - i, &x).is_break() {
            break;
        }
    }
    record(&mut trajectory, opts.trajectory, 0, &x);
    SampleOutput { x0: x, trajectory }
}

/// One ancestral step from schedule index `i` given the network's `output` at x_t: the posterior mean
/// through x̂_0 (clipped with `clip_x0`) plus σ_i z with z from libtorch's generator (drawn after the
/// model call, as the seeds' `p_sample` draw it); no noise at i = 0. With `learn_sigma`, σ_i² is the
/// learned range of the output's second half (over schedule `s`: a respaced schedule's β and β̃).
pub fn ddpm_step(s: &NoiseSchedule, i: usize, x: &Tensor, output: &Tensor, opts: &SampleOptions) -> Tensor {
    let ti = Tensor::full([x.size()[0]], i as i64, (Kind::Int64, x.device()));
    let c = x.size()[1];
    let pred = if opts.learn_sigma { output.narrow(1, 0, c) } else { output.shallow_clone() };
    let mut x0 = predicted_x0(opts.target, s, x, &ti, &pred);
    if opts.clip_x0 {
        x0 = x0.clamp(-1.0, 1.0);
    }
    let mean = posterior_mean(s, &x0, x, &ti);
    if i > 0 {
        let log_var = if opts.learn_sigma {
            super::posterior::learned_log_variance(s, &ti, &output.narrow(1, c, c))
        } else {
            extract(s.model_log_variance(opts.variance), &ti, x.dim())
        };
        &mean + (log_var * 0.5).exp() * mean.randn_like()
    } else {
        mean
    }
}

/// DDIM (Song et al. 2021, eq. 12) over the increasing timestep indices `kept`:
/// x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'} − σ²) ε̂ + σ z, with t' the previous kept step (ᾱ = 1 after
/// the last) and σ = η √((1 − ᾱ_{t'})/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t'}). With `clip_x0`, ε̂ is recomputed
/// from the clipped x̂_0, as improved-diffusion does. η = 1 over all T steps is DDPM with σ_t² = β̃_t.
fn ddim(
    s: &NoiseSchedule,
    kept: &[usize],
    eta: f64,
    mut x: Tensor,
    opts: &SampleOptions,
    model: &mut ModelFn,
    on_step: &mut dyn FnMut(usize, &Tensor) -> ControlFlow<()>,
) -> SampleOutput {
    let (n, device) = (x.size()[0], x.device());
    let mut trajectory = Vec::new();
    for j in (0..kept.len()).rev() {
        let t = kept[j];
        record(&mut trajectory, opts.trajectory, t + 1, &x);
        let tt = Tensor::full([n], t as i64, (Kind::Int64, device));
        let output = model(&x, &tt);
        let mut x0 = predicted_x0(opts.target, s, &x, &tt, &output);
        if opts.clip_x0 {
            x0 = x0.clamp(-1.0, 1.0);
        }
        let eps = predict_eps_from_x0(s, &x, &tt, &x0);
        let ab = s.alpha_bar[t];
        let ab_prev = if j > 0 { s.alpha_bar[kept[j - 1]] } else { 1.0 };
        let sigma = eta * ((1.0 - ab_prev) / (1.0 - ab)).sqrt() * (1.0 - ab / ab_prev).sqrt();
        let mean = x0 * ab_prev.sqrt() + eps * (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt();
        x = if sigma > 0.0 { &mean + mean.randn_like() * sigma } else { mean };
        if on_step(kept.len() - j, &x).is_break() {
            break;
        }
    }
    record(&mut trajectory, opts.trajectory, 0, &x);
    SampleOutput { x0: x, trajectory }
}

/// σ_t = √((1 − ᾱ_t)/ᾱ_t) at every index, from `NoiseSchedule::sampler_alpha_bar`.
pub fn sigmas(s: &NoiseSchedule) -> Vec<f64> {
    s.sampler_alpha_bar().iter().map(|a| ((1.0 - a) / a).sqrt()).collect()
}

/// The fractional timestep of σ (diffusers' `_sigma_to_t`): log σ interpolated linearly between
/// the two indices whose log σ_i bracket it (clamped to the ends).
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    let low = log_sigmas.iter().rposition(|&l| log_sigma - l >= 0.0).unwrap_or(0).min(n - 2);
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// np.interp(x, 0..n, values): linear interpolation of a function given at the integers.
fn interp(x: f64, values: &[f64]) -> f64 {
    let lo = (x.floor().max(0.0) as usize).min(values.len() - 1);
    let hi = (lo + 1).min(values.len() - 1);
    let w = x - lo as f64;
    values[lo] + w * (values[hi] - values[lo])
}

/// The decreasing (σ_i, timestep_i) of an N-step Karras-family sampler, σ_N = 0 appended (its
/// timestep unused). `karras`: Karras et al. 2022 eq. 5 with ρ = 7 between σ_max = σ_T and
/// σ_min = σ_1, each σ mapped to its fractional timestep (diffusers' `use_karras_sigmas=True`);
/// otherwise diffusers' default: timesteps linspace(T − 1, 0, N) with σ interpolated linearly.
pub fn karras_sigmas(s: &NoiseSchedule, n: usize, karras: bool) -> Vec<(f64, f64)> {
    let sig = sigmas(s);
    let t_max = s.timesteps();
    let steps: Vec<f64> = (0..n)
        .map(|i| if n == 1 { 0.0 } else { (t_max - 1) as f64 * (1.0 - i as f64 / (n - 1) as f64) })
        // diffusers computes these timesteps in float32.
        .map(|t| t as f32 as f64)
        .collect();
    let mut out: Vec<(f64, f64)> = if karras {
        let log_sigmas: Vec<f64> = sig.iter().map(|x| x.ln()).collect();
        let (max, min) = (interp(steps[0], &sig), interp(steps[n - 1], &sig));
        let rho = 7.0;
        (0..n)
            .map(|i| {
                let ramp = if n == 1 { 0.0 } else { i as f64 / (n - 1) as f64 };
                let sigma = (max.powf(1.0 / rho) + ramp * (min.powf(1.0 / rho) - max.powf(1.0 / rho))).powf(rho);
                (sigma, sigma_to_t(sigma, &log_sigmas))
            })
            .collect()
    } else {
        steps.iter().map(|&t| (interp(t, &sig), t)).collect()
    };
    out.push((0.0, 0.0));
    out
}

/// x_0 from the prediction at x_t (the variance-preserving x_t the model sees) for timesteps that
/// may be fractional (a float tensor): ᾱ there from log σ interpolated between its neighbours, the
/// inverse of `sigma_to_t`; at integer timesteps (an integer tensor) exactly `predicted_x0`.
pub fn x0_at(s: &NoiseSchedule, target: Target, x_t: &Tensor, t: &Tensor, pred: &Tensor) -> Tensor {
    if !matches!(t.kind(), Kind::Float | Kind::Double) {
        return predicted_x0(target, s, x_t, t, pred);
    }
    let log_sigmas: Vec<f64> = sigmas(s).iter().map(|x| x.ln()).collect();
    let table = Tensor::from_slice(&log_sigmas).to_kind(Kind::Float).to_device(x_t.device());
    let t = t.to_kind(Kind::Float);
    let low = t.floor().clamp(0.0, (s.timesteps() - 2) as f64);
    let w = (&t - &low).reshape([-1, 1, 1, 1]);
    let low = low.to_kind(Kind::Int64);
    let pick = |i: &Tensor| table.index_select(0, i).reshape([-1, 1, 1, 1]);
    let log_sigma = pick(&low) * (-&w + 1.0) + pick(&(&low + 1)) * &w;
    let alpha = (log_sigma * 2.0).exp().g_add_scalar(1.0).rsqrt();
    let sigma_vp = (-alpha.square() + 1.0).sqrt();
    x0_from(target, x_t, &alpha, &sigma_vp, pred)
}

/// x_0 from a prediction at x_t = α x_0 + σ ε (variance-preserving α² + σ² = 1), α and σ scalars or
/// broadcastable tensors.
fn x0_from<A, S>(target: Target, x_t: &Tensor, alpha: A, sigma: S, pred: &Tensor) -> Tensor
where
    A: std::ops::Mul<Tensor, Output = Tensor> + Copy,
    S: std::ops::Mul<Tensor, Output = Tensor> + Copy,
    Tensor: std::ops::Div<A, Output = Tensor>,
{
    match target {
        Target::Eps => (x_t - sigma * pred.shallow_clone()) / alpha,
        Target::X0 => pred.shallow_clone(),
        Target::V => alpha * x_t.shallow_clone() - sigma * pred.shallow_clone(),
    }
}

/// (α, σ) of the variance-preserving process at the Karras σ: α = 1/√(σ² + 1), σ_vp = σ α.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// The model's x_0 at the variance-exploding state x = x_t/√ᾱ of Karras σ, clipped with
/// `clip_x0`. The model sees x/√(σ² + 1); x_0 is formed as diffusers' Karras-family schedulers form
/// it (ε: x − σ ε̂; v: −σ/√(σ² + 1) v̂ + x/(σ² + 1)), so that both round alike in float32.
fn denoise(model: &mut ModelFn, opts: &SampleOptions, x: &Tensor, sigma: f64, t: f64) -> Tensor {
    let (n, device) = (x.size()[0], x.device());
    let pred = model(&(x / (sigma * sigma + 1.0).sqrt()), &Tensor::full([n], t, (Kind::Float, device)));
    let x0 = match opts.target {
        Target::Eps => x - pred * sigma,
        Target::V => pred * (-sigma / (sigma * sigma + 1.0).sqrt()) + x / (sigma * sigma + 1.0),
        Target::X0 => pred,
    };
    if opts.clip_x0 {
        x0.clamp(-1.0, 1.0)
    } else {
        x0
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Karras {
    Euler,
    Heun,
    Ancestral,
}

/// Karras et al. 2022's samplers on the discrete model, over `sigmas` (σ_0 > … > σ_N = 0 with their
/// timesteps), in the variance-exploding form x = x_t/√ᾱ, which starts at σ_0 x_T (diffusers'
/// `init_noise_sigma`) and ends at x_0 (σ_N = 0):
/// - Euler (Algorithm 1 without its second-order correction, S_churn = 0): with d_i = (x − x̂_0)/σ_i,
///   x ← x + (σ_{i+1} − σ_i) d_i (diffusers' `EulerDiscreteScheduler`);
/// - Heun (Algorithm 1, S_churn = 0): Euler to x', then x ← x + (σ_{i+1} − σ_i)(d_i + d'_{i+1})/2 with
///   the model's d' at x' and σ_{i+1}, except into σ_N = 0 (Euler): 2N − 1 model calls
///   (`HeunDiscreteScheduler`);
/// - Euler ancestral: σ_up = √(σ_{i+1}²(σ_i² − σ_{i+1}²)/σ_i²), σ_down = √(σ_{i+1}² − σ_up²),
///   x ← x + (σ_down − σ_i) d_i + σ_up z, z from libtorch's generator after the model call
///   (`EulerAncestralDiscreteScheduler`).
fn karras(
    s: &NoiseSchedule,
    kind: Karras,
    sigmas: &[(f64, f64)],
    x_t: Tensor,
    opts: &SampleOptions,
    model: &mut ModelFn,
    on_step: &mut dyn FnMut(usize, &Tensor) -> ControlFlow<()>,
) -> SampleOutput {
    let scale = |sigma: f64| 1.0 / (sigma * sigma + 1.0).sqrt();
    let steps = sigmas.len() - 1;
    let mut x = x_t * sigmas[0].0;
    let mut trajectory = Vec::new();
    let paper_t = |t: f64| (t.round() as usize + 1).min(s.timesteps());
    for i in 0..steps {
        let ((sigma, t), (next, t_next)) = (sigmas[i], sigmas[i + 1]);
        record(&mut trajectory, opts.trajectory, paper_t(t), &(&x * scale(sigma)));
        let x0 = denoise(model, opts, &x, sigma, t);
        let d = (&x - x0) / sigma;
        let dt = next - sigma;
        x = match kind {
            Karras::Euler => &x + &d * dt,
            Karras::Heun if next == 0.0 => &x + &d * dt,
            Karras::Heun => {
                let predicted = &x + &d * dt;
                let x0_next = denoise(model, opts, &predicted, next, t_next);
                let d_next = (&predicted - x0_next) / next;
                &x + ((d + d_next) / 2.0) * dt
            }
            Karras::Ancestral => {
                let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt();
                let down = (next * next - up * up).max(0.0).sqrt();
                let stepped = &x + d * (down - sigma);
                &stepped + stepped.randn_like() * up
            }
        };
        if on_step(i + 1, &(&x * scale(next))).is_break() {
            break;
        }
    }
    record(&mut trajectory, opts.trajectory, 0, &x);
    SampleOutput { x0: x, trajectory }
}

/// DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2: multistep, second order, data prediction), as
/// diffusers' `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)` with its
/// defaults (midpoint, `lower_order_final`, final σ = 0): N timesteps
/// round(linspace(0, T − 1, N + 1)) from the top, dropping 0; with λ = log(α/σ) and h = λ_t − λ_s,
/// x_t = (σ_t/σ_s) x_s − α_t (e^{−h} − 1) D with D = x̂_0 (first order: the first step and the last,
/// which lands on x̂_0) or D = x̂_0 + (x̂_0 − x̂_0^prev)/(2 r), r = h_prev/h (second order).
fn dpm_solver_2m(
    s: &NoiseSchedule,
    n: usize,
    mut x: Tensor,
    opts: &SampleOptions,
    model: &mut ModelFn,
    on_step: &mut dyn FnMut(usize, &Tensor) -> ControlFlow<()>,
) -> SampleOutput {
    let t_max = s.timesteps();
    let (batch, device) = (x.size()[0], x.device());
    let sig = sigmas(s);
    let mut ts: Vec<usize> =
        (0..=n).map(|i| (i as f64 * (t_max - 1) as f64 / n as f64).round() as usize).collect::<Vec<_>>();
    ts.reverse();
    ts.pop();
    let mut trajectory = Vec::new();
    let lambda = |sigma: f64| {
        let (a, sv) = alpha_sigma(sigma);
        a.ln() - sv.ln()
    };
    let mut previous: Option<(Tensor, f64)> = None;
    for (i, &t) in ts.iter().enumerate() {
        record(&mut trajectory, opts.trajectory, t + 1, &x);
        let tt = Tensor::full([batch], t as i64, (Kind::Int64, device));
        let pred = model(&x, &tt);
        let (sigma, next) = (sig[t], if i + 1 < ts.len() { sig[ts[i + 1]] } else { 0.0 });
        let (alpha_s, sigma_s) = alpha_sigma(sigma);
        let mut x0 = x0_from(opts.target, &x, alpha_s, sigma_s, &pred);
        if opts.clip_x0 {
            x0 = x0.clamp(-1.0, 1.0);
        }
        let lambda_s = lambda(sigma);
        let new_x = if next == 0.0 {
            x0.shallow_clone()
        } else {
            let (alpha_t, sigma_t) = alpha_sigma(next);
            let h = lambda(next) - lambda_s;
            let d = match &previous {
                Some((prev, lambda_prev)) if i + 1 < ts.len() => {
                    let r = (lambda_s - lambda_prev) / h;
                    &x0 + (&x0 - prev) * (0.5 / r)
                }
                _ => x0.shallow_clone(),
            };
            &x * (sigma_t / sigma_s) - d * (alpha_t * ((-h).exp() - 1.0))
        };
        previous = Some((x0, lambda_s));
        x = new_x;
        if on_step(i + 1, &x).is_break() {
            break;
        }
    }
    record(&mut trajectory, opts.trajectory, 0, &x);
    SampleOutput { x0: x, trajectory }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sampler::{ddim, ddpm, dpm_solver, euler, euler_ancestral, heun};
    use crate::diffusion::schedule::linear_betas;
    use crate::diffusion::target::training_target;
    use tch::Device;

    /// ε-prediction, posterior variance, x̂_0 clipped, fixed variance; records `trajectory`.
    fn eps_clipped(trajectory: &[usize]) -> SampleOptions<'_> {
        SampleOptions {
            target: Target::Eps,
            variance: Variance::Posterior,
            clip_x0: true,
            learn_sigma: false,
            trajectory,
        }
    }

    fn target_point() -> Tensor {
        Tensor::from_slice(&[0.5f32, -0.25, 1.0, -1.0]).reshape([1, 1, 2, 2])
    }

    /// An oracle for a dataset of one point x*: given x_t at t, the true noise is
    /// (x_t − √ᾱ_t x*) / √(1 − ᾱ_t); it answers in the requested target's terms.
    /// At the fractional timesteps of the σ-based samplers, ᾱ(t) comes from log σ interpolated
    /// between the neighbouring indices (the inverse of `sigma_to_t`).
    fn oracle(s: &NoiseSchedule, target: Target) -> impl FnMut(&Tensor, &Tensor) -> Tensor + '_ {
        let point = target_point();
        move |x: &Tensor, t: &Tensor| {
            let x0 = point.expand_as(x);
            if t.kind() == Kind::Float {
                let log_sigmas: Vec<f64> = sigmas(s).iter().map(|v| v.ln()).collect();
                let tf = t.double_value(&[0]);
                let lo = (tf.floor() as usize).min(s.timesteps() - 2);
                let w = tf - lo as f64;
                let sigma = ((1.0 - w) * log_sigmas[lo] + w * log_sigmas[lo + 1]).exp();
                let (a, sv) = alpha_sigma(sigma);
                let eps = (x - &x0 * a) / sv;
                return match target {
                    Target::Eps => eps,
                    Target::X0 => x0,
                    Target::V => eps * a - x0 * sv,
                };
            }
            let ab = super::extract(&s.sqrt_alpha_bar, t, 4);
            let om = super::extract(&s.sqrt_one_minus_alpha_bar, t, 4);
            let eps = (x - &x0 * &ab) / &om;
            training_target(target, s, &x0, &eps, t)
        }
    }

    fn run(cfg: &SamplerConfig, s: &NoiseSchedule, target: Target, clip: bool) -> SampleOutput {
        let opts =
            SampleOptions { target, variance: Variance::Posterior, clip_x0: clip, learn_sigma: false, trajectory: &[] };
        let mut model = oracle(s, target);
        sample(cfg, s, Tensor::randn([3, 1, 2, 2], (Kind::Float, Device::Cpu)), &opts, &mut model, &mut |_, _| {
            ControlFlow::Continue(())
        })
    }

    /// With the oracle, every sampler (full DDPM, respaced DDPM, DDIM η = 0 and 1, all spacings,
    /// DPM-Solver++, Euler, Heun with and without Karras σ, Euler ancestral) and every target ends at
    /// the data point: at the last step the mean is x̂_0 = x* and no noise is added.
    #[test]
    fn every_sampler_with_an_oracle_ends_at_the_data_point() {
        tch::manual_seed(1);
        let s = NoiseSchedule::from_betas(linear_betas(100, 1e-4, 0.2), Device::Cpu);
        let mut configs = vec![SamplerConfig::Ddpm(ddpm::Config { steps: None, spacing: Spacing::Linspace })];
        for spacing in [Spacing::Linspace, Spacing::Leading, Spacing::Trailing] {
            configs.push(SamplerConfig::Ddpm(ddpm::Config { steps: Some(10), spacing }));
            configs.push(SamplerConfig::Ddim(ddim::Config { steps: 10, eta: 0.0, spacing }));
            configs.push(SamplerConfig::Ddim(ddim::Config { steps: 25, eta: 1.0, spacing }));
        }
        for steps in [1, 2, 7, 20] {
            configs.push(SamplerConfig::DpmSolver(dpm_solver::Config { steps }));
            configs.push(SamplerConfig::EulerAncestral(euler_ancestral::Config { steps }));
            for karras in [true, false] {
                configs.push(SamplerConfig::Euler(euler::Config { steps, karras }));
                configs.push(SamplerConfig::Heun(heun::Config { steps, karras, ..Default::default() }));
            }
        }
        for cfg in &configs {
            for target in [Target::Eps, Target::X0, Target::V] {
                for clip in [false, true] {
                    let out = run(cfg, &s, target, clip);
                    let err = (out.x0 - target_point()).abs().max().double_value(&[]);
                    assert!(err < 1e-4, "{cfg:?} {target:?} clip {clip}: max error {err}");
                }
            }
        }
    }

    /// DDIM with η = 0 is a deterministic map from x_T: the same x_T gives the same sample whatever
    /// the random state; with η = 1 it does not.
    #[test]
    fn ddim_eta_zero_is_deterministic() {
        let s = NoiseSchedule::from_betas(linear_betas(50, 1e-4, 0.2), Device::Cpu);
        // A model that is not an oracle, so the path depends on x_T in a non-trivial way.
        let mut model = |x: &Tensor, _t: &Tensor| x.tanh() * 0.5;
        let opts = eps_clipped(&[]);
        let x_t = Tensor::randn([2, 1, 3, 3], (Kind::Float, Device::Cpu));
        let mut go = |eta: f64, seed: i64| {
            tch::manual_seed(seed);
            let cfg = SamplerConfig::Ddim(ddim::Config { steps: 20, eta, spacing: Spacing::Linspace });
            sample(&cfg, &s, x_t.copy(), &opts, &mut model, &mut |_, _| ControlFlow::Continue(())).x0
        };
        let (a, b) = (go(0.0, 1), go(0.0, 2));
        assert_eq!((a - b).abs().max().double_value(&[]), 0.0);
        let (c, d) = (go(1.0, 1), go(1.0, 2));
        assert!((c - d).abs().max().double_value(&[]) > 1e-3);
    }

    /// DDIM with η = 1 over all T steps is DDPM with σ_t² = β̃_t (Song et al. §4.1): from the same
    /// x_T and the same random state they produce the same sample.
    #[test]
    fn ddim_with_eta_one_over_all_steps_is_ddpm() {
        let s = NoiseSchedule::from_betas(linear_betas(40, 1e-4, 0.2), Device::Cpu);
        let mut model = |x: &Tensor, t: &Tensor| x.sin() * 0.3 + t.to_kind(Kind::Float).reshape([-1, 1, 1, 1]) * 0.001;
        let opts = eps_clipped(&[]);
        let x_t = Tensor::randn([2, 1, 3, 3], (Kind::Float, Device::Cpu));
        let mut go = |cfg: SamplerConfig| {
            tch::manual_seed(7);
            sample(&cfg, &s, x_t.copy(), &opts, &mut model, &mut |_, _| ControlFlow::Continue(())).x0
        };
        let ddpm = go(SamplerConfig::Ddpm(ddpm::Config { steps: None, spacing: Spacing::Linspace }));
        let ddim = go(SamplerConfig::Ddim(ddim::Config { steps: 40, eta: 1.0, spacing: Spacing::Linspace }));
        let diff = (ddpm - ddim).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{diff}");
    }

    /// diffusers' documented examples for T = 1000, K = 10: linspace 0, 111, …, 999; leading 0, 100,
    /// …, 900; trailing 99, 199, …, 999.
    #[test]
    fn spacings() {
        assert_eq!(spaced_timesteps(1000, 10, Spacing::Linspace), vec![0, 111, 222, 333, 444, 555, 666, 777, 888, 999]);
        assert_eq!(spaced_timesteps(1000, 10, Spacing::Leading), (0..10).map(|i| i * 100).collect::<Vec<_>>());
        assert_eq!(spaced_timesteps(1000, 10, Spacing::Trailing), (1..=10).map(|i| i * 100 - 1).collect::<Vec<_>>());
        assert_eq!(spaced_timesteps(10, 10, Spacing::Trailing), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn trajectory_records_the_requested_steps() {
        let s = NoiseSchedule::from_betas(linear_betas(20, 1e-4, 0.2), Device::Cpu);
        let mut model = oracle(&s, Target::Eps);
        let x_t = Tensor::randn([3, 1, 2, 2], (Kind::Float, Device::Cpu));
        let opts = eps_clipped(&[20, 10, 0]);
        let cfg = SamplerConfig::Ddpm(ddpm::Config { steps: None, spacing: Spacing::Linspace });
        let out = sample(&cfg, &s, x_t.copy(), &opts, &mut model, &mut |_, _| ControlFlow::Continue(()));
        let steps: Vec<usize> = out.trajectory.iter().map(|(t, _)| *t).collect();
        assert_eq!(steps, vec![20, 10, 0]);
        assert_eq!((&out.trajectory[0].1 - x_t).abs().max().double_value(&[]), 0.0, "t = T is the starting noise");
        assert_eq!((&out.trajectory[2].1 - &out.x0).abs().max().double_value(&[]), 0.0, "t = 0 is the sample");
    }

    /// `on_step` returning Break ends sampling at that step: no further network call.
    #[test]
    fn a_break_ends_sampling_at_once() {
        let s = NoiseSchedule::from_betas(linear_betas(100, 1e-4, 0.02), Device::Cpu);
        let opts = SampleOptions {
            target: Target::Eps,
            variance: Variance::Posterior,
            clip_x0: true,
            learn_sigma: false,
            trajectory: &[],
        };
        for cfg in [
            SamplerConfig::Ddpm(Default::default()),
            SamplerConfig::Ddim(ddim::Config { steps: 50, ..Default::default() }),
        ] {
            let mut calls = 0;
            let mut model = |x: &Tensor, _: &Tensor| {
                calls += 1;
                x.zeros_like()
            };
            let x_t = Tensor::randn([2, 1, 4, 4], (Kind::Float, Device::Cpu));
            sample(&cfg, &s, x_t, &opts, &mut model, &mut |k, _| {
                if k >= 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            assert_eq!(calls, 3, "{}", cfg.label(Some(100)));
        }
    }
}
