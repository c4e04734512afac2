//! The evaluation classifier: a small CNN per labelled dataset (MNIST, Fashion-MNIST, CIFAR-10)
//! and image size, trained once by the harness (deterministically from a fixed seed, on the CPU or
//! the run's device), cached and checksummed under `<data>/classifier/`, and its test accuracy
//! recorded. Scoring samples with it costs milliseconds where Inception-v3 costs minutes on a CPU.
//!
//! Network: conv3×3 stride 2 to 32 channels → ReLU, then [conv3×3 → BatchNorm → ReLU → max-pool 2]
//! at 64 and 128 channels, flattened, a linear layer to 128 with ReLU (the feature: the space of the
//! classifier FID), dropout 0.3 in training, and a linear layer to the classes. (A first version with
//! three pooled blocks from full resolution trained at a third of the speed to the same accuracy.) Training: Adam 1e-3, batch 128, `EPOCHS` epochs of the whole train
//! split in a fixed shuffled order, pixels in [-1, 1] as the diffusion models see them.
//!
//! Scores of a set of images x with p(y|x) the classifier's softmax:
//! - `is`: exp(E_x[KL(p(y|x) ‖ p(y))]), p(y) the set's mean prediction (Salimans et al. 2016 with
//!   this classifier): K for confident, class-balanced samples, 1 for one repeated class or for
//!   predictions that ignore the image;
//! - `confident`: the share of images with max_y p(y|x) > 0.9 (a classifier can be confident on
//!   noise too: read it with `cfid`, which is far from the floor for images unlike the data);
//! - `class_entropy`: the entropy (nats) of the histogram of predicted classes, log K when every
//!   class is predicted equally often (mode coverage);
//! - `cfid`: the Fréchet distance between the 128-dim features of the set and of the reference set;
//! - `cond_accuracy`: for class-conditional samples, the share classified as the class asked for.
use super::fid::{frechet_distance, Gaussian};
use crate::config::{DataConfig, DatasetName};
use crate::data::{self, Split};
use crate::track::{atomic_replace, atomic_write, sha256_hex};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::nn::{self, Module, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Bump when the network or its training changes: cached classifiers of another version are retrained.
const VERSION: u32 = 3;
const WIDTHS: [i64; 3] = [32, 64, 128];
pub const FEATURES: i64 = 128;
const BATCH: i64 = 128;
const SEED: i64 = 20_240_601;

/// Epochs of training per dataset: enough for the bars `required_accuracy` checks.
fn epochs(name: DatasetName) -> usize {
    match name {
        DatasetName::Mnist => 3,
        DatasetName::FashionMnist => 4,
        _ => 8,
    }
}

/// The test accuracy the classifier must reach for its scores to be used as a quality metric.
pub fn required_accuracy(name: DatasetName) -> Option<f64> {
    match name {
        DatasetName::Mnist => Some(0.99),
        DatasetName::FashionMnist => Some(0.90),
        _ => None,
    }
}

/// Whether a dataset has a classifier here: the labelled datasets with known classes.
pub fn supported(cfg: &DataConfig) -> bool {
    matches!(cfg.name, DatasetName::Mnist | DatasetName::FashionMnist | DatasetName::Cifar10)
}

#[derive(Debug)]
struct Net {
    convs: Vec<(nn::Conv2D, Option<nn::BatchNorm>)>,
    fc: nn::Linear,
    head: nn::Linear,
}

impl Net {
    fn new(p: &nn::Path, channels: i64, size: i64, classes: i64) -> Self {
        let mut c_in = channels;
        let convs = WIDTHS
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let stride = if i == 0 { 2 } else { 1 };
                let cfg = nn::ConvConfig { stride, padding: 1, ..Default::default() };
                let conv = crate::models::layers::conv2d_cfg(p / "conv" / i, c_in, w, 3, cfg);
                let bn = (i > 0).then(|| crate::models::layers::batch_norm2d(p / "bn" / i, w));
                c_in = w;
                (conv, bn)
            })
            .collect();
        let flat = WIDTHS[2] * (size / 8) * (size / 8);
        Self {
            convs,
            fc: crate::models::layers::linear(p / "fc", flat, FEATURES),
            head: crate::models::layers::linear(p / "head", FEATURES, classes),
        }
    }

    /// (logits `[B, K]`, features `[B, 128]`) of images in [-1, 1].
    fn forward(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let mut h = x.shallow_clone();
        for (conv, bn) in &self.convs {
            h = match bn {
                None => h.apply(conv).relu(),
                Some(bn) => {
                    bn.forward_t(&h.apply(conv), train).relu().max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false)
                }
            };
        }
        let features = self.fc.forward(&h.flatten(1, -1)).relu();
        let logits = self.head.forward(&features.dropout(0.3, train));
        (logits, features)
    }
}

/// `<data>/classifier/<name>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifierInfo {
    pub key: serde_json::Value,
    pub test_accuracy: f64,
    pub test_images: i64,
    pub epochs: usize,
    pub weights_sha256: String,
    pub train_seconds: f64,
    pub device: String,
}

pub struct Classifier {
    vs: nn::VarStore,
    net: Net,
    pub classes: i64,
    pub info: ClassifierInfo,
}

/// The cache's file name and key. A classifier trained on a GPU is another network than the CPU's
/// (other random draws, other kernels), so its key names the device kind; the CPU's key is what it
/// always was.
fn cache_base(cfg: &DataConfig, data_dir: &Path, device: Device) -> Result<(PathBuf, serde_json::Value)> {
    let mut key = serde_json::json!({
        "version": VERSION,
        "dataset": cfg.name.as_str(),
        "train_images_sha256": data::images_fingerprint(cfg, Split::Train)?,
        "image_size": cfg.image_size,
        "channels": cfg.channels(),
    });
    if device.is_cuda() {
        key["device"] = "cuda".into();
    }
    let hash = &sha256_hex(key.to_string().as_bytes())[..12];
    let base = data_dir.join("classifier").join(format!("{}-{}px-{hash}", cfg.name.as_str(), cfg.image_size));
    Ok((base, key))
}

impl Classifier {
    /// The dataset's classifier at the run's image size: from the cache (checksum verified), else
    /// trained, tested and cached. Its test accuracy is checked against `required_accuracy`.
    pub fn load_or_train(cfg: &DataConfig, data_dir: &Path, device: Device, log: &mut dyn FnMut(&str)) -> Result<Self> {
        if !supported(cfg) {
            bail!("no evaluation classifier for dataset `{}` (only mnist, fashion_mnist, cifar10)", cfg.name.as_str());
        }
        let classes = data::class_names(cfg)?.len() as i64;
        let (base, key) = cache_base(cfg, data_dir, device)?;
        let (json_path, weights_path) = (base.with_extension("json"), base.with_extension("safetensors"));
        if let Ok(text) = std::fs::read_to_string(&json_path) {
            let info: ClassifierInfo = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a classifier record", json_path.display()))?;
            let bytes = std::fs::read(&weights_path).unwrap_or_default();
            if info.key == key && sha256_hex(&bytes) == info.weights_sha256 {
                let mut vs = nn::VarStore::new(device);
                let net = Net::new(&vs.root(), cfg.channels(), cfg.image_size, classes);
                vs.load(&weights_path).with_context(|| format!("cannot load {}", weights_path.display()))?;
                log(&format!(
                    "evaluation classifier of {} at {}px: from the cache {} (test accuracy {:.4})",
                    cfg.name.as_str(),
                    cfg.image_size,
                    weights_path.display(),
                    info.test_accuracy
                ));
                let c = Self { vs, net, classes, info };
                c.check(log);
                return Ok(c);
            }
            log(&format!("{}: key or checksum mismatch; training the classifier again", weights_path.display()));
        }
        log(&format!(
            "evaluation classifier of {} at {}px: training ({} epochs, cached afterwards)",
            cfg.name.as_str(),
            cfg.image_size,
            epochs(cfg.name)
        ));
        let started = Instant::now();
        let mut plain = cfg.clone();
        plain.limit = None;
        let train = data::Dataset::load(&plain, Split::Train, data_dir, device)?;
        tch::manual_seed(SEED);
        let vs = nn::VarStore::new(device);
        let net = Net::new(&vs.root(), cfg.channels(), cfg.image_size, classes);
        let mut opt = nn::Adam::default().build(&vs, 1e-3)?;
        let n = train.len();
        for _ in 0..epochs(cfg.name) {
            let order = Tensor::randperm(n, (Kind::Int64, device));
            for b in 0..n / BATCH {
                crate::signal::check("the evaluation classifier's training")?;
                let idx = order.narrow(0, b * BATCH, BATCH);
                let (logits, _) = net.forward(&train.images.index_select(0, &idx), true);
                let loss = logits.cross_entropy_for_logits(&train.labels.index_select(0, &idx));
                opt.backward_step(&loss);
            }
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let test = data::Dataset::load(&plain, Split::Test, data_dir, device)?;
        let mut c = Self {
            vs,
            net,
            classes,
            info: ClassifierInfo {
                key,
                test_accuracy: 0.0,
                test_images: test.len(),
                epochs: epochs(cfg.name),
                weights_sha256: String::new(),
                train_seconds,
                device: format!("{device:?}"),
            },
        };
        let predicted = c.predict(&test.images).0.argmax(1, false);
        c.info.test_accuracy =
            predicted.eq_tensor(&test.labels).to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        std::fs::create_dir_all(base.parent().expect("a folder"))
            .with_context(|| format!("cannot create {}", base.display()))?;
        let tensors: Vec<(String, Tensor)> = c.vs.variables().into_iter().map(|(k, t)| (k, t.contiguous())).collect();
        atomic_replace(&weights_path, |tmp| Ok(Tensor::write_safetensors(&tensors, tmp)?))?;
        c.info.weights_sha256 = sha256_hex(&std::fs::read(&weights_path)?);
        atomic_write(&json_path, serde_json::to_string_pretty(&c.info)?.as_bytes())?;
        log(&format!(
            "evaluation classifier: test accuracy {:.4} on {} images, trained in {train_seconds:.1}s",
            c.info.test_accuracy, c.info.test_images
        ));
        c.check(log);
        Ok(c)
    }

    /// Whether the test accuracy reaches `required_accuracy`; a warning when it does not (the scores
    /// are still recorded, with the accuracy beside them).
    pub fn meets_bar(&self) -> bool {
        let bar = self.info.key["dataset"].as_str().and_then(DatasetName::parse).and_then(required_accuracy);
        bar.is_none_or(|b| self.info.test_accuracy >= b)
    }

    fn check(&self, log: &mut dyn FnMut(&str)) {
        if !self.meets_bar() {
            log(&format!(
                "warning: the evaluation classifier of {} reaches test accuracy {:.4}, below the required {:?}: read its \
                 scores with care",
                self.info.key["dataset"],
                self.info.test_accuracy,
                self.info.key["dataset"].as_str().and_then(DatasetName::parse).and_then(required_accuracy)
            ));
        }
    }

    /// (softmax probabilities `[N, K]`, features `[N, 128]`) of images in [-1, 1], on the CPU.
    pub fn predict(&self, images: &Tensor) -> (Tensor, Tensor) {
        let _guard = tch::no_grad_guard();
        let device = self.vs.device();
        let (mut probs, mut feats) = (Vec::new(), Vec::new());
        for chunk in images.split(500, 0) {
            let (logits, f) = self.net.forward(&chunk.to_device(device), false);
            probs.push(logits.softmax(-1, Kind::Float).to_device(Device::Cpu));
            feats.push(f.to_device(Device::Cpu));
        }
        (Tensor::cat(&probs, 0), Tensor::cat(&feats, 0))
    }

    /// The scores of `images` in [-1, 1] (see the module doc) against the reference images'
    /// features; `labels` are the classes asked for (conditional samples) or None.
    pub fn scores(&self, images: &Tensor, reference: &Tensor, labels: Option<&Tensor>) -> BTreeMap<String, f64> {
        let (probs, feats) = self.predict(images);
        let mut out = scores_of_probabilities(&probs, self.classes);
        let (_, ref_feats) = self.predict(reference);
        let fid = frechet_distance(&Gaussian::of(&feats), &Gaussian::of(&ref_feats));
        out.insert("cfid".into(), fid.fid);
        if let Some(l) = labels.filter(|l| l.ge(0).all().int64_value(&[]) == 1) {
            let hit = probs.argmax(1, false).eq_tensor(&l.to_device(Device::Cpu)).to_kind(Kind::Double);
            out.insert("cond_accuracy".into(), hit.mean(Kind::Double).double_value(&[]));
        }
        out
    }
}

/// IS, confident share and class entropy of softmax rows `[N, K]`.
pub fn scores_of_probabilities(probs: &Tensor, classes: i64) -> BTreeMap<String, f64> {
    let p = probs.to_kind(Kind::Double);
    let marginal = p.mean_dim([0i64].as_slice(), true, Kind::Double);
    let eps = 1e-12;
    let kl =
        (&p * ((&p + eps).log() - (&marginal + eps).log())).sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
    let is = kl.mean(Kind::Double).exp().double_value(&[]);
    let (max, argmax) = p.max_dim(1, false);
    let confident = max.gt(0.9).to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
    let hist = argmax.bincount::<Tensor>(None, classes).to_kind(Kind::Double);
    let q = &hist / hist.sum(Kind::Double);
    let entropy = (-(&q * (&q + eps).log()).sum(Kind::Double).double_value(&[])).max(0.0);
    BTreeMap::from([("is".into(), is), ("confident".into(), confident), ("class_entropy".into(), entropy)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classifier trained on a GPU is cached apart from the CPU's (its key names the device kind);
    /// the CPU's key is the one every earlier cache was written under.
    #[test]
    fn the_cache_is_keyed_by_device_kind() {
        let cfg = DataConfig { image_size: 32, ..DataConfig::default() };
        let dir = Path::new("/nonexistent");
        let (cpu, cpu_key) = cache_base(&cfg, dir, Device::Cpu).unwrap();
        let (gpu, gpu_key) = cache_base(&cfg, dir, Device::Cuda(0)).unwrap();
        assert_ne!(cpu, gpu);
        assert_eq!(gpu_key["device"], "cuda");
        let keys: Vec<&String> = cpu_key.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["channels", "dataset", "image_size", "train_images_sha256", "version"],
            "unchanged on the CPU"
        );
        assert_eq!(cache_base(&cfg, dir, Device::Cuda(1)).unwrap().0, gpu, "any GPU: one kind");
    }

    /// One-hot predictions spread evenly over K classes: IS = K, all confident, entropy log K. All on
    /// one class: IS = 1, entropy 0. Uniform predictions: IS = 1, none confident.
    #[test]
    fn scores_match_closed_forms() {
        let k = 10;
        let balanced = Tensor::eye(k, (Kind::Float, Device::Cpu)).repeat([3, 1]);
        let s = scores_of_probabilities(&balanced, k);
        assert!((s["is"] - 10.0).abs() < 1e-6, "{s:?}");
        assert_eq!(s["confident"], 1.0);
        assert!((s["class_entropy"] - 10f64.ln()).abs() < 1e-9);
        let one = Tensor::zeros([30, k], (Kind::Float, Device::Cpu)).index_fill(1, &Tensor::from_slice(&[3i64]), 1.0);
        let s = scores_of_probabilities(&one, k);
        assert!((s["is"] - 1.0).abs() < 1e-9 && s["class_entropy"].abs() < 1e-9, "{s:?}");
        let uniform = Tensor::full([30, k], 0.1, (Kind::Float, Device::Cpu));
        let s = scores_of_probabilities(&uniform, k);
        assert!((s["is"] - 1.0).abs() < 1e-6 && s["confident"] == 0.0, "{s:?}");
    }
}
