//! Choosing the compute device: CUDA when present unless told otherwise.
use anyhow::{bail, Result};
use tch::{Device, Tensor};

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

/// A short description for logs and provenance, e.g. `cpu (2 threads)`, `cuda:0 (of 4 CUDA devices)`
/// or, in a run's process that sees one GPU, `cuda:0 (of 1 CUDA devices; CUDA_VISIBLE_DEVICES=2)`.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(n) => {
            let visible = std::env::var("CUDA_VISIBLE_DEVICES").map(|v| format!("; CUDA_VISIBLE_DEVICES={v}"));
            format!("cuda:{n} (of {} CUDA devices{})", tch::Cuda::device_count(), visible.unwrap_or_default())
        }
        other => format!("{other:?}"),
    }
}

/// The device kind a description of [`describe`] names: `cuda` or `cpu`.
pub fn kind_of_description(description: &str) -> &'static str {
    if description.starts_with("cuda") {
        "cuda"
    } else {
        "cpu"
    }
}

/// Free and total bytes of a CUDA device, where CUDA reports them; None on the CPU.
pub fn memory_info(device: Device) -> Option<(u64, u64)> {
    let Device::Cuda(n) = device else { return None };
    let (mut free, mut total) = (0i64, 0i64);
    // SAFETY: writes two integers; the shim catches libtorch's exceptions.
    let ok = unsafe { ddpm_cuda_memory_info(n as c_int, &mut free, &mut total) } == 0;
    ok.then(|| (free.max(0) as u64, total.max(0) as u64))
}

/// The least free device memory a run starts with: the CUDA context and libtorch's kernels alone take
/// about half a GiB, so below this the run would fail later with an out-of-memory error.
pub const MIN_FREE_DEVICE_BYTES: u64 = 1 << 30;

/// Refuses to start a run on a GPU whose free memory (as CUDA reports it) is below
/// [`MIN_FREE_DEVICE_BYTES`]: another process holds it. Returns what was measured, for the record.
pub fn check_free_memory(device: Device) -> anyhow::Result<Option<(u64, u64)>> {
    let info = memory_info(device);
    if let Some((free, total)) = info {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        if free < MIN_FREE_DEVICE_BYTES {
            bail!(
                "{}: {:.2} GiB free of {:.1} GiB, below the {:.1} GiB a run needs to start; other processes \
                 hold the rest (nvidia-smi lists them)",
                describe(device),
                gib(free),
                gib(total),
                gib(MIN_FREE_DEVICE_BYTES)
            );
        }
    }
    Ok(info)
}

use std::os::raw::{c_char, c_int, c_void};

// src/libtorch_switches.cpp, compiled and linked by build.rs.
extern "C" {
    fn ddpm_set_deterministic(on: c_int);
    fn ddpm_deterministic_algorithms() -> c_int;
    fn ddpm_deterministic_warn_only() -> c_int;
    fn ddpm_benchmark_cudnn() -> c_int;
    fn ddpm_set_cudnn_benchmark(on: c_int);
    fn ddpm_set_tf32_matmul(on: c_int);
    fn ddpm_tf32_matmul() -> c_int;
    fn ddpm_autocast_bf16(cuda: c_int, on: c_int);
    fn ddpm_autocast_enabled(cuda: c_int) -> c_int;
    fn ddpm_channels_last(tensor: *mut c_void) -> *mut c_void;
    fn ddpm_is_channels_last(tensor: *mut c_void) -> c_int;
    fn ddpm_cuda_peak_allocated(device: c_int) -> i64;
    fn ddpm_cuda_reset_peak(device: c_int) -> c_int;
    fn ddpm_cuda_memory_info(device: c_int, free: *mut i64, total: *mut i64) -> c_int;
    fn ddpm_cpu_capability(buffer: *mut c_char, length: c_int) -> c_int;
    fn ddpm_onednn_version(buffer: *mut c_char, length: c_int) -> c_int;
    fn ddpm_mkl_version(buffer: *mut c_char, length: c_int) -> c_int;
    fn ddpm_cuda_runtime_version() -> i64;
    fn ddpm_cudnn_version() -> i64;
}

/// Makes glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.
///
/// libtorch's CPU tensors come from malloc. By default glibc serves large blocks with their own mmap and
/// unmaps them on free (its threshold adapts, but only up to 32 MB, and the heap above 128 KB of free
/// space is trimmed), so every training step page-faults its activations in afresh. Measured on the
/// blog model (2-core CPU, batch 128, 10 measured steps): 6.5 million minor faults, 12 s of system time
/// and 321 images/s by default; 0.76 million faults, 1.6 s and 457 images/s with a 1 GB threshold and
/// trimming only above 1 GB. The heap then stays at the peak working set, as PyTorch's caching
/// allocator keeps GPU memory. Call before any allocation of size.
pub fn keep_freed_host_memory() {
    // SAFETY: mallopt only sets glibc malloc parameters; it is called once at start-up.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// cuBLAS reuses one fixed workspace per handle with this setting, which makes its results
/// reproducible (CUDA's documentation, "Results reproducibility"); it must be in the environment
/// before the first cuBLAS call.
pub const CUBLAS_WORKSPACE: (&str, &str) = ("CUBLAS_WORKSPACE_CONFIG", ":4096:8");

/// Switches libtorch's deterministic algorithms and deterministic cuDNN on or off (see
/// `src/libtorch_switches.cpp`); cuDNN autotuning is switched off with them.
pub fn set_deterministic(on: bool) {
    // SAFETY: plain setters on libtorch's global context, linked in by build.rs.
    unsafe { ddpm_set_deterministic(i32::from(on)) }
}

/// Whether libtorch's deterministic algorithms are on (then strictly: see [`set_deterministic`]).
/// Models ask this at run time to pick a deterministic formulation of an operation that has no
/// deterministic CUDA kernel, as PyTorch's `F.interpolate` does.
pub fn deterministic_algorithms() -> bool {
    // SAFETY: a plain getter on libtorch's global context.
    unsafe { ddpm_deterministic_algorithms() != 0 }
}

/// Whether a formulation without atomics is needed here: deterministic algorithms on, on a GPU (the
/// CPU kernels libtorch has are deterministic, and keep their bits).
pub fn needs_deterministic_formulation(device: Device) -> bool {
    device.is_cuda() && deterministic_algorithms()
}

/// The text libtorch's strict deterministic mode throws with (`alertNotDeterministic`):
/// "<operation> does not have a deterministic implementation, but you set
/// 'torch.use_deterministic_algorithms(True)'...".
const NOT_DETERMINISTIC: &str = " does not have a deterministic implementation";

/// The operation named in libtorch's strict-determinism error, if `message` is one.
pub fn nondeterministic_operation(message: &str) -> Option<String> {
    let before = &message[..message.find(NOT_DETERMINISTIC)?];
    let op = before.rsplit(|c: char| c.is_whitespace() || c == '"' || c == '(' || c == '\'').next()?;
    (!op.is_empty()).then(|| op.to_string())
}

/// Runs `f`, turning a panic inside it (tch's operations panic on libtorch's errors) into an error;
/// libtorch's strict-determinism error becomes one that names the operation and the key that asked
/// for determinism, and what to do.
pub fn catching<T>(device: Device, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            Err(explain(&message, device))
        }
    }
}

fn explain(message: &str, device: Device) -> anyhow::Error {
    let first_line = message.lines().next().unwrap_or_default();
    match nondeterministic_operation(message) {
        Some(op) => anyhow::anyhow!(
            "train.deterministic = true: libtorch has no deterministic kernel for `{op}` on {}, so this run \
             could not resume bit for bit; set train.deterministic = false to run it without that promise \
             (libtorch: {first_line})",
            describe(device)
        ),
        None => anyhow::anyhow!("libtorch failed: {first_line}"),
    }
}

/// The run's execution switches: deterministic algorithms, or else cuDNN autotuning (benchmark mode
/// tries the convolution algorithms once per shape and keeps the fastest); TF32 matmuls.
pub fn configure(train: &crate::config::TrainConfig) {
    set_deterministic(train.deterministic);
    // SAFETY: plain setters on libtorch's global context.
    unsafe {
        if !train.deterministic {
            ddpm_set_cudnn_benchmark(1);
        }
        ddpm_set_tf32_matmul(i32::from(train.tf32));
    }
}

/// Runs `f` under bf16 autocast on `device` when `on` (torch.autocast(dtype=torch.bfloat16)).
pub fn autocast_bf16<T>(on: bool, device: Device, f: impl FnOnce() -> T) -> T {
    if !on {
        return f();
    }
    let cuda = i32::from(device.is_cuda());
    // SAFETY: autocast's thread-local switches; entered and left around `f` on this thread.
    unsafe { ddpm_autocast_bf16(cuda, 1) };
    let out = f();
    unsafe { ddpm_autocast_bf16(cuda, 0) };
    out
}

/// Whether bf16 autocast is on for `device` on this thread.
pub fn autocast_enabled(device: Device) -> bool {
    // SAFETY: a getter of autocast's thread-local state.
    unsafe { ddpm_autocast_enabled(i32::from(device.is_cuda())) != 0 }
}

/// The tensor in channels-last (NHWC) memory order; 4-dimensional tensors only, others unchanged.
pub fn channels_last(t: &Tensor) -> Tensor {
    if t.dim() != 4 {
        return t.shallow_clone();
    }
    // SAFETY: tch's handle is an at::Tensor*; the shim returns a new handle that the Tensor owns.
    unsafe { Tensor::from_ptr(ddpm_channels_last(t.as_ptr() as *mut c_void) as *mut torch_sys::C_tensor) }
}

pub fn is_channels_last(t: &Tensor) -> bool {
    // SAFETY: reads the strides of a live tensor through its handle.
    t.dim() == 4 && unsafe { ddpm_is_channels_last(t.as_ptr() as *mut c_void) != 0 }
}

/// Whether deterministic algorithms are on, cuDNN autotuning is off, and (for CUDA) the cuBLAS
/// workspace is set: what a run records in its attempts.
pub fn determinism() -> serde_json::Value {
    // SAFETY: plain getters on libtorch's global context.
    let (algorithms, benchmark) = unsafe { (ddpm_deterministic_algorithms() != 0, ddpm_benchmark_cudnn() != 0) };
    // SAFETY: a plain getter on libtorch's global context.
    let warn_only = unsafe { ddpm_deterministic_warn_only() != 0 };
    serde_json::json!({
        "deterministic_algorithms": algorithms,
        // false: an operation without a deterministic kernel fails the run instead of warning.
        "deterministic_warn_only": algorithms && warn_only,
        "cudnn_benchmark": benchmark,
        "cublas_workspace_config": std::env::var(CUBLAS_WORKSPACE.0).ok(),
        // SAFETY: a plain getter on libtorch's global context.
        "tf32_matmul": unsafe { ddpm_tf32_matmul() != 0 },
        "threads": tch::get_num_threads(),
    })
}

/// A string a shim writes into a buffer; None when it failed.
fn shim_text(f: unsafe extern "C" fn(*mut c_char, c_int) -> c_int) -> Option<String> {
    let mut buffer = vec![0 as c_char; 512];
    // SAFETY: the shim writes at most `buffer.len()` bytes, NUL-terminated.
    let n = unsafe { f(buffer.as_mut_ptr(), buffer.len() as c_int) };
    if n < 0 {
        return None;
    }
    // SAFETY: NUL-terminated by the shim.
    let text = unsafe { std::ffi::CStr::from_ptr(buffer.as_ptr()) };
    Some(text.to_string_lossy().trim().to_string()).filter(|t| !t.is_empty())
}

/// The versions and levels of libtorch's math libraries in this process, as they decide a CPU
/// result's bits: ATen's vector capability (`AVX512`, `AVX2`, `DEFAULT`), oneDNN's and MKL's versions,
/// and on CUDA the runtime's and cuDNN's versions (as integers: 12080 is CUDA 12.8, 91002 cuDNN 9.10.2).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MathLibraries {
    pub aten_capability: Option<String>,
    pub onednn: Option<String>,
    pub mkl: Option<String>,
    pub cuda_runtime: Option<i64>,
    pub cudnn: Option<i64>,
}

/// What [`MathLibraries`] says about this process. ATen fixes its capability at the first question,
/// so this is asked after the environment that caps it is in place (`hardware::pin_process`).
pub fn math_libraries() -> MathLibraries {
    // SAFETY: plain getters; the shim catches libtorch's exceptions.
    let (cuda, cudnn) = unsafe { (ddpm_cuda_runtime_version(), ddpm_cudnn_version()) };
    MathLibraries {
        aten_capability: shim_text(ddpm_cpu_capability),
        onednn: shim_text(ddpm_onednn_version),
        mkl: shim_text(ddpm_mkl_version),
        cuda_runtime: (cuda > 0).then_some(cuda),
        cudnn: (cudnn > 0).then_some(cudnn),
    }
}

/// Peak bytes allocated by libtorch's CUDA caching allocator on `device` since the last
/// [`reset_peak_device_memory`] (torch.cuda.max_memory_allocated); `None` on the CPU or where the
/// allocator cannot be asked.
pub fn peak_device_memory(device: Device) -> Option<u64> {
    let Device::Cuda(n) = device else { return None };
    // SAFETY: a getter of the allocator's statistics; the shim catches libtorch's exceptions.
    let peak = unsafe { ddpm_cuda_peak_allocated(n as c_int) };
    u64::try_from(peak).ok()
}

/// Resets the CUDA allocator's peak statistics on `device` (torch.cuda.reset_peak_memory_stats);
/// nothing on the CPU.
pub fn reset_peak_device_memory(device: Device) {
    if let Device::Cuda(n) = device {
        // SAFETY: resets counters of the allocator; the shim catches libtorch's exceptions.
        unsafe { ddpm_cuda_reset_peak(n as c_int) };
    }
}

/// The process-wide execution settings of a run, before its first kernel: cuBLAS's fixed workspace
/// when deterministic on CUDA (it must be in the environment before the first cuBLAS call, so this
/// is called once per process, before any model runs), then [`configure`].
pub fn prepare(train: &crate::config::TrainConfig, device: Device) {
    if train.deterministic && device.is_cuda() && std::env::var_os(CUBLAS_WORKSPACE.0).is_none() {
        std::env::set_var(CUBLAS_WORKSPACE.0, CUBLAS_WORKSPACE.1);
    }
    configure(train);
}

/// Waits until the device has finished its queued work (CUDA kernels run asynchronously), so that a
/// wall-clock time covers them; nothing to wait for on the CPU.
pub fn synchronize(device: Device) {
    if let Device::Cuda(n) = device {
        tch::Cuda::synchronize(n as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deterministic_switch_reaches_libtorch() {
        set_deterministic(true);
        assert_eq!(determinism()["deterministic_algorithms"], true);
        assert!(deterministic_algorithms());
        assert_eq!(determinism()["deterministic_warn_only"], false, "strict, not warn-only");
        assert_eq!(determinism()["cudnn_benchmark"], false);
        assert!(!needs_deterministic_formulation(Device::Cpu), "the CPU kernels are deterministic");
        set_deterministic(false);
        assert_eq!(determinism()["deterministic_algorithms"], false);
        set_deterministic(true);
    }

    /// `put_` (accumulate = false) is an operation without a deterministic kernel even on the CPU:
    /// under the strict switch it fails, and the failure names it and `train.deterministic`; with
    /// the switch off the same call succeeds.
    #[test]
    fn an_operation_without_a_deterministic_kernel_is_an_error_naming_it() {
        let put = || {
            let mut x = Tensor::zeros([5], (tch::Kind::Float, Device::Cpu));
            let _ = x.put_(&Tensor::from_slice(&[1i64]), &Tensor::from_slice(&[2f32]), false);
            Ok(x.double_value(&[1]))
        };
        set_deterministic(true);
        let err = catching(Device::Cpu, put).expect_err("strict mode refuses put_");
        let text = format!("{err:#}");
        assert!(text.contains("`put_`") && text.contains("train.deterministic"), "{text}");
        set_deterministic(false);
        assert_eq!(catching(Device::Cpu, put).unwrap(), 2.0);
        set_deterministic(true);
        assert_eq!(
            nondeterministic_operation(
                "Torch(\"upsample_bilinear2d_backward_out_cuda does not have a deterministic implementation, but you set"
            )
            .as_deref(),
            Some("upsample_bilinear2d_backward_out_cuda")
        );
        assert_eq!(nondeterministic_operation("CUDA out of memory"), None);
        let other = catching::<()>(Device::Cpu, || panic!("shape mismatch")).unwrap_err();
        assert_eq!(format!("{other}"), "libtorch failed: shape mismatch");
    }

    #[test]
    fn bf16_autocast_runs_convolutions_in_bfloat16_inside_only() {
        let x = Tensor::randn([1, 2, 5, 5], (tch::Kind::Float, Device::Cpu));
        let w = Tensor::randn([3, 2, 3, 3], (tch::Kind::Float, Device::Cpu));
        let conv = || x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        let (kind, enabled) = autocast_bf16(true, Device::Cpu, || (conv().kind(), autocast_enabled(Device::Cpu)));
        assert_eq!(kind, tch::Kind::BFloat16);
        assert!(enabled);
        assert!(!autocast_enabled(Device::Cpu), "off again after the closure");
        assert_eq!(conv().kind(), tch::Kind::Float);
        assert_eq!(autocast_bf16(false, Device::Cpu, conv).kind(), tch::Kind::Float);
    }

    #[test]
    fn device_memory_is_not_asked_of_the_cpu() {
        assert_eq!(memory_info(Device::Cpu), None);
        assert_eq!(check_free_memory(Device::Cpu).unwrap(), None, "the CPU reports nothing and passes");
        assert_eq!(kind_of_description("cuda:0 (of 1 CUDA devices; CUDA_VISIBLE_DEVICES=3)"), "cuda");
        assert_eq!(kind_of_description("cpu (2 threads)"), "cpu");
        assert_eq!(peak_device_memory(Device::Cpu), None);
        reset_peak_device_memory(Device::Cpu);
        if tch::Cuda::is_available() {
            let d = Device::Cuda(0);
            reset_peak_device_memory(d);
            let before = peak_device_memory(d).expect("the CUDA allocator answers");
            let t = Tensor::zeros([64 << 18], (tch::Kind::Float, d)); // 64 MiB
            assert!(peak_device_memory(d).unwrap() >= before + (64 << 20));
            drop(t);
            let (free, total) = memory_info(d).expect("CUDA reports its memory");
            assert!(free <= total && total > 0);
        }
    }

    #[test]
    fn channels_last_keeps_values_and_changes_strides() {
        let x = Tensor::arange(24, (tch::Kind::Float, Device::Cpu)).reshape([1, 2, 3, 4]);
        let y = channels_last(&x);
        assert!(is_channels_last(&y) && !is_channels_last(&x));
        assert_eq!(y.stride(), vec![24, 1, 8, 2]);
        assert!(y.equal(&x));
        let v = Tensor::arange(3, (tch::Kind::Float, Device::Cpu));
        assert_eq!(channels_last(&v).stride(), vec![1], "not 4-D: unchanged");
    }
}
