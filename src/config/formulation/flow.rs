//! `flow`: flow matching / rectified flow (Lipman et al. 2023, Liu et al. 2023), with t = 1 noise and
//! t = 0 data as Stable Diffusion 3 and diffusers count: x_t = (1 − t) x_0 + (σ_min + (1 − σ_min) t) ε
//! (σ_min = 0: the straight path of rectified flow), the network predicts the velocity
//! v = dx_t/dt = (1 − σ_min) ε − x_0 under the mse. Training t: uniform on (0, 1), or logit-normal
//! (t = sigmoid(m + s n), SD3's default m = 0, s = 1). Sampling integrates dx/dt = v from t = 1 to 0
//! with Euler, Heun (its last step Euler, as diffusers' flow-matching Heun) or the midpoint rule, on
//! diffusers' `FlowMatchEulerDiscreteScheduler` grid with SD3's shift t' = s t/(1 + (s − 1) t).
use super::{finite, Check};
use serde::{Deserialize, Serialize};

/// The samplers flow matching takes.
pub const SAMPLERS: &[&str] = &["euler", "heun", "midpoint"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeSampling {
    Uniform,
    LogitNormal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// σ_min of the path (Lipman et al.'s conditional OT path); 0 is rectified flow's straight path.
    #[serde(default)]
    pub sigma_min: f64,
    /// How training draws t.
    #[serde(default = "default_time_sampling")]
    pub time_sampling: TimeSampling,
    /// Location m and scale s of logit-normal t.
    #[serde(default)]
    pub location: f64,
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// SD3's time shift of the sampling grid (1: none).
    #[serde(default = "default_shift")]
    pub shift: f64,
}

fn default_time_sampling() -> TimeSampling {
    TimeSampling::LogitNormal
}
fn default_scale() -> f64 {
    1.0
}
fn default_shift() -> f64 {
    1.0
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sigma_min: 0.0,
            time_sampling: default_time_sampling(),
            location: 0.0,
            scale: default_scale(),
            shift: default_shift(),
        }
    }
}

impl Config {
    pub fn check(&self, check: &mut Check) {
        let c = self;
        check(
            finite(c.sigma_min) && (0.0..1.0).contains(&c.sigma_min),
            "diffusion.formulation.sigma_min",
            c.sigma_min.to_string(),
            "0 <= sigma_min < 1",
        );
        check(finite(c.location), "diffusion.formulation.location", c.location.to_string(), "a finite number");
        check(
            finite(c.scale) && c.scale > 0.0,
            "diffusion.formulation.scale",
            c.scale.to_string(),
            "a finite scale > 0",
        );
        check(
            finite(c.shift) && c.shift > 0.0,
            "diffusion.formulation.shift",
            c.shift.to_string(),
            "a finite shift > 0",
        );
    }
}
