//! The sbatch scripts of a submission, as text a human can read and submit again: one job array whose
//! task i executes the i-th run (`ddpm run-one`), and the analysis job that waits for the array.
use super::config::SlurmConfig;
use crate::runner::one::Ended;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// One run of the array: its index is its position.
#[derive(Debug, Clone)]
pub struct Task {
    pub hash: String,
    pub label: String,
    /// The evaluation specs of the runs that share this training, as a JSON list (`run-one --eval`).
    pub evals: String,
    /// `train.processes`: above 1, the task's run is one `srun` step of that many tasks.
    pub processes: usize,
}

/// Where things are, as the compute nodes see them (absolute paths on the shared filesystem).
#[derive(Debug, Clone)]
pub struct Paths {
    pub binary: PathBuf,
    /// The working directory of every job (where `ddpm run` was called).
    pub workdir: PathBuf,
    /// `results/runs`
    pub runs: PathBuf,
    pub data: PathBuf,
    /// Slurm's output files.
    pub logs: PathBuf,
}

fn quote(text: &str) -> String {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c)) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn path(p: &Path) -> String {
    quote(&p.display().to_string())
}

/// The resources both jobs ask for: partition, account, qos and the extra arguments.
fn common_directives(out: &mut String, c: &SlurmConfig) {
    for (flag, value) in [("partition", &c.partition), ("account", &c.account), ("qos", &c.qos)] {
        if let Some(v) = value {
            writeln!(out, "#SBATCH --{flag}={v}").expect("String");
        }
    }
    for arg in &c.extra_args {
        writeln!(out, "#SBATCH {arg}").expect("String");
    }
}

/// The job array over `tasks`. `run_one_flags`: further flags of each task's `ddpm run-one`
/// (`--allow-device-change`).
pub fn array_script(
    experiment: &str,
    tasks: &[Task],
    device: &str,
    run_one_flags: &str,
    p: &Paths,
    c: &SlurmConfig,
) -> String {
    let n = tasks.len();
    let mut s = String::new();
    let w = &mut s;
    writeln!(w, "#!/bin/bash").expect("String");
    writeln!(w, "# ddpm: the {n} run(s) of experiment `{experiment}` that were not done when this was written.")
        .expect("String");
    writeln!(w, "# Submitting it again is safe: a done run's task ends at once, a partial run resumes from its")
        .expect("String");
    writeln!(w, "# newest checkpoint, and a run that another process is executing is left to it.").expect("String");
    writeln!(w, "#SBATCH --job-name=ddpm-{experiment}").expect("String");
    let parallel = c.max_parallel.map(|p| format!("%{p}")).unwrap_or_default();
    writeln!(w, "#SBATCH --array=0-{}{parallel}", n.saturating_sub(1)).expect("String");
    writeln!(w, "#SBATCH --requeue").expect("String");
    writeln!(w, "#SBATCH --signal=B:USR1@{}", c.signal_seconds).expect("String");
    writeln!(w, "#SBATCH --open-mode=append").expect("String");
    writeln!(w, "#SBATCH --export=ALL").expect("String");
    writeln!(w, "#SBATCH --chdir={}", path(&p.workdir)).expect("String");
    writeln!(w, "#SBATCH --output={}", path(&p.logs.join("%A_%a.out"))).expect("String");
    let most = tasks.iter().map(|t| t.processes).max().unwrap_or(1).max(1);
    writeln!(w, "#SBATCH --ntasks={most}").expect("String");
    if let Some(t) = &c.time {
        writeln!(w, "#SBATCH --time={t}").expect("String");
    }
    if let Some(g) = &c.gres {
        writeln!(w, "#SBATCH --gres={g}").expect("String");
    }
    if let Some(n) = c.cpus_per_run {
        writeln!(w, "#SBATCH --cpus-per-task={n}").expect("String");
    }
    if let Some(m) = &c.mem {
        writeln!(w, "#SBATCH --mem={m}").expect("String");
    }
    common_directives(w, c);
    writeln!(w, "set -u\n").expect("String");
    writeln!(w, "# Array index -> run directory {}/<hash>", p.runs.display()).expect("String");
    writeln!(w, "runs=(").expect("String");
    for (i, t) in tasks.iter().enumerate() {
        writeln!(w, "    {}  # {i}: {}", t.hash, t.label.replace('\n', " ")).expect("String");
    }
    writeln!(w, ")").expect("String");
    writeln!(w, "# Array index -> the evaluation specs of the runs that share that training").expect("String");
    writeln!(w, "evals=(").expect("String");
    for t in tasks {
        writeln!(w, "    {}", quote(&t.evals)).expect("String");
    }
    writeln!(w, ")").expect("String");
    writeln!(w, "run_dir={}/${{runs[$SLURM_ARRAY_TASK_ID]}}", path(&p.runs)).expect("String");
    // `${a[@]+"${a[@]}"}`: an empty array under `set -u` (bash before 4.4 calls it unbound).
    let launch = if most > 1 { "${launch[@]+\"${launch[@]}\"} " } else { "" };
    if most > 1 {
        multi_process_step(w, tasks);
    }
    writeln!(w, "export DDPM_DATA_DIR={}", path(&p.data)).expect("String");
    writeln!(
        w,
        r#"echo "ddpm: task $SLURM_ARRAY_TASK_ID (job $SLURM_JOB_ID, restart ${{SLURM_RESTART_COUNT:-0}}) on $(hostname): $run_dir, CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-}}""#
    )
    .expect("String");
    let stopped = Ended::STOPPED_EXIT;
    let busy = Ended::BUSY_EXIT;
    let done = Ended::ALREADY_DONE_EXIT;
    let seconds = c.signal_seconds;
    let binary = path(&p.binary);
    write!(
        w,
        r#"
# SIGUSR1 (from Slurm {seconds} s before the time limit, or `scancel --signal=USR1 --batch`): the run finishes
# its logging window, writes a checkpoint and exits {stopped}; the task then puts itself back in the queue
# and the next attempt resumes in the same run directory. SIGTERM (preemption, scancel) is passed on
# the same way, and Slurm decides whether the task comes back.
child=
requeue=0
trap 'requeue=1; [ -n "$child" ] && kill -USR1 "$child" 2>/dev/null' USR1
trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null' TERM
{launch}{binary} run-one "$run_dir" --device {device}{run_one_flags} --eval "${{evals[$SLURM_ARRAY_TASK_ID]}}" &
child=$!
[ "$requeue" = 1 ] && kill -USR1 "$child" 2>/dev/null
# `wait` returns early when a trapped signal arrives: wait until the run itself has exited.
code=0
while kill -0 "$child" 2>/dev/null; do wait "$child"; code=$?; done
wait "$child" 2>/dev/null; last=$?
[ "$last" = 127 ] || code=$last
case "$code" in
    0) echo "ddpm: run done" ;;
    {done}) echo "ddpm: run was already done"; code=0 ;;
    {busy}) echo "ddpm: another process is executing this run (see $run_dir/lock); left to it"; code=0 ;;
esac
# {stopped}: stopped after a checkpoint; 138: killed by SIGUSR1 before it could listen (resumes from its
# last checkpoint).
if [ "$requeue" = 1 ] && {{ [ "$code" = {stopped} ] || [ "$code" = 138 ]; }}; then
    echo "ddpm: requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID" && exit 0
fi
exit "$code"
"#,
        device = quote(device),
        run_one_flags = if run_one_flags.is_empty() { String::new() } else { format!(" {run_one_flags}") },
    )
    .expect("String");
    s
}

/// A run of several processes (`train.processes`) is one `srun` step of that many tasks (on as many
/// nodes as the job has), which Slurm ends as a whole when one task fails (`--kill-on-bad-exit`). Each
/// task learns its rank from `SLURM_PROCID`; they meet on the job's first node, at a port taken from
/// the job id.
fn multi_process_step(w: &mut String, tasks: &[Task]) {
    writeln!(w, "# Array index -> train.processes of the run (above 1: one srun step of that many tasks)")
        .expect("String");
    let counts: Vec<String> = tasks.iter().map(|t| t.processes.max(1).to_string()).collect();
    writeln!(w, "procs=({})", counts.join(" ")).expect("String");
    w.push_str(
        r#"n=${procs[$SLURM_ARRAY_TASK_ID]}
launch=()
if [ "$n" -gt 1 ]; then
    first=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    if [ "${SLURM_JOB_NUM_NODES:-1}" -gt 1 ]; then export DDPM_MASTER_ADDR="$first"; else export DDPM_MASTER_ADDR=127.0.0.1; fi
    export DDPM_WORLD_SIZE="$n" DDPM_MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))
    launch=(srun --ntasks="$n" --kill-on-bad-exit=1)
    echo "ddpm: $n processes, rendezvous at $DDPM_MASTER_ADDR:$DDPM_MASTER_PORT"
fi
"#,
    );
}

/// `ddpm analyze` once the array `array_job` has ended, whatever its tasks' outcomes.
pub fn analyze_script(
    experiment: &str,
    array_job: &str,
    analyze_args: &[String],
    p: &Paths,
    c: &SlurmConfig,
) -> String {
    let mut s = String::new();
    let w = &mut s;
    writeln!(w, "#!/bin/bash").expect("String");
    writeln!(w, "# ddpm: tables, plots and report of experiment `{experiment}` once job array {array_job} has ended.")
        .expect("String");
    writeln!(w, "#SBATCH --job-name=ddpm-{experiment}-analyze").expect("String");
    writeln!(w, "#SBATCH --dependency=afterany:{array_job}").expect("String");
    writeln!(w, "#SBATCH --kill-on-invalid-dep=yes").expect("String");
    writeln!(w, "#SBATCH --export=ALL").expect("String");
    writeln!(w, "#SBATCH --chdir={}", path(&p.workdir)).expect("String");
    writeln!(w, "#SBATCH --output={}", path(&p.logs.join("analyze-%j.out"))).expect("String");
    writeln!(w, "#SBATCH --ntasks=1").expect("String");
    writeln!(w, "#SBATCH --cpus-per-task=1").expect("String");
    if let Some(t) = &c.time {
        writeln!(w, "#SBATCH --time={t}").expect("String");
    }
    common_directives(w, c);
    writeln!(w, "export DDPM_DATA_DIR={}", path(&p.data)).expect("String");
    let args: Vec<String> = analyze_args.iter().map(|a| quote(a)).collect();
    writeln!(w, "exec {} analyze {}", path(&p.binary), args.join(" ")).expect("String");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            binary: "/shared/ddpm/target/release/ddpm".into(),
            workdir: "/shared/ddpm".into(),
            runs: "/shared/ddpm/results/runs".into(),
            data: "/shared/ddpm/data".into(),
            logs: "/shared/ddpm/results/experiments/x/slurm/logs".into(),
        }
    }

    #[test]
    fn array_script_maps_indices_to_runs_and_asks_for_the_configured_resources() {
        let c = SlurmConfig {
            partition: Some("gpu".into()),
            gres: Some("gpu:1".into()),
            max_parallel: Some(2),
            time: Some("01:00:00".into()),
            extra_args: vec!["--constraint=a100".into()],
            ..Default::default()
        };
        let tasks: Vec<Task> = (0..3)
            .map(|i| Task { hash: format!("h{i}"), label: format!("seed={i}"), evals: "[]".into(), processes: 1 })
            .collect();
        let s = array_script("x", &tasks, "auto", "", &paths(), &c);
        for line in [
            "#SBATCH --array=0-2%2",
            "#SBATCH --requeue",
            "#SBATCH --signal=B:USR1@120",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --partition=gpu",
            "#SBATCH --time=01:00:00",
            "#SBATCH --constraint=a100",
            "#SBATCH --output=/shared/ddpm/results/experiments/x/slurm/logs/%A_%a.out",
            "    h0  # 0: seed=0",
            "    h2  # 2: seed=2",
            "run_dir=/shared/ddpm/results/runs/${runs[$SLURM_ARRAY_TASK_ID]}",
            "/shared/ddpm/target/release/ddpm run-one \"$run_dir\" --device auto --eval \"${evals[$SLURM_ARRAY_TASK_ID]}\" &",
            "    scontrol requeue \"$SLURM_JOB_ID\" && exit 0",
        ] {
            assert!(s.lines().any(|l| l == line), "missing line {line:?} in\n{s}");
        }
        assert!(!s.contains("--account") && !s.contains("--mem"), "unset options stay out");
        // Every #SBATCH line comes before the first command (sbatch stops reading them there).
        let first_command = s.lines().position(|l| l == "set -u").unwrap();
        assert!(s.lines().skip(first_command).all(|l| !l.starts_with("#SBATCH")));
        let syntax = std::process::Command::new("bash").args(["-n", "-c", &s]).status().unwrap();
        assert!(syntax.success(), "bash -n rejects the script");
    }

    #[test]
    fn analyze_script_waits_for_the_array_and_quotes_its_arguments() {
        let args: Vec<String> = ["experiments/x.toml", "--set", "train.lr=1e-4", "--set", "model.name='a b'"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = analyze_script("x", "1234", &args, &paths(), &SlurmConfig::default());
        assert!(s.contains("#SBATCH --dependency=afterany:1234\n"), "{s}");
        assert!(
            s.contains("exec /shared/ddpm/target/release/ddpm analyze experiments/x.toml --set train.lr=1e-4 --set 'model.name='\\''a b'\\'''\n"),
            "{s}"
        );
        let syntax = std::process::Command::new("bash").args(["-n", "-c", &s]).status().unwrap();
        assert!(syntax.success());
    }
}
