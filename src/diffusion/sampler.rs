//! Reverse-process samplers. They take the model as a function of (x_t, t) returning the configured
//! target, so they know nothing of architectures (the diffusers split between models and schedulers).
//! Every step costs one model call and element-wise ops on the device, with no host sync.
use super::posterior::posterior_mean;
use super::target::{predict_eps_from_x0, predicted_x0};
use super::{extract, NoiseSchedule};
use crate::config::{SamplerConfig, Spacing, Target, Variance};
use tch::{Kind, Tensor};

/// The network as the samplers see it: (x_t, timestep indices) → the target's prediction.
pub type ModelFn<'a> = dyn FnMut(&Tensor, &Tensor) -> Tensor + 'a;

pub struct SampleOptions<'a> {
    pub target: Target,
    pub variance: Variance,
    /// Clip the predicted x_0 to [-1, 1] at each step (Ho et al.'s and improved-diffusion's default).
    pub clip_x0: bool,
    /// Paper timesteps t (T..1; 0 is the final image) at which to record the state x_t.
    pub trajectory: &'a [usize],
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
/// N(0, I) by the caller). `on_step` is called after each step with the number of steps done.
pub fn sample(
    cfg: &SamplerConfig,
    s: &NoiseSchedule,
    x_t: Tensor,
    opts: &SampleOptions,
    model: &mut ModelFn,
    on_step: &mut dyn FnMut(usize),
) -> SampleOutput {
    let _guard = tch::no_grad_guard();
    let (device, t_max) = (x_t.device(), s.timesteps());
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
    }
}

/// Records the state for every requested t not yet recorded that `paper_t` has reached.
fn record(trajectory: &mut Vec<(usize, Tensor)>, requested: &[usize], paper_t: usize, x: &Tensor) {
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
    on_step: &mut dyn FnMut(usize),
) -> SampleOutput {
    let (n, device) = (x.size()[0], x.device());
    let mut trajectory = Vec::new();
    for i in (0..s.timesteps()).rev() {
        record(&mut trajectory, opts.trajectory, model_t[i] + 1, &x);
        let output = model(&x, &Tensor::full([n], model_t[i] as i64, (Kind::Int64, device)));
        x = ddpm_step(s, i, &x, &output, opts);
        on_step(s.timesteps() - i);
    }
    record(&mut trajectory, opts.trajectory, 0, &x);
    SampleOutput { x0: x, trajectory }
}

/// One ancestral step from schedule index `i` given the network's `output` at x_t: the posterior mean
/// through x̂_0 (clipped with `clip_x0`) plus σ_i z with z from libtorch's generator (drawn after the
/// model call, as the seeds' `p_sample` draw it); no noise at i = 0.
pub fn ddpm_step(s: &NoiseSchedule, i: usize, x: &Tensor, output: &Tensor, opts: &SampleOptions) -> Tensor {
    let ti = Tensor::full([x.size()[0]], i as i64, (Kind::Int64, x.device()));
    let mut x0 = predicted_x0(opts.target, s, x, &ti, output);
    if opts.clip_x0 {
        x0 = x0.clamp(-1.0, 1.0);
    }
    let mean = posterior_mean(s, &x0, x, &ti);
    if i > 0 {
        let log_var = s.model_log_variance(opts.variance);
        &mean + (extract(log_var, &ti, x.dim()) * 0.5).exp() * mean.randn_like()
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
    on_step: &mut dyn FnMut(usize),
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
        on_step(kept.len() - j);
    }
    record(&mut trajectory, opts.trajectory, 0, &x);
    SampleOutput { x0: x, trajectory }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sampler::{ddim, ddpm};
    use crate::diffusion::schedule::linear_betas;
    use crate::diffusion::target::training_target;
    use tch::Device;

    fn target_point() -> Tensor {
        Tensor::from_slice(&[0.5f32, -0.25, 1.0, -1.0]).reshape([1, 1, 2, 2])
    }

    /// An oracle for a dataset of one point x*: given x_t at t, the true noise is
    /// (x_t − √ᾱ_t x*) / √(1 − ᾱ_t); it answers in the requested target's terms.
    fn oracle(s: &NoiseSchedule, target: Target) -> impl FnMut(&Tensor, &Tensor) -> Tensor + '_ {
        let point = target_point();
        move |x: &Tensor, t: &Tensor| {
            let x0 = point.expand_as(x);
            let ab = super::extract(&s.sqrt_alpha_bar, t, 4);
            let om = super::extract(&s.sqrt_one_minus_alpha_bar, t, 4);
            let eps = (x - &x0 * &ab) / &om;
            training_target(target, s, &x0, &eps, t)
        }
    }

    fn run(cfg: &SamplerConfig, s: &NoiseSchedule, target: Target, clip: bool) -> SampleOutput {
        let opts = SampleOptions { target, variance: Variance::Posterior, clip_x0: clip, trajectory: &[] };
        let mut model = oracle(s, target);
        sample(cfg, s, Tensor::randn([3, 1, 2, 2], (Kind::Float, Device::Cpu)), &opts, &mut model, &mut |_| {})
    }

    /// With the oracle, every sampler (full DDPM, respaced DDPM, DDIM η = 0 and 1, all spacings) and
    /// every target ends at the data point: at the last step the mean is x̂_0 = x* and no noise is added.
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
        let opts = SampleOptions { target: Target::Eps, variance: Variance::Posterior, clip_x0: true, trajectory: &[] };
        let x_t = Tensor::randn([2, 1, 3, 3], (Kind::Float, Device::Cpu));
        let mut go = |eta: f64, seed: i64| {
            tch::manual_seed(seed);
            let cfg = SamplerConfig::Ddim(ddim::Config { steps: 20, eta, spacing: Spacing::Linspace });
            sample(&cfg, &s, x_t.copy(), &opts, &mut model, &mut |_| {}).x0
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
        let opts = SampleOptions { target: Target::Eps, variance: Variance::Posterior, clip_x0: true, trajectory: &[] };
        let x_t = Tensor::randn([2, 1, 3, 3], (Kind::Float, Device::Cpu));
        let mut go = |cfg: SamplerConfig| {
            tch::manual_seed(7);
            sample(&cfg, &s, x_t.copy(), &opts, &mut model, &mut |_| {}).x0
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
        let opts = SampleOptions {
            target: Target::Eps,
            variance: Variance::Posterior,
            clip_x0: true,
            trajectory: &[20, 10, 0],
        };
        let cfg = SamplerConfig::Ddpm(ddpm::Config { steps: None, spacing: Spacing::Linspace });
        let out = sample(&cfg, &s, x_t.copy(), &opts, &mut model, &mut |_| {});
        let steps: Vec<usize> = out.trajectory.iter().map(|(t, _)| *t).collect();
        assert_eq!(steps, vec![20, 10, 0]);
        assert_eq!((&out.trajectory[0].1 - x_t).abs().max().double_value(&[]), 0.0, "t = T is the starting noise");
        assert_eq!((&out.trajectory[2].1 - &out.x0).abs().max().double_value(&[]), 0.0, "t = 0 is the sample");
    }
}
