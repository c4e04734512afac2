//! Layers initialised as the models' sources initialise them, so that a model here starts where the
//! original starts.
//!
//! PyTorch (the blog, notebook and practical-work models): convolution and linear weights and biases
//! from U(±1/√fan_in) (`kaiming_uniform_(a = √5)`), BatchNorm weight 1 and bias 0. tch's own defaults
//! differ: weights from U(±√(6/fan_in)), convolution biases 0, BatchNorm weights from U(0, 1); with
//! them the blog's SimpleUNet started 2.45× larger and trained measurably slower than in PyTorch.
//!
//! TensorFlow (Ho et al.'s CIFAR-10 model, `diffusion_tf/nn.py`): weights from
//! `variance_scaling(scale, 'fan_avg', 'uniform')` = U(±√(3·scale/fan_avg)), biases 0, and scale
//! 1e-10 for the layers the paper initialises at zero (`init_scale=0.`).
use tch::nn::{self, Init};

fn torch_uniform(fan_in: i64) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform { lo: -bound, up: bound }
}

/// `torch.nn.Conv2d(c_in, c_out, k, stride, padding, groups)` with PyTorch's initialisation.
pub fn conv2d(p: nn::Path, c_in: i64, c_out: i64, k: i64, padding: i64) -> nn::Conv2D {
    conv2d_cfg(p, c_in, c_out, k, nn::ConvConfig { padding, ..Default::default() })
}

/// A PyTorch-initialised convolution with any stride, padding or groups.
pub fn conv2d_cfg(p: nn::Path, c_in: i64, c_out: i64, k: i64, cfg: nn::ConvConfig) -> nn::Conv2D {
    let init = torch_uniform(c_in / cfg.groups * k * k);
    nn::conv2d(p, c_in, c_out, k, nn::ConvConfig { ws_init: init, bs_init: init, ..cfg })
}

/// `torch.nn.ConvTranspose2d(c_in, c_out, k, stride, padding)` with PyTorch's initialisation: its
/// weight is `[c_in, c_out, k, k]` and PyTorch takes fan_in from the second dimension, c_out·k·k.
pub fn conv_transpose2d(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64) -> nn::ConvTranspose2D {
    let init = torch_uniform(c_out * k * k);
    let cfg = nn::ConvTransposeConfig { stride, padding, ws_init: init, bs_init: init, ..Default::default() };
    nn::conv_transpose2d(p, c_in, c_out, k, cfg)
}

/// `torch.nn.Linear(d_in, d_out)` with PyTorch's initialisation.
pub fn linear(p: nn::Path, d_in: i64, d_out: i64) -> nn::Linear {
    let init = torch_uniform(d_in);
    nn::linear(p, d_in, d_out, nn::LinearConfig { ws_init: init, bs_init: Some(init), bias: true })
}

/// `torch.nn.BatchNorm2d(c)`: weight 1, bias 0, momentum 0.1, ε = 1e-5, running statistics saved
/// with the weights.
pub fn batch_norm2d(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        p,
        c,
        nn::BatchNormConfig { ws_init: Init::Const(1.0), bs_init: Init::Const(0.0), ..Default::default() },
    )
}

/// `torch.nn.GroupNorm(groups, c)`: weight 1, bias 0, ε = 1e-5 (also TensorFlow's `group_norm` in
/// the DDPM code, whose ε is 1e-6; the difference is below float32 resolution of typical activations).
pub fn group_norm(p: nn::Path, groups: i64, c: i64) -> nn::GroupNorm {
    nn::group_norm(p, groups, c, Default::default())
}

/// U(±√(3·scale/fan_avg)), TensorFlow's `variance_scaling(scale, 'fan_avg', 'uniform')`; scale 0 is
/// replaced by 1e-10 as in the DDPM code.
fn tf_uniform(fan_in: i64, fan_out: i64, scale: f64) -> Init {
    let scale = if scale == 0.0 { 1e-10 } else { scale };
    let bound = (3.0 * scale / ((fan_in + fan_out) as f64 / 2.0)).sqrt();
    Init::Uniform { lo: -bound, up: bound }
}

/// The DDPM code's `nn.conv2d` (k×k, stride, "SAME" padding done by the caller) and `nn.nin` (k = 1).
pub fn tf_conv2d(p: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, padding: i64, init_scale: f64) -> nn::Conv2D {
    let ws_init = tf_uniform(c_in * k * k, c_out * k * k, init_scale);
    let cfg = nn::ConvConfig { stride, padding, ws_init, bs_init: Init::Const(0.0), ..Default::default() };
    nn::conv2d(p, c_in, c_out, k, cfg)
}

/// The DDPM code's `nn.dense`.
pub fn tf_linear(p: nn::Path, d_in: i64, d_out: i64) -> nn::Linear {
    nn::linear(
        p,
        d_in,
        d_out,
        nn::LinearConfig { ws_init: tf_uniform(d_in, d_out, 1.0), bs_init: Some(Init::Const(0.0)), bias: true },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// U(±b) has maximum |x| ≤ b and standard deviation b/√3. For a 3×3 conv from 32 channels,
    /// fan_in = 288 and b = 1/√288 = 0.058926.
    #[test]
    fn weights_and_biases_follow_pytorchs_bounds() {
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = conv2d(vs.root() / "c", 32, 64, 3, 1);
        let b = 1.0 / 288f64.sqrt();
        assert!((b - 0.058_926).abs() < 1e-6);
        let w_max = conv.ws.abs().max().double_value(&[]);
        let w_std = conv.ws.std(true).double_value(&[]);
        assert!(w_max <= b && w_max > 0.99 * b, "{w_max}");
        assert!((w_std / (b / 3f64.sqrt()) - 1.0).abs() < 0.03, "{w_std}");
        let bias = conv.bs.as_ref().unwrap();
        assert!(bias.abs().max().double_value(&[]) <= b);
        assert!(bias.abs().sum(Kind::Float).double_value(&[]) > 0.0, "biases are not zero");
        let lin = linear(vs.root() / "l", 32, 128);
        assert!(lin.ws.abs().max().double_value(&[]) <= 1.0 / 32f64.sqrt());
        // ConvTranspose2d(64, 16, 4): PyTorch's fan_in is 16·4·4 = 256, bound 1/16.
        let ct = conv_transpose2d(vs.root() / "t", 64, 16, 4, 2, 1);
        let m = ct.ws.abs().max().double_value(&[]);
        assert!(m <= 0.0625 && m > 0.06, "{m}");
        let bn = batch_norm2d(vs.root() / "bn", 8);
        assert_eq!(bn.ws.as_ref().unwrap().sum(Kind::Float).double_value(&[]), 8.0);
    }

    /// TF's fan_avg uniform: a 3×3 conv 128 → 256 has fan_in 1152, fan_out 2304, bound √(3/1728) =
    /// 0.041667; with init_scale 0 the weights are below 1e-6.
    #[test]
    fn tf_variance_scaling_bounds() {
        let vs = nn::VarStore::new(Device::Cpu);
        let c = tf_conv2d(vs.root() / "c", 128, 256, 3, 1, 1, 1.0);
        let m = c.ws.abs().max().double_value(&[]);
        assert!(m <= 0.041_667 && m > 0.041, "{m}");
        assert_eq!(c.bs.as_ref().unwrap().abs().sum(Kind::Float).double_value(&[]), 0.0);
        let z = tf_conv2d(vs.root() / "z", 128, 128, 3, 1, 1, 0.0);
        assert!(z.ws.abs().max().double_value(&[]) < 1e-6);
    }
}
