//! Datasets: fetching with checksums, IDX reading, and the device-resident training set.
pub mod fetch;
pub mod idx;

use crate::config::{DataConfig, DatasetName};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

pub use fetch::Split;

/// `DDPM_DATA_DIR`, or `data/` in the working directory.
pub fn data_dir() -> PathBuf {
    std::env::var_os("DDPM_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("data"))
}

/// sha256 of the training images' content: the dataset's part of a run's identity.
pub fn train_images_fingerprint(name: DatasetName) -> &'static str {
    images_fingerprint(name, Split::Train)
}

/// sha256 of a split's images.
pub fn images_fingerprint(name: DatasetName, split: Split) -> &'static str {
    fetch::source(name).file(split, true).content_sha256
}

/// A split's images as a `[N, 1, H, W]` u8 tensor on the CPU, fetched first if missing.
pub fn load_images_u8(name: DatasetName, split: Split, data_dir: &Path) -> Result<Tensor> {
    if !fetch::is_present(name, data_dir) {
        eprintln!("fetching {} into {}", name.as_str(), data_dir.display());
        fetch::fetch(name, data_dir)?;
    }
    let src = fetch::source(name);
    let spec = src.file(split, true);
    let path = src.dir(data_dir).join(spec.file);
    let bytes = fetch::read_verified(&path, spec)?;
    let array = idx::parse(&bytes, &path)?;
    let [n, h, w] = array.dims[..] else {
        bail!("{}: expected 3 dimensions (images, rows, columns), found {:?}", path.display(), array.dims);
    };
    Ok(Tensor::from_slice(&array.data).reshape([n as i64, 1, h as i64, w as i64]))
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
}

impl Dataset {
    pub fn load(cfg: &DataConfig, split: Split, data_dir: &Path, device: Device) -> Result<Self> {
        let mut images = load_images_u8(cfg.name, split, data_dir)?;
        if let (Some(limit), Split::Train) = (cfg.limit, split) {
            let n = images.size()[0].min(limit as i64);
            images = images.narrow(0, 0, n);
        }
        let pixels = resize_pixels(&images.to_device(device), cfg.image_size);
        Ok(Self { images: pixels / 127.5 - 1.0 })
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
