//! `ddpm schedules`: β_t, ᾱ_t, SNR and log-SNR of noise schedules side by side, and a plot of ᾱ_t.
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Number of diffusion steps.
    #[arg(long = "T", default_value_t = 1000)]
    pub timesteps: usize,
    /// Schedules to compare (each with its default keys).
    #[arg(long, value_delimiter = ',', default_value = "linear,cosine,quadratic,sigmoid")]
    pub schedules: Vec<String>,
    /// Paper timesteps (1..=T) to tabulate [default: 1, T/4, T/2, 3T/4, T]
    #[arg(long, value_delimiter = ',')]
    pub t: Vec<usize>,
    /// Draw ᾱ_t against t/T into this file (SVG when it ends in .svg, else PNG).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

pub fn exec(a: Args) -> Result<bool> {
    schedules_command(a.timesteps, &a.schedules, &a.t, a.plot)?;
    Ok(true)
}

fn schedules_command(timesteps: usize, names: &[String], t: &[usize], plot: Option<PathBuf>) -> Result<()> {
    use ddpm::config::ScheduleConfig;
    // The range of `diffusion.timesteps` (`config::timesteps_problem`), in this option's words.
    if ddpm::config::timesteps_problem(timesteps).is_some() {
        anyhow::bail!("--T {timesteps}: allowed are integers from 2 to 100000 (as diffusion.timesteps)");
    }
    let schedules = names
        .iter()
        .map(|n| {
            ScheduleConfig::default_named(n).ok_or_else(|| {
                anyhow::anyhow!("--schedules: unknown schedule {n:?}; allowed are {}", ScheduleConfig::NAMES.join(", "))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let ts: Vec<usize> = if t.is_empty() {
        let mut d = vec![1, timesteps / 4, timesteps / 2, 3 * timesteps / 4, timesteps];
        d.retain(|&x| x >= 1);
        d.dedup();
        d
    } else {
        t.to_vec()
    };
    if let Some(bad) = ts.iter().find(|&&x| x < 1 || x > timesteps) {
        anyhow::bail!("--t {bad}: allowed are timesteps from 1 to T ({timesteps})");
    }
    print!("{}", ddpm::eval::schedules::table(&schedules, timesteps, &ts));
    if let Some(path) = plot {
        let figure =
            ddpm::eval::schedules::plot(&schedules.iter().map(|s| (s.clone(), timesteps)).collect::<Vec<_>>())?;
        let svg = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg"));
        ddpm::track::atomic_write(&path, if svg { figure.svg.as_bytes() } else { &figure.png })?;
        println!("plot: {}", path.display());
    }
    Ok(())
}
