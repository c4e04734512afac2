//! `ddpm analyze`: tables, plots and report.md of an experiment in analysis/<experiment>/; with
//! `--from-record`, the verdicts and report again from the committed `runs.parquet` alone.
use super::{analyze_and_print, print_analysis, ExperimentArgs};
use anyhow::Result;
use ddpm::experiment::load_experiment;

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    pub experiment: ExperimentArgs,
    /// Decide again from analysis/<experiment>/runs.parquet (the committed record) instead of the run
    /// directories: rewrites the summary, paired and verdict tables and report.md, keeps runs.parquet,
    /// the curves and the figures.
    #[arg(long)]
    pub from_record: bool,
}

pub fn exec(args: &AnalyzeArgs) -> Result<bool> {
    let a = &args.experiment;
    let exp = load_experiment(&a.experiment, &a.load_options())?;
    if args.from_record {
        print_analysis(&ddpm::analysis::analyze_record(&exp, &a.layers.analysis_root())?);
    } else {
        analyze_and_print(&exp, &a.layers)?;
    }
    Ok(true)
}
