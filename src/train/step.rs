//! One training batch's loss (Ho et al. Algorithm 1, lines 2–5, with the configured target, loss
//! and weighting): x_t = q_sample(x_0, t, ε), the network's prediction of the target, the loss per
//! sample, weighted and averaged over the batch. The loop draws t and ε; tests pass their own.
use crate::config::{DiffusionConfig, Precision, TrainConfig, Weighting};
use crate::diffusion::loss::{min_snr_weights, per_sample_loss};
use crate::diffusion::{forward::q_sample, target::training_target, NoiseSchedule};
use crate::models::Denoiser;
use tch::{Device, Kind, Tensor};

pub struct BatchLoss {
    /// The scalar the optimiser minimises.
    pub loss: Tensor,
    /// Each sample's unweighted loss `[B]` (the loss window and importance sampling read it).
    pub per_sample: Tensor,
}

/// The inputs of one batch: images x_0 in [-1, 1], timestep indices t (0-based, as the network sees
/// them), the noise ε, class labels (−1: no class) and importance weights of non-uniform t sampling.
pub struct Batch<'a> {
    pub x0: &'a Tensor,
    pub t: &'a Tensor,
    pub noise: &'a Tensor,
    pub labels: Option<&'a Tensor>,
    pub importance: Option<Tensor>,
}

/// The loss of one batch in training mode (batch norm on batch statistics, dropout on).
pub fn batch_loss(
    model: &dyn Denoiser,
    schedule: &NoiseSchedule,
    dc: &DiffusionConfig,
    tc: &TrainConfig,
    device: Device,
    b: Batch,
) -> BatchLoss {
    let x_t = q_sample(schedule, b.x0, b.t, b.noise);
    let target = training_target(dc.target, schedule, b.x0, b.noise, b.t);
    let x_t = if tc.channels_last { crate::device::channels_last(&x_t) } else { x_t };
    // Under bf16 autocast the network runs in bfloat16; its output and the loss are float32.
    let bf16 = tc.precision == Precision::Bf16;
    let prediction =
        crate::device::autocast_bf16(bf16, device, || model.forward_t(&x_t, b.t, b.labels, true)).to_kind(Kind::Float);
    let per_sample = per_sample_loss(tc.loss, tc.huber_delta, &prediction, &target);
    let weights = match tc.weighting {
        Weighting::Uniform => b.importance,
        Weighting::MinSnr => {
            let w = min_snr_weights(dc.target, schedule, b.t, tc.min_snr_gamma);
            Some(b.importance.map_or(w.shallow_clone(), |i| w * i))
        }
    };
    let loss = match &weights {
        Some(w) => (&per_sample * w).mean(Kind::Float),
        None => per_sample.mean(Kind::Float),
    };
    BatchLoss { loss, per_sample }
}
