//! Datasets: fetching with checksums, IDX, CIFAR-10 and image-folder reading, and the device-resident
//! training set with its labels.
pub mod cifar;
pub mod fetch;
pub mod folder;
pub mod idx;
pub mod tar;

use crate::config::{DataConfig, DatasetName};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

pub use fetch::Split;

/// `DDPM_DATA_DIR`, or `data/` in the working directory.
pub fn data_dir() -> PathBuf {
    std::env::var_os("DDPM_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("data"))
}

/// Fills in where user-supplied data is: `DDPM_CIFAR10` for CIFAR-10 without `data.path`, and makes
/// the path absolute (from the current directory) so that a run's process finds it from anywhere.
pub fn resolve_path(cfg: &mut DataConfig) -> Result<()> {
    if cfg.name == DatasetName::Cifar10 && cfg.path.is_none() {
        cfg.path = std::env::var("DDPM_CIFAR10").ok().filter(|p| !p.is_empty());
    }
    if let Some(p) = &cfg.path {
        let abs = std::path::absolute(p).with_context(|| format!("data.path = {p:?}: cannot make it absolute"))?;
        cfg.path = Some(abs.display().to_string());
    }
    Ok(())
}

/// sha256 of the training images' content: the dataset's part of a run's identity.
pub fn train_images_fingerprint(cfg: &DataConfig) -> Result<String> {
    images_fingerprint(cfg, Split::Train)
}

/// Fingerprints already computed by this process (reading CIFAR-10 or a folder takes a moment, and an
/// experiment asks once per run).
static FINGERPRINTS: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

/// sha256 of a split's images: the published files' for MNIST and Fashion-MNIST; for CIFAR-10 the
/// split's batch files; for a folder its content hash with the split.
pub fn images_fingerprint(cfg: &DataConfig, split: Split) -> Result<String> {
    if let Some(src) = fetch::source(cfg.name) {
        return Ok(src.file(split, true).content_sha256.to_string());
    }
    let key = format!("{}|{:?}|{:?}|{}", cfg.name.as_str(), cfg.path, split, cfg.test_images);
    if let Some(v) = FINGERPRINTS.lock().expect("fingerprints").get_or_insert_with(HashMap::new).get(&key) {
        return Ok(v.clone());
    }
    let value = match cfg.name {
        DatasetName::Cifar10 => cifar::fingerprint(&cifar::locate(user_path(cfg).as_deref(), &data_dir())?, split)?,
        _ => {
            let index = folder_index(cfg)?;
            let indices = index.split_indices(split, cfg.test_images)?;
            let id = serde_json::json!({ "folder_sha256": index.content_sha256, "images": indices });
            crate::track::sha256_hex(id.to_string().as_bytes())
        }
    };
    FINGERPRINTS.lock().expect("fingerprints").get_or_insert_with(HashMap::new).insert(key, value.clone());
    Ok(value)
}

fn user_path(cfg: &DataConfig) -> Option<PathBuf> {
    cfg.path.as_ref().map(PathBuf::from)
}

fn folder_index(cfg: &DataConfig) -> Result<folder::FolderIndex> {
    let path = user_path(cfg).context("data.path: dataset `image_folder` needs the folder")?;
    folder::FolderIndex::scan(&path)
}

/// The classes of a labelled dataset (an image folder has them when its images lie in sub-folders).
pub fn class_names(cfg: &DataConfig) -> Result<Vec<String>> {
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect();
    Ok(match cfg.name {
        DatasetName::Mnist => names(&["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]),
        DatasetName::FashionMnist => names(&[
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ]),
        DatasetName::Cifar10 => names(&cifar::CLASSES),
        DatasetName::ImageFolder => folder_index(cfg)?.classes,
    })
}

/// A split: its images as a `[N, C, H, W]` u8 tensor on the CPU (at their stored size; an image
/// folder's already at `image_size`) and their class labels `[N]` (i64; −1 where there are none).
/// MNIST and Fashion-MNIST are fetched first if missing.
pub fn load_split(cfg: &DataConfig, split: Split, data_dir: &Path) -> Result<(Tensor, Tensor)> {
    match cfg.name {
        DatasetName::Mnist | DatasetName::FashionMnist => {
            let name = cfg.name;
            if !fetch::is_present(name, data_dir) {
                eprintln!("fetching {} into {}", name.as_str(), data_dir.display());
                fetch::fetch(name, data_dir)?;
            }
            let src = fetch::source(name).expect("a fetched dataset");
            let read = |images: bool| -> Result<(idx::IdxArray, PathBuf)> {
                let spec = src.file(split, images);
                let path = src.dir(data_dir).join(spec.file);
                let bytes = fetch::read_verified(&path, spec)?;
                Ok((idx::parse(&bytes, &path)?, path))
            };
            let (array, path) = read(true)?;
            let [n, h, w] = array.dims[..] else {
                bail!("{}: expected 3 dimensions (images, rows, columns), found {:?}", path.display(), array.dims);
            };
            let images = Tensor::from_slice(&array.data).reshape([n as i64, 1, h as i64, w as i64]);
            let (labels, path) = read(false)?;
            if labels.dims != [n] {
                bail!("{}: {:?} labels for {n} images", path.display(), labels.dims);
            }
            Ok((images, Tensor::from_slice(&labels.data).to_kind(Kind::Int64)))
        }
        DatasetName::Cifar10 => {
            let folder = cifar::locate(user_path(cfg).as_deref(), data_dir)?;
            let (images, labels, n) = cifar::read_split(&folder, split)?;
            let side = cifar::SIDE as i64;
            let images = Tensor::from_slice(&images).reshape([n as i64, 3, side, side]);
            Ok((images, Tensor::from_slice(&labels).to_kind(Kind::Int64)))
        }
        DatasetName::ImageFolder => {
            let index = folder_index(cfg)?;
            let (images, labels) = folder::load_all(&index, cfg.image_size, cfg.channels(), data_dir)?;
            let which: Vec<i64> = index.split_indices(split, cfg.test_images)?.into_iter().map(|i| i as i64).collect();
            if which.is_empty() {
                bail!(
                    "data.test_images = 0: the image folder {} has no test split; set data.test_images",
                    index.root.display()
                );
            }
            let which = Tensor::from_slice(&which);
            Ok((images.index_select(0, &which), labels.index_select(0, &which)))
        }
    }
}

/// A split's images as a `[N, C, H, W]` u8 tensor on the CPU.
pub fn load_images_u8(cfg: &DataConfig, split: Split, data_dir: &Path) -> Result<Tensor> {
    Ok(load_split(cfg, split, data_dir)?.0)
}

/// 8-bit images (any kind) as float pixel values 0..255, resized bilinearly to `size`×`size` and
/// rounded back to whole values when their side differs.
pub fn resize_pixels(images: &Tensor, size: i64) -> Tensor {
    let images = images.to_kind(Kind::Float);
    let (h, w) = (images.size()[2], images.size()[3]);
    if (h, w) == (size, size) {
        return images;
    }
    images.upsample_bilinear2d([size, size], false, None, None).round().clamp(0.0, 255.0)
}

/// A split as one float tensor on the device, `[N, C, S, S]` with pixels scaled to [-1, 1], resized
/// once (bilinear) to `image_size` and then rounded back to the 8-bit grid 2k/255 − 1, as the recipes'
/// torchvision `Resize` of PIL images does; the discretised decoder of the bound needs that grid.
pub struct Dataset {
    pub images: Tensor,
    /// Class labels `[N]` (i64) on the device; −1 for images without a class.
    pub labels: Tensor,
    /// How many classes the dataset has (0: none), so that nothing reads the dataset again for it.
    pub classes: usize,
}

impl Dataset {
    pub fn load(cfg: &DataConfig, split: Split, data_dir: &Path, device: Device) -> Result<Self> {
        let (mut images, mut labels) = load_split(cfg, split, data_dir)?;
        if let (Some(limit), Split::Train) = (cfg.limit, split) {
            let n = images.size()[0].min(limit as i64);
            images = images.narrow(0, 0, n);
            labels = labels.narrow(0, 0, n);
        }
        let pixels = resize_pixels(&images.to_device(device), cfg.image_size);
        let classes = class_names(cfg)?.len();
        Ok(Self { images: pixels / 127.5 - 1.0, labels: labels.to_device(device), classes })
    }

    pub fn load_train(cfg: &DataConfig, data_dir: &Path, device: Device) -> Result<Self> {
        Self::load(cfg, Split::Train, data_dir, device)
    }

    pub fn len(&self) -> i64 {
        self.images.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[C, H, W]` of one image.
    pub fn image_shape(&self) -> [i64; 3] {
        let s = self.images.size();
        [s[1], s[2], s[3]]
    }
}
