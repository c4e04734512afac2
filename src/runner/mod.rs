//! Executes an experiment: every run once, skipping those already done, one at a time on the chosen
//! device. A failed run is recorded and the others still run.
use crate::config::{load_experiment, Experiment, LoadOptions, RunSpec};
use crate::track::run_dir::{RunDir, State, Status};
use crate::train::train_run;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tch::Device;

pub struct RunOptions {
    pub experiment: PathBuf,
    pub load: LoadOptions,
    pub device: Device,
    pub results_root: PathBuf,
    pub data_dir: PathBuf,
}

/// How a run of the experiment ended in this invocation.
#[derive(Debug)]
pub enum Outcome {
    Trained(Status),
    Skipped(Status),
    Failed(String),
}

pub struct Report {
    pub experiment: Experiment,
    pub outcomes: Vec<(RunSpec, PathBuf, Outcome)>,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.outcomes.iter().filter(|(_, _, o)| matches!(o, Outcome::Failed(_))).count()
    }
}

/// `results/experiments/<experiment>/<label>` → `../../runs/<hash>`, so tools that show folder
/// names (TensorBoard) show readable labels.
fn link_label(results_root: &Path, spec: &RunSpec) -> Result<()> {
    let dir = results_root.join("experiments").join(&spec.experiment);
    std::fs::create_dir_all(&dir)?;
    let link = dir.join(spec.label.replace('/', "_"));
    let target = Path::new("../../runs").join(&spec.hash);
    if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
        return Ok(());
    }
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).with_context(|| format!("cannot link {}", link.display()))
}

pub fn run(opts: &RunOptions) -> Result<Report> {
    let experiment = load_experiment(&opts.experiment, &opts.load)?;
    let device_name = crate::device::describe(opts.device);
    println!(
        "experiment `{}`{}: {} run(s), device {device_name}",
        experiment.name,
        experiment.profile.as_ref().map(|p| format!(" (profile {p})")).unwrap_or_default(),
        experiment.runs.len()
    );
    let mut outcomes = Vec::new();
    for spec in &experiment.runs {
        let dir = RunDir::new(&opts.results_root, &spec.hash);
        link_label(&opts.results_root, spec)?;
        if let Some(status) = dir.status()?.filter(|s| s.state == State::Done) {
            println!("skip {} ({}): already done in {}", spec.label, spec.hash, dir.path.display());
            outcomes.push((spec.clone(), dir.path.clone(), Outcome::Skipped(status)));
            continue;
        }
        println!("run  {} ({}) -> {}", spec.label, spec.hash, dir.path.display());
        let outcome = execute(spec, &dir, opts, &device_name);
        outcomes.push((spec.clone(), dir.path.clone(), outcome));
    }
    let report = Report { experiment, outcomes };
    print_summary(&report);
    Ok(report)
}

fn execute(spec: &RunSpec, dir: &RunDir, opts: &RunOptions, device_name: &str) -> Outcome {
    let result = (|| {
        dir.prepare(spec, device_name)?;
        dir.write_status(&Status::new(State::Running, spec, 0))?;
        let mut reporter = crate::progress::Progress::new(&spec.label);
        let outcome = train_run(spec, dir, opts.device, &opts.data_dir, &mut reporter);
        reporter.finish();
        outcome
    })();
    match result {
        Ok(o) => {
            let mut status = Status::new(State::Done, spec, spec.config.train.steps);
            status.final_loss = Some(o.final_loss);
            status.images_per_sec = Some(o.images_per_sec);
            status.wall_seconds = Some(o.wall_seconds);
            status.weights_sha256 = Some(o.weights_sha256);
            status.parameters = Some(o.parameters);
            match dir.write_status(&status) {
                Ok(()) => Outcome::Trained(status),
                Err(e) => Outcome::Failed(format!("{e:#}")),
            }
        }
        Err(e) => {
            let message = format!("{e:#}");
            eprintln!("run {} failed: {message}", spec.label);
            let mut status = Status::new(State::Failed, spec, 0);
            status.error = Some(message.clone());
            let _ = dir.write_status(&status);
            Outcome::Failed(message)
        }
    }
}

fn print_summary(report: &Report) {
    println!("\nsummary of `{}`:", report.experiment.name);
    let width = report.outcomes.iter().map(|(s, _, _)| s.label.len()).max().unwrap_or(5).max(5);
    println!("  {:width$}  {:8}  {:>10}  {:>9}  {:>8}  directory", "run", "status", "final loss", "time", "img/s");
    for (spec, path, outcome) in &report.outcomes {
        let (state, status) = match outcome {
            Outcome::Trained(s) => ("trained", Some(s)),
            Outcome::Skipped(s) => ("skipped", Some(s)),
            Outcome::Failed(_) => ("FAILED", None),
        };
        let num = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "-".into());
        println!(
            "  {:width$}  {state:8}  {:>10}  {:>9}  {:>8}  {}",
            spec.label,
            num(status.and_then(|s| s.final_loss), &|v| format!("{v:.5}")),
            num(status.and_then(|s| s.wall_seconds), &|v| format!("{v:.1}s")),
            num(status.and_then(|s| s.images_per_sec), &|v| format!("{v:.1}")),
            path.display()
        );
        if let Outcome::Failed(e) = outcome {
            println!("  {:width$}  error: {e}", "");
        }
    }
}
