//! `ddpm`: ancestral sampling (Ho et al. Algorithm 2) with σ_t² from `diffusion.variance`. With
//! `steps` below T it samples a subset of the timesteps with recomputed β's (improved-diffusion's
//! timestep respacing). Steps in `diffusion::sampler::ddpm`.
use super::{Check, Keys, Spacing};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Timesteps visited (default: all T).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    #[serde(default)]
    pub spacing: Spacing,
}

impl Config {
    pub fn num_steps(&self, timesteps: usize) -> usize {
        self.steps.map_or(timesteps, |k| k.min(timesteps))
    }

    /// `DDPM<steps>`.
    pub fn label(&self, steps: &str) -> String {
        format!("DDPM{steps}")
    }

    pub fn check(&self, keys: &Keys, check: &mut Check) {
        if let Some(k) = self.steps {
            check(k >= 1 && k <= keys.max_steps, keys.steps, k.to_string(), &keys.steps_allowed);
        }
    }
}
