//! Evaluating a trained run under an evaluation spec (`[eval]` of the run config): FID and KID of
//! generated samples against a reference split, and the bits/dim bound. Each spec has its own hash;
//! its result lives in `<run>/eval/<spec-hash>/` (`metrics.json`, `samples.png`), so evaluating again
//! with the same spec is instant and another spec adds a result.
use super::bpd::{self, BpdOptions, BpdReport};
use super::classifier::{self, Classifier};
use super::fid::{frechet_distance, kid, Frechet, Kid};
use super::images::ImageSet;
use super::inception::{self, Inception};
use super::reference::{dataset_stats, Collector, SetStats};
use crate::config::{EvalClasses, EvalConfig, RunConfig, SamplerConfig, SplitName};
use crate::data::Split;
use crate::diffusion::sampler::{self, SampleOptions};
use crate::diffusion::NoiseSchedule;
use crate::grid::make_grid;
use crate::models::{self, Denoiser};
use crate::progress::Reporter;
use crate::rng::reseed;
use crate::track::run_dir::RunDir;
use crate::track::{atomic_write, sha256_hex, tensorboard::EventWriter};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// Keys of `[eval]` that say when to evaluate, not what: left out of the spec's hash.
const SCHEDULE_KEYS: [&str; 4] = ["every", "every_num_samples", "fid", "bpd"];

/// The hash of an evaluation spec: its keys (without `SCHEDULE_KEYS`) and the network's checksum.
pub fn spec_hash(cfg: &EvalConfig) -> String {
    let mut v = serde_json::to_value(cfg).expect("EvalConfig serializes");
    if let Some(map) = v.as_object_mut() {
        for k in SCHEDULE_KEYS {
            map.remove(k);
        }
    }
    let identity = serde_json::json!({ "format": 1, "eval": v, "inception_sha256": inception::SHA256 });
    sha256_hex(identity.to_string().as_bytes())[..12].to_string()
}

pub fn sampler_name(s: &SamplerConfig, timesteps: usize) -> String {
    match s {
        SamplerConfig::Ddpm { .. } => format!("DDPM {} steps", sampler::num_steps(s, timesteps)),
        SamplerConfig::Ddim { eta, .. } => format!("DDIM {} steps eta={eta}", sampler::num_steps(s, timesteps)),
    }
}

/// The reference images of a run's evaluation: the first `reference_images` of the split, resized as
/// the run's training images are.
pub fn reference_set(config: &RunConfig) -> ImageSet {
    let e = &config.eval;
    ImageSet::Dataset {
        data: config.data.clone(),
        split: match e.reference_split {
            SplitName::Train => Split::Train,
            SplitName::Test => Split::Test,
        },
        start: 0,
        end: (e.reference_images > 0).then_some(e.reference_images),
        size: Some(config.data.image_size),
    }
}

/// What an FID means: printed next to every value so numbers of different specs are never compared.
pub fn describe(config: &RunConfig, num_samples: i64) -> String {
    let e = &config.eval;
    let weights = if e.use_ema { "EMA" } else { "raw" };
    let at = e.checkpoint.map_or("final".to_string(), |s| format!("step {s}"));
    let classes = match (config.conditioning.classes, e.classes) {
        (false, _) => String::new(),
        (true, EvalClasses::Balanced) => format!(", class-balanced, guidance w={}", e.guidance_scale),
        (true, EvalClasses::Unconditional) => ", unconditional (no class)".to_string(),
    };
    format!(
        "{num_samples} samples ({}, {weights} weights, {at}{classes}) vs {}",
        sampler_name(&e.sampler, config.diffusion.timesteps),
        reference_set(config).describe()
    )
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BpdSummary {
    pub total: f64,
    pub prior: f64,
    pub diffusion: f64,
    pub decoder: f64,
    pub images: usize,
    pub timesteps_evaluated: usize,
    pub estimated: bool,
    /// The terms and the training loss at each evaluated t (absent in results written before).
    #[serde(default)]
    pub per_t: Vec<super::bpd::PerT>,
}

impl From<&BpdReport> for BpdSummary {
    fn from(r: &BpdReport) -> Self {
        Self {
            total: r.total,
            prior: r.prior,
            diffusion: r.diffusion,
            decoder: r.decoder,
            images: r.images,
            timesteps_evaluated: r.timesteps_evaluated,
            estimated: r.estimated,
            per_t: r.per_t.clone(),
        }
    }
}

/// `eval/<spec-hash>/metrics.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalResult {
    pub spec_hash: String,
    /// `describe` of the spec.
    pub spec: String,
    pub eval: EvalConfig,
    /// The training step of the evaluated weights, and their sha256.
    pub step: usize,
    pub weights_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fid: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fid_detail: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid_std: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpd: Option<BpdSummary>,
    /// The evaluation classifier's scores of the samples (`is`, `confident`, `class_entropy`, `cfid`,
    /// and `cond_accuracy` for class-conditional runs); empty for datasets without a classifier.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<String, f64>,
    /// The same metrics of as many held-out real images (the test split's first) against the same
    /// reference: `fid`, `kid`, `cfid` (floors: FID and KID of n images are biased up by n) and the
    /// classifier's `is`, `confident`, `class_entropy` of real images (ceilings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub floors: BTreeMap<String, f64>,
    /// What the floors compare: `256 of mnist:test[0:256] vs mnist:train[0:1000] at 32x32`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_spec: Option<String>,
    /// Wall seconds the sampler took for the FID images (without the Inception network), and the
    /// network evaluations per image it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_evaluations: Option<usize>,
    pub seconds: f64,
}

impl EvalResult {
    /// The classifier's scores under their names, the floors as `fid_floor`, `kid_floor`,
    /// `cfid_floor` and the real images' classifier scores as `is_real`, `confident_real`,
    /// `class_entropy_real`: the flat metrics of status.json, the analysis and `reproduce`.
    pub fn flat_scores(&self) -> BTreeMap<String, f64> {
        let mut out = self.scores.clone();
        for (k, v) in &self.floors {
            let name = match k.as_str() {
                "fid" | "kid" | "cfid" => format!("{k}_floor"),
                "classifier_accuracy" => k.clone(),
                _ => format!("{k}_real"),
            };
            out.insert(name, *v);
        }
        out
    }
}

/// FID and KID of `n` images sampled from `model` with the spec's sampler, against `reference`.
/// Noise comes from stream `eval-sample-<stream>`, index = batch, so it does not depend on what ran
/// before.
/// Returns every sample (`[n, C, H, W]` on the CPU, the first 64 make the grid), the classes they were
/// asked for (class-balanced conditional runs), and the seconds spent in the sampler.
#[allow(clippy::too_many_arguments)]
pub fn sample_fid(
    model: &dyn Denoiser,
    config: &RunConfig,
    n: i64,
    stream: u64,
    net: &Inception,
    reference: &SetStats,
    device: Device,
    progress: &mut dyn Reporter,
) -> Result<Sampled> {
    let (e, d) = (&config.eval, &config.diffusion);
    let schedule = NoiseSchedule::new(&d.schedule, d.timesteps, device);
    let opts =
        SampleOptions { target: d.target, variance: d.variance, clip_x0: config.sample.clip_x0, trajectory: &[] };
    let shape = |b: i64| [b, config.data.channels(), config.data.image_size, config.data.image_size];
    let mut collector = Collector::default();
    let (mut all, mut asked) = (Vec::new(), Vec::new());
    let mut sample_seconds = 0.0;
    let batches = (n + e.batch_size - 1) / e.batch_size;
    progress.phase("fid", n as u64);
    // A class-conditional model's images: class-balanced with guidance, or unconditional.
    let balanced = match (models::num_classes(config)?, e.classes) {
        (Some(k), EvalClasses::Balanced) => Some(k),
        _ => None,
    };
    for b in 0..batches {
        let len = e.batch_size.min(n - b * e.batch_size);
        let labels = balanced.map(|k| models::balanced_labels(b * e.batch_size, len, k, device));
        if let Some(l) = &labels {
            asked.push(l.to_device(Device::Cpu));
        }
        let mut eps_model = models::sampling_fn(model, labels, e.guidance_scale);
        reseed(config.seed, &format!("eval-sample-{stream}"), b as u64);
        let x_t = Tensor::randn(shape(len), (Kind::Float, device));
        crate::device::synchronize(device);
        let started = Instant::now();
        let out = sampler::sample(&e.sampler, &schedule, x_t, &opts, &mut eps_model, &mut |_| {});
        crate::device::synchronize(device);
        sample_seconds += started.elapsed().as_secs_f64();
        collector.add(&net.features(&out.x0)?);
        all.push(out.x0.to_device(Device::Cpu));
        progress.advance(((b + 1) * e.batch_size).min(n) as u64);
    }
    let generated = collector.finish()?;
    let fid = frechet_distance(&generated.gaussian, &reference.gaussian);
    reseed(config.seed, "eval-kid", stream);
    let kid = kid(&generated.features, &reference.features, e.kid_subsets, e.kid_subset_size);
    let images = Tensor::cat(&all, 0);
    let labels = (!asked.is_empty()).then(|| Tensor::cat(&asked, 0));
    Ok(Sampled { fid, kid, images, labels, sample_seconds })
}

/// What `sample_fid` returns.
pub struct Sampled {
    pub fid: Frechet,
    pub kid: Kid,
    /// Every sample, in [-1, 1] (clipped by the sampler or not), on the CPU.
    pub images: Tensor,
    /// The class each sample was asked for (class-balanced conditional sampling), else None.
    pub labels: Option<Tensor>,
    pub sample_seconds: f64,
}

impl Sampled {
    /// The first (up to) 64 samples, for a grid.
    pub fn first(&self) -> Tensor {
        self.images.narrow(0, 0, self.images.size()[0].min(64))
    }
}

/// The held-out real images a spec's floors are computed from: the test split's first n, resized as
/// the training images are (n capped at the split's size).
pub fn floor_set(config: &RunConfig, n: i64, data_dir: &Path) -> Result<ImageSet> {
    let available = crate::data::load_images_u8(&config.data, Split::Test, data_dir)?.size()[0];
    Ok(ImageSet::Dataset {
        data: config.data.clone(),
        split: Split::Test,
        start: 0,
        end: Some(n.min(available) as usize),
        size: Some(config.data.image_size),
    })
}

/// An image set's images in [-1, 1] as one CPU tensor.
fn images_of(set: &ImageSet, data_dir: &Path) -> Result<Tensor> {
    let mut all = Vec::new();
    set.for_each_batch(data_dir, 500, &mut |pixels| {
        all.push(pixels / 127.5 - 1.0);
        Ok(())
    })?;
    Ok(Tensor::cat(&all, 0))
}

/// The classifier scores of `sampled` and every floor of the spec (FID and KID of the held-out real
/// images from the Inception cache, the classifier's scores of them), into `result`.
#[allow(clippy::too_many_arguments)]
fn quality_and_floors(
    config: &RunConfig,
    sampled: &Sampled,
    net: &Inception,
    reference: &SetStats,
    data_dir: &Path,
    device: Device,
    result: &mut EvalResult,
    progress: &mut dyn Reporter,
) -> Result<()> {
    let e = &config.eval;
    let n = sampled.images.size()[0];
    let real_set = floor_set(config, n, data_dir)?;
    let (real, _) = dataset_stats(&real_set, net, data_dir, &mut |line| progress.note(line))?;
    let floor = frechet_distance(&real.gaussian, &reference.gaussian);
    reseed(config.seed, "eval-kid-floor", 0);
    let kid_floor = kid(&real.features, &reference.features, e.kid_subsets, e.kid_subset_size);
    result.floors.insert("fid".into(), floor.fid);
    result.floors.insert("kid".into(), kid_floor.mean);
    result.floor_spec = Some(format!("{} vs {}", real_set.describe(), reference_set(config).describe()));
    if classifier::supported(&config.data) {
        let c = Classifier::load_or_train(&config.data, data_dir, device, &mut |line| progress.note(line))?;
        let reference_images = images_of(&reference_set(config), data_dir)?;
        result.scores = c.scores(&sampled.images.clamp(-1.0, 1.0), &reference_images, sampled.labels.as_ref());
        let real_images = images_of(&real_set, data_dir)?;
        for (k, v) in c.scores(&real_images, &reference_images, None) {
            result.floors.insert(k, v);
        }
        result.floors.insert("classifier_accuracy".into(), c.info.test_accuracy);
    }
    Ok(())
}

/// The reference statistics of a run's spec, with a line saying whether they came from the cache.
pub fn reference_stats(
    config: &RunConfig,
    net: &Inception,
    data_dir: &Path,
    progress: &mut dyn Reporter,
) -> Result<SetStats> {
    let set = reference_set(config);
    let (stats, _cached) = dataset_stats(&set, net, data_dir, &mut |line| progress.note(line))?;
    Ok(stats)
}

pub fn result_path(run_dir: &Path, cfg: &EvalConfig) -> PathBuf {
    run_dir.join("eval").join(spec_hash(cfg)).join("metrics.json")
}

/// The stored result of this spec, if any (it may hold only some of the metrics).
fn stored_any(run_dir: &Path, cfg: &EvalConfig) -> Option<EvalResult> {
    let text = std::fs::read_to_string(result_path(run_dir, cfg)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The stored result of this spec when it holds every metric `cfg` asks for.
pub fn stored(run_dir: &Path, cfg: &EvalConfig) -> Option<EvalResult> {
    stored_any(run_dir, cfg).filter(|r| (!cfg.fid || r.fid.is_some()) && (!cfg.bpd || r.bpd.is_some()))
}

/// Evaluates a run under `eval` (which replaces the run's own `[eval]`): returns the stored result
/// when this spec was evaluated before, else computes it, stores it and logs it to TensorBoard at the
/// weights' step.
pub fn evaluate_run(
    run_dir: &Path,
    eval: &EvalConfig,
    device: Device,
    data_dir: &Path,
    progress: &mut dyn Reporter,
) -> Result<(EvalResult, bool)> {
    if let Some(r) = stored(run_dir, eval) {
        return Ok((r, true));
    }
    let started = Instant::now();
    let mut loaded = crate::weights::load_weights(run_dir, eval.use_ema, eval.checkpoint, device).map_err(|e| {
        match eval.checkpoint {
            Some(step) => e.context(format!("eval.checkpoint = {step}")),
            None => e,
        }
    })?;
    loaded.config.eval = eval.clone();
    let config = &loaded.config;
    let hash = spec_hash(eval);
    let out_dir = run_dir.join("eval").join(&hash);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let previous = stored_any(run_dir, eval).filter(|r| r.weights_sha256 == loaded.sha256);
    let mut result = previous.unwrap_or(EvalResult {
        spec_hash: hash,
        spec: describe(config, eval.num_samples),
        eval: eval.clone(),
        step: loaded.step,
        weights_sha256: loaded.sha256.clone(),
        fid: None,
        fid_detail: None,
        kid: None,
        kid_std: None,
        bpd: None,
        scores: BTreeMap::new(),
        floors: BTreeMap::new(),
        floor_spec: None,
        sample_seconds: None,
        model_evaluations: None,
        seconds: 0.0,
    });
    let mut events = EventWriter::create(run_dir)?;
    let step = loaded.step as i64;
    // The run's own spec (the experiment's `[eval]`, final weights) logs under `eval/`, so every run of
    // an experiment has the same tags; any other spec under `eval@<spec-hash>/`, so curves never mix.
    let own = RunDir { path: run_dir.to_path_buf() }.load_config().map(|c| spec_hash(&c.eval));
    let prefix = if own.ok().as_deref() == Some(result.spec_hash.as_str()) && eval.checkpoint.is_none() {
        "eval".to_string()
    } else {
        format!("eval@{}", result.spec_hash)
    };
    if eval.fid && result.fid.is_none() {
        let net = Inception::load(data_dir, device)?;
        let reference = reference_stats(config, &net, data_dir, progress)?;
        let sampled =
            sample_fid(loaded.model.as_ref(), config, eval.num_samples, 0, &net, &reference, device, progress)?;
        let (fid, kid, first) = (sampled.fid.clone(), sampled.kid.clone(), sampled.first());
        quality_and_floors(config, &sampled, &net, &reference, data_dir, device, &mut result, progress)?;
        result.sample_seconds = Some(sampled.sample_seconds);
        result.model_evaluations = Some(sampler::num_steps(&eval.sampler, config.diffusion.timesteps));
        let grid = make_grid(&first, (first.size()[0] as f64).sqrt().ceil() as usize, 2)?;
        let png = grid.to_png()?;
        atomic_write(&out_dir.join("samples.png"), &png)?;
        events.add_png(&format!("{prefix}/samples"), &png, grid.height, grid.width, grid.channels, step)?;
        events.add_scalar(&format!("{prefix}/fid"), fid.fid, step)?;
        events.add_scalar(&format!("{prefix}/kid"), kid.mean, step)?;
        result.fid = Some(fid.fid);
        result.fid_detail = Some(serde_json::to_value(&fid)?);
        result.kid = Some(kid.mean);
        result.kid_std = Some(kid.std);
        for (k, v) in &result.scores {
            events.add_scalar(&format!("{prefix}/{k}"), *v, step)?;
        }
        for (k, v) in &result.floors {
            events.add_scalar(&format!("{prefix}/floor_{k}"), *v, step)?;
        }
        progress.note(&format!("{}  [{}]", quality_line(&result), result.spec));
    }
    if eval.bpd && result.bpd.is_none() {
        let opts = BpdOptions {
            images: eval.bpd_images,
            batch: 64,
            t_stride: eval.bpd_t_stride,
            device,
            data_dir: data_dir.to_path_buf(),
        };
        let report = bpd::bound(run_dir, config, loaded.model.as_ref(), &opts, progress)?;
        bpd::log_scalars(&mut events, &prefix, &report, step)?;
        progress.note(&format!("bits/dim {:.4} on {} test images", report.total, report.images));
        result.bpd = Some(BpdSummary::from(&report));
    }
    events.flush()?;
    result.seconds += started.elapsed().as_secs_f64();
    atomic_write(&out_dir.join("metrics.json"), serde_json::to_string_pretty(&result)?.as_bytes())?;
    Ok((result, false))
}

/// `FID 61.2 (floor 26.5 for 256 of mnist:test[0:256] vs mnist:train[0:1000] at 32x32), KID …,
/// classifier IS 8.1 (real 9.8), confident 85 % (real 97 %), class entropy 2.27 (real 2.30, log K
/// 2.30), classifier FID 12.3 (floor 1.1)`: every value beside what real images score.
pub fn quality_line(r: &EvalResult) -> String {
    let mut parts = Vec::new();
    let floor = |k: &str| r.floors.get(k).copied();
    if let Some(fid) = r.fid {
        let spec = r.floor_spec.as_deref().unwrap_or("?");
        parts.push(match floor("fid") {
            Some(f) => format!("FID {fid:.3} (floor {f:.3} for {spec})"),
            None => format!("FID {fid:.3}"),
        });
    }
    if let Some(kid) = r.kid {
        parts.push(match floor("kid") {
            Some(f) => format!("KID {kid:.5} (floor {f:.5})"),
            None => format!("KID {kid:.5}"),
        });
    }
    let s = |k: &str| r.scores.get(k).copied();
    if let (Some(is), Some(c), Some(h), Some(cfid)) = (s("is"), s("confident"), s("class_entropy"), s("cfid")) {
        let real = |k: &str| floor(k).map_or(String::new(), |v| format!(" (real {v:.3})"));
        let real_pct = |k: &str| floor(k).map_or(String::new(), |v| format!(" (real {:.1} %)", 100.0 * v));
        parts.push(format!(
            "classifier IS {is:.3}{}, confident {:.1} %{}, class entropy {h:.3}{}, classifier FID {cfid:.3}{}",
            real("is"),
            100.0 * c,
            real_pct("confident"),
            real("class_entropy"),
            floor("cfid").map_or(String::new(), |v| format!(" (floor {v:.3})"))
        ));
    }
    if let Some(a) = s("cond_accuracy") {
        parts.push(format!("conditional accuracy {:.1} %", 100.0 * a));
    }
    parts.join(", ")
}

/// FID/KID every `eval.every` training steps on `eval.every_num_samples` images with the same noise
/// each time (stream 1), logged as `eval_during/*` at the step and in `eval_history.jsonl`.
pub struct DuringTraining {
    net: Inception,
    reference: SetStats,
    /// Where the caller copies the weights to evaluate (EMA or raw, as `eval.use_ema` says).
    pub vs: nn::VarStore,
    model: Box<dyn Denoiser>,
    history: crate::track::metrics::MetricsWriter,
    run_dir: PathBuf,
    pub best: Option<(usize, f64)>,
}

#[derive(Serialize, Deserialize)]
struct DuringRecord {
    step: usize,
    fid: f64,
    kid: f64,
    spec: String,
}

impl DuringTraining {
    /// Loads the network and the reference statistics; resumes the history at `start`.
    pub fn new(
        config: &RunConfig,
        run_dir: &Path,
        start: usize,
        device: Device,
        data_dir: &Path,
        progress: &mut dyn Reporter,
    ) -> Result<Self> {
        use crate::track::metrics::MetricsWriter;
        let net = Inception::load(data_dir, device)?;
        let reference = reference_stats(config, &net, data_dir, progress)?;
        let vs = nn::VarStore::new(device);
        let model = models::build_for(config, &vs.root())?;
        let path = run_dir.join("eval_history.jsonl");
        let history = if start > 0 { MetricsWriter::resume(&path, start)? } else { MetricsWriter::create(&path)? };
        let best = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<DuringRecord>(l).ok())
            .map(|r| (r.step, r.fid))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        Ok(Self { net, reference, vs, model, history, run_dir: run_dir.to_path_buf(), best })
    }

    /// Evaluates the weights in `self.vs` at training step `step`.
    pub fn evaluate(
        &mut self,
        config: &RunConfig,
        step: usize,
        events: &mut EventWriter,
        progress: &mut dyn Reporter,
    ) -> Result<()> {
        let device = self.vs.device();
        let n = config.eval.every_num_samples;
        let sampled = sample_fid(self.model.as_ref(), config, n, 1, &self.net, &self.reference, device, progress)?;
        let (fid, kid, first) = (sampled.fid.clone(), sampled.kid.clone(), sampled.first());
        let grid = make_grid(&first, (first.size()[0] as f64).sqrt().ceil() as usize, 2)?;
        let png = grid.to_png()?;
        let dir = self.run_dir.join("eval_during");
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        atomic_write(&dir.join(format!("samples-{step:08}.png")), &png)?;
        events.add_png("eval_during/samples", &png, grid.height, grid.width, grid.channels, step as i64)?;
        events.add_scalar("eval_during/fid", fid.fid, step as i64)?;
        events.add_scalar("eval_during/kid", kid.mean, step as i64)?;
        events.flush()?;
        let spec = describe(config, n);
        progress.note(&format!("step {step}: FID {:.3}, KID {:.5}  [{spec}]", fid.fid, kid.mean));
        self.history.append(&DuringRecord { step, fid: fid.fid, kid: kid.mean, spec })?;
        if self.best.is_none_or(|(_, b)| fid.fid < b) {
            self.best = Some((step, fid.fid));
        }
        Ok(())
    }
}

/// `[eval]` with `key=value` overrides (TOML values; keys relative to `[eval]`, an `eval.` prefix
/// allowed), e.g. `num_samples=1000`, `sampler.steps=100`, `sampler={name="ddpm"}`.
pub fn with_overrides(base: &EvalConfig, overrides: &[String]) -> Result<EvalConfig> {
    let mut value = toml::Value::try_from(base).context("EvalConfig serializes")?;
    for item in overrides {
        let (key, raw) = item.split_once('=').with_context(|| format!("--spec {item:?}: expected KEY=VALUE"))?;
        let key = key.trim().strip_prefix("eval.").unwrap_or(key.trim());
        let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        let mut cur = &mut value;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let table = cur.as_table_mut().with_context(|| format!("--spec {item:?}: `{part}` is not a table"))?;
            if i + 1 == parts.len() {
                table.insert(part.to_string(), parsed.clone());
                break;
            }
            cur = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
        }
    }
    value.try_into::<EvalConfig>().map_err(|e| anyhow::anyhow!("--spec: key `eval`: {}", e.message()))
}
