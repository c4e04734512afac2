//! Training objectives: the distance between prediction and target per sample, and per-sample
//! weights. Losses are averaged over each sample's pixels first, then (weighted) over the batch.
use super::{extract, NoiseSchedule};
use crate::config::{LossKind, Target};
use tch::{Kind, Reduction, Tensor};

/// The loss of each sample of a batch, shape `[B]`: mean over pixels of
/// - `l2`: (p − y)²; `l1`: |p − y|;
/// - `huber`: PyTorch's smooth_l1 with β = δ: 0.5 (p − y)²/δ where |p − y| < δ, else |p − y| − δ/2.
pub fn per_sample_loss(kind: LossKind, huber_delta: f64, pred: &Tensor, target: &Tensor) -> Tensor {
    let elementwise = match kind {
        LossKind::L2 => (pred - target).square(),
        LossKind::L1 => (pred - target).abs(),
        LossKind::Huber => pred.smooth_l1_loss(target, Reduction::None, huber_delta),
    };
    let dims: Vec<i64> = (1..pred.dim() as i64).collect();
    elementwise.mean_dim(dims.as_slice(), false, Kind::Float)
}

/// Min-SNR-γ weights (Hang et al. 2023) for each sample's timestep: the loss in x_0 space is weighted
/// by min(SNR_t, γ). Since ‖ε̂ − ε‖² = SNR_t ‖x̂_0 − x_0‖² and ‖v̂ − v‖² = (SNR_t + 1) ‖x̂_0 − x_0‖²,
/// the weight on the target's own loss is min(SNR, γ)/SNR for ε, min(SNR, γ) for x_0 and
/// min(SNR, γ)/(SNR + 1) for v.
pub fn min_snr_weights(target: Target, s: &NoiseSchedule, t: &Tensor, gamma: f64) -> Tensor {
    let snr = extract(&s.snr, t, 1);
    let clipped = snr.clamp_max(gamma);
    match target {
        // min(SNR, γ)/SNR written as min(1, γ/SNR): 1, not 0/0, at SNR 0 (zero terminal SNR).
        Target::Eps => (snr.reciprocal() * gamma).clamp_max(1.0),
        Target::X0 => clipped,
        Target::V => clipped / (snr + 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::linear_betas;
    use tch::Device;

    fn batch(values: &[f32]) -> Tensor {
        Tensor::from_slice(values).reshape([2, 1, 2, 2])
    }

    /// Errors by hand: sample 1 (1, −1, 0, 2), sample 2 (0, 0, 0, 0.5).
    /// L2: (1 + 1 + 0 + 4)/4 = 1.5 and 0.25/4 = 0.0625. L1: 4/4 = 1 and 0.5/4 = 0.125.
    /// Huber δ = 1: 0.5, 0.5, 0, 2 − 0.5 = 1.5 → 2.5/4 = 0.625; 0.5·0.25 = 0.125 → 0.03125.
    /// Huber δ = 0.5: |1| ≥ δ → 1 − 0.25 = 0.75 (twice), 0, 2 − 0.25 = 1.75 → 3.25/4 = 0.8125;
    /// 0.5 is not below δ → 0.5 − 0.25 = 0.25 → 0.0625.
    #[test]
    fn losses_match_hand_values() {
        let err = batch(&[1., -1., 0., 2., 0., 0., 0., 0.5]);
        let zero = Tensor::zeros_like(&err);
        let v = |kind, delta| Vec::<f32>::try_from(per_sample_loss(kind, delta, &err, &zero)).unwrap();
        assert_eq!(v(LossKind::L2, 1.0), vec![1.5, 0.0625]);
        assert_eq!(v(LossKind::L1, 1.0), vec![1.0, 0.125]);
        assert_eq!(v(LossKind::Huber, 1.0), vec![0.625, 0.03125]);
        assert_eq!(v(LossKind::Huber, 0.5), vec![0.8125, 0.0625]);
    }

    /// With SNR_t = ᾱ/(1 − ᾱ) computed here from the β's, γ = 5: at t = 1 (SNR ≈ 9999) the weights
    /// are 5/SNR, 5, 5/(SNR + 1); at t = T (SNR ≈ 4e-5 < γ) they are 1, SNR, SNR/(SNR + 1).
    #[test]
    fn min_snr_weights_per_target() {
        let betas = linear_betas(1000, 1e-4, 0.02);
        let s = NoiseSchedule::from_betas(betas.clone(), Device::Cpu);
        let t = Tensor::from_slice(&[0i64, 999]);
        let ab0 = 1.0 - betas[0];
        let abt: f64 = betas.iter().map(|b| 1.0 - b).product();
        let (snr0, snrt) = (ab0 / (1.0 - ab0), abt / (1.0 - abt));
        let got = |target| Vec::<f64>::try_from(min_snr_weights(target, &s, &t, 5.0).to_kind(Kind::Double)).unwrap();
        let close = |a: f64, b: f64| (a / b - 1.0).abs() < 1e-4;
        let eps = got(Target::Eps);
        assert!(close(eps[0], 5.0 / snr0) && close(eps[1], 1.0));
        let x0 = got(Target::X0);
        assert!(close(x0[0], 5.0) && close(x0[1], snrt));
        let v = got(Target::V);
        assert!(close(v[0], 5.0 / (snr0 + 1.0)) && close(v[1], snrt / (snrt + 1.0)));
    }

    /// At SNR 0 (zero terminal SNR: ᾱ_T = 0) every target's weight is finite: the limits
    /// min(SNR, γ)/SNR → 1 for ε, min(SNR, γ) = 0 for x_0 and min(SNR, γ)/(SNR + 1) = 0 for v.
    /// (Tools that compute the ε weight as min(SNR, γ)/SNR get 0/0 = NaN here.)
    #[test]
    fn min_snr_weights_are_finite_at_zero_snr() {
        use crate::diffusion::schedule::rescale_zero_terminal_snr;
        let betas = rescale_zero_terminal_snr(&linear_betas(1000, 1e-4, 0.02));
        let s = NoiseSchedule::from_betas(betas, Device::Cpu);
        assert_eq!(s.snr_at(999), 0.0);
        let t = Tensor::from_slice(&[999i64, 0]);
        for (target, at_zero) in [(Target::Eps, 1.0), (Target::X0, 0.0), (Target::V, 0.0)] {
            let w = Vec::<f64>::try_from(min_snr_weights(target, &s, &t, 5.0).to_kind(Kind::Double)).unwrap();
            assert!(w.iter().all(|x| x.is_finite()), "{target:?}: {w:?}");
            assert_eq!(w[0], at_zero, "{target:?}");
        }
    }
}
