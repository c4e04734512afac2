//! `ddpm plan`: the runs of an experiment file and their states, or one line per experiment file of a folder.
use super::{ExperimentArgs, Layers, Placement};
use anyhow::Result;
use ddpm::experiment::load_experiment;
use std::path::Path;

pub fn exec(args: &ExperimentArgs) -> Result<bool> {
    plan(args)?;
    Ok(true)
}

/// The layers `ddpm run <file>` would resolve with on this machine (`placement`: `--device auto`), and
/// the profile it would choose by itself (None when `--profile` was given, `run` already chose, or the
/// file's default is the choice).
fn as_run_would(layers: &Layers, file: &Path, placement: &Placement) -> Result<(Layers, Option<String>)> {
    let mut layers = layers.clone();
    if layers.profile.is_some() || layers.profile_reason.is_some() {
        return Ok((layers, None));
    }
    layers.choose_profile(file, placement)?;
    let picked = layers.profile.clone();
    Ok((layers, picked))
}

pub fn plan(args: &ExperimentArgs) -> Result<()> {
    let placement = Placement::local("auto", &[]);
    if args.experiment.is_dir() {
        let chosen = |f: &Path| as_run_would(&args.layers, f, &placement).ok().and_then(|(_, p)| p);
        let (table, failed) =
            ddpm::runner::status::plan_folder(&args.experiment, &args.load_options(), &args.results_root(), &chosen)?;
        print!("{table}");
        if failed > 0 {
            anyhow::bail!("{failed} experiment file(s) in {} do not load", args.experiment.display());
        }
        return Ok(());
    }
    let (layers, picked) = as_run_would(&args.layers, &args.experiment, &placement)?;
    let exp = load_experiment(&args.experiment, &layers.load_options())?;
    let table = ddpm::runner::status::plan_table(&exp, &args.results_root());
    match (picked, table.split_once('\n')) {
        // The profile `run` would choose by itself, said on the header line.
        (Some(p), Some((head, rest))) => {
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
