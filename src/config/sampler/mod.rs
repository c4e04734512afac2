//! The reverse-process sampler, chosen by `name`: one module per sampler with its keys (`Config`,
//! their defaults, `check`, `num_steps` and its part of the label), and this registry. Adding a
//! sampler: its `Config` module here, its steps in `diffusion::sampler`, one variant below and its
//! arm in `diffusion::sampler::sample`.
pub mod ddim;
pub mod ddpm;
pub mod dpm_solver;
pub mod euler;
pub mod euler_ancestral;
pub mod heun;
pub mod midpoint;

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
    DpmSolver(dpm_solver::Config),
    Euler(euler::Config),
    Heun(heun::Config),
    EulerAncestral(euler_ancestral::Config),
    Midpoint(midpoint::Config),
}

fn default_fast_steps() -> usize {
    20
}

fn default_true() -> bool {
    true
}

/// `steps` between 1 and the most the sampler may take.
fn check_steps(steps: usize, keys: &Keys, check: &mut Check) {
    check(steps >= 1 && steps <= keys.max_steps, keys.steps, steps.to_string(), &keys.steps_allowed);
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

impl Keys {
    /// The full key of the sampler's key `name` in this section (`sample.sampler.s_churn`, …).
    pub fn named(&self, name: &'static str) -> &'static str {
        let section = self.steps.strip_suffix("steps").unwrap_or("");
        match (section, name) {
            ("sample.sampler.", "s_churn") => "sample.sampler.s_churn",
            ("sample.sampler.", "s_tmin") => "sample.sampler.s_tmin",
            ("sample.sampler.", "s_tmax") => "sample.sampler.s_tmax",
            ("sample.sampler.", "s_noise") => "sample.sampler.s_noise",
            ("eval.sampler.", "s_churn") => "eval.sampler.s_churn",
            ("eval.sampler.", "s_tmin") => "eval.sampler.s_tmin",
            ("eval.sampler.", "s_tmax") => "eval.sampler.s_tmax",
            ("eval.sampler.", "s_noise") => "eval.sampler.s_noise",
            _ => name,
        }
    }
}

impl SamplerConfig {
    /// The `name`s of the samplers.
    pub const NAMES: [&'static str; 7] = ["ddpm", "ddim", "dpm_solver", "euler", "heun", "euler_ancestral", "midpoint"];

    pub fn name(&self) -> &'static str {
        match self {
            SamplerConfig::Ddpm(_) => "ddpm",
            SamplerConfig::Ddim(_) => "ddim",
            SamplerConfig::DpmSolver(_) => "dpm_solver",
            SamplerConfig::Euler(_) => "euler",
            SamplerConfig::Heun(_) => "heun",
            SamplerConfig::EulerAncestral(_) => "euler_ancestral",
            SamplerConfig::Midpoint(_) => "midpoint",
        }
    }

    /// The number of model calls (NFE) with T = `timesteps`; a guided batch's doubled call counts once.
    pub fn num_steps(&self, timesteps: usize) -> usize {
        match self {
            SamplerConfig::Ddpm(c) => c.num_steps(timesteps),
            SamplerConfig::Ddim(c) => c.num_steps(timesteps),
            SamplerConfig::DpmSolver(c) => c.num_steps(timesteps),
            SamplerConfig::Euler(c) => c.num_steps(timesteps),
            SamplerConfig::Heun(c) => c.num_steps(timesteps),
            SamplerConfig::EulerAncestral(c) => c.num_steps(timesteps),
            SamplerConfig::Midpoint(c) => c.num_steps(timesteps),
        }
    }

    /// The sampler as it runs on a chain of T = `timesteps`: its steps limited to T (the evaluation's
    /// sampler, shared by runs of any T, takes min(steps, T); a run's own is resolved to it at load, so
    /// that `show`, the spec and its hash say what runs).
    pub fn limited_to(&self, timesteps: usize) -> SamplerConfig {
        let mut out = self.clone();
        match &mut out {
            SamplerConfig::Ddpm(c) => c.steps = c.steps.map(|k| k.min(timesteps)),
            SamplerConfig::Ddim(c) => c.steps = c.steps.min(timesteps),
            SamplerConfig::DpmSolver(c) => c.steps = c.steps.min(timesteps),
            SamplerConfig::Euler(c) => c.steps = c.steps.min(timesteps),
            SamplerConfig::Heun(c) => c.steps = c.steps.min(timesteps),
            SamplerConfig::EulerAncestral(c) => c.steps = c.steps.min(timesteps),
            SamplerConfig::Midpoint(c) => c.steps = c.steps.min(timesteps),
        }
        out
    }

    /// The sampler's steps with T = `timesteps` (the NFE, except Heun's 2·steps − 1 and midpoint's 2·steps).
    pub fn steps(&self, timesteps: usize) -> usize {
        match self {
            SamplerConfig::Heun(c) => c.steps(timesteps),
            SamplerConfig::Midpoint(c) => c.steps(timesteps),
            other => other.num_steps(timesteps),
        }
    }

    /// `DDIM 50 steps eta=0` with T = `timesteps`, `DDIM eta=0` (the family) with None: the one name
    /// every report gives the sampler.
    pub fn label(&self, timesteps: Option<usize>) -> String {
        let steps = timesteps.map_or(String::new(), |t| format!(" {} steps", self.steps(t)));
        match self {
            SamplerConfig::Ddpm(c) => c.label(&steps),
            SamplerConfig::Ddim(c) => c.label(&steps),
            SamplerConfig::DpmSolver(c) => c.label(&steps),
            SamplerConfig::Euler(c) => c.label(&steps),
            SamplerConfig::Heun(c) => c.label(&steps),
            SamplerConfig::EulerAncestral(c) => c.label(&steps),
            SamplerConfig::Midpoint(c) => c.label(&steps),
        }
    }

    pub fn check(&self, keys: &Keys, check: &mut Check) {
        match self {
            SamplerConfig::Ddpm(c) => c.check(keys, check),
            SamplerConfig::Ddim(c) => c.check(keys, check),
            SamplerConfig::DpmSolver(c) => c.check(keys, check),
            SamplerConfig::Euler(c) => c.check(keys, check),
            SamplerConfig::Heun(c) => c.check(keys, check),
            SamplerConfig::EulerAncestral(c) => c.check(keys, check),
            SamplerConfig::Midpoint(c) => c.check(keys, check),
        }
    }
}
