//! `euler_ancestral`: Euler ancestral steps (k-diffusion's `sample_euler_ancestral`) on the discrete
//! model, as diffusers' `EulerAncestralDiscreteScheduler`: timesteps evenly spaced from T − 1 to 0
//! (the scheduler has no Karras σ in diffusers 0.42.1), noise z from libtorch's generator after each
//! model call. One model call per step. Steps in `diffusion::sampler::karras`.
use super::{Check, Keys};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "super::default_fast_steps")]
    pub steps: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { steps: super::default_fast_steps() }
    }
}

impl Config {
    pub fn steps(&self, timesteps: usize) -> usize {
        self.steps.min(timesteps)
    }

    pub fn num_steps(&self, timesteps: usize) -> usize {
        self.steps(timesteps)
    }

    /// `Euler ancestral<steps>`.
    pub fn label(&self, steps: &str) -> String {
        format!("Euler ancestral{steps}")
    }

    pub fn check(&self, keys: &Keys, check: &mut Check) {
        super::check_steps(self.steps, keys, check);
    }
}
