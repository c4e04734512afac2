//! `ddpm show`: every resolved key of each run, with its value and where it came from.
use super::ExperimentArgs;
use anyhow::Result;
use ddpm::experiment::load_experiment;

pub fn exec(args: &ExperimentArgs) -> Result<bool> {
    let exp = load_experiment(&args.experiment, &args.load_options())?;
    for (spec, sources) in exp.runs.iter().zip(&exp.sources) {
        println!("run {} ({})", spec.label, spec.hash);
        let width = sources.iter().map(|s| s.key.len() + s.value.len() + 3).max().unwrap_or(0);
        for s in sources {
            println!("  {:width$}  # {}", format!("{} = {}", s.key, s.value), s.source);
        }
    }
    Ok(true)
}
