//! Sets of images to compare: a dataset split (optionally a range of it, optionally resized) or a
//! folder of PNG files, read in batches so a large folder is never in memory at once.
use crate::config::{DataConfig, DatasetName};
use crate::data::{self, Split};
use crate::grid::Image;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq)]
pub enum ImageSet {
    /// `mnist:test`, `fashion_mnist:train[0:5000]`: images `start..end` of a split of the dataset
    /// `data` (its name, and where user-supplied data is).
    Dataset { data: DataConfig, split: Split, start: usize, end: Option<usize>, size: Option<i64> },
    /// Every `.png` in a folder (sorted by name), converted to RGB as pytorch-fid does.
    Folder(PathBuf),
}

impl ImageSet {
    /// `NAME:SPLIT`, `NAME:SPLIT[START:END]` (either end may be left out) or a folder path. CIFAR-10
    /// is read from `DDPM_CIFAR10`; an image folder as a dataset is named by the path alone.
    pub fn parse(text: &str) -> Result<Self> {
        let Some((name, rest)) = text.split_once(':') else {
            let path = PathBuf::from(text);
            if !path.is_dir() {
                bail!(
                    "{text:?} is neither a folder nor a dataset: use a folder of PNG files or NAME:SPLIT[START:END] \
                     with NAME one of {} and SPLIT train or test",
                    DatasetName::ALL.map(|d| d.as_str()).join(", ")
                );
            }
            return Ok(ImageSet::Folder(path));
        };
        let allowed = [DatasetName::Mnist, DatasetName::FashionMnist, DatasetName::Cifar10];
        let dataset = DatasetName::parse(name).filter(|d| allowed.contains(d)).with_context(|| {
            format!("{text:?}: unknown dataset {name:?}; allowed are {}", allowed.map(|d| d.as_str()).join(", "))
        })?;
        let mut data = DataConfig::named(dataset);
        crate::data::resolve_path(&mut data)?;
        let (split, range) = match rest.split_once('[') {
            Some((s, r)) => (s, Some(r.strip_suffix(']').with_context(|| format!("{text:?}: missing `]`"))?)),
            None => (rest, None),
        };
        let split = match split {
            "train" => Split::Train,
            "test" => Split::Test,
            other => bail!("{text:?}: unknown split {other:?}; allowed are train, test"),
        };
        let (mut start, mut end) = (0, None);
        if let Some(r) = range {
            let (a, b) = r.split_once(':').with_context(|| format!("{text:?}: a range is [START:END]"))?;
            let num = |s: &str| s.trim().parse::<usize>().with_context(|| format!("{text:?}: {s:?} is not a number"));
            if !a.is_empty() {
                start = num(a)?;
            }
            if !b.is_empty() {
                end = Some(num(b)?);
            }
            if end.is_some_and(|e| e <= start) {
                bail!("{text:?}: the range is empty");
            }
        }
        Ok(ImageSet::Dataset { data, split, start, end, size: None })
    }

    pub fn describe(&self) -> String {
        match self {
            ImageSet::Dataset { data, split, start, end, size } => {
                let split = if *split == Split::Train { "train" } else { "test" };
                let range = match (start, end) {
                    (0, None) => String::new(),
                    (s, None) => format!("[{s}:]"),
                    (s, Some(e)) => format!("[{s}:{e}]"),
                };
                let size = size.map(|s| format!(" at {s}x{s}")).unwrap_or_default();
                format!("{}:{split}{range}{size}", data.name.as_str())
            }
            ImageSet::Folder(p) => p.display().to_string(),
        }
    }

    /// Calls `each` with batches of at most `batch` images as float pixel values 0..255,
    /// `[B, C, H, W]` on the CPU; returns the number of images.
    pub fn for_each_batch(
        &self,
        data_dir: &Path,
        batch: i64,
        each: &mut dyn FnMut(&Tensor) -> Result<()>,
    ) -> Result<i64> {
        match self {
            ImageSet::Dataset { data: cfg, split, start, end, size } => {
                let all = data::load_images_u8(cfg, *split, data_dir)?;
                let n = all.size()[0] as usize;
                let end = end.unwrap_or(n);
                if end > n || *start >= end {
                    bail!("{}: the split has {n} images", self.describe());
                }
                let images = all.narrow(0, *start as i64, (end - start) as i64);
                for chunk in images.split(batch, 0) {
                    let pixels = match size {
                        Some(s) => data::resize_pixels(&chunk, *s),
                        None => chunk.to_kind(Kind::Float),
                    };
                    each(&pixels)?;
                }
                Ok((end - start) as i64)
            }
            ImageSet::Folder(dir) => {
                let files = png_files(dir)?;
                for chunk in files.chunks(batch as usize) {
                    let images = chunk.iter().map(|p| read_png_rgb(p)).collect::<Result<Vec<_>>>()?;
                    let shape = images[0].size();
                    if let Some((p, t)) = chunk.iter().zip(&images).find(|(_, t)| t.size() != shape) {
                        bail!("{}: size {:?} differs from the folder's first image {:?}", p.display(), t.size(), shape);
                    }
                    each(&Tensor::stack(&images, 0))?;
                }
                Ok(files.len() as i64)
            }
        }
    }
}

fn png_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    if files.len() < 2 {
        bail!("{}: {} PNG files; FID needs at least 2", dir.display(), files.len());
    }
    Ok(files)
}

/// A PNG file as 8-bit pixels: 1 to 4 channels (grey, grey+alpha, RGB, RGBA; palettes expanded,
/// 16-bit reduced to 8).
pub fn read_png(path: &Path) -> Result<Image> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().with_context(|| format!("{}: not a PNG file", path.display()))?;
    let mut buf = vec![0; reader.output_buffer_size().context("PNG too large")?];
    let info = reader.next_frame(&mut buf).with_context(|| format!("{}: cannot decode", path.display()))?;
    buf.truncate(info.buffer_size());
    Ok(Image { width: info.width, height: info.height, channels: info.color_type.samples() as u32, pixels: buf })
}

/// A PNG as `[3, H, W]` float pixels 0..255 (grey repeated, alpha dropped; 16-bit reduced to 8).
pub fn read_png_rgb(path: &Path) -> Result<Tensor> {
    let im = read_png(path)?;
    let (h, w, channels) = (im.height as i64, im.width as i64, im.channels as i64);
    let hwc = Tensor::from_slice(&im.pixels).reshape([h, w, channels]);
    let rgb = match channels {
        1 | 2 => hwc.narrow(2, 0, 1).repeat([1, 1, 3]),
        _ => hwc.narrow(2, 0, 3),
    };
    Ok(rgb.permute([2, 0, 1]).to_kind(Kind::Float).to_device(Device::Cpu))
}

/// Writes images in [-1, 1] (`[N, C, H, W]`) as `prefix000000.png`, … into `dir`, numbered from `first`.
pub fn write_pngs(images: &Tensor, dir: &Path, first: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let n = images.size()[0];
    for i in 0..n {
        let image = crate::grid::make_grid(&images.narrow(0, i, 1), 1, 0)?;
        crate::track::atomic_write(&dir.join(format!("{:06}.png", first + i as usize)), &image.to_png()?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_datasets_ranges_and_rejects_bad_names() {
        assert_eq!(
            ImageSet::parse("mnist:test[0:5000]").unwrap(),
            ImageSet::Dataset {
                data: DataConfig::named(DatasetName::Mnist),
                split: Split::Test,
                start: 0,
                end: Some(5000),
                size: None
            }
        );
        assert_eq!(
            ImageSet::parse("fashion_mnist:train[100:]").unwrap(),
            ImageSet::Dataset {
                data: DataConfig::named(DatasetName::FashionMnist),
                split: Split::Train,
                start: 100,
                end: None,
                size: None
            }
        );
        let err = ImageSet::parse("cifar:test").unwrap_err().to_string();
        assert!(err.contains("unknown dataset") && err.contains("fashion_mnist, cifar10"), "{err}");
        let err = ImageSet::parse("mnist:val").unwrap_err().to_string();
        assert!(err.contains("allowed are train, test"), "{err}");
        assert!(ImageSet::parse("mnist:test[5:5]").is_err());
        assert!(ImageSet::parse("/no/such/folder").unwrap_err().to_string().contains("neither a folder"));
    }

    #[test]
    fn pngs_round_trip_through_a_folder_as_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let pixels = Tensor::from_slice(&[0u8, 64, 128, 255, 1, 2]).reshape([1, 1, 2, 3]).to_kind(Kind::Float);
        let images = &pixels / 127.5 - 1.0;
        write_pngs(&images.repeat([3, 1, 1, 1]), dir.path(), 0).unwrap();
        let mut seen = Vec::new();
        let n = ImageSet::Folder(dir.path().to_path_buf())
            .for_each_batch(Path::new("data"), 2, &mut |b| {
                seen.push(b.shallow_clone());
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 3);
        assert_eq!(seen.iter().map(|b| b.size()[0]).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(seen[0].size(), vec![2, 3, 2, 3]);
        let back = Vec::<f32>::try_from(seen[1].get(0).get(2).flatten(0, 1)).unwrap();
        assert_eq!(back, vec![0.0, 64.0, 128.0, 255.0, 1.0, 2.0]);
    }
}
