//! The machine a run executes on, as far as defaults and results care: the CPU's model and the
//! instruction sets that decide which kernels libtorch picks (and so the bits of a CPU result), read
//! from `/proc/cpuinfo`; the record of it each attempt keeps ([`Hardware`]); and the portable-math
//! mode (`train.cpu_isa`), which pins libtorch's CPU kernels to one instruction set.
pub use crate::config::{CpuIsa, PINNED_VARIABLES};
use serde::{Deserialize, Serialize};

/// The CPU as `/proc/cpuinfo` describes its first processor; empty where the file is unreadable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cpu {
    /// `model name` (x86) or the implementer/part pair (ARM).
    pub model: String,
    /// x86 `cpu family` and `model` numbers (Zen 2: 23/49, Zen 4: 25/17).
    pub family: Option<u32>,
    pub model_number: Option<u32>,
    /// x86 `flags`, ARM `Features`.
    pub flags: Vec<String>,
}

/// Overrides what [`native_bf16`] reads from the CPU: `1` or `0`. For tests of the defaults that
/// depend on it, and for a user who wants them decided as on another machine.
pub const NATIVE_BF16_ENV: &str = "DDPM_CPU_NATIVE_BF16";

/// The flags that mean bf16 arithmetic in hardware: AVX512-BF16 (AMD Zen 4, Intel Cooper Lake and
/// later), AMX-BF16 (Intel Sapphire Rapids) and ARM's BF16 extension (`bf16` in `Features`).
/// Without one of them libtorch emulates bf16 on the CPU, slower than fp32.
pub const NATIVE_BF16_FLAGS: [&str; 3] = ["avx512_bf16", "amx_bf16", "bf16"];

impl Cpu {
    /// Parses the text of `/proc/cpuinfo`; only the first processor's block is read.
    pub fn parse(text: &str) -> Cpu {
        let mut cpu = Cpu::default();
        let (mut implementer, mut part) = (None, None);
        for line in text.lines() {
            if line.trim().is_empty() {
                if !cpu.model.is_empty() || !cpu.flags.is_empty() {
                    break;
                }
                continue;
            }
            let Some((key, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            match key.trim() {
                "model name" => cpu.model = value.to_string(),
                "cpu family" => cpu.family = value.parse().ok(),
                "model" => cpu.model_number = value.parse().ok(),
                "flags" | "Features" => cpu.flags = value.split_whitespace().map(String::from).collect(),
                "CPU implementer" => implementer = Some(value.to_string()),
                "CPU part" => part = Some(value.to_string()),
                _ => {}
            }
        }
        if cpu.model.is_empty() {
            if let (Some(i), Some(p)) = (implementer, part) {
                cpu.model = format!("ARM implementer {i} part {p}");
            }
        }
        cpu
    }

    /// This machine's CPU.
    pub fn here() -> Cpu {
        std::fs::read_to_string("/proc/cpuinfo").map(|t| Cpu::parse(&t)).unwrap_or_default()
    }

    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The first of [`NATIVE_BF16_FLAGS`] the CPU has.
    pub fn native_bf16_flag(&self) -> Option<&'static str> {
        NATIVE_BF16_FLAGS.into_iter().find(|f| self.has(f))
    }
}

/// Whether this CPU computes bf16 natively, and the words that say why (printed where a default
/// depends on it): [`NATIVE_BF16_ENV`] when set, else the CPU's flags.
pub fn native_bf16() -> anyhow::Result<(bool, String)> {
    match std::env::var(NATIVE_BF16_ENV) {
        Ok(v) if v == "1" => return Ok((true, format!("{NATIVE_BF16_ENV}=1"))),
        Ok(v) if v == "0" => return Ok((false, format!("{NATIVE_BF16_ENV}=0"))),
        Ok(v) => anyhow::bail!("environment variable {NATIVE_BF16_ENV}={v:?}: allowed values are 1 and 0"),
        Err(_) => {}
    }
    let cpu = Cpu::here();
    let name = if cpu.model.is_empty() { "this CPU".to_string() } else { cpu.model.clone() };
    Ok(match cpu.native_bf16_flag() {
        Some(flag) => (true, format!("{name} has native bf16 ({flag})")),
        None => (false, format!("{name} has no native bf16 (none of {})", NATIVE_BF16_FLAGS.join(", "))),
    })
}

/// The variable through which a re-executed process learns what the pinned variables were before.
pub const INHERITED_ENV: &str = "DDPM_INHERITED_MATH_ENV";

/// The level whose pins this process's environment holds (`native` when none does).
pub fn isa_in_environment() -> CpuIsa {
    [CpuIsa::Avx2, CpuIsa::Sse41]
        .into_iter()
        .find(|i| i.pins().iter().all(|(k, v)| std::env::var(k).ok().as_deref() == Some(*v)))
        .unwrap_or(CpuIsa::Native)
}

/// Refuses a pinned level the CPU cannot run: a library capped above the CPU's own level silently
/// uses less, so the same setting would give other bits.
pub fn check_isa(isa: CpuIsa, cpu: &Cpu) -> anyhow::Result<()> {
    let missing: Vec<&str> = isa.needs().iter().copied().filter(|f| !cpu.has(f)).collect();
    if !missing.is_empty() {
        let model = if cpu.model.is_empty() { "this CPU".into() } else { cpu.model.clone() };
        let allowed: Vec<&str> = [CpuIsa::Native, CpuIsa::Avx2, CpuIsa::Sse41]
            .into_iter()
            .filter(|i| i.needs().iter().all(|f| cpu.has(f)))
            .map(CpuIsa::name)
            .collect();
        anyhow::bail!(
            "`train.cpu_isa` = \"{}\" pins libtorch's x86 kernels, but {model} lacks {}: allowed values on this \
             machine are {}",
            isa.name(),
            missing.join(", "),
            allowed.join(", ")
        );
    }
    Ok(())
}

/// Puts the pinned level of `isa` in place for this process. libtorch reads these variables once,
/// when its libraries first run, so a process whose environment differs re-executes itself with the
/// variables set (same arguments, same pid), before anything else ran; what the variables were
/// before is passed on in [`INHERITED_ENV`] for the record. `native` leaves the environment as it is.
pub fn pin_process(isa: CpuIsa) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    if isa == CpuIsa::Native {
        return Ok(());
    }
    check_isa(isa, &Cpu::here())?;
    let pins = isa.pins();
    if pins.iter().all(|(k, v)| std::env::var(k).ok().as_deref() == Some(*v)) {
        return Ok(());
    }
    if std::env::var_os(INHERITED_ENV).is_some() {
        anyhow::bail!("`train.cpu_isa` = \"{}\": the environment is still not pinned after re-executing", isa.name());
    }
    let inherited: serde_json::Map<String, serde_json::Value> =
        PINNED_VARIABLES.iter().map(|k| (k.to_string(), std::env::var(k).ok().into())).collect();
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(std::env::args_os().skip(1))
        .envs(pins)
        .env(INHERITED_ENV, serde_json::Value::Object(inherited).to_string());
    let error = cmd.exec();
    Err(anyhow::anyhow!("cannot re-execute {} with `train.cpu_isa` = {}: {error}", exe.display(), isa.name()))
}

/// The x86 feature levels, best first, as `/proc/cpuinfo` names them: the CPU's top one is recorded.
const LEVELS: [&str; 7] = ["amx_bf16", "avx512_fp16", "avx512_bf16", "avx512f", "avx2", "avx", "sse4_1"];

/// Where an attempt ran, as far as the bits of its result depend on it: what each attempt records
/// (`attempts.jsonl`'s `hardware`), and what the analysis keeps of it ([`Hardware::key`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hardware {
    /// `cpu` or `cuda`.
    pub device: String,
    pub cpu: String,
    /// `x86_64 family 25 model 17`, or the ARM implementer and part.
    pub cpu_id: String,
    /// The CPU's best feature level of [`LEVELS`] (x86).
    pub cpu_level: Option<String>,
    pub threads: i64,
    /// `train.cpu_isa`.
    pub cpu_isa: CpuIsa,
    /// The math libraries' levels and versions in this process.
    pub aten_capability: Option<String>,
    pub onednn: Option<String>,
    pub onednn_max_cpu_isa: Option<String>,
    pub mkl: Option<String>,
    pub mkl_cbwr: Option<String>,
    /// The pinned variables' values before `train.cpu_isa` set them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_capability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cudnn: Option<String>,
}

/// `12080` → `12.8`; cuDNN's `91002` → `9.10.2`.
fn cuda_version(v: i64) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

fn cudnn_version(v: i64) -> String {
    format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100)
}

/// The first word that looks like a version (`Intel(R) MKL-DNN v3.10.2 (Git Hash …)` → `3.10.2`;
/// MKL's sentence → `2024.2`).
fn short_version(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c == '-')
        .map(|w| w.strip_prefix('v').unwrap_or(w))
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'))
        .unwrap_or(text)
        .to_string()
}

/// `nvidia-smi`'s name, compute capability and driver of the GPU that CUDA device `index` of this
/// process is (through `CUDA_VISIBLE_DEVICES` when set).
fn gpu_facts(index: usize) -> Option<(String, String, String)> {
    let physical = match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(v) => v.split(',').nth(index)?.trim().to_string(),
        Err(_) => index.to_string(),
    };
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader", "-i", &physical])
        .output()
        .ok()?;
    parse_gpu_line(&String::from_utf8_lossy(&out.stdout))
}

fn parse_gpu_line(text: &str) -> Option<(String, String, String)> {
    let fields: Vec<&str> = text.lines().next()?.split(',').map(str::trim).collect();
    match fields[..] {
        [name, capability, driver] if !name.is_empty() => Some((name.into(), capability.into(), driver.into())),
        _ => None,
    }
}

impl Hardware {
    /// This process's hardware on `device`, under `isa` (asked after [`pin_process`]).
    pub fn here(device: tch::Device, isa: CpuIsa) -> Hardware {
        let cpu = Cpu::here();
        let libs = crate::device::math_libraries();
        let mut hw = Hardware {
            device: if device.is_cuda() { "cuda".into() } else { "cpu".into() },
            cpu_id: match (cpu.family, cpu.model_number) {
                (Some(f), Some(m)) => format!("{} family {f} model {m}", std::env::consts::ARCH),
                _ => std::env::consts::ARCH.to_string(),
            },
            cpu_level: LEVELS.iter().find(|l| cpu.has(l)).map(|l| l.to_string()),
            cpu: cpu.model,
            threads: tch::get_num_threads() as i64,
            cpu_isa: isa,
            aten_capability: libs.aten_capability,
            onednn: libs.onednn.as_deref().map(short_version),
            onednn_max_cpu_isa: std::env::var("ONEDNN_MAX_CPU_ISA").ok(),
            mkl: libs.mkl.as_deref().map(short_version),
            mkl_cbwr: std::env::var("MKL_CBWR").ok(),
            inherited: std::env::var(INHERITED_ENV).ok().and_then(|t| serde_json::from_str(&t).ok()),
            ..Default::default()
        };
        if let tch::Device::Cuda(n) = device {
            if let Some((name, capability, driver)) = gpu_facts(n) {
                (hw.gpu, hw.gpu_capability, hw.gpu_driver) = (Some(name), Some(capability), Some(driver));
            }
            hw.cuda = libs.cuda_runtime.map(cuda_version);
            hw.cudnn = libs.cudnn.map(cudnn_version);
        }
        hw
    }

    /// What a run on `device` under `isa` would record here, asked from a process that is not pinned
    /// (`reproduce`, before it runs anything): the pinned variables' values in place of this
    /// process's, and ATen's capability as the pin sets it.
    pub fn expected_here(device: tch::Device, isa: CpuIsa) -> Hardware {
        let mut hw = Hardware::here(device, isa);
        if let [(_, onednn), (_, aten), (_, mkl)] = isa.pins()[..] {
            hw.onednn_max_cpu_isa = Some(onednn.into());
            hw.aten_capability = Some(aten.to_ascii_uppercase());
            hw.mkl_cbwr = Some(mkl.into());
        }
        hw
    }

    /// What decides whether two results can agree bit for bit, in one line: on CUDA the GPU model,
    /// its compute capability and the CUDA and cuDNN versions (not the driver); on the CPU the math
    /// libraries' levels and versions, the thread count and, in `native` mode, the CPU model (a
    /// pinned level claims that the model no longer matters).
    pub fn key(&self) -> String {
        let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
        if self.device == "cuda" {
            return format!(
                "cuda: {} (compute {}); CUDA {}; cuDNN {}",
                or(&self.gpu, "unknown GPU"),
                or(&self.gpu_capability, "?"),
                or(&self.cuda, "?"),
                or(&self.cudnn, "?")
            );
        }
        let machine = match self.cpu_isa {
            CpuIsa::Native => {
                format!("cpu: {} ({})", if self.cpu.is_empty() { "unknown CPU" } else { &self.cpu }, self.cpu_id)
            }
            pinned => format!("cpu pinned at {}", pinned.name()),
        };
        format!(
            "{machine}; ATen {}; oneDNN {} ISA {}; MKL {} CBWR {}; {} threads",
            or(&self.aten_capability, "?"),
            or(&self.onednn, "?"),
            or(&self.onednn_max_cpu_isa, "native"),
            or(&self.mkl, "?"),
            or(&self.mkl_cbwr, "auto"),
            self.threads
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The first lines of /proc/cpuinfo on the two machines this project measured on (flags cut).
    const ZEN4: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n\
        model name\t: AMD EPYC 9R14\nflags\t\t: fpu sse4_1 avx2 avx512f avx512_bf16 avx512_vnni\n\n\
        processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n";
    const ZEN2: &str = "processor\t: 0\ncpu family\t: 23\nmodel\t\t: 49\nmodel name\t: AMD EPYC 7R32\n\
        flags\t\t: fpu sse4_1 avx avx2 fma\n";
    const GRAVITON3: &str = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve bf16 i8mm\n\
        CPU implementer\t: 0x41\nCPU part\t: 0xd40\n";

    #[test]
    fn the_first_processor_is_read_and_bf16_found_where_the_flags_name_it() {
        let zen4 = Cpu::parse(ZEN4);
        assert_eq!((zen4.model.as_str(), zen4.family, zen4.model_number), ("AMD EPYC 9R14", Some(25), Some(17)));
        assert_eq!(zen4.native_bf16_flag(), Some("avx512_bf16"));
        assert!(zen4.has("avx512f") && !zen4.has("avx512"));
        let zen2 = Cpu::parse(ZEN2);
        assert_eq!((zen2.family, zen2.model_number, zen2.native_bf16_flag()), (Some(23), Some(49), None));
        let arm = Cpu::parse(GRAVITON3);
        assert_eq!((arm.model.as_str(), arm.native_bf16_flag()), ("ARM implementer 0x41 part 0xd40", Some("bf16")));
        assert_eq!(Cpu::parse(""), Cpu::default());
    }

    #[test]
    fn pinned_levels_need_their_flags_and_set_every_library() {
        let (zen2, arm) = (Cpu::parse(ZEN2), Cpu::parse(GRAVITON3));
        assert!(check_isa(CpuIsa::Avx2, &zen2).is_ok() && check_isa(CpuIsa::Sse41, &zen2).is_ok());
        let e = check_isa(CpuIsa::Avx2, &arm).unwrap_err().to_string();
        assert!(e.contains("`train.cpu_isa` = \"avx2\"") && e.contains("lacks avx2, fma, sse4_1"), "{e}");
        assert!(e.contains("allowed values on this machine are native"), "{e}");
        assert_eq!(CpuIsa::Native.pins(), vec![]);
        assert_eq!(
            CpuIsa::Avx2.pins(),
            [("ONEDNN_MAX_CPU_ISA", "AVX2"), ("ATEN_CPU_CAPABILITY", "avx2"), ("MKL_CBWR", "AVX2,STRICT")]
        );
        assert_eq!(CpuIsa::Sse41.pins().len(), PINNED_VARIABLES.len());
        let parsed: CpuIsa = serde_json::from_value("sse41".into()).unwrap();
        assert_eq!((parsed, CpuIsa::default().name()), (CpuIsa::Sse41, "native"));
    }

    #[test]
    fn versions_and_the_key_that_decides_a_bitwise_comparison() {
        assert_eq!(short_version("Intel(R) MKL-DNN v3.10.2 (Git Hash f1d4719)"), "3.10.2");
        assert_eq!(
            short_version("Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605 for Intel(R) 64"),
            "2024.2"
        );
        assert_eq!((cuda_version(12080), cudnn_version(91002)), ("12.8".to_string(), "9.10.2".to_string()));
        assert_eq!(
            parse_gpu_line("NVIDIA H100 80GB HBM3, 9.0, 570.86.15\n"),
            Some(("NVIDIA H100 80GB HBM3".into(), "9.0".into(), "570.86.15".into()))
        );
        assert_eq!(parse_gpu_line("No devices were found\n"), None);
        let native = Hardware {
            device: "cpu".into(),
            cpu: "AMD EPYC 9R14".into(),
            cpu_id: "x86_64 family 25 model 17".into(),
            threads: 2,
            aten_capability: Some("AVX512".into()),
            onednn: Some("3.10.2".into()),
            mkl: Some("2024.2".into()),
            ..Default::default()
        };
        assert_eq!(
            native.key(),
            "cpu: AMD EPYC 9R14 (x86_64 family 25 model 17); ATen AVX512; oneDNN 3.10.2 ISA native; MKL 2024.2 CBWR auto; 2 threads"
        );
        // Pinned, the CPU model leaves the key: that is the pin's claim.
        let pinned = |cpu: &str| Hardware {
            cpu: cpu.into(),
            cpu_isa: CpuIsa::Avx2,
            aten_capability: Some("AVX2".into()),
            onednn_max_cpu_isa: Some("AVX2".into()),
            mkl_cbwr: Some("AVX2,STRICT".into()),
            ..native.clone()
        };
        assert_eq!(pinned("AMD EPYC 7R32").key(), pinned("Intel Xeon").key());
        assert!(pinned("x")
            .key()
            .starts_with("cpu pinned at avx2; ATen AVX2; oneDNN 3.10.2 ISA AVX2; MKL 2024.2 CBWR AVX2,STRICT"));
        let gpu = Hardware {
            device: "cuda".into(),
            gpu: Some("NVIDIA H100 80GB HBM3".into()),
            gpu_capability: Some("9.0".into()),
            gpu_driver: Some("570.86.15".into()),
            cuda: Some("12.8".into()),
            cudnn: Some("9.10.2".into()),
            ..native
        };
        assert_eq!(gpu.key(), "cuda: NVIDIA H100 80GB HBM3 (compute 9.0); CUDA 12.8; cuDNN 9.10.2");
    }
}
