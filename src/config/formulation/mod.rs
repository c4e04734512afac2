//! The formulation of the generative process, chosen by `name`: DDPM's discrete Markov chain (the
//! default: `diffusion.schedule`, `target`, `variance`, … apply), Karras et al.'s EDM (σ-parameterised,
//! preconditioned) or flow matching / rectified flow (a linear path and its velocity). One module per
//! formulation with its keys (`Config`, defaults, `check`) and the samplers it takes; the math lives in
//! `diffusion::edm` and `diffusion::flow`, reached through `diffusion::formulation`. Adding one: its
//! module here, one variant below, its math in `diffusion` with one arm in `diffusion::formulation::of`.
//!
//! What the network sees as its time input (every model embeds a float "timestep" built for
//! t ∈ [0, 1000)): DDPM the index t; EDM 1000·c_noise = 250 ln σ (c_noise = ln σ / 4, Karras et al.
//! Table 1); flow 1000·t (Stable Diffusion 3's and diffusers' `timesteps = σ · 1000`).
pub mod edm;
pub mod flow;

pub use super::model::Check;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DdpmConfig {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum FormulationConfig {
    Ddpm(DdpmConfig),
    Edm(edm::Config),
    Flow(flow::Config),
}

impl Default for FormulationConfig {
    fn default() -> Self {
        FormulationConfig::Ddpm(DdpmConfig {})
    }
}

impl FormulationConfig {
    pub const NAMES: [&'static str; 3] = ["ddpm", "edm", "flow"];

    pub fn name(&self) -> &'static str {
        match self {
            FormulationConfig::Ddpm(_) => "ddpm",
            FormulationConfig::Edm(_) => "edm",
            FormulationConfig::Flow(_) => "flow",
        }
    }

    /// DDPM, the default (absent from a run's identity, so DDPM runs keep their configuration).
    pub fn is_ddpm(&self) -> bool {
        matches!(self, FormulationConfig::Ddpm(_))
    }

    /// The `sample.sampler` / `eval.sampler` names this formulation can sample with.
    pub fn samplers(&self) -> &'static [&'static str] {
        match self {
            FormulationConfig::Ddpm(_) => &["ddpm", "ddim", "dpm_solver", "euler", "heun", "euler_ancestral"],
            FormulationConfig::Edm(_) => edm::SAMPLERS,
            FormulationConfig::Flow(_) => flow::SAMPLERS,
        }
    }

    pub fn check(&self, check: &mut Check) {
        match self {
            FormulationConfig::Ddpm(_) => {}
            FormulationConfig::Edm(c) => c.check(check),
            FormulationConfig::Flow(c) => c.check(check),
        }
    }
}

/// A finite number, for the keys' checks.
fn finite(v: f64) -> bool {
    v.is_finite()
}
