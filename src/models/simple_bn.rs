//! The notebook recipe's `SimpleUnet` ("Diffusion models from scratch in PyTorch"): a 3×3 input
//! convolution to 64 channels, four down blocks 64→128→256→512→1024 that end in a strided 4×4
//! convolution, four up blocks that concatenate the skip connection and end in a 4×4 transposed
//! convolution, and a 1×1 output convolution. Each block: conv → ReLU → BatchNorm, plus
//! ReLU(Linear(time embedding)), conv → ReLU → BatchNorm. The time embedding is sinusoidal(32) →
//! Linear → ReLU. Four halvings of the side: sizes must be multiples of 16.
//!
//! Parameter count with one channel: 62,437,601 (the notebook prints 62,438,883 for three).
use super::embedding::{condition, sinusoidal, ClassEmbedding};
use super::{layers, Denoiser};
use tch::{nn, nn::Module, nn::ModuleT, Tensor};

#[derive(Debug)]
enum Resample {
    Down(nn::Conv2D),
    Up(nn::ConvTranspose2D),
}

#[derive(Debug)]
struct Block {
    time_mlp: nn::Linear,
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    bnorm1: nn::BatchNorm,
    bnorm2: nn::BatchNorm,
    transform: Resample,
}

impl Block {
    /// An up block takes the concatenation of its input and the skip connection: 2·c_in channels.
    fn new(p: nn::Path, c_in: i64, c_out: i64, time_dim: i64, up: bool) -> Self {
        let (conv1, transform) = if up {
            (
                layers::conv2d(&p / "conv1", 2 * c_in, c_out, 3, 1),
                Resample::Up(layers::conv_transpose2d(&p / "transform", c_out, c_out, 4, 2, 1)),
            )
        } else {
            let stride = nn::ConvConfig { stride: 2, padding: 1, ..Default::default() };
            (
                layers::conv2d(&p / "conv1", c_in, c_out, 3, 1),
                Resample::Down(layers::conv2d_cfg(&p / "transform", c_out, c_out, 4, stride)),
            )
        };
        Self {
            time_mlp: layers::linear(&p / "time_mlp", time_dim, c_out),
            conv1,
            conv2: layers::conv2d(&p / "conv2", c_out, c_out, 3, 1),
            bnorm1: layers::batch_norm2d(&p / "bnorm1", c_out),
            bnorm2: layers::batch_norm2d(&p / "bnorm2", c_out),
            transform,
        }
    }

    fn forward(&self, x: &Tensor, temb: &Tensor, train: bool) -> Tensor {
        let h = self.bnorm1.forward_t(&x.apply(&self.conv1).relu(), train);
        let h = h + self.time_mlp.forward(temb).relu().unsqueeze(-1).unsqueeze(-1);
        let h = self.bnorm2.forward_t(&h.apply(&self.conv2).relu(), train);
        match &self.transform {
            Resample::Down(c) => h.apply(c),
            Resample::Up(c) => h.apply(c),
        }
    }
}

#[derive(Debug)]
pub struct SimpleBnUnet {
    time_dim: i64,
    classes: Option<ClassEmbedding>,
    time_mlp: nn::Linear,
    conv0: nn::Conv2D,
    downs: Vec<Block>,
    ups: Vec<Block>,
    output: nn::Conv2D,
}

impl SimpleBnUnet {
    pub fn new(p: &nn::Path, (c_in, c_out): (i64, i64), time_dim: i64, widths: &[i64], classes: Option<i64>) -> Self {
        let n = widths.len();
        let up_widths: Vec<i64> = widths.iter().rev().copied().collect();
        Self {
            time_dim,
            classes: classes.map(|k| ClassEmbedding::new(p, k, time_dim)),
            time_mlp: layers::linear(p / "time_mlp", time_dim, time_dim),
            conv0: layers::conv2d(p / "conv0", c_in, widths[0], 3, 1),
            downs: (0..n - 1).map(|i| Block::new(p / "downs" / i, widths[i], widths[i + 1], time_dim, false)).collect(),
            ups: (0..n - 1)
                .map(|i| Block::new(p / "ups" / i, up_widths[i], up_widths[i + 1], time_dim, true))
                .collect(),
            output: layers::conv2d(p / "output", widths[0], c_out, 1, 0),
        }
    }
}

impl Denoiser for SimpleBnUnet {
    fn forward_t(&self, x: &Tensor, t: &Tensor, class_labels: Option<&Tensor>, train: bool) -> Tensor {
        let temb = self.time_mlp.forward(&sinusoidal(t, self.time_dim)).relu();
        let temb = condition(&self.classes, temb, class_labels);
        let mut h = x.apply(&self.conv0);
        let mut skips = Vec::with_capacity(self.downs.len());
        for down in &self.downs {
            h = down.forward(&h, &temb, train);
            skips.push(h.shallow_clone());
        }
        for up in &self.ups {
            let skip = skips.pop().expect("one skip per level");
            h = up.forward(&Tensor::cat(&[h, skip], 1), &temb, train);
        }
        h.apply(&self.output)
    }
}
