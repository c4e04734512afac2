//! The variational bound of a trained run on the test split (`ddpm bpd`, `eval.bpd`), in bits/dim,
//! with every one of the T terms computed (batched over (image, t) pairs) unless a stride is asked for.
use crate::config::RunConfig;
use crate::data::{Dataset, Split};
use crate::diffusion::likelihood::prior_bpd;
use crate::diffusion::Diffusion;
use crate::models;
use crate::progress::Reporter;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

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
    /// A clustering run's mixture: `total` is then its bound, and the terms above are π-weighted
    /// averages of the clusters' terms (their sum Σ_k π_k L_k is at least the mixture's bound).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixture: Option<MixtureBound>,
    pub seconds: f64,
}

/// The bound of a mixture of Q cluster-conditional models, −log Σ_k π_k e^{−L_k(x)} per image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MixtureBound {
    pub pi: Vec<f64>,
    /// Mean over images of L_k(x), bits/dim, per cluster k.
    pub per_cluster: Vec<f64>,
    /// Mean over images of min_k L_k(x), bits/dim: each image under its best cluster alone.
    pub best_cluster: f64,
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

/// A clustering run's mixing weights π at the loaded weights' step (None: not a clustering).
pub fn mixture_weights(run_dir: &Path, loaded: &crate::weights::Loaded) -> Result<Option<Vec<f64>>> {
    if !loaded.config.cluster.on() {
        return Ok(None);
    }
    crate::cluster::history::weights_at(&crate::track::run_dir::RunDir::at(run_dir), loaded.step).map(Some)
}

/// The bound of `model` (a run's network with its configuration) on the first test images; with
/// `pi` (a clustering run's mixing weights), that of the mixture Σ_k π_k p(x | k), every term
/// computed under every cluster with the same timesteps and noise (Q times the cost).
pub fn bound(
    run_dir: &Path,
    config: &RunConfig,
    model: &dyn models::Denoiser,
    pi: Option<&[f64]>,
    opts: &BpdOptions,
    progress: &mut dyn Reporter,
) -> Result<BpdReport> {
    let started = Instant::now();
    let d = &config.diffusion;
    if !d.formulation.is_ddpm() {
        anyhow::bail!(
            "{}: bits/dim is DDPM's variational bound; a diffusion.formulation = \"{}\" run has none here (its \
             probability-flow likelihood is not computed)",
            run_dir.display(),
            d.formulation.name()
        );
    }
    let diffusion = Diffusion::new(config, opts.device);
    let schedule = &diffusion.schedule;
    let data = Dataset::load(&config.data, Split::Test, &opts.data_dir, opts.device)?;
    let n = (opts.images as i64).min(data.len());
    if n < 1 {
        bail!("--images must be at least 1");
    }
    // Every replicate bounds the same images (the image set is part of the spec, as FID's reference
    // set is): the noise differs, so the spread between replicates is the bound's own Monte-Carlo
    // noise, which is also what varies between seeds at a fixed image set.
    let x0 = data.images.narrow(0, 0, n);
    let stride = opts.t_stride.max(1);
    let ts: Vec<usize> = (0..d.timesteps).filter(|&t| t == 0 || t % stride == 0).collect();
    crate::rng::reseed(config.seed, &crate::rng::replicate_stream("eval-bpd", config.eval.replicate), 0);

    let pairs: Vec<(i64, i64)> = (0..n).flat_map(|i| ts.iter().map(move |&t| (i, t as i64))).collect();
    // Unconditional: one model; a mixture: cluster k's model for every k.
    let clusters: Vec<Option<i64>> = match pi {
        Some(pi) => (0..pi.len() as i64).map(Some).collect(),
        None => vec![None],
    };
    let mut terms = vec![vec![0f64; pairs.len()]; clusters.len()];
    let mut losses = vec![vec![0f64; pairs.len()]; clusters.len()];
    progress.phase("bpd", pairs.len() as u64);
    let _guard = tch::no_grad_guard();
    for (c, chunk) in pairs.chunks(opts.batch.max(1) as usize).enumerate() {
        crate::signal::check("the bound")?;
        let img = Tensor::from_slice(&chunk.iter().map(|p| p.0).collect::<Vec<_>>()).to_device(opts.device);
        let t = Tensor::from_slice(&chunk.iter().map(|p| p.1).collect::<Vec<_>>()).to_device(opts.device);
        let x0 = x0.index_select(0, &img);
        let eps = x0.randn_like();
        let start = c * opts.batch.max(1) as usize;
        for (k, cluster) in clusters.iter().enumerate() {
            let labels = cluster.map(|k| Tensor::full([chunk.len() as i64], k, (Kind::Int64, opts.device)));
            // The same model call gives the bound's term and the training loss at t.
            let mut network = |x: &Tensor, t: &Tensor| model.forward_t(x, t, labels.as_ref(), false);
            let (bpd, loss) = diffusion.bound_terms(&mut network, &x0, &t, &eps);
            for (out, values) in [(&mut terms[k], bpd), (&mut losses[k], loss)] {
                let values = Vec::<f64>::try_from(values.to_device(Device::Cpu).to_kind(Kind::Double))?;
                out[start..start + values.len()].copy_from_slice(&values);
            }
        }
        progress.advance((start + chunk.len()) as u64);
    }

    let m = ts.len();
    let prior = Vec::<f64>::try_from(prior_bpd(schedule, &x0).to_device(Device::Cpu))?;
    // With a stride, the mean of the evaluated L_{t−1} stands for all T − 1 of them.
    let scale = if stride == 1 { 1.0 } else { (d.timesteps - 1) as f64 / (m - 1).max(1) as f64 };
    // Each image's bound under each cluster, bits/dim `[N][Q]`.
    let per_image: Vec<Vec<f64>> = (0..n as usize)
        .map(|i| {
            terms
                .iter()
                .map(|tk| prior[i] + tk[i * m] + scale * tk[i * m + 1..(i + 1) * m].iter().sum::<f64>())
                .collect()
        })
        .collect();
    let weights: Vec<f64> = pi.map_or_else(|| vec![1.0], |p| p.to_vec());
    let mean_at = |values: &[Vec<f64>], j: usize| {
        let over = |v: &[f64]| (0..n as usize).map(|i| v[i * m + j]).sum::<f64>() / n as f64;
        values.iter().zip(&weights).map(|(v, w)| w * over(v)).sum::<f64>()
    };
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
    let diffusion = if stride == 1 { sampled } else { sampled / (m - 1).max(1) as f64 * (d.timesteps - 1) as f64 };
    let prior_mean = prior.iter().sum::<f64>() / n as f64;
    let (total, mixture) = match pi {
        None => (prior_mean + diffusion + decoder, None),
        Some(pi) => {
            let nats = (x0.size()[1..].iter().product::<i64>() as f64) * std::f64::consts::LN_2;
            let bounds = Tensor::from_slice(&per_image.concat()).view([n, pi.len() as i64]) * nats;
            let log_pi = Tensor::from_slice(pi).clamp_min(1e-300).log();
            let mixed = crate::cluster::em::mixture_bound(&bounds, &log_pi).mean(Kind::Double).double_value(&[]) / nats;
            let mean_of = |f: &dyn Fn(&[f64]) -> f64| per_image.iter().map(|r| f(r)).sum::<f64>() / n as f64;
            let per_cluster = (0..pi.len()).map(|k| mean_of(&|r| r[k])).collect();
            let best_cluster = mean_of(&|r| r.iter().copied().fold(f64::INFINITY, f64::min));
            (mixed, Some(MixtureBound { pi: pi.to_vec(), per_cluster, best_cluster }))
        }
    };
    let report = BpdReport {
        run: run_dir.display().to_string(),
        split: "test",
        images: n as usize,
        timesteps: d.timesteps,
        timesteps_evaluated: m,
        estimated: stride > 1,
        total,
        prior: prior_mean,
        diffusion,
        decoder,
        per_t,
        mixture,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(report)
}
