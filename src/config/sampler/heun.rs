//! `heun`: Heun's second-order steps (Karras et al. 2022, Algorithm 1, S_churn = 0) on the discrete
//! model, over Karras et al.'s σ (eq. 5, ρ = 7) with `karras = true` (the default), as diffusers'
//! `HeunDiscreteScheduler(use_karras_sigmas=True)`. Two model calls per step except the last (an
//! Euler step into σ = 0): 2·steps − 1. Steps in `diffusion::sampler::karras`.
use super::{Check, Keys};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "super::default_fast_steps")]
    pub steps: usize,
    /// Karras et al.'s σ (true), or diffusers' default: timesteps evenly spaced from T − 1 to 0.
    #[serde(default = "super::default_true")]
    pub karras: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self { steps: super::default_fast_steps(), karras: true }
    }
}

impl Config {
    pub fn steps(&self, timesteps: usize) -> usize {
        self.steps.min(timesteps)
    }

    /// Model calls (NFE). Two calls per step, one for the last.
    pub fn num_steps(&self, timesteps: usize) -> usize {
        2 * self.steps(timesteps) - 1
    }

    /// `Heun<steps>`, `Heun<steps> uniform` without Karras σ.
    pub fn label(&self, steps: &str) -> String {
        format!("Heun{steps}{}", if self.karras { "" } else { " uniform" })
    }

    pub fn check(&self, keys: &Keys, check: &mut Check) {
        super::check_steps(self.steps, keys, check);
    }
}
