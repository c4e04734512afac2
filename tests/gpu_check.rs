//! `bench/gpu_check.py`, the prepared GPU check, on the CPU with tiny sizes: every part runs and writes
//! its rows, so that the script cannot rot between the rare runs on a GPU machine; and its staging
//! stays under the device tool's 64 MiB carry.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> Command {
    let venv = root().join(".venv/bin/python");
    let mut c = Command::new(if venv.exists() { venv } else { PathBuf::from("python3") });
    c.current_dir(root()).env("DDPM_DATA_DIR", root().join("data")).env_remove("DDPM_RESULTS_DIR");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("DDPM_") && k != "DDPM_DATA_DIR") {
        c.env_remove(k);
    }
    c
}

/// `gpu_check.py stage` of the test binary into `dest`, with further arguments.
fn stage(dest: &Path, extra: &[&str]) -> std::process::Output {
    python()
        .args(["bench/gpu_check.py", "stage"])
        .args(extra)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_ddpm"))
        .arg("--dir")
        .arg(dest)
        .output()
        .unwrap()
}

fn read_rows(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    lines
        .map(|l| {
            // Notes may hold commas inside quotes; the first eight fields never do.
            let mut fields: Vec<String> = l.splitn(9, ',').map(String::from).collect();
            fields.resize(header.len(), String::new());
            header.iter().cloned().zip(fields).collect()
        })
        .collect()
}

fn value(rows: &[HashMap<String, String>], part: &str, model: &str, variant: &str, metric: &str) -> String {
    rows.iter()
        .find(|r| r["part"] == part && r["model"] == model && r["variant"] == variant && r["metric"] == metric)
        .unwrap_or_else(|| panic!("no row {part}/{model}/{variant}/{metric}"))["value"]
        .clone()
}

/// Copies `from` into `to`, recursively.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

/// Stages as for the device (stripped binary and data, gzipped, under the carry limit), then moves
/// the staged folder with the scripts and experiment files to another path, as the device tool puts
/// the tree elsewhere than where the binary was built, and runs every part from there. The PyTorch
/// reference the bench ran is the moved tree's, not the build tree's.
#[test]
fn the_gpu_check_stages_and_runs_every_part_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("stage");
    let out = self::stage(&stage, &[]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("run(command=\"python3 bench/gpu_check.py run --device cuda\""), "{printed}");
    assert!(printed.contains("timeout_s=400"), "a timeout that leaves a rerun in 15 minutes: {printed}");
    let total: u64 = walk(&stage).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert!(total < 62 << 20, "staged {total} bytes");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stage.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["files"]["ddpm"]["stored"], "ddpm.xz");
    assert!(manifest["files"]["data/mnist/train-images-idx3-ubyte"].is_object(), "{manifest}");

    // The device's tree: somewhere else, with the scripts, the experiment files and the staged folder.
    let moved = dir.path().join("elsewhere/tree");
    copy_tree(&root().join("bench"), &moved.join("bench"));
    copy_tree(&root().join("experiments"), &moved.join("experiments"));
    std::fs::rename(&stage, moved.join(".gpu-check")).unwrap();
    let out_dir = dir.path().join("out");
    let out = python()
        .current_dir(&moved)
        .arg(moved.join("bench/gpu_check.py"))
        .args(["run", "--device", "cpu", "--tiny", "--budget-seconds", "3000", "--stage"])
        .arg(moved.join(".gpu-check"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let out_dir = out_dir.as_path();
    let log = std::fs::read_to_string(out_dir.join("gpu-check.log")).unwrap_or_default();
    assert!(log.contains("/stage/ddpm"), "the unpacked binary ran: {log}");
    assert!(
        out.status.success(),
        "{}\n{}\n{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_rows(&out_dir.join("cpu.csv"));
    assert_eq!(value(&rows, "device", "", "", "cuda_available"), "false");
    assert!(!rows.iter().any(|r| r["metric"] == "error" || r["metric"] == "skipped"), "{rows:?}");

    // Part 1: every registered model trains, is killed after a checkpoint, resumes to the same weights.
    for model in ["simple", "simple_bn", "unet", "lucidrains", "ddpm_cifar"] {
        assert_eq!(value(&rows, "train", model, "fp32", "resumed_after_sigkill"), "true", "{model}\n{log}");
        assert_eq!(value(&rows, "train", model, "fp32", "same_weights_as_uninterrupted"), "true", "{model}");
    }
    // Part 1b: a group of one rank (gloo here, NCCL on CUDA) trains the run without a group's weights.
    assert_eq!(value(&rows, "parallel", "simple", "1 rank", "backend"), "gloo", "{log}");
    assert_eq!(
        value(&rows, "parallel", "simple", "1 rank", "ranks_max_weight_difference").parse::<f64>().unwrap(),
        0.0
    );
    assert_eq!(value(&rows, "parallel", "simple", "1 rank", "same_weights_as_without_group"), "true");
    // Part 2: each variant measured on both sides; ddpm / PyTorch is their quotient.
    for variant in ["fp32", "tf32", "bf16", "channels_last"] {
        let row = rows
            .iter()
            .find(|r| r["part"] == "bench" && r["variant"] == variant && r["metric"] == "train_images_per_sec")
            .unwrap_or_else(|| panic!("no bench row for {variant}"));
        let (ours, theirs, ratio): (f64, f64, f64) =
            (row["value"].parse().unwrap(), row["reference"].parse().unwrap(), row["ratio"].parse().unwrap());
        assert!(ours > 0.0 && theirs > 0.0);
        assert!((ratio - ours / theirs).abs() < 1e-3 * ratio.max(1.0), "{row:?}");
        assert!(out_dir.join(format!("bench-{variant}.csv")).is_file());
    }
    let bench = std::fs::read_to_string(out_dir.join("bench-bf16.csv")).unwrap();
    assert!(bench.lines().nth(1).unwrap().contains(",bf16,false,false,true,"), "the variant reached the run: {bench}");
    let reference = moved.join("bench/pytorch_reference.py");
    assert!(
        bench.lines().nth(1).unwrap().ends_with(&format!("\"{}\"", reference.display())),
        "the reference found at run time in the moved tree, not at the build path: {bench}"
    );
    // The profile a CUDA run gets, and what a sampling step costs at two evaluation batches.
    assert!(value(&rows, "profile", "", "", "profile_line").contains("profile"), "{rows:?}");
    for b in [64, 500] {
        let v: f64 = value(&rows, "eval_batch", "simple", &format!("B={b}"), "sample_evals_per_sec").parse().unwrap();
        assert!(v > 0.0);
    }
    // Part 3: K = 1, 2, 4 runs at once.
    for k in [1, 2, 4] {
        let v: f64 =
            value(&rows, "runs_per_device", "simple", &format!("K={k}"), "total_images_per_sec").parse().unwrap();
        assert!(v > 0.0);
    }
    // Part 4: the notebook recipe, projected against the notebook's 924 s for 20 epochs.
    let projected = rows
        .iter()
        .find(|r| r["part"] == "notebook" && r["metric"] == "projected_20_epoch_seconds")
        .expect("a projection");
    assert_eq!(projected["reference"], "924.0000");
    assert!(projected["value"].parse::<f64>().unwrap() > 0.0);
}

/// The sizes `dry-run` printed: the tree's, the binary's and MNIST's, in MiB.
fn planned_sizes(text: &str) -> (f64, f64, f64) {
    let mib = |line: &str| line.split_whitespace().next().unwrap().parse::<f64>().unwrap();
    let tree = text.split("beside the tree (").nth(1).unwrap().split(" MiB").next().unwrap().parse().unwrap();
    let binary = mib(text.lines().find(|l| l.contains("ddpm.xz")).unwrap());
    let mnist = mib(text.lines().find(|l| l.contains("data/mnist/")).unwrap());
    (tree, binary, mnist)
}

/// A stage that cannot hold a data set the check needs fails, naming it, and leaves nothing staged
/// (before, the data set was dropped and the check ran without it). The limit here holds the binary
/// and MNIST but not Fashion-MNIST.
#[test]
fn staging_fails_loudly_when_a_data_set_does_not_fit() {
    let dry =
        python().args(["bench/gpu_check.py", "dry-run", "--binary"]).arg(env!("CARGO_BIN_EXE_ddpm")).output().unwrap();
    let text = String::from_utf8_lossy(&dry.stdout).to_string();
    assert!(dry.status.success(), "{text}");
    let (tree, binary, mnist) = planned_sizes(&text);
    let limit = tree + 2.0 + binary + mnist + 0.5;
    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("stage");
    let out = self::stage(&stage, &["--carry-limit-mib", &format!("{limit:.2}")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}{err}", String::from_utf8_lossy(&out.stdout));
    assert!(
        err.contains("fashion_mnist") && err.contains("does not fit") && err.contains("nothing was staged"),
        "{err}"
    );
    assert!(!stage.exists(), "no partial stage is left to be carried");
    // With room for everything the same command stages both data sets.
    let out = self::stage(&stage, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = std::fs::read_to_string(stage.join("manifest.json")).unwrap();
    assert!(manifest.contains("data/fashion_mnist/"), "{manifest}");
}

#[test]
fn the_gpu_check_dry_run_says_what_it_would_carry() {
    let dry =
        python().args(["bench/gpu_check.py", "dry-run", "--binary"]).arg(env!("CARGO_BIN_EXE_ddpm")).output().unwrap();
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "{text}{}", String::from_utf8_lossy(&dry.stderr));
    assert!(text.contains("the release binary") && text.contains("MNIST (every part)"), "{text}");
    assert!(text.contains("in all (budget"), "{text}");
    assert!(text.contains("dry run: nothing written"), "{text}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files
}
