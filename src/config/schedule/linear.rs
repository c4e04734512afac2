//! `linear` (Ho et al. 2020): β linear from `beta_start` to `beta_end`. With `scale_to_T`, both ends
//! are multiplied by 1000/T first, as improved-diffusion does (off by default, as in the paper).
use super::Check;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "super::default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "super::default_beta_end")]
    pub beta_end: f64,
    #[serde(default, rename = "scale_to_T", alias = "scale_to_t")]
    pub scale_to_t: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self { beta_start: super::default_beta_start(), beta_end: super::default_beta_end(), scale_to_t: false }
    }
}

impl Config {
    /// 1000/T with `scale_to_T`, else 1.
    pub fn scale(&self, timesteps: usize) -> f64 {
        if self.scale_to_t {
            1000.0 / timesteps.max(1) as f64
        } else {
            1.0
        }
    }

    pub fn check(&self, t_max: usize, check: &mut Check) {
        super::check_range(self.beta_start, self.beta_end, self.scale(t_max), check);
    }
}
