//! Reverse-process samplers. They take the model as a function ε_θ(x_t, t), so they know nothing of
//! architectures (the diffusers split between models and schedulers).
use super::posterior::{posterior_mean, predict_x0_from_eps};
use super::NoiseSchedule;
use tch::{Device, Kind, Tensor};

/// DDPM ancestral sampling (Ho et al. Algorithm 2): x_T ~ N(0, I), then for t = T..1
/// x_{t−1} = μ̃_t(x_t, x̂_0) + σ_t z with σ_t² = β̃_t (the posterior variance, §3.2; Ho et al. found
/// σ_t² = β_t to give similar results) and no noise at the last step.
///
/// The mean is computed through x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ) / √ᾱ_t and eq. 7, which equals
/// Algorithm 2's 1/√α_t (x_t − β_t/√(1 − ᾱ_t) ε_θ) exactly; with `clip_x0`, x̂_0 is first clipped to
/// the data range [-1, 1], as the paper's code and improved-diffusion do. Without the clip, a
/// schedule whose last β is near 1 (cosine, β_T = 0.999) multiplies the model's error at t = T by
/// 1/√(1 − β_T) ≈ 32, and the samples saturate.
///
/// `eps_model` is called with the batch x_t and a tensor of timestep indices. The schedule's scalars
/// are host f64s, so a step costs one model call and a few element-wise ops, with no device sync.
pub fn ddpm_sample(
    schedule: &NoiseSchedule,
    shape: &[i64],
    device: Device,
    clip_x0: bool,
    eps_model: &mut dyn FnMut(&Tensor, &Tensor) -> Tensor,
    mut on_step: impl FnMut(usize),
) -> Tensor {
    let _guard = tch::no_grad_guard();
    let n = shape[0];
    let mut x = Tensor::randn(shape, (Kind::Float, device));
    for t in (0..schedule.timesteps()).rev() {
        let tt = Tensor::full([n], t as i64, (Kind::Int64, device));
        let eps = eps_model(&x, &tt);
        let mut x0 = predict_x0_from_eps(schedule, &x, t, &eps);
        if clip_x0 {
            x0 = x0.clamp(-1.0, 1.0);
        }
        let mean = posterior_mean(schedule, &x0, &x, t);
        x = if t > 0 {
            let z = Tensor::randn_like(&mean);
            mean + z * schedule.posterior_variance[t].sqrt()
        } else {
            mean
        };
        on_step(t);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::linear_betas;

    /// An oracle ε-model for a dataset of one point x*: given x_t, the true noise is
    /// (x_t − √ᾱ_t x*) / √(1 − ᾱ_t). Ancestral sampling with it must end at x*: at the last step
    /// (t = 1) the mean is exactly x* and no noise is added.
    #[test]
    fn ddpm_sampler_with_an_oracle_ends_at_the_data_point() {
        tch::manual_seed(1);
        let sched = NoiseSchedule::from_betas(linear_betas(100, 1e-4, 0.2), Device::Cpu);
        let target = Tensor::from_slice(&[0.5f32, -0.25, 1.0, -1.0]).reshape([1, 1, 2, 2]);
        let alpha_bar = sched.alpha_bar.clone();
        let mut oracle = |x: &Tensor, t: &Tensor| {
            let i = t.int64_value(&[0]) as usize;
            (x - &target * alpha_bar[i].sqrt()) / (1.0 - alpha_bar[i]).sqrt()
        };
        for clip in [false, true] {
            let mut steps = 0;
            let x = ddpm_sample(&sched, &[3, 1, 2, 2], Device::Cpu, clip, &mut oracle, |_| steps += 1);
            assert_eq!(steps, 100);
            let err = (x - &target).abs().max().double_value(&[]);
            assert!(err < 1e-5, "clip {clip}: max error {err}");
        }
    }
}
