//! `ddpm plan`: the runs of an experiment file and their states, or one line per experiment file of a folder.
use super::{ExperimentArgs, Layers, Placement};
use anyhow::Result;
use ddpm::experiment::load_experiment;
use std::path::Path;

pub fn exec(args: &ExperimentArgs) -> Result<bool> {
    plan(args)?;
    Ok(true)
}

/// The profile `ddpm run <file>` would choose on this machine (`--device auto`, no `--profile`), and the
/// layers it resolves with; `args` unchanged when `--profile` was given or `run` already chose.
fn as_run_would(layers: &Layers, file: &Path) -> Result<Layers> {
    let mut layers = layers.clone();
    if layers.profile_reason.is_none() {
        layers.choose_profile(file, &Placement::local("auto", &[]))?;
    }
    Ok(layers)
}

pub fn plan(args: &ExperimentArgs) -> Result<()> {
    if args.experiment.is_dir() {
        let chosen = |f: &Path| as_run_would(&args.layers, f).ok().and_then(|l| l.profile);
        let (table, failed) =
            ddpm::runner::status::plan_folder(&args.experiment, &args.load_options(), &args.results_root(), &chosen)?;
        print!("{table}");
        if failed > 0 {
            anyhow::bail!("{failed} experiment file(s) in {} do not load", args.experiment.display());
        }
        return Ok(());
    }
    let layers = as_run_would(&args.layers, &args.experiment)?;
    let exp = load_experiment(&args.experiment, &layers.load_options())?;
    let table = ddpm::runner::status::plan_table(&exp, &args.results_root());
    match (&args.layers.profile_reason, &layers.profile, table.split_once('\n')) {
        // The profile `run` would choose by itself, said on the header line.
        (None, Some(p), Some((head, rest))) if args.layers.profile.is_none() => {
            let why = layers.profile_reason.as_deref().unwrap_or_default();
            print!("{head}, profile `{p}` as `ddpm run` chooses it here ({why}; --profile default lists the default)\n{rest}")
        }
        _ => print!("{table}"),
    }
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
