//! `ddpm verify <run-dir>`: one finished run re-run from its recorded configuration and code, its
//! weights' checksums and metrics compared.
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    pub run_dir: PathBuf,
    #[arg(long)]
    pub keep: bool,
}

pub fn exec(a: Args) -> Result<bool> {
    ddpm::reproduce::verify(&a.run_dir, a.keep)
}
