//! Evaluating a trained run under an evaluation spec (`[eval]` of the run config): every registered
//! sample metric (`metric::SAMPLE_METRICS`: FID, KID, precision/recall, the classifier's scores) of
//! generated samples against a reference split, beside the floors of held-out real images, and the
//! bits/dim bound. Each spec has its own hash;
//! its result lives in `<run>/eval/<spec-hash>/` (`metrics.json`, `samples.png`), so evaluating again
//! with the same spec is instant and another spec adds a result.
use super::bpd::{self, BpdOptions, BpdReport};
use super::images::ImageSet;
use super::inception::{self, Inception};
use super::metric;
use super::reference::{dataset_stats, Collector, SetStats};
use crate::config::{EvalClasses, EvalConfig, RunConfig, SplitName};
use crate::data::Split;
use crate::diffusion::Diffusion;
use crate::grid::make_grid;
use crate::models::{self, Denoiser};
use crate::progress::Reporter;
use crate::rng::reseed;
use crate::track::run_dir::RunDir;
use crate::track::{atomic_write, sha256_hex, tensorboard::EventWriter};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Keys of `[eval]` that say when to evaluate, not what: left out of the spec's hash.
const SCHEDULE_KEYS: [&str; 4] = ["every", "every_num_samples", "fid", "bpd"];

/// The hash of an evaluation spec resolved for its device (`EvalConfig::for_device`): its keys
/// (without `SCHEDULE_KEYS`) and the network's checksum. A CPU spec hashes as before the batch size
/// had a per-device default (`"batch_size": 64`).
pub fn spec_hash(cfg: &EvalConfig) -> String {
    let _ = cfg.batch();
    let mut v = serde_json::to_value(cfg).expect("EvalConfig serializes");
    if let Some(map) = v.as_object_mut() {
        for k in SCHEDULE_KEYS {
            map.remove(k);
        }
    }
    let identity = serde_json::json!({ "format": 1, "eval": v, "inception_sha256": inception::SHA256 });
    sha256_hex(identity.to_string().as_bytes())[..12].to_string()
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
/// `by_pi`: a clustering run's samples draw the clusters in proportion to π (the final evaluation;
/// the evaluation during training draws them balanced).
pub fn describe(config: &RunConfig, num_samples: i64, by_pi: bool) -> String {
    let e = &config.eval;
    let weights = match e.ema_sigma_rel {
        Some(s) => format!("post-hoc EMA sigma_rel={s}"),
        None => (if e.use_ema { "EMA" } else { "raw" }).to_string(),
    };
    let at = e.checkpoint.map_or("final".to_string(), |s| format!("step {s}"));
    let at = if e.replicate > 0 { format!("{at}, evaluation replicate {}", e.replicate) } else { at };
    let classes = match (config.conditioning.classes, e.classes) {
        (false, _) if config.cluster.on() && by_pi => ", clusters in proportion to π".to_string(),
        (false, _) if config.cluster.on() => ", clusters balanced".to_string(),
        (false, _) => String::new(),
        (true, EvalClasses::Balanced) => format!(", class-balanced, guidance w={}", e.guidance_scale),
        (true, EvalClasses::Unconditional) => ", unconditional (no class)".to_string(),
    };
    format!(
        "{num_samples} samples ({}, {weights} weights, {at}{classes}) vs {}",
        e.sampler.label(Some(config.diffusion.timesteps)),
        reference_set(config).describe()
    )
}

/// The bound's details: its terms are also in the result's metrics (`metric::bound`).
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
    /// Every computed metric by its registered name (`metric::all`): the samples' (`fid`, `kid`,
    /// `precision`, the classifier's scores, …), the floors and ceilings of as many held-out real images
    /// (`fid_floor`, `confident_real`, …), the bound's terms (`bpd`, …) and `sample_seconds`.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// What a metric keeps besides its values, by its key (`fid`: the distance's three terms).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpd: Option<BpdSummary>,
    /// What the floors compare: `256 of mnist:test[0:256] vs mnist:train[0:1000] at 32x32`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_spec: Option<String>,
    /// Network evaluations per image the sampler made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_evaluations: Option<usize>,
    pub seconds: f64,
    /// Results written before the metric registry kept FID, KID and the classifier's numbers in
    /// fields of their own; `upgrade` moves them into `metrics`.
    #[serde(flatten, skip_serializing)]
    legacy: crate::track::legacy::MetricFields,
}

impl EvalResult {
    pub fn new(spec_hash: String, spec: String, eval: EvalConfig, step: usize, weights_sha256: String) -> Self {
        Self {
            spec_hash,
            spec,
            eval,
            step,
            weights_sha256,
            metrics: BTreeMap::new(),
            details: BTreeMap::new(),
            bpd: None,
            floor_spec: None,
            model_evaluations: None,
            seconds: 0.0,
            legacy: Default::default(),
        }
    }

    /// Whether it holds the metrics of samples (FID and the others of `SAMPLE_METRICS`).
    pub fn sampled(&self) -> bool {
        metric::has_sample_metrics(&self.metrics)
    }

    /// Whether it holds the bound (bits/dim).
    pub fn bounded(&self) -> bool {
        self.metrics.contains_key(metric::bound::METRICS[0].name)
    }

    /// The result with the fields of the format before the registry moved into `metrics`
    /// (`track::legacy`), and the bound's terms of a result that kept only its summary (their names
    /// are the bound metric's, which `track` below `eval` does not know).
    fn upgrade(mut self) -> Self {
        self.legacy.move_into(&mut self.metrics);
        let m = &mut self.metrics;
        if let Some(b) = &self.bpd {
            for (k, v) in metric::bound::values_of(b.total, b.prior, b.diffusion, b.decoder) {
                m.entry(k).or_insert(v);
            }
        }
        self
    }
}

/// Samples of a run's model under its evaluation spec, and their Inception statistics.
pub struct Sampled {
    pub generated: SetStats,
    /// Every sample, in [-1, 1] (clipped by the sampler or not), on the CPU.
    pub images: Tensor,
    /// The class each sample was asked for (class-balanced conditional sampling), else None.
    pub labels: Option<Tensor>,
    /// Wall seconds in the sampler (without the Inception network).
    pub sample_seconds: f64,
}

impl Sampled {
    /// The first (up to) 64 samples, for a grid.
    pub fn first(&self) -> Tensor {
        self.images.narrow(0, 0, self.images.size()[0].min(64))
    }
}

/// `n` images sampled from `model` with the spec's sampler and their Inception features. Noise comes
/// from stream `eval-sample-<stream>`, index = batch, so it does not depend on what ran before.
#[allow(clippy::too_many_arguments)]
pub fn sample_features(
    model: &dyn Denoiser,
    config: &RunConfig,
    classes: Option<i64>,
    pi: Option<&[f64]>,
    n: i64,
    stream: u64,
    net: &Inception,
    device: Device,
    progress: &mut dyn Reporter,
) -> Result<Sampled> {
    let e = &config.eval.for_device(device.is_cuda());
    let batch = e.batch();
    let diffusion = Diffusion::new(config, device);
    let shape = |b: i64| [b, config.data.channels(), config.data.image_size, config.data.image_size];
    let mut collector = Collector::default();
    let (mut all, mut asked) = (Vec::new(), Vec::new());
    let mut sample_seconds = 0.0;
    let batches = (n + batch - 1) / batch;
    progress.phase("fid", n as u64);
    // A class-conditional model's images: class-balanced with guidance, or unconditional; a
    // clustering's: its clusters in proportion to π.
    let balanced = match (classes, e.classes) {
        (Some(k), EvalClasses::Balanced) => Some(k),
        _ => None,
    };
    let proportional = pi.filter(|_| balanced.is_some()).map(|pi| crate::cluster::em::proportional_labels(pi, n));
    for b in 0..batches {
        let len = batch.min(n - b * batch);
        let labels = match &proportional {
            Some(all) => {
                Some(Tensor::from_slice(&all[(b * batch) as usize..(b * batch + len) as usize]).to_device(device))
            }
            None => balanced.map(|k| models::balanced_labels(b * batch, len, k, device)),
        };
        if let Some(l) = &labels {
            asked.push(l.to_device(Device::Cpu));
        }
        reseed(config.seed, &crate::rng::replicate_stream(&format!("eval-sample-{stream}"), e.replicate), b as u64);
        let x_t = Tensor::randn(shape(len), (Kind::Float, device));
        crate::device::synchronize(device);
        let started = Instant::now();
        let mut network = models::sampling_fn(model, labels, e.guidance_scale);
        let out = diffusion.sample(&e.sampler, x_t, &[], &mut network, &mut |_, _| crate::signal::go_on());
        crate::signal::check("the evaluation's samples")?;
        crate::device::synchronize(device);
        sample_seconds += started.elapsed().as_secs_f64();
        collector.add(&net.features(&out.x0)?);
        all.push(out.x0.to_device(Device::Cpu));
        progress.advance(((b + 1) * batch).min(n) as u64);
    }
    let images = Tensor::cat(&all, 0);
    // The classes asked for, which the classifier's conditional accuracy checks; a clustering's
    // cluster indices are no classes of the dataset.
    let labels = (!asked.is_empty() && config.conditioning.classes).then(|| Tensor::cat(&asked, 0));
    Ok(Sampled { generated: collector.finish()?, images, labels, sample_seconds })
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

/// Every registered sample metric of `sampled` (`metric::SAMPLE_METRICS`), with the floors of as many
/// held-out real images, into `result`; returns the values computed.
#[allow(clippy::too_many_arguments)]
fn sample_metrics(
    config: &RunConfig,
    sampled: &Sampled,
    net: &Inception,
    reference: &SetStats,
    data_dir: &Path,
    device: Device,
    result: &mut EvalResult,
    progress: &mut dyn Reporter,
) -> Result<Vec<(String, f64)>> {
    let n = sampled.images.size()[0];
    let real_set = floor_set(config, n, data_dir)?;
    let reference_set = reference_set(config);
    let (real, _) = dataset_stats(&real_set, net, data_dir, &mut |line| progress.note(line))?;
    result.floor_spec = Some(format!("{} vs {}", real_set.describe(), reference_set.describe()));
    let inputs = metric::Inputs {
        config,
        images: &sampled.images,
        labels: sampled.labels.as_ref(),
        generated: &sampled.generated,
        reference,
        real: &real,
        reference_set: &reference_set,
        real_set: &real_set,
        data_dir,
        device,
        stream: 0,
    };
    let mut values = Vec::new();
    for m in metric::SAMPLE_METRICS {
        let computed = m.compute(&inputs, progress)?;
        for (name, _) in &computed.values {
            if !m.metrics().iter().any(|d| d.name == name) {
                bail!("metric `{}` computed `{name}`, which it does not register", m.key());
            }
        }
        if let Some(d) = computed.detail {
            result.details.insert(m.key().to_string(), d);
        }
        values.extend(computed.values);
    }
    values.push(("sample_seconds".into(), sampled.sample_seconds));
    Ok(values)
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
    RunDir::at(run_dir).eval_result(&spec_hash(cfg))
}

/// The stored result of this spec, if any (it may hold only some of the metrics).
fn stored_any(run_dir: &Path, cfg: &EvalConfig) -> Option<EvalResult> {
    let text = std::fs::read_to_string(result_path(run_dir, cfg)).ok()?;
    serde_json::from_str::<EvalResult>(&text).ok().map(EvalResult::upgrade)
}

/// The stored result of this spec (resolved for its device) when it holds every metric `cfg` asks for.
pub fn stored(run_dir: &Path, cfg: &EvalConfig) -> Option<EvalResult> {
    stored_any(run_dir, cfg).filter(|r| (!cfg.fid || r.sampled()) && (!cfg.bpd || r.bounded()))
}

/// What a reader (analysis, status, summaries) finds of a spec that may leave the batch size to the
/// device: the result of the spec as resolved for the device the run last ran on, else as resolved
/// for the other device kind (a run trained on one and evaluated on the other).
pub fn stored_as_evaluated(run_dir: &Path, cfg: &EvalConfig) -> Option<EvalResult> {
    let ran_on_cuda = RunDir::at(run_dir).attempts().last().is_some_and(|a| a.on_cuda());
    [ran_on_cuda, !ran_on_cuda].into_iter().find_map(|cuda| stored(run_dir, &cfg.for_device(cuda)))
}

/// Writes each value that has a TensorBoard tag as `<prefix>/<tag>` at `step`.
pub fn log_values(events: &mut EventWriter, prefix: &str, values: &[(String, f64)], step: i64) -> Result<()> {
    for (name, v) in values {
        if let Some(tag) = metric::find(name).and_then(|m| m.tag) {
            events.add_scalar(&format!("{prefix}/{tag}"), *v, step)?;
        }
    }
    Ok(())
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
    let eval = &eval.for_device(device.is_cuda());
    if let Some(r) = stored(run_dir, eval) {
        return Ok((r, true));
    }
    let started = Instant::now();
    let weights = match eval.ema_sigma_rel {
        Some(sigma_rel) => crate::weights::load_posthoc(run_dir, sigma_rel, eval.checkpoint, device),
        None => crate::weights::load_weights(run_dir, eval.use_ema, eval.checkpoint, device),
    };
    let mut loaded = weights.map_err(|e| match eval.checkpoint {
        Some(step) => e.context(format!("eval.checkpoint = {step}")),
        None => e,
    })?;
    loaded.config.eval = eval.clone();
    let config = &loaded.config;
    let hash = spec_hash(eval);
    let run = RunDir::at(run_dir);
    let out_dir = run.eval_spec(&hash);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let previous = stored_any(run_dir, eval).filter(|r| r.weights_sha256 == loaded.sha256);
    let mut result = previous.unwrap_or_else(|| {
        EvalResult::new(
            hash,
            describe(config, eval.num_samples, true),
            eval.clone(),
            loaded.step,
            loaded.sha256.clone(),
        )
    });
    let mut events = EventWriter::create(run_dir)?;
    let step = loaded.step as i64;
    // The run's own spec (the experiment's `[eval]`, final weights) logs under `eval/`, so every run of
    // an experiment has the same tags; any other spec under `eval@<spec-hash>/`, so curves never mix.
    let own = run.load_config().map(|c| spec_hash(&c.eval.for_device(device.is_cuda())));
    let prefix = if own.ok().as_deref() == Some(result.spec_hash.as_str()) && eval.checkpoint.is_none() {
        "eval".to_string()
    } else {
        format!("eval@{}", result.spec_hash)
    };
    if eval.fid && !result.sampled() {
        let mut net = Inception::load(data_dir, device)?;
        net.batch = eval.batch();
        let reference = reference_stats(config, &net, data_dir, progress)?;
        let sampled = sample_features(
            loaded.model.as_ref(),
            config,
            loaded.classes,
            bpd::mixture_weights(run_dir, &loaded)?.as_deref(),
            eval.num_samples,
            0,
            &net,
            device,
            progress,
        )?;
        let values = sample_metrics(config, &sampled, &net, &reference, data_dir, device, &mut result, progress)?;
        result.model_evaluations = Some(eval.sampler.num_steps(config.diffusion.timesteps));
        let first = sampled.first();
        let grid = make_grid(&first, (first.size()[0] as f64).sqrt().ceil() as usize, 2)?;
        let png = grid.to_png()?;
        atomic_write(&run.eval_samples(&result.spec_hash), &png)?;
        events.add_png(&format!("{prefix}/samples"), &png, grid.height, grid.width, grid.channels, step)?;
        log_values(&mut events, &prefix, &values, step)?;
        result.metrics.extend(values);
        let floors = result.floor_spec.as_deref().unwrap_or("?");
        progress.note(&format!("{}  [{}; floors: {floors}]", metric::quality_line(&result.metrics), result.spec));
    }
    if eval.bpd && !result.bounded() {
        let opts = BpdOptions {
            images: eval.bpd_images,
            batch: eval.batch(),
            t_stride: eval.bpd_t_stride,
            device,
            data_dir: data_dir.to_path_buf(),
        };
        let pi = bpd::mixture_weights(run_dir, &loaded)?;
        let report = bpd::bound(run_dir, config, loaded.model.as_ref(), pi.as_deref(), &opts, progress)?;
        let values = metric::bound::values(&report);
        log_values(&mut events, &prefix, &values, step)?;
        progress.note(&format!("bits/dim {:.4} on {} test images", report.total, report.images));
        result.metrics.extend(values);
        result.bpd = Some(BpdSummary::from(&report));
    }
    events.flush()?;
    result.seconds += started.elapsed().as_secs_f64();
    atomic_write(&run.eval_result(&result.spec_hash), serde_json::to_string_pretty(&result)?.as_bytes())?;
    Ok((result, false))
}

/// `eval` with `--spec KEY=VALUE` overrides applied (keys of `[eval]`, with or without `eval.`; TOML
/// values, bare words as strings; the result is checked as `[eval]` is, so unknown keys are not
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch size left to the device resolves to 64 on the CPU, which hashes exactly as the
    /// explicit 64 every earlier CPU evaluation was stored under, and to 500 on CUDA, another spec;
    /// a given batch size is kept on both.
    #[test]
    fn the_device_default_batch_resolves_and_hashes_apart() {
        let open = EvalConfig::default();
        assert_eq!(open.batch_size, None);
        let cpu = open.for_device(false);
        let cuda = open.for_device(true);
        assert_eq!((cpu.batch(), cuda.batch()), (64, 500));
        let explicit_64 = EvalConfig { batch_size: Some(64), ..EvalConfig::default() };
        assert_eq!(spec_hash(&cpu), spec_hash(&explicit_64));
        assert!(serde_json::to_string(&cpu).unwrap().contains("\"batch_size\":64"));
        assert_ne!(spec_hash(&cpu), spec_hash(&cuda));
        let given = EvalConfig { batch_size: Some(128), ..EvalConfig::default() };
        assert_eq!((given.for_device(false).batch(), given.for_device(true).batch()), (128, 128));
        assert!(!toml::to_string(&open).unwrap().contains("batch_size"), "absent in config.toml when open");
    }

    /// A reader finds the result stored under the spec of the device the run last ran on, and under
    /// the other kind's when that is the only one.
    #[test]
    fn readers_find_the_result_of_the_device_that_evaluated() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir { path: dir.path().to_path_buf() };
        let open = EvalConfig { bpd: false, ..EvalConfig::default() };
        let store = |cuda: bool, fid: f64| {
            let spec = open.for_device(cuda);
            let mut r = EvalResult::new(spec_hash(&spec), "s".into(), spec.clone(), 1, "w".into());
            r.metrics.insert("fid".into(), fid);
            let path = result_path(dir.path(), &spec);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, serde_json::to_string(&r).unwrap()).unwrap();
        };
        assert!(stored_as_evaluated(dir.path(), &open).is_none());
        store(true, 7.0);
        assert_eq!(stored_as_evaluated(dir.path(), &open).unwrap().metrics["fid"], 7.0, "only the CUDA one");
        store(false, 9.0);
        run.record_attempt("cpu (2 threads)", None, serde_json::json!({}), Default::default()).unwrap();
        assert_eq!(stored_as_evaluated(dir.path(), &open).unwrap().metrics["fid"], 9.0, "the run's own kind first");
        run.record_attempt("cuda:0 (of 1 CUDA devices)", None, serde_json::json!({}), Default::default()).unwrap();
        assert_eq!(stored_as_evaluated(dir.path(), &open).unwrap().metrics["fid"], 7.0);
    }
}
