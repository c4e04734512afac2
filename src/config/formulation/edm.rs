//! `edm` (Karras et al. 2022, "Elucidating the design space of diffusion-based generative models"):
//! x = x_0 + σ n; the network F sees c_in x at time 1000·c_noise and the denoiser is
//! D(x; σ) = c_skip x + c_out F, with c_skip = σ_d²/(σ² + σ_d²), c_out = σ σ_d/√(σ² + σ_d²),
//! c_in = 1/√(σ² + σ_d²), c_noise = ln(σ)/4 (Table 1). Training draws ln σ ~ N(P_mean, P_std²) and
//! minimises λ(σ) ‖D − x_0‖² with λ = (σ² + σ_d²)/(σ σ_d)². Sampling: Heun (Algorithm 1, or 2 with
//! `s_churn` > 0) or Euler over σ_i = (σ_max^{1/ρ} + i/(N − 1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, σ_N = 0.
use super::{finite, Check};
use serde::{Deserialize, Serialize};

/// The samplers EDM takes: Euler and Heun on its σ (`heun`'s `s_churn` … give Algorithm 2).
pub const SAMPLERS: &[&str] = &["euler", "heun"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Mean of ln σ in training.
    #[serde(default = "default_p_mean")]
    pub p_mean: f64,
    /// Standard deviation of ln σ in training.
    #[serde(default = "default_p_std")]
    pub p_std: f64,
    /// σ_data, the data's standard deviation the preconditioning assumes.
    #[serde(default = "default_sigma_data")]
    pub sigma_data: f64,
    /// The sampler's smallest and largest σ, and ρ of its σ schedule.
    #[serde(default = "default_sigma_min")]
    pub sigma_min: f64,
    #[serde(default = "default_sigma_max")]
    pub sigma_max: f64,
    #[serde(default = "default_rho")]
    pub rho: f64,
}

fn default_p_mean() -> f64 {
    -1.2
}
fn default_p_std() -> f64 {
    1.2
}
fn default_sigma_data() -> f64 {
    0.5
}
fn default_sigma_min() -> f64 {
    0.002
}
fn default_sigma_max() -> f64 {
    80.0
}
fn default_rho() -> f64 {
    7.0
}

impl Default for Config {
    fn default() -> Self {
        Self {
            p_mean: default_p_mean(),
            p_std: default_p_std(),
            sigma_data: default_sigma_data(),
            sigma_min: default_sigma_min(),
            sigma_max: default_sigma_max(),
            rho: default_rho(),
        }
    }
}

impl Config {
    pub fn check(&self, check: &mut Check) {
        let c = self;
        check(finite(c.p_mean), "diffusion.formulation.p_mean", c.p_mean.to_string(), "a finite number");
        check(
            finite(c.p_std) && c.p_std > 0.0,
            "diffusion.formulation.p_std",
            c.p_std.to_string(),
            "a finite p_std > 0",
        );
        check(
            finite(c.sigma_data) && c.sigma_data > 0.0,
            "diffusion.formulation.sigma_data",
            c.sigma_data.to_string(),
            "a finite sigma_data > 0",
        );
        check(
            finite(c.sigma_min) && c.sigma_min > 0.0,
            "diffusion.formulation.sigma_min",
            c.sigma_min.to_string(),
            "a finite sigma_min > 0",
        );
        check(
            finite(c.sigma_max) && c.sigma_max > c.sigma_min,
            "diffusion.formulation.sigma_max",
            c.sigma_max.to_string(),
            &format!("a finite sigma_max > sigma_min ({})", c.sigma_min),
        );
        check(finite(c.rho) && c.rho > 0.0, "diffusion.formulation.rho", c.rho.to_string(), "a finite rho > 0");
    }
}
