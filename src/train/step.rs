//! One training batch's loss: the run's `Diffusion::training_losses` (Ho et al. Algorithm 1, lines
//! 2–5) through the network in training mode, weighted (min-SNR, importance sampling of t) and
//! averaged over the batch. The loop draws t and ε; tests pass their own.
use crate::config::{Precision, TrainConfig};
use crate::diffusion::process::{Diffusion, Noise, TrainingLosses};
use crate::models::Denoiser;
use tch::{Device, Kind, Tensor};

pub struct BatchLoss {
    /// The scalar the optimiser minimises.
    pub loss: Tensor,
    /// Each sample's unweighted loss `[B]` (the loss window and importance sampling read it).
    pub per_sample: Tensor,
}

/// The inputs of one batch: images x_0 in [-1, 1], timestep indices t (0-based, as the network sees
/// them), the noise ε, offset noise's per-channel draws `[B, C]`, whether self-conditioning's first
/// pass runs, class labels (−1: no class) and importance weights of non-uniform t sampling.
pub struct Batch<'a> {
    pub x0: &'a Tensor,
    pub t: &'a Tensor,
    /// A continuous formulation's per-image draw of its noise level (None: DDPM).
    pub time: Option<&'a Tensor>,
    pub noise: &'a Tensor,
    pub offset: Option<&'a Tensor>,
    pub self_condition: bool,
    pub labels: Option<&'a Tensor>,
    pub importance: Option<Tensor>,
}

/// The loss of one batch in training mode (batch norm on batch statistics, dropout on).
pub fn batch_loss(
    model: &dyn Denoiser,
    diffusion: &Diffusion,
    tc: &TrainConfig,
    device: Device,
    b: Batch,
) -> BatchLoss {
    // Under bf16 autocast the network runs in bfloat16; its output and the loss are float32.
    let bf16 = tc.precision == Precision::Bf16;
    let mut network = |x_t: &Tensor, t: &Tensor| {
        let x_t = if tc.channels_last { crate::device::channels_last(x_t) } else { x_t.shallow_clone() };
        crate::device::autocast_bf16(bf16, device, || model.forward_t(&x_t, t, b.labels, true)).to_kind(Kind::Float)
    };
    let TrainingLosses { per_sample, weights } = diffusion.training_losses(
        &mut network,
        b.x0,
        &Noise { t: b.t, time: b.time, noise: b.noise, offset: b.offset, self_condition: b.self_condition },
    );
    let weights = match (weights, b.importance) {
        (Some(w), Some(i)) => Some(w * i),
        (w, None) => w,
        (None, i) => i,
    };
    let loss = match &weights {
        Some(w) => (&per_sample * w).mean(Kind::Float),
        None => per_sample.mean(Kind::Float),
    };
    BatchLoss { loss, per_sample }
}
