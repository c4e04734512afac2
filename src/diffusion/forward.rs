//! The forward (noising) process q(x_t | x_0).
use super::{extract, NoiseSchedule};
use tch::Tensor;

/// Samples x_t ~ q(x_t | x_0) in closed form (Ho et al. eq. 4):
/// x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε, with ε ~ N(0, I) given as `noise`.
pub fn q_sample(schedule: &NoiseSchedule, x0: &Tensor, t: &Tensor, noise: &Tensor) -> Tensor {
    let ndim = x0.dim();
    extract(&schedule.sqrt_alpha_bar, t, ndim) * x0 + extract(&schedule.sqrt_one_minus_alpha_bar, t, ndim) * noise
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::linear_betas;
    use tch::{Device, Kind};

    /// With a fixed x_0 and many noise draws, the sample mean is √ᾱ_t x_0 and the variance 1 − ᾱ_t
    /// (eq. 4). ᾱ_t comes from the product of (1 − β) computed here directly, not from the schedule.
    #[test]
    fn q_sample_has_the_closed_form_mean_and_variance() {
        tch::manual_seed(0);
        let betas = linear_betas(1000, 1e-4, 0.02);
        let sched = NoiseSchedule::from_betas(betas.clone(), Device::Cpu);
        let n = 200_000;
        for &t in &[0usize, 99, 499, 999] {
            let alpha_bar: f64 = betas[..=t].iter().map(|b| 1.0 - b).product();
            let x0 = Tensor::full([n, 1], 0.7, (Kind::Float, Device::Cpu));
            let tt = Tensor::full([n], t as i64, (Kind::Int64, Device::Cpu));
            let noise = Tensor::randn([n, 1], (Kind::Float, Device::Cpu));
            let xt = q_sample(&sched, &x0, &tt, &noise);
            let mean = xt.mean(Kind::Double).double_value(&[]);
            let var = xt.var(true).double_value(&[]);
            // Standard errors for n = 2e5: mean ≤ 1/√n = 0.0022, variance ≤ √(2/n) = 0.0032.
            assert!((mean - 0.7 * alpha_bar.sqrt()).abs() < 0.01, "t={t}: mean {mean}");
            assert!((var - (1.0 - alpha_bar)).abs() < 0.015, "t={t}: var {var}");
        }
    }
}
