//! `train.cpu_isa`: the instruction set libtorch's CPU kernels may use, and the environment that
//! pins it (what `hardware::pin_process` puts in place).
use serde::{Deserialize, Serialize};

/// `train.cpu_isa`: the instruction set libtorch's CPU kernels may use. `native` lets each library
/// pick the CPU's best (the default: fastest, but the bits then depend on the CPU model); `avx2` and
/// `sse41` cap oneDNN (`ONEDNN_MAX_CPU_ISA`), ATen's vector kernels (`ATEN_CPU_CAPABILITY`) and MKL
/// (`MKL_CBWR`, conditional numerical reproducibility) at one level, so that x86 CPUs which have
/// that level run the same kernels (see `analysis/reproducibility/cpu_isa.md` for what was measured; `crate::hardware` applies
/// and records it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuIsa {
    #[default]
    Native,
    Avx2,
    Sse41,
}

/// The variables a pinned level sets.
pub const PINNED_VARIABLES: [&str; 3] = ["ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_CBWR"];

impl CpuIsa {
    pub fn name(self) -> &'static str {
        match self {
            CpuIsa::Native => "native",
            CpuIsa::Avx2 => "avx2",
            CpuIsa::Sse41 => "sse41",
        }
    }

    /// The environment that pins the level, in the order of [`PINNED_VARIABLES`]; empty for `native`.
    pub fn pins(self) -> Vec<(&'static str, &'static str)> {
        let values: [&str; 3] = match self {
            CpuIsa::Native => return Vec::new(),
            CpuIsa::Avx2 => ["AVX2", "avx2", "AVX2,STRICT"],
            CpuIsa::Sse41 => ["SSE41", "default", "COMPATIBLE"],
        };
        PINNED_VARIABLES.into_iter().zip(values).collect()
    }

    /// The CPU flags the level needs: a library capped above what the CPU has falls back to less,
    /// which would break the pin silently.
    pub fn needs(self) -> &'static [&'static str] {
        match self {
            CpuIsa::Native => &[],
            CpuIsa::Avx2 => &["avx2", "fma", "sse4_1"],
            CpuIsa::Sse41 => &["sse4_1"],
        }
    }
}
