//! The IDX format of MNIST and Fashion-MNIST (yann.lecun.com/exdb/mnist): a 4-byte magic number
//! (two zero bytes, a type code, the number of dimensions), one big-endian u32 per dimension, then
//! the values. Files may be gzipped (detected by the gzip magic bytes, not the name).
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The only element type used by these datasets.
const TYPE_U8: u8 = 0x08;

#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not an IDX file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: truncated or padded IDX file: dimensions {dims:?} need {expected} bytes, the file has {actual}")]
    Length { path: PathBuf, dims: Vec<usize>, expected: usize, actual: usize },
}

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads the whole file, decompressing if it is gzipped.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>, IdxError> {
    let io = |source| IdxError::Io { path: path.to_path_buf(), source };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(raw.as_slice()).read_to_end(&mut out).map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses IDX bytes; `path` is only used in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<IdxArray, IdxError> {
    let format = |reason: String| IdxError::Format { path: path.to_path_buf(), reason };
    if bytes.len() < 4 {
        return Err(format(format!("{} bytes, shorter than the 4-byte magic number", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format(format!("magic number {:02x?} does not start with two zero bytes", &bytes[..4])));
    }
    if bytes[2] != TYPE_U8 {
        return Err(format(format!("element type 0x{:02x} is not supported (only 0x08, unsigned byte)", bytes[2])));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 {
        return Err(format("zero dimensions".into()));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(format(format!(
            "{} bytes, shorter than the {header}-byte header of {ndims} dimensions",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|count| count.checked_add(header))
        .ok_or_else(|| format(format!("dimensions {dims:?} overflow")))?;
    if bytes.len() != expected {
        return Err(IdxError::Length { path: path.to_path_buf(), dims, expected, actual: bytes.len() });
    }
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}

pub fn read(path: &Path) -> Result<IdxArray, IdxError> {
    parse(&read_bytes(path)?, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    /// A 2×2×3 u8 array written by hand: magic 00 00 08 03, dims 2, 2, 3 big-endian, 12 values.
    fn sample() -> Vec<u8> {
        let mut b = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        b.extend(0u8..12);
        b
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn reads_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = read(&write(dir.path(), "ok-idx3-ubyte", &sample())).unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data, (0u8..12).collect::<Vec<_>>());
    }

    #[test]
    fn reads_gzipped_input() {
        let dir = tempfile::tempdir().unwrap();
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(&sample()).unwrap();
        let a = read(&write(dir.path(), "ok.gz", &enc.finish().unwrap())).unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data[11], 11);
    }

    #[test]
    fn rejects_a_truncated_file_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = sample();
        b.pop();
        let p = write(dir.path(), "short-idx3-ubyte", &b);
        let err = read(&p).unwrap_err();
        assert!(matches!(err, IdxError::Length { expected: 28, actual: 27, .. }), "{err}");
        assert!(err.to_string().contains("short-idx3-ubyte"), "{err}");
    }

    #[test]
    fn rejects_a_wrong_magic_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = sample();
        b[0] = 1;
        let err = read(&write(dir.path(), "bad", &b)).unwrap_err();
        assert!(err.to_string().contains("magic number"), "{err}");
        let mut b = sample();
        b[2] = 0x0d; // float32 elements
        let err = read(&write(dir.path(), "float", &b)).unwrap_err();
        assert!(err.to_string().contains("0x0d"), "{err}");
    }
}
