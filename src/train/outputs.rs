//! What training writes besides checkpoints: the forward process at the start, and at the end the
//! final weights, the sample grid and the reverse-process trajectory.
use crate::config::RunConfig;
use crate::data::Dataset;
use crate::diffusion::Diffusion;
use crate::grid::{make_grid, trajectory_grid, Image};
use crate::models;
use crate::progress::Reporter;
use crate::rng::reseed;
use crate::track::run_dir::{Artifact, RunDir};
use crate::track::tensorboard::EventWriter;
use crate::track::{atomic_replace, atomic_write, sha256_hex};
use anyhow::Result;
use std::path::Path;
use tch::{nn, Kind, Tensor};

/// The end of a run: `sample.num_samples` images from the trained network with `[sample]`'s sampler
/// (a class-conditional run's image i of class i mod K, so column j of the grid is class j), written
/// as `samples.png` and, when asked, the reverse process as `trajectory.png`; both in TensorBoard.
#[allow(clippy::too_many_arguments)]
pub fn draw_samples(
    cfg: &RunConfig,
    diffusion: &Diffusion,
    model: &dyn models::Denoiser,
    classes: Option<i64>,
    [channels, height, width]: [i64; 3],
    dir: &RunDir,
    events: &mut EventWriter,
    reporter: &mut dyn Reporter,
) -> Result<()> {
    let (device, timesteps, steps) =
        (diffusion.schedule.sqrt_alpha_bar.device(), diffusion.timesteps(), cfg.train.steps);
    let sample_steps = cfg.sample.sampler.steps(timesteps);
    reporter.phase("sample", sample_steps as u64);
    reseed(cfg.seed, "sample", 0);
    let shape = [cfg.sample.num_samples, channels, height, width];
    let labels = classes.map(|k| models::balanced_labels(0, cfg.sample.num_samples, k, device));
    let mut eps_model = models::sampling_fn(model, labels, cfg.sample.guidance_scale);
    let x_t = Tensor::randn(shape, (Kind::Float, device));
    let trajectory = cfg.sample.trajectory_steps(timesteps);
    let out = diffusion.sample(&cfg.sample.sampler, x_t, &trajectory, &mut eps_model, &mut |k, _| {
        reporter.advance(k as u64);
        crate::signal::go_on()
    });
    crate::signal::check("the final samples")?;
    let ncol = match classes {
        Some(k) => k as usize,
        None => (cfg.sample.num_samples as f64).sqrt().ceil() as usize,
    };
    save_image(&dir.file(Artifact::Samples), &make_grid(&out.x0, ncol, 2)?, "samples", steps, events)?;
    if !out.trajectory.is_empty() {
        let grid = trajectory_grid(&out.trajectory, 8)?;
        save_image(&dir.file(Artifact::Trajectory), &grid, "reverse_process", steps, events)?;
    }
    Ok(())
}

/// What a run logs once, at its start: the resolved configuration and the provenance as text, and
/// the forward process as an image strip (the first training image at five noise levels,
/// `Diffusion::forward_strip`).
pub fn log_run_once(
    dir: &RunDir,
    data: &Dataset,
    diffusion: &Diffusion,
    seed: u64,
    events: &mut EventWriter,
) -> Result<()> {
    let read = |a: Artifact| std::fs::read_to_string(dir.file(a)).unwrap_or_default();
    events.add_text("config", &format!("```toml\n{}\n```", read(Artifact::Config)), 0)?;
    events.add_text("provenance", &format!("```json\n{}\n```", read(Artifact::Provenance)), 0)?;
    reseed(seed, "forward-strip", 0);
    let x0 = data.images.narrow(0, 0, 1);
    let noise = x0.repeat([5, 1, 1, 1]).randn_like();
    let strip = diffusion.forward_strip(&x0, &noise);
    let grid = make_grid(&strip, 5, 2)?;
    save_image(&dir.file(Artifact::ForwardProcess), &grid, "forward_process", 0, events)?;
    events.flush()
}

/// Writes `vs` as safetensors at `path`; returns the file's sha256.
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<String> {
    let tensors: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(k, t)| (k, t.contiguous())).collect();
    atomic_replace(path, |tmp| Ok(Tensor::write_safetensors(&tensors, tmp)?))?;
    Ok(sha256_hex(&std::fs::read(path)?))
}

pub fn save_image(path: &Path, image: &Image, tag: &str, step: usize, events: &mut EventWriter) -> Result<()> {
    let png = image.to_png()?;
    atomic_write(path, &png)?;
    events.add_png(tag, &png, image.height, image.width, image.channels, step as i64)
}
