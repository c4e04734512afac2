//! Self-attention over the pixels of a feature map.
use super::layers;
use tch::{nn, nn::Module, Kind, Tensor};

/// Splits `[B, heads·d, H, W]` into `[B, heads, H·W, d]`.
fn to_heads(x: &Tensor, heads: i64) -> Tensor {
    let s = x.size();
    x.reshape([s[0], heads, s[1] / heads, s[2] * s[3]]).transpose(-1, -2)
}

/// Multi-head softmax attention (lucidrains' `Attention`): q, k, v from a 1×1 convolution, scaled
/// dot products with scale d^(−1/2), computed by libtorch's `scaled_dot_product_attention` (its math
/// form under `train.deterministic` on a GPU).
#[derive(Debug)]
pub struct Attention {
    heads: i64,
    to_qkv: nn::Conv2D,
    to_out: nn::Conv2D,
}

impl Attention {
    pub fn new(p: nn::Path, dim: i64, heads: i64, dim_head: i64) -> Self {
        let hidden = heads * dim_head;
        let qkv_cfg = nn::ConvConfig { bias: false, ..Default::default() };
        Self {
            heads,
            to_qkv: layers::conv2d_cfg(&p / "to_qkv", dim, hidden * 3, 1, qkv_cfg),
            to_out: layers::conv2d(&p / "to_out", hidden, dim, 1, 0),
        }
    }
}

impl Module for Attention {
    fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let qkv = self.to_qkv.forward(x).chunk(3, 1);
        let (q, k, v) = (to_heads(&qkv[0], self.heads), to_heads(&qkv[1], self.heads), to_heads(&qkv[2], self.heads));
        let out = super::deterministic::attention(&q, &k, &v);
        // [B, heads, H·W, d] → [B, heads·d, H, W]
        self.to_out.forward(&out.transpose(-1, -2).reshape([s[0], -1, s[2], s[3]]))
    }
}

/// Linear attention (Shen et al. 2021, as in lucidrains' and the practical work's U-Net): softmax of q
/// over its features and of k over the pixels, then k·vᵀ first, so the cost is linear in H·W; the
/// output projection is followed by GroupNorm(1, dim).
#[derive(Debug)]
pub struct LinearAttention {
    heads: i64,
    scale: f64,
    to_qkv: nn::Conv2D,
    to_out: nn::Conv2D,
    norm: nn::GroupNorm,
}

impl LinearAttention {
    pub fn new(p: nn::Path, dim: i64, heads: i64, dim_head: i64) -> Self {
        let hidden = heads * dim_head;
        let qkv_cfg = nn::ConvConfig { bias: false, ..Default::default() };
        Self {
            heads,
            scale: (dim_head as f64).powf(-0.5),
            to_qkv: layers::conv2d_cfg(&p / "to_qkv", dim, hidden * 3, 1, qkv_cfg),
            to_out: layers::conv2d(&p / "to_out", hidden, dim, 1, 0),
            norm: layers::group_norm(&p / "norm", 1, dim),
        }
    }
}

impl Module for LinearAttention {
    fn forward(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let qkv = self.to_qkv.forward(x).chunk(3, 1);
        // [B, heads, d, H·W]
        let split = |t: &Tensor| t.reshape([s[0], self.heads, -1, s[2] * s[3]]);
        let q = split(&qkv[0]).softmax(-2, Kind::Float) * self.scale;
        let k = split(&qkv[1]).softmax(-1, Kind::Float);
        let v = split(&qkv[2]);
        let context = k.matmul(&v.transpose(-1, -2)); // [B, h, d, e] = Σ_n k_dn v_en
        let out = context.transpose(-1, -2).matmul(&q); // [B, h, e, n] = Σ_d context_de q_dn
        self.to_out.forward(&out.reshape([s[0], -1, s[2], s[3]])).apply(&self.norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Attention against the definition softmax(q kᵀ/√d) v written out with plain tensor ops.
    #[test]
    fn attention_matches_the_definition() {
        let vs = nn::VarStore::new(Device::Cpu);
        let a = Attention::new(vs.root() / "a", 8, 2, 4);
        let x = Tensor::randn([1, 8, 3, 3], (Kind::Float, Device::Cpu));
        let qkv = a.to_qkv.forward(&x).chunk(3, 1);
        let (q, k, v) = (to_heads(&qkv[0], 2), to_heads(&qkv[1], 2), to_heads(&qkv[2], 2));
        let w = (q.matmul(&k.transpose(-1, -2)) / 2.0).softmax(-1, Kind::Float);
        let manual = a.to_out.forward(&w.matmul(&v).transpose(-1, -2).reshape([1, 8, 3, 3]));
        assert!((a.forward(&x) - manual).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn linear_attention_keeps_the_shape() {
        let vs = nn::VarStore::new(Device::Cpu);
        let a = LinearAttention::new(vs.root() / "a", 16, 4, 8);
        let x = Tensor::randn([2, 16, 5, 7], (Kind::Float, Device::Cpu));
        assert_eq!(a.forward(&x).size(), vec![2, 16, 5, 7]);
    }
}
