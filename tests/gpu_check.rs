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

/// Stages as for the device (stripped binary and data, gzipped, under the carry limit), then runs every
/// part from the staged folder, as the device does.
#[test]
fn the_gpu_check_stages_and_runs_every_part_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("stage");
    let out = python()
        .args(["bench/gpu_check.py", "stage", "--binary"])
        .arg(env!("CARGO_BIN_EXE_ddpm"))
        .arg("--dir")
        .arg(&stage)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("run(command=\"python3 bench/gpu_check.py run --device cuda\""), "{printed}");
    let total: u64 = walk(&stage).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert!(total < 62 << 20, "staged {total} bytes");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stage.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["files"]["ddpm"]["stored"], "ddpm.xz");
    assert!(manifest["files"]["data/mnist/train-images-idx3-ubyte"].is_object(), "{manifest}");

    let out_dir = dir.path().join("out");
    let out = python()
        .args(["bench/gpu_check.py", "run", "--device", "cpu", "--tiny", "--budget-seconds", "3000", "--stage"])
        .arg(&stage)
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
