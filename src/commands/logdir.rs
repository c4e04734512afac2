//! `ddpm logdir`: writes the HParams data and prints the TensorBoard log dir.
use super::ExperimentArgs;
use anyhow::Result;
use ddpm::experiment::load_experiment;

pub fn exec(args: &ExperimentArgs) -> Result<bool> {
    let exp = load_experiment(&args.experiment, &args.load_options())?;
    let root = args.results_root();
    ddpm::runner::board::write_hparams(&exp, &root)?;
    println!("{}", ddpm::runner::board::logdir(&root, &exp.name).display());
    Ok(true)
}
