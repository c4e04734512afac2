//! `ddpm status`: where each run stands, with its Slurm task.
use super::ExperimentArgs;
use anyhow::Result;
use ddpm::experiment::load_experiment;

pub fn exec(args: &ExperimentArgs) -> Result<bool> {
    let exp = load_experiment(&args.experiment, &args.load_options())?;
    let slurm = ddpm::runner::slurm::view(&exp, &args.results_root())?;
    print!("{}", ddpm::runner::status::status_table(&exp, &args.results_root(), slurm.as_ref()));
    Ok(true)
}
