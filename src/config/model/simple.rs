//! `simple`: the blog recipe's SimpleUNet: GroupNorm, ReLU, max-pool down, bilinear up (858,753
//! parameters); network in `models::simple_unet`.
use super::Check;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "super::default_time_emb_dim")]
    pub time_emb_dim: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self { time_emb_dim: super::default_time_emb_dim() }
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
