//! `ddpm run-one <run-dir>`: executes one prepared run directory (what `run` starts for each run).
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// results/runs/<hash>
    pub run_dir: PathBuf,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Report progress as JSON lines on standard output (for the runner).
    #[arg(long)]
    pub events: bool,
    /// The evaluation spec as JSON (the experiment's `[eval]`), or a JSON list of specs evaluated
    /// in turn after one training [default: the run's own].
    #[arg(long)]
    pub eval: Option<String>,
    /// Resume even if the checkpoint was written on another kind of device (recorded).
    #[arg(long)]
    pub allow_device_change: bool,
}

/// The exit code tells the runner how the run ended (`runner::one::Ended`).
pub fn exec(a: Args) -> ExitCode {
    // SIGUSR1/SIGTERM: checkpoint and exit (the Slurm script requeues; `run` resumes later).
    ddpm::signal::install();
    let outcome = ddpm::device::parse(&a.device).and_then(|d| {
        let evals = a.eval.map(|e| ddpm::runner::one::parse_evals(&e)).transpose()?.unwrap_or_default();
        ddpm::runner::one::run_one(&a.run_dir, d, &ddpm::data::data_dir(), a.events, evals, a.allow_device_change)
    });
    match outcome {
        Ok(ended) => ExitCode::from(ended.exit_code() as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
