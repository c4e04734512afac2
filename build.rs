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
//!      same libtorch headers (tch exposes neither).
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
    println!("cargo:rustc-env=DDPM_LIBTORCH_VERSION={}", field("__version__"));
    println!("cargo:rustc-env=DDPM_LIBTORCH_CUDA={}", field("cuda"));
}

fn code_fingerprint() {
    for input in fingerprint::BUILD_INPUTS {
        println!("cargo:rerun-if-changed={input}");
    }
    let root = Path::new(".");
    println!("cargo:rustc-env=DDPM_CODE_SHA256={}", fingerprint::fingerprint(root, &fingerprint::CODE_INPUTS));
    println!("cargo:rustc-env=DDPM_BUILD_SHA256={}", fingerprint::fingerprint(root, &fingerprint::BUILD_INPUTS));
}
