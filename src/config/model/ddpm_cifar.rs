//! `ddpm_cifar`: Ho et al. 2020's CIFAR-10 model (Appendix B; 35.7M parameters); network in
//! `models::ddpm_cifar`.
use super::{positive, Check};
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
    #[serde(default = "default_ch")]
    pub ch: i64,
    #[serde(default = "default_ch_mult")]
    pub ch_mult: Vec<i64>,
    #[serde(default = "default_num_res_blocks")]
    pub num_res_blocks: i64,
    /// Image sides (in pixels) at which the residual blocks are followed by self-attention.
    #[serde(default = "default_attn_resolutions")]
    pub attn_resolutions: Vec<i64>,
    #[serde(default = "default_dropout")]
    pub dropout: f64,
}

fn default_ch() -> i64 {
    128
}
fn default_ch_mult() -> Vec<i64> {
    vec![1, 2, 2, 2]
}
fn default_num_res_blocks() -> i64 {
    2
}
fn default_attn_resolutions() -> Vec<i64> {
    vec![16]
}
fn default_dropout() -> f64 {
    0.1
}

impl Default for Config {
    fn default() -> Self {
        Self {
            learn_sigma: false,
            self_condition: false,

            ch: default_ch(),
            ch_mult: default_ch_mult(),
            num_res_blocks: default_num_res_blocks(),
            attn_resolutions: default_attn_resolutions(),
            dropout: default_dropout(),
        }
    }
}

impl Config {
    pub fn downsamplings(&self) -> u32 {
        self.ch_mult.len().saturating_sub(1) as u32
    }

    pub fn check(&self, check: &mut Check) {
        let (ch, ch_mult) = (self.ch, &self.ch_mult);
        check(positive(ch_mult), "model.ch_mult", format!("{ch_mult:?}"), "a non-empty list of positive integers");
        check(
            ch >= 32 && ch_mult.iter().all(|m| (ch * m) % 32 == 0) && ch % 2 == 0,
            "model.ch",
            ch.to_string(),
            "a width whose multiples ch·ch_mult are divisible by 32 (GroupNorm with 32 groups)",
        );
        check(self.num_res_blocks >= 1, "model.num_res_blocks", self.num_res_blocks.to_string(), "an integer >= 1");
        check((0.0..1.0).contains(&self.dropout), "model.dropout", self.dropout.to_string(), "0 <= dropout < 1");
    }
}
