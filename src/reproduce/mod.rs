//! Getting a recorded result back from the commit that produced it.
//! - `reproduce`: checks a commit out in a temporary worktree, builds it (or reuses this binary when
//!   the commit's code is byte-identical), runs the experiment into a separate results root, and
//!   compares the new `analysis/<experiment>/runs` table with the one committed at that commit.
//! - `verify`: re-runs one finished run from its recorded configuration and code, and compares its
//!   weights' checksums and metrics.
pub mod checkout;
pub mod compare;
pub mod statistical;

use crate::eval::metric;
use crate::track::run_dir::{Artifact, Provenance, RunDir, State};
use anyhow::{bail, Context, Result};
use checkout::{file_at, repository_of, resolve_commit, Checkout};
use compare::{compare, read_parquet, shown, table, Check, Kind};
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
    pub compare: Comparison,
}

/// How the reproduction is compared with the record: `auto` (bit for bit where the record was made on
/// this hardware, statistically elsewhere), or either one forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Comparison {
    #[default]
    Auto,
    Bitwise,
    Statistical,
}

/// The distinct non-empty values of a text column, in first-seen order.
fn distinct(df: &polars::prelude::DataFrame, column: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in compare::texts(df, column).unwrap_or_default().into_iter().flatten() {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// The most seeds any variant of the record has.
fn seeds_per_variant(df: &polars::prelude::DataFrame) -> usize {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for v in compare::texts(df, "variant").unwrap_or_default().into_iter().flatten() {
        *counts.entry(v).or_default() += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

/// What the comparison of a record with its reproduction found, in one line a user can quote, and
/// whether it passed.
fn conclusion(checks: &[Check], statistical: bool, where_: &str) -> (String, bool) {
    let failed = checks.iter().filter(|c| c.tested && !c.pass).count();
    let untested = checks.iter().filter(|c| !c.tested).count();
    let n = checks.len();
    if !statistical {
        let kind = checks.iter().map(|c| c.kind).find(|k| *k != Kind::Bitwise).unwrap_or(Kind::Bitwise);
        let how = if kind == Kind::Bitwise { "bit for bit".to_string() } else { kind.label() };
        return if failed == 0 {
            (format!("PASS: all {n} checks agree {how} ({where_})"), true)
        } else {
            (format!("FAIL: {failed} of {n} checks differ ({how}; {where_})"), false)
        };
    }
    let of = |kind: Kind, verdict: bool| {
        checks.iter().filter(|c| c.kind == kind && c.tested && (c.run == "(verdict)") == verdict).count()
    };
    let (metrics, verdicts, identity) =
        (of(Kind::Statistical, false), of(Kind::Statistical, true), of(Kind::Bitwise, false));
    let summary = format!(
        "{metrics} metric means judged by the record's seed-to-seed prediction intervals (t, Bonferroni, \
         family-wise α {}), {verdicts} verdicts, {identity} identity checks bit for bit{}; {where_}",
        statistical::ALPHA,
        match untested {
            0 => String::new(),
            1 => ", 1 row n/a".into(),
            k => format!(", {k} rows n/a"),
        }
    );
    if failed > 0 {
        (format!("FAIL (statistical): {failed} of {} tested checks differ; {summary}", n - untested), false)
    } else if metrics == 0 {
        (format!("INCONCLUSIVE: no metric could be judged statistically ({summary})"), false)
    } else {
        (format!("PASS (statistical): all {} tested checks agree; {summary}", n - untested), true)
    }
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

/// How a reproduction's `ddpm run` is started: the checkout's binary and tree, the experiment file
/// (relative) and name, and the record's profile, device and `train.cpu_isa`.
struct Launch<'a> {
    binary: &'a Path,
    tree: &'a Path,
    rel: &'a str,
    name: &'a str,
    profile: Option<&'a str>,
    device: &'a str,
    cpu_isa: crate::config::CpuIsa,
}

/// Runs `ddpm run` of the checkout's experiment into `results`; the path of the new runs table.
fn run_experiment(launch: &Launch, results: &Path) -> Result<PathBuf> {
    let Launch { binary, tree, rel, name, profile, device, cpu_isa } = *launch;
    let mut cmd = Command::new(binary);
    cmd.current_dir(tree).args(["run", rel, "--device", device, "--results"]).arg(results);
    if let Some(p) = profile {
        cmd.args(["--profile", p]);
    }
    // The record's portable-math level (execution only, so the experiment file need not hold it).
    if cpu_isa != crate::config::CpuIsa::Native {
        cmd.args(["--set", &format!("train.cpu_isa={}", cpu_isa.name())]);
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

fn report(checks: &[Check], statistical: bool, where_: &str) -> bool {
    print!("{}", table(checks));
    let (line, pass) = conclusion(checks, statistical, where_);
    println!("reproduce: {line}");
    pass
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
    let profile = profile_to_run(opts.profile.as_deref(), committed.as_ref());
    say(&format!(
        "commit {commit}, experiment `{name}` ({rel}), profile {}, device {device}",
        profile.as_deref().map_or("as `run` picks it on the device".into(), |p| format!("`{p}`"))
    ));
    // Where the record was made, and where this reproduction runs (under the record's `train.cpu_isa`,
    // which `run_experiment` passes on).
    let recorded = committed.as_ref().map(|df| distinct(df, "hardware")).unwrap_or_default();
    let isa = committed
        .as_ref()
        .and_then(|df| distinct(df, "cpu_isa").into_iter().next())
        .and_then(|i| serde_json::from_value(i.into()).ok())
        .unwrap_or_default();
    let parsed = crate::device::parse(&device).map_err(|e| {
        anyhow::anyhow!("{e:#}; the record was made on `{device}`: `--device cpu` reproduces it on the CPU (compared statistically)")
    })?;
    let here = crate::hardware::Hardware::expected_here(parsed, isa).key();
    let seeds = committed.as_ref().map_or(0, seeds_per_variant);
    let statistical_here = |recorded: &[String], here: &str| match opts.compare {
        Comparison::Bitwise => false,
        Comparison::Statistical => true,
        Comparison::Auto => !recorded.is_empty() && recorded.iter().any(|r| r != here),
    };
    let mut statistical = committed.is_some() && statistical_here(&recorded, &here);
    say(&format!("this machine: {here}"));
    if committed.is_some() {
        say(&format!(
            "the record was made on: {}",
            if recorded.is_empty() {
                "(not recorded: its runs predate hardware records)".into()
            } else {
                recorded.join(" | ")
            }
        ));
    }
    match (&committed, statistical) {
        (None, _) => {}
        (Some(_), false) if recorded.is_empty() && opts.compare == Comparison::Auto => say(&format!(
            "comparing bit for bit (tolerance {tolerance}): that holds only on the hardware that made the record, \
             which it does not name; on other hardware, `--compare statistical` judges the metrics by the \
             record's seed-to-seed spread instead"
        )),
        (Some(_), false) => {
            say(&format!("comparing bit for bit (tolerance {tolerance}): the same hardware as recorded"))
        }
        (Some(_), true) if seeds < 2 => {
            say("other hardware than recorded: bit-for-bit equality is not expected here, and the record has one \
             seed per variant, so there is no spread to judge a difference by: only a bitwise comparison is \
             possible, and its result is inconclusive where it differs")
        }
        (Some(_), true) => say(&format!(
            "other hardware than recorded: bit-for-bit equality is not expected here (libtorch's kernels round \
             differently, and training amplifies it); the metrics are compared statistically ({}, α = {}), \
             the verdicts must agree, and the runs' hashes, states and seeds must be equal",
            statistical::TEST_NAME,
            statistical::ALPHA
        )),
    }

    let work = work_dir(&repo, &commit);
    let patch = file_at(&repo, &commit, &format!("analysis/{name}/code.patch"));
    let committed_verdicts = file_at(&repo, &commit, &format!("analysis/{name}/verdicts.parquet"))
        .map(|b| read_parquet(b, &format!("analysis/{name}/verdicts.parquet")))
        .transpose()?;
    let outcome = (|| -> Result<bool> {
        let checkout = Checkout::create(&repo, &commit, &work, patch.as_deref())?;
        if checkout.patched {
            say("warning: the runs were trained from a working tree with uncommitted changes; their recorded diff (code.patch) is applied on top of the commit");
        }
        let binary = checkout.binary(&mut |l| say(l))?;
        let launch = Launch {
            binary: &binary,
            tree: &checkout.tree,
            rel: &rel,
            name: &name,
            profile: profile.as_deref(),
            device: &device,
            cpu_isa: isa,
        };
        let first = run_experiment(&launch, &work.join("results"))?;
        let reproduced = read_parquet(std::fs::read(&first)?, &first.display().to_string())?;
        let Some(c) = &committed else {
            say("no committed analysis: comparing two fresh reproductions");
            let second = run_experiment(&launch, &work.join("results-2"))?;
            let again = read_parquet(std::fs::read(&second)?, &second.display().to_string())?;
            return Ok(report(&compare(&reproduced, &again, tolerance)?, false, "two reproductions on this machine"));
        };
        // The reproduction's own record of where it ran decides, where it differs from the forecast.
        let ran_on = distinct(&reproduced, "hardware");
        if !ran_on.is_empty() && ran_on.iter().any(|r| *r != here) {
            say(&format!("the reproduction ran on: {}", ran_on.join(" | ")));
            let now = statistical_here(&recorded, &ran_on[0]);
            if now != statistical {
                say(&format!("so the comparison is {}", if now { "statistical" } else { "bit for bit" }));
                statistical = now;
            }
        }
        let where_ = match (&recorded[..], statistical) {
            ([], _) => format!("record's hardware not recorded; reproduced on {}", ran_on.first().unwrap_or(&here)),
            (_, false) => format!("on {}", recorded.join(" | ")),
            (_, true) => {
                format!("recorded on {}; reproduced on {}", recorded.join(" | "), ran_on.first().unwrap_or(&here))
            }
        };
        if statistical && seeds >= 2 {
            let verdicts_path = first.with_file_name("verdicts.parquet");
            let verdicts = std::fs::read(&verdicts_path)
                .ok()
                .map(|b| read_parquet(b, &verdicts_path.display().to_string()))
                .transpose()?;
            let mut checks = compare::compare_runs(c, &reproduced, None)?;
            checks.extend(statistical::compare_metrics(c, &reproduced, statistical::ALPHA));
            if let Some(v) = &committed_verdicts {
                checks.extend(statistical::compare_verdicts(v, verdicts.as_ref()));
            }
            return Ok(report(&checks, true, &where_));
        }
        let checks = compare(c, &reproduced, tolerance)?;
        if statistical {
            // One seed per variant on other hardware: what differs cannot be judged.
            print!("{}", table(&checks));
            let failed = checks.iter().filter(|c| !c.pass).count();
            if failed == 0 {
                println!(
                    "reproduce: PASS: all {} checks agree bit for bit, on other hardware ({where_})",
                    checks.len()
                );
                return Ok(true);
            }
            // The runs' identity must agree on any hardware: a difference there is a failure.
            let is_identity = |c: &&Check| compare::IDENTITY.contains(&c.what.as_str());
            let identity = checks.iter().filter(is_identity).filter(|c| !c.pass).count();
            if identity > 0 {
                println!(
                    "reproduce: FAIL: {identity} of {} identity checks (hash, state, runs, seeds) differ ({where_})",
                    checks.iter().filter(is_identity).count()
                );
                return Ok(false);
            }
            println!(
                "reproduce: INCONCLUSIVE: {failed} of {} checks differ bit for bit, as expected on other hardware, \
                 and a record with one seed per variant has no spread to judge them by ({where_})",
                checks.len()
            );
            return Ok(false);
        }
        Ok(report(&checks, false, &where_))
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
    let dir = RunDir::at(run_dir);
    let status = dir.status()?.with_context(|| format!("{}: no status.json", run_dir.display()))?;
    if status.state != State::Done {
        bail!("{}: the run is {:?}, not done; only finished runs can be verified", run_dir.display(), status.state);
    }
    let prov_path = dir.file(Artifact::Provenance);
    let prov: Provenance = serde_json::from_str(
        &std::fs::read_to_string(&prov_path).with_context(|| format!("cannot read {}", prov_path.display()))?,
    )
    .with_context(|| format!("{}: invalid JSON", prov_path.display()))?;
    let hash = prov.hash.clone().context("provenance.json has no hash")?;
    let device = dir.attempts().last().map(|a| if a.on_cuda() { "cuda" } else { "cpu" }).unwrap_or("cpu").to_string();

    // A repository is needed only to check another commit out.
    let repo = repository_of(&std::env::current_dir()?);
    let scratch = match &repo {
        Ok(r) => r.join("target/reproductions"),
        Err(_) => std::env::temp_dir(),
    };
    let work = scratch.join(format!("verify-{hash}-{}", std::process::id()));
    let outcome = (|| -> Result<bool> {
        // The same code as this binary: run it; else check the run's commit (and diff) out and build it.
        let checkout = if prov.code_sha256.as_deref() == Some(env!("DDPM_CODE_SHA256")) {
            None
        } else {
            let commit = prov.git.commit.as_deref().context("provenance.json records no git commit")?;
            let patch = std::fs::read(dir.file(Artifact::CodePatch)).ok();
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
        let again = RunDir::new(&work.join("results"), &hash);
        std::fs::create_dir_all(&again.path)?;
        for f in [Artifact::Config, Artifact::Provenance] {
            std::fs::copy(dir.file(f), again.file(f)).with_context(|| format!("cannot copy {}", f.name()))?;
        }
        let again = again.path;
        println!("verify: re-running {} on {device} in {}", status.label, again.display());
        let data = std::fs::canonicalize(crate::data::data_dir()).unwrap_or_else(|_| crate::data::data_dir());
        let ok = Command::new(&binary)
            .args(["run-one", &again.to_string_lossy(), "--device", &device])
            .env("DDPM_DATA_DIR", data)
            .status()?
            .success();
        if !ok {
            bail!("the re-run failed; see {}", RunDir::at(&again).file(Artifact::Log).display());
        }
        let new = RunDir::at(&again).status()?.context("the re-run wrote no status.json")?;
        let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let mut checks = Vec::new();
        for (what, a, b) in [
            ("weights_sha256", &status.weights_sha256, &new.weights_sha256),
            ("ema_sha256", &status.ema_sha256, &new.ema_sha256),
        ] {
            checks.push(Check::new(&status.label, what, text(a), text(b), None, a == b, Kind::Bitwise));
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
            checks.push(Check::new(
                &status.label,
                what,
                shown(a),
                shown(b),
                difference,
                pass,
                Kind::of_tolerance(tolerance),
            ));
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
