//! Link the binary so that it finds libtorch at run time and can use CUDA.
//!
//! torch-sys tells us where libtorch lives (`DEP_TCH_LIBTORCH_LIB`, because its `links = "tch"`).
//! - rpath: the binary then starts without `LD_LIBRARY_PATH`.
//! - `--no-as-needed -ltorch_cuda`: rustc links with `--as-needed`, which drops libtorch_cuda because
//!   no symbol of it is referenced directly; without it `tch::Cuda::is_available()` is false even on a
//!   GPU machine (tch-rs issues 980 and 907). The flags are given with `cargo:rustc-link-arg`, which
//!   reaches this package's binaries and test binaries only, rather than `rustflags`, which would also
//!   hit build scripts and proc macros (link errors, or a rustc crash).
use std::path::Path;

fn main() {
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
}
