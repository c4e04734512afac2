//! `ddpm eval bpd <run-dir>`: the variational bound of a trained run on the test split, in bits/dim,
//! with every one of the T terms computed (batched over (image, t) pairs) unless a stride is asked for.
use crate::config::RunConfig;
use crate::data::{Dataset, Split};
use crate::diffusion::likelihood::{prior_bpd, vlb_terms_bpd, TermOptions};
use crate::diffusion::loss::per_sample_loss;
use crate::diffusion::target::training_target;
use crate::diffusion::NoiseSchedule;
use crate::models;
use crate::progress::Progress;
use crate::progress::Reporter;
use crate::track::{atomic_write, run_dir::RunDir};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

pub struct BpdOptions {
    /// Test images to evaluate (the first N).
    pub images: usize,
    /// (image, t) pairs per model call.
    pub batch: i64,
    /// Evaluate t = 1 and every `t_stride`-th later step only; the diffusion term is then estimated.
    pub t_stride: usize,
    pub device: Device,
    pub data_dir: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct BpdReport {
    pub run: String,
    pub split: &'static str,
    pub images: usize,
    pub timesteps: usize,
    pub timesteps_evaluated: usize,
    /// True when the diffusion term was estimated from a stride of timesteps.
    pub estimated: bool,
    /// Mean over images, bits/dim: total = prior + diffusion + decoder.
    pub total: f64,
    /// L_T.
    pub prior: f64,
    /// Σ_{t=2}^{T} L_{t−1}.
    pub diffusion: f64,
    /// L_0 = −log p(x_0 | x_1).
    pub decoder: f64,
    /// The terms and the training loss at each evaluated t.
    pub per_t: Vec<PerT>,
    pub seconds: f64,
}

/// At one timestep, means over the images.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PerT {
    /// The paper's t (1..=T).
    pub t: usize,
    /// ln(ᾱ_t / (1 − ᾱ_t)).
    pub log_snr: f64,
    /// The bound's term in bits/dim: L_0 at t = 1, L_{t−1} after.
    pub bits: f64,
    /// The run's training loss (its loss kind on its target) at t, with the same noise as the term.
    pub loss: f64,
}

/// Loads a finished run: its configuration and the weights it samples with (`ema.safetensors` when
/// `sample.use_ema`, else `model.safetensors`), checked against their sha256 in `status.json`.
pub fn load_run(run_dir: &Path, device: Device) -> Result<(RunConfig, nn::VarStore, Box<dyn models::Denoiser>)> {
    let use_ema = RunDir { path: run_dir.to_path_buf() }.load_config()?.sample.use_ema;
    let loaded = crate::weights::load_weights(run_dir, use_ema, None, device)?;
    Ok((loaded.config, loaded.vs, loaded.model))
}

pub fn evaluate(run_dir: &Path, opts: &BpdOptions) -> Result<BpdReport> {
    let (config, _vs, model) = load_run(run_dir, opts.device)?;
    let report = bound(run_dir, &config, model.as_ref(), opts, &mut Progress::new("bpd"))?;
    atomic_write(&run_dir.join("bpd.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    // The bound joins the run's TensorBoard scalars at its last training step.
    let mut events = crate::track::tensorboard::EventWriter::create(run_dir)?;
    log_scalars(&mut events, "eval", &report, config.train.steps as i64)?;
    events.flush()?;
    Ok(report)
}

/// Writes the bound and its terms as `<prefix>/bpd*` scalars at `step`.
pub fn log_scalars(
    events: &mut crate::track::tensorboard::EventWriter,
    prefix: &str,
    r: &BpdReport,
    step: i64,
) -> Result<()> {
    let scalars =
        [("bpd", r.total), ("bpd_prior", r.prior), ("bpd_diffusion", r.diffusion), ("bpd_decoder", r.decoder)];
    for (tag, v) in scalars {
        events.add_scalar(&format!("{prefix}/{tag}"), v, step)?;
    }
    Ok(())
}

/// The bound of `model` (a run's network with its configuration) on the first test images.
pub fn bound(
    run_dir: &Path,
    config: &RunConfig,
    model: &dyn models::Denoiser,
    opts: &BpdOptions,
    progress: &mut dyn Reporter,
) -> Result<BpdReport> {
    let started = Instant::now();
    let d = &config.diffusion;
    let schedule = NoiseSchedule::new(&d.schedule, d.timesteps, opts.device);
    let data = Dataset::load(&config.data, Split::Test, &opts.data_dir, opts.device)?;
    let n = (opts.images as i64).min(data.len());
    if n < 1 {
        bail!("--images must be at least 1");
    }
    let x0 = data.images.narrow(0, 0, n);
    let stride = opts.t_stride.max(1);
    let ts: Vec<usize> = (0..d.timesteps).filter(|&t| t == 0 || t % stride == 0).collect();
    let term_opts = TermOptions { target: d.target, variance: d.variance, clip_x0: config.sample.clip_x0 };
    crate::rng::reseed(config.seed, "eval-bpd", 0);

    let pairs: Vec<(i64, i64)> = (0..n).flat_map(|i| ts.iter().map(move |&t| (i, t as i64))).collect();
    let mut terms = vec![0f64; pairs.len()];
    let mut losses = vec![0f64; pairs.len()];
    progress.phase("bpd", pairs.len() as u64);
    let _guard = tch::no_grad_guard();
    for (c, chunk) in pairs.chunks(opts.batch.max(1) as usize).enumerate() {
        let img = Tensor::from_slice(&chunk.iter().map(|p| p.0).collect::<Vec<_>>()).to_device(opts.device);
        let t = Tensor::from_slice(&chunk.iter().map(|p| p.1).collect::<Vec<_>>()).to_device(opts.device);
        let x0 = x0.index_select(0, &img);
        let eps = x0.randn_like();
        // The same model call gives the bound's term and the training loss at t.
        let mut output = None;
        let mut mf = |x: &Tensor, t: &Tensor| {
            let out = model.forward_t(x, t, None, false);
            output = Some(out.shallow_clone());
            out
        };
        let bpd = vlb_terms_bpd(&schedule, &x0, &t, &eps, &term_opts, &mut mf);
        let output = output.expect("the bound calls the model");
        let target = training_target(d.target, &schedule, &x0, &eps, &t);
        let loss = per_sample_loss(config.train.loss, config.train.huber_delta, &output, &target);
        let start = c * opts.batch.max(1) as usize;
        for (out, values) in [(&mut terms, bpd), (&mut losses, loss)] {
            let values = Vec::<f64>::try_from(values.to_device(Device::Cpu).to_kind(Kind::Double))?;
            out[start..start + values.len()].copy_from_slice(&values);
        }
        progress.advance((start + chunk.len()) as u64);
    }

    let m = ts.len();
    let prior = Vec::<f64>::try_from(prior_bpd(&schedule, &x0).to_device(Device::Cpu))?;
    let mean_at = |values: &[f64], j: usize| (0..n as usize).map(|i| values[i * m + j]).sum::<f64>() / n as f64;
    let per_t: Vec<PerT> = ts
        .iter()
        .enumerate()
        .map(|(j, &t)| PerT {
            t: t + 1,
            log_snr: schedule.snr_at(t).ln(),
            bits: mean_at(&terms, j),
            loss: mean_at(&losses, j),
        })
        .collect();
    let decoder = per_t[0].bits;
    let sampled: f64 = per_t[1..].iter().map(|p| p.bits).sum();
    // With a stride, the mean of the evaluated L_{t−1} stands for all T − 1 of them.
    let diffusion = if stride == 1 { sampled } else { sampled / (m - 1).max(1) as f64 * (d.timesteps - 1) as f64 };
    let prior_mean = prior.iter().sum::<f64>() / n as f64;
    let report = BpdReport {
        run: run_dir.display().to_string(),
        split: "test",
        images: n as usize,
        timesteps: d.timesteps,
        timesteps_evaluated: m,
        estimated: stride > 1,
        total: prior_mean + diffusion + decoder,
        prior: prior_mean,
        diffusion,
        decoder,
        per_t,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(report)
}
