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
