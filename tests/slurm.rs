//! `ddpm run --launcher slurm` against a real one-node Slurm cluster (tests/slurm/cluster.sh: Debian's
//! slurmctld, slurmd and munge, two fake GPUs declared through GRES), started for this test and stopped
//! by pid at its end, also when an assertion fails. Skipped, saying why, where the machine cannot run
//! it (not root, or no Slurm packages and no apt-get); CI runs as root, so there it runs.
//!
//! What it checks: a four-run experiment submitted as one job array with `--gres=gpu:1` ends with every
//! run done, each task having seen its own CUDA_VISIBLE_DEVICES, and with the hashes and metrics of the
//! same experiment run locally, bit for bit; the analysis job runs after the array; submitting again
//! runs nothing twice; a task sent SIGUSR1 (`scancel --signal=USR1 --batch`) writes a checkpoint,
//! requeues itself and ends with the weights and logged losses of an uninterrupted run; `ddpm cancel`
//! cancels; a run of `train.processes = 2` is one `srun` step of two tasks (gloo) and ends with the
//! weights of the same run trained locally by two processes; no daemon or job process is left behind.
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slurm/cluster.sh")
}

/// The cluster; stopped (every daemon by its pid) when dropped.
struct Cluster {
    dir: PathBuf,
    stopped: bool,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let out = Command::new(script()).arg("start").arg(dir).output().unwrap();
        let cluster = Cluster { dir: dir.to_path_buf(), stopped: false };
        assert!(
            out.status.success(),
            "cluster.sh start failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("slurm.conf")
    }

    fn pids(&self) -> Vec<u32> {
        ["munged.pid", "slurmctld.pid", "slurmd.pid"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.join(f)).ok()?.trim().parse().ok())
            .collect()
    }

    fn stop(&mut self) -> Output {
        self.stopped = true;
        Command::new(script()).arg("stop").arg(&self.dir).output().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.stopped {
            let out = self.stop();
            eprintln!("cluster stopped: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

/// A process that exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.split_whitespace().next() != Some("Z")))
        .unwrap_or(false)
}

/// Live processes whose environment carries this cluster's SLURM_CONF (the jobs and their children).
fn job_processes(conf: &Path) -> Vec<u32> {
    let needle = format!("SLURM_CONF={}", conf.display());
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && alive(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|v| v == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

struct Env {
    home: PathBuf,
    conf: PathBuf,
    work: PathBuf,
}

impl Env {
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.work)
            .env("SLURM_CONF", &self.conf)
            .env("HOME", &self.home)
            .env("DDPM_DATA_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("data"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DDPM_RESULTS_DIR");
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("DDPM_") && k != "DDPM_DATA_DIR") {
            c.env_remove(k);
        }
        c
    }

    fn ddpm(&self, args: &[&str]) -> Output {
        let out = self.command(env!("CARGO_BIN_EXE_ddpm")).args(args).output().unwrap();
        assert!(out.status.success(), "ddpm {args:?} failed:\n{}{}", text(&out.stdout), text(&out.stderr));
        out
    }

    fn slurm(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().unwrap();
        assert!(out.status.success(), "{program} {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Run hash → status.json of every run under `results`.
fn statuses(results: &Path) -> std::collections::BTreeMap<String, Value> {
    std::fs::read_dir(results.join("runs"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_str().unwrap().to_string(), json(&p.join("status.json")))
        })
        .collect()
}

/// The state squeue gives `id` (e.g. `12_3` or `13`).
fn state(env: &Env, id: &str) -> String {
    let out = env.slurm("squeue", &["--noheader", "--array", "--states=all", "--format=%i %T"]);
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(i, _)| *i == id)
        .map(|(_, s)| s.trim().to_string())
        .unwrap_or_default()
}

/// Waits until Slurm lists `id` as ended, and returns its final state.
fn wait_until_ended(env: &Env, id: &str, timeout: Duration) -> String {
    let mut last = String::new();
    let ended = ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"];
    wait_for(&format!("job {id} to end"), timeout, || {
        last = state(env, id);
        ended.contains(&last.as_str())
    });
    last
}

const TINY: &str = r#"
[experiment]
name = "tiny_slurm"
seeds = [0, 1]
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
[sample]
num_samples = 4
[eval]
fid = false
bpd = true
bpd_images = 2
[grid]
"diffusion.schedule.name" = ["linear", "cosine"]
"#;

#[test]
fn slurm_job_arrays_requeue_and_match_local_runs() {
    let can = Command::new(script()).arg("can").output().unwrap();
    if !can.status.success() || std::env::var_os("DDPM_SKIP_SLURM_TEST").is_some() {
        eprintln!(
            "SKIPPED: this machine cannot run a Slurm cluster ({})",
            if can.status.success() {
                "DDPM_SKIP_SLURM_TEST is set".into()
            } else {
                text(&can.stdout).trim().to_string()
            }
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(&tmp.path().join("cluster"));
    let env = Env { home: tmp.path().join("home"), conf: cluster.conf(), work: tmp.path().join("work") };
    std::fs::create_dir_all(&env.home).unwrap();
    std::fs::create_dir_all(&env.work).unwrap();
    std::fs::write(env.work.join("tiny.toml"), TINY).unwrap();

    // The same experiment on this machine's CPU, for the comparison.
    env.ddpm(&["run", "tiny.toml", "--device", "cpu", "--results", "local"]);
    let local = statuses(&env.work.join("local"));
    assert_eq!(local.len(), 4);

    // One job array of four tasks, one fake GPU each, and the analysis job after it.
    let out = env.ddpm(&["run", "tiny.toml", "--launcher", "slurm", "--gres", "gpu:1", "--results", "cluster"]);
    let stdout = text(&out.stdout);
    let array = stdout
        .lines()
        .find_map(|l| l.strip_prefix("submitted job array ")?.split(':').next().map(String::from))
        .unwrap_or_else(|| panic!("no array job id in\n{stdout}"));
    let analyze = stdout
        .lines()
        .find_map(|l| l.strip_prefix("submitted analysis job ")?.split(' ').next().map(String::from))
        .unwrap_or_else(|| panic!("no analysis job id in\n{stdout}"));
    let slurm_dir = env.work.join("cluster/experiments/tiny_slurm/slurm");
    let sbatch = std::fs::read_to_string(slurm_dir.join("submit-1.sbatch")).unwrap();
    assert!(sbatch.contains("#SBATCH --array=0-3\n") && sbatch.contains("#SBATCH --gres=gpu:1\n"), "{sbatch}");
    let map = std::fs::read_to_string(slurm_dir.join("submit-1.tsv")).unwrap();
    assert_eq!(map.lines().count(), 5, "{map}");
    // Submitting again while the array is queued or running submits nothing.
    let again = text(&env.ddpm(&["run", "tiny.toml", "--launcher", "slurm", "--results", "cluster"]).stdout);
    assert!(again.contains("nothing to submit"), "{again}");
    assert_eq!(again.matches("already queued as job").count() + again.matches("already done").count(), 4, "{again}");

    let ended = wait_until_ended(&env, &analyze, Duration::from_secs(600));
    let logs = || -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(slurm_dir.join("logs")).unwrap() {
            let p = e.unwrap().path();
            all += &format!("== {}\n{}\n", p.display(), std::fs::read_to_string(&p).unwrap_or_default());
        }
        all
    };
    assert_eq!(ended, "COMPLETED", "the analysis job; logs:\n{}", logs());
    for i in 0..4 {
        assert_eq!(state(&env, &format!("{array}_{i}")), "COMPLETED", "task {i}; logs:\n{}", logs());
    }
    let status = text(&env.ddpm(&["status", "tiny.toml", "--results", "cluster"]).stdout);
    assert_eq!(status.matches(" COMPLETED").count(), 5, "four tasks and the analysis job:\n{status}");
    assert!(env.work.join("cluster/analysis/tiny_slurm/report.md").exists(), "the analysis job wrote the report");

    let remote = statuses(&env.work.join("cluster"));
    assert_eq!(remote.keys().collect::<Vec<_>>(), local.keys().collect::<Vec<_>>(), "the same run hashes");
    let mut devices = Vec::new();
    for (hash, s) in &remote {
        assert_eq!(s["state"], "done", "{hash}: {s}");
        for key in ["weights_sha256", "ema_sha256", "final_loss", "bpd", "parameters"] {
            assert_eq!(s[key], local[hash][key], "{hash}: {key} differs from the local run");
        }
        let attempts = lines(&env.work.join("cluster/runs").join(hash).join("attempts.jsonl"));
        assert_eq!(attempts.len(), 1, "{hash} ran once");
        let task = &attempts[0]["slurm"];
        assert_eq!(task["array_job_id"], array.as_str());
        devices.push((task["cuda_visible_devices"].as_str().unwrap_or("").to_string(), attempts[0].clone()));
    }
    // Each task had one GPU of the two; tasks that ran at the same time had different ones.
    assert!(devices.iter().all(|(d, _)| d == "0" || d == "1"), "{devices:?}");
    let mut seen: Vec<&str> = devices.iter().map(|(d, _)| d.as_str()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["0", "1"], "two tasks at a time on two GPUs");

    // Done: submitting again submits nothing and runs nothing.
    let third = text(&env.ddpm(&["run", "tiny.toml", "--launcher", "slurm", "--results", "cluster"]).stdout);
    assert!(third.contains("nothing to submit") && third.matches("already done").count() == 4, "{third}");
    assert_eq!(std::fs::read_to_string(slurm_dir.join("submissions.jsonl")).unwrap().lines().count(), 1);

    preemption(&env);
    cancel(&env);
    two_processes(&env);

    let daemons = cluster.pids();
    assert_eq!(daemons.len(), 3);
    let out = cluster.stop();
    assert!(out.status.success(), "cluster.sh stop: {}", text(&out.stderr));
    let left: Vec<u32> = daemons.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "daemons left running: {left:?}");
    assert!(job_processes(&env.conf).is_empty(), "job processes left running");
}

/// `body` without its grid (one run) as `file`: run here into `local`, and submitted to Slurm into
/// `cluster` without the analysis job. Returns the array task's id.
fn one_run_here_and_on_slurm(env: &Env, file: &str, body: &str) -> String {
    let body = &body[..body.find("[grid]").unwrap()];
    std::fs::write(env.work.join(file), body).unwrap();
    env.ddpm(&["run", file, "--device", "cpu", "--results", "local"]);
    let out = env.ddpm(&["run", file, "--launcher", "slurm", "--results", "cluster", "--no-analyze-job"]);
    let stdout = text(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_whitespace().next().filter(|w| w.ends_with("_0")).map(String::from))
        .unwrap_or_else(|| panic!("no task id in\n{stdout}"))
}

/// One long run: SIGUSR1 to its batch script while it trains. It writes a checkpoint, requeues
/// itself, resumes, and ends with the weights and the logged losses of an uninterrupted run.
fn preemption(env: &Env) {
    let body = TINY
        .replace("name = \"tiny_slurm\"", "name = \"tiny_preempt\"")
        .replace("seeds = [0, 1]", "seeds = [0]")
        .replace("steps = 60", "steps = 400");
    let task = one_run_here_and_on_slurm(env, "preempt.toml", &body);
    let exp_runs = |root: &str| -> PathBuf {
        let link = env.work.join(root).join("experiments/tiny_preempt/tiny_preempt");
        std::fs::canonicalize(link).unwrap()
    };
    let dir = exp_runs("cluster");
    // Signal while it trains: after its second logged step, long before its 400th.
    wait_for("training to log", Duration::from_secs(300), || {
        std::fs::read_to_string(dir.join("metrics.jsonl")).is_ok_and(|t| t.lines().count() >= 2)
    });
    env.slurm("scancel", &["--signal=USR1", "--batch", &task]);
    let ended = wait_until_ended(env, &task, Duration::from_secs(600));
    let log = std::fs::read_to_string(
        env.work.join("cluster/experiments/tiny_preempt/slurm/logs").join(format!("{}.out", task)),
    )
    .unwrap();
    assert_eq!(ended, "COMPLETED", "{log}");
    assert!(log.contains("SIGUSR1: checkpoint written at step"), "{log}");
    assert!(log.contains("ddpm: requeueing job"), "{log}");
    let attempts = lines(&dir.join("attempts.jsonl"));
    assert_eq!(attempts.len(), 2, "stopped once, resumed once: {attempts:?}");
    let resumed = attempts[1]["resumed_from"].as_u64().expect("the second attempt resumed");
    assert!(resumed > 0 && resumed < 400 && resumed.is_multiple_of(5), "at the end of a logging window: {resumed}");
    assert_eq!(attempts[1]["slurm"]["restart_count"], 1);
    let job = env.slurm("scontrol", &["show", "job", &task]);
    assert!(job.contains("Restarts=1"), "{job}");

    let (remote, local) = (json(&dir.join("status.json")), json(&exp_runs("local").join("status.json")));
    assert_eq!(remote["state"], "done");
    assert_eq!(remote["resumed_from"], resumed);
    for key in ["weights_sha256", "ema_sha256", "final_loss", "bpd"] {
        assert_eq!(remote[key], local[key], "{key}: preempted vs uninterrupted");
    }
    let steps = |d: &Path| -> Vec<(u64, f64)> {
        lines(&d.join("metrics.jsonl"))
            .iter()
            .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
            .collect()
    };
    assert_eq!(steps(&dir), steps(&exp_runs("local")), "each step logged once, with the same loss");
}

/// A run of `train.processes = 2` becomes one `srun` step of two tasks (gloo, one node): both ranks
/// train it, rank 0 writes it, and it ends with the weights of the same run trained locally by two
/// processes (the relative L2 distance of the weights below the equality test's tolerance).
fn two_processes(env: &Env) {
    let body = TINY
        .replace("name = \"tiny_slurm\"", "name = \"tiny_ranks\"")
        .replace("seeds = [0, 1]", "seeds = [3]")
        .replace("batch_size = 32", "batch_size = 32\nprocesses = 2");
    let task = one_run_here_and_on_slurm(env, "ranks.toml", &body);
    let slurm_dir = env.work.join("cluster/experiments/tiny_ranks/slurm");
    let sbatch = std::fs::read_to_string(slurm_dir.join("submit-1.sbatch")).unwrap();
    assert!(sbatch.contains("#SBATCH --ntasks=2\n") && sbatch.contains("procs=(2)"), "{sbatch}");
    let ended = wait_until_ended(env, &task, Duration::from_secs(600));
    let log = std::fs::read_to_string(slurm_dir.join("logs").join(format!("{task}.out"))).unwrap();
    assert_eq!(ended, "COMPLETED", "{log}");
    assert!(log.contains("ddpm: 2 processes, rendezvous at 127.0.0.1:"), "{log}");
    assert!(log.contains("rank 1 of 2: done"), "{log}");
    let dir =
        |root: &str| std::fs::canonicalize(env.work.join(root).join("experiments/tiny_ranks/tiny_ranks")).unwrap();
    let remote = json(&dir("cluster").join("status.json"));
    assert_eq!(remote["state"], "done", "{remote}");
    assert_eq!(remote["train_metrics"]["ranks_max_weight_difference"].as_f64(), Some(0.0), "{remote}");
    let attempts = lines(&dir("cluster").join("attempts.jsonl"));
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["processes"], 2);
    let weights = |d: PathBuf| {
        let mut w = tch::Tensor::read_safetensors(d.join("model.safetensors")).unwrap();
        w.sort_by(|a, b| a.0.cmp(&b.0));
        w
    };
    let (a, b) = (weights(dir("local")), weights(dir("cluster")));
    let (mut diff, mut norm) = (0.0, 0.0);
    for ((_, x), (_, y)) in a.iter().zip(&b) {
        diff += (x - y).square().sum(tch::Kind::Double).double_value(&[]);
        norm += x.square().sum(tch::Kind::Double).double_value(&[]);
    }
    let d = (diff / norm).sqrt();
    eprintln!("two ranks under Slurm against two local ranks: relative distance {d:e}");
    assert!(d < 1e-2, "{d}");
}

/// `ddpm cancel` cancels what is queued; the status then says so.
fn cancel(env: &Env) {
    let long = TINY.replace("steps = 60", "steps = 100000").replace("name = \"tiny_slurm\"", "name = \"tiny_cancel\"");
    std::fs::write(env.work.join("cancel.toml"), long).unwrap();
    env.ddpm(&["run", "cancel.toml", "--launcher", "slurm", "--results", "cluster", "--max-parallel", "1"]);
    let out = text(&env.ddpm(&["cancel", "cancel.toml", "--results", "cluster"]).stdout);
    assert!(out.starts_with("cancelled job(s) "), "{out}");
    wait_for("the cancellation", Duration::from_secs(60), || {
        let status = text(&env.ddpm(&["status", "cancel.toml", "--results", "cluster"]).stdout);
        status.matches(" CANCELLED").count() == 5
    });
    let again = text(&env.ddpm(&["cancel", "cancel.toml", "--results", "cluster"]).stdout);
    assert!(again.starts_with("nothing to cancel"), "{again}");
}
