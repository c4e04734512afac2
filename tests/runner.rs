//! The harness end to end: sweeps, layering, validation with line numbers, resume after SIGKILL,
//! concurrent runners, corrupt checkpoints, and the commands on every experiment file.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ddpm"));
    c.env("DDPM_DATA_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("data"))
        .env("DDPM_EVAL__FID", "false")
        .env("DDPM_EVAL__BPD", "false")
        .env_remove("DDPM_RESULTS_DIR");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("DDPM_TRAIN") || k.starts_with("DDPM_DATA__")) {
        c.env_remove(k);
    }
    c
}

fn ddpm(args: &[&str], results: &Path) -> Output {
    bin().args(args).arg("--results").arg(results).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// Label → hash from `ddpm plan`.
fn plan(exp: &Path, results: &Path, extra: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["plan", exp.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = ddpm(&args, results);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| {
            let hash = l.split_whitespace().next().unwrap().to_string();
            (l.split_whitespace().last().unwrap().to_string(), hash)
        })
        .collect()
}

#[test]
fn sweeps_combine_grid_zip_variants_and_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    let body = r#"
[experiment]
seeds = [0, 1]
[grid]
"diffusion.schedule.name" = ["linear", "cosine"]
[zip]
"train.lr" = [1e-3, 2e-4]
"train.steps" = [10, 20]
[[variants]]
label = "small"
model = { name = "simple", time_emb_dim = 16 }
[[variants]]
label = "wide"
model = { name = "simple", time_emb_dim = 64 }
"#;
    let exp = write(tmp.path(), "sweep.toml", body);
    let runs = plan(&exp, &tmp.path().join("r"), &[]);
    assert_eq!(runs.len(), 2 * 2 * 2 * 2);
    let labels: Vec<&str> = runs.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels[0], "schedule=linear,lr=0.001,steps=10,small,seed=0");
    assert_eq!(labels[15], "schedule=cosine,lr=0.0002,steps=20,wide,seed=1");
    let mut hashes: Vec<&String> = runs.iter().map(|(_, h)| h).collect();
    hashes.sort();
    hashes.dedup();
    assert_eq!(hashes.len(), 16, "every point is a different run");

    let bad = write(tmp.path(), "bad.toml", "[zip]\n\"train.lr\" = [1e-3, 2e-4]\n\"train.steps\" = [10]\n");
    let out = ddpm(&["plan", bad.to_str().unwrap()], &tmp.path().join("r"));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("equal length"), "{}", text(&out.stderr));
}

#[test]
fn errors_name_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let check = |body: &str, expected: &[&str]| {
        let exp = write(tmp.path(), "e.toml", body);
        let out = ddpm(&["plan", exp.to_str().unwrap()], &tmp.path().join("r"));
        assert!(!out.status.success());
        let err = text(&out.stderr);
        for e in expected {
            assert!(err.contains(e), "missing {e:?} in:\n{err}");
        }
    };
    // unknown key at line 3
    check("seed = 1\n[train]\nstepz = 3\n", &["e.toml:3", "key `train.stepz`", "unknown field", "`steps`"]);
    // wrong type at line 4
    check("[data]\nname = \"mnist\"\n[train]\nlr = \"fast\"\n", &["e.toml:4", "key `train.lr`", "invalid type"]);
    // out of range at line 2
    check("[data]\nimage_size = 28\n", &["e.toml:2", "key `data.image_size` = 28", "a multiple of 8"]);
    // in a grid value (line 3) and in a profile (line 5)
    check("[grid]\n\"train.steps\" = [10]\n\"train.lr\" = [1e-3, -1.0]\n", &["e.toml:3", "key `train.lr` = -1"]);
    check("[train]\nsteps = 3\n[grid]\nx = [1, 2]\n", &["e.toml:4", "grid key `x` is not a run key"]);
    check("[grid]\n\"eval.num_samples\" = [10, 10]\n", &["resolve to the same configuration"]);
    check("[eval]\nnum_samplez = 3\n", &["e.toml:2", "key `eval.num_samplez`", "unknown field"]);
    check("[eval]\nkid_subsets = 0\n", &["e.toml:2", "key `eval.kid_subsets` = 0"]);
    let out = {
        let exp = write(tmp.path(), "p.toml", "[train]\nsteps = 10\n\n[profiles.full]\ntrain.batch_size = 0\n");
        ddpm(&["plan", exp.to_str().unwrap(), "--profile", "full"], &tmp.path().join("r"))
    };
    assert!(
        text(&out.stderr).contains("p.toml:5") && text(&out.stderr).contains("train.batch_size"),
        "{}",
        text(&out.stderr)
    );
}

/// Each layer overrides the one below: default < file < profile < environment < --set.
#[test]
fn layering_order_with_a_test_for_each_level() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(
        tmp.path(),
        "l.toml",
        "[train]\nsteps = 10\nbatch_size = 16\nlr = 1e-3\n[profiles.p]\ntrain.batch_size = 32\ntrain.lr = 5e-4\n",
    );
    let show = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec!["show", exp.to_str().unwrap(), "--profile", "p"];
        args.extend_from_slice(extra);
        let mut cmd = bin();
        cmd.args(&args).arg("--results").arg(tmp.path().join("r"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let line = |out: &str, key: &str| {
        out.lines().find(|l| l.trim_start().starts_with(&format!("{key} ="))).unwrap().to_string()
    };
    let out = show(&[("DDPM_TRAIN__LR", "2e-4"), ("DDPM_TRAIN__LOG_EVERY", "7")], &["--set", "train.log_every=9"]);
    // default: never set anywhere
    assert!(
        line(&out, "train.huber_delta").contains("= 1.0") && line(&out, "train.huber_delta").ends_with("# default")
    );
    // file
    let steps = line(&out, "train.steps");
    assert!(steps.contains("= 10") && steps.contains("l.toml:2"), "{steps}");
    // profile over file
    let batch = line(&out, "train.batch_size");
    assert!(batch.contains("= 32") && batch.contains("l.toml:6") && batch.contains("[profiles.p]"), "{batch}");
    // environment over profile
    let lr = line(&out, "train.lr");
    assert!(lr.contains("= 0.0002") && lr.contains("environment DDPM_TRAIN__LR"), "{lr}");
    // --set over environment
    let log = line(&out, "train.log_every");
    assert!(log.contains("= 9") && log.contains("--set train.log_every=9"), "{log}");
    // --set of a `name` replaces the table: the cosine schedule starts from its own defaults.
    let out = show(&[], &["--set", "diffusion.schedule.name=cosine"]);
    assert!(line(&out, "diffusion.schedule.s").contains("0.008"), "{out}");
}

#[test]
fn include_uses_another_file_as_the_base() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("base")).unwrap();
    write(tmp.path(), "base/mnist.toml", "[train]\nsteps = 10\nlr = 1e-3\n[grid]\nseed = [0, 1]\n");
    let exp = write(tmp.path(), "child.toml", "[experiment]\ninclude = \"base/mnist.toml\"\n[train]\nlr = 5e-4\n");
    let out = ddpm(&["show", exp.to_str().unwrap()], &tmp.path().join("r"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("run seed=").count(), 2, "the grid comes from the base: {stdout}");
    assert!(stdout.lines().any(|l| l.contains("train.steps = 10") && l.contains("mnist.toml:2")), "{stdout}");
    assert!(stdout.lines().any(|l| l.contains("train.lr = 0.0005") && l.contains("child.toml:4")), "{stdout}");
    let cyc = write(tmp.path(), "cycle.toml", "[experiment]\ninclude = \"cycle.toml\"\n");
    let out = ddpm(&["plan", cyc.to_str().unwrap()], &tmp.path().join("r"));
    assert!(text(&out.stderr).contains("cycle"), "{}", text(&out.stderr));
}

/// 60 steps of batch 32 at 16×16 on 256 images, a checkpoint every 10 steps: a few seconds on a CPU.
const RESUMABLE: &str = r#"
seed = 5
[data]
image_size = 16
limit = 256
[diffusion]
timesteps = 50
[model]
name = "simple"
[train]
steps = 60
batch_size = 32
lr = 1e-3
log_every = 5
checkpoint_every = 10
ema_decay = 0.99
[sample]
num_samples = 4
"#;

fn run_dir(results: &Path) -> PathBuf {
    std::fs::read_dir(results.join("runs")).unwrap().next().unwrap().unwrap().path()
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kill the runner with SIGKILL after its first checkpoint, run again: it resumes and ends with the
/// same weights, EMA and metrics as an uninterrupted run, bit for bit.
#[test]
fn a_killed_run_resumes_to_bit_identical_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(tmp.path(), "resume.toml", RESUMABLE);
    let (clean, killed) = (tmp.path().join("clean"), tmp.path().join("killed"));
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &clean);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut child = bin()
        .args(["run", exp.to_str().unwrap(), "--device", "cpu", "--results"])
        .arg(&killed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first checkpoint", Duration::from_secs(120), || {
        killed.join("runs").exists() && run_dir(&killed).join("checkpoints/step-00000010.json").exists()
    });
    child.kill().unwrap(); // SIGKILL; the run's own process dies with it
    child.wait().unwrap();
    let dir = run_dir(&killed);
    assert!(
        !dir.join("status.json").exists()
            || !std::fs::read_to_string(dir.join("status.json")).unwrap().contains("\"done\"")
    );
    let plan_out = text(&ddpm(&["plan", exp.to_str().unwrap()], &killed).stdout);
    assert!(plan_out.contains("partial (resumes at step"), "{plan_out}");

    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &killed);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("resuming from the checkpoint at step"), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("resumed"), "{}", text(&out.stdout));
    let clean_dir = run_dir(&clean);
    for f in ["model.safetensors", "ema.safetensors", "samples.png"] {
        assert_eq!(std::fs::read(dir.join(f)).unwrap(), std::fs::read(clean_dir.join(f)).unwrap(), "{f} differs");
    }
    assert_eq!(logged_losses(&dir), logged_losses(&clean_dir), "the same loss at every logged step, each step once");
}

/// SIGTERM to a run's process (what Slurm sends on preemption; SIGUSR1 behaves the same): it finishes its
/// logging window, writes a checkpoint there and exits; the runner reports it stopped, and the next
/// `run` resumes it to the weights and logged losses of an uninterrupted run.
#[test]
fn a_signalled_run_checkpoints_stops_and_resumes_to_identical_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(tmp.path(), "stop.toml", &RESUMABLE.replace("steps = 60", "steps = 300"));
    let (clean, stopped) = (tmp.path().join("clean"), tmp.path().join("stopped"));
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &clean);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let child = bin()
        .args(["run", exp.to_str().unwrap(), "--device", "cpu", "--results"])
        .arg(&stopped)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("two logged steps", Duration::from_secs(120), || {
        stopped.join("runs").exists()
            && std::fs::read_to_string(run_dir(&stopped).join("metrics.jsonl")).is_ok_and(|t| t.lines().count() >= 2)
    });
    let dir = run_dir(&stopped);
    // The lock names the run's own process (`pid N on host`), a child of the runner.
    let holder = std::fs::read_to_string(dir.join("lock")).unwrap();
    let pid: i32 = holder.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: kill(2) with a pid read from the lock of a process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "a stopped run is not a finished experiment");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("SIGTERM: checkpoint written at step"), "{stdout}");
    let step: usize = stdout.split("stopped stop at step ").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    assert!(step > 0 && step < 300 && step.is_multiple_of(5), "at the end of a logging window: {step}");
    assert!(dir.join(format!("checkpoints/step-{step:08}.json")).exists(), "a checkpoint at the stop");
    let plan_out = text(&ddpm(&["plan", exp.to_str().unwrap()], &stopped).stdout);
    assert!(plan_out.contains(&format!("partial (resumes at step {step})")), "{plan_out}");

    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &stopped);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("resuming from the checkpoint at step {step}")));
    let clean_dir = run_dir(&clean);
    for f in ["model.safetensors", "ema.safetensors"] {
        assert_eq!(std::fs::read(dir.join(f)).unwrap(), std::fs::read(clean_dir.join(f)).unwrap(), "{f} differs");
    }
    assert_eq!(logged_losses(&dir), logged_losses(&clean_dir), "each step logged once, with the same loss");
}

/// An EDM run and a flow matching run with post-hoc EMA (each in its own experiment, so that each is
/// the one interrupted), killed after their first checkpoint and run again, end with the weights, EMA,
/// samples and every post-hoc EMA snapshot of uninterrupted runs, bit for bit; the reconstruction of a
/// stored width at the last step is that stored average.
#[test]
fn formulations_and_posthoc_ema_resume_bit_for_bit() {
    let variants = [
        "diffusion.formulation = { name = \"edm\" }\n\
         sample.sampler = { name = \"heun\", steps = 3, s_churn = 5.0 }\neval.sampler = { name = \"euler\", steps = 4 }\n",
        "diffusion.formulation = { name = \"flow\", shift = 3.0 }\n\
         sample.sampler = { name = \"midpoint\", steps = 3 }\neval.sampler = { name = \"heun\", steps = 3 }\n",
    ];
    for (i, keys) in variants.iter().enumerate() {
        let body = format!("{RESUMABLE}\n[train.posthoc_ema]\nevery = 20\n\n[[variants]]\nlabel = \"v\"\n{keys}");
        let tmp = tempfile::tempdir().unwrap();
        let exp = write(tmp.path(), "formulation.toml", &body);
        let (clean, killed) = (tmp.path().join("clean"), tmp.path().join("killed"));
        let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &clean);
        assert!(out.status.success(), "{i}: {}\n{}", text(&out.stdout), text(&out.stderr));
        let mut child = bin()
            .args(["run", exp.to_str().unwrap(), "--device", "cpu", "--results"])
            .arg(&killed)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the first checkpoint", Duration::from_secs(120), || {
            killed.join("runs").exists() && run_dir(&killed).join("checkpoints/step-00000010.json").exists()
        });
        child.kill().unwrap();
        child.wait().unwrap();
        let k = run_dir(&killed);
        assert!(!std::fs::read_to_string(k.join("status.json")).unwrap_or_default().contains("\"done\""));
        let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &killed);
        assert!(out.status.success(), "{i}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("resuming from the checkpoint at step"), "{i}: {}", text(&out.stdout));
        let c = run_dir(&clean);
        assert_eq!(c.file_name(), k.file_name(), "the same run");
        let snapshots = [20, 40, 60].map(|s| format!("ema_snapshots/step-{s:08}.safetensors"));
        for f in ["model.safetensors", "ema.safetensors", "samples.png"].iter().map(|s| s.to_string()).chain(snapshots)
        {
            assert_eq!(std::fs::read(k.join(&f)).unwrap(), std::fs::read(c.join(&f)).unwrap(), "{i}: {f} differs");
        }
        assert_eq!(logged_losses(&k), logged_losses(&c));
        // σ_rel 0.10 is the second stored profile: reconstructed at step 60 it is that snapshot.
        let loaded = ddpm::weights::load_posthoc(&k, 0.10, None, tch::Device::Cpu).unwrap();
        let stored: std::collections::HashMap<String, tch::Tensor> =
            tch::Tensor::read_safetensors(k.join("ema_snapshots/step-00000060.safetensors"))
                .unwrap()
                .into_iter()
                .collect();
        for (name, var) in loaded.vs.variables() {
            let d = (&var - &stored[&format!("p1.{name}")]).abs().max().double_value(&[]);
            assert!(d < 1e-6, "{i}: {name}: {d}");
        }
        // A step without a snapshot is refused, naming the steps there are.
        let err = ddpm::weights::load_posthoc(&k, 0.10, Some(30), tch::Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("no post-hoc EMA snapshot at step 30") && err.contains("[20, 40, 60]"), "{err}");
    }
}

/// (step, loss) of every line of a run's metrics.jsonl.
fn logged_losses(d: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(d.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

/// A corrupt latest checkpoint is reported, and the run resumes from the one before it, still ending
/// with the weights of an uninterrupted run.
#[test]
fn a_corrupt_checkpoint_falls_back_to_the_previous_one() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(tmp.path(), "resume.toml", RESUMABLE);
    let results = tmp.path().join("r");
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = run_dir(&results);
    let reference = std::fs::read(dir.join("model.safetensors")).unwrap();
    // Pretend the run died after its last checkpoint, whose tensors then lost a bit.
    std::fs::remove_file(dir.join("status.json")).unwrap();
    let ckpt = dir.join("checkpoints/step-00000060.safetensors");
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&ckpt, bytes).unwrap();
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("checkpoint at step 60 is corrupt") && stdout.contains("checksum mismatch"), "{stdout}");
    assert!(stdout.contains("resuming from the checkpoint at step 50"), "{stdout}");
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), reference);
}

/// Two runners started on the same experiment at once: each run is trained exactly once.
#[test]
fn two_runners_never_train_the_same_run_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let body = RESUMABLE.replace("steps = 60", "steps = 30") + "[grid]\nseed = [1, 2, 3]\n";
    let exp = write(tmp.path(), "two.toml", &body);
    let results = tmp.path().join("r");
    let spawn = || bin().args(["run", exp.to_str().unwrap(), "--device", "cpu", "--results"]).arg(&results).output();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    assert!(a.status.success() && b.status.success(), "{}\n{}", text(&a.stderr), text(&b.stderr));
    for dir in std::fs::read_dir(results.join("runs")).unwrap() {
        let dir = dir.unwrap().path();
        let attempts = std::fs::read_to_string(dir.join("attempts.jsonl")).unwrap();
        assert_eq!(attempts.lines().count(), 1, "{}: {attempts}", dir.display());
        let status: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("status.json")).unwrap()).unwrap();
        assert_eq!(status["state"], "done");
    }
    let trained = |o: &Output| text(&o.stdout).lines().filter(|l| l.starts_with("run  ")).count();
    assert!(trained(&a) + trained(&b) >= 3, "every run was started by one of them");
}

/// `ddpm plan`, `show` and `status` work on every experiment file of the repository.
#[test]
fn commands_work_on_every_experiment_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in &files {
        for cmd in ["plan", "show", "status"] {
            let out = ddpm(&[cmd, f.to_str().unwrap()], &tmp.path().join("r"));
            assert!(out.status.success(), "{cmd} {}: {}", f.display(), text(&out.stderr));
        }
        let out = ddpm(&["status", f.to_str().unwrap()], &tmp.path().join("r"));
        assert!(text(&out.stdout).contains("new"), "{}", text(&out.stdout));
    }
    // `ddpm plan <folder>`: one line per file, none failing.
    let out = ddpm(&["plan", dir.to_str().unwrap()], &tmp.path().join("r"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(table.lines().any(|l| l.trim_start().starts_with(name) && !l.contains("error")), "{name}: {table}");
    }
    assert!(table.lines().any(|l| l.contains("samplers.toml") && l.split_whitespace().nth(1) == Some("11")), "{table}");
}

/// A loss that stops being finite fails the run with the step and the last finite loss; the summary
/// lists the error and the log, the other runs still run, and the exit code is non-zero.
#[test]
fn a_diverging_run_fails_and_the_others_still_run() {
    let tmp = tempfile::tempdir().unwrap();
    let body = RESUMABLE.replace("steps = 60", "steps = 20") + "[grid]\n\"train.lr\" = [1e12, 1e-3]\n";
    let exp = write(tmp.path(), "nan.toml", &body);
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &tmp.path().join("r"));
    assert!(!out.status.success(), "a failed run makes the exit code non-zero");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("FAILED") && stdout.contains("training loss is") && stdout.contains("last finite loss"),
        "{stdout}"
    );
    assert!(stdout.contains("log: ") && stdout.contains("log.txt"), "{stdout}");
    assert!(stdout.lines().any(|l| l.contains("lr=0.001") && l.contains("trained")), "{stdout}");
}

/// `train.channels_last` and `train.precision = "bf16"` train (on the CPU here, where autocast to
/// bfloat16 also exists), save weights and checkpoints that load, and end near the float32 run:
/// channels-last changes the memory order and with it the convolution kernels' summation order (losses
/// within 1% after 20 steps; 5e-4 apart at step 15 when this was written), bf16 the arithmetic.
#[test]
fn channels_last_and_bf16_runs_train_and_stay_near_float32() {
    let tmp = tempfile::tempdir().unwrap();
    let body = RESUMABLE.replace("steps = 60", "steps = 20")
        + "[[variants]]\nlabel = \"fp32\"\n[[variants]]\nlabel = \"nhwc\"\ntrain = { channels_last = true }\n\
           [[variants]]\nlabel = \"bf16\"\ntrain = { precision = \"bf16\" }\n";
    let exp = write(tmp.path(), "precision.toml", &body);
    let results = tmp.path().join("r");
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let losses: std::collections::BTreeMap<String, Vec<(u64, f64)>> = plan(&exp, &results, &[])
        .into_iter()
        .map(|(label, hash)| (label, logged_losses(&results.join("runs").join(hash))))
        .collect();
    let (fp32, nhwc, bf16) = (&losses["fp32"], &losses["nhwc"], &losses["bf16"]);
    assert_eq!(fp32.len(), 4);
    for ((s, a), ((_, b), (_, c))) in fp32.iter().zip(nhwc.iter().zip(bf16)) {
        assert!((a - b).abs() <= 1e-2 * a.abs(), "step {s}: channels-last {b} vs {a}");
        assert!((a - c).abs() <= 0.1 * a.abs() && a != c, "step {s}: bf16 {c} vs {a}");
    }
}

/// Runs that differ only in `[eval]` (here the sampler) share one training: `plan` says so, `run`
/// trains once and adds one evaluation per sampler, a second `run` does nothing, and a new sampler later
/// only adds its evaluation. The analysis plots FID against the sampler's steps and time.
#[test]
fn evaluation_only_variations_share_one_training() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("r");
    let samplers = [
        r#"{ name = "ddpm", steps = 6 }"#,
        r#"{ name = "ddim", steps = 3, eta = 0.0 }"#,
        r#"{ name = "ddim", steps = 3, eta = 1.0 }"#,
    ];
    let body = |n: usize| {
        RESUMABLE.replace("steps = 60", "steps = 10")
            + "[eval]\nfid = true\nbpd = false\nnum_samples = 4\nbatch_size = 4\nreference_images = 4\nkid_subset_size = 2\n"
            + &format!("[grid]\n\"eval.sampler\" = [{}]\n", samplers[..n].join(", "))
    };
    let exp = write(tmp.path(), "samplers.toml", &body(2));
    let run = |exp: &Path| {
        let out = bin()
            .args(["run", exp.to_str().unwrap(), "--device", "cpu", "--results"])
            .arg(&results)
            .env("DDPM_EVAL__FID", "true")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    };
    let out = ddpm(&["plan", exp.to_str().unwrap()], &results);
    let plan = text(&out.stdout);
    assert!(plan.contains("2 run(s), 1 training"), "{plan}");

    let first = run(&exp);
    assert_eq!(first.lines().filter(|l| l.starts_with("run ")).count(), 1, "{first}");
    assert!(first.contains("(+1 evaluation)"), "{first}");
    assert!(first.lines().any(|l| l.contains("sampler=ddim") && l.contains("evaluated")), "{first}");
    let dirs: Vec<_> = std::fs::read_dir(results.join("runs")).unwrap().collect();
    assert_eq!(dirs.len(), 1, "one run directory for both runs");
    let dir = run_dir(&results);
    let evaluations = |dir: &Path| -> Vec<serde_json::Value> {
        std::fs::read_dir(dir.join("eval"))
            .unwrap()
            .map(|e| {
                serde_json::from_str(&std::fs::read_to_string(e.unwrap().path().join("metrics.json")).unwrap()).unwrap()
            })
            .collect()
    };
    let mut nfes: Vec<u64> = evaluations(&dir).iter().map(|r| r["model_evaluations"].as_u64().unwrap()).collect();
    nfes.sort();
    assert_eq!(nfes, vec![3, 6]);
    assert!(evaluations(&dir)
        .iter()
        .all(|r| r["metrics"]["fid"].as_f64().unwrap().is_finite()
            && r["metrics"]["sample_seconds"].as_f64().unwrap() > 0.0));

    let again = run(&exp);
    assert!(!again.lines().any(|l| l.starts_with("run ") || l.starts_with("eval ")), "{again}");

    // A third sampler later: its evaluation only, no training.
    let exp3 = write(tmp.path(), "samplers.toml", &body(3));
    let third = run(&exp3);
    assert!(third.lines().any(|l| l.starts_with("eval ")), "{third}");
    assert_eq!(evaluations(&dir).len(), 3);
    let attempts = std::fs::read_to_string(dir.join("attempts.jsonl")).unwrap();
    assert_eq!(attempts.lines().count(), 1, "trained once: {attempts}");
    // The analysis of a results folder other than `results/` goes to `<results>/analysis`.
    let analysis = results.join("analysis/samplers");
    let analyzed = ddpm(&["analyze", exp3.to_str().unwrap()], &results);
    assert!(analyzed.status.success(), "{}", text(&analyzed.stderr));
    for f in ["fid_vs_steps.png", "fid_vs_time.svg", "runs.csv"] {
        assert!(analysis.join(f).exists(), "{f}: {:?}", std::fs::read_dir(&analysis).map(|d| d.count()));
    }
    let runs = std::fs::read_to_string(analysis.join("runs.csv")).unwrap();
    assert_eq!(runs.lines().count(), 4, "{runs}");
}

// --- Faults and hostile input (the fault battery run against 4c919ca) ---------------------------

fn status_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("status.json")).unwrap()).unwrap()
}

/// The pid of a run's own process, from its lock (`pid N on host`).
fn run_pid(dir: &Path) -> i32 {
    let holder = std::fs::read_to_string(dir.join("lock")).unwrap();
    holder.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `ddpm run EXP --device cpu --results RESULTS` in the background, its summary on a pipe.
fn spawn_run(exp: &Path, results: &Path) -> std::process::Child {
    bin()
        .args(["run", exp.to_str().unwrap(), "--device", "cpu", "--results"])
        .arg(results)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Two runs, the second never started when the first is stopped.
fn two_runs() -> String {
    RESUMABLE.replace("steps = 60", "steps = 400")
        + "[[variants]]\nlabel = \"first\"\nseed = 1\n[[variants]]\nlabel = \"second\"\nseed = 2\n"
}

/// Case 1: SIGTERM to `ddpm run` (a scheduler, `systemctl stop`) reaches its run's process, which
/// checkpoints and records `stopped`; the runner starts nothing more, prints the summary, exits non-zero
/// and leaves no process behind; the next `run` resumes.
#[test]
fn sigterm_to_the_runner_stops_its_runs_at_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(tmp.path(), "term.toml", &two_runs());
    let results = tmp.path().join("r");
    let child = spawn_run(&exp, &results);
    let runner = child.id() as i32;
    let first =
        || std::fs::read_dir(results.join("runs")).ok()?.flatten().map(|e| e.path()).find(|d| d.join("lock").exists());
    wait_for("the first run's first logged window", Duration::from_secs(120), || {
        first().is_some_and(|d| std::fs::read_to_string(d.join("metrics.jsonl")).is_ok_and(|t| !t.is_empty()))
    });
    let dir = first().unwrap();
    let pid = run_pid(&dir);
    // SAFETY: kill(2) to the runner this test started.
    assert_eq!(unsafe { libc::kill(runner, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("summary of"), "the summary is printed: {stdout}");
    assert!(stdout.contains("stopped first at step"), "{stdout}");
    assert!(stdout.contains("not started: the runner got SIGTERM"), "{stdout}");
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "the run's process is gone, not left under PID 1");
    let status = status_json(&dir);
    assert_eq!(status["state"], "stopped", "{status}");
    let step = status["step"].as_u64().unwrap() as usize;
    assert!(step > 0 && dir.join(format!("checkpoints/step-{step:08}.json")).exists(), "a checkpoint at the stop");
    let plan_out = text(&ddpm(&["plan", exp.to_str().unwrap()], &results).stdout);
    assert!(plan_out.contains(&format!("partial (resumes at step {step})")), "{plan_out}");
}

/// Case 2: a run's process killed by a signal is reported as interrupted by that signal, resumable
/// from its checkpoint, not as a failure "without recording an outcome".
#[test]
fn a_run_killed_by_a_signal_is_reported_as_interrupted_and_resumable() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(tmp.path(), "kill.toml", &RESUMABLE.replace("steps = 60", "steps = 400"));
    let results = tmp.path().join("r");
    let child = spawn_run(&exp, &results);
    wait_for("the first checkpoint", Duration::from_secs(120), || {
        results.join("runs").exists() && run_dir(&results).join("checkpoints/step-00000010.json").exists()
    });
    // SAFETY: kill(2) with a pid read from the lock of a process this test started.
    assert_eq!(unsafe { libc::kill(run_pid(&run_dir(&results)), libc::SIGKILL) }, 0);
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("interrupted by signal 9 (SIGKILL); resumable from step"), "{stdout}");
    assert!(!stdout.contains("without recording an outcome"), "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
}

/// Case 3: the resume record and `plan` name the checkpoint that is loaded, not the newest file.
#[test]
fn the_resume_record_names_the_checkpoint_that_was_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(tmp.path(), "record.toml", &RESUMABLE.replace("steps = 60", "steps = 40"));
    let results = tmp.path().join("r");
    assert!(ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results).status.success());
    let dir = run_dir(&results);
    let corrupt = |step: usize| {
        let path = dir.join(format!("checkpoints/step-{step:08}.safetensors"));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
    };
    let last_resumed = || {
        let attempts = std::fs::read_to_string(dir.join("attempts.jsonl")).unwrap();
        let last: serde_json::Value = serde_json::from_str(attempts.lines().last().unwrap()).unwrap();
        last["resumed_from"].clone()
    };
    // The last two checkpoints are kept (30, 40); the newest is corrupt.
    std::fs::remove_file(dir.join("status.json")).unwrap();
    corrupt(40);
    let plan_out = text(&ddpm(&["plan", exp.to_str().unwrap()], &results).stdout);
    assert!(plan_out.contains("partial (resumes at step 30; corrupt checkpoint(s) at step 40 skipped)"), "{plan_out}");
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
    assert!(text(&out.stdout).contains("resuming from the checkpoint at step 30"), "{}", text(&out.stdout));
    assert_eq!(last_resumed(), 30);
    // Both corrupt (the rerun rewrote 40; corrupt it and 30 again): it starts over and records so.
    std::fs::remove_file(dir.join("status.json")).unwrap();
    corrupt(30);
    corrupt(40);
    let plan_out = text(&ddpm(&["plan", exp.to_str().unwrap()], &results).stdout);
    assert!(
        plan_out.contains(
            "partial (restarts at step 0: no valid checkpoint; corrupt checkpoint(s) at step 40, 30 skipped)"
        ),
        "{plan_out}"
    );
    assert!(ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results).status.success());
    assert_eq!(last_resumed(), serde_json::Value::Null);
}

/// Case 4: a `DDPM_` variable that names no run key is an error, as `--set` is; the harness's own
/// variables are not.
#[test]
fn a_misspelled_environment_override_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(tmp.path(), "env.toml", RESUMABLE);
    let out = bin()
        .args(["plan", exp.to_str().unwrap(), "--results"])
        .arg(tmp.path())
        .env("DDPM_TRIAN__STEPS", "20")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("DDPM_TRIAN__STEPS") && err.contains("`trian.steps` is not a run key"), "{err}");
    assert!(err.contains("DDPM_RESULTS_DIR"), "the allowed harness variables are named: {err}");
    let out = bin()
        .args(["plan", exp.to_str().unwrap(), "--results"])
        .arg(tmp.path())
        .env("DDPM_TRAIN__STEPS", "20")
        .env("DDPM_CIFAR10", "/nowhere")
        .env("DDPM_SLURM_PARTITION", "gpu")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

// --- Faults and hostile input, second pass (issue 40) --------------------------------------------

/// Item 1: SIGTERM during the evaluation of a finished training (here the bound, 1500 test images ×
/// 50 timesteps) stops it within seconds: `stopped`, the trained weights kept, `plan` saying what is
/// left; the rerun evaluates without training again.
#[test]
fn sigterm_during_the_evaluation_stops_it_and_the_rerun_only_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let body =
        RESUMABLE.replace("steps = 60", "steps = 20") + "[eval]\nbpd = true\nbpd_images = 1500\nbatch_size = 32\n";
    let exp = write(tmp.path(), "evalstop.toml", &body);
    let results = tmp.path().join("r");
    let child = bin()
        .args(["run", exp.to_str().unwrap(), "--device", "cpu", "--results"])
        .arg(&results)
        .env("DDPM_EVAL__BPD", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the training's end", Duration::from_secs(120), || {
        results.join("runs").exists()
            && std::fs::read_to_string(run_dir(&results).join("status.json")).is_ok_and(|t| t.contains("\"done\""))
    });
    let dir = run_dir(&results);
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    let (out, took) = sigterm_soon(&dir, child);
    let stdout = text(&out.stdout);
    assert!(took < Duration::from_secs(10), "the evaluation went on for {took:?}: {stdout}");
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("during its evaluation; the next run evaluates it"), "{stdout}");
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap_or_default();
    assert!(log.contains("SIGTERM during the bound: stopped; the next run redoes the bound"), "{log}");
    let status = status_json(&dir);
    assert_eq!(status["state"], "stopped", "{status}");
    assert!(status["metrics"].get("bpd").is_none(), "{status}");
    let plan_out = text(&ddpm(&["plan", exp.to_str().unwrap()], &results).stdout);
    assert!(plan_out.contains("stopped (trained; evaluation left)"), "{plan_out}");

    let out = bin()
        .args(["run", exp.to_str().unwrap(), "--device", "cpu", "--results"])
        .arg(&results)
        .env("DDPM_EVAL__BPD", "true")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("eval  evalstop") || stdout.contains("eval evalstop"), "an evaluation only: {stdout}");
    assert!(!stdout.contains("resuming from the checkpoint"), "{stdout}");
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), weights, "the trained weights were kept");
    let status = status_json(&dir);
    assert_eq!(status["state"], "done", "{status}");
    assert!(status["metrics"]["bpd"].as_f64().is_some_and(|b| b > 0.0), "{status}");
}

/// Half a second into the phase after training, SIGTERM to the run's process (the lock's holder);
/// the runner's output and how long after the signal it ended.
fn sigterm_soon(dir: &Path, child: std::process::Child) -> (Output, Duration) {
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) with a pid read from the lock of a process this test started.
    assert_eq!(unsafe { libc::kill(run_pid(dir), libc::SIGTERM) }, 0);
    let signalled = Instant::now();
    let out = child.wait_with_output().unwrap();
    (out, signalled.elapsed())
}

/// Item 1, the final samples: SIGTERM while a finished training draws its sample grid (2000 images ×
/// 50 DDPM steps) stops within seconds, `stopped` at the last step's checkpoint; the rerun resumes
/// there, trains no step, and draws the grid.
#[test]
fn sigterm_during_the_final_samples_stops_and_the_rerun_trains_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let body = RESUMABLE.replace("steps = 60", "steps = 20").replace("num_samples = 4", "num_samples = 2000");
    let exp = write(tmp.path(), "samplestop.toml", &body);
    let results = tmp.path().join("r");
    let child = spawn_run(&exp, &results);
    wait_for("the final weights", Duration::from_secs(120), || {
        results.join("runs").exists() && run_dir(&results).join("model.safetensors").exists()
    });
    let dir = run_dir(&results);
    let (out, took) = sigterm_soon(&dir, child);
    let stdout = text(&out.stdout);
    assert!(took < Duration::from_secs(10), "the sampling went on for {took:?}: {stdout}");
    assert!(!out.status.success() && stdout.contains("stopped samplestop at step 20"), "{stdout}");
    let log = std::fs::read_to_string(dir.join("log.txt")).unwrap_or_default();
    assert!(log.contains("SIGTERM during the final samples: stopped"), "{log}");
    assert!(!dir.join("samples.png").exists(), "no grid of a sampling cut short");
    assert_eq!(status_json(&dir)["state"], "stopped");
    let losses = logged_losses(&dir);
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("resuming from the checkpoint at step 20"), "{stdout}");
    assert_eq!(logged_losses(&dir), losses, "no training step again");
    assert!(dir.join("samples.png").exists());
    assert_eq!(status_json(&dir)["state"], "done");
}

/// Item 2: an evaluation sampler with more steps than the chain has (it was cut to T without a word,
/// and `show` printed the steps asked for) is resolved at load to the steps it takes, min(steps, T),
/// the documented rule: `show` prints them, and the evaluation spec says them.
#[test]
fn sampler_steps_above_timesteps_resolve_to_what_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(
        tmp.path(),
        "steps.toml",
        &(RESUMABLE.to_string() + "[eval]\nsampler = { name = \"ddim\", steps = 5000 }\n"),
    );
    let out = ddpm(&["show", exp.to_str().unwrap()], tmp.path());
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!shown.contains("5000"), "show prints the steps asked for: {shown}");
    assert!(shown.lines().any(|l| l.trim_start().starts_with("eval.sampler.steps = 50 ")), "T = 50: {shown}");
    assert!(ddpm(&["plan", exp.to_str().unwrap()], tmp.path()).status.success());
}

/// Item 3: two labels whose link names collide (`a/b` and `a_b` both link as `a_b`) are refused,
/// both named; nothing is linked.
#[test]
fn labels_whose_links_collide_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let body = format!("{RESUMABLE}[[variants]]\nlabel = \"a/b\"\nseed = 1\n[[variants]]\nlabel = \"a_b\"\nseed = 2\n");
    let exp = write(tmp.path(), "links.toml", &body);
    let results = tmp.path().join("r");
    for command in ["plan", "run"] {
        let out = ddpm(&[command, exp.to_str().unwrap()], &results);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{command}");
        assert!(err.contains("labels `a/b` and `a_b` both make the link name `a_b`"), "{err}");
    }
    assert!(!results.join("experiments").exists() && !results.join("runs").exists());
}

/// Item 4: after SIGKILL to a run's process, `status.json` said `running` with a dead pid; the
/// runner's closing analysis and, where the runner died too, `plan` now rewrite it as `interrupted`
/// with the step the next run resumes at, for every other reader.
/// With no valid checkpoint left, `status` shows no loss at step 0 (it showed the dead attempt's).
#[test]
fn a_stale_running_status_is_rewritten_as_interrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(tmp.path(), "stale.toml", &RESUMABLE.replace("steps = 60", "steps = 400"));
    let results = tmp.path().join("r");
    let child = spawn_run(&exp, &results);
    wait_for("the second checkpoint", Duration::from_secs(120), || {
        results.join("runs").exists() && run_dir(&results).join("checkpoints/step-00000020.json").exists()
    });
    let dir = run_dir(&results);
    let pid = run_pid(&dir);
    // SAFETY: kill(2) with a pid read from the lock of a process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    child.wait_with_output().unwrap();
    // The runner outlives its run: the analysis it ends with settles the status already.
    let settled = status_json(&dir);
    assert_eq!(settled["state"], "interrupted", "the runner's analysis settles it: {settled}");
    // A runner killed with its run (`kill -9` of the whole job, a node lost) leaves `running`
    // with the dead pid: written back here as it would be left.
    let mut before = settled.clone();
    before["state"] = "running".into();
    before["error"] = serde_json::Value::Null;
    std::fs::write(dir.join("status.json"), before.to_string()).unwrap();
    let out = ddpm(&["plan", exp.to_str().unwrap()], &results);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = status_json(&dir);
    assert_eq!(after["state"], "interrupted", "{after}");
    let error = after["error"].as_str().unwrap_or_default();
    assert!(error.contains(&format!("process {pid}")) && error.contains("the next run resumes at step"), "{after}");
    assert!(text(&out.stdout).contains("partial (resumes at step"), "{}", text(&out.stdout));
    // Every checkpoint corrupt: the next run restarts at 0, and `status` shows no loss there.
    for entry in std::fs::read_dir(dir.join("checkpoints")).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "safetensors") {
            let mut bytes = std::fs::read(entry.path()).unwrap();
            bytes[100] ^= 0x01;
            std::fs::write(entry.path(), bytes).unwrap();
        }
    }
    assert!(after["last_loss"].as_f64().is_some(), "the dead attempt's loss is on record: {after}");
    let stale_loss = format!("{:.5}", after["last_loss"].as_f64().unwrap());
    let status = text(&ddpm(&["status", exp.to_str().unwrap()], &results).stdout);
    let row = status.lines().find(|l| l.trim_start().starts_with("stale ")).unwrap_or_default().to_string();
    assert!(row.contains("restarts at step 0") && row.contains("0/400"), "{status}");
    assert!(!row.contains(&stale_loss), "the dead attempt's loss {stale_loss} is not shown at step 0: {status}");
    // A rerun takes the run over and finishes it.
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(status_json(&dir)["state"], "done");
}

/// Case 5: labels `.`, `..` and the empty string are refused at validation, naming the file, key
/// and value; nothing is linked.
#[test]
fn labels_that_cannot_name_a_folder_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for label in [".", "..", ""] {
        let body =
            format!("{RESUMABLE}[[variants]]\nlabel = {label:?}\nseed = 1\n[[variants]]\nlabel = \"b\"\nseed = 2\n");
        let exp = write(tmp.path(), "labels.toml", &body);
        let results = tmp.path().join("r");
        for command in ["plan", "run"] {
            let out = ddpm(&[command, exp.to_str().unwrap()], &results);
            let err = text(&out.stderr);
            assert!(!out.status.success(), "{label:?} {command}");
            assert!(err.contains("labels.toml") && err.contains(&format!("key `label` = {label:?}")), "{err}");
        }
        assert!(!results.join("experiments").exists(), "nothing linked, no stray .link file");
    }
}

/// Runs `ddpm ARGS --results DIR` with DIR mounted read-only in a private mount namespace (as a
/// read-only share or a full disk would be); None where this machine cannot make one.
fn ddpm_read_only(args: &[&str], results: &Path) -> Option<Output> {
    let probe = Command::new("unshare").args(["-rm", "true"]).output().ok()?;
    if !probe.status.success() {
        return None;
    }
    let r = results.display();
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "mount --bind '{r}' '{r}' && mount -o remount,ro,bind '{r}' && exec '{}' {} --results '{r}'",
        env!("CARGO_BIN_EXE_ddpm"),
        quoted.join(" ")
    );
    // bin()'s environment, with `unshare` as the program.
    let template = bin();
    let mut c = Command::new("unshare");
    c.args(["-rm", "sh", "-c", &script]);
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    Some(c.output().unwrap())
}

/// Case 6: read-only commands and a `run` with nothing to do work on a read-only results folder; a
/// run with work to do fails with an error that names the path.
#[test]
fn a_read_only_results_folder_is_read_and_its_errors_name_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(tmp.path(), "ro.toml", &RESUMABLE.replace("steps = 60", "steps = 20"));
    let results = tmp.path().join("r");
    assert!(ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results).status.success());
    let e = exp.to_str().unwrap();
    let Some(out) = ddpm_read_only(&["plan", e], &results) else {
        eprintln!("skipped: this machine cannot mount a read-only folder (unshare -rm)");
        return;
    };
    assert!(out.status.success(), "plan: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("done"));
    let out = ddpm_read_only(&["status", e], &results).unwrap();
    assert!(out.status.success(), "status: {}", text(&out.stderr));
    let out = ddpm_read_only(&["run", e, "--device", "cpu"], &results).unwrap();
    assert!(out.status.success(), "a finished experiment is done: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("already done"));
    let out = ddpm_read_only(&["run", e, "--device", "cpu", "--set", "seed=9"], &results).unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&results.display().to_string()) && err.contains("Read-only file system"), "{err}");
}

/// Case 7: a run's images/s and wall time add up over its attempts: after a resume at the last step
/// they are the first attempt's, not those of an attempt that trained nothing.
#[test]
fn throughput_and_wall_time_add_up_over_attempts() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(tmp.path(), "rate.toml", RESUMABLE);
    let results = tmp.path().join("r");
    assert!(ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results).status.success());
    let dir = run_dir(&results);
    let first = status_json(&dir);
    std::fs::remove_file(dir.join("status.json")).unwrap();
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
    assert!(text(&out.stdout).contains("resuming from the checkpoint at step 60"), "{}", text(&out.stdout));
    let again = status_json(&dir);
    let (r1, r2) = (first["images_per_sec"].as_f64().unwrap(), again["images_per_sec"].as_f64().unwrap());
    assert!((r2 / r1 - 1.0).abs() < 0.05, "images/s {r1} then {r2}");
    let (w1, w2) = (first["wall_seconds"].as_f64().unwrap(), again["wall_seconds"].as_f64().unwrap());
    assert!(w2 > 0.9 * w1, "wall seconds {w1} then {w2}: the second attempt adds to the first");
}

/// Also from the battery: a size key out of any dataset's reach is refused with the memory it would
/// take; `ddpm sample --checkpoint 7` names the option that was used.
#[test]
fn sizes_are_bounded_and_checkpoint_errors_name_the_option() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(tmp.path(), "size.toml", &RESUMABLE.replace("steps = 60", "steps = 20"));
    let results = tmp.path().join("r");
    let out = ddpm(&["plan", exp.to_str().unwrap(), "--set", "data.image_size=100000"], &results);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("key `data.image_size` = 100000")
            && err.contains("1 to 1024")
            && err.contains("images would take 10.2 TB"),
        "{err}"
    );
    let out = ddpm(
        &["plan", exp.to_str().unwrap(), "--set", "train.batch_size=70000", "--set", "data.limit=70000"],
        &results,
    );
    let err = text(&out.stderr);
    assert!(err.contains("key `train.batch_size` = 70000: at most 60000"), "{err}");

    assert!(ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results).status.success());
    let out = bin()
        .args(["sample"])
        .arg(run_dir(&results))
        .args(["--checkpoint", "7", "-n", "4", "--device", "cpu", "-o"])
        .arg(tmp.path().join("grid.png"))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--checkpoint 7: no checkpoint at step 7") && err.contains("available are [20, 10]"), "{err}");
    assert!(!err.contains("eval.checkpoint") && !err.contains("No such file"), "{err}");
}

/// Every run whose device is CUDA gets the recipe's `full` profile unless `--profile` says otherwise,
/// whether CUDA comes from `--device cuda`, `--device cuda:1`, `--devices` or a Slurm `--gres` that
/// asks for a GPU, and the printed reason names the device; on a CPU with native bf16 (here set by
/// `DDPM_CPU_NATIVE_BF16`, so that both branches run on any machine) the profile
/// `experiment.cpu_bf16_profile` names; on any other CPU, and on Slurm CPU nodes (whose CPU is not
/// known here), the file's default. `--profile default` is the default wherever it runs. Checked
/// with `--dry-run`, which resolves the experiment without needing the device.
#[test]
fn a_cuda_device_gets_the_full_profile_and_a_bf16_cpu_its_own_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let main = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/cosine_vs_linear.toml");
    let main = main.to_str().unwrap();
    let results = tmp.path().join("r");
    let dry = |extra: &[&str], bf16: &str| {
        let mut args = vec!["run", main, "--dry-run"];
        args.extend_from_slice(extra);
        let mut cmd = bin();
        cmd.current_dir(tmp.path()).args(&args).arg("--results").arg(&results).env("DDPM_CPU_NATIVE_BF16", bf16);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{extra:?}: {}", text(&out.stderr));
        let out = text(&out.stdout);
        let runs = out.lines().filter(|l| l.contains("schedule=")).count();
        (out.lines().find(|l| l.starts_with("profile:")).unwrap_or_default().to_string(), runs, out)
    };
    for bf16 in ["0", "1"] {
        for (extra, named) in [
            (vec!["--device", "cuda"], "--device cuda"),
            (vec!["--device", "cuda:1"], "--device cuda:1"),
            (vec!["--devices", "0,1"], "--devices 0,1"),
            (vec!["--launcher", "slurm", "--gres", "gpu:1"], "--gres=gpu:1"),
            (vec!["--launcher", "slurm", "--device", "cuda"], "--device cuda on the Slurm tasks"),
        ] {
            let (line, runs, out) = dry(&extra, bf16);
            assert!(line.contains("`full`") && line.contains(named), "{extra:?}: {out}");
            // Its 3 seeds × 2 schedules, not the default's 2 × 2.
            assert_eq!(runs, 6, "{extra:?}: {out}");
        }
    }
    for (extra, named, bf16) in [
        (vec!["--device", "cpu"], "--device cpu", "0"),
        (vec!["--launcher", "slurm"], "no GPU (no --gres)", "0"),
        (vec!["--launcher", "slurm"], "the Slurm nodes' CPUs are not known here", "1"),
        (vec!["--launcher", "slurm", "--gres", "gpu:1", "--device", "cpu"], "--device cpu on the Slurm tasks", "1"),
    ] {
        let (line, runs, out) = dry(&extra, bf16);
        assert!(line.contains("CPU-sized default") && line.contains(named), "{extra:?} bf16 {bf16}: {out}");
        assert_eq!(runs, 4, "{extra:?}: {out}");
    }
    let (line, runs, out) = dry(&["--device", "cpu"], "0");
    assert!(line.contains("DDPM_CPU_NATIVE_BF16=0, so not `likelihood_bf16`") && runs == 4, "{out}");
    let (line, runs, out) = dry(&["--device", "cpu"], "1");
    assert!(line.contains("`likelihood_bf16`") && line.contains("DDPM_CPU_NATIVE_BF16=1"), "{out}");
    assert_eq!(runs, 10, "five seeds × two schedules: {out}");
    for bf16 in ["0", "1"] {
        let (line, runs, out) = dry(&["--device", "cuda", "--profile", "full"], bf16);
        assert!(line.is_empty() && runs == 6, "an explicit --profile is not second-guessed: {out}");
        let (line, runs, out) = dry(&["--device", "cpu", "--profile", "default"], bf16);
        assert!(line.is_empty() && runs == 4, "--profile default is the file's default: {out}");
    }
    // `plan` lists what `run` would run here (`--device auto`): on the header line for a file, beside
    // the description in a folder's table. (On a machine with CUDA that is `full`, checked above.)
    if !tch::Cuda::is_available() {
        let plan = |args: &[&str], bf16: &str| {
            let out =
                bin().args(args).arg("--results").arg(&results).env("DDPM_CPU_NATIVE_BF16", bf16).output().unwrap();
            assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
            text(&out.stdout)
        };
        let runs = |out: &str| out.lines().filter(|l| l.contains("schedule=")).count();
        let out = plan(&["plan", main], "1");
        let head = out.lines().next().unwrap_or_default();
        assert!(
            head.contains("10 run(s), profile `likelihood_bf16`") && head.contains("DDPM_CPU_NATIVE_BF16=1"),
            "{out}"
        );
        assert_eq!(runs(&out), 10, "{out}");
        let out = plan(&["plan", main], "0");
        assert!(out.starts_with("experiment `cosine_vs_linear`: 4 run(s)\n") && runs(&out) == 4, "{out}");
        let out = plan(&["plan", main, "--profile", "default"], "1");
        assert!(out.starts_with("experiment `cosine_vs_linear`: 4 run(s)\n") && runs(&out) == 4, "{out}");
        let folder = Path::new(main).parent().unwrap().to_str().unwrap();
        let row = |bf16: &str| {
            let out = plan(&["plan", folder], bf16);
            out.lines().find(|l| l.trim_start().starts_with("cosine_vs_linear.toml")).unwrap_or_default().to_string()
        };
        let (bf16, not) = (row("1"), row("0"));
        assert!(
            bf16.split_whitespace().nth(1) == Some("10") && bf16.contains("[profile `likelihood_bf16` here]"),
            "{bf16}"
        );
        assert!(not.split_whitespace().nth(1) == Some("4") && !not.contains("[profile"), "{not}");
    }
    let out = bin()
        .args(["run", main, "--dry-run", "--device", "cpu", "--results"])
        .arg(&results)
        .env("DDPM_CPU_NATIVE_BF16", "yes")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("DDPM_CPU_NATIVE_BF16=\"yes\": allowed values are 1 and 0"),
        "{}",
        text(&out.stderr)
    );
}

/// `[experiment] cpu_bf16_profile` must name one of the file's profiles, profiles may not set it, and
/// `default` is no profile's name: each an error naming the file and the key.
#[test]
fn cpu_bf16_profile_and_the_reserved_default_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let check = |body: &str, expect: &[&str]| {
        let exp = write(tmp.path(), "b.toml", body);
        let out = ddpm(&["plan", exp.to_str().unwrap(), "--profile", "slow"], &tmp.path().join("r"));
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{body}");
        for e in expect {
            assert!(err.contains(e), "{body}: expected {e:?} in {err}");
        }
    };
    check(
        "[experiment]\ncpu_bf16_profile = \"fast\"\n[train]\nsteps = 2\n[profiles.slow]\ntrain.steps = 4\n",
        &["b.toml", "key `experiment.cpu_bf16_profile` = \"fast\" names no profile", "profiles in this file: slow"],
    );
    check(
        "[train]\nsteps = 2\n[profiles.slow]\nexperiment.cpu_bf16_profile = \"slow\"\n",
        &["b.toml", "a profile may set only `experiment.seeds`", "cpu_bf16_profile"],
    );
    check(
        "[train]\nsteps = 2\n[profiles.default]\ntrain.steps = 4\n[profiles.slow]\ntrain.steps = 3\n",
        &["b.toml", "[profiles.default]", "reserved"],
    );
}

/// `--devices 0,0` is refused before anything runs, pointing to `--runs-per-device`.
#[test]
fn a_device_listed_twice_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let exp =
        write(tmp.path(), "e.toml", "[data]\nname = \"mnist\"\nimage_size = 16\nlimit = 64\n[train]\nsteps = 2\n");
    let out = ddpm(&["run", exp.to_str().unwrap(), "--devices", "0,0"], &tmp.path().join("r"));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("--devices 0,0") && err.contains("--runs-per-device"), "{err}");
    assert!(!tmp.path().join("r/runs").exists(), "nothing was prepared");
}

/// A run whose checkpoint was written on another device kind does not resume here: the runner reports
/// the refusal, naming `--allow-device-change`; with it the run resumes and the attempt records it.
/// (The other kind is CUDA, written into the checkpoint's record as a GPU run writes it.)
#[test]
fn resuming_on_another_device_kind_is_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write(tmp.path(), "change.toml", RESUMABLE);
    let results = tmp.path().join("r");
    let mut child = bin()
        .args(["run", exp.to_str().unwrap(), "--device", "cpu", "--results"])
        .arg(&results)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first checkpoint", Duration::from_secs(120), || {
        results.join("runs").exists() && run_dir(&results).join("checkpoints/step-00000010.json").exists()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let dir = run_dir(&results);
    let attempts = dir.join("attempts.jsonl");
    // Each checkpoint records the device kind that computed it; here they say CUDA.
    for entry in std::fs::read_dir(dir.join("checkpoints")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let record = std::fs::read_to_string(&path).unwrap();
            assert!(record.contains("\"device\": \"cpu\""), "{record}");
            std::fs::write(&path, record.replace("\"device\": \"cpu\"", "\"device\": \"cuda\"")).unwrap();
        }
    }

    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("written on cuda") && stdout.contains("--allow-device-change"), "{stdout}");
    assert_eq!(status_json(&dir)["state"], "failed");
    assert_eq!(std::fs::read_to_string(&attempts).unwrap().lines().count(), 1, "no attempt was made");

    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu", "--allow-device-change"], &results);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("resuming from the checkpoint at step"), "{}", text(&out.stdout));
    let last: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&attempts).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(last["device_change_allowed"], true, "{last}");
    assert_eq!(status_json(&dir)["state"], "done");
}
