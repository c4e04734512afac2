//! What the network predicts, and the conversions between the three parameterisations, batched over
//! a tensor of timestep indices `t` (one per sample):
//! - ε, the noise (Ho et al. 2020);
//! - x_0, the clean image;
//! - v = √ᾱ_t ε − √(1 − ᾱ_t) x_0 (Salimans & Ho 2022, §4).
//!
//! With x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, any one of them and x_t determine the other two.
use super::{extract, NoiseSchedule};
use crate::config::Target;
use tch::Tensor;

/// The regression target for the training step.
pub fn training_target(target: Target, s: &NoiseSchedule, x0: &Tensor, eps: &Tensor, t: &Tensor) -> Tensor {
    match target {
        Target::Eps => eps.shallow_clone(),
        Target::X0 => x0.shallow_clone(),
        Target::V => v_from_x0_eps(s, x0, eps, t),
    }
}

/// v = √ᾱ_t ε − √(1 − ᾱ_t) x_0.
pub fn v_from_x0_eps(s: &NoiseSchedule, x0: &Tensor, eps: &Tensor, t: &Tensor) -> Tensor {
    let n = x0.dim();
    extract(&s.sqrt_alpha_bar, t, n) * eps - extract(&s.sqrt_one_minus_alpha_bar, t, n) * x0
}

/// x_0 = x_t/√ᾱ_t − √(1/ᾱ_t − 1) ε (eq. 4 solved for x_0).
pub fn predict_x0_from_eps(s: &NoiseSchedule, x_t: &Tensor, t: &Tensor, eps: &Tensor) -> Tensor {
    let n = x_t.dim();
    extract(&s.sqrt_recip_alpha_bar, t, n) * x_t - extract(&s.sqrt_recipm1_alpha_bar, t, n) * eps
}

/// ε = (x_t/√ᾱ_t − x_0) / √(1/ᾱ_t − 1); with zero terminal SNR, where 1/√ᾱ_T is infinite, the
/// same ε as (x_t − √ᾱ_t x_0) / √(1 − ᾱ_t) (= x_t at T).
pub fn predict_eps_from_x0(s: &NoiseSchedule, x_t: &Tensor, t: &Tensor, x0: &Tensor) -> Tensor {
    let n = x_t.dim();
    if s.zero_terminal_snr() {
        return (x_t - extract(&s.sqrt_alpha_bar, t, n) * x0) / extract(&s.sqrt_one_minus_alpha_bar, t, n);
    }
    (extract(&s.sqrt_recip_alpha_bar, t, n) * x_t - x0) / extract(&s.sqrt_recipm1_alpha_bar, t, n)
}

/// x_0 = √ᾱ_t x_t − √(1 − ᾱ_t) v.
pub fn predict_x0_from_v(s: &NoiseSchedule, x_t: &Tensor, t: &Tensor, v: &Tensor) -> Tensor {
    let n = x_t.dim();
    extract(&s.sqrt_alpha_bar, t, n) * x_t - extract(&s.sqrt_one_minus_alpha_bar, t, n) * v
}

/// The x_0 implied by a model output of the given kind.
pub fn predicted_x0(target: Target, s: &NoiseSchedule, x_t: &Tensor, t: &Tensor, output: &Tensor) -> Tensor {
    match target {
        Target::Eps => predict_x0_from_eps(s, x_t, t, output),
        Target::X0 => output.shallow_clone(),
        Target::V => predict_x0_from_v(s, x_t, t, output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::{forward::q_sample, schedule::linear_betas};
    use tch::{Device, Kind};

    /// From (x_0, ε), form x_t, then recover x_0 from each target's value and ε back from x_0:
    /// round trips within 1e-5 at timesteps across the schedule (float32 buffers).
    #[test]
    fn conversions_round_trip() {
        let s = NoiseSchedule::from_betas(linear_betas(1000, 1e-4, 0.02), Device::Cpu);
        tch::manual_seed(0);
        let x0 = Tensor::rand([5, 1, 4, 4], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let eps = Tensor::randn([5, 1, 4, 4], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[0i64, 10, 500, 900, 999]);
        let x_t = q_sample(&s, &x0, &t, &eps);
        let max = |a: Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        for target in [Target::Eps, Target::X0, Target::V] {
            let out = training_target(target, &s, &x0, &eps, &t);
            let x0_hat = predicted_x0(target, &s, &x_t, &t, &out);
            // x_0 from ε at t = T divides by √ᾱ_T ≈ 0.0064, which magnifies float32 rounding.
            let tol = if target == Target::Eps { 2e-3 } else { 1e-5 };
            assert!(max(x0_hat.shallow_clone(), &x0) < tol, "{target:?}");
        }
        // ε from x_0 divides by √(1/ᾱ_t − 1), which is 0.01 at t = 1: compare where it is well posed.
        let late = Tensor::from_slice(&[500i64, 999]);
        let (x0l, epsl) = (x0.narrow(0, 2, 2), eps.narrow(0, 2, 2));
        let xl = q_sample(&s, &x0l, &late, &epsl);
        assert!(max(predict_eps_from_x0(&s, &xl, &late, &x0l), &epsl) < 1e-5);
        // v from the definition: at t with ᾱ, v = √ᾱ ε − √(1−ᾱ) x_0; check one element by hand.
        let v = v_from_x0_eps(&s, &x0, &eps, &t);
        let ab = s.alpha_bar[500];
        let expected = ab.sqrt() * eps.double_value(&[2, 0, 1, 1]) - (1.0 - ab).sqrt() * x0.double_value(&[2, 0, 1, 1]);
        assert!((v.double_value(&[2, 0, 1, 1]) - expected).abs() < 1e-6);
    }
}
