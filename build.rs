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
//! 2. Provenance: the libtorch and CUDA versions (from the torch package's `version.py`).
//! 3. The code fingerprint, part of every run's identity: the sha256 of the files under `src/` and of
//!    `Cargo.lock`, so that a change of code or of a dependency is a different run, while a change
//!    of documentation, tests or experiment files is not.
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

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

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn code_fingerprint() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let mut files = Vec::new();
    files_under(Path::new("src"), &mut files);
    files.push(PathBuf::from("Cargo.lock"));
    files.sort();
    let mut h = Sha256::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        h.update(f.to_string_lossy().as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=DDPM_CODE_SHA256={hex}");
}
