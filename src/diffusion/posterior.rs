//! The true posterior q(x_{t−1} | x_t, x_0) (Ho et al. eq. 6–7), batched over timesteps.
use super::{extract, NoiseSchedule};
use tch::Tensor;

/// μ̃_t(x_t, x_0) = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t.
pub fn posterior_mean(s: &NoiseSchedule, x0: &Tensor, x_t: &Tensor, t: &Tensor) -> Tensor {
    let n = x_t.dim();
    extract(&s.posterior_mean_coef1, t, n) * x0 + extract(&s.posterior_mean_coef2, t, n) * x_t
}

/// log β̃_t (clipped at t = 1, where β̃ is 0), broadcastable against x_t.
pub fn posterior_log_variance(s: &NoiseSchedule, t: &Tensor, ndim: usize) -> Tensor {
    extract(&s.posterior_log_variance_clipped, t, ndim)
}

/// The learned range (Nichol & Dhariwal 2021, eq. 15; improved-diffusion's `LEARNED_RANGE`,
/// diffusers' `learned_range`): log Σ = v' log β_t + (1 − v') log β̃_t with v' = (v + 1)/2 for the
/// network's variance output v; log β̃_t clipped at t = 1 as improved-diffusion does (diffusers
/// floors β̃_1 at 1e-20 instead; the two agree from t = 2 on, and t = 1 adds no sampling noise).
pub fn learned_log_variance(s: &NoiseSchedule, t: &Tensor, v: &Tensor) -> Tensor {
    let n = v.dim();
    let frac = (v + 1.0) * 0.5;
    let (max_log, min_log) = (extract(&s.log_betas, t, n), posterior_log_variance(s, t, n));
    &frac * max_log + (-&frac + 1.0) * min_log
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::linear_betas;
    use crate::diffusion::target::predict_x0_from_eps;
    use tch::{Device, Kind};

    /// Without clipping, the posterior mean at x̂_0(ε) equals Algorithm 2's
    /// 1/√α_t (x_t − β_t/√(1 − ᾱ_t) ε): substitute x̂_0 into eq. 7 and collect the x_t terms.
    #[test]
    fn posterior_mean_of_predicted_x0_is_algorithm_2s_mean() {
        let s = NoiseSchedule::from_betas(linear_betas(1000, 1e-4, 0.02), Device::Cpu);
        let x = Tensor::randn([4, 1, 3, 3], (Kind::Float, Device::Cpu));
        let eps = Tensor::randn([4, 1, 3, 3], (Kind::Float, Device::Cpu));
        for t in [0usize, 1, 500, 999] {
            let tt = Tensor::full([4], t as i64, (Kind::Int64, Device::Cpu));
            let via_x0 = posterior_mean(&s, &predict_x0_from_eps(&s, &x, &tt, &eps), &x, &tt);
            let alg2 = (&x - &eps * (s.betas[t] / (1.0 - s.alpha_bar[t]).sqrt())) * (1.0 / (1.0 - s.betas[t]).sqrt());
            let diff = (via_x0 - alg2).abs().max().double_value(&[]);
            assert!(diff < 1e-4, "t={t}: {diff}");
        }
    }

    /// The learned range's ends: v = 1 gives log β_t, v = −1 log β̃_t (β̃_2 at t = 1), v = 0 their mean.
    #[test]
    fn learned_range_ends() {
        let s = NoiseSchedule::from_betas(linear_betas(1000, 1e-4, 0.02), Device::Cpu);
        let t = Tensor::from_slice(&[0i64, 1, 500, 999]);
        let at = |v: f64| {
            let v = Tensor::full([4, 1, 1, 1], v, (Kind::Float, Device::Cpu));
            Vec::<f64>::try_from(learned_log_variance(&s, &t, &v).to_kind(Kind::Double).reshape([-1])).unwrap()
        };
        let (hi, lo, mid) = (at(1.0), at(-1.0), at(0.0));
        for (k, &i) in [0usize, 1, 500, 999].iter().enumerate() {
            let tilde = s.posterior_variance[if i == 0 { 1 } else { i }].ln();
            assert!((hi[k] - s.betas[i].ln()).abs() < 1e-5, "t index {i}");
            assert!((lo[k] - tilde).abs() < 1e-5, "t index {i}");
            assert!((mid[k] - 0.5 * (s.betas[i].ln() + tilde)).abs() < 1e-5, "t index {i}");
        }
    }
}
