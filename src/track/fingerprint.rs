//! Content fingerprints of source trees, shared with build.rs (which includes this file): the sha256
//! of each file's path relative to the root, length and bytes, files in sorted order.
//! - the code fingerprint (`src/` and `Cargo.lock`) is part of every run's identity;
//! - the build fingerprint (also `Cargo.toml`, `build.rs` and `assets/`) says whether two checkouts
//!   build the same binary, so `ddpm reproduce` can skip building a commit whose code is the running
//!   binary's.
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// What the code fingerprint covers.
pub const CODE_INPUTS: [&str; 2] = ["src", "Cargo.lock"];
/// What the build fingerprint covers.
pub const BUILD_INPUTS: [&str; 5] = ["src", "assets", "Cargo.toml", "Cargo.lock", "build.rs"];

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

/// The fingerprint of `inputs` (files or folders, relative to `root`) as lowercase hex.
pub fn fingerprint(root: &Path, inputs: &[&str]) -> String {
    let mut files = Vec::new();
    for input in inputs {
        let path = root.join(input);
        if path.is_dir() {
            files_under(&path, &mut files);
        } else {
            files.push(path);
        }
    }
    let mut relative: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(root).unwrap_or(&f).to_string_lossy().replace('\\', "/");
            (rel, f)
        })
        .collect();
    relative.sort();
    let mut h = Sha256::new();
    for (rel, f) in &relative {
        let bytes = std::fs::read(f).unwrap_or_default();
        h.update(rel.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// build.rs computed both fingerprints of this checkout with the same function; computed again
    /// here (the tests run on the tree they were built from) they agree, and they differ from each
    /// other and from a tree with one changed byte.
    #[test]
    fn the_build_and_this_function_agree() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(fingerprint(root, &CODE_INPUTS), env!("DDPM_CODE_SHA256"));
        assert_eq!(fingerprint(root, &BUILD_INPUTS), env!("DDPM_BUILD_SHA256"));
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("src/a")).unwrap();
        std::fs::write(tmp.path().join("src/a/x.rs"), "fn x() {}").unwrap();
        std::fs::write(tmp.path().join("Cargo.lock"), "lock").unwrap();
        let before = fingerprint(tmp.path(), &CODE_INPUTS);
        assert_eq!(before.len(), 64);
        std::fs::write(tmp.path().join("src/a/x.rs"), "fn y() {}").unwrap();
        assert_ne!(fingerprint(tmp.path(), &CODE_INPUTS), before);
    }
}
