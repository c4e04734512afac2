//! The variational bound on the negative log-likelihood (Ho et al. 2020, eq. 5 and §3.3):
//! L = L_T + Σ_{t>1} L_{t−1} + L_0, with
//! - L_T = KL(q(x_T | x_0) ‖ N(0, I)), the prior term (no model);
//! - L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)), Gaussian KLs;
//! - L_0 = −log p_θ(x_0 | x_1), a Gaussian discretised to the 256 pixel values (eq. 13).
//!
//! Each term is reported in bits per dimension: nats / (pixels · ln 2). Data must lie on the 8-bit grid
//! x = 2k/255 − 1 (k = 0..255).
use super::posterior::{posterior_log_variance, posterior_mean};
use super::NoiseSchedule;
use std::f64::consts::LN_2;
use tch::{Kind, Tensor};

/// KL(N(μ₁, e^{lv₁}) ‖ N(μ₂, e^{lv₂})) element-wise, in nats:
/// ½ (−1 + lv₂ − lv₁ + e^{lv₁ − lv₂} + (μ₁ − μ₂)² e^{−lv₂}).
pub fn normal_kl(mean1: &Tensor, logvar1: &Tensor, mean2: &Tensor, logvar2: &Tensor) -> Tensor {
    ((logvar2 - logvar1) - 1.0 + (logvar1 - logvar2).exp() + (mean1 - mean2).square() * (-logvar2).exp()) * 0.5
}

/// Φ(x), the standard normal CDF, exactly: ½ (1 + erf(x/√2)). (improved-diffusion uses a tanh
/// approximation here; the bound computed here is the exact one.)
pub fn standard_normal_cdf(x: &Tensor) -> Tensor {
    ((x / std::f64::consts::SQRT_2).erf() + 1.0) * 0.5
}

/// log p(x) of pixels x on the 8-bit grid under N(mean, e^{2·log_scale}) discretised to bins of width
/// 2/255 centred on the grid, with the two outermost bins extended to ±∞ (Ho et al. eq. 13).
pub fn discretized_gaussian_log_likelihood(x: &Tensor, mean: &Tensor, log_scale: &Tensor) -> Tensor {
    let centered = x - mean;
    let inv_std = (-log_scale).exp();
    let cdf_plus = standard_normal_cdf(&((&centered + 1.0 / 255.0) * &inv_std));
    let cdf_min = standard_normal_cdf(&((&centered - 1.0 / 255.0) * &inv_std));
    let log_cdf_plus = cdf_plus.clamp_min(1e-12).log();
    let log_one_minus_cdf_min = (-&cdf_min + 1.0).clamp_min(1e-12).log();
    let log_delta = (cdf_plus - cdf_min).clamp_min(1e-12).log();
    // tch's `a.where_self(cond, b)` is `where(cond, a, b)`.
    log_cdf_plus.where_self(&x.less(-0.999), &log_one_minus_cdf_min.where_self(&x.greater(0.999), &log_delta))
}

fn mean_per_sample_bits(nats: &Tensor) -> Tensor {
    let dims: Vec<i64> = (1..nats.dim() as i64).collect();
    nats.mean_dim(dims.as_slice(), false, Kind::Double) / LN_2
}

/// L_T in bits/dim for each image of `x0`, in closed form and f64: per dimension
/// KL(N(√ᾱ_T x, 1 − ᾱ_T) ‖ N(0, 1)) = ½(−ln(1 − ᾱ_T) − ᾱ_T + ᾱ_T x²).
pub fn prior_bpd(s: &NoiseSchedule, x0: &Tensor) -> Tensor {
    let ab = s.alpha_bar[s.timesteps() - 1];
    let dims: Vec<i64> = (1..x0.dim() as i64).collect();
    let mean_sq = x0.to_kind(Kind::Double).square().mean_dim(dims.as_slice(), false, Kind::Double);
    (mean_sq * ab + (-(-ab).ln_1p() - ab)) * (0.5 / LN_2)
}

/// The bound's term at each sample's own timestep t, in bits/dim, given the model's prediction of
/// x_0 (`x0_hat`, clipped or not as the caller wants) and its log-variance at x_t: L_0 where t = 0
/// (index of the paper's t = 1), L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ N(μ̃(x_t, x̂_0), Σ)) otherwise.
pub fn terms_bpd(
    s: &NoiseSchedule,
    x0: &Tensor,
    x_t: &Tensor,
    t: &Tensor,
    x0_hat: &Tensor,
    model_logvar: &Tensor,
) -> Tensor {
    let ndim = x0.dim();
    // The model runs in f32; the KL and the decoder's log-probabilities are computed in f64.
    let f64 = |x: Tensor| x.to_kind(Kind::Double);
    let model_mean = f64(posterior_mean(s, x0_hat, x_t, t));
    let model_logvar = f64(model_logvar.shallow_clone());
    let true_mean = f64(posterior_mean(s, x0, x_t, t));
    let true_logvar = f64(posterior_log_variance(s, t, ndim));
    let x0 = &f64(x0.shallow_clone());
    let kl = mean_per_sample_bits(&normal_kl(&true_mean, &true_logvar, &model_mean, &model_logvar));
    let decoder = mean_per_sample_bits(&-discretized_gaussian_log_likelihood(x0, &model_mean, &(&model_logvar * 0.5)));
    decoder.where_self(&t.reshape([-1]).eq(0), &kl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::linear_betas;
    use tch::Device;

    fn cpu(v: &[f64]) -> Tensor {
        Tensor::from_slice(v)
    }

    #[test]
    fn kl_of_identical_gaussians_is_zero_and_matches_closed_form() {
        let m = cpu(&[0.3, -1.0]);
        let lv = cpu(&[-2.0, 0.5]);
        assert!(normal_kl(&m, &lv, &m, &lv).abs().max().double_value(&[]) < 1e-12);
        // KL(N(0,1) ‖ N(1, e²)) by hand: ½(−1 + 2 − 0 + e^{−2} + 1·e^{−2}) = ½(1 + 2e^{−2}) = 0.6353352832.
        let kl = normal_kl(&cpu(&[0.0]), &cpu(&[0.0]), &cpu(&[1.0]), &cpu(&[2.0]));
        assert!((kl.double_value(&[0]) - 0.635_335_283_2).abs() < 1e-9);
    }

    /// The 256 bin probabilities of the discretised decoder sum to 1 (the end bins reach ±∞), for a
    /// few means and scales.
    #[test]
    fn decoder_probabilities_sum_to_one() {
        let grid = Tensor::arange(256, (Kind::Double, Device::Cpu)) * (2.0 / 255.0) - 1.0;
        for (mean, log_scale) in [(0.0, -3.0), (0.7, -1.0), (-0.95, -5.0), (0.2, 0.5)] {
            let means = Tensor::full([256], mean, (Kind::Double, Device::Cpu));
            let scales = Tensor::full([256], log_scale, (Kind::Double, Device::Cpu));
            let total = discretized_gaussian_log_likelihood(&grid, &means, &scales).exp().sum(Kind::Double);
            assert!((total.double_value(&[]) - 1.0).abs() < 1e-9, "mean {mean}, log scale {log_scale}");
        }
    }

    /// L_T for the linear schedule with T = 1000 on data in [-1, 1]: per dimension
    /// ½(−ln(1 − ᾱ) − ᾱ + ᾱ x²) ≤ ½ ᾱ(1 + ᾱ/2) ≈ 2.02e-5 nats = 2.91e-5 bits (ᾱ_T = 4.0358e-5), the
    /// maximum reached by images of ±1 only; an image of zeros gives ½ · ᾱ²/2 / ln 2 ≈ 5.9e-10.
    #[test]
    fn prior_term_is_tiny_for_the_linear_schedule() {
        let s = NoiseSchedule::from_betas(linear_betas(1000, 1e-4, 0.02), Device::Cpu);
        let x0 = Tensor::from_slice(&[0f32, 0.0, 0.0, 0.0, -1.0, -1.0, 1.0, 1.0]).reshape([2, 1, 2, 2]);
        let bpd = Vec::<f64>::try_from(prior_bpd(&s, &x0)).unwrap();
        assert!(bpd.iter().all(|&b| b < 1e-4));
        let ab = 4.035_829_765e-5;
        assert!((bpd[1] - 0.5 * ab * (1.0 + ab / 2.0) / LN_2).abs() < 1e-12, "{}", bpd[1]);
        assert!((bpd[0] - 0.5 * ab * ab / 2.0 / LN_2).abs() < 1e-13, "{}", bpd[0]);
    }

    /// The closed form agrees with the general Gaussian KL evaluated in f64.
    #[test]
    fn prior_closed_form_equals_the_gaussian_kl() {
        let s = NoiseSchedule::from_betas(linear_betas(100, 1e-4, 0.05), Device::Cpu);
        let x0 = Tensor::rand([3, 1, 4, 4], (Kind::Double, Device::Cpu)) * 2.0 - 1.0;
        let ab = s.alpha_bar[99];
        let kl = normal_kl(&(&x0 * ab.sqrt()), &x0.full_like((1.0 - ab).ln()), &x0.zeros_like(), &x0.zeros_like());
        let expected = kl.mean_dim([1i64, 2, 3].as_slice(), false, Kind::Double) / LN_2;
        assert!((prior_bpd(&s, &x0) - expected).abs().max().double_value(&[]) < 1e-12);
    }
}
