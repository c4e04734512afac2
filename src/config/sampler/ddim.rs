//! `ddim`: DDIM (Song et al. 2021, eq. 12): `steps` timesteps, stochasticity `eta` in [0, 1]. Steps in
//! `diffusion::sampler::ddim`.
use super::{Check, Keys, Spacing};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_steps")]
    pub steps: usize,
    #[serde(default)]
    pub eta: f64,
    #[serde(default)]
    pub spacing: Spacing,
}

fn default_steps() -> usize {
    50
}

impl Default for Config {
    fn default() -> Self {
        Self { steps: default_steps(), eta: 0.0, spacing: Spacing::default() }
    }
}

impl Config {
    pub fn num_steps(&self, timesteps: usize) -> usize {
        self.steps.min(timesteps)
    }

    /// `DDIM<steps> eta=<eta>`.
    pub fn label(&self, steps: &str) -> String {
        format!("DDIM{steps} eta={}", self.eta)
    }

    pub fn check(&self, keys: &Keys, check: &mut Check) {
        let steps = self.steps;
        check(steps >= 1 && steps <= keys.max_steps, keys.steps, steps.to_string(), &keys.steps_allowed);
        check((0.0..=1.0).contains(&self.eta), keys.eta, self.eta.to_string(), "0 <= eta <= 1");
    }
}
