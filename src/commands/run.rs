//! `ddpm run`: every run of an experiment that is not done yet, on this machine's devices or as a Slurm job array.
use super::{analyze_and_print, ExperimentArgs};
use anyhow::Result;
use ddpm::runner::{self, RunOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub args: ExperimentArgs,
    /// auto (every CUDA device, else the CPU), cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CUDA devices to use, one run at a time on each, e.g. 0,2 (overrides --device).
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<usize>,
    /// Runs at once on each device (small models leave a large GPU idle otherwise).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub runs_per_device: u32,
    /// List the runs and whether they are done, without running anything.
    #[arg(long)]
    pub dry_run: bool,
    /// local (this machine's devices) or slurm (one job array on the cluster; see docs/runner.md).
    #[arg(long, default_value = "local", value_parser = ["local", "slurm"])]
    pub launcher: String,
    #[command(flatten)]
    pub slurm: SlurmArgs,
    /// Resume a run on another kind of device than its checkpoint was written on (CPU and CUDA draw
    /// different random numbers, so the resumed run is not the one an uninterrupted run would be);
    /// recorded in the run's attempts.jsonl.
    #[arg(long)]
    pub allow_device_change: bool,
}

/// Trains (and evaluates) every run of the experiment that is not done, here or on Slurm, then
/// writes the analysis.
pub fn exec(a: Args) -> Result<bool> {
    let Args { mut args, device, devices: list, runs_per_device, dry_run, launcher, slurm, allow_device_change } = a;
    let placement = if launcher == "slurm" {
        super::Placement::slurm(&device, slurm_config(&slurm)?.gres.as_deref())
    } else {
        super::Placement::local(&device, &list)
    };
    if let Some(line) = args.layers.choose_profile(&args.experiment.clone(), &placement)? {
        println!("{line}");
    }
    if dry_run {
        super::plan::plan(&args).map(|_| true)
    } else if launcher == "slurm" {
        if let Some(d) = sequential_design(&args)? {
            anyhow::bail!(
                "{}: `experiment.seeds` = {{ start = {}, max = {}, step = {} }} is sequential: which seeds run next \
                 depends on the analysis of the last look, so it runs only locally (without --launcher slurm); \
                 give a list of seeds to run it on Slurm",
                args.experiment.display(),
                d.start,
                d.max,
                d.step
            );
        }
        if list.is_empty() {
            submit_slurm(&args, &device, &slurm, allow_device_change).map(|_| true)
        } else {
            Err(anyhow::anyhow!("--devices: not with --launcher slurm (ask for GPUs with --gres=gpu:N)"))
        }
    } else if slurm.any() {
        Err(anyhow::anyhow!("the Slurm options (--partition, --gres, ...) need --launcher slurm"))
    } else {
        let devices = devices(&device, &list)?;
        // Sequential seeds: one look at a time (seeds 0 … n − 1), until the primary is decided.
        let looks: Vec<Option<u64>> = match sequential_design(&args)? {
            Some(d) => d.looks().into_iter().map(|n| Some(n as u64)).collect(),
            None => vec![None],
        };
        for (k, &look) in looks.iter().enumerate() {
            let opts = RunOptions {
                experiment: args.experiment.clone(),
                load: args.load_options(),
                devices: devices.clone(),
                runs_per_device: runs_per_device as usize,
                results_root: args.results_root(),
                data_dir: ddpm::data::data_dir(),
                allow_device_change,
                seeds_below: look,
            };
            let report = runner::run(&opts)?;
            let nothing_new = report.outcomes.iter().all(|(_, _, o)| matches!(o, runner::Outcome::Skipped(_)));
            let analysis = match analyze_and_print(&report.experiment, &args.layers) {
                // Every run was done: the analysis of those runs is what was there (a
                // read-only results folder cannot take a new copy).
                Err(e) if nothing_new => {
                    eprintln!("warning: the analysis was not written: {e:#}");
                    None
                }
                other => Some(other?),
            };
            if report.failures() > 0 {
                return Ok(false);
            }
            let Some(n) = look else { continue };
            let Some(primary) = analysis.and_then(|a| a.primary) else {
                println!("sequential seeds: no verdict on the primary metric after {n} seeds (not measured, or the same in every variant); adding seeds");
                continue;
            };
            if primary.decided {
                println!("sequential seeds: {} after {n} seeds; no more seeds", primary.words);
                break;
            } else if k + 1 == looks.len() {
                println!("sequential seeds: {} after the most seeds the design allows ({n})", primary.words);
            } else {
                println!(
                    "sequential seeds: {} after {n} seeds; adding seeds up to {}",
                    primary.words,
                    looks[k + 1].unwrap_or(n)
                );
            }
        }
        Ok(true)
    }
}

/// The experiment's sequential seeds, if it has them.
fn sequential_design(args: &ExperimentArgs) -> Result<Option<ddpm::experiment::SeedDesign>> {
    Ok(ddpm::experiment::load_experiment(&args.experiment, &args.load_options())?.question.sequential)
}

/// The Slurm options: ~/.config/ddpm/launcher.toml, then ./ddpm.toml, then the command line.
fn slurm_config(slurm: &SlurmArgs) -> Result<ddpm::runner::slurm::config::SlurmConfig> {
    use ddpm::runner::slurm::config;
    let files: Vec<PathBuf> = config::user_file().into_iter().chain([PathBuf::from("ddpm.toml")]).collect();
    config::load(&files, &slurm.overrides())
}

/// `run --launcher slurm`: submits the job array (and the analysis job after it).
fn submit_slurm(args: &ExperimentArgs, device: &str, slurm: &SlurmArgs, allow_device_change: bool) -> Result<()> {
    use ddpm::runner::slurm;
    let config = slurm_config(slurm)?;
    let mut analyze_args = vec![std::path::absolute(&args.experiment)?.display().to_string()];
    if let Some(p) = &args.layers.profile {
        analyze_args.extend(["--profile".into(), p.clone()]);
    }
    for s in &args.layers.sets {
        analyze_args.extend(["--set".into(), s.clone()]);
    }
    analyze_args.extend(["--results".into(), args.results_root().display().to_string()]);
    slurm::submit(&slurm::SubmitOptions {
        experiment: args.experiment.clone(),
        load: args.load_options(),
        results_root: args.results_root(),
        data_dir: ddpm::data::data_dir(),
        device: device.to_string(),
        analyze_args,
        config,
        allow_device_change,
    })?;
    Ok(())
}

/// `--devices 0,2`, or `--device`: auto means every CUDA device, else the CPU. A device listed twice
/// is refused: one worker per listed device, and several runs on one GPU is `--runs-per-device`.
fn devices(device: &str, devices: &[usize]) -> Result<Vec<tch::Device>> {
    if let Some(twice) = devices.iter().enumerate().find_map(|(i, d)| devices[..i].contains(d).then_some(*d)) {
        let list: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
        anyhow::bail!(
            "--devices {}: device {twice} is listed more than once; to run several runs at once on one GPU, \
             list it once and use --runs-per-device N",
            list.join(",")
        );
    }
    if !devices.is_empty() {
        return devices.iter().map(|n| ddpm::device::parse(&format!("cuda:{n}"))).collect();
    }
    match device {
        "auto" if tch::Cuda::is_available() => {
            Ok((0..tch::Cuda::device_count() as usize).map(tch::Device::Cuda).collect())
        }
        other => Ok(vec![ddpm::device::parse(other)?]),
    }
}

/// The Slurm launcher's options; each overrides the same key of `[slurm]` in ddpm.toml or
/// ~/.config/ddpm/launcher.toml.
#[derive(clap::Args)]
#[command(next_help_heading = "Slurm (with --launcher slurm)")]
pub struct SlurmArgs {
    /// Partition of every task
    #[arg(long)]
    partition: Option<String>,
    /// Account charged
    #[arg(long)]
    account: Option<String>,
    /// Quality of service
    #[arg(long)]
    qos: Option<String>,
    /// Time limit per run, e.g. 04:00:00
    #[arg(long)]
    time: Option<String>,
    /// Generic resources per run, e.g. gpu:1
    #[arg(long)]
    gres: Option<String>,
    /// CPUs per run (--cpus-per-task)
    #[arg(long)]
    cpus_per_run: Option<u32>,
    /// Memory per run, e.g. 32G
    #[arg(long)]
    mem: Option<String>,
    /// At most this many runs at once
    #[arg(long)]
    max_parallel: Option<u32>,
    /// SIGUSR1 this many seconds before the time limit (checkpoint, then requeue) [default: 120]
    #[arg(long)]
    signal_seconds: Option<u32>,
    /// A further sbatch argument, e.g. --sbatch-arg=--constraint=a100 (repeatable)
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    sbatch_args: Vec<String>,
    /// The ddpm executable as the compute nodes see it [default: this one]
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Do not submit the analysis job that follows the array
    #[arg(long)]
    no_analyze_job: bool,
}

impl SlurmArgs {
    fn overrides(&self) -> ddpm::runner::slurm::config::Overrides {
        ddpm::runner::slurm::config::Overrides {
            partition: self.partition.clone(),
            account: self.account.clone(),
            qos: self.qos.clone(),
            time: self.time.clone(),
            gres: self.gres.clone(),
            cpus_per_run: self.cpus_per_run,
            mem: self.mem.clone(),
            max_parallel: self.max_parallel,
            signal_seconds: self.signal_seconds,
            extra_args: self.sbatch_args.clone(),
            binary: self.binary.clone(),
            analyze: self.no_analyze_job.then_some(false),
        }
    }

    fn any(&self) -> bool {
        let o = self.overrides();
        serde_json::to_value(&o).is_ok_and(|v| v.as_object().is_some_and(|m| !m.is_empty()))
    }
}
