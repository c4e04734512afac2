//! Features of an image set, reduced to what FID and KID need (the Gaussian's moments and up to
//! `KID_FEATURES` features), and the cache of reference statistics: computed once per dataset
//! content, split, range, image size and network, under `<data>/fid-reference/`.
use super::fid::{Gaussian, Moments};
use super::images::ImageSet;
use super::inception::{self, Inception};
use crate::data::{self, Split};
use crate::track::{atomic_replace, atomic_write, sha256_hex};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Features kept per set for KID (the first ones); the Gaussian uses every image.
pub const KID_FEATURES: i64 = 10_000;

/// A set reduced to its statistics.
pub struct SetStats {
    pub gaussian: Gaussian,
    /// The first `KID_FEATURES` features, `[M, 2048]` f32 on the CPU.
    pub features: Tensor,
}

/// Accumulates batches of features.
pub struct Collector {
    moments: Moments,
    kept: Vec<Tensor>,
    kept_count: i64,
}

impl Default for Collector {
    fn default() -> Self {
        Self { moments: Moments::new(inception::FEATURES), kept: Vec::new(), kept_count: 0 }
    }
}

impl Collector {
    pub fn add(&mut self, features: &Tensor) {
        self.moments.add(features);
        let keep = (KID_FEATURES - self.kept_count).min(features.size()[0]);
        if keep > 0 {
            self.kept.push(features.narrow(0, 0, keep).to_kind(Kind::Float).to_device(Device::Cpu));
            self.kept_count += keep;
        }
    }

    pub fn finish(self) -> Result<SetStats> {
        if self.moments.count() < 2 {
            bail!("{} images: FID needs at least 2", self.moments.count());
        }
        Ok(SetStats { gaussian: self.moments.gaussian(), features: Tensor::cat(&self.kept, 0) })
    }
}

/// Rows per addition to a set's float64 moment sums. The sums' rounding depends on how the rows are
/// grouped (not on the network's batch: an image's features are the same at any batch), so the grain
/// is fixed: 50, the network's batch when every cached and committed statistic was computed.
pub const SUM_ROWS: i64 = 50;

/// The statistics of any image set, streamed through the network in batches of at least `net.batch`
/// images (a multiple of `SUM_ROWS`) and summed `SUM_ROWS` rows at a time from the set's first image,
/// so the statistics do not depend on the evaluation's batch.
pub fn set_stats(set: &ImageSet, net: &Inception, data_dir: &Path) -> Result<SetStats> {
    let mut c = Collector::default();
    let read = (net.batch.max(1) + SUM_ROWS - 1) / SUM_ROWS * SUM_ROWS;
    set.for_each_batch(data_dir, read, &mut |pixels| {
        let features = net.features_of_pixels(pixels)?;
        for rows in features.split(SUM_ROWS, 0) {
            c.add(&rows);
        }
        Ok(())
    })?;
    c.finish()
}

/// What the cache of a dataset split's statistics is keyed by: the images (their sha256), the slice,
/// the size, the network, and the device kind where it is a GPU. Statistics computed on a GPU differ
/// from the CPU's in the last digits (other kernels): they are cached apart, so that a CPU run never
/// compares its samples with a GPU's reference (and the CPU's key stays what it always was).
fn cache_key(set: &ImageSet, device: tch::Device) -> Result<serde_json::Value> {
    let ImageSet::Dataset { data: cfg, split, start, end, size } = set else {
        bail!("only dataset splits are cached");
    };
    let mut key = json!({
        "format": 1,
        "dataset": cfg.name.as_str(),
        "split": if *split == Split::Train { "train" } else { "test" },
        "images_sha256": data::images_fingerprint(cfg, *split)?,
        "start": start,
        "end": end,
        "size": size,
        "inception_sha256": inception::SHA256,
    });
    if device.is_cuda() {
        key["device"] = "cuda".into();
    }
    Ok(key)
}

/// Reference statistics of a dataset split at `size`×`size`, from the cache when there, else computed
/// and cached. Returns them and whether they came from the cache.
pub fn dataset_stats(
    set: &ImageSet,
    net: &Inception,
    data_dir: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<(SetStats, bool)> {
    let key = cache_key(set, net.device())?;
    let hash = &sha256_hex(key.to_string().as_bytes())[..16];
    let dir = data_dir.join("fid-reference");
    let base = dir.join(format!("{}-{hash}", set.describe().replace([':', '[', ']', ' '], "_")));
    if let Some(stats) = load(&base)? {
        log(&format!("reference statistics of {}: from the cache {}", set.describe(), base.display()));
        return Ok((stats, true));
    }
    log(&format!("reference statistics of {}: computing (cached afterwards)", set.describe()));
    let started = Instant::now();
    let stats = set_stats(set, net, data_dir)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tensors = [
        ("mean", stats.gaussian.mean.shallow_clone()),
        ("cov", stats.gaussian.cov.shallow_clone()),
        ("features", stats.features.shallow_clone()),
    ];
    let path = base.with_extension("safetensors");
    atomic_replace(&path, |tmp| Ok(Tensor::write_safetensors(&tensors, tmp)?))?;
    let meta = json!({
        "key": key,
        "images": stats.gaussian.n,
        "tensors_sha256": sha256_hex(&std::fs::read(&path)?),
        "seconds": started.elapsed().as_secs_f64(),
    });
    atomic_write(&base.with_extension("json"), serde_json::to_string_pretty(&meta)?.as_bytes())?;
    log(&format!("reference statistics: {} images in {:.1}s", stats.gaussian.n, started.elapsed().as_secs_f64()));
    Ok((stats, false))
}

/// The cached statistics, or None when absent or corrupt (then they are recomputed).
fn load(base: &Path) -> Result<Option<SetStats>> {
    let (json_path, path) = (base.with_extension("json"), base.with_extension("safetensors"));
    let Ok(text) = std::fs::read_to_string(&json_path) else { return Ok(None) };
    let meta: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let Ok(bytes) = std::fs::read(&path) else { return Ok(None) };
    if meta["tensors_sha256"].as_str() != Some(sha256_hex(&bytes).as_str()) {
        eprintln!("{}: checksum mismatch; recomputing the reference statistics", path.display());
        return Ok(None);
    }
    let tensors: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&path)?.into_iter().collect();
    let get =
        |k: &str| tensors.get(k).map(|t| t.shallow_clone()).with_context(|| format!("{}: no {k}", path.display()));
    let n = meta["images"].as_i64().unwrap_or(0);
    Ok(Some(SetStats { gaussian: Gaussian { mean: get("mean")?, cov: get("cov")?, n }, features: get("features")? }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference statistics computed on a GPU are cached apart from the CPU's; the CPU's key is the one
    /// every earlier cache was written under.
    #[test]
    fn the_cache_is_keyed_by_device_kind() {
        let set = ImageSet::Dataset {
            data: crate::config::DataConfig::default(),
            split: Split::Train,
            start: 0,
            end: Some(1000),
            size: Some(32),
        };
        let cpu = cache_key(&set, tch::Device::Cpu).unwrap();
        let gpu = cache_key(&set, tch::Device::Cuda(0)).unwrap();
        assert_eq!(gpu["device"], "cuda");
        assert!(cpu.get("device").is_none(), "unchanged on the CPU");
        let mut without = gpu.clone();
        without.as_object_mut().unwrap().remove("device");
        assert_eq!(without, cpu, "the device kind is the only difference");
    }
}
