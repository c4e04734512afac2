//! libtorch's multi-tensor kernels (`_foreach_*`, `src/libtorch_foreach.cpp`), for the optimizer and
//! the EMA: a few launches per training step in all rather than a few per parameter tensor, which is
//! what keeps a small model from being launch-bound on a GPU (PyTorch's Adam is multi-tensor on CUDA
//! by default). On the CPU every `_foreach_` op is a loop of the per-tensor op, so the results are
//! bitwise those of a per-tensor loop (tested in `train::optim` and `train::ema`).
use std::os::raw::{c_char, c_int, c_void};
use tch::Tensor;

extern "C" {
    fn ddpm_foreach_adam(
        params: *mut *mut c_void,
        exp_avg: *mut *mut c_void,
        exp_avg_sq: *mut *mut c_void,
        n: c_int,
        step_size: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        bias_correction2_sqrt: f64,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    fn ddpm_foreach_lerp(
        targets: *mut *mut c_void,
        ends: *mut *mut c_void,
        n: c_int,
        weight: f64,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    fn ddpm_foreach_copy(
        targets: *mut *mut c_void,
        sources: *mut *mut c_void,
        n: c_int,
        err: *mut c_char,
        err_len: c_int,
    ) -> c_int;
    fn ddpm_foreach_zero_grad(params: *mut *mut c_void, n: c_int, err: *mut c_char, err_len: c_int) -> c_int;
}

fn handles<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> Vec<*mut c_void> {
    tensors.into_iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

/// Calls a shim function with an error buffer; libtorch's error becomes a panic, as tch's own
/// non-fallible operations do (the run's top level turns panics into a recorded error).
fn call(what: &str, f: impl FnOnce(*mut c_char, c_int) -> c_int) {
    let mut err = vec![0u8; 4096];
    if f(err.as_mut_ptr() as *mut c_char, err.len() as c_int) != 0 {
        let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
        panic!("{what}: {}", String::from_utf8_lossy(&err[..end]));
    }
}

/// One Adam update of every parameter with a gradient: m ← lerp(m, g, 1 − β₁), v ← lerp(v, g², 1 − β₂),
/// p ← p − m / (√v / √(1 − β₂ᵗ) + ε) · step_size (PyTorch's single-tensor order of operations).
#[allow(clippy::too_many_arguments)]
pub fn adam(
    params: &[Tensor],
    exp_avg: &[Tensor],
    exp_avg_sq: &[Tensor],
    step_size: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    bias_correction2_sqrt: f64,
) {
    assert!(params.len() == exp_avg.len() && params.len() == exp_avg_sq.len(), "one pair of moments per parameter");
    let (mut p, mut m, mut v) = (handles(params), handles(exp_avg), handles(exp_avg_sq));
    // SAFETY: every handle is a live at::Tensor* owned by the slices above, which outlive the call.
    call("Adam update (_foreach_)", |err, len| unsafe {
        ddpm_foreach_adam(
            p.as_mut_ptr(),
            m.as_mut_ptr(),
            v.as_mut_ptr(),
            params.len() as c_int,
            step_size,
            beta1,
            beta2,
            eps,
            bias_correction2_sqrt,
            err,
            len,
        )
    });
}

/// targets[i] ← lerp(targets[i], ends[i], weight), without gradients.
pub fn lerp_(targets: &[Tensor], ends: &[&Tensor], weight: f64) {
    assert_eq!(targets.len(), ends.len());
    if targets.is_empty() {
        return;
    }
    let (mut t, mut e) = (handles(targets), handles(ends.iter().copied()));
    // SAFETY: live handles, as above.
    call("lerp (_foreach_)", |err, len| unsafe {
        ddpm_foreach_lerp(t.as_mut_ptr(), e.as_mut_ptr(), targets.len() as c_int, weight, err, len)
    });
}

/// targets[i] ← sources[i], without gradients.
pub fn copy_(targets: &[Tensor], sources: &[&Tensor]) {
    assert_eq!(targets.len(), sources.len());
    if targets.is_empty() {
        return;
    }
    let (mut t, mut s) = (handles(targets), handles(sources.iter().copied()));
    // SAFETY: live handles, as above.
    call("copy (_foreach_)", |err, len| unsafe {
        ddpm_foreach_copy(t.as_mut_ptr(), s.as_mut_ptr(), targets.len() as c_int, err, len)
    });
}

/// Zeroes the gradient of every parameter that has one.
pub fn zero_grad(params: &[Tensor]) {
    let mut p = handles(params);
    // SAFETY: live handles, as above.
    call("zero_grad (_foreach_)", |err, len| unsafe {
        ddpm_foreach_zero_grad(p.as_mut_ptr(), params.len() as c_int, err, len)
    });
}
