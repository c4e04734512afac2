//! Bookkeeping of runs: the run folder's schema (`run_dir`), status, checkpoints, metrics logs,
//! TensorBoard events, locks. Knows nothing of models.
pub mod checkpoint;
pub mod fingerprint;
pub mod hparams;
pub mod legacy;
pub mod lock;
pub mod metrics;
pub mod run_dir;
pub mod state;
pub mod tensorboard;

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Lower-case hex of a byte string (sha2 0.11's digests do not implement `LowerHex`).
pub use crate::hash::{hex, sha256_hex};

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed to disk, then
/// renamed over the target, so a reader never sees a half-written file.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_replace(path, |tmp| {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    })
}

/// Lets `write` create a temporary file beside `path` (same extension, so format-sniffing writers
/// such as safetensors' still work), then renames it over `path`; the temporary is removed on error.
pub fn atomic_replace(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // pid and a per-process counter: threads of one process writing the same file never collide.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".tmp.{}.{n}.{name}", std::process::id()));
    write(&tmp)
        .and_then(|()| Ok(std::fs::rename(&tmp, path)?))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("cannot write {}", path.display()))
}

/// This machine's host name (for provenance and event file names).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("status.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn hex_encodes_bytes() {
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
    }
}
