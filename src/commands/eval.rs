//! `ddpm eval`: finished runs evaluated under their `[eval]` spec with `--spec` overrides (every
//! registered metric, stored per spec), and `ddpm eval bpd`: the variational bound of one run.
use super::Layers;
use anyhow::{bail, Context, Result};
use ddpm::eval::run_eval::{evaluate_run, with_overrides};
use ddpm::experiment::load_experiment;
use ddpm::progress::Progress;
use ddpm::track::run_dir::{Artifact, RunDir};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A run directory (results/runs/<hash>) or an experiment file (every finished run of it).
    pub target: Option<PathBuf>,
    /// Override a key of the evaluation spec, e.g. --spec num_samples=1000 --spec sampler.steps=100
    #[arg(long = "spec", value_name = "KEY=VALUE")]
    pub spec: Vec<String>,
    /// With an experiment file: its profile, --set overrides and results folder.
    #[command(flatten)]
    pub layers: Layers,
    #[arg(long, default_value = "auto")]
    pub device: String,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// The variational bound (Ho et al. eq. 5) on the test split in bits/dim, total and per term;
    /// writes bpd.json in the run directory.
    Bpd {
        /// A run directory, results/runs/<hash>
        run_dir: PathBuf,
        /// Number of test images (the first N).
        #[arg(long, default_value_t = 100)]
        images: usize,
        /// (image, t) pairs per model call (64 was fastest on a 2-core CPU: large batches spend their
        /// time in the allocator).
        #[arg(long, default_value_t = 64)]
        batch: i64,
        /// Evaluate every k-th timestep only (the diffusion term is then an estimate, and says so).
        #[arg(long, default_value_t = 1)]
        t_stride: usize,
        /// auto, cpu, cuda or cuda:N
        #[arg(long, default_value = "auto")]
        device: String,
    },
}

pub fn exec(command: Option<Command>, args: Args) -> Result<bool> {
    match command {
        Some(Command::Bpd { run_dir, images, batch, t_stride, device }) => {
            bpd_command(&run_dir, images, batch, t_stride, &device).map(|_| true)
        }
        None => eval_runs(&args),
    }
}

/// `ddpm eval`: evaluates one run directory, or every finished run of an experiment.
fn eval_runs(args: &Args) -> Result<bool> {
    let target = args.target.as_ref().context("give a run directory or an experiment file")?;
    let device = ddpm::device::parse(&args.device)?;
    let data_dir = ddpm::data::data_dir();
    let runs: Vec<(String, PathBuf, ddpm::config::EvalConfig)> = if target.is_dir() {
        let run = RunDir::at(target);
        let config = run.load_config()?;
        let label = run.provenance().and_then(|p| p.label).unwrap_or_else(|| target.display().to_string());
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
        if run.status()?.is_none_or(|s| !s.trained()) && eval.checkpoint.is_none() {
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
    println!("{:width$}{}  {:>6}  spec", "run", ddpm::eval::metric::headline_titles(), "stored");
    for (label, r, cached) in &rows {
        println!(
            "{label:width$}{}  {:>6}  {} [{}]",
            ddpm::eval::metric::headline_cells(&r.metrics),
            if *cached { "yes" } else { "new" },
            r.spec,
            r.spec_hash
        );
    }
    Ok(ok)
}

fn bpd_command(run_dir: &std::path::Path, images: usize, batch: i64, t_stride: usize, device: &str) -> Result<()> {
    let opts = ddpm::eval::bpd::BpdOptions {
        images,
        batch,
        t_stride,
        device: ddpm::device::parse(device)?,
        data_dir: ddpm::data::data_dir(),
    };
    let run = RunDir::at(run_dir);
    let use_ema = run.load_config()?.sample.use_ema;
    let loaded = ddpm::weights::load_weights(run_dir, use_ema, None, opts.device)?;
    let r = ddpm::eval::bpd::bound(
        run_dir,
        &loaded.config,
        loaded.model.as_ref(),
        ddpm::eval::bpd::mixture_weights(run_dir, &loaded)?.as_deref(),
        &opts,
        &mut Progress::new("bpd"),
    )?;
    ddpm::track::atomic_write(&run.file(Artifact::BoundReport), serde_json::to_string_pretty(&r)?.as_bytes())?;
    // The bound joins the run's TensorBoard scalars at its last training step.
    let mut events = ddpm::track::tensorboard::EventWriter::create(run_dir)?;
    let values = ddpm::eval::metric::bound::values(&r);
    ddpm::eval::run_eval::log_values(&mut events, "eval", &values, loaded.config.train.steps as i64)?;
    events.flush()?;
    let how = if r.estimated {
        format!("{} of {} timesteps, diffusion term ESTIMATED from a stride", r.timesteps_evaluated, r.timesteps)
    } else {
        format!("all {} timesteps", r.timesteps)
    };
    println!("bits/dim on {} {} images ({how}), {:.1}s", r.images, r.split, r.seconds);
    println!("  total      {:.5}", r.total);
    println!("  prior L_T  {:.3e}", r.prior);
    println!("  diffusion  {:.5}  (sum of L_1..L_(T-1))", r.diffusion);
    println!("  decoder    {:.5}  (L_0)", r.decoder);
    println!("written to {}", run.file(Artifact::BoundReport).display());
    Ok(())
}
