//! `simple`: the blog recipe's SimpleUNet: GroupNorm, ReLU, max-pool down, bilinear up (858,753
//! parameters); network in `models::simple_unet`.
use super::Check;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Output 2·C channels, the second half v setting log Σ = v' log β_t + (1 − v') log β̃_t with
    /// v' = (v + 1)/2 (Nichol & Dhariwal 2021 §3.1; improved-diffusion's `LEARNED_RANGE`).
    #[serde(default)]
    pub learn_sigma: bool,
    /// Self-conditioning (Chen et al. 2022): C more input channels carrying the model's own x̂_0.
    #[serde(default)]
    pub self_condition: bool,
    #[serde(default = "super::default_time_emb_dim")]
    pub time_emb_dim: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self { learn_sigma: false, self_condition: false, time_emb_dim: super::default_time_emb_dim() }
    }
}

impl Config {
    pub fn downsamplings(&self) -> u32 {
        3
    }

    pub fn check(&self, check: &mut Check) {
        super::check_time_emb_dim(self.time_emb_dim, check);
    }
}
