//! The true posterior q(x_{t−1} | x_t, x_0) and the conversion from a predicted ε to a predicted x_0.
use super::NoiseSchedule;
use tch::Tensor;

/// x̂_0 from x_t and a predicted ε, inverting eq. 4: x_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t.
pub fn predict_x0_from_eps(schedule: &NoiseSchedule, x_t: &Tensor, t: usize, eps: &Tensor) -> Tensor {
    let ab = schedule.alpha_bar[t];
    (x_t - eps * (1.0 - ab).sqrt()) * (1.0 / ab.sqrt())
}

/// μ̃_t(x_t, x_0) of Ho et al. eq. 7:
/// √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t.
pub fn posterior_mean(schedule: &NoiseSchedule, x0: &Tensor, x_t: &Tensor, t: usize) -> Tensor {
    let (beta, ab, abp) = (schedule.betas[t], schedule.alpha_bar[t], schedule.alpha_bar_prev[t]);
    x0 * (abp.sqrt() * beta / (1.0 - ab)) + x_t * ((1.0 - beta).sqrt() * (1.0 - abp) / (1.0 - ab))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::linear_betas;
    use tch::{Device, Kind};

    /// Without clipping, the posterior mean at x̂_0(ε) equals Algorithm 2's
    /// 1/√α_t (x_t − β_t/√(1 − ᾱ_t) ε): substitute x̂_0 into eq. 7 and collect the x_t terms.
    #[test]
    fn posterior_mean_of_predicted_x0_is_algorithm_2s_mean() {
        let s = NoiseSchedule::from_betas(linear_betas(1000, 1e-4, 0.02), Device::Cpu);
        let x = Tensor::randn([4, 1, 3, 3], (Kind::Double, Device::Cpu));
        let eps = Tensor::randn([4, 1, 3, 3], (Kind::Double, Device::Cpu));
        for t in [0usize, 1, 500, 999] {
            let via_x0 = posterior_mean(&s, &predict_x0_from_eps(&s, &x, t, &eps), &x, t);
            let alg2 = (&x - &eps * (s.betas[t] / (1.0 - s.alpha_bar[t]).sqrt())) * (1.0 / (1.0 - s.betas[t]).sqrt());
            let diff = (via_x0 - alg2).abs().max().double_value(&[]);
            assert!(diff < 1e-9, "t={t}: {diff}");
        }
    }
}
