// libtorch's multi-tensor (`_foreach_*`) kernels, which tch does not expose: the optimizer and the EMA
// update every parameter tensor with a handful of launches in all instead of a handful per tensor
// (src/foreach.rs wraps each). On the CPU each `_foreach_` op is a loop of the per-tensor op, so the
// results are bitwise those of the per-tensor code; on CUDA they are PyTorch's multi-tensor-apply
// kernels (what torch.optim.Adam uses by default there).
//
// tch's tensor handle is an at::Tensor*. Every function returns 0, or -1 with libtorch's message in
// `err` (at most `err_len` bytes, NUL-terminated).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <cstring>
#include <vector>

static std::vector<at::Tensor> list_of(void** handles, int n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) {
    out.push_back(*static_cast<at::Tensor*>(handles[i]));
  }
  return out;
}

static int fail(const std::exception& e, char* err, int err_len) {
  if (err != nullptr && err_len > 0) {
    std::strncpy(err, e.what(), err_len - 1);
    err[err_len - 1] = '\0';
  }
  return -1;
}

// One Adam update of every parameter that has a gradient, in PyTorch's single-tensor order (the
// arithmetic of src/train/optim.rs before it used this):
//   m <- lerp(m, g, 1 - beta1);  v <- lerp(v, g^2, 1 - beta2)
//   p <- p - (m / (sqrt(v) / bias_correction2_sqrt + eps)) * step_size
// Parameters without a gradient (and their moments) are left alone.
extern "C" int ddpm_foreach_adam(void** params, void** exp_avg, void** exp_avg_sq, int n, double step_size,
                                 double beta1, double beta2, double eps, double bias_correction2_sqrt, char* err,
                                 int err_len) {
  try {
    c10::AutoGradMode no_grad(false);
    std::vector<at::Tensor> p, g, m, v;
    for (int i = 0; i < n; ++i) {
      const auto& param = *static_cast<at::Tensor*>(params[i]);
      const auto& grad = param.grad();
      if (!grad.defined()) {
        continue;
      }
      p.push_back(param);
      g.push_back(grad);
      m.push_back(*static_cast<at::Tensor*>(exp_avg[i]));
      v.push_back(*static_cast<at::Tensor*>(exp_avg_sq[i]));
    }
    if (p.empty()) {
      return 0;
    }
    at::_foreach_lerp_(m, g, 1.0 - beta1);
    auto squares = at::_foreach_pow(g, 2);  // g.square() is pow(g, 2)
    at::_foreach_lerp_(v, squares, 1.0 - beta2);
    auto denom = at::_foreach_sqrt(v);
    at::_foreach_div_(denom, bias_correction2_sqrt);
    at::_foreach_add_(denom, eps);
    auto update = at::_foreach_div(m, denom);
    at::_foreach_mul_(update, step_size);
    at::_foreach_sub_(p, update);
    return 0;
  } catch (const std::exception& e) {
    return fail(e, err, err_len);
  }
}

// targets[i] <- lerp(targets[i], ends[i], weight), without gradients.
extern "C" int ddpm_foreach_lerp(void** targets, void** ends, int n, double weight, char* err, int err_len) {
  try {
    c10::AutoGradMode no_grad(false);
    auto t = list_of(targets, n);
    at::_foreach_lerp_(t, list_of(ends, n), weight);
    return 0;
  } catch (const std::exception& e) {
    return fail(e, err, err_len);
  }
}

// targets[i] <- sources[i], without gradients.
extern "C" int ddpm_foreach_copy(void** targets, void** sources, int n, char* err, int err_len) {
  try {
    c10::AutoGradMode no_grad(false);
    auto t = list_of(targets, n);
    at::_foreach_copy_(t, list_of(sources, n), /*non_blocking=*/false);
    return 0;
  } catch (const std::exception& e) {
    return fail(e, err, err_len);
  }
}

// Zeroes the gradients of the parameters that have one (as tch's `zero_grad`: detached, in place).
extern "C" int ddpm_foreach_zero_grad(void** params, int n, char* err, int err_len) {
  try {
    c10::AutoGradMode no_grad(false);
    std::vector<at::Tensor> grads;
    for (int i = 0; i < n; ++i) {
      auto& param = *static_cast<at::Tensor*>(params[i]);
      auto& grad = param.mutable_grad();
      if (grad.defined()) {
        grad.detach_();
        grads.push_back(grad);
      }
    }
    if (!grads.empty()) {
      at::_foreach_zero_(grads);
    }
    return 0;
  } catch (const std::exception& e) {
    return fail(e, err, err_len);
  }
}
