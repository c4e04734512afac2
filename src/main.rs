//! The `ddpm` command line: the clap definitions and the dispatch to `commands/<name>.rs`.
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod commands;

use commands::ExperimentArgs;

#[derive(Parser)]
#[command(name = "ddpm", version, about = "Train and compare DDPM variants declared in experiment files")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train every run of an experiment that is not done yet.
    Run(commands::run::Args),
    /// List the runs of an experiment: label, hash, and whether each is new, partial or done.
    /// An experiment file: each run's hash, state and label. A folder (`ddpm plan experiments`): one
    /// line per experiment file in it, with its runs, trainings, what is done and its description.
    Plan(ExperimentArgs),
    /// Show where each run stands: state, step, last loss, device, elapsed time, and its Slurm job.
    Status(ExperimentArgs),
    /// Cancel the experiment's Slurm jobs that are still queued or running (runs keep their checkpoints).
    Cancel(ExperimentArgs),
    /// Write the experiment's HParams data and print its TensorBoard log dir
    /// (results/experiments/<experiment>, where each run appears under its label).
    Logdir(ExperimentArgs),
    /// Tables (Parquet, CSV), plots and report.md of an experiment's runs in analysis/<experiment>/
    /// (also written at the end of `run`).
    Analyze(commands::analyze::AnalyzeArgs),
    /// Print every resolved key of each run with its value and where it came from.
    Show(ExperimentArgs),
    /// Execute one prepared run directory (what `run` starts for each run).
    RunOne(commands::run_one::Args),
    /// Datasets.
    Data {
        #[command(subcommand)]
        command: commands::data::Command,
    },
    /// Print the device `--device auto` picks and what CUDA libtorch sees.
    Device,
    /// Training images/s, sampling model evaluations/s, FID feature images/s and peak memory of each
    /// recipe's model on this device; writes analysis/bench/<device>.csv.
    Bench(commands::bench::Args),
    /// Compare noise schedules: a table of β_t, ᾱ_t, SNR and log-SNR, and optionally a plot of ᾱ_t.
    Schedules(commands::schedules::Args),
    /// List the models with their parameter counts for a channel count and image size.
    Models(commands::models::Args),
    /// Evaluate finished runs (every registered metric: FID, KID, precision/recall, bits/dim, ...)
    /// under their `[eval]` spec with `--spec` overrides:
    /// `ddpm eval results/runs/<hash> --spec num_samples=1000` or `ddpm eval experiments/x.toml`.
    /// Results are stored per spec in <run>/eval/<spec-hash>/metrics.json.
    #[command(args_conflicts_with_subcommands = true)]
    Eval {
        #[command(subcommand)]
        command: Option<commands::eval::Command>,
        #[command(flatten)]
        args: commands::eval::Args,
    },
    /// Draw samples from a run's final weights or a checkpoint: a grid (-o) and/or one PNG per image
    /// (--out-dir, for external tools such as pytorch-fid).
    Sample(commands::sample::Args),
    /// FID and KID between two image sets, each a folder of PNG files or a dataset split such as
    /// `mnist:test`, `mnist:test[0:5000]`, `fashion_mnist:train[:1000]` (as pytorch-fid does for folders).
    Fid(commands::fid::Args),
    /// Reproduce a committed result: check COMMIT out in a temporary worktree, build it (or reuse this
    /// binary when the code is identical), run the experiment into a separate results root, and compare
    /// the new analysis/<experiment>/runs table with the committed one (PASS/FAIL per run and metric).
    Reproduce(commands::reproduce::Args),
    /// Re-run one finished run from its recorded configuration and code (its commit, with its
    /// code.patch when it was dirty) and compare the weights' checksums and the metrics.
    Verify(commands::verify::Args),
}

fn main() -> ExitCode {
    ddpm::device::keep_freed_host_memory();
    let result = match Cli::parse().command {
        Command::Run(a) => commands::run::exec(a),
        Command::Plan(a) => commands::plan::exec(&a),
        Command::Status(a) => commands::status::exec(&a),
        Command::Cancel(a) => commands::cancel::exec(&a),
        Command::Logdir(a) => commands::logdir::exec(&a),
        Command::Analyze(a) => commands::analyze::exec(&a),
        Command::Show(a) => commands::show::exec(&a),
        Command::RunOne(a) => return commands::run_one::exec(a),
        Command::Data { command } => commands::data::exec(command),
        Command::Device => commands::device::exec(),
        Command::Bench(a) => commands::bench::exec(a),
        Command::Schedules(a) => commands::schedules::exec(a),
        Command::Models(a) => commands::models::exec(a),
        Command::Eval { command, args } => commands::eval::exec(command, args),
        Command::Sample(a) => commands::sample::exec(a),
        Command::Fid(a) => commands::fid::exec(a),
        Command::Reproduce(a) => commands::reproduce::exec(a),
        Command::Verify(a) => commands::verify::exec(a),
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
