//! Classifier-free guidance (Ho & Salimans 2022, eq. 6): the guided prediction
//! ε̃(x_t, c) = (1 + w) ε(x_t, c) − w ε(x_t, ∅), with w = 0 the conditional model. The target x_0 or
//! v is affine in ε at fixed x_t, with weights (1 + w) and −w summing to one, so the same combination of
//! the network's raw outputs is the guided prediction of any target.
use tch::Tensor;

pub fn guide(conditional: &Tensor, unconditional: &Tensor, w: f64) -> Tensor {
    conditional * (1.0 + w) - unconditional * w
}

#[cfg(test)]
mod tests {
    use super::*;

    /// w = 2, ε_c = 1, ε_∅ = 0.5: 3·1 − 2·0.5 = 2; w = 0 gives ε_c back.
    #[test]
    fn hand_values() {
        let (c, u) = (Tensor::from_slice(&[1.0f32, -2.0]), Tensor::from_slice(&[0.5f32, 1.0]));
        assert_eq!(Vec::<f32>::try_from(guide(&c, &u, 2.0)).unwrap(), vec![2.0, -8.0]);
        assert_eq!(Vec::<f32>::try_from(guide(&c, &u, 0.0)).unwrap(), vec![1.0, -2.0]);
    }
}
