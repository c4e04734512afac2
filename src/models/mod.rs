//! Denoising networks behind one trait, built by name from the run's `ModelConfig`.
pub mod embedding;
pub mod layers;
pub mod simple_unet;

use crate::config::{ModelConfig, ModelName};
use tch::{nn, Tensor};

/// A network that maps a noisy batch x_t and its timestep indices t to a tensor of x_t's shape.
pub trait Denoiser {
    /// `train` switches layers that behave differently in training (dropout, batch norm).
    fn forward_t(&self, x_t: &Tensor, t: &Tensor, train: bool) -> Tensor;
}

/// Builds the configured model with its parameters under `path` (checkpoint keys read like the
/// architecture: `down.0.conv1.weight`).
pub fn build(cfg: &ModelConfig, channels: i64, path: &nn::Path) -> Box<dyn Denoiser> {
    match cfg.name {
        ModelName::Simple => Box::new(simple_unet::SimpleUNet::new(path, channels, cfg.time_emb_dim)),
    }
}
