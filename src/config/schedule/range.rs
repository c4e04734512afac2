//! The keys of schedules given by their two ends, β_1 = `beta_start` and β_T = `beta_end`
//! (`quadratic`, `sigmoid`).
use super::Check;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "super::default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "super::default_beta_end")]
    pub beta_end: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self { beta_start: super::default_beta_start(), beta_end: super::default_beta_end() }
    }
}

impl Config {
    pub fn check(&self, check: &mut Check) {
        super::check_range(self.beta_start, self.beta_end, 1.0, check);
    }
}
