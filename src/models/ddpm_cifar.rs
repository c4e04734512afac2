//! Ho et al. 2020's CIFAR-10 model (Appendix B; `diffusion_tf/models/unet.py`): a 3×3 input conv to
//! `ch`; per resolution level `num_res_blocks` residual blocks of width ch·ch_mult[level], each
//! followed by self-attention where the side is in `attn_resolutions`, and a strided 3×3 conv down;
//! a middle of block, attention, block; up levels of `num_res_blocks + 1` blocks fed with the skip
//! connections, and nearest ×2 + conv3×3 up; GroupNorm(32) → SiLU → conv3×3 out. The timestep
//! embedding is sinusoidal(ch) → dense(4ch) → SiLU → dense(4ch), added to every block.
//!
//! With ch 128, ch_mult (1, 2, 2, 2), two blocks, attention at 16×16 and three channels: 35,746,307
//! parameters (the paper's 35.7M). Initialisation follows the TensorFlow code (see `layers`),
//! including the layers it starts at zero.
use super::embedding::{condition, sinusoidal, ClassEmbedding};
use super::{layers, Denoiser};
use tch::{nn, nn::Module, Tensor};

const GROUPS: i64 = 32;

#[derive(Debug)]
struct ResBlock {
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    temb_proj: nn::Linear,
    norm2: nn::GroupNorm,
    conv2: nn::Conv2D,
    nin_shortcut: Option<nn::Conv2D>,
    dropout: f64,
}

impl ResBlock {
    fn new(p: nn::Path, c_in: i64, c_out: i64, temb_dim: i64, dropout: f64) -> Self {
        Self {
            norm1: layers::group_norm(&p / "norm1", GROUPS, c_in),
            conv1: layers::tf_conv2d(&p / "conv1", c_in, c_out, 3, 1, 1, 1.0),
            temb_proj: layers::tf_linear(&p / "temb_proj", temb_dim, c_out),
            norm2: layers::group_norm(&p / "norm2", GROUPS, c_out),
            conv2: layers::tf_conv2d(&p / "conv2", c_out, c_out, 3, 1, 1, 0.0),
            nin_shortcut: (c_in != c_out).then(|| layers::tf_conv2d(&p / "nin_shortcut", c_in, c_out, 1, 1, 0, 1.0)),
            dropout,
        }
    }

    fn forward(&self, x: &Tensor, temb: &Tensor, train: bool) -> Tensor {
        let h = x.apply(&self.norm1).silu().apply(&self.conv1);
        let h = h + self.temb_proj.forward(&temb.silu()).unsqueeze(-1).unsqueeze(-1);
        let h = h.apply(&self.norm2).silu().dropout(self.dropout, train).apply(&self.conv2);
        self.nin_shortcut.as_ref().map_or_else(|| x.shallow_clone(), |c| x.apply(c)) + h
    }
}

/// Single-head self-attention over the pixels with 1×1 projections, scale C^(−1/2).
#[derive(Debug)]
struct AttnBlock {
    norm: nn::GroupNorm,
    q: nn::Conv2D,
    k: nn::Conv2D,
    v: nn::Conv2D,
    proj_out: nn::Conv2D,
}

impl AttnBlock {
    fn new(p: nn::Path, c: i64) -> Self {
        Self {
            norm: layers::group_norm(&p / "norm", GROUPS, c),
            q: layers::tf_conv2d(&p / "q", c, c, 1, 1, 0, 1.0),
            k: layers::tf_conv2d(&p / "k", c, c, 1, 1, 0, 1.0),
            v: layers::tf_conv2d(&p / "v", c, c, 1, 1, 0, 1.0),
            proj_out: layers::tf_conv2d(&p / "proj_out", c, c, 1, 1, 0, 0.0),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let h = x.apply(&self.norm);
        // [B, C, H, W] → [B, 1, H·W, C]
        let seq = |c: &nn::Conv2D| h.apply(c).reshape([s[0], 1, s[1], s[2] * s[3]]).transpose(-1, -2);
        let out = super::deterministic::attention(&seq(&self.q), &seq(&self.k), &seq(&self.v));
        x + out.transpose(-1, -2).reshape([s[0], s[1], s[2], s[3]]).apply(&self.proj_out)
    }
}

#[derive(Debug)]
struct Level {
    blocks: Vec<ResBlock>,
    attns: Vec<Option<AttnBlock>>,
    /// Down levels: strided conv; up levels: conv after nearest upsampling. None at the last level.
    resample: Option<nn::Conv2D>,
}

impl Level {
    fn blocks_forward(&self, i: usize, h: &Tensor, temb: &Tensor, train: bool) -> Tensor {
        let h = self.blocks[i].forward(h, temb, train);
        match &self.attns[i] {
            Some(a) => a.forward(&h),
            None => h,
        }
    }
}

/// The `ddpm_cifar` keys of `ModelConfig`, resolved.
pub struct DdpmCifarOptions {
    pub ch: i64,
    pub ch_mult: Vec<i64>,
    pub num_res_blocks: i64,
    pub attn_resolutions: Vec<i64>,
    pub dropout: f64,
    /// The side of the images the model is built for (decides where attention goes).
    pub image_size: i64,
}

impl DdpmCifarOptions {
    /// The network's options: the run's keys and the image side.
    pub fn of(c: &crate::config::model::ddpm_cifar::Config, image_size: i64) -> Self {
        DdpmCifarOptions {
            ch: c.ch,
            ch_mult: c.ch_mult.clone(),
            num_res_blocks: c.num_res_blocks,
            attn_resolutions: c.attn_resolutions.clone(),
            dropout: c.dropout,
            image_size,
        }
    }
}

#[derive(Debug)]
pub struct DdpmCifar {
    ch: i64,
    classes: Option<ClassEmbedding>,
    dense0: nn::Linear,
    dense1: nn::Linear,
    conv_in: nn::Conv2D,
    down: Vec<Level>,
    mid_block_1: ResBlock,
    mid_attn_1: AttnBlock,
    mid_block_2: ResBlock,
    up: Vec<Level>,
    norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
}

impl DdpmCifar {
    pub fn new(p: &nn::Path, (c_in, c_out): (i64, i64), o: &DdpmCifarOptions, classes: Option<i64>) -> Self {
        let (ch, n) = (o.ch, o.ch_mult.len());
        let temb = 4 * ch;
        let attn_at = |level: usize| o.attn_resolutions.contains(&(o.image_size >> level));
        let mut skip_widths = vec![ch];
        let mut c = ch;
        let mut down = Vec::with_capacity(n);
        for (level, &m) in o.ch_mult.iter().enumerate() {
            let lp = p / "down" / level;
            let (mut blocks, mut attns) = (Vec::new(), Vec::new());
            for i in 0..o.num_res_blocks {
                blocks.push(ResBlock::new(&lp / "block" / i, c, ch * m, temb, o.dropout));
                c = ch * m;
                attns.push(attn_at(level).then(|| AttnBlock::new(&lp / "attn" / i, c)));
                skip_widths.push(c);
            }
            let resample = (level + 1 < n).then(|| layers::tf_conv2d(&lp / "downsample" / "conv", c, c, 3, 2, 0, 1.0));
            if resample.is_some() {
                skip_widths.push(c);
            }
            down.push(Level { blocks, attns, resample });
        }
        let mid = p / "mid";
        let (mid_block_1, mid_attn_1, mid_block_2) = (
            ResBlock::new(&mid / "block_1", c, c, temb, o.dropout),
            AttnBlock::new(&mid / "attn_1", c),
            ResBlock::new(&mid / "block_2", c, c, temb, o.dropout),
        );
        let mut up = Vec::with_capacity(n);
        for (level, &m) in o.ch_mult.iter().enumerate().rev() {
            let lp = p / "up" / level;
            let (mut blocks, mut attns) = (Vec::new(), Vec::new());
            for i in 0..=o.num_res_blocks {
                let skip = skip_widths.pop().expect("one skip per block");
                blocks.push(ResBlock::new(&lp / "block" / i, c + skip, ch * m, temb, o.dropout));
                c = ch * m;
                attns.push(attn_at(level).then(|| AttnBlock::new(&lp / "attn" / i, c)));
            }
            let resample = (level > 0).then(|| layers::tf_conv2d(&lp / "upsample" / "conv", c, c, 3, 1, 1, 1.0));
            up.push(Level { blocks, attns, resample });
        }
        Self {
            classes: classes.map(|k| ClassEmbedding::new(p, k, temb)),
            ch,
            dense0: layers::tf_linear(p / "temb" / "dense0", ch, temb),
            dense1: layers::tf_linear(p / "temb" / "dense1", temb, temb),
            conv_in: layers::tf_conv2d(p / "conv_in", c_in, ch, 3, 1, 1, 1.0),
            down,
            mid_block_1,
            mid_attn_1,
            mid_block_2,
            up,
            norm_out: layers::group_norm(p / "norm_out", GROUPS, c),
            conv_out: layers::tf_conv2d(p / "conv_out", c, c_out, 3, 1, 1, 0.0),
        }
    }
}

impl Denoiser for DdpmCifar {
    fn forward_t(&self, x: &Tensor, t: &Tensor, class_labels: Option<&Tensor>, train: bool) -> Tensor {
        let temb = self.dense1.forward(&self.dense0.forward(&sinusoidal(t, self.ch)).silu());
        let temb = condition(&self.classes, temb, class_labels);
        let mut hs = vec![x.apply(&self.conv_in)];
        for level in &self.down {
            for i in 0..level.blocks.len() {
                let h = level.blocks_forward(i, hs.last().expect("input"), &temb, train);
                hs.push(h);
            }
            if let Some(conv) = &level.resample {
                // TensorFlow's "SAME" padding for a stride-2 3×3 conv on an even side: one row and
                // column of zeros at the bottom and right only.
                let h = hs.last().expect("input").constant_pad_nd([0, 1, 0, 1]).apply(conv);
                hs.push(h);
            }
        }
        let mut h = hs.last().expect("input").shallow_clone();
        h = self.mid_attn_1.forward(&self.mid_block_1.forward(&h, &temb, train));
        h = self.mid_block_2.forward(&h, &temb, train);
        for level in &self.up {
            for i in 0..level.blocks.len() {
                h = level.blocks_forward(i, &Tensor::cat(&[&h, &hs.pop().expect("skip")], 1), &temb, train);
            }
            if let Some(conv) = &level.resample {
                let s = h.size();
                h = h.upsample_nearest2d([s[2] * 2, s[3] * 2], None, None).apply(conv);
            }
        }
        h.apply(&self.norm_out).silu().apply(&self.conv_out)
    }
}
