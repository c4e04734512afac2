//! Choosing the compute device: CUDA when present unless told otherwise.
use anyhow::{bail, Result};
use tch::Device;

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn parse(spec: &str) -> Result<Device> {
    let cuda_count = || tch::Cuda::device_count() as usize;
    match spec {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => parse("cuda:0"),
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) if n < cuda_count() => Ok(Device::Cuda(n)),
            Some(Ok(n)) => {
                bail!("--device {s}: CUDA device {n} is not available ({} CUDA device(s) found)", cuda_count())
            }
            _ => bail!("--device {s:?}: allowed values are auto, cpu, cuda, cuda:N"),
        },
    }
}

/// A short description for logs and provenance, e.g. `cpu (2 threads)` or `cuda:0 (of 4)`.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(n) => format!("cuda:{n} (of {} CUDA devices)", tch::Cuda::device_count()),
        other => format!("{other:?}"),
    }
}

extern "C" {
    fn ddpm_set_deterministic(on: std::os::raw::c_int);
    fn ddpm_deterministic_algorithms() -> std::os::raw::c_int;
    fn ddpm_benchmark_cudnn() -> std::os::raw::c_int;
}

/// cuBLAS reuses one fixed workspace per handle with this setting, which makes its results
/// reproducible (CUDA's documentation, "Results reproducibility"); it must be in the environment
/// before the first cuBLAS call.
pub const CUBLAS_WORKSPACE: (&str, &str) = ("CUBLAS_WORKSPACE_CONFIG", ":4096:8");

/// Switches libtorch's deterministic algorithms and deterministic cuDNN on or off (see
/// `src/deterministic.cpp`); cuDNN autotuning is switched off with them.
pub fn set_deterministic(on: bool) {
    // SAFETY: plain setters on libtorch's global context, linked in by build.rs.
    unsafe { ddpm_set_deterministic(i32::from(on)) }
}

/// Whether deterministic algorithms are on, cuDNN autotuning is off, and (for CUDA) the cuBLAS
/// workspace is set: what a run records in its attempts.
pub fn determinism() -> serde_json::Value {
    // SAFETY: plain getters on libtorch's global context.
    let (algorithms, benchmark) = unsafe { (ddpm_deterministic_algorithms() != 0, ddpm_benchmark_cudnn() != 0) };
    serde_json::json!({
        "deterministic_algorithms": algorithms,
        "cudnn_benchmark": benchmark,
        "cublas_workspace_config": std::env::var(CUBLAS_WORKSPACE.0).ok(),
        "threads": tch::get_num_threads(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deterministic_switch_reaches_libtorch() {
        set_deterministic(true);
        assert_eq!(determinism()["deterministic_algorithms"], true);
        assert_eq!(determinism()["cudnn_benchmark"], false);
        set_deterministic(false);
        assert_eq!(determinism()["deterministic_algorithms"], false);
        set_deterministic(true);
    }
}
