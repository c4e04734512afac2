//! The evaluation commands of the binary: `eval`, `sample` and `fid`.
use crate::EvalArgs;
use anyhow::{bail, Context, Result};
use ddpm::config::{SamplerConfig, Spacing};
use ddpm::eval::fid::{frechet_distance, kid};
use ddpm::eval::images::{write_pngs, ImageSet};
use ddpm::eval::inception::Inception;
use ddpm::eval::reference::{dataset_stats, set_stats};
use ddpm::eval::run_eval::{evaluate_run, with_overrides};
use ddpm::experiment::load_experiment;
use ddpm::progress::Progress;
use ddpm::track::run_dir::{RunDir, State};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// `ddpm eval`: evaluates one run directory, or every finished run of an experiment.
pub fn eval(args: &EvalArgs) -> Result<bool> {
    let target = args.target.as_ref().context("give a run directory or an experiment file")?;
    let device = ddpm::device::parse(&args.device)?;
    let data_dir = ddpm::data::data_dir();
    let runs: Vec<(String, PathBuf, ddpm::config::EvalConfig)> = if target.is_dir() {
        let config = RunDir { path: target.clone() }.load_config()?;
        let provenance = std::fs::read_to_string(target.join("provenance.json")).unwrap_or_default();
        let label = serde_json::from_str::<serde_json::Value>(&provenance)
            .ok()
            .and_then(|p| p["label"].as_str().map(String::from));
        let label = label.unwrap_or_else(|| target.display().to_string());
        vec![(label, target.clone(), config.eval)]
    } else {
        let exp = load_experiment(target, &args.layers.load_options())?;
        let root = args.layers.results_root();
        exp.runs.iter().map(|r| (r.label.clone(), RunDir::new(&root, &r.hash).path, r.config.eval.clone())).collect()
    };
    let mut ok = true;
    let mut rows = Vec::new();
    for (label, dir, base) in runs {
        let eval = with_overrides(&base, &args.spec)?;
        let run = RunDir { path: dir.clone() };
        let mut config = run.load_config()?;
        config.eval = eval.clone();
        let problems = config.validate();
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            bail!("--spec: {}", list.join("; "));
        }
        if run.status()?.is_none_or(|s| s.state != State::Done) && eval.checkpoint.is_none() {
            println!("skip {label}: not done ({})", dir.display());
            continue;
        }
        let mut progress = Progress::new(&label);
        match evaluate_run(&dir, &eval, device, &data_dir, &mut progress) {
            Ok((r, cached)) => {
                progress.finish();
                if eval.checkpoint.is_none() {
                    ddpm::runner::one::record_evaluation(&run, &r)?;
                }
                rows.push((label, r, cached));
            }
            Err(e) => {
                progress.finish();
                eprintln!("error: {label}: {e:#}");
                ok = false;
            }
        }
    }
    let width = rows.iter().map(|(l, _, _)| l.len()).max().unwrap_or(3).max(3);
    println!("{:width$}  {:>9}  {:>9}  {:>9}  {:>6}  spec", "run", "FID", "KID", "bits/dim", "stored");
    let num = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    for (label, r, cached) in &rows {
        println!(
            "{label:width$}  {:>9}  {:>9}  {:>9}  {:>6}  {} [{}]",
            num(r.fid, 3),
            num(r.kid, 5),
            num(r.bpd.as_ref().map(|b| b.total), 4),
            if *cached { "yes" } else { "new" },
            r.spec,
            r.spec_hash
        );
    }
    Ok(ok)
}

/// The options of `ddpm sample` (besides the run directory and the device).
#[derive(clap::Args)]
pub struct SampleArgs {
    #[arg(short = 'n', long, default_value_t = 64)]
    pub num: i64,
    /// ddpm or ddim
    #[arg(long, default_value = "ddim")]
    pub sampler: String,
    /// Sampling steps [default: 50 for ddim, T for ddpm]
    #[arg(long)]
    pub steps: Option<usize>,
    /// DDIM's η (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// The grid's PNG file.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Write each image as <DIR>/000000.png, ...
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Use this checkpoint step instead of the final weights.
    #[arg(long)]
    pub checkpoint: Option<usize>,
    /// The last trained weights instead of their EMA.
    #[arg(long)]
    pub raw: bool,
    /// Seed of the sampling noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: i64,
    /// A class-conditional run: draw only this class (default: classes in turn, image i of class
    /// i mod K).
    #[arg(long)]
    pub class: Option<i64>,
    /// A class-conditional run: classifier-free guidance scale w (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub guidance: f64,
}

/// `ddpm sample`: images from a run's weights, as a grid and/or single files.
pub fn sample(run_dir: &Path, a: &SampleArgs, device: &str) -> Result<()> {
    use ddpm::diffusion::{sampler, NoiseSchedule};
    if a.output.is_none() && a.out_dir.is_none() {
        bail!("say where the samples go: -o grid.png and/or --out-dir DIR");
    }
    if a.num < 1 || a.batch < 1 {
        bail!("-n and --batch must be at least 1");
    }
    let device = ddpm::device::parse(device)?;
    let loaded =
        ddpm::weights::load_weights(run_dir, !a.raw, a.checkpoint, device).map_err(|e| match a.checkpoint {
            Some(step) => e.context(format!("--checkpoint {step}")),
            None => e,
        })?;
    let c = &loaded.config;
    let t_max = c.diffusion.timesteps;
    let cfg = match a.sampler.as_str() {
        "ddpm" => SamplerConfig::Ddpm { steps: a.steps, spacing: Spacing::Linspace },
        "ddim" => SamplerConfig::Ddim { steps: a.steps.unwrap_or(50), eta: a.eta, spacing: Spacing::Linspace },
        other => bail!("--sampler {other:?}: allowed are ddpm, ddim"),
    };
    if sampler::num_steps(&cfg, t_max) < 1 || a.steps.is_some_and(|k| k < 1 || k > t_max) {
        bail!("--steps: allowed are 1 to T ({t_max})");
    }
    let schedule = NoiseSchedule::new(&c.diffusion.schedule, t_max, device);
    let opts = sampler::SampleOptions {
        target: c.diffusion.target,
        variance: c.diffusion.variance,
        clip_x0: c.sample.clip_x0,
        trajectory: &[],
    };
    let classes = ddpm::models::num_classes(c)?;
    match (classes, a.class) {
        (None, Some(_)) => bail!("--class: the run is not class-conditional (conditioning.classes = false)"),
        (None, None) if a.guidance != 0.0 => bail!("--guidance: the run is not class-conditional"),
        (Some(k), Some(class)) if !(0..k).contains(&class) => bail!("--class {class}: allowed are 0 to {}", k - 1),
        _ => {}
    }
    if !(a.guidance >= 0.0 && a.guidance.is_finite()) {
        bail!("--guidance {}: allowed are finite numbers >= 0", a.guidance);
    }
    let mut grid_images = Vec::new();
    let mut done = 0i64;
    while done < a.num {
        let len = a.batch.min(a.num - done);
        ddpm::rng::reseed(a.seed, "cli-sample", (done / a.batch) as u64);
        let shape = [len, c.data.channels(), c.data.image_size, c.data.image_size];
        let x_t = Tensor::randn(shape, (Kind::Float, device));
        let labels = classes.map(|k| match a.class {
            Some(class) => Tensor::full([len], class, (Kind::Int64, device)),
            None => ddpm::models::balanced_labels(done, len, k, device),
        });
        let mut model = ddpm::models::sampling_fn(loaded.model.as_ref(), labels, a.guidance);
        let out = sampler::sample(&cfg, &schedule, x_t, &opts, &mut model, &mut |_| {});
        let x0 = out.x0.to_device(tch::Device::Cpu);
        if let Some(dir) = &a.out_dir {
            write_pngs(&x0, dir, done as usize)?;
        }
        if a.output.is_some() {
            grid_images.push(x0);
        }
        done += len;
        eprintln!("sampled {done}/{}", a.num);
    }
    if let Some(path) = &a.output {
        let all = Tensor::cat(&grid_images, 0);
        let grid = ddpm::grid::make_grid(&all, (a.num as f64).sqrt().ceil() as usize, 2)?;
        ddpm::track::atomic_write(path, &grid.to_png()?)?;
        println!("grid: {}", path.display());
    }
    if let Some(dir) = &a.out_dir {
        println!("{} images: {}", a.num, dir.display());
    }
    Ok(())
}

/// `ddpm fid A B`.
pub fn fid(a: &str, b: &str, subsets: usize, subset_size: usize, batch: i64, device: &str) -> Result<()> {
    let device = ddpm::device::parse(device)?;
    let data_dir = ddpm::data::data_dir();
    let mut net = Inception::load(&data_dir, device)?;
    net.batch = batch.max(1);
    let started = std::time::Instant::now();
    let mut stats = Vec::new();
    for text in [a, b] {
        let set = ImageSet::parse(text)?;
        let s = match set {
            ImageSet::Dataset { .. } => dataset_stats(&set, &net, &data_dir, &mut |l| eprintln!("{l}"))?.0,
            ImageSet::Folder(_) => set_stats(&set, &net, &data_dir)?,
        };
        eprintln!("{}: {} images", set.describe(), s.gaussian.n);
        stats.push(s);
    }
    let d = frechet_distance(&stats[0].gaussian, &stats[1].gaussian);
    ddpm::rng::reseed(0, "fid-kid", 0);
    let k = kid(&stats[0].features, &stats[1].features, subsets, subset_size);
    println!("FID  {:.4}", d.fid);
    println!("KID  {:.6} ± {:.6}  ({} subsets of {})", k.mean, k.std, k.subsets, k.subset_size);
    println!(
        "sets: {} ({} images) vs {} ({} images); {} negative eigenvalues clipped; {:.1}s",
        a,
        stats[0].gaussian.n,
        b,
        stats[1].gaussian.n,
        d.negative_eigenvalues,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
