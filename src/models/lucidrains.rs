//! lucidrains' `Unet` of `denoising-diffusion-pytorch` 2.3.4 (PyPI), the model seed 001 builds as
//! `Unet(dim=64, dim_mults=(1, 2, 4, 8), flash_attn=True)`; parameter names are the package's
//! `state_dict` keys, so its weights load here unchanged (and the test in `tests/seeds.rs` copies ours
//! into the package's module and compares the outputs).
//!
//! - Time: sinusoidal(dim) → Linear(dim, 4·dim) → GELU → Linear(4·dim, 4·dim).
//! - A 7×7 input convolution to `init_dim` (default `dim`) channels, kept as `r` for the end.
//! - Down levels, widths `[init_dim, dim·m for m in dim_mults]`: two ResNet blocks at the level's
//!   input width, attention with a residual, then Downsample (pixel unshuffle 2×2 + 1×1 conv) to the
//!   next width, or a 3×3 conv at the last level. Both blocks' outputs are skip connections.
//! - Middle: block, full attention (residual), block.
//! - Up levels mirror them: concatenate a skip and a block, twice, attention, then Upsample (nearest
//!   2× + 3×3 conv), or a 3×3 conv at the last level; then concatenate `r`, a final block, a 1×1 conv.
//! - ResNet block: Block(conv3×3 → RMSNorm → ·(scale + 1) + shift from Linear(SiLU(t)) → SiLU →
//!   dropout), Block(conv3×3 → RMSNorm → SiLU), plus a 1×1 conv of the input when widths differ.
//! - RMSNorm: x / max(‖x‖₂ over channels, 1e-12) · g · √C (`F.normalize`).
//! - Attention: full softmax attention (at the last level and in the middle; `full_attn` defaults to
//!   innermost only) or linear attention elsewhere, both pre-normed with RMSNorm, with 4 learned
//!   memory key/value pairs prepended per head; linear attention's output conv is followed by RMSNorm.
//!   `flash_attn` computes full attention with `scaled_dot_product_attention`, off with the explicit
//!   softmax(q·kᵀ·d^−½)·v; both are the same function.
//!
//! Left out (package options the seed does not use): self-conditioning, learned variance, learned or
//! random Fourier time features. Class conditioning (not in the package) adds a learned class vector
//! to the time MLP's output for class-conditional runs.
use super::embedding::{sinusoidal, ClassEmbedding};
use super::unet::Resample;
use super::{layers, Denoiser};
use tch::{nn, nn::Module, Kind, Tensor};

/// The `lucidrains` keys of `ModelConfig`, resolved.
pub struct LucidrainsOptions {
    pub dim: i64,
    pub init_dim: i64,
    pub dim_mults: Vec<i64>,
    pub dropout: f64,
    pub attn_heads: i64,
    pub attn_dim_head: i64,
    /// Full (true) or linear attention per level.
    pub full_attn: Vec<bool>,
    pub flash_attn: bool,
}

impl From<&crate::config::model::lucidrains::Config> for LucidrainsOptions {
    fn from(c: &crate::config::model::lucidrains::Config) -> Self {
        LucidrainsOptions {
            dim: c.dim,
            init_dim: c.init_dim.unwrap_or(c.dim),
            dim_mults: c.dim_mults.clone(),
            dropout: c.dropout,
            attn_heads: c.attn_heads,
            attn_dim_head: c.attn_dim_head,
            full_attn: c.full_attention(),
            flash_attn: c.flash_attn,
        }
    }
}

/// Memory key/value pairs per attention head (the package's `num_mem_kv`).
const MEM_KV: i64 = 4;

#[derive(Debug)]
struct RmsNorm {
    g: Tensor,
    scale: f64,
}

impl RmsNorm {
    fn new(p: nn::Path, dim: i64) -> Self {
        Self { g: p.var("g", &[1, dim, 1, 1], nn::Init::Const(1.0)), scale: (dim as f64).sqrt() }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let norm = x.norm_scalaropt_dim(2, [1i64].as_slice(), true).clamp_min(1e-12);
        x / norm * &self.g * self.scale
    }
}

#[derive(Debug)]
struct Block {
    proj: nn::Conv2D,
    norm: RmsNorm,
    dropout: f64,
}

impl Block {
    fn new(p: nn::Path, c_in: i64, c_out: i64, dropout: f64) -> Self {
        Self { proj: layers::conv2d(&p / "proj", c_in, c_out, 3, 1), norm: RmsNorm::new(&p / "norm", c_out), dropout }
    }

    fn forward(&self, x: &Tensor, scale_shift: Option<(&Tensor, &Tensor)>, train: bool) -> Tensor {
        let mut h = self.norm.forward(&x.apply(&self.proj));
        if let Some((scale, shift)) = scale_shift {
            h = h * (scale + 1.0) + shift;
        }
        h.silu().dropout(self.dropout, train)
    }
}

#[derive(Debug)]
struct ResnetBlock {
    mlp: nn::Linear,
    block1: Block,
    block2: Block,
    res_conv: Option<nn::Conv2D>,
}

impl ResnetBlock {
    fn new(p: nn::Path, c_in: i64, c_out: i64, time_dim: i64, dropout: f64) -> Self {
        Self {
            mlp: layers::linear(&p / "mlp" / 1, time_dim, 2 * c_out),
            block1: Block::new(&p / "block1", c_in, c_out, dropout),
            block2: Block::new(&p / "block2", c_out, c_out, 0.0),
            res_conv: (c_in != c_out).then(|| layers::conv2d(&p / "res_conv", c_in, c_out, 1, 0)),
        }
    }

    fn forward(&self, x: &Tensor, temb: &Tensor, train: bool) -> Tensor {
        let ss = self.mlp.forward(&temb.silu()).unsqueeze(-1).unsqueeze(-1).chunk(2, 1);
        let h = self.block1.forward(x, Some((&ss[0], &ss[1])), train);
        let h = self.block2.forward(&h, None, train);
        match &self.res_conv {
            Some(c) => h + x.apply(c),
            None => h + x,
        }
    }
}

/// Full softmax attention with memory key/values (the package's `Attention`).
#[derive(Debug)]
struct FullAttention {
    heads: i64,
    flash: bool,
    norm: RmsNorm,
    mem_kv: Tensor,
    to_qkv: nn::Conv2D,
    to_out: nn::Conv2D,
}

/// Linear attention with memory key/values (the package's `LinearAttention`).
#[derive(Debug)]
struct LinearAttention {
    heads: i64,
    scale: f64,
    norm: RmsNorm,
    mem_kv: Tensor,
    to_qkv: nn::Conv2D,
    to_out: nn::Conv2D,
    out_norm: RmsNorm,
}

#[derive(Debug)]
enum Attn {
    Full(FullAttention),
    Linear(LinearAttention),
}

fn qkv_conv(p: &nn::Path, dim: i64, hidden: i64) -> nn::Conv2D {
    layers::conv2d_cfg(p / "to_qkv", dim, hidden * 3, 1, nn::ConvConfig { bias: false, ..Default::default() })
}

impl Attn {
    fn new(p: nn::Path, dim: i64, heads: i64, dim_head: i64, full: bool, flash: bool) -> Self {
        let hidden = heads * dim_head;
        let randn = nn::Init::Randn { mean: 0.0, stdev: 1.0 };
        if full {
            Attn::Full(FullAttention {
                heads,
                flash,
                norm: RmsNorm::new(&p / "norm", dim),
                mem_kv: p.var("mem_kv", &[2, heads, MEM_KV, dim_head], randn),
                to_qkv: qkv_conv(&p, dim, hidden),
                to_out: layers::conv2d(&p / "to_out", hidden, dim, 1, 0),
            })
        } else {
            Attn::Linear(LinearAttention {
                heads,
                scale: (dim_head as f64).powf(-0.5),
                norm: RmsNorm::new(&p / "norm", dim),
                mem_kv: p.var("mem_kv", &[2, heads, dim_head, MEM_KV], randn),
                to_qkv: qkv_conv(&p, dim, hidden),
                to_out: layers::conv2d(&p / "to_out" / 0, hidden, dim, 1, 0),
                out_norm: RmsNorm::new(&p / "to_out" / 1, dim),
            })
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let (b, n) = (s[0], s[2] * s[3]);
        match self {
            Attn::Full(a) => {
                let qkv = a.to_qkv.forward(&a.norm.forward(x)).chunk(3, 1);
                // 'b (h c) x y -> b h (x y) c'
                let heads = |t: &Tensor| t.reshape([b, a.heads, -1, n]).transpose(-1, -2);
                let (q, k, v) = (heads(&qkv[0]), heads(&qkv[1]), heads(&qkv[2]));
                let mem = |i: i64| a.mem_kv.get(i).unsqueeze(0).expand([b, -1, -1, -1], false);
                let k = Tensor::cat(&[mem(0), k], -2);
                let v = Tensor::cat(&[mem(1), v], -2);
                let out = if a.flash {
                    super::deterministic::attention(&q.contiguous(), &k.contiguous(), &v.contiguous())
                } else {
                    super::deterministic::math_attention(&q, &k, &v)
                };
                // 'b h (x y) d -> b (h d) x y'
                a.to_out.forward(&out.transpose(-1, -2).reshape([b, -1, s[2], s[3]]))
            }
            Attn::Linear(a) => {
                let qkv = a.to_qkv.forward(&a.norm.forward(x)).chunk(3, 1);
                // 'b (h c) x y -> b h c (x y)'
                let heads = |t: &Tensor| t.reshape([b, a.heads, -1, n]);
                let mem = |i: i64| a.mem_kv.get(i).unsqueeze(0).expand([b, -1, -1, -1], false);
                let q = heads(&qkv[0]).softmax(-2, Kind::Float) * a.scale;
                let k = Tensor::cat(&[mem(0), heads(&qkv[1])], -1).softmax(-1, Kind::Float);
                let v = Tensor::cat(&[mem(1), heads(&qkv[2])], -1);
                let context = k.matmul(&v.transpose(-1, -2)); // b h d e
                let out = context.transpose(-1, -2).matmul(&q); // b h e n
                a.out_norm.forward(&a.to_out.forward(&out.reshape([b, -1, s[2], s[3]])))
            }
        }
    }
}

#[derive(Debug)]
struct Level {
    block1: ResnetBlock,
    block2: ResnetBlock,
    attn: Attn,
    resample: Resample,
}

#[derive(Debug)]
pub struct LucidrainsUnet {
    dim: i64,
    classes: Option<ClassEmbedding>,
    init_conv: nn::Conv2D,
    time1: nn::Linear,
    time2: nn::Linear,
    downs: Vec<Level>,
    mid_block1: ResnetBlock,
    mid_attn: Attn,
    mid_block2: ResnetBlock,
    ups: Vec<Level>,
    final_res_block: ResnetBlock,
    final_conv: nn::Conv2D,
}

impl LucidrainsUnet {
    pub fn new(p: &nn::Path, (c_in, c_out): (i64, i64), o: &LucidrainsOptions, classes: Option<i64>) -> Self {
        let time_dim = o.dim * 4;
        let mut dims = vec![o.init_dim];
        dims.extend(o.dim_mults.iter().map(|m| o.dim * m));
        let in_out: Vec<(i64, i64)> = dims.windows(2).map(|w| (w[0], w[1])).collect();
        let levels = in_out.len();
        let (heads, dim_head, dropout) = (o.attn_heads, o.attn_dim_head, o.dropout);
        let block = |p: nn::Path, a: i64, b: i64| ResnetBlock::new(p, a, b, time_dim, dropout);
        let downs = in_out
            .iter()
            .enumerate()
            .map(|(i, &(d_in, d_out))| {
                let q = p / "downs" / i;
                let last = i + 1 == levels;
                Level {
                    block1: block(&q / 0, d_in, d_in),
                    block2: block(&q / 1, d_in, d_in),
                    attn: Attn::new(&q / 2, d_in, heads, dim_head, o.full_attn[i], o.flash_attn),
                    resample: if last {
                        Resample::Same(layers::conv2d(&q / 3, d_in, d_out, 3, 1))
                    } else {
                        Resample::Down(layers::conv2d(&q / 3 / 1, d_in * 4, d_out, 1, 0))
                    },
                }
            })
            .collect();
        let mid = *dims.last().expect("at least one width");
        let ups = in_out
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &(d_in, d_out))| {
                let q = p / "ups" / i;
                let last = i + 1 == levels;
                Level {
                    block1: block(&q / 0, d_out + d_in, d_out),
                    block2: block(&q / 1, d_out + d_in, d_out),
                    attn: Attn::new(&q / 2, d_out, heads, dim_head, o.full_attn[levels - 1 - i], o.flash_attn),
                    resample: if last {
                        Resample::Same(layers::conv2d(&q / 3, d_out, d_in, 3, 1))
                    } else {
                        Resample::Up(layers::conv2d(&q / 3 / 1, d_out, d_in, 3, 1))
                    },
                }
            })
            .collect();
        Self {
            dim: o.dim,
            classes: classes.map(|k| ClassEmbedding::new(p, k, time_dim)),
            init_conv: layers::conv2d(p / "init_conv", c_in, o.init_dim, 7, 3),
            time1: layers::linear(p / "time_mlp" / 1, o.dim, time_dim),
            time2: layers::linear(p / "time_mlp" / 3, time_dim, time_dim),
            downs,
            mid_block1: block(p / "mid_block1", mid, mid),
            mid_attn: Attn::new(p / "mid_attn", mid, heads, dim_head, true, o.flash_attn),
            mid_block2: block(p / "mid_block2", mid, mid),
            ups,
            final_res_block: block(p / "final_res_block", o.init_dim * 2, o.init_dim),
            final_conv: layers::conv2d(p / "final_conv", o.init_dim, c_out, 1, 0),
        }
    }
}

impl Denoiser for LucidrainsUnet {
    fn forward_t(&self, x: &Tensor, t: &Tensor, class_labels: Option<&Tensor>, train: bool) -> Tensor {
        let mut x = x.apply(&self.init_conv);
        let r = x.shallow_clone();
        let temb = self.time2.forward(&self.time1.forward(&sinusoidal(t, self.dim)).gelu("none"));
        let temb = super::embedding::condition(&self.classes, temb, class_labels);
        let mut skips = Vec::with_capacity(2 * self.downs.len());
        for level in &self.downs {
            x = level.block1.forward(&x, &temb, train);
            skips.push(x.shallow_clone());
            x = level.block2.forward(&x, &temb, train);
            x = level.attn.forward(&x) + x;
            skips.push(x.shallow_clone());
            x = level.resample.forward(&x);
        }
        x = self.mid_block1.forward(&x, &temb, train);
        x = self.mid_attn.forward(&x) + x;
        x = self.mid_block2.forward(&x, &temb, train);
        for level in &self.ups {
            let skip = skips.pop().expect("two skips per level");
            x = level.block1.forward(&Tensor::cat(&[x, skip], 1), &temb, train);
            let skip = skips.pop().expect("two skips per level");
            x = level.block2.forward(&Tensor::cat(&[x, skip], 1), &temb, train);
            x = level.attn.forward(&x) + x;
            x = level.resample.forward(&x);
        }
        let x = self.final_res_block.forward(&Tensor::cat(&[x, r], 1), &temb, train);
        x.apply(&self.final_conv)
    }
}
