//! Deterministic formulations of two operations whose CUDA backward libtorch computes with atomic
//! adds or picks by heuristics (so the gradient's rounding, and a resumed run's weights, may vary from
//! run to run): bilinear upsampling (its CUDA backward has no deterministic kernel at all) and fused
//! scaled-dot-product attention (whose backward libtorch makes deterministic under the strict switch
//! only through its own backend choice). Under `train.deterministic = true` on a GPU, where a gradient
//! flows, the models use these matmul forms, which the GPU check confirmed bit-exact on resume;
//! elsewhere (the CPU, whose kernels keep their bits, and sampling without gradients, whose forward
//! kernels are deterministic) libtorch's own kernels. PyTorch does the same for upsampling in Python
//! (`F.interpolate` switches to a decomposition under deterministic mode); a direct ATen call, as tch
//! makes, does not.
use std::cell::RefCell;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// `x.upsample_bilinear2d(size, align_corners = true)`, deterministic on every device when needed.
pub fn upsample_bilinear_aligned(x: &Tensor, size: [i64; 2]) -> Tensor {
    if x.requires_grad() && crate::device::needs_deterministic_formulation(x.device()) {
        bilinear_by_matmul(x, size)
    } else {
        x.upsample_bilinear2d(size, true, None, None)
    }
}

/// softmax(q kᵀ / √d) v over the last two dimensions (`[..., n, d]`), as libtorch's
/// `scaled_dot_product_attention` without mask or dropout; its math form when needed.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    let grad = q.requires_grad() || k.requires_grad() || v.requires_grad();
    if grad && crate::device::needs_deterministic_formulation(q.device()) {
        math_attention(q, k, v)
    } else {
        Tensor::scaled_dot_product_attention::<Tensor>(q, k, v, None, 0.0, false, None, false)
    }
}

/// Attention written as two matmuls and a softmax (SDPA's "math" backend): its backward is matmuls,
/// which cuBLAS computes deterministically with a fixed workspace.
pub fn math_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    let d = *q.size().last().expect("q has a feature dimension") as f64;
    (q.matmul(&k.transpose(-1, -2)) * d.powf(-0.5)).softmax(-1, Kind::Float).matmul(v).to_kind(q.kind())
}

/// Bilinear upsampling with aligned corners as two matmuls, out = A_h · x · A_wᵀ, with the fixed
/// interpolation matrices of [`interpolation_matrix`]: its backward is two matmuls (no atomics).
pub fn bilinear_by_matmul(x: &Tensor, [out_h, out_w]: [i64; 2]) -> Tensor {
    let s = x.size();
    let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
    let a_h = cached_matrix(h, out_h, x.device(), x.kind());
    let a_w = cached_matrix(w, out_w, x.device(), x.kind());
    a_h.matmul(&x.matmul(&a_w.tr()))
}

/// The `[out, input]` matrix of 1-D linear interpolation with aligned corners (`align_corners =
/// true`): output i samples the input at s = i·(input − 1)/(out − 1), with weight 1 − (s − ⌊s⌋) on
/// ⌊s⌋ and s − ⌊s⌋ on ⌊s⌋ + 1 (clamped to the last input). The scale, s and the weights are computed
/// in float32 in libtorch's order (`area_pixel_compute_scale`, `area_pixel_compute_source_index`,
/// `guard_index_and_lambda`), so the weights are libtorch's own, not better-rounded ones.
pub fn interpolation_matrix(input: i64, out: i64) -> Tensor {
    let mut a = vec![0f64; (out * input) as usize];
    let scale = if out > 1 { (input - 1) as f32 / (out - 1) as f32 } else { 0.0 };
    for i in 0..out {
        let src = scale * i as f32;
        let i0 = (src.floor() as i64).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let lambda = (src - i0 as f32).clamp(0.0, 1.0);
        a[(i * input + i0) as usize] += f64::from(1.0 - lambda);
        a[(i * input + i1) as usize] += f64::from(lambda);
    }
    Tensor::from_slice(&a).reshape([out, input])
}

thread_local! {
    /// The matrices on the device, made once per size, device and kind: a host-to-device copy per
    /// forward pass would synchronise the host with the GPU at every step.
    static MATRICES: RefCell<HashMap<(i64, i64, Device, Kind), Tensor>> = RefCell::new(HashMap::new());
}

fn cached_matrix(input: i64, out: i64, device: Device, kind: Kind) -> Tensor {
    MATRICES.with(|m| {
        m.borrow_mut()
            .entry((input, out, device, kind))
            .or_insert_with(|| interpolation_matrix(input, out).to_kind(kind).to_device(device))
            .shallow_clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// Worked by hand: 2 → 4 with aligned corners samples at 0, 1/3, 2/3, 1.
    #[test]
    fn the_interpolation_matrix_is_the_hand_worked_one() {
        let a = interpolation_matrix(2, 4);
        let want =
            Tensor::from_slice(&[1.0, 0.0, 2.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 2.0 / 3.0, 0.0, 1.0]).reshape([4, 2]);
        assert!(max_diff(&a, &want) < 1e-7, "float32 weights");
        // Every row sums to one (an interpolation), for the sizes the models use.
        for (i, o) in [(4, 8), (8, 16), (16, 32), (7, 14)] {
            let rows = interpolation_matrix(i, o).sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
            assert!(max_diff(&rows, &rows.ones_like()) < 1e-7);
        }
    }

    /// The matmul form against libtorch's upsample_bilinear2d (align_corners = true), forward and the
    /// gradient of a random linear function of the output, at the blog model's three sizes: within
    /// 1e-6 (absolute, on values and gradients of size 4 to 6).
    #[test]
    fn bilinear_by_matmul_equals_libtorchs_kernel_forward_and_gradient() {
        tch::manual_seed(3);
        for (h, w) in [(4, 4), (8, 8), (16, 16), (5, 7)] {
            let x = Tensor::randn([3, 4, h, w], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let size = [2 * h, 2 * w];
            let weights = Tensor::randn([3, 4, 2 * h, 2 * w], (Kind::Float, Device::Cpu));
            let ours = bilinear_by_matmul(&x, size);
            let theirs = x.upsample_bilinear2d(size, true, None, None);
            let scale = |t: &Tensor| t.abs().max().double_value(&[]).max(1.0);
            assert!(max_diff(&ours, &theirs) < 1e-6, "forward {h}x{w}: {}", max_diff(&ours, &theirs));
            let grad =
                |y: &Tensor| Tensor::run_backward(&[(y * &weights).sum(Kind::Float)], &[&x], false, false).remove(0);
            let (g1, g2) = (grad(&ours), grad(&theirs));
            eprintln!(
                "upsampling {h}x{w}: forward {:e}, gradient {:e} of {}",
                max_diff(&ours, &theirs),
                max_diff(&g1, &g2),
                scale(&g2)
            );
            assert!(max_diff(&g1, &g2) < 1e-6, "gradient {h}x{w}: {} of {}", max_diff(&g1, &g2), scale(&g2));
            assert!(g1.abs().max().double_value(&[]) > 0.1, "a gradient that is not trivially zero");
        }
    }

    /// The math form against libtorch's fused scaled_dot_product_attention, forward and gradients
    /// with respect to q, k and v, at the attention sizes of the models (heads, pixels, head width):
    /// within 1e-6.
    #[test]
    fn math_attention_equals_libtorchs_fused_kernel_forward_and_gradient() {
        tch::manual_seed(5);
        for (b, h, n, m, d) in [(2, 4, 16, 20, 32), (3, 1, 64, 64, 8), (2, 1, 256, 256, 16)] {
            let opts = (Kind::Float, Device::Cpu);
            let q = Tensor::randn([b, h, n, d], opts).set_requires_grad(true);
            let k = Tensor::randn([b, h, m, d], opts).set_requires_grad(true);
            let v = Tensor::randn([b, h, m, d], opts).set_requires_grad(true);
            let weights = Tensor::randn([b, h, n, d], opts);
            let ours = math_attention(&q, &k, &v);
            let theirs = Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, false, None, false);
            let scale = |t: &Tensor| t.abs().max().double_value(&[]).max(1.0);
            assert!(max_diff(&ours, &theirs) < 1e-6 * scale(&theirs), "forward: {}", max_diff(&ours, &theirs));
            let grads =
                |y: &Tensor| Tensor::run_backward(&[(y * &weights).sum(Kind::Float)], &[&q, &k, &v], false, false);
            for (g1, g2) in grads(&ours).iter().zip(grads(&theirs).iter()) {
                eprintln!("attention gradient: max |diff| {:e} of max |g| {}", max_diff(g1, g2), scale(g2));
                assert!(max_diff(g1, g2) < 1e-6 * scale(g2), "gradient: {} of {}", max_diff(g1, g2), scale(g2));
            }
        }
    }

    /// On the CPU (deterministic or not) the models keep libtorch's kernels, so CPU numbers keep
    /// their bits.
    #[test]
    fn the_cpu_keeps_libtorchs_kernels() {
        crate::device::set_deterministic(true);
        let x = Tensor::randn([1, 2, 4, 4], (Kind::Float, Device::Cpu));
        assert!(upsample_bilinear_aligned(&x, [8, 8]).equal(&x.upsample_bilinear2d([8, 8], true, None, None)));
        let q = Tensor::randn([1, 1, 9, 4], (Kind::Float, Device::Cpu));
        let sdpa = Tensor::scaled_dot_product_attention::<Tensor>(&q, &q, &q, None, 0.0, false, None, false);
        assert!(attention(&q, &q, &q).equal(&sdpa));
    }
}
