//! `ddpm analyze`: tables, plots and report.md of an experiment in analysis/<experiment>/.
use super::{analyze_and_print, ExperimentArgs};
use anyhow::Result;
use ddpm::experiment::load_experiment;

pub fn exec(args: &ExperimentArgs) -> Result<bool> {
    let exp = load_experiment(&args.experiment, &args.load_options())?;
    analyze_and_print(&exp, &args.layers)?;
    Ok(true)
}
