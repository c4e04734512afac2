//! Determinism and reproduction through the real binary: two CPU runs of one configuration are bit
//! for bit the same, also when one evaluates during training; `ddpm reproduce` on a commit of a temporary copy of this repository passes,
//! and fails with the difference shown after a committed metric is changed by hand; `ddpm verify`
//! re-runs one run and compares it.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The binary run in `cwd`, with the repository's data and no overrides from the environment.
fn ddpm(cwd: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ddpm"));
    c.current_dir(cwd).args(args).env("DDPM_DATA_DIR", root().join("data")).env_remove("DDPM_RESULTS_DIR");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("DDPM_") && k != "DDPM_DATA_DIR") {
        c.env_remove(k);
    }
    c.output().unwrap()
}

fn git(cwd: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(cwd)
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// Seconds on a CPU, with every metric: FID/KID of 16 samples against 32 images, the bound on 2.
const TINY: &str = r#"
seed = 4
[experiment]
name = "tiny"
[data]
name = "mnist"
image_size = 16
limit = 128
[diffusion]
timesteps = 20
[train]
steps = 12
batch_size = 16
log_every = 4
checkpoint_every = 6
[sample]
num_samples = 4
[eval]
num_samples = 16
sampler = { name = "ddim", steps = 5 }
reference_images = 32
kid_subsets = 10
kid_subset_size = 8
bpd_images = 2
[grid]
"diffusion.schedule.name" = ["linear", "cosine"]
"#;

fn status(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("status.json")).unwrap()).unwrap()
}

#[test]
fn two_cpu_runs_are_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("tiny.toml"), TINY).unwrap();
    for r in ["a", "b"] {
        let out = ddpm(tmp.path(), &["run", "tiny.toml", "--device", "cpu", "--results", r]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // An evaluation during training (sampling and Inception at step 6) draws from its own streams:
    // the same runs (the evaluation is not part of the hash) end with the same weights.
    let out = ddpm(
        tmp.path(),
        &[
            "run",
            "tiny.toml",
            "--device",
            "cpu",
            "--results",
            "c",
            "--set",
            "eval.every=6",
            "--set",
            "eval.every_num_samples=4",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runs =
        std::fs::read_dir(tmp.path().join("a/runs")).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>();
    assert_eq!(runs.len(), 2);
    for hash in runs {
        let (a, b) = (tmp.path().join("a/runs").join(&hash), tmp.path().join("b/runs").join(&hash));
        let (sa, sb) = (status(&a), status(&b));
        let sc = status(&tmp.path().join("c/runs").join(&hash));
        assert!(tmp.path().join("c/runs").join(&hash).join("eval_history.jsonl").exists());
        assert_eq!((&sa["weights_sha256"], &sa["final_loss"]), (&sc["weights_sha256"], &sc["final_loss"]));
        for key in ["weights_sha256", "ema_sha256", "final_loss"] {
            assert!(!sa[key].is_null(), "{key} recorded");
            assert_eq!(sa[key], sb[key], "{key} of {hash:?}");
        }
        for key in ["fid", "kid", "bpd", "precision", "recall"] {
            assert!(!sa["metrics"][key].is_null(), "{key} recorded");
            assert_eq!(sa["metrics"][key], sb["metrics"][key], "{key} of {hash:?}");
        }
        for f in ["model.safetensors", "ema.safetensors", "samples.png", "metrics.jsonl"] {
            let (x, y) = (std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap());
            if f == "metrics.jsonl" {
                // Timing fields differ; the losses at every step do not.
                let losses = |bytes: &[u8]| -> Vec<serde_json::Value> {
                    text(bytes)
                        .lines()
                        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].clone())
                        .collect()
                };
                assert_eq!(losses(&x), losses(&y));
            } else {
                assert!(x == y, "{f} of {hash:?} differs");
            }
        }
        let attempt: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(a.join("attempts.jsonl")).unwrap().lines().last().unwrap())
                .unwrap();
        assert_eq!(attempt["determinism"]["deterministic_algorithms"], true, "{attempt}");
        // Where it ran: the CPU, the math libraries' levels and versions, the threads.
        let hw = &attempt["hardware"];
        assert_eq!(hw["device"], "cpu", "{attempt}");
        assert_eq!(hw["cpu_isa"], "native", "{attempt}");
        for key in ["cpu", "cpu_id", "aten_capability", "onednn", "mkl"] {
            assert!(hw[key].as_str().is_some_and(|v| !v.is_empty()), "{key}: {attempt}");
        }
        assert_eq!(hw["threads"], attempt["determinism"]["threads"], "{attempt}");
        let key = attempt["hardware_key"].as_str().unwrap();
        assert!(
            key.starts_with("cpu: ") && key.contains(hw["cpu"].as_str().unwrap()) && key.contains("threads"),
            "{key}"
        );
    }
    // The analysis keeps it: the runs table's `hardware` and `cpu_isa` columns.
    let runs = std::fs::read_to_string(tmp.path().join("a/analysis/tiny/runs.csv")).unwrap();
    let header: Vec<&str> = runs.lines().next().unwrap().split(',').collect();
    assert!(header.contains(&"hardware") && header.contains(&"cpu_isa"), "{header:?}");
    assert!(runs.lines().skip(1).all(|l| l.contains("cpu: ") && l.contains(",native")), "{runs}");
}

/// The weights of TINY's run of the default schedule (seed 4, no grid) trained under `cpu_isa` with `env` in the environment.
fn weights_under(dir: &Path, name: &str, cpu_isa: &str, env: &[(&str, &str)]) -> (String, serde_json::Value) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ddpm"));
    c.current_dir(dir)
        .args(["run", "tiny.toml", "--device", "cpu", "--results", name, "--set", &format!("train.cpu_isa={cpu_isa}")])
        .args(["--set", "eval.fid=false", "--set", "eval.bpd=false"])
        .env("DDPM_DATA_DIR", root().join("data"))
        .env_remove("DDPM_RESULTS_DIR");
    for v in ["ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_CBWR"] {
        c.env_remove(v);
    }
    let out = c.envs(env.iter().copied()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runs: Vec<PathBuf> =
        std::fs::read_dir(dir.join(name).join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    let s = status(&runs[0]);
    let attempt = std::fs::read_to_string(runs[0].join("attempts.jsonl")).unwrap();
    let attempt: serde_json::Value = serde_json::from_str(attempt.lines().last().unwrap()).unwrap();
    (s["weights_sha256"].as_str().unwrap().to_string(), attempt["hardware"].clone())
}

/// `train.cpu_isa`: the instruction set decides the bits (the default and a pinned level give other
/// weights), and the pin holds: a run whose environment caps libtorch lower still (as on an older CPU)
/// gives the pinned run's weights exactly, and the record says what was inherited.
#[test]
fn portable_math_pins_the_cpu_kernels() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("tiny.toml"), TINY.split("[grid]").next().unwrap()).unwrap();
    let lowest = [("ONEDNN_MAX_CPU_ISA", "SSE41"), ("ATEN_CPU_CAPABILITY", "default"), ("MKL_CBWR", "COMPATIBLE")];
    let (native, hw) = weights_under(tmp.path(), "native", "native", &[]);
    let (pinned, pinned_hw) = weights_under(tmp.path(), "avx2", "avx2", &[]);
    let (pinned_low, low_hw) = weights_under(tmp.path(), "avx2-under-sse41", "avx2", &lowest);
    let (unpinned_low, _) = weights_under(tmp.path(), "native-under-sse41", "native", &lowest);
    let (sse41, sse41_hw) = weights_under(tmp.path(), "sse41", "sse41", &[]);
    // The dependence is real: the lowest level changes the weights on any x86 CPU with AVX2 ...
    assert_ne!(native, sse41, "native and sse41 kernels give the same weights");
    assert_eq!(unpinned_low, sse41, "the inherited caps act as the sse41 pin does");
    // ... and on a CPU above AVX2 (AVX-512) pinning at AVX2 changes them too.
    if hw["aten_capability"] == "AVX512" {
        assert_ne!(native, pinned, "AVX-512 and AVX2 kernels give the same weights");
    }
    // The pin holds whatever the environment capped before.
    assert_eq!(pinned, pinned_low, "the avx2 pin did not override the inherited caps");
    for h in [&pinned_hw, &low_hw] {
        assert_eq!(
            (&h["cpu_isa"], &h["aten_capability"], &h["onednn_max_cpu_isa"]),
            (&"avx2".into(), &"AVX2".into(), &"AVX2".into()),
            "{h}"
        );
        assert_eq!(h["mkl_cbwr"], "AVX2,STRICT", "{h}");
    }
    assert_eq!(low_hw["inherited"]["ONEDNN_MAX_CPU_ISA"], "SSE41", "{low_hw}");
    assert_eq!(sse41_hw["aten_capability"], "DEFAULT", "{sse41_hw}");
    assert!(hw.get("inherited").is_none() && pinned_hw["inherited"]["MKL_CBWR"].is_null(), "{pinned_hw}");
}

/// The files a build needs, copied from this checkout so that the copy builds this very binary.
fn copy_repository(to: &Path) {
    let copy = |from: &Path, to: &Path| {
        let status = Command::new("cp").arg("-r").arg(from).arg(to).status().unwrap();
        assert!(status.success());
    };
    for f in ["src", "assets", "Cargo.toml", "Cargo.lock", "build.rs"] {
        copy(&root().join(f), &to.join(f));
    }
    std::fs::create_dir_all(to.join("experiments")).unwrap();
    std::fs::write(to.join("experiments/tiny.toml"), TINY).unwrap();
    std::fs::write(to.join(".gitignore"), "/results/\n/target/\n/data\n/.venv\n").unwrap();
}

/// A git repository in `tmp/repo` holding a copy of this checkout's build inputs, TINY as
/// `experiments/tiny.toml` and the `extra` experiment files, committed.
fn repository(tmp: &Path, extra: &[(&str, &str)]) -> PathBuf {
    let repo = tmp.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    copy_repository(&repo);
    for (name, text) in extra {
        std::fs::write(repo.join("experiments").join(name), text).unwrap();
    }
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "the experiments"]);
    repo
}

#[test]
fn reproduce_passes_and_fails_on_a_changed_metric_and_verify_reruns_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(tmp.path(), &[]);
    let bare = git(&repo, &["rev-parse", "HEAD"]);

    // Without a committed analysis there is nothing to compare with.
    let out = ddpm(&repo, &["reproduce", &bare, "experiments/tiny.toml"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("has no committed analysis") && text(&out.stderr).contains("--twice"));

    // The main job: run, commit its analysis.
    let out = ddpm(&repo, &["run", "experiments/tiny.toml", "--device", "cpu"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(repo.join("analysis/tiny/runs.parquet").exists());
    git(&repo, &["add", "analysis"]);
    git(&repo, &["commit", "-q", "-m", "analysis of the tiny experiment"]);
    let recorded = git(&repo, &["rev-parse", "HEAD"]);

    let out = ddpm(&repo, &["reproduce", &recorded, "experiments/tiny.toml"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("byte-identical to this binary's"), "no build needed: {stdout}");
    assert!(stdout.contains("PASS: all"), "{stdout}");
    for what in ["hash", "final_loss", "fid", "kid", "bpd"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.contains("schedule=cosine") && l.contains(&format!(" {what} ")) && l.ends_with("PASS")),
            "{what}: {stdout}"
        );
    }
    assert!(!stdout.contains("FAIL"));

    // A committed metric changed by hand: that row fails, with its difference, and the exit code says so.
    edit_record(&repo, "tiny", "pl.when(pl.col('label') == 'schedule=linear').then(pl.col('final_loss') + 0.5).otherwise(pl.col('final_loss')).alias('final_loss')");
    git(&repo, &["commit", "-q", "-am", "a changed metric"]);
    let out = ddpm(&repo, &["reproduce", "HEAD", "experiments/tiny.toml"]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let row = stdout.lines().find(|l| l.contains("schedule=linear") && l.contains(" final_loss ")).unwrap();
    assert!(row.ends_with("FAIL") && row.contains("-5e-1"), "{row}");
    assert!(stdout.contains("FAIL: 1 of"), "{stdout}");

    // The same record said to come from other hardware: one seed per variant leaves no spread to
    // judge the difference by, and reproduce says so instead of failing it.
    set_hardware(&repo, "tiny", "cpu: Another CPU (x86_64 family 6 model 207); ATen AVX512; 2 threads");
    git(&repo, &["commit", "-q", "-am", "made elsewhere"]);
    let out = ddpm(&repo, &["reproduce", "HEAD", "experiments/tiny.toml"]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("one seed per variant") && stdout.contains("Another CPU"), "{stdout}");
    assert!(stdout.trim_end().lines().last().unwrap().starts_with("reproduce: INCONCLUSIVE: 1 of"), "{stdout}");

    // verify: the same code re-runs one run to the same weights and metrics...
    let run = std::fs::read_dir(repo.join("results/runs")).unwrap().next().unwrap().unwrap().path();
    let out = ddpm(&repo, &["verify", run.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for what in ["weights_sha256", "ema_sha256", "final_loss", "fid", "bpd"] {
        assert!(stdout.lines().any(|l| l.contains(&format!(" {what} ")) && l.ends_with("PASS")), "{what}: {stdout}");
    }
    // ... and a recorded value that the run cannot give fails.
    let mut s = status(&run);
    s["metrics"]["bpd"] = (s["metrics"]["bpd"].as_f64().unwrap() + 1.0).into();
    std::fs::write(run.join("status.json"), s.to_string()).unwrap();
    let out = ddpm(&repo, &["verify", run.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stdout).lines().any(|l| l.contains(" bpd ") && l.ends_with("FAIL")), "{}", text(&out.stdout));
    assert!(!repo.join("target/reproductions").read_dir().unwrap().any(|_| true), "scratch folders removed");
}

/// Rewrites a column of the committed runs table of `experiment` with a polars expression (through
/// Python's polars), as a hand-edited record.
fn edit_record(repo: &Path, experiment: &str, column: &str) {
    let py = format!(
        "import polars as pl; p = 'analysis/{experiment}/runs.parquet'; \
         pl.read_parquet(p).with_columns({column}).write_parquet(p)"
    );
    let out = Command::new(root().join(".venv/bin/python")).current_dir(repo).args(["-c", &py]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The committed runs table of `experiment`, as if made on `hardware`.
fn set_hardware(repo: &Path, experiment: &str, hardware: &str) {
    edit_record(repo, experiment, &format!("pl.lit({hardware:?}).alias('hardware')"));
}

/// A record made on other hardware (a fixture: the committed table's `hardware` column rewritten),
/// with three seeds per variant: reproduce says up front that the bits are not expected to agree,
/// compares each variant's metrics with the record's seed-to-seed spread and the verdicts, and passes;
/// with one variant's loss moved far outside its spread, that row fails and so does the reproduction.
#[test]
fn reproduce_on_other_hardware_compares_statistically() {
    let tmp = tempfile::tempdir().unwrap();
    let seeds = TINY
        .replace("name = \"tiny\"", "name = \"tiny_seeds\"\nseeds = [0, 1, 2]")
        .replace("[eval]\n", "[eval]\nfid = false\n");
    let repo = repository(tmp.path(), &[("seeds.toml", &seeds)]);
    let out = ddpm(&repo, &["run", "experiments/seeds.toml", "--device", "cpu"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    set_hardware(&repo, "tiny_seeds", "cpu: Another CPU (x86_64 family 6 model 207); ATen AVX512; 2 threads");
    git(&repo, &["add", "analysis"]);
    git(&repo, &["commit", "-q", "-m", "a record made elsewhere"]);

    let out = ddpm(&repo, &["reproduce", "HEAD", "experiments/seeds.toml"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("other hardware than recorded: bit-for-bit equality is not expected"), "{stdout}");
    for variant in ["schedule=linear", "schedule=cosine"] {
        let row = stdout.lines().find(|l| l.trim_start().starts_with(variant) && l.contains(" final_loss ")).unwrap();
        assert!(row.contains("statistical") && row.ends_with("PASS") && row.contains("(n=3)"), "{row}");
    }
    assert!(
        stdout.lines().any(|l| l.contains("(verdict)") && l.contains(" final_loss ") && l.ends_with("PASS")),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l.contains(" hash ") && l.contains("bitwise") && l.ends_with("PASS")), "{stdout}");
    let last = stdout.trim_end().lines().last().unwrap();
    assert!(last.starts_with("reproduce: PASS (statistical): ") && last.contains("Another CPU"), "{last}");

    // The linear schedule's loss moved by 1 (its three seeds spread by about 0.05 here): that row fails.
    edit_record(&repo, "tiny_seeds", "pl.when(pl.col('variant') == 'schedule=linear').then(pl.col('final_loss') + 1.0).otherwise(pl.col('final_loss')).alias('final_loss')");
    git(&repo, &["commit", "-q", "-am", "a moved metric"]);
    let out = ddpm(&repo, &["reproduce", "HEAD", "experiments/seeds.toml"]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.ends_with("FAIL")).collect();
    assert_eq!(failed.len(), 1, "{stdout}");
    assert!(failed[0].trim_start().starts_with("schedule=linear") && failed[0].contains(" final_loss "), "{stdout}");
    assert!(stdout.trim_end().lines().last().unwrap().starts_with("reproduce: FAIL (statistical): 1 of"), "{stdout}");
}

/// Sequential seeds on seconds-long runs: a barely trained model (lr 1e-6) against a trained one
/// (lr 1e-2), decided on the final training loss. The safe rule cannot decide before 5 seeds
/// (E_n ≤ (1 + n)^{(n−1)/2}: 4 at 3 seeds, 11.2 at 4); it stops at the first look that does (6 on
/// the CPU this was written on) and never trains the seeds after it.
const SEQUENTIAL: &str = r#"
seed = 0
[experiment]
name = "tiny_sequential"
seeds = { start = 3, max = 9, step = 1 }
baseline = { "train.lr" = 1e-2 }
[analysis]
primary = "final_loss"
[data]
name = "mnist"
image_size = 16
limit = 128
[diffusion]
timesteps = 20
[train]
steps = 12
batch_size = 16
log_every = 4
checkpoint_every = 6
[sample]
num_samples = 4
[eval]
fid = false
bpd = false
[grid]
"train.lr" = [1e-2, 1e-6]
"#;

#[test]
fn sequential_seeds_stop_when_decided_and_reproduce_replays_them() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(tmp.path(), &[("sequential.toml", SEQUENTIAL)]);

    let out = ddpm(&repo, &["plan", "experiments/sequential.toml"]);
    assert!(text(&out.stdout).contains("sequential seeds: seeds 0 … 2 first"), "{}", text(&out.stdout));
    // Slurm is refused, saying why.
    let out = ddpm(&repo, &["run", "experiments/sequential.toml", "--launcher", "slurm"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("runs only locally"), "{}", text(&out.stderr));

    let out = ddpm(&repo, &["run", "experiments/sequential.toml", "--device", "cpu"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("not decided after 3 seeds; adding seeds up to 4"), "{stdout}");
    assert!(stdout.contains("not decided after 4 seeds; adding seeds up to 5"), "{stdout}");
    let stop: usize = stdout
        .lines()
        .find_map(|l| l.split(": decided after ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no decision: {stdout}"));
    assert!((5..9).contains(&stop), "{stdout}");
    // The seeds after the stopping look were never trained.
    assert_eq!(std::fs::read_dir(repo.join("results/runs")).unwrap().count(), 2 * stop);
    let report = std::fs::read_to_string(repo.join("analysis/tiny_sequential/report.md")).unwrap();
    assert!(report.contains("**final_loss** (primary)") && report.contains("**yes** (e = "), "{report}");
    assert!(report.contains("3 seeds: e = ") && report.contains(&format!("{stop} seeds: e = ")), "{report}");
    assert!(!report.contains(&format!("seed={stop}")), "{report}");

    // Running it again trains nothing and stops at the same look.
    let out = ddpm(&repo, &["run", "experiments/sequential.toml", "--device", "cpu"]);
    assert!(text(&out.stdout).contains(&format!(": decided after {stop} seeds")), "{}", text(&out.stdout));
    assert_eq!(std::fs::read_dir(repo.join("results/runs")).unwrap().count(), 2 * stop);

    // The record, reproduced: the same looks, the same stopping seed.
    git(&repo, &["add", "analysis"]);
    git(&repo, &["commit", "-q", "-m", "analysis of the sequential experiment"]);
    let out = ddpm(&repo, &["reproduce", "HEAD", "experiments/sequential.toml"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains(&format!(": decided after {stop} seeds")), "{stdout}");
    let seeds = stdout.lines().find(|l| l.contains("(all runs)") && l.contains(" seeds ")).unwrap();
    let expected: Vec<String> = (0..stop).map(|s| s.to_string()).collect();
    assert!(seeds.contains(&expected.join(",")) && seeds.ends_with("PASS"), "{seeds}");
    assert!(stdout.contains("PASS: all"), "{stdout}");
}
