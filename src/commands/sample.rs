//! `ddpm sample`: images from a run's final weights or a checkpoint, as a grid and/or one PNG each.
use anyhow::{bail, Result};
use ddpm::config::{sampler, SamplerConfig};
use ddpm::diffusion::Diffusion;
use ddpm::eval::images::write_pngs;
use std::path::PathBuf;
use tch::{Kind, Tensor};

/// The options of `ddpm sample` (besides the run directory and the device).
#[derive(clap::Args)]
pub struct Args {
    /// A run directory, results/runs/<hash>
    pub run_dir: PathBuf,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(short = 'n', long, default_value_t = 64)]
    pub num: i64,
    /// ddpm, ddim, dpm_solver, euler, heun, euler_ancestral (DDPM runs); euler, heun (EDM); euler, heun,
    /// midpoint (flow matching)
    #[arg(long, default_value = "ddim")]
    pub sampler: String,
    /// Sampling steps [default: 50 for ddim, T for ddpm, 20 for the others]
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
pub fn exec(a: Args) -> Result<bool> {
    let (run_dir, device) = (&a.run_dir, a.device.as_str());
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
    // Any registered sampler by name, with its default keys except the steps (and DDIM's η).
    let mut keys = toml::Table::new();
    keys.insert("name".into(), toml::Value::String(a.sampler.clone()));
    if let Some(k) = a.steps {
        keys.insert("steps".into(), toml::Value::Integer(k as i64));
    }
    if a.eta != 0.0 {
        if a.sampler != "ddim" {
            bail!("--eta: only the ddim sampler has an η");
        }
        keys.insert("eta".into(), toml::Value::Float(a.eta));
    }
    let cfg: SamplerConfig = toml::Value::Table(keys).try_into().map_err(|e| {
        anyhow::anyhow!("--sampler {:?}: {e}; allowed are {}", a.sampler, SamplerConfig::NAMES.join(", "))
    })?;
    let formulation = &c.diffusion.formulation;
    if !formulation.samplers().contains(&cfg.name()) {
        bail!(
            "--sampler {:?}: a {} run samples with one of {}",
            a.sampler,
            formulation.name(),
            formulation.samplers().join(", ")
        );
    }
    // The keys given are checked by the rules of `[sample]`'s sampler (`SamplerConfig::check`).
    let keys =
        sampler::Keys { steps: "--steps", eta: "--eta", steps_allowed: format!("1 to T ({t_max})"), max_steps: t_max };
    let mut problems = Vec::new();
    cfg.check(&keys, &mut |ok, key, _value, allowed| {
        if !ok && (key != "--steps" || a.steps.is_some()) {
            problems.push(format!("{key}: allowed are {allowed}"));
        }
    });
    if cfg.num_steps(t_max) < 1 {
        problems.push(format!("--steps: allowed are 1 to T ({t_max})"));
    }
    if let Some(p) = problems.first() {
        bail!("{p}");
    }
    let diffusion = Diffusion::new(c, device);
    let classes = loaded.classes;
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
        let out = diffusion.sample(&cfg, x_t, &[], &mut model, &mut |_, _| std::ops::ControlFlow::Continue(()));
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
    Ok(true)
}
