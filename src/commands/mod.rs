//! The commands of the binary, one module each (cargo's layout): its clap `Args` and its `exec`.
//! The arguments every experiment command shares live here.
pub mod analyze;
pub mod bench;
pub mod cancel;
pub mod data;
pub mod device;
pub mod eval;
pub mod fid;
pub mod logdir;
pub mod models;
pub mod plan;
pub mod reproduce;
pub mod run;
pub mod run_one;
pub mod sample;
pub mod schedules;
pub mod show;
pub mod status;
pub mod verify;

use anyhow::Result;
use ddpm::experiment::{load_experiment, Experiment, LoadOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ExperimentArgs {
    /// The experiment file, e.g. experiments/cosine_vs_linear.toml
    pub experiment: PathBuf,
    #[command(flatten)]
    pub layers: Layers,
}

/// How an experiment file is resolved, and where its runs live.
#[derive(clap::Args, Clone)]
pub struct Layers {
    /// A profile of the experiment file (e.g. `full`), applied over its base.
    #[arg(long)]
    pub profile: Option<String>,
    /// Override a run key for every run, e.g. --set train.steps=100 (TOML value syntax).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Where run directories go [default: $DDPM_RESULTS_DIR or results/]
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Why `profile` is what it is (set by `run`; recorded in provenance).
    #[arg(skip)]
    pub profile_reason: Option<String>,
}

/// Where an experiment's runs will execute, as far as its defaults care: on CUDA or not, and the words
/// that say why (printed, and recorded in each run's provenance).
pub struct Placement {
    pub cuda: bool,
    pub why: String,
    /// The runs execute on this machine, so its CPU's features may choose the default.
    pub here: bool,
}

impl Placement {
    /// `run` on this machine: `--devices` lists CUDA devices; `--device cuda[:N]` is CUDA; `auto` is
    /// CUDA where libtorch finds it.
    pub fn local(device: &str, devices: &[usize]) -> Placement {
        if !devices.is_empty() {
            let list: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
            return Placement { cuda: true, why: format!("--devices {}", list.join(",")), here: true };
        }
        let (cuda, why) = match device {
            "auto" if tch::Cuda::is_available() => {
                (true, format!("--device auto found {} CUDA device(s)", tch::Cuda::device_count()))
            }
            "auto" => (false, "--device auto found no CUDA device".into()),
            d => (d == "cuda" || d.starts_with("cuda:"), format!("--device {d}")),
        };
        Placement { cuda, why, here: true }
    }

    /// `run --launcher slurm`: the compute nodes' device, which `--device` names or `--gres` asks for.
    pub fn slurm(device: &str, gres: Option<&str>) -> Placement {
        let cuda = ddpm::runner::slurm::uses_cuda(device, gres);
        let why = match gres {
            _ if device != "auto" => format!("--device {device} on the Slurm tasks"),
            Some(g) if cuda => format!("the Slurm tasks ask for --gres={g}"),
            Some(g) => format!("the Slurm tasks' --gres={g} names no GPU"),
            None => "the Slurm tasks ask for no GPU (no --gres)".into(),
        };
        Placement { cuda, why, here: false }
    }
}

impl Layers {
    /// `run` without `--profile`: where the runs execute on CUDA (`placement`), the experiment's
    /// `full` profile (the recipe's real length) when it has one; on a CPU with native bf16, the profile
    /// `[experiment] cpu_bf16_profile` names; elsewhere the file's CPU-sized default. Says which, and
    /// why, in the line it returns (None: nothing to say). `--profile default` asks for the file's
    /// default wherever it runs.
    pub fn choose_profile(&mut self, experiment: &std::path::Path, placement: &Placement) -> Result<Option<String>> {
        if let Some(p) = &self.profile {
            self.profile_reason = Some(format!("--profile {p}"));
            return Ok(None);
        }
        let has_full = {
            let opts = LoadOptions { profile: Some("full".into()), ..self.load_options() };
            load_experiment(experiment, &opts).is_ok()
        };
        // An error in the file is reported by the load that follows, not here.
        let cpu_bf16 = load_experiment(experiment, &self.load_options()).ok().and_then(|e| e.cpu_bf16_profile);
        let why = &placement.why;
        if placement.cuda && has_full {
            self.profile = Some("full".into());
            self.profile_reason = Some(format!("default on CUDA ({why}, no --profile)"));
            return Ok(Some(format!(
                "profile: `full` (the recipe's real length): the runs execute on CUDA ({why}) and no --profile \
                 was given; --profile <name> overrides"
            )));
        }
        let mut reason = if placement.cuda { format!("{why}, but no `full` profile in the file") } else { why.clone() };
        if let (false, false, Some(p)) = (placement.cuda, placement.here, &cpu_bf16) {
            reason = format!("{reason}; not `{p}`: the Slurm nodes' CPUs are not known here");
        } else if let (false, Some(p)) = (placement.cuda, &cpu_bf16) {
            let (native, cpu) = ddpm::hardware::native_bf16()?;
            if native {
                self.profile = Some(p.clone());
                self.profile_reason = Some(format!("default on a CPU with native bf16 ({cpu}; {why}, no --profile)"));
                return Ok(Some(format!(
                    "profile: `{p}` (the file's `experiment.cpu_bf16_profile`): {cpu} ({why}, no --profile); \
                     --profile default runs the CPU-sized default"
                )));
            }
            reason = format!("{reason}; {cpu}, so not `{p}`");
        }
        let line = (has_full || cpu_bf16.is_some()).then(|| {
            let full = if has_full { "; --profile full runs the recipe's real length" } else { "" };
            format!("profile: the file's CPU-sized default ({reason}){full}")
        });
        self.profile_reason = Some(format!("default ({reason}, no --profile)"));
        Ok(line)
    }
}

impl ExperimentArgs {
    pub fn load_options(&self) -> LoadOptions {
        self.layers.load_options()
    }

    pub fn results_root(&self) -> PathBuf {
        self.layers.results_root()
    }
}

impl Layers {
    /// `analysis/` beside the default `results/`; `<results>/analysis` for any other results folder, so
    /// that runs kept elsewhere (tests, scratch sweeps) do not write into the repository's record.
    pub fn analysis_root(&self) -> PathBuf {
        let root = self.results_root();
        if root == std::path::Path::new("results") {
            "analysis".into()
        } else {
            root.join("analysis")
        }
    }

    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            profile: self.profile.clone(),
            sets: self.sets.clone(),
            use_env: true,
            profile_reason: self.profile_reason.clone(),
        }
    }

    pub fn results_root(&self) -> PathBuf {
        self.results
            .clone()
            .or_else(|| std::env::var_os("DDPM_RESULTS_DIR").map(PathBuf::from))
            .unwrap_or_else(|| "results".into())
    }
}

/// Writes the analysis of `exp` and prints its verdicts.
pub fn analyze_and_print(exp: &Experiment, layers: &Layers) -> Result<ddpm::analysis::Analysis> {
    let a = ddpm::analysis::analyze(exp, &layers.results_root(), &layers.analysis_root())?;
    print_analysis(&a);
    Ok(a)
}

/// Where the analysis went, its verdicts, and the runs it left out.
pub fn print_analysis(a: &ddpm::analysis::Analysis) {
    println!("\nanalysis: {}", a.dir.display());
    for v in &a.verdicts {
        println!("  {v}");
    }
    if !a.left_out.is_empty() {
        println!("  warning: left out of the statistics (not done): {}", a.left_out.join(", "));
    }
}
