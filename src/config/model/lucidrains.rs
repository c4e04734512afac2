//! `lucidrains`: lucidrains' `Unet` of denoising-diffusion-pytorch 2.3.4 as seed 001 builds it
//! (`Unet(dim=64, dim_mults=(1, 2, 4, 8), flash_attn=True)`): RMSNorm ResNet blocks, linear attention
//! with memory key/values, full attention at the innermost level and the middle; network in
//! `models::lucidrains`.
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
    #[serde(default = "super::default_unet_dim")]
    pub dim: i64,
    /// Width after the 7×7 input convolution (default: `dim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_dim: Option<i64>,
    #[serde(default = "default_dim_mults")]
    pub dim_mults: Vec<i64>,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "super::default_attn_heads")]
    pub attn_heads: i64,
    #[serde(default = "super::default_attn_dim_head")]
    pub attn_dim_head: i64,
    /// Full (true) or linear attention per level (default: full at the innermost level only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_attn: Option<Vec<bool>>,
    /// Full attention through `scaled_dot_product_attention` (the seed's `flash_attn=True`), off
    /// through the explicit softmax(q·kᵀ/√d)·v: the same function, another kernel.
    #[serde(default = "default_true")]
    pub flash_attn: bool,
}

fn default_dim_mults() -> Vec<i64> {
    vec![1, 2, 4, 8]
}
fn default_true() -> bool {
    true
}

impl Default for Config {
    fn default() -> Self {
        Self {
            learn_sigma: false,
            self_condition: false,

            dim: super::default_unet_dim(),
            init_dim: None,
            dim_mults: default_dim_mults(),
            dropout: 0.0,
            attn_heads: super::default_attn_heads(),
            attn_dim_head: super::default_attn_dim_head(),
            full_attn: None,
            flash_attn: true,
        }
    }
}

impl Config {
    pub fn downsamplings(&self) -> u32 {
        self.dim_mults.len().saturating_sub(1) as u32
    }

    /// Full attention per level: `full_attn`, or at the innermost level only.
    pub fn full_attention(&self) -> Vec<bool> {
        let levels = self.dim_mults.len();
        self.full_attn.clone().unwrap_or_else(|| (0..levels).map(|i| i + 1 == levels).collect())
    }

    pub fn check(&self, check: &mut Check) {
        let dim_mults = &self.dim_mults;
        super::check_unet_keys(
            self.dim,
            self.init_dim,
            dim_mults,
            self.dropout,
            self.attn_heads,
            self.attn_dim_head,
            check,
        );
        if let Some(f) = &self.full_attn {
            check(
                f.len() == dim_mults.len(),
                "model.full_attn",
                format!("{f:?}"),
                &format!("one true/false per level: {} values, as many as model.dim_mults", dim_mults.len()),
            );
        }
    }
}
