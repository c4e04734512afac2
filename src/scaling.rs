//! `ddpm bench --processes 1,2`: what one run trained by N processes costs and gains on this machine,
//! for each recipe's model. Two measurements:
//! - the all-reduce alone: the model's gradients (every parameter, in 25 MiB buckets) summed over two
//!   ranks (`Group::sum_gradients`, gloo over loopback, one thread per rank in this process), the
//!   median of five after one warm-up;
//! - whole training: the recipe's experiment run by `ddpm run` with `train.processes = N` for each N
//!   (a process of its own each time, the runner splitting the cores), images/s from its status.
//!
//! Written to `analysis/bench/parallel-cpu.csv`, with the machine's hardware key.
use crate::bench::{Recipe, RECIPES};
use crate::distributed::{free_port, Group, World};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};
use tch::{nn, Device, Kind};

/// The all-reduce of `r`'s gradients over two ranks: (parameters, gradient bytes, median seconds).
fn all_reduce_seconds(r: &Recipe) -> Result<(i64, i64, f64)> {
    let port = free_port()?;
    let cfg = recipe_config(r)?;
    let times = std::thread::scope(|s| {
        let ranks: Vec<_> = (0..2)
            .map(|rank| {
                let cfg = &cfg;
                s.spawn(move || -> Result<(i64, f64)> {
                    tch::set_num_threads(1);
                    let world = World { rank, size: 2, addr: "127.0.0.1".into(), port };
                    let g = Group::join(&world, false, Duration::from_secs(120))?;
                    let vs = nn::VarStore::new(Device::Cpu);
                    let _model = crate::models::build_for(cfg, None, &vs.root());
                    let params: Vec<tch::Tensor> = vs.trainable_variables();
                    // A gradient for every parameter: d(Σ p)/dp = 1.
                    params.iter().map(|p| p.sum(Kind::Float)).fold(tch::Tensor::from(0f32), |a, b| a + b).backward();
                    let mut seconds = Vec::new();
                    for _ in 0..6 {
                        let t = Instant::now();
                        g.sum_gradients(&params)?;
                        seconds.push(t.elapsed().as_secs_f64());
                    }
                    seconds.remove(0);
                    seconds.sort_by(f64::total_cmp);
                    Ok((params.iter().map(|p| p.numel() as i64).sum(), seconds[seconds.len() / 2]))
                })
            })
            .collect();
        ranks.into_iter().map(|h| h.join().expect("rank thread")).collect::<Result<Vec<_>>>()
    })?;
    let parameters = times[0].0;
    Ok((parameters, 4 * parameters, times.iter().map(|t| t.1).fold(0.0, f64::max)))
}

fn recipe_config(r: &Recipe) -> Result<crate::config::RunConfig> {
    let model = crate::config::model::ModelConfig::default_named(r.model).context("a recipe's model")?;
    let mut cfg = crate::config::RunConfig { model, ..Default::default() };
    cfg.data.image_size = r.image_size;
    Ok(cfg)
}

/// Training images/s of `r`'s bench experiment run with `processes` ranks by this binary.
fn images_per_sec(r: &Recipe, body: &str, processes: usize, scratch: &Path) -> Result<f64> {
    let root = scratch.join(format!("{}-{processes}", r.model));
    let file = scratch.join(format!("{}.toml", r.model));
    std::fs::write(&file, body)?;
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("run")
        .arg(&file)
        .args(["--device", "cpu", "--set"])
        .arg(format!("train.processes={processes}"))
        .arg("--results")
        .arg(&root)
        .output()
        .context("cannot start `ddpm run`")?;
    if !out.status.success() {
        bail!("ddpm run with {processes} processes failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let runs = root.join("runs");
    let dir = std::fs::read_dir(&runs)?.next().context("no run directory")??.path();
    let status: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("status.json"))?)?;
    status["images_per_sec"].as_f64().context("no images_per_sec in status.json")
}

/// The scaling table for `models` (all recipes when empty) and each count of `processes`, on the CPU.
pub fn run(models: &[String], processes: &[usize], steps: usize, batch: Option<i64>, out_dir: &Path) -> Result<String> {
    let recipes: Vec<&Recipe> =
        RECIPES.iter().filter(|r| models.is_empty() || models.iter().any(|m| m == r.model)).collect();
    let scratch = std::env::temp_dir().join(format!("ddpm-scaling-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let hardware = crate::hardware::Hardware::here(Device::Cpu, crate::hardware::isa_in_environment()).key();
    let mut csv = String::from(
        "model,parameters,gradient_mb,allreduce_ms_2_ranks,processes,batch,train_images_per_sec,speedup,hardware\n",
    );
    let mut table = format!(
        "{:11} {:>11} {:>8} {:>14} {:>9} {:>10} {:>8}\n",
        "model", "parameters", "grad MB", "all-reduce ms", "processes", "img/s", "speedup"
    );
    let result = (|| -> Result<()> {
        for r in recipes {
            let (parameters, bytes, seconds) = all_reduce_seconds(r)?;
            let batch = batch.unwrap_or(r.batch);
            let body = crate::bench::experiment(r, steps, batch);
            let mut base = None;
            for &n in processes {
                let ips = images_per_sec(r, &body, n, &scratch)?;
                let speedup = ips / *base.get_or_insert(ips);
                let mb = bytes as f64 / 1e6;
                writeln!(
                    csv,
                    "{},{parameters},{mb:.3},{:.3},{n},{batch},{ips:.3},{speedup:.3},\"{hardware}\"",
                    r.model,
                    seconds * 1e3
                )?;
                writeln!(
                    table,
                    "{:11} {parameters:>11} {mb:>8.1} {:>14.2} {n:>9} {ips:>10.1} {speedup:>8.2}",
                    r.model,
                    seconds * 1e3
                )?;
                eprint!("{}", table.lines().last().map(|l| format!("{l}\n")).unwrap_or_default());
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result?;
    std::fs::create_dir_all(out_dir)?;
    crate::track::atomic_write(&out_dir.join("parallel-cpu.csv"), csv.as_bytes())?;
    Ok(table)
}
