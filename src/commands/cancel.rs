//! `ddpm cancel`: cancels the experiment's queued or running Slurm jobs.
use super::ExperimentArgs;
use anyhow::Result;
use ddpm::experiment::load_experiment;

pub fn exec(args: &ExperimentArgs) -> Result<bool> {
    let exp = load_experiment(&args.experiment, &args.load_options())?;
    let ids = ddpm::runner::slurm::cancel(&exp, &args.results_root())?;
    if ids.is_empty() {
        println!("nothing to cancel: no job of `{}` is queued or running", exp.name);
    } else {
        println!("cancelled job(s) {}; the runs keep their checkpoints and resume when run again", ids.join(" "));
    }
    Ok(true)
}
