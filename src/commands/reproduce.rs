//! `ddpm reproduce COMMIT EXPERIMENT`: a committed result built and run again from its commit, and
//! compared with the committed analysis run by run and metric by metric.
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    pub commit: String,
    pub experiment: PathBuf,
    #[arg(long)]
    pub profile: Option<String>,
    /// Relative tolerance of a bitwise comparison [default: 0 (exact) for runs recorded on CPU, 1e-3 on GPU].
    #[arg(long)]
    pub tolerance: Option<f64>,
    /// Without a committed analysis: reproduce twice and compare the two reproductions.
    #[arg(long)]
    pub twice: bool,
    /// Keep the reproduction's run directories (under target/reproductions/).
    #[arg(long)]
    pub keep: bool,
    /// cpu, cuda or cuda:N [default: the device kind of the committed runs].
    #[arg(long)]
    pub device: Option<String>,
    /// auto: bit for bit on the hardware that made the record, statistically (against the record's
    /// seed-to-seed spread) elsewhere; or either one forced.
    #[arg(long, value_enum, default_value = "auto")]
    pub compare: ddpm::reproduce::Comparison,
}

pub fn exec(a: Args) -> Result<bool> {
    ddpm::reproduce::reproduce(&ddpm::reproduce::ReproduceOptions {
        commit: a.commit,
        experiment: a.experiment,
        profile: a.profile,
        tolerance: a.tolerance,
        twice: a.twice,
        keep: a.keep,
        device: a.device,
        compare: a.compare,
    })
}
