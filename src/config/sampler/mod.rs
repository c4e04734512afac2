//! The reverse-process sampler, chosen by `name`: one module per sampler with its keys (`Config`,
//! their defaults, `check`, `num_steps` and its part of the label), and this registry. Adding a
//! sampler: its `Config` module here, its steps in `diffusion::sampler`, one variant below and its
//! arm in `diffusion::sampler::sample`.
pub mod ddim;
pub mod ddpm;

use serde::{Deserialize, Serialize};

pub use super::model::Check;

/// Which K of the T timesteps a shortened sampler visits (the names of diffusers' `timestep_spacing`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spacing {
    /// round(linspace(0, T − 1, K)): both ends included.
    #[default]
    Linspace,
    /// 0, T/K, 2T/K, …: starts at the first step, stops short of the last.
    Leading,
    /// round(T − i·T/K) − 1: ends at the last step.
    Trailing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum SamplerConfig {
    Ddpm(ddpm::Config),
    Ddim(ddim::Config),
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig::Ddpm(ddpm::Config::default())
    }
}

/// The keys a sampler's problems are reported under (`sample.sampler.*` or `eval.sampler.*`) and the
/// most steps it may take.
pub struct Keys {
    pub steps: &'static str,
    pub eta: &'static str,
    /// "1 <= steps <= diffusion.timesteps (T)", or "an integer >= 1" for a sampler shared by runs of any T.
    pub steps_allowed: String,
    pub max_steps: usize,
}

impl SamplerConfig {
    /// The number of model calls with T = `timesteps`.
    pub fn num_steps(&self, timesteps: usize) -> usize {
        match self {
            SamplerConfig::Ddpm(c) => c.num_steps(timesteps),
            SamplerConfig::Ddim(c) => c.num_steps(timesteps),
        }
    }

    /// `DDIM 50 steps eta=0` with T = `timesteps`, `DDIM eta=0` (the family) with None: the one name
    /// every report gives the sampler.
    pub fn label(&self, timesteps: Option<usize>) -> String {
        let steps = timesteps.map_or(String::new(), |t| format!(" {} steps", self.num_steps(t)));
        match self {
            SamplerConfig::Ddpm(c) => c.label(&steps),
            SamplerConfig::Ddim(c) => c.label(&steps),
        }
    }

    pub fn check(&self, keys: &Keys, check: &mut Check) {
        match self {
            SamplerConfig::Ddpm(c) => c.check(keys, check),
            SamplerConfig::Ddim(c) => c.check(keys, check),
        }
    }
}
