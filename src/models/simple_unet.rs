//! The blog recipe's `SimpleUNet` (seed 000, §6.3): three levels of 32/64/128 channels, each a block
//! of two 3×3 convolutions, `norm1(relu(conv1(x)))`, plus `time_mlp(relu(t_emb))`, then
//! `norm2(relu(conv2(h)))` with GroupNorm(8); 2× max-pooling down, a 128-channel block at the bottom,
//! `nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)` and skip concatenation up, and a
//! 1×1 output convolution. Three poolings need sides divisible by 8: the blog's 28×28 MNIST does not
//! run through its own model (7 → 3 → 6 ≠ 7 at the last skip), so its recipe pads to 32.
//!
//! Tested against the seed's own PyTorch code, transcribed in `tests/seeds/seed_models.py`, on the
//! same weights (`tests/seeds.rs`). Until that test, this block computed relu(norm(conv(x))), added
//! the embedding without its ReLU and upsampled with align_corners = false.
//!
//! Left open by the seed and chosen here: class conditioning (a learned vector per class added to
//! the time embedding, as in our other models) for class-conditional runs; the seed has none.
//!
//! Parameter count with one channel and a 32-dim time embedding: 858,753 (tested).
use super::embedding::{condition, sinusoidal, ClassEmbedding};
use super::{layers, Denoiser};
use tch::{nn, nn::Module, Tensor};

const GROUPS: i64 = 8;

/// The seed's `Block`: GroupNorm(ReLU(conv1 x)) + Linear(ReLU(t_emb)), then GroupNorm(ReLU(conv2 h)).
#[derive(Debug)]
struct Block {
    conv1: nn::Conv2D,
    norm1: nn::GroupNorm,
    time: nn::Linear,
    conv2: nn::Conv2D,
    norm2: nn::GroupNorm,
}

impl Block {
    fn new(p: nn::Path, c_in: i64, c_out: i64, time_dim: i64) -> Self {
        Self {
            conv1: layers::conv2d(&p / "conv1", c_in, c_out, 3, 1),
            norm1: nn::group_norm(&p / "norm1", GROUPS, c_out, Default::default()),
            time: layers::linear(&p / "time", time_dim, c_out),
            conv2: layers::conv2d(&p / "conv2", c_out, c_out, 3, 1),
            norm2: nn::group_norm(&p / "norm2", GROUPS, c_out, Default::default()),
        }
    }

    fn forward(&self, x: &Tensor, temb: &Tensor) -> Tensor {
        let h = x.apply(&self.conv1).relu().apply(&self.norm1);
        let h = h + self.time.forward(&temb.relu()).unsqueeze(-1).unsqueeze(-1);
        h.apply(&self.conv2).relu().apply(&self.norm2)
    }
}

#[derive(Debug)]
pub struct SimpleUNet {
    time_dim: i64,
    classes: Option<ClassEmbedding>,
    time_mlp: nn::Linear,
    down: Vec<Block>,
    mid: Block,
    up: Vec<Block>,
    out: nn::Conv2D,
}

impl SimpleUNet {
    pub fn new(p: &nn::Path, (c_in, c_out): (i64, i64), time_dim: i64, classes: Option<i64>) -> Self {
        let down_p = p / "down";
        let up_p = p / "up";
        Self {
            time_dim,
            classes: classes.map(|k| ClassEmbedding::new(p, k, time_dim)),
            time_mlp: layers::linear(p / "time_mlp", time_dim, time_dim),
            down: vec![
                Block::new(&down_p / 0, c_in, 32, time_dim),
                Block::new(&down_p / 1, 32, 64, time_dim),
                Block::new(&down_p / 2, 64, 128, time_dim),
            ],
            mid: Block::new(p / "mid", 128, 128, time_dim),
            // Input channels: the upsampled features plus the skip connection of the same level.
            up: vec![
                Block::new(&up_p / 0, 128 + 128, 64, time_dim),
                Block::new(&up_p / 1, 64 + 64, 32, time_dim),
                Block::new(&up_p / 2, 32 + 32, 32, time_dim),
            ],
            out: layers::conv2d(p / "out", 32, c_out, 1, 0),
        }
    }
}

fn pool(x: &Tensor) -> Tensor {
    x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
}

/// The blog's `nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)`; deterministic under
/// `train.deterministic` on a GPU (see `deterministic`).
fn upsample(x: &Tensor) -> Tensor {
    let s = x.size();
    super::deterministic::upsample_bilinear_aligned(x, [s[2] * 2, s[3] * 2])
}

impl Denoiser for SimpleUNet {
    fn forward_t(&self, x: &Tensor, t: &Tensor, class_labels: Option<&Tensor>, _train: bool) -> Tensor {
        let temb = self.time_mlp.forward(&sinusoidal(t, self.time_dim)).relu();
        let temb = condition(&self.classes, temb, class_labels);
        let mut skips = Vec::with_capacity(3);
        let mut h = x.shallow_clone();
        for (i, block) in self.down.iter().enumerate() {
            h = block.forward(&if i == 0 { h } else { pool(&h) }, &temb);
            skips.push(h.shallow_clone());
        }
        h = self.mid.forward(&pool(&h), &temb);
        for block in &self.up {
            let skip = skips.pop().expect("one skip per level");
            h = block.forward(&Tensor::cat(&[upsample(&h), skip], 1), &temb);
        }
        h.apply(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// 858,753: the blog model's count for one channel and a 32-dim time embedding, worked out by
    /// hand. A block in→out has conv 9·in·out + out, GroupNorm 2·out, time Linear 32·out + out, conv
    /// 9·out² + out, GroupNorm 2·out = 9·in·out + 9·out² + 39·out:
    /// time MLP 32·32 + 32 = 1,056; down 1→32: 10,752; 32→64: 57,792; 64→128: 226,176;
    /// mid 128→128: 299,904; up 256→64: 186,816; 128→32: 47,328; 64→32: 28,896; out 32·1 + 1 = 33.
    /// Sum: 858,753.
    #[test]
    fn parameter_count_is_the_blogs() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = SimpleUNet::new(&vs.root(), (1, 1), 32, None);
        let n: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        assert_eq!(n, 858_753);
    }

    #[test]
    fn output_shape_equals_input_shape() {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = SimpleUNet::new(&vs.root(), (3, 3), 32, None);
        let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[0i64, 999]);
        assert_eq!(m.forward_t(&x, &t, None, true).size(), vec![2, 3, 32, 32]);
        let x = Tensor::randn([1, 3, 16, 24], (Kind::Float, Device::Cpu));
        assert_eq!(m.forward_t(&x, &t.narrow(0, 0, 1), None, false).size(), vec![1, 3, 16, 24]);
    }
}
