//! `heun`: Heun's second-order steps (Karras et al. 2022, Algorithm 1, S_churn = 0) on the discrete
//! model, over Karras et al.'s σ (eq. 5, ρ = 7) with `karras = true` (the default), as diffusers'
//! `HeunDiscreteScheduler(use_karras_sigmas=True)`. Two model calls per step except the last (an
//! Euler step into σ = 0): 2·steps − 1. Steps in `diffusion::sampler::karras`. Under the EDM
//! formulation it is Karras et al.'s Algorithm 1, or Algorithm 2 with `s_churn` > 0: at σ_i in
//! [`s_tmin`, `s_tmax`] the state is raised to σ̂ = σ_i (1 + γ), γ = min(s_churn/N, √2 − 1), by adding
//! √(σ̂² − σ_i²) `s_noise` z (`diffusion::edm`); the churn keys are EDM's only.
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
    /// Algorithm 2's S_churn, S_tmin, S_tmax (absent: ∞) and S_noise (EDM only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub s_churn: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub s_tmin: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s_tmax: Option<f64>,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub s_noise: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}
fn one() -> f64 {
    1.0
}
fn is_one(v: &f64) -> bool {
    *v == 1.0
}

impl Default for Config {
    fn default() -> Self {
        Self { steps: super::default_fast_steps(), karras: true, s_churn: 0.0, s_tmin: 0.0, s_tmax: None, s_noise: 1.0 }
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

    /// `Heun<steps>`, `Heun<steps> uniform` without Karras σ, `Heun<steps> churn=<S_churn>`.
    pub fn label(&self, steps: &str) -> String {
        let churn = if self.churns() { format!(" churn={}", self.s_churn) } else { String::new() };
        format!("Heun{steps}{}{churn}", if self.karras { "" } else { " uniform" })
    }

    /// Algorithm 2's stochastic steps are on (S_churn > 0).
    pub fn churns(&self) -> bool {
        self.s_churn > 0.0
    }

    /// Algorithm 2's S_tmax (∞ when absent).
    pub fn s_tmax(&self) -> f64 {
        self.s_tmax.unwrap_or(f64::INFINITY)
    }

    pub fn check(&self, keys: &Keys, check: &mut Check) {
        super::check_steps(self.steps, keys, check);
        let leak = |k: &'static str| keys.named(k);
        let finite_nonneg = |v: f64| v.is_finite() && v >= 0.0;
        check(finite_nonneg(self.s_churn), leak("s_churn"), self.s_churn.to_string(), "a finite s_churn >= 0");
        check(finite_nonneg(self.s_tmin), leak("s_tmin"), self.s_tmin.to_string(), "a finite s_tmin >= 0");
        if let Some(t) = self.s_tmax {
            check(t >= self.s_tmin, leak("s_tmax"), t.to_string(), &format!("s_tmax >= s_tmin ({})", self.s_tmin));
        }
        check(finite_nonneg(self.s_noise), leak("s_noise"), self.s_noise.to_string(), "a finite s_noise >= 0");
    }
}
