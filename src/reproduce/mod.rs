//! Getting a recorded result back from the commit that produced it.
//! - `reproduce`: checks a commit out in a temporary worktree, builds it (or reuses this binary when
//!   the commit's code is byte-identical), runs the experiment into a separate results root, and
//!   compares the new `analysis/<experiment>/runs` table with the one committed at that commit.
//! - `verify`: re-runs one finished run from its recorded configuration and code, and compares its
//!   weights' checksums and metrics.
pub mod checkout;
pub mod compare;

use crate::eval::metric;
use crate::track::run_dir::{RunDir, State};
use anyhow::{bail, Context, Result};
use checkout::{file_at, repository_of, resolve_commit, Checkout};
use compare::{compare, read_parquet, table, Check};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The relative tolerance on GPU results when the user gives none (CPU results must be identical).
pub const GPU_TOLERANCE: f64 = 1e-3;

pub struct ReproduceOptions {
    pub commit: String,
    pub experiment: PathBuf,
    pub profile: Option<String>,
    /// Relative tolerance; default 0 for runs recorded on CPU, `GPU_TOLERANCE` on GPU.
    pub tolerance: Option<f64>,
    /// Without a committed analysis: reproduce twice and compare the two.
    pub twice: bool,
    /// Keep the worktree's results (printed) instead of deleting them.
    pub keep: bool,
    /// `cpu`, `cuda`, `cuda:N`; default: the device kind the committed runs used.
    pub device: Option<String>,
}

fn say(line: &str) {
    println!("reproduce: {line}");
}

/// The experiment's name as its file at the commit gives it (`[experiment] name`, else the stem).
fn experiment_name(text: &str, path: &Path) -> String {
    let table: Option<toml::Table> = toml::from_str(text).ok();
    table
        .as_ref()
        .and_then(|t| t.get("experiment")?.get("name")?.as_str().map(String::from))
        .unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default())
}

/// `path` relative to the repository's top folder, with `/` separators.
fn relative_to(repo: &Path, path: &Path) -> Result<String> {
    // A file deleted since the commit: its path as given, relative to the repository.
    let Ok(abs) = std::fs::canonicalize(path) else {
        return Ok(path.to_string_lossy().trim_start_matches("./").replace('\\', "/"));
    };
    let repo = std::fs::canonicalize(repo)?;
    let rel =
        abs.strip_prefix(&repo).with_context(|| format!("{} is not inside {}", path.display(), repo.display()))?;
    Ok(rel.to_string_lossy().replace('\\', "/"))
}

/// A scratch folder for one reproduction, under the repository's ignored `target/`.
fn work_dir(repo: &Path, commit: &str) -> PathBuf {
    repo.join("target/reproductions").join(format!("{}-{}", &commit[..12.min(commit.len())], std::process::id()))
}

/// Runs `ddpm run` of the checkout's experiment into `results`; the path of the new runs table.
fn run_experiment(
    binary: &Path,
    tree: &Path,
    rel: &str,
    name: &str,
    results: &Path,
    profile: Option<&str>,
    device: &str,
) -> Result<PathBuf> {
    let mut cmd = Command::new(binary);
    cmd.current_dir(tree).args(["run", rel, "--device", device, "--results"]).arg(results);
    if let Some(p) = profile {
        cmd.args(["--profile", p]);
    }
    let data = std::fs::canonicalize(crate::data::data_dir()).unwrap_or_else(|_| crate::data::data_dir());
    cmd.env("DDPM_DATA_DIR", data).env_remove("DDPM_RESULTS_DIR");
    say(&format!("running {rel} into {}", results.display()));
    let status = cmd.status().with_context(|| format!("cannot run {}", binary.display()))?;
    if !status.success() {
        bail!("the reproduction's `ddpm run` failed ({status}); its runs are in {}", results.display());
    }
    let runs = results.join("analysis").join(name).join("runs.parquet");
    if !runs.exists() {
        bail!("the reproduction wrote no {}", runs.display());
    }
    Ok(runs)
}

/// The profile a reproduction runs: the one asked for, else the one the record holds (its `profile`
/// column; `default` for the file without one). A record older than that column was made by a binary
/// that picks no profile by the CPU's features, so the commit's own `run` is left to choose, as it
/// chose then (`full` on CUDA, the file's default elsewhere).
pub fn profile_to_run(asked: Option<&str>, committed: Option<&polars::prelude::DataFrame>) -> Option<String> {
    match asked {
        Some(p) => Some(p.to_string()),
        None => committed.and_then(|df| compare::texts(df, "profile")?.into_iter().flatten().next()),
    }
}

fn report(checks: &[Check]) -> bool {
    print!("{}", table(checks));
    let failed = checks.iter().filter(|c| !c.pass).count();
    if failed == 0 {
        println!("reproduce: PASS: all {} checks agree", checks.len());
    } else {
        println!("reproduce: FAIL: {failed} of {} checks differ", checks.len());
    }
    failed == 0
}

/// `ddpm reproduce`: true when every check passes.
pub fn reproduce(opts: &ReproduceOptions) -> Result<bool> {
    let repo = repository_of(&opts.experiment)?;
    let commit = resolve_commit(&repo, &opts.commit)?;
    let rel = relative_to(&repo, &opts.experiment)?;
    let text =
        file_at(&repo, &commit, &rel).with_context(|| format!("commit {commit} has no experiment file {rel}"))?;
    let name = experiment_name(&String::from_utf8_lossy(&text), Path::new(&rel));
    let record = format!("analysis/{name}/runs.parquet");
    let committed = file_at(&repo, &commit, &record).map(|b| read_parquet(b, &record)).transpose()?;
    if committed.is_none() && !opts.twice {
        bail!(
            "commit {commit} has no committed analysis ({record}), so there is nothing to compare with; \
             `ddpm reproduce {} {} --twice` reproduces it twice and compares the two reproductions instead",
            opts.commit,
            opts.experiment.display()
        );
    }
    let recorded_device = committed.as_ref().and_then(|df| compare::texts(df, "device")?.into_iter().flatten().next());
    let on_gpu = recorded_device.as_deref().is_some_and(|d| d.starts_with("cuda"));
    let device = opts.device.clone().unwrap_or_else(|| if on_gpu { "cuda".into() } else { "cpu".into() });
    let tolerance = opts.tolerance.unwrap_or(if device.starts_with("cuda") { GPU_TOLERANCE } else { 0.0 });
    if let Some(d) = &recorded_device {
        let here = crate::device::describe(tch::Device::Cpu);
        if d.starts_with("cpu") && device == "cpu" && *d != here {
            say(&format!(
                "warning: the runs were recorded on `{d}`, this machine is `{here}`: CPU results are bit-identical \
                 only with the same thread count"
            ));
        }
    }
    let profile = profile_to_run(opts.profile.as_deref(), committed.as_ref());
    say(&format!(
        "commit {commit}, experiment `{name}` ({rel}), profile {}, device {device}, tolerance {tolerance}",
        profile.as_deref().map_or("as `run` picks it on the device".into(), |p| format!("`{p}`"))
    ));

    let work = work_dir(&repo, &commit);
    let patch = file_at(&repo, &commit, &format!("analysis/{name}/code.patch"));
    let outcome = (|| -> Result<bool> {
        let checkout = Checkout::create(&repo, &commit, &work, patch.as_deref())?;
        if checkout.patched {
            say("warning: the runs were trained from a working tree with uncommitted changes; their recorded diff (code.patch) is applied on top of the commit");
        }
        let binary = checkout.binary(&mut |l| say(l))?;
        let first =
            run_experiment(&binary, &checkout.tree, &rel, &name, &work.join("results"), profile.as_deref(), &device)?;
        let reproduced = read_parquet(std::fs::read(&first)?, &first.display().to_string())?;
        let checks = match &committed {
            Some(c) => compare(c, &reproduced, tolerance)?,
            None => {
                say("no committed analysis: comparing two fresh reproductions");
                let second = run_experiment(
                    &binary,
                    &checkout.tree,
                    &rel,
                    &name,
                    &work.join("results-2"),
                    profile.as_deref(),
                    &device,
                )?;
                let again = read_parquet(std::fs::read(&second)?, &second.display().to_string())?;
                compare(&reproduced, &again, tolerance)?
            }
        };
        Ok(report(&checks))
    })();
    if opts.keep {
        say(&format!("kept the reproduction's results in {}", work.display()));
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    outcome
}

/// `ddpm verify <run-dir>`: true when the re-run's weights and metrics equal the recorded ones.
pub fn verify(run_dir: &Path, keep: bool) -> Result<bool> {
    let dir = RunDir { path: run_dir.to_path_buf() };
    let status = dir.status()?.with_context(|| format!("{}: no status.json", run_dir.display()))?;
    if status.state != State::Done {
        bail!("{}: the run is {:?}, not done; only finished runs can be verified", run_dir.display(), status.state);
    }
    let prov_path = run_dir.join("provenance.json");
    let prov: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&prov_path).with_context(|| format!("cannot read {}", prov_path.display()))?,
    )
    .with_context(|| format!("{}: invalid JSON", prov_path.display()))?;
    let hash = prov["hash"].as_str().context("provenance.json has no hash")?.to_string();
    let device = dir
        .attempts()
        .last()
        .and_then(|a| a["device"].as_str().map(|d| if d.starts_with("cuda") { "cuda" } else { "cpu" }))
        .unwrap_or("cpu")
        .to_string();

    // A repository is needed only to check another commit out.
    let repo = repository_of(&std::env::current_dir()?);
    let scratch = match &repo {
        Ok(r) => r.join("target/reproductions"),
        Err(_) => std::env::temp_dir(),
    };
    let work = scratch.join(format!("verify-{hash}-{}", std::process::id()));
    let outcome = (|| -> Result<bool> {
        // The same code as this binary: run it; else check the run's commit (and diff) out and build it.
        let checkout = if prov["code_sha256"].as_str() == Some(env!("DDPM_CODE_SHA256")) {
            None
        } else {
            let commit = prov["git"]["commit"].as_str().context("provenance.json records no git commit")?;
            let patch = std::fs::read(run_dir.join("code.patch")).ok();
            if patch.is_some() {
                println!("verify: warning: the run was trained from a dirty working tree; applying its code.patch");
            }
            let repo = repo.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?.clone();
            Some(Checkout::create(&repo, &resolve_commit(&repo, commit)?, &work, patch.as_deref())?)
        };
        let binary = match &checkout {
            Some(c) => c.binary(&mut |l| println!("verify: {l}"))?,
            None => std::env::current_exe()?,
        };
        let again = work.join("results/runs").join(&hash);
        std::fs::create_dir_all(&again)?;
        for f in ["config.toml", "provenance.json"] {
            std::fs::copy(run_dir.join(f), again.join(f)).with_context(|| format!("cannot copy {f}"))?;
        }
        println!("verify: re-running {} on {device} in {}", status.label, again.display());
        let data = std::fs::canonicalize(crate::data::data_dir()).unwrap_or_else(|_| crate::data::data_dir());
        let ok = Command::new(&binary)
            .args(["run-one", &again.to_string_lossy(), "--device", &device])
            .env("DDPM_DATA_DIR", data)
            .status()?
            .success();
        if !ok {
            bail!("the re-run failed; see {}", again.join("log.txt").display());
        }
        let new = RunDir { path: again.clone() }.status()?.context("the re-run wrote no status.json")?;
        let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let mut checks = Vec::new();
        for (what, a, b) in [
            ("weights_sha256", &status.weights_sha256, &new.weights_sha256),
            ("ema_sha256", &status.ema_sha256, &new.ema_sha256),
        ] {
            checks.push(Check {
                run: status.label.clone(),
                what: what.into(),
                committed: text(a),
                reproduced: text(b),
                difference: None,
                pass: a == b,
            });
        }
        let tolerance = if device == "cpu" { 0.0 } else { GPU_TOLERANCE };
        // The training's loss and every metric of the evaluation but the timings.
        let (committed, reproduced) = (metric::of_run(Some(&status), None), metric::of_run(Some(&new), None));
        let compared = metric::all().into_iter().filter(|m| m.role != metric::Role::Timing);
        for (what, a, b) in compared.map(|m| (m.name, committed.get(m.name).copied(), reproduced.get(m.name).copied()))
        {
            let (pass, difference) = match (a, b) {
                (None, None) => continue,
                (Some(x), Some(y)) => (compare::agree(x, y, tolerance), Some(y - x)),
                _ => (false, None),
            };
            let shown = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x}"));
            checks.push(Check {
                run: status.label.clone(),
                what: what.into(),
                committed: shown(a),
                reproduced: shown(b),
                difference,
                pass,
            });
        }
        print!("{}", table(&checks));
        let failed = checks.iter().filter(|c| !c.pass).count();
        println!("verify: {}", if failed == 0 { "PASS".to_string() } else { format!("FAIL: {failed} differ") });
        Ok(failed == 0)
    })();
    if keep {
        println!("verify: kept the re-run in {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    /// The record's profile wins over the machine's default; the user's over the record's; a record
    /// without the column leaves the choice to the commit's own `run`.
    #[test]
    fn a_reproduction_runs_the_profile_the_record_holds() {
        let with = df!("label" => ["a", "b"], "profile" => ["likelihood_bf16", "likelihood_bf16"]).unwrap();
        let default = df!("label" => ["a"], "profile" => ["default"]).unwrap();
        let older = df!("label" => ["a"]).unwrap();
        assert_eq!(profile_to_run(None, Some(&with)).as_deref(), Some("likelihood_bf16"));
        assert_eq!(profile_to_run(None, Some(&default)).as_deref(), Some("default"));
        assert_eq!(profile_to_run(Some("full"), Some(&with)).as_deref(), Some("full"));
        assert_eq!(profile_to_run(None, Some(&older)), None);
        assert_eq!(profile_to_run(None, None), None);
    }
}
