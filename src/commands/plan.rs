//! `ddpm plan`: the runs of an experiment file and their states, or one line per experiment file of a folder.
use super::ExperimentArgs;
use anyhow::Result;
use ddpm::experiment::load_experiment;

pub fn exec(args: &ExperimentArgs) -> Result<bool> {
    plan(args)?;
    Ok(true)
}

pub fn plan(args: &ExperimentArgs) -> Result<()> {
    if args.experiment.is_dir() {
        let (table, failed) =
            ddpm::runner::status::plan_folder(&args.experiment, &args.load_options(), &args.results_root())?;
        print!("{table}");
        if failed > 0 {
            anyhow::bail!("{failed} experiment file(s) in {} do not load", args.experiment.display());
        }
        return Ok(());
    }
    let exp = load_experiment(&args.experiment, &args.load_options())?;
    print!("{}", ddpm::runner::status::plan_table(&exp, &args.results_root()));
    if let (Some(d), Some(p)) = (&exp.question.sequential, &exp.question.primary) {
        println!(
            "sequential seeds: seeds 0 … {} first, then {} more at a time up to {}, until `{p}` is decided \
             (the runs of later seeds run only if needed)",
            d.start - 1,
            d.step,
            d.max
        );
    }
    Ok(())
}
