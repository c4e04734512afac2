//! Any folder of images (PNG, JPEG, BMP, GIF; searched recursively) as a dataset: each image decoded
//! (stb_image, inside libtorch's C API), resized so its shorter side is the configured size (bilinear
//! with antialiasing, as torchvision's `Resize`) and center-cropped to a square (`CenterCrop`). Images
//! in sub-folders take the sub-folder's name as their class. The decoded set is cached as one tensor
//! file under `<data_dir>/image-folders/`, keyed by the folder's content hash, the size and the channels,
//! so a folder is decoded once and a changed folder is decoded again.
use super::Split;
use crate::track::{atomic_replace, atomic_write, sha256_hex};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub const EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "bmp", "gif"];

/// The images of a folder, sorted by their path relative to it.
#[derive(Debug, Clone)]
pub struct FolderIndex {
    pub root: PathBuf,
    pub files: Vec<String>,
    /// The class names (sorted sub-folder names) when every image lies in a sub-folder; else empty.
    pub classes: Vec<String>,
    /// sha256 over every file's relative path and content sha256: the folder's identity.
    pub content_sha256: String,
}

impl FolderIndex {
    /// Lists and hashes the folder's images.
    pub fn scan(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            bail!("data.path = {:?}: not a folder (dataset `image_folder` reads a folder of images)", root.display());
        }
        let mut files = Vec::new();
        walk(root, root, &mut files)?;
        files.sort();
        if files.is_empty() {
            bail!(
                "data.path = {:?}: no images found (looked for {} files, recursively)",
                root.display(),
                EXTENSIONS.join(", ")
            );
        }
        let hashes: Vec<String> = files
            .par_iter()
            .map(|f| {
                let path = root.join(f);
                std::fs::read(&path).map(|b| sha256_hex(&b)).with_context(|| format!("cannot read {}", path.display()))
            })
            .collect::<Result<_>>()?;
        let mut hasher = Sha256::new();
        for (f, h) in files.iter().zip(&hashes) {
            hasher.update(format!("{f}\0{h}\n").as_bytes());
        }
        let mut classes: Vec<String> = Vec::new();
        if files.iter().all(|f| f.contains('/')) {
            classes = files.iter().map(|f| f.split('/').next().unwrap_or_default().to_string()).collect();
            classes.dedup();
        }
        Ok(Self { root: root.to_path_buf(), files, classes, content_sha256: crate::track::hex(&hasher.finalize()) })
    }

    /// Which images form the split: the test split is the `test_images` whose path hashes lowest (a
    /// fixed pseudo-random choice across the classes), the training split the rest, both in path order.
    pub fn split_indices(&self, split: Split, test_images: usize) -> Result<Vec<usize>> {
        if test_images >= self.files.len() {
            bail!(
                "data.test_images = {test_images}: the folder {} has {} images; at least one must stay for training",
                self.root.display(),
                self.files.len()
            );
        }
        let mut by_hash: Vec<(String, usize)> =
            self.files.iter().enumerate().map(|(i, f)| (sha256_hex(f.as_bytes()), i)).collect();
        by_hash.sort();
        let mut test: Vec<usize> = by_hash[..test_images].iter().map(|(_, i)| *i).collect();
        test.sort_unstable();
        Ok(match split {
            Split::Test => test,
            Split::Train => (0..self.files.len()).filter(|i| test.binary_search(i).is_err()).collect(),
        })
    }

    fn label_of(&self, file: &str) -> i64 {
        let class = file.split('/').next().unwrap_or_default();
        self.classes.iter().position(|c| c == class).map_or(-1, |p| p as i64)
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            let rel = path.strip_prefix(root).expect("under root").to_string_lossy().replace('\\', "/");
            out.push(rel);
        }
    }
    Ok(())
}

/// One image file as `[channels, size, size]` bytes: decoded to RGB, resized so that its shorter
/// side is `size` (bilinear, antialiased), center-cropped, and for one channel turned to luma
/// (ITU-R 601: 0.299 R + 0.587 G + 0.114 B, as PIL's "L" mode).
pub fn decode(bytes: &[u8], size: i64, channels: i64, path: &Path) -> Result<Tensor> {
    let rgb = tch::vision::image::load_from_memory(bytes)
        .with_context(|| format!("{}: cannot decode the image", path.display()))?;
    let (h, w) = (rgb.size()[1], rgb.size()[2]);
    let scale = size as f64 / h.min(w) as f64;
    let (nh, nw) = (((h as f64 * scale).round() as i64).max(size), ((w as f64 * scale).round() as i64).max(size));
    let x = rgb.to_kind(Kind::Float).unsqueeze(0);
    let resized = if (nh, nw) == (h, w) { x } else { x.internal_upsample_bilinear2d_aa([nh, nw], false, None, None) };
    let (top, left) = ((nh - size) / 2, (nw - size) / 2);
    let cropped = resized.narrow(2, top, size).narrow(3, left, size).squeeze_dim(0);
    let out = if channels == 1 {
        let weights = Tensor::from_slice(&[0.299f32, 0.587, 0.114]).view([3, 1, 1]);
        (cropped * weights).sum_dim_intlist([0i64].as_slice(), true, Kind::Float)
    } else {
        cropped
    };
    Ok(out.round().clamp(0.0, 255.0).to_kind(Kind::Uint8))
}

/// The folder's images at `size`×`size` with `channels` channels (`[N, C, S, S]` bytes on the CPU)
/// and their labels (`[N]`, −1 without classes), from the cache when the folder is unchanged.
pub fn load_all(index: &FolderIndex, size: i64, channels: i64, data_dir: &Path) -> Result<(Tensor, Tensor)> {
    let key = serde_json::json!({
        "format": 1, "content_sha256": index.content_sha256, "size": size, "channels": channels,
    });
    let hash = &sha256_hex(key.to_string().as_bytes())[..16];
    let dir = data_dir.join("image-folders");
    let base = dir.join(format!("{hash}-{}x{size}x{size}", channels));
    let tensors_path = base.with_extension("safetensors");
    let meta_path = base.with_extension("json");
    if let (Ok(text), Ok(bytes)) = (std::fs::read_to_string(&meta_path), std::fs::read(&tensors_path)) {
        let meta: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if meta["tensors_sha256"].as_str() == Some(sha256_hex(&bytes).as_str()) {
            let t: std::collections::HashMap<String, Tensor> =
                Tensor::read_safetensors(&tensors_path)?.into_iter().collect();
            if let (Some(images), Some(labels)) = (t.get("images"), t.get("labels")) {
                return Ok((images.shallow_clone(), labels.shallow_clone()));
            }
        }
        eprintln!("{}: checksum mismatch; decoding the folder again", tensors_path.display());
    }
    eprintln!(
        "decoding {} images of {} (cached afterwards in {})",
        index.files.len(),
        index.root.display(),
        dir.display()
    );
    let images: Vec<Tensor> = index
        .files
        .par_iter()
        .map(|f| {
            let path = index.root.join(f);
            let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            decode(&bytes, size, channels, &path)
        })
        .collect::<Result<_>>()?;
    let images = Tensor::stack(&images, 0);
    let labels = Tensor::from_slice(&index.files.iter().map(|f| index.label_of(f)).collect::<Vec<i64>>());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tensors = [("images", images.shallow_clone()), ("labels", labels.shallow_clone())];
    atomic_replace(&tensors_path, |tmp| Ok(Tensor::write_safetensors(&tensors, tmp)?))?;
    let meta = serde_json::json!({
        "key": key,
        "folder": index.root.display().to_string(),
        "images": index.files.len(),
        "classes": index.classes,
        "tensors_sha256": sha256_hex(&std::fs::read(&tensors_path)?),
    });
    atomic_write(&meta_path, serde_json::to_string_pretty(&meta)?.as_bytes())?;
    Ok((images, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, w: u32, h: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) {
        let file = std::fs::File::create(path).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend(pixel(x, y));
            }
        }
        enc.write_header().unwrap().write_image_data(&data).unwrap();
    }

    /// A 6×4 image whose left half is red and right half blue, center-cropped to 4×4 without resizing:
    /// columns 1..5 survive, so two red columns then two blue.
    #[test]
    fn center_crop_keeps_the_middle() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.png");
        png(&p, 6, 4, |x, _| if x < 3 { [255, 0, 0] } else { [0, 0, 255] });
        let t = decode(&std::fs::read(&p).unwrap(), 4, 3, &p).unwrap();
        assert_eq!(t.size(), vec![3, 4, 4]);
        let red: Vec<u8> = Vec::try_from(t.get(0).get(0)).unwrap();
        let blue: Vec<u8> = Vec::try_from(t.get(2).get(0)).unwrap();
        assert_eq!((red, blue), (vec![255, 255, 0, 0], vec![0, 0, 255, 255]));
        // Grey: 0.299·255 = 76.245 → 76 for red, 0.114·255 = 29.07 → 29 for blue.
        let g = decode(&std::fs::read(&p).unwrap(), 4, 1, &p).unwrap();
        assert_eq!(Vec::<u8>::try_from(g.get(0).get(3)).unwrap(), vec![76, 76, 29, 29]);
    }

    /// A uniform 8×8 image halved stays uniform (the antialiased filter averages equal values).
    #[test]
    fn resizing_a_uniform_image_keeps_its_value() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("u.png");
        png(&p, 8, 12, |_, _| [10, 200, 90]);
        let t = decode(&std::fs::read(&p).unwrap(), 4, 3, &p).unwrap();
        assert_eq!(t.size(), vec![3, 4, 4]);
        assert_eq!(Vec::<u8>::try_from(t.flatten(0, -1)).unwrap(), [[10u8; 16], [200; 16], [90; 16]].concat());
    }

    #[test]
    fn classes_come_from_sub_folders_and_the_cache_follows_the_content() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("imgs");
        for (class, n) in [("cat", 3), ("dog", 2)] {
            std::fs::create_dir_all(root.join(class)).unwrap();
            for i in 0..n {
                png(&root.join(class).join(format!("{i}.png")), 4, 4, move |_, _| [i as u8 * 40, 0, 0]);
            }
        }
        std::fs::write(root.join("notes.txt"), "not an image").unwrap();
        let index = FolderIndex::scan(&root).unwrap();
        assert_eq!(index.classes, vec!["cat", "dog"]);
        assert_eq!(index.files, vec!["cat/0.png", "cat/1.png", "cat/2.png", "dog/0.png", "dog/1.png"]);
        let data = tmp.path().join("data");
        let (images, labels) = load_all(&index, 4, 3, &data).unwrap();
        assert_eq!(images.size(), vec![5, 3, 4, 4]);
        assert_eq!(Vec::<i64>::try_from(labels).unwrap(), vec![0, 0, 0, 1, 1]);
        assert_eq!(images.int64_value(&[2, 0, 0, 0]), 80);
        // Cached: the same tensors come back without decoding.
        assert_eq!(std::fs::read_dir(data.join("image-folders")).unwrap().count(), 2);
        let (again, _) = load_all(&index, 4, 3, &data).unwrap();
        assert!(again.equal(&images));
        // The splits partition the images; the test split has the requested size.
        let test = index.split_indices(Split::Test, 2).unwrap();
        let train = index.split_indices(Split::Train, 2).unwrap();
        assert_eq!(test.len(), 2);
        let mut all: Vec<usize> = test.iter().chain(&train).copied().collect();
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
        // A changed image changes the folder's hash, so its images are decoded again.
        png(&root.join("dog/1.png"), 4, 4, |_, _| [1, 2, 3]);
        assert_ne!(FolderIndex::scan(&root).unwrap().content_sha256, index.content_sha256);
    }

    #[test]
    fn an_empty_or_missing_folder_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = FolderIndex::scan(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("no images found") && err.contains("png"), "{err}");
        let err = FolderIndex::scan(&tmp.path().join("nope")).unwrap_err().to_string();
        assert!(err.contains("not a folder"), "{err}");
    }
}
