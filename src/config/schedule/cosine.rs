//! `cosine` (Nichol & Dhariwal 2021): ᾱ_t = cos²(((t/T + s)/(1 + s)) π/2), β clipped to
//! [`min_beta`, `max_beta`].
use super::Check;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_s")]
    pub s: f64,
    #[serde(default = "default_max_beta")]
    pub max_beta: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_beta: Option<f64>,
}

fn default_s() -> f64 {
    0.008
}
fn default_max_beta() -> f64 {
    0.999
}

impl Default for Config {
    fn default() -> Self {
        Self { s: default_s(), max_beta: default_max_beta(), min_beta: None }
    }
}

impl Config {
    pub fn check(&self, check: &mut Check) {
        let (s, max_beta) = (self.s, self.max_beta);
        check(s >= 0.0 && s.is_finite(), "diffusion.schedule.s", s.to_string(), "a finite s >= 0");
        check(
            max_beta > 0.0 && max_beta <= 1.0,
            "diffusion.schedule.max_beta",
            max_beta.to_string(),
            "0 < max_beta <= 1",
        );
        if let Some(min) = self.min_beta {
            check(
                min > 0.0 && min < max_beta,
                "diffusion.schedule.min_beta",
                min.to_string(),
                &format!("0 < min_beta < max_beta ({max_beta})"),
            );
        }
    }
}
