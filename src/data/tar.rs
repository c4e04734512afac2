//! Reading the regular files out of a (gzipped) tar archive, enough for `cifar-10-binary.tar.gz`:
//! POSIX ustar and old-style GNU headers, 512-byte blocks, octal sizes, the ustar name prefix and GNU
//! long names (`././@LongLink`). Nothing is written to disk: the caller picks the members it wants.
use anyhow::{bail, Context, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

const BLOCK: usize = 512;

/// A regular file of the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub data: Vec<u8>,
}

/// Every regular file of the archive at `path`, in archive order; gzip is detected by its magic bytes.
pub fn read_members(path: &Path) -> Result<Vec<Member>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() + raw.len() / 8);
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .with_context(|| format!("{}: not a valid gzip stream", path.display()))?;
        out
    } else {
        raw
    };
    parse(&bytes).with_context(|| format!("{}: not a valid tar archive", path.display()))
}

/// The regular files of an uncompressed tar archive.
pub fn parse(bytes: &[u8]) -> Result<Vec<Member>> {
    let mut members = Vec::new();
    let mut pos = 0;
    let mut long_name: Option<String> = None;
    while pos + BLOCK <= bytes.len() {
        let header = &bytes[pos..pos + BLOCK];
        if header.iter().all(|&b| b == 0) {
            break; // the end-of-archive blocks
        }
        check_sum(header, pos)?;
        let size = octal(&header[124..136]).with_context(|| format!("header at byte {pos}: bad size field"))?;
        let start = pos + BLOCK;
        let end = start.checked_add(size).filter(|&e| e <= bytes.len()).with_context(|| {
            format!("header at byte {pos}: member of {size} bytes runs past the end ({} bytes)", bytes.len())
        })?;
        let data = &bytes[start..end];
        let name = match long_name.take() {
            Some(n) => n,
            None => {
                let base = text(&header[0..100]);
                let prefix = if &header[257..262] == b"ustar" { text(&header[345..500]) } else { String::new() };
                if prefix.is_empty() {
                    base
                } else {
                    format!("{prefix}/{base}")
                }
            }
        };
        match header[156] {
            b'0' | 0 => members.push(Member { name, data: data.to_vec() }),
            b'L' => long_name = Some(text(data)),
            _ => {} // directories, links and extended headers carry no file content we need
        }
        pos = start + size.div_ceil(BLOCK) * BLOCK;
    }
    Ok(members)
}

/// A NUL-terminated field.
fn text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// An octal number, space/NUL padded.
fn octal(field: &[u8]) -> Result<usize> {
    let t = text(field);
    let t = t.trim_matches(|c: char| c == ' ' || c == '\0');
    if t.is_empty() {
        return Ok(0);
    }
    usize::from_str_radix(t, 8).with_context(|| format!("{t:?} is not an octal number"))
}

/// The header checksum: the sum of its bytes with the checksum field counted as spaces.
fn check_sum(header: &[u8], pos: usize) -> Result<()> {
    let recorded = octal(&header[148..156]).with_context(|| format!("header at byte {pos}: bad checksum field"))?;
    let sum: usize =
        header.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { b as usize }).sum();
    if sum != recorded {
        bail!("header at byte {pos}: checksum {recorded} recorded, {sum} computed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive made by the system's `tar` (an independent writer), with a nested path, a name
    /// longer than 100 bytes and a member whose size is not a multiple of 512.
    #[test]
    fn reads_what_gnu_tar_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let long = "d".repeat(60) + "/" + &"f".repeat(70) + ".bin";
        std::fs::create_dir_all(tmp.path().join("src/a").join("d".repeat(60))).unwrap();
        std::fs::write(tmp.path().join("src/a/one.bin"), vec![7u8; 1000]).unwrap();
        std::fs::write(tmp.path().join("src/a").join(&long), b"xyz").unwrap();
        let archive = tmp.path().join("x.tar.gz");
        let ok = std::process::Command::new("tar")
            .args(["czf", archive.to_str().unwrap(), "-C", tmp.path().join("src").to_str().unwrap(), "a"])
            .status()
            .unwrap();
        assert!(ok.success());
        let mut members = read_members(&archive).unwrap();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(members.len(), 2, "{:?}", members.iter().map(|m| &m.name).collect::<Vec<_>>());
        assert_eq!(members[0].name, format!("a/{long}"));
        assert_eq!(members[0].data, b"xyz");
        assert_eq!((members[1].name.as_str(), members[1].data.len()), ("a/one.bin", 1000));
        assert!(members[1].data.iter().all(|&b| b == 7));
    }

    #[test]
    fn a_corrupt_header_is_an_error() {
        let mut block = vec![0u8; 1024];
        block[..5].copy_from_slice(b"x.bin");
        block[124..135].copy_from_slice(b"00000000001");
        block[148..156].copy_from_slice(b"0000001\0"); // wrong checksum
        block[156] = b'0';
        let err = parse(&block).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
    }
}
