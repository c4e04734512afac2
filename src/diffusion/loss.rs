//! Training objectives.
use tch::{Kind, Tensor};

/// L_simple of Ho et al. eq. 14: ‖ε − ε_θ(x_t, t)‖², reduced as a mean per sample and then over the
/// batch (equal to the plain mean for equal-sized samples; written this way so that per-sample
/// weights and per-timestep diagnostics can use the per-sample values).
pub fn eps_mse(eps_pred: &Tensor, eps: &Tensor) -> Tensor {
    per_sample_mse(eps_pred, eps).mean(Kind::Float)
}

/// Mean squared error of each sample of a batch: shape `[B]`.
pub fn per_sample_mse(pred: &Tensor, target: &Tensor) -> Tensor {
    let dims: Vec<i64> = (1..pred.dim() as i64).collect();
    (pred - target).square().mean_dim(dims.as_slice(), false, Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand values: sample 1 errors (1, −1, 0, 2) → mean of squares 6/4 = 1.5; sample 2 errors
    /// (0, 0, 0, 1) → 0.25. Batch mean 0.875.
    #[test]
    fn mse_per_sample_then_batch() {
        let pred = Tensor::from_slice(&[1f32, -1., 0., 2., 0., 0., 0., 1.]).reshape([2, 1, 2, 2]);
        let target = Tensor::zeros([2, 1, 2, 2], (Kind::Float, tch::Device::Cpu));
        let per = per_sample_mse(&pred, &target);
        assert_eq!(Vec::<f32>::try_from(&per).unwrap(), vec![1.5, 0.25]);
        assert!((eps_mse(&pred, &target).double_value(&[]) - 0.875).abs() < 1e-7);
    }
}
