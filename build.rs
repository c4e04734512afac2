//! Build-time facts the binary needs.
//!
//! 1. Linking: torch-sys tells us where libtorch lives (`DEP_TCH_LIBTORCH_LIB`, because its
//!    `links = "tch"`).
//!    - rpath: the binary then starts without `LD_LIBRARY_PATH`.
//!    - `--no-as-needed -ltorch_cuda`: rustc links with `--as-needed`, which drops libtorch_cuda
//!      because no symbol of it is referenced directly; without it `tch::Cuda::is_available()` is
//!      false even on a GPU machine (tch-rs issues 980 and 907). The flags are given with
//!      `cargo:rustc-link-arg`, which reaches this package's binaries and test binaries only, rather
//!      than `rustflags`, which would also hit build scripts and proc macros.
//!    - `src/libtorch_switches.cpp`: libtorch's deterministic-algorithms switch, and
//!      `src/libtorch_foreach.cpp`: its multi-tensor (`_foreach_`) kernels, compiled against the
//!      same libtorch headers (tch exposes neither); `src/libtorch_c10d.cpp`: its collectives (c10d,
//!      with gloo's headers from Debian's libgloo-dev and, for NCCL, the CUDA header wheels).
//! 2. Provenance: the libtorch and CUDA versions (from the torch package's `version.py`).
//! 3. The code fingerprint, part of every run's identity: the sha256 of the files under `src/` and of
//!    `Cargo.lock`, so that a change of code or of a dependency is a different run, while a change
//!    of documentation, tests or experiment files is not; and the build fingerprint (see
//!    `src/track/fingerprint.rs`).
#[path = "src/track/fingerprint.rs"]
mod fingerprint;

use std::path::Path;

fn main() {
    link_libtorch();
    code_fingerprint();
}

fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    let lib = Path::new(&lib);
    let mut args = vec![format!("-Wl,-rpath,{}", lib.display())];
    if lib.join("libtorch_cuda.so").exists() {
        args.extend(["-Wl,--no-as-needed".into(), "-ltorch_cuda".into(), "-ltorch".into()]);
        args.push("-Wl,--as-needed".into());
    }
    for arg in &args {
        println!("cargo:rustc-link-arg={arg}");
    }
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rerun-if-changed=src/libtorch_switches.cpp");
    println!("cargo:rerun-if-changed=src/libtorch_foreach.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    // PyPI's torch is built with the C++11 ABI (torch._C._GLIBCXX_USE_CXX11_ABI), as torch-sys assumes.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .file("src/libtorch_switches.cpp")
        .file("src/libtorch_foreach.cpp")
        .include(lib.join("../include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .warnings(false)
        .compile("ddpm_libtorch_switches");
    let version_py = std::fs::read_to_string(lib.join("../version.py")).unwrap_or_default();
    // Lines such as `__version__ = '2.11.0+cu130'` and `cuda: Optional[str] = '13.0'`.
    let field = |name: &str| {
        version_py
            .lines()
            .filter_map(|l| l.strip_prefix(name)?.rsplit('=').next())
            .map(|v| v.trim().trim_matches(['\'', '"']).to_string())
            .next()
            .unwrap_or_else(|| "unknown".into())
    };
    c10d(lib, &abi);
    println!("cargo:rustc-env=DDPM_LIBTORCH_VERSION={}", field("__version__"));
    println!("cargo:rustc-env=DDPM_LIBTORCH_CUDA={}", field("cuda"));
}

/// `src/libtorch_c10d.cpp`, with gloo when gloo's headers are there (Debian's libgloo-dev: the torch
/// wheel lacks them) and NCCL when libtorch has CUDA and the wheels' `nccl.h` and CUDA runtime headers
/// (`crt/`, `nv/target` included) are there; without them the functions say what is missing.
fn c10d(lib: &Path, abi: &str) {
    println!("cargo:rerun-if-changed=src/libtorch_c10d.cpp");
    println!("cargo:rerun-if-env-changed=DDPM_GLOO_INCLUDE");
    // `just c10d-headers` extracts Debian's libgloo-dev into .venv/gloo; an installed one is in /usr/include.
    let gloo = std::env::var("DDPM_GLOO_INCLUDE").unwrap_or_else(|_| {
        let local = ".venv/gloo/usr/include";
        if Path::new(local).join("gloo/context.h").exists() {
            std::fs::canonicalize(local).map_or(local.into(), |p| p.display().to_string())
        } else {
            "/usr/include".into()
        }
    });
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("src/libtorch_c10d.cpp")
        .include(lib.join("../include"))
        .include(lib.join("../include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", abi)
        .warnings(false);
    if Path::new(&gloo).join("gloo/context.h").exists() {
        println!("cargo:rerun-if-changed={gloo}/gloo/context.h");
        build.include(&gloo).define("USE_C10D_GLOO", None).define("DDPM_GLOO", None);
    } else {
        println!("cargo:warning=no gloo headers in {gloo} (Debian's libgloo-dev): one run cannot span processes");
    }
    // site-packages/nvidia/*/include of the wheels torch pulls in (and the two header-only ones added).
    let nvidia: Vec<_> = std::fs::read_dir(lib.join("../../nvidia"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("include"))
        .filter(|p| p.is_dir())
        .collect();
    let has = |f: &str| nvidia.iter().any(|d| d.join(f).exists());
    let headers = ["nccl.h", "cuda_runtime_api.h", "crt/host_config.h", "nv/target"];
    if lib.join("libtorch_cuda.so").exists() && headers.iter().all(|h| has(h)) {
        for d in &nvidia {
            build.include(d);
        }
        build.define("USE_C10D_NCCL", None).define("USE_CUDA", None).define("DDPM_NCCL", None);
    }
    build.compile("ddpm_libtorch_c10d");
}

fn code_fingerprint() {
    for input in fingerprint::BUILD_INPUTS {
        println!("cargo:rerun-if-changed={input}");
    }
    let root = Path::new(".");
    println!("cargo:rustc-env=DDPM_CODE_SHA256={}", fingerprint::fingerprint(root, &fingerprint::CODE_INPUTS));
    println!("cargo:rustc-env=DDPM_BUILD_SHA256={}", fingerprint::fingerprint(root, &fingerprint::BUILD_INPUTS));
}
