//! CIFAR-10 in its binary version (`cifar-10-batches-bin`, www.cs.toronto.edu/~kriz/cifar.html): six
//! files of 10,000 records each, a record being one label byte then 1024 red, 1024 green and 1024 blue
//! bytes of a 32×32 image in row-major order. Five files make the training split, `test_batch.bin`
//! the test split. No registry ships it: the user gives its folder or the official archive
//! (`data.path` or `DDPM_CIFAR10`); the archive is checked against its published checksum and its six
//! files extracted once into `<data_dir>/cifar10/`.
use super::tar;
use super::Split;
use crate::track::{atomic_write, sha256_hex};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The official `cifar-10-binary.tar.gz`: its size and sha256 (its md5 on the dataset's page is
/// c32a1d4ab5d03f1284b67883e8d87530).
pub const ARCHIVE_BYTES: u64 = 170_052_171;
pub const ARCHIVE_SHA256: &str = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd";
pub const URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
pub const FOLDER: &str = "cifar-10-batches-bin";
pub const SIDE: usize = 32;
pub const RECORD: usize = 1 + 3 * SIDE * SIDE;
pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
pub const TEST_FILE: &str = "test_batch.bin";
pub const CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

pub fn where_to_get() -> String {
    format!(
        "CIFAR-10 ships in no registry here: download the binary version from {URL} ({ARCHIVE_BYTES} bytes, sha256 \
         {ARCHIVE_SHA256}) and give the archive, or the `{FOLDER}` folder unpacked from it, as `data.path` or in \
         DDPM_CIFAR10"
    )
}

pub fn split_files(split: Split) -> Vec<&'static str> {
    match split {
        Split::Train => TRAIN_FILES.to_vec(),
        Split::Test => vec![TEST_FILE],
    }
}

/// The folder holding the six batch files for the user's `path` (that folder itself, a folder that
/// contains `cifar-10-batches-bin`, or the archive, which is verified and extracted into
/// `<data_dir>/cifar10/` on first use).
pub fn locate(path: Option<&Path>, data_dir: &Path) -> Result<PathBuf> {
    let Some(path) = path else { bail!("dataset `cifar10` needs its files. {}", where_to_get()) };
    if path.is_file() {
        return extract_official(path, data_dir);
    }
    for folder in [path.to_path_buf(), path.join(FOLDER)] {
        if folder.join(TEST_FILE).is_file() || folder.join(TRAIN_FILES[0]).is_file() {
            let missing: Vec<&str> =
                TRAIN_FILES.iter().chain([&TEST_FILE]).filter(|f| !folder.join(f).is_file()).copied().collect();
            if !missing.is_empty() {
                bail!("{}: CIFAR-10 files missing: {}. {}", folder.display(), missing.join(", "), where_to_get());
            }
            return Ok(folder);
        }
    }
    if !path.exists() {
        bail!("{}: no such file or folder. {}", path.display(), where_to_get());
    }
    bail!("{}: neither the `{FOLDER}` folder nor the archive. {}", path.display(), where_to_get())
}

/// Verifies the official archive and extracts its six files (once: a marker records the archive's
/// checksum) into `<data_dir>/cifar10/cifar-10-batches-bin/`.
fn extract_official(archive: &Path, data_dir: &Path) -> Result<PathBuf> {
    let dest = data_dir.join("cifar10");
    let folder = dest.join(FOLDER);
    let marker = dest.join("extracted-from.json");
    if let Ok(text) = std::fs::read_to_string(&marker) {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if v["archive_sha256"] == ARCHIVE_SHA256 && folder.join(TEST_FILE).is_file() {
            return Ok(folder);
        }
    }
    extract(archive, ARCHIVE_SHA256, &dest)?;
    Ok(folder)
}

/// Checks the archive's sha256 against `expected`, then writes the six batch files into
/// `<dest>/cifar-10-batches-bin/` (staged, then renamed into place) and the marker.
pub fn extract(archive: &Path, expected: &str, dest: &Path) -> Result<()> {
    let bytes = std::fs::read(archive).with_context(|| format!("cannot read {}", archive.display()))?;
    let actual = sha256_hex(&bytes);
    if actual != expected {
        bail!(
            "{}: checksum mismatch ({} bytes, sha256 {actual}; the official archive has {ARCHIVE_BYTES} bytes and \
             sha256 {expected}): not the published CIFAR-10 binary archive. {}",
            archive.display(),
            bytes.len(),
            where_to_get()
        );
    }
    drop(bytes);
    let members = tar::read_members(archive)?;
    let staging = dest.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    let result = (|| -> Result<()> {
        for file in TRAIN_FILES.iter().chain([&TEST_FILE]) {
            let member = members
                .iter()
                .find(|m| m.name.trim_start_matches("./") == format!("{FOLDER}/{file}"))
                .with_context(|| format!("{}: the archive has no {FOLDER}/{file}", archive.display()))?;
            parse_records(&member.data, Path::new(file))?;
            std::fs::write(staging.join(file), &member.data)?;
        }
        let folder = dest.join(FOLDER);
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::rename(&staging, &folder).with_context(|| format!("cannot move the files into {}", folder.display()))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result?;
    let marker = serde_json::json!({ "archive": archive.display().to_string(), "archive_sha256": expected });
    atomic_write(&dest.join("extracted-from.json"), marker.to_string().as_bytes())
}

/// Images `[N·3·32·32]` (channel-major per image, as stored) and labels of one batch file's bytes.
pub fn parse_records(bytes: &[u8], file: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        bail!(
            "{}: {} bytes is not a whole number of {RECORD}-byte CIFAR-10 records (1 label byte + 3×32×32 pixels)",
            file.display(),
            bytes.len()
        );
    }
    let n = bytes.len() / RECORD;
    let mut images = Vec::with_capacity(n * (RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        if record[0] as usize >= CLASSES.len() {
            bail!("{}: record {i} has label {}; CIFAR-10 labels are 0..9", file.display(), record[0]);
        }
        labels.push(record[0]);
        images.extend_from_slice(&record[1..]);
    }
    Ok((images, labels))
}

/// A split's images (`[N, 3, 32, 32]` bytes) and labels, read from the batch files in `folder`.
pub fn read_split(folder: &Path, split: Split) -> Result<(Vec<u8>, Vec<u8>, usize)> {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for file in split_files(split) {
        let path = folder.join(file);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}. {}", path.display(), where_to_get()))?;
        let (i, l) = parse_records(&bytes, &path)?;
        images.extend(i);
        labels.extend(l);
    }
    let n = labels.len();
    Ok((images, labels, n))
}

/// sha256 of a split's batch files, concatenated in order: the content a run trained on.
pub fn fingerprint(folder: &Path, split: Split) -> Result<String> {
    let mut hasher = Sha256::new();
    for file in split_files(split) {
        let path = folder.join(file);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}. {}", path.display(), where_to_get()))?;
        hasher.update(&bytes);
    }
    Ok(crate::track::hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records whose pixels encode (image, channel, row, column) so the layout can be checked.
    pub fn synthetic(n: usize, first_label: u8) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            out.push((first_label as usize + i) as u8 % 10);
            for c in 0..3 {
                for y in 0..SIDE {
                    for x in 0..SIDE {
                        out.push(((i * 7 + c * 50 + y * 3 + x) % 256) as u8);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn records_split_into_labels_and_channel_major_pixels() {
        let (images, labels) = parse_records(&synthetic(3, 4), Path::new("b.bin")).unwrap();
        assert_eq!(labels, vec![4, 5, 6]);
        assert_eq!(images.len(), 3 * 3072);
        // Image 2, green (c = 1), row 5, column 9: (2·7 + 50 + 15 + 9) % 256 = 88.
        assert_eq!(images[2 * 3072 + 1024 + 5 * 32 + 9], 88);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let err = parse_records(&synthetic(2, 0)[..5000], Path::new("x.bin")).unwrap_err().to_string();
        assert!(err.contains("x.bin") && err.contains("3073-byte"), "{err}");
        let mut bad = synthetic(2, 0);
        bad[RECORD] = 12;
        let err = parse_records(&bad, Path::new("y.bin")).unwrap_err().to_string();
        assert!(err.contains("record 1 has label 12"), "{err}");
    }

    #[test]
    fn missing_data_says_where_to_get_it() {
        let tmp = tempfile::tempdir().unwrap();
        let err = locate(None, tmp.path()).unwrap_err().to_string();
        assert!(err.contains(URL) && err.contains("DDPM_CIFAR10") && err.contains(ARCHIVE_SHA256), "{err}");
        std::fs::write(tmp.path().join(TEST_FILE), synthetic(1, 0)).unwrap();
        let err = locate(Some(tmp.path()), tmp.path()).unwrap_err().to_string();
        assert!(err.contains("missing: data_batch_1.bin"), "{err}");
    }

    /// The archive is checked against the expected checksum before anything is extracted; with the
    /// right one, the six files land in `cifar-10-batches-bin/` and read back.
    #[test]
    fn an_archive_is_verified_then_extracted() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src").join(FOLDER);
        std::fs::create_dir_all(&src).unwrap();
        for (i, f) in TRAIN_FILES.iter().chain([&TEST_FILE]).enumerate() {
            std::fs::write(src.join(f), synthetic(2, i as u8)).unwrap();
        }
        let archive = tmp.path().join("cifar-10-binary.tar.gz");
        let ok = std::process::Command::new("tar")
            .args(["czf", archive.to_str().unwrap(), "-C", tmp.path().join("src").to_str().unwrap(), FOLDER])
            .status()
            .unwrap();
        assert!(ok.success());
        let dest = tmp.path().join("data/cifar10");
        let err = extract(&archive, ARCHIVE_SHA256, &dest).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch") && err.contains(URL), "{err}");
        assert!(!dest.join(FOLDER).exists(), "nothing is extracted from an unverified archive");
        let sha = sha256_hex(&std::fs::read(&archive).unwrap());
        extract(&archive, &sha, &dest).unwrap();
        let (images, labels, n) = read_split(&dest.join(FOLDER), Split::Train).unwrap();
        assert_eq!((n, labels, images.len()), (10, vec![0, 1, 1, 2, 2, 3, 3, 4, 4, 5], 10 * 3072));
        assert_eq!(fingerprint(&dest.join(FOLDER), Split::Test).unwrap(), sha256_hex(&synthetic(2, 5)));
    }
}
