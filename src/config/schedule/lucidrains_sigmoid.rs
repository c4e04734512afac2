//! `lucidrains_sigmoid`: lucidrains' `sigmoid_beta_schedule` (Jabri et al. 2022, Fig. 8), the default
//! of denoising-diffusion-pytorch's `GaussianDiffusion` and so of seed 001: ᾱ(τ) ∝ σ(end/τ_s) −
//! σ((τ(end − start) + start)/τ_s) for τ = t/T, normalised to ᾱ(0) = 1, β clipped to [0, 0.999].
use super::Check;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_start")]
    pub start: f64,
    #[serde(default = "default_end")]
    pub end: f64,
    #[serde(default = "default_tau")]
    pub tau: f64,
}

fn default_start() -> f64 {
    -3.0
}
fn default_end() -> f64 {
    3.0
}
fn default_tau() -> f64 {
    1.0
}

impl Default for Config {
    fn default() -> Self {
        Self { start: default_start(), end: default_end(), tau: default_tau() }
    }
}

impl Config {
    pub fn check(&self, check: &mut Check) {
        let (start, end, tau) = (self.start, self.end, self.tau);
        check(
            start < end && start.is_finite() && end.is_finite(),
            "diffusion.schedule.end",
            end.to_string(),
            &format!("a finite end > start ({start})"),
        );
        check(tau > 0.0 && tau.is_finite(), "diffusion.schedule.tau", tau.to_string(), "a finite tau > 0");
    }
}
