//! The diffusion process itself: pure functions of tensors and schedule buffers, no model inside.
//!
//! Index convention: the paper counts t = 1..T; arrays here are indexed 0..T-1, so index `i` holds
//! the paper's t = i + 1. Timestep tensors fed to models hold these indices.
pub mod edm;
pub mod flow;
pub mod formulation;
pub mod forward;
pub mod guidance;
pub mod likelihood;
pub mod loss;
pub mod posterior;
pub mod process;
pub mod sampler;
pub mod schedule;
pub mod target;
pub mod timesteps;

pub use process::Diffusion;
pub use schedule::NoiseSchedule;

use tch::Tensor;

/// Gathers `values[t]` for each element of the batch of indices `t` and shapes the result to
/// broadcast against an image batch of `ndim` dimensions (`[B, 1, 1, 1]` for images).
pub fn extract(values: &Tensor, t: &Tensor, ndim: usize) -> Tensor {
    let mut shape = vec![t.size()[0]];
    shape.extend(std::iter::repeat_n(1, ndim - 1));
    values.index_select(0, t).reshape(shape)
}

/// Per-sample values `[B]` shaped to broadcast against a batch of `ndim` dimensions (`[B, 1, 1, 1]`).
pub fn per_image(v: &Tensor, ndim: usize) -> Tensor {
    let mut shape = vec![v.size()[0]];
    shape.extend(std::iter::repeat_n(1, ndim - 1));
    v.reshape(shape)
}
