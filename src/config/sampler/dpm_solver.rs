//! `dpm_solver`: DPM-Solver++(2M) (Lu et al. 2022; multistep, second order, data prediction, first
//! order at the first and last steps), as diffusers' `DPMSolverMultistepScheduler` with
//! `algorithm_type = "dpmsolver++"`, `solver_order = 2`. One model call per step. Steps in
//! `diffusion::sampler::dpm_solver_2m`.
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

    /// `DPM-Solver++(2M)<steps>`.
    pub fn label(&self, steps: &str) -> String {
        format!("DPM-Solver++(2M){steps}")
    }

    pub fn check(&self, keys: &Keys, check: &mut Check) {
        super::check_steps(self.steps, keys, check);
    }
}
