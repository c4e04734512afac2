//! The practical work's and lucidrains' U-Net (denoising-diffusion-pytorch's `Unet`, as in "The
//! Annotated Diffusion Model"): a 7×7 input convolution; per level two ResNet blocks (or ConvNeXt
//! blocks), pre-normed linear attention with a residual connection, and a downsampling; in the middle
//! a block, full attention and a block; up levels mirror the down levels and concatenate the skip
//! connection before each block; a final block on [features, input features] and a 1×1 output conv.
//!
//! ResNet block: conv3×3 → GroupNorm(`resnet_block_groups`) → ·(1 + scale) + shift from the time
//! embedding → SiLU → dropout, then conv3×3 → GroupNorm → SiLU, plus a 1×1 residual projection.
//! ConvNeXt block: depthwise 7×7 conv + time projection, GroupNorm(1) → conv3×3 to mult·out → GELU →
//! GroupNorm(1) → conv3×3, plus the residual projection. Downsampling: pixel unshuffle + conv1×1;
//! upsampling: nearest ×2 + conv3×3. Sides must be multiples of 2^(levels − 1).
use super::attention::{Attention, LinearAttention};
use super::embedding::{condition, sinusoidal, ClassEmbedding, LearnedSinusoidal};
use super::{layers, Denoiser};
use crate::config::{TimeEmbedding, UnetBlock};
use tch::{nn, nn::Module, Tensor};

/// The `unet` keys of `ModelConfig`, resolved.
pub struct UnetOptions {
    pub dim: i64,
    pub init_dim: i64,
    pub dim_mults: Vec<i64>,
    pub groups: i64,
    pub dropout: f64,
    pub block: UnetBlock,
    pub convnext_mult: i64,
    pub time_embedding: TimeEmbedding,
    pub learned_sinusoidal_dim: i64,
    pub attn_heads: i64,
    pub attn_dim_head: i64,
}

impl From<&crate::config::model::unet::Config> for UnetOptions {
    fn from(c: &crate::config::model::unet::Config) -> Self {
        UnetOptions {
            dim: c.dim,
            init_dim: c.init_width(),
            dim_mults: c.dim_mults.clone(),
            groups: c.resnet_block_groups,
            dropout: c.dropout,
            block: c.block,
            convnext_mult: c.convnext_mult,
            time_embedding: c.time_embedding,
            learned_sinusoidal_dim: c.learned_sinusoidal_dim,
            attn_heads: c.attn_heads,
            attn_dim_head: c.attn_dim_head,
        }
    }
}

#[derive(Debug)]
struct ResnetBlock {
    mlp: nn::Linear,
    conv1: nn::Conv2D,
    norm1: nn::GroupNorm,
    conv2: nn::Conv2D,
    norm2: nn::GroupNorm,
    res_conv: Option<nn::Conv2D>,
    dropout: f64,
}

#[derive(Debug)]
struct ConvNextBlock {
    mlp: nn::Linear,
    ds_conv: nn::Conv2D,
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    norm2: nn::GroupNorm,
    conv2: nn::Conv2D,
    res_conv: Option<nn::Conv2D>,
}

#[derive(Debug)]
enum Block {
    Resnet(ResnetBlock),
    ConvNext(ConvNextBlock),
}

fn res_conv(p: &nn::Path, c_in: i64, c_out: i64) -> Option<nn::Conv2D> {
    (c_in != c_out).then(|| layers::conv2d(p / "res_conv", c_in, c_out, 1, 0))
}

impl Block {
    fn new(p: nn::Path, c_in: i64, c_out: i64, time_dim: i64, o: &UnetOptions) -> Self {
        match o.block {
            UnetBlock::Resnet => Block::Resnet(ResnetBlock {
                mlp: layers::linear(&p / "mlp", time_dim, 2 * c_out),
                conv1: layers::conv2d(&p / "conv1", c_in, c_out, 3, 1),
                norm1: layers::group_norm(&p / "norm1", o.groups, c_out),
                conv2: layers::conv2d(&p / "conv2", c_out, c_out, 3, 1),
                norm2: layers::group_norm(&p / "norm2", o.groups, c_out),
                res_conv: res_conv(&p, c_in, c_out),
                dropout: o.dropout,
            }),
            UnetBlock::Convnext => {
                let hidden = c_out * o.convnext_mult;
                let depthwise = nn::ConvConfig { padding: 3, groups: c_in, ..Default::default() };
                Block::ConvNext(ConvNextBlock {
                    mlp: layers::linear(&p / "mlp", time_dim, c_in),
                    ds_conv: layers::conv2d_cfg(&p / "ds_conv", c_in, c_in, 7, depthwise),
                    norm1: layers::group_norm(&p / "norm1", 1, c_in),
                    conv1: layers::conv2d(&p / "conv1", c_in, hidden, 3, 1),
                    norm2: layers::group_norm(&p / "norm2", 1, hidden),
                    conv2: layers::conv2d(&p / "conv2", hidden, c_out, 3, 1),
                    res_conv: res_conv(&p, c_in, c_out),
                })
            }
        }
    }

    fn forward(&self, x: &Tensor, temb: &Tensor, train: bool) -> Tensor {
        let residual = |rc: &Option<nn::Conv2D>| rc.as_ref().map_or_else(|| x.shallow_clone(), |c| x.apply(c));
        match self {
            Block::Resnet(b) => {
                let ss = b.mlp.forward(&temb.silu()).unsqueeze(-1).unsqueeze(-1).chunk(2, 1);
                let h = block(x, &b.conv1, &b.norm1, Some((&ss[0], &ss[1]))).dropout(b.dropout, train);
                block(&h, &b.conv2, &b.norm2, None) + residual(&b.res_conv)
            }
            Block::ConvNext(b) => {
                let h = x.apply(&b.ds_conv) + b.mlp.forward(&temb.gelu("none")).unsqueeze(-1).unsqueeze(-1);
                let h = h.apply(&b.norm1).apply(&b.conv1).gelu("none").apply(&b.norm2).apply(&b.conv2);
                h + residual(&b.res_conv)
            }
        }
    }
}

/// The practical work's `Block` (seed 002: "Conv2D -> GroupNorm -> SiLU", tested against it in
/// `tests/seeds.rs`), with the ResNet block's time scale and shift between the norm and the SiLU.
pub fn block(x: &Tensor, conv: &nn::Conv2D, norm: &nn::GroupNorm, scale_shift: Option<(&Tensor, &Tensor)>) -> Tensor {
    let h = x.apply(conv).apply(norm);
    match scale_shift {
        Some((scale, shift)) => (h * (scale + 1.0) + shift).silu(),
        None => h.silu(),
    }
}

/// x + f(GroupNorm(1)(x)).
#[derive(Debug)]
struct PreNormResidual<F: Module> {
    norm: nn::GroupNorm,
    f: F,
}

impl<F: Module> PreNormResidual<F> {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.f.forward(&x.apply(&self.norm)) + x
    }
}

fn pre_norm<F: Module>(p: &nn::Path, dim: i64, f: F) -> PreNormResidual<F> {
    PreNormResidual { norm: layers::group_norm(p / "norm", 1, dim), f }
}

/// Between levels (also lucidrains' `Downsample`/`Upsample`, used by `lucidrains.rs`).
#[derive(Debug)]
pub(super) enum Resample {
    /// Pixel unshuffle (space to depth) then conv1×1.
    Down(nn::Conv2D),
    /// Nearest-neighbour ×2 then conv3×3.
    Up(nn::Conv2D),
    /// conv3×3 at the same size (the last level).
    Same(nn::Conv2D),
}

impl Resample {
    pub(super) fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Resample::Down(c) => x.pixel_unshuffle(2).apply(c),
            Resample::Up(c) => {
                let s = x.size();
                x.upsample_nearest2d([s[2] * 2, s[3] * 2], None, None).apply(c)
            }
            Resample::Same(c) => x.apply(c),
        }
    }
}

#[derive(Debug)]
struct Level {
    block1: Block,
    block2: Block,
    attn: PreNormResidual<LinearAttention>,
    resample: Resample,
}

#[derive(Debug)]
enum TimeFeatures {
    Sinusoidal(i64),
    Learned(LearnedSinusoidal),
}

#[derive(Debug)]
pub struct Unet {
    classes: Option<ClassEmbedding>,
    time_features: TimeFeatures,
    time_mlp1: nn::Linear,
    time_mlp2: nn::Linear,
    init_conv: nn::Conv2D,
    down: Vec<Level>,
    mid_block1: Block,
    mid_attn: PreNormResidual<Attention>,
    mid_block2: Block,
    up: Vec<Level>,
    final_block: Block,
    final_conv: nn::Conv2D,
}

impl Unet {
    pub fn new(p: &nn::Path, (c_in, c_out): (i64, i64), o: &UnetOptions, classes: Option<i64>) -> Self {
        let time_dim = 4 * o.dim;
        let (time_features, fourier_dim) = match o.time_embedding {
            TimeEmbedding::Sinusoidal => (TimeFeatures::Sinusoidal(o.dim), o.dim),
            TimeEmbedding::Learned => (
                TimeFeatures::Learned(LearnedSinusoidal::new(p / "time_mlp" / "learned", o.learned_sinusoidal_dim)),
                o.learned_sinusoidal_dim + 1,
            ),
        };
        let dims: Vec<i64> = std::iter::once(o.init_dim).chain(o.dim_mults.iter().map(|m| o.dim * m)).collect();
        let in_out: Vec<(i64, i64)> = dims.windows(2).map(|w| (w[0], w[1])).collect();
        let n = in_out.len();
        let lin_attn =
            |p: nn::Path, d: i64| pre_norm(&p, d, LinearAttention::new(&p / "fn", d, o.attn_heads, o.attn_dim_head));
        let down = in_out
            .iter()
            .enumerate()
            .map(|(i, &(d_in, d_out))| {
                let lp = p / "down" / i;
                let resample = if i + 1 < n {
                    Resample::Down(layers::conv2d(&lp / "downsample", 4 * d_in, d_out, 1, 0))
                } else {
                    Resample::Same(layers::conv2d(&lp / "downsample", d_in, d_out, 3, 1))
                };
                Level {
                    block1: Block::new(&lp / "block1", d_in, d_in, time_dim, o),
                    block2: Block::new(&lp / "block2", d_in, d_in, time_dim, o),
                    attn: lin_attn(&lp / "attn", d_in),
                    resample,
                }
            })
            .collect();
        let mid = *dims.last().expect("at least one level");
        let up = in_out
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &(d_in, d_out))| {
                let lp = p / "up" / i;
                let resample = if i + 1 < n {
                    Resample::Up(layers::conv2d(&lp / "upsample", d_out, d_in, 3, 1))
                } else {
                    Resample::Same(layers::conv2d(&lp / "upsample", d_out, d_in, 3, 1))
                };
                Level {
                    block1: Block::new(&lp / "block1", d_out + d_in, d_out, time_dim, o),
                    block2: Block::new(&lp / "block2", d_out + d_in, d_out, time_dim, o),
                    attn: lin_attn(&lp / "attn", d_out),
                    resample,
                }
            })
            .collect();
        let mid_attn_p = p / "mid_attn";
        Self {
            classes: classes.map(|k| ClassEmbedding::new(p, k, time_dim)),
            time_features,
            time_mlp1: layers::linear(p / "time_mlp" / "linear1", fourier_dim, time_dim),
            time_mlp2: layers::linear(p / "time_mlp" / "linear2", time_dim, time_dim),
            init_conv: layers::conv2d(p / "init_conv", c_in, o.init_dim, 7, 3),
            down,
            mid_block1: Block::new(p / "mid_block1", mid, mid, time_dim, o),
            mid_attn: pre_norm(
                &mid_attn_p,
                mid,
                Attention::new(&mid_attn_p / "fn", mid, o.attn_heads, o.attn_dim_head),
            ),
            mid_block2: Block::new(p / "mid_block2", mid, mid, time_dim, o),
            up,
            final_block: Block::new(p / "final_block", 2 * o.init_dim, o.init_dim, time_dim, o),
            final_conv: layers::conv2d(p / "final_conv", o.init_dim, c_out, 1, 0),
        }
    }
}

impl Denoiser for Unet {
    fn forward_t(&self, x: &Tensor, t: &Tensor, class_labels: Option<&Tensor>, train: bool) -> Tensor {
        let features = match &self.time_features {
            TimeFeatures::Sinusoidal(dim) => sinusoidal(t, *dim),
            TimeFeatures::Learned(l) => l.forward(t),
        };
        let temb = self.time_mlp2.forward(&self.time_mlp1.forward(&features).gelu("none"));
        let temb = condition(&self.classes, temb, class_labels);
        let mut h = x.apply(&self.init_conv);
        let r = h.shallow_clone();
        let mut skips = Vec::with_capacity(2 * self.down.len());
        for level in &self.down {
            h = level.block1.forward(&h, &temb, train);
            skips.push(h.shallow_clone());
            h = level.attn.forward(&level.block2.forward(&h, &temb, train));
            skips.push(h.shallow_clone());
            h = level.resample.forward(&h);
        }
        h = self.mid_block1.forward(&h, &temb, train);
        h = self.mid_attn.forward(&h);
        h = self.mid_block2.forward(&h, &temb, train);
        for level in &self.up {
            h = level.block1.forward(&Tensor::cat(&[&h, &skips.pop().expect("skip")], 1), &temb, train);
            h = level.block2.forward(&Tensor::cat(&[&h, &skips.pop().expect("skip")], 1), &temb, train);
            h = level.resample.forward(&level.attn.forward(&h));
        }
        self.final_block.forward(&Tensor::cat(&[h, r], 1), &temb, train).apply(&self.final_conv)
    }
}
