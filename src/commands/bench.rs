//! `ddpm bench`: training images/s, sampling evaluations/s, Inception images/s and peak memory of each
//! recipe's model on this device.
use anyhow::Result;
use std::path::PathBuf;

/// `ddpm bench`'s options.
#[derive(clap::Args)]
pub struct Args {
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
    /// The PyTorch reference for --compare [default: bench/pytorch_reference.py under the working
    /// directory, the executable's folder, or an ancestor of either]
    #[arg(long)]
    reference_script: Option<PathBuf>,
    /// Instead: one run trained by each of these numbers of processes on the CPU, e.g. 1,2 (training
    /// images/s and the all-reduce's cost per step; analysis/bench/parallel-cpu.csv)
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(usize))]
    processes: Vec<usize>,
}

pub fn exec(a: Args) -> Result<bool> {
    if !a.processes.is_empty() {
        if a.processes.contains(&0) {
            anyhow::bail!("--processes: counts of processes are integers >= 1");
        }
        print!("{}", ddpm::scaling::run(&a.models, &a.processes, a.steps.unwrap_or(4), a.batch, &a.out)?);
        println!("written to {}", a.out.join("parallel-cpu.csv").display());
        return Ok(true);
    }
    let device = ddpm::device::parse(&a.device)?;
    let out = a.out.clone();
    let opts = ddpm::bench::BenchOptions {
        models: a.models,
        sets: a.sets,
        device,
        steps: a.steps,
        batch: a.batch,
        eval_batch: a.eval_batch,
        eval_calls: a.eval_calls.unwrap_or(if device.is_cuda() { 50 } else { 3 }),
        compare: a.compare,
        profile: a.profile,
        data_dir: ddpm::data::data_dir(),
        out_dir: a.out,
        python: a.python,
        reference_script: a.reference_script,
    };
    print!("{}", ddpm::bench::run(&opts)?);
    println!("written to {}", out.display());
    Ok(true)
}
