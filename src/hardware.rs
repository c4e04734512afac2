//! The machine a run executes on, as far as defaults and results care: the CPU's model and the
//! instruction sets that decide which kernels libtorch picks (and so the bits of a CPU result), read
//! from `/proc/cpuinfo`.

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
}
