// libtorch's switches that tch does not expose: reproducibility (`device::set_deterministic`), cuDNN
// autotuning and TF32, bf16 autocast, channels-last tensors, and the CUDA caching allocator's peak
// statistics, and the versions and instruction sets of its math libraries that a run records
// (src/device.rs wraps each).
#include <ATen/Context.h>
#include <ATen/Version.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <cstring>
#include <string>
#include <c10/core/CachingDeviceAllocator.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>

// On: deterministic algorithms, strictly (warn_only = false: an operation without a deterministic
// implementation throws, which the run reports as an error naming it and `train.deterministic`;
// a warning would let a run that promises bit-exact resume silently lose it), deterministic cuDNN
// convolutions and no cuDNN autotuning (benchmark mode may pick different algorithms on different runs).
extern "C" void ddpm_set_deterministic(int on) {
  auto& ctx = at::globalContext();
  ctx.setDeterministicAlgorithms(on != 0, /*warn_only=*/false);
  ctx.setDeterministicCuDNN(on != 0);
  if (on != 0) {
    ctx.setBenchmarkCuDNN(false);
  }
}

extern "C" int ddpm_deterministic_algorithms() {
  return at::globalContext().deterministicAlgorithms() ? 1 : 0;
}

extern "C" int ddpm_deterministic_warn_only() {
  return at::globalContext().deterministicAlgorithmsWarnOnly() ? 1 : 0;
}

extern "C" int ddpm_benchmark_cudnn() {
  return at::globalContext().benchmarkCuDNN() ? 1 : 0;
}

extern "C" void ddpm_set_cudnn_benchmark(int on) { at::globalContext().setBenchmarkCuDNN(on != 0); }

extern "C" void ddpm_set_tf32_matmul(int on) { at::globalContext().setAllowTF32CuBLAS(on != 0); }

extern "C" int ddpm_tf32_matmul() { return at::globalContext().allowTF32CuBLAS() ? 1 : 0; }

static c10::DeviceType device_type(int cuda) { return cuda != 0 ? c10::DeviceType::CUDA : c10::DeviceType::CPU; }

// Enters (on != 0) or leaves bf16 autocast on the CPU or CUDA, as torch.autocast(dtype=torch.bfloat16)
// does: the per-device switch and dtype, and the nesting count whose end clears autocast's weight cache.
extern "C" void ddpm_autocast_bf16(int cuda, int on) {
  auto type = device_type(cuda);
  if (on != 0) {
    at::autocast::set_autocast_dtype(type, at::kBFloat16);
    at::autocast::set_autocast_enabled(type, true);
    at::autocast::increment_nesting();
  } else {
    at::autocast::set_autocast_enabled(type, false);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
  }
}

extern "C" int ddpm_autocast_enabled(int cuda) { return at::autocast::is_autocast_enabled(device_type(cuda)) ? 1 : 0; }

// tch's tensor handle is an at::Tensor*. A new handle to the tensor's channels-last copy (the same
// tensor when it is one already); the caller owns it.
extern "C" void* ddpm_channels_last(void* tensor) {
  auto* t = static_cast<at::Tensor*>(tensor);
  return new at::Tensor(t->contiguous(at::MemoryFormat::ChannelsLast));
}

extern "C" int ddpm_is_channels_last(void* tensor) {
  auto* t = static_cast<at::Tensor*>(tensor);
  return t->is_contiguous(at::MemoryFormat::ChannelsLast) ? 1 : 0;
}

// The CUDA caching allocator's peak of allocated bytes on `device` since the last reset (what
// torch.cuda.max_memory_allocated reads: the aggregate pool's `allocated_bytes.peak`), through the
// device-generic allocator interface, so no CUDA header is needed. -1 when there is no CUDA allocator
// (a build or machine without CUDA) or the call fails.
extern "C" long long ddpm_cuda_peak_allocated(int device) {
  try {
    auto stats = c10::getDeviceAllocator(c10::DeviceType::CUDA)->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    return static_cast<long long>(stats.allocated_bytes[0].peak);
  } catch (...) {
    return -1;
  }
}

// Resets that peak to the current allocation (torch.cuda.reset_peak_memory_stats); 0 on success.
extern "C" int ddpm_cuda_reset_peak(int device) {
  try {
    c10::getDeviceAllocator(c10::DeviceType::CUDA)->resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return -1;
  }
}

// Free and total bytes of CUDA device `device` (cudaMemGetInfo, through the device-generic allocator
// interface, as torch.accelerator.get_memory_info). 0 on success; -1 where CUDA cannot tell.
extern "C" int ddpm_cuda_memory_info(int device, long long* free_bytes, long long* total_bytes) {
  try {
    auto info = c10::getDeviceAllocator(c10::DeviceType::CUDA)->getMemoryInfo(static_cast<c10::DeviceIndex>(device));
    *free_bytes = static_cast<long long>(info.first);
    *total_bytes = static_cast<long long>(info.second);
    return 0;
  } catch (...) {
    return -1;
  }
}

// Copies `s` into `buffer` (NUL-terminated, cut to `length`); the length of `s`.
static int copy_out(const std::string& s, char* buffer, int length) {
  if (length > 0) {
    std::strncpy(buffer, s.c_str(), static_cast<size_t>(length - 1));
    buffer[length - 1] = '\0';
  }
  return static_cast<int>(s.size());
}

// ATen's vector level for its CPU kernels as chosen at run time (`DEFAULT`, `AVX2`, `AVX512`): the
// CPU's best, lowered by ATEN_CPU_CAPABILITY. -1 on an exception.
extern "C" int ddpm_cpu_capability(char* buffer, int length) {
  try {
    return copy_out(at::get_cpu_capability(), buffer, length);
  } catch (...) {
    return -1;
  }
}

// oneDNN's version as libtorch reports it (e.g. `3.7.1 (Git Hash ...)`); -1 on an exception.
extern "C" int ddpm_onednn_version(char* buffer, int length) {
  try {
    return copy_out(at::get_mkldnn_version(), buffer, length);
  } catch (...) {
    return -1;
  }
}

// MKL's version as libtorch reports it (empty in a build without MKL); -1 on an exception.
extern "C" int ddpm_mkl_version(char* buffer, int length) {
  try {
    return copy_out(at::get_mkl_version(), buffer, length);
  } catch (...) {
    return -1;
  }
}

// The CUDA version libtorch was built with and the cuDNN version it loaded (0 where it has none).
extern "C" long long ddpm_cuda_runtime_version() {
  try {
    return at::detail::getCUDAHooks().hasCUDA() ? at::detail::getCUDAHooks().versionCUDART() : 0;
  } catch (...) {
    return -1;
  }
}

extern "C" long long ddpm_cudnn_version() {
  try {
    return at::detail::getCUDAHooks().hasCuDNN() ? at::detail::getCUDAHooks().versionRuntimeCuDNN() : 0;
  } catch (...) {
    return -1;
  }
}
