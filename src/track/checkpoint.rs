//! Checkpoints of a run in `checkpoints/`: `step-00000500.safetensors` (named tensors: the weights,
//! the EMA weights, the optimizer's moments) and `step-00000500.json` (the step, the sha256 of the
//! tensors file and any other state). Both are written atomically, the JSON last, so a checkpoint
//! exists only once complete; after each save only the last `KEEP` remain. Loading checks the sha256
//! and falls back to the previous checkpoint when the latest is corrupt.
use super::{atomic_replace, atomic_write, sha256_hex};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

pub const KEEP: usize = 2;

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
    step: usize,
    tensors_sha256: String,
    state: serde_json::Value,
}

pub struct Checkpoint {
    pub step: usize,
    /// On the CPU; copy them to the device.
    pub tensors: HashMap<String, Tensor>,
    pub state: serde_json::Value,
}

fn stem(dir: &Path, step: usize) -> PathBuf {
    dir.join(format!("step-{step:08}"))
}

/// The steps of the complete checkpoints (those with a JSON record), newest first.
pub fn steps(dir: &Path) -> Vec<usize> {
    let mut steps: Vec<usize> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("step-")?.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    steps.sort_unstable_by(|a, b| b.cmp(a));
    steps
}

pub fn save(dir: &Path, step: usize, tensors: &[(String, Tensor)], state: serde_json::Value) -> Result<()> {
    save_keeping(dir, step, tensors, state, KEEP)
}

/// `save`, keeping the newest `keep` records of the folder (`usize::MAX`: all of them).
pub fn save_keeping(
    dir: &Path,
    step: usize,
    tensors: &[(String, Tensor)],
    state: serde_json::Value,
    keep: usize,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let base = stem(dir, step);
    let tensor_path = base.with_extension("safetensors");
    atomic_replace(&tensor_path, |tmp| Ok(Tensor::write_safetensors(tensors, tmp)?))?;
    let bytes = std::fs::read(&tensor_path)?;
    let meta = Meta { format: 1, step, tensors_sha256: sha256_hex(&bytes), state };
    atomic_write(&base.with_extension("json"), serde_json::to_string_pretty(&meta)?.as_bytes())?;
    for old in steps(dir).into_iter().skip(keep) {
        let old = stem(dir, old);
        let _ = std::fs::remove_file(old.with_extension("json"));
        let _ = std::fs::remove_file(old.with_extension("safetensors"));
    }
    Ok(())
}

/// The checkpoint of `step`, checked against its recorded sha256.
pub fn load(dir: &Path, step: usize) -> Result<Checkpoint> {
    let base = stem(dir, step);
    let json = base.with_extension("json");
    let meta: Meta = serde_json::from_str(&std::fs::read_to_string(&json)?)
        .with_context(|| format!("{}: unreadable", json.display()))?;
    let tensor_path = base.with_extension("safetensors");
    let bytes = std::fs::read(&tensor_path).with_context(|| format!("cannot read {}", tensor_path.display()))?;
    let actual = sha256_hex(&bytes);
    if actual != meta.tensors_sha256 {
        bail!("{}: checksum mismatch (sha256 {actual}, recorded {})", tensor_path.display(), meta.tensors_sha256);
    }
    let tensors = Tensor::read_safetensors(&tensor_path)?.into_iter().collect();
    Ok(Checkpoint { step: meta.step, tensors, state: meta.state })
}

/// The state the checkpoint of `step` recorded (its record only; the tensors are not read).
pub fn state(dir: &Path, step: usize) -> Result<serde_json::Value> {
    let json = stem(dir, step).with_extension("json");
    let text = std::fs::read_to_string(&json).with_context(|| format!("cannot read {}", json.display()))?;
    let meta: Meta = serde_json::from_str(&text).with_context(|| format!("{}: unreadable", json.display()))?;
    Ok(meta.state)
}

/// Whether the checkpoint of `step` is whole: its record reads and its tensors file has the recorded
/// sha256 (what [`load`] checks, without decoding the tensors).
pub fn verify(dir: &Path, step: usize) -> Result<()> {
    let base = stem(dir, step);
    let json = base.with_extension("json");
    let text = std::fs::read_to_string(&json).with_context(|| format!("cannot read {}", json.display()))?;
    let meta: Meta = serde_json::from_str(&text).with_context(|| format!("{}: unreadable", json.display()))?;
    let tensor_path = base.with_extension("safetensors");
    let bytes = std::fs::read(&tensor_path).with_context(|| format!("cannot read {}", tensor_path.display()))?;
    let actual = sha256_hex(&bytes);
    if actual != meta.tensors_sha256 {
        bail!("{}: checksum mismatch (sha256 {actual}, recorded {})", tensor_path.display(), meta.tensors_sha256);
    }
    Ok(())
}

/// The steps a resume would load and would skip: the newest checkpoint that verifies, and the newer
/// ones that do not (newest first). What a resume records and `ddpm plan` shows, so that neither
/// names a corrupt checkpoint.
pub fn valid_step(dir: &Path) -> (Option<usize>, Vec<usize>) {
    let mut corrupt = Vec::new();
    for step in steps(dir) {
        if verify(dir, step).is_ok() {
            return (Some(step), corrupt);
        }
        corrupt.push(step);
    }
    (None, corrupt)
}

/// The newest checkpoint that passes its checksum, and a message for each newer one that did not.
pub fn load_latest(dir: &Path) -> (Option<Checkpoint>, Vec<String>) {
    let mut problems = Vec::new();
    for step in steps(dir) {
        match load(dir, step) {
            Ok(c) => return (Some(c), problems),
            Err(e) => problems.push(format!("checkpoint at step {step} is corrupt, skipped: {e:#}")),
        }
    }
    (None, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors(v: f32) -> Vec<(String, Tensor)> {
        vec![("w".to_string(), Tensor::from_slice(&[v, v + 1.0]))]
    }

    #[test]
    fn keeps_the_last_two_and_falls_back_past_a_corrupt_one() {
        let dir = tempfile::tempdir().unwrap();
        for step in [5, 10, 15] {
            save(dir.path(), step, &tensors(step as f32), serde_json::json!({ "k": step })).unwrap();
        }
        assert_eq!(steps(dir.path()), vec![15, 10], "only the last two are kept");
        let (latest, problems) = load_latest(dir.path());
        let latest = latest.unwrap();
        assert_eq!((latest.step, latest.state["k"].as_u64()), (15, Some(15)));
        assert!(problems.is_empty());
        assert_eq!(Vec::<f32>::try_from(&latest.tensors["w"]).unwrap(), vec![15.0, 16.0]);

        // Flip one byte of the newest tensors file: it is reported and step 10 is used instead.
        let path = dir.path().join("step-00000015.safetensors");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        let (fallback, problems) = load_latest(dir.path());
        assert_eq!(fallback.unwrap().step, 10);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("step 15") && problems[0].contains("checksum mismatch"), "{}", problems[0]);
    }

    #[test]
    fn the_valid_step_skips_corrupt_checkpoints_as_loading_does() {
        let dir = tempfile::tempdir().unwrap();
        for step in [20, 30] {
            save(dir.path(), step, &tensors(step as f32), serde_json::Value::Null).unwrap();
        }
        assert_eq!(valid_step(dir.path()), (Some(30), vec![]));
        let corrupt = |step: usize| {
            let path = dir.path().join(format!("step-{step:08}.safetensors"));
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[0] ^= 0x01;
            std::fs::write(&path, bytes).unwrap();
        };
        corrupt(30);
        assert_eq!(valid_step(dir.path()), (Some(20), vec![30]));
        assert_eq!(load_latest(dir.path()).0.unwrap().step, 20, "the step loading takes");
        corrupt(20);
        assert_eq!(valid_step(dir.path()), (None, vec![30, 20]));
        assert!(load_latest(dir.path()).0.is_none());
    }

    #[test]
    fn a_checkpoint_without_its_record_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), 5, &tensors(1.0), serde_json::Value::Null).unwrap();
        std::fs::write(dir.path().join("step-00000010.safetensors"), b"partial").unwrap();
        assert_eq!(steps(dir.path()), vec![5]);
    }
}
