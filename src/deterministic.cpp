// libtorch's global switches for reproducible results, which tch does not expose. Called from
// `device::set_deterministic` (src/device.rs) before a run touches the GPU.
#include <ATen/Context.h>

// On: deterministic algorithms wherever libtorch has them (warn_only = true: an operation without a
// deterministic implementation warns instead of failing the run), deterministic cuDNN convolutions
// and no cuDNN autotuning (benchmark mode may pick different algorithms on different runs).
extern "C" void ddpm_set_deterministic(int on) {
  auto& ctx = at::globalContext();
  ctx.setDeterministicAlgorithms(on != 0, /*warn_only=*/true);
  ctx.setDeterministicCuDNN(on != 0);
  if (on != 0) {
    ctx.setBenchmarkCuDNN(false);
  }
}

extern "C" int ddpm_deterministic_algorithms() {
  return at::globalContext().deterministicAlgorithms() ? 1 : 0;
}

extern "C" int ddpm_benchmark_cudnn() {
  return at::globalContext().benchmarkCuDNN() ? 1 : 0;
}
