//! `midpoint`: the explicit midpoint rule (second order, two model calls per step) on the flow
//! formulation's time grid, as Meta's `flow_matching` `ODESolver(method="midpoint")` steps:
//! x ← x + h v(x + (h/2) v(x, t), t + h/2). Flow matching only. Steps in `diffusion::flow`.
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

    /// Model calls (NFE): two per step.
    pub fn num_steps(&self, timesteps: usize) -> usize {
        2 * self.steps(timesteps)
    }

    /// `Midpoint<steps>`.
    pub fn label(&self, steps: &str) -> String {
        format!("Midpoint{steps}")
    }

    pub fn check(&self, keys: &Keys, check: &mut Check) {
        super::check_steps(self.steps, keys, check);
    }
}
