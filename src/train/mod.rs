//! The training loop of one run: ε-prediction with L_simple, Adam, then DDPM sampling of a grid.
use crate::config::RunSpec;
use crate::data::Dataset;
use crate::diffusion::{forward::q_sample, loss::eps_mse, sampler::ddpm_sample, NoiseSchedule};
use crate::eval::grid::make_grid;
use crate::models;
use crate::track::{atomic_replace, atomic_write, metrics::MetricsWriter, run_dir::RunDir, tensorboard::EventWriter};
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

/// What the loop tells the outside world; the runner draws progress bars or prints lines from it.
pub trait Reporter {
    /// A new phase ("train", "sample") of `total` units begins.
    fn phase(&mut self, name: &str, total: u64);
    fn advance(&mut self, position: u64);
    fn logged(&mut self, record: &LogRecord);
}

#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    pub step: usize,
    /// Mean loss over the steps since the previous record.
    pub loss: f64,
    pub images_per_sec: f64,
    pub lr: f64,
    pub elapsed_seconds: f64,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub final_loss: f64,
    pub images_per_sec: f64,
    pub wall_seconds: f64,
    /// sha256 of the saved `model.safetensors`.
    pub weights_sha256: String,
}

/// Trains the run described by `spec` in `dir`, saves the final weights as `model.safetensors`, then
/// draws `sample.num_samples` images.
pub fn train_run(
    spec: &RunSpec,
    dir: &RunDir,
    device: Device,
    data_dir: &Path,
    reporter: &mut dyn Reporter,
) -> Result<Outcome> {
    let cfg = &spec.config;
    let started = Instant::now();
    // One seed for every draw, in a fixed order: initialisation, then per step data order,
    // timesteps and noise. Runs of one experiment with the same seed therefore share their draws.
    tch::manual_seed(cfg.seed as i64);
    let data = Dataset::load_train(&cfg.data, data_dir, device)?;
    let schedule = NoiseSchedule::new(&cfg.diffusion.schedule, cfg.diffusion.timesteps, device);
    let vs = nn::VarStore::new(device);
    let [channels, height, width] = data.image_shape();
    let model = models::build(&cfg.model, channels, &vs.root());
    let mut opt = nn::Adam::default().build(&vs, cfg.train.lr)?;

    let mut events = EventWriter::create(&dir.path)?;
    let mut metrics = MetricsWriter::create(&dir.path.join("metrics.jsonl"))?;
    let (n, batch, steps, t_max) = (data.len(), cfg.train.batch_size, cfg.train.steps, cfg.diffusion.timesteps as i64);
    if batch > n {
        bail!("train.batch_size = {batch} is larger than the dataset ({n} images)");
    }

    reporter.phase("train", steps as u64);
    let mut perm = Tensor::randperm(n, (Kind::Int64, device));
    let mut cursor = 0;
    let mut window_loss = Tensor::zeros([], (Kind::Float, device));
    let (mut window_steps, mut window_start) = (0usize, Instant::now());
    let train_started = Instant::now();
    let mut last = None;
    for step in 1..=steps {
        // Epochs are permutations of the dataset; the incomplete last batch is dropped.
        if cursor + batch > n {
            perm = Tensor::randperm(n, (Kind::Int64, device));
            cursor = 0;
        }
        let x0 = data.images.index_select(0, &perm.narrow(0, cursor, batch));
        cursor += batch;
        let t = Tensor::randint(t_max, [batch], (Kind::Int64, device));
        let noise = x0.randn_like();
        let x_t = q_sample(&schedule, &x0, &t, &noise);
        let loss = eps_mse(&model.forward_t(&x_t, &t, true), &noise);
        opt.backward_step(&loss);
        // Accumulated on the device: the host reads the loss only when it logs.
        window_loss += loss.detach();
        window_steps += 1;

        if step % cfg.train.log_every == 0 || step == steps {
            let mean = window_loss.double_value(&[]) / window_steps as f64;
            if !mean.is_finite() {
                let previous = last
                    .as_ref()
                    .map_or("none".to_string(), |r: &LogRecord| format!("{:.6} at step {}", r.loss, r.step));
                bail!(
                    "training loss is {mean} over steps {}..={step}; last finite loss: {previous}",
                    step + 1 - window_steps
                );
            }
            let record = LogRecord {
                step,
                loss: mean,
                images_per_sec: (window_steps as i64 * batch) as f64 / window_start.elapsed().as_secs_f64(),
                lr: cfg.train.lr,
                elapsed_seconds: started.elapsed().as_secs_f64(),
            };
            metrics.append(&record)?;
            events.add_scalar("train/loss", record.loss, step as i64)?;
            events.add_scalar("train/images_per_sec", record.images_per_sec, step as i64)?;
            events.add_scalar("train/lr", record.lr, step as i64)?;
            events.flush()?;
            reporter.logged(&record);
            last = Some(record);
            window_loss = Tensor::zeros([], (Kind::Float, device));
            window_steps = 0;
            window_start = Instant::now();
        }
        reporter.advance(step as u64);
    }
    let images_per_sec = (steps as i64 * batch) as f64 / train_started.elapsed().as_secs_f64();
    let weights_path = dir.path.join("model.safetensors");
    atomic_replace(&weights_path, |tmp| Ok(vs.save(tmp)?))?;
    let weights_sha256 = crate::track::sha256_hex(&std::fs::read(&weights_path)?);

    reporter.phase("sample", t_max as u64);
    let shape = [cfg.sample.num_samples, channels, height, width];
    let mut eps_model = |x: &Tensor, t: &Tensor| model.forward_t(x, t, false);
    let samples = ddpm_sample(&schedule, &shape, device, cfg.sample.clip_x0, &mut eps_model, |t| {
        reporter.advance((t_max as usize - t) as u64)
    });
    let ncol = (cfg.sample.num_samples as f64).sqrt().ceil() as usize;
    let grid = make_grid(&samples, ncol, 2)?;
    let png = grid.to_png()?;
    atomic_write(&dir.path.join("samples.png"), &png)?;
    events.add_png("samples", &png, grid.height, grid.width, grid.channels, steps as i64)?;
    events.flush()?;

    Ok(Outcome {
        final_loss: last.map(|r| r.loss).unwrap_or(f64::NAN),
        images_per_sec,
        wall_seconds: started.elapsed().as_secs_f64(),
        weights_sha256,
    })
}
