//! `unet`: the practical work's and lucidrains' U-Net (The Annotated Diffusion Model): ResNet (or
//! ConvNeXt) blocks with the time embedding as scale and shift, linear attention at each level, full
//! attention in the middle; network in `models::unet`.
use super::Check;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnetBlock {
    #[default]
    Resnet,
    Convnext,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeEmbedding {
    /// Fixed sinusoidal features of width `dim`.
    #[default]
    Sinusoidal,
    /// lucidrains' learned sinusoidal features: t and sin/cos of t times learned frequencies.
    Learned,
}

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
    #[serde(default = "default_groups")]
    pub resnet_block_groups: i64,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default)]
    pub block: UnetBlock,
    /// Width multiplier inside ConvNeXt blocks.
    #[serde(default = "default_convnext_mult")]
    pub convnext_mult: i64,
    #[serde(default)]
    pub time_embedding: TimeEmbedding,
    /// Frequencies (half the width) of the learned sinusoidal embedding.
    #[serde(default = "default_learned_sinusoidal_dim")]
    pub learned_sinusoidal_dim: i64,
    #[serde(default = "super::default_attn_heads")]
    pub attn_heads: i64,
    #[serde(default = "super::default_attn_dim_head")]
    pub attn_dim_head: i64,
}

fn default_dim_mults() -> Vec<i64> {
    vec![1, 2, 4]
}
fn default_groups() -> i64 {
    8
}
fn default_convnext_mult() -> i64 {
    2
}
fn default_learned_sinusoidal_dim() -> i64 {
    16
}

impl Default for Config {
    fn default() -> Self {
        Self {
            learn_sigma: false,
            self_condition: false,

            dim: super::default_unet_dim(),
            init_dim: None,
            dim_mults: default_dim_mults(),
            resnet_block_groups: default_groups(),
            dropout: 0.0,
            block: UnetBlock::default(),
            convnext_mult: default_convnext_mult(),
            time_embedding: TimeEmbedding::default(),
            learned_sinusoidal_dim: default_learned_sinusoidal_dim(),
            attn_heads: super::default_attn_heads(),
            attn_dim_head: super::default_attn_dim_head(),
        }
    }
}

impl Config {
    pub fn downsamplings(&self) -> u32 {
        self.dim_mults.len().saturating_sub(1) as u32
    }

    /// The width after the input convolution.
    pub fn init_width(&self) -> i64 {
        self.init_dim.unwrap_or(self.dim)
    }

    pub fn check(&self, check: &mut Check) {
        let (dim, dim_mults) = (self.dim, &self.dim_mults);
        super::check_unet_keys(dim, self.init_dim, dim_mults, self.dropout, self.attn_heads, self.attn_dim_head, check);
        let g = self.resnet_block_groups;
        let widths: Vec<i64> = std::iter::once(self.init_width()).chain(dim_mults.iter().map(|m| dim * m)).collect();
        check(
            g >= 1 && widths.iter().all(|w| w % g == 0),
            "model.resnet_block_groups",
            g.to_string(),
            &format!("a divisor of every block width {widths:?}"),
        );
        check(self.convnext_mult >= 1, "model.convnext_mult", self.convnext_mult.to_string(), "an integer >= 1");
        let lsd = self.learned_sinusoidal_dim;
        check(lsd >= 2 && lsd % 2 == 0, "model.learned_sinusoidal_dim", lsd.to_string(), "an even integer >= 2");
    }
}
