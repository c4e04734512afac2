//! The training loop of one run, then sampling of a grid (and of a reverse-process trajectory).
mod window;

use crate::config::{LossKind, RunSpec, TimestepSampling, Weighting};
use crate::data::Dataset;
use crate::diffusion::loss::{min_snr_weights, per_sample_loss};
use crate::diffusion::sampler::{self, SampleOptions};
use crate::diffusion::timesteps::TimestepSampler;
use crate::diffusion::{forward::q_sample, target::training_target, NoiseSchedule};
use crate::eval::grid::{make_grid, trajectory_grid, Image};
use crate::models;
use crate::track::{atomic_replace, atomic_write, metrics::MetricsWriter, run_dir::RunDir, tensorboard::EventWriter};
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};
use window::Window;

/// What the loop tells the outside world; the runner draws progress bars or prints lines from it.
pub trait Reporter {
    /// A new phase ("train", "sample") of `total` units begins.
    fn phase(&mut self, name: &str, total: u64);
    fn advance(&mut self, position: u64);
    fn logged(&mut self, record: &LogRecord);
    /// A line of information about the run (e.g. the model's size).
    fn note(&mut self, text: &str);
}

#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    pub step: usize,
    /// Mean of the optimised (weighted) loss over the steps since the previous record.
    pub loss: f64,
    /// Mean unweighted per-sample loss for t in each quarter of [0, T) over the same steps (as
    /// improved-diffusion logs it); null where no sample fell in a quarter.
    pub loss_quarters: [Option<f64>; 4],
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
    /// Trainable parameters of the model.
    pub parameters: i64,
}

/// Trains the run described by `spec` in `dir`, saves the final weights as `model.safetensors`, then
/// draws `sample.num_samples` images with the configured sampler.
pub fn train_run(
    spec: &RunSpec,
    dir: &RunDir,
    device: Device,
    data_dir: &Path,
    reporter: &mut dyn Reporter,
) -> Result<Outcome> {
    let cfg = &spec.config;
    let (tc, dc) = (&cfg.train, &cfg.diffusion);
    let started = Instant::now();
    // One seed for every draw, in a fixed order: initialisation, then per step data order,
    // timesteps and noise. Runs of one experiment with the same seed therefore share their draws.
    tch::manual_seed(cfg.seed as i64);
    let data = Dataset::load_train(&cfg.data, data_dir, device)?;
    let schedule = NoiseSchedule::new(&dc.schedule, dc.timesteps, device);
    let vs = nn::VarStore::new(device);
    let [channels, height, width] = data.image_shape();
    let model = models::build(&cfg.model, channels, height, &vs.root());
    let parameters = models::parameter_count(&vs);
    reporter.note(&format!("model {}: {parameters} parameters", cfg.model.name()));
    let mut opt = nn::Adam::default().build(&vs, tc.lr)?;
    let mut timestep_sampler = match tc.timestep_sampling {
        TimestepSampling::Uniform => TimestepSampler::uniform(dc.timesteps),
        TimestepSampling::LossSecondMoment => TimestepSampler::loss_second_moment(dc.timesteps),
    };

    let mut events = EventWriter::create(&dir.path)?;
    let mut metrics = MetricsWriter::create(&dir.path.join("metrics.jsonl"))?;
    let (n, batch, steps) = (data.len(), tc.batch_size, tc.steps);
    if batch > n {
        bail!("train.batch_size = {batch} is larger than the dataset ({n} images)");
    }

    reporter.phase("train", steps as u64);
    let mut perm = Tensor::randperm(n, (Kind::Int64, device));
    let mut cursor = 0;
    let mut window = Window::new(device, dc.timesteps);
    let train_started = Instant::now();
    let mut last: Option<LogRecord> = None;
    for step in 1..=steps {
        // Epochs are permutations of the dataset; the incomplete last batch is dropped.
        if cursor + batch > n {
            perm = Tensor::randperm(n, (Kind::Int64, device));
            cursor = 0;
        }
        let x0 = data.images.index_select(0, &perm.narrow(0, cursor, batch));
        cursor += batch;
        let (t, importance) = timestep_sampler.sample(batch, device);
        let noise = x0.randn_like();
        let x_t = q_sample(&schedule, &x0, &t, &noise);
        let target = training_target(dc.target, &schedule, &x0, &noise, &t);
        let per_sample = per_sample_loss(tc.loss, tc.huber_delta, &model.forward_t(&x_t, &t, None, true), &target);
        let weights = match tc.weighting {
            Weighting::Uniform => importance,
            Weighting::MinSnr => {
                let w = min_snr_weights(dc.target, &schedule, &t, tc.min_snr_gamma);
                Some(importance.map_or(w.shallow_clone(), |i| w * i))
            }
        };
        let loss = match &weights {
            Some(w) => (&per_sample * w).mean(Kind::Float),
            None => per_sample.mean(Kind::Float),
        };
        opt.backward_step(&loss);
        timestep_sampler.update(&t, &per_sample.detach());
        window.add(&loss, &per_sample, &t);

        if step % tc.log_every == 0 || step == steps {
            let w = window.take();
            if !w.loss.is_finite() {
                let previous = last.as_ref().map_or("none".into(), |r| format!("{:.6} at step {}", r.loss, r.step));
                bail!(
                    "training loss is {} over steps {}..={step}; last finite loss: {previous}",
                    w.loss,
                    step + 1 - w.steps
                );
            }
            let record = LogRecord {
                step,
                loss: w.loss,
                loss_quarters: w.quarters,
                images_per_sec: (w.steps as i64 * batch) as f64 / w.seconds,
                lr: tc.lr,
                elapsed_seconds: started.elapsed().as_secs_f64(),
            };
            log(&mut metrics, &mut events, &record, tc.loss)?;
            reporter.logged(&record);
            last = Some(record);
        }
        reporter.advance(step as u64);
    }
    let images_per_sec = (steps as i64 * batch) as f64 / train_started.elapsed().as_secs_f64();
    let weights_path = dir.path.join("model.safetensors");
    atomic_replace(&weights_path, |tmp| Ok(vs.save(tmp)?))?;
    let weights_sha256 = crate::track::sha256_hex(&std::fs::read(&weights_path)?);

    let sample_steps = sampler::num_steps(&cfg.sample.sampler, dc.timesteps);
    reporter.phase("sample", sample_steps as u64);
    let opts = SampleOptions {
        target: dc.target,
        variance: dc.variance,
        clip_x0: cfg.sample.clip_x0,
        trajectory: &cfg.sample.trajectory,
    };
    let shape = [cfg.sample.num_samples, channels, height, width];
    let mut eps_model = |x: &Tensor, t: &Tensor| model.forward_t(x, t, None, false);
    let x_t = Tensor::randn(shape, (Kind::Float, device));
    let out = sampler::sample(&cfg.sample.sampler, &schedule, x_t, &opts, &mut eps_model, &mut |k| {
        reporter.advance(k as u64)
    });
    let ncol = (cfg.sample.num_samples as f64).sqrt().ceil() as usize;
    save_image(&dir.path.join("samples.png"), &make_grid(&out.x0, ncol, 2)?, "samples", steps, &mut events)?;
    if !out.trajectory.is_empty() {
        let grid = trajectory_grid(&out.trajectory, 8)?;
        save_image(&dir.path.join("trajectory.png"), &grid, "trajectory", steps, &mut events)?;
    }
    events.flush()?;

    Ok(Outcome {
        final_loss: last.map(|r| r.loss).unwrap_or(f64::NAN),
        images_per_sec,
        wall_seconds: started.elapsed().as_secs_f64(),
        weights_sha256,
        parameters,
    })
}

fn log(metrics: &mut MetricsWriter, events: &mut EventWriter, r: &LogRecord, loss: LossKind) -> Result<()> {
    metrics.append(r)?;
    let step = r.step as i64;
    events.add_scalar("train/loss", r.loss, step)?;
    for (q, value) in r.loss_quarters.iter().enumerate() {
        if let Some(v) = value {
            events.add_scalar(&format!("train/{}_q{q}", loss_name(loss)), *v, step)?;
        }
    }
    events.add_scalar("train/images_per_sec", r.images_per_sec, step)?;
    events.add_scalar("train/lr", r.lr, step)?;
    events.flush()
}

fn loss_name(loss: LossKind) -> &'static str {
    match loss {
        LossKind::L1 => "l1",
        LossKind::L2 => "l2",
        LossKind::Huber => "huber",
    }
}

fn save_image(path: &Path, image: &Image, tag: &str, step: usize, events: &mut EventWriter) -> Result<()> {
    let png = image.to_png()?;
    atomic_write(path, &png)?;
    events.add_png(tag, &png, image.height, image.width, image.channels, step as i64)
}
