//! `ddpm analyze` on run directories written by the test (no training): the tables' rows, columns and
//! values against numbers computed by hand, failed runs left out with a warning, the Parquet read back
//! by Python's polars, the plot a valid PNG, the report's verdicts.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ddpm(args: &[&str], results: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args(args)
        .arg("--results")
        .arg(results)
        .env("DDPM_DATA_DIR", root().join("data"))
        .output()
        .unwrap()
}

const EXPERIMENT: &str = r#"
[experiment]
name = "fixture"
description = "two schedules, three seeds"
[train]
steps = 20
[grid]
"diffusion.schedule.name" = ["linear", "cosine"]
seed = [0, 1, 2]
"#;

/// FID by (schedule, seed); cosine seed 2 failed.
const FID: [(&str, u64, f64); 5] =
    [("linear", 0, 10.0), ("linear", 1, 12.0), ("linear", 2, 14.0), ("cosine", 0, 9.0), ("cosine", 1, 10.0)];

fn write_run(dir: &Path, label: &str, state: &str, fid: Option<f64>, losses: &[f64]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut status = serde_json::json!({
        "state": state, "label": label, "step": 20, "steps": 20, "pid": 1, "host": "h", "updated_unix": 0.0,
    });
    if let Some(f) = fid {
        status["fid"] = f.into();
        status["final_loss"] = (*losses.last().unwrap()).into();
    }
    std::fs::write(dir.join("status.json"), status.to_string()).unwrap();
    let lines: Vec<String> =
        losses.iter().enumerate().map(|(i, l)| format!("{{\"step\": {}, \"loss\": {l}}}", (i + 1) * 10)).collect();
    std::fs::write(dir.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
}

#[test]
fn tables_report_and_plot_of_a_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("fixture.toml");
    std::fs::write(&exp, EXPERIMENT).unwrap();
    let results = tmp.path().join("results");
    let out = ddpm(&["plan", exp.to_str().unwrap()], &results);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let plan: Vec<(String, String)> = text(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[w.len() - 1].to_string(), w[0].to_string())
        })
        .collect();
    assert_eq!(plan.len(), 6);
    for (label, hash) in &plan {
        let dir = results.join("runs").join(hash);
        let fid = FID.iter().find(|(s, seed, _)| label == &format!("schedule={s},seed={seed}")).map(|f| f.2);
        let state = if fid.is_some() { "done" } else { "failed" };
        write_run(&dir, label, state, fid, &[1.0, fid.unwrap_or(50.0) / 100.0]);
    }

    let out = ddpm(&["analyze", exp.to_str().unwrap()], &results);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("left out of the statistics (not done): schedule=cosine,seed=2 (failed)"), "{stdout}");
    let dir = results.join("analysis/fixture");

    // runs: every run, its state, typed varied key and metrics.
    let runs = std::fs::read_to_string(dir.join("runs.csv")).unwrap();
    let header: Vec<&str> = runs.lines().next().unwrap().split(',').collect();
    for col in ["label", "hash", "variant", "seed", "state", "diffusion.schedule.name", "model.name", "fid"] {
        assert!(header.contains(&col), "{col} in {header:?}");
    }
    assert_eq!(runs.lines().count(), 7);
    assert!(runs.contains("failed"));

    // summary: linear 10, 12, 14 → mean 12, sd 2, 95% CI 12 ± 4.302653·2/√3; cosine 9, 10 → mean 9.5.
    let py = format!(
        "import polars as pl, json; d = '{}'; s = pl.read_parquet(d + '/summary.parquet'); \
         p = pl.read_parquet(d + '/paired.parquet'); r = pl.read_parquet(d + '/runs.parquet'); \
         c = pl.read_parquet(d + '/curves.parquet'); \
         print(json.dumps({{'summary': s.filter(pl.col('metric') == 'fid').to_dicts(), \
         'paired': p.filter(pl.col('metric') == 'fid').to_dicts(), 'runs': r.height, \
         'seed_dtype': str(r.schema['seed']), 'fid_dtype': str(r.schema['fid']), 'curves': c.height}}))",
        dir.display()
    );
    let out = Command::new(root().join(".venv/bin/python")).args(["-c", &py]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let linear = v["summary"].as_array().unwrap().iter().find(|r| r["variant"] == "schedule=linear");
    let linear = linear.unwrap_or_else(|| panic!("{}", v["summary"]));
    assert_eq!(linear["n"], 3);
    assert!((linear["mean"].as_f64().unwrap() - 12.0).abs() < 1e-12);
    assert!((linear["std"].as_f64().unwrap() - 2.0).abs() < 1e-12);
    let half = 4.302653 * 2.0 / 3f64.sqrt();
    assert!((linear["ci95_high"].as_f64().unwrap() - 12.0 - half).abs() < 1e-5, "{linear}");
    let cosine = v["summary"].as_array().unwrap().iter().find(|r| r["variant"] == "schedule=cosine");
    assert_eq!(cosine.unwrap()["n"], 2, "the failed run is left out");

    // paired: cosine − linear at seeds 0 and 1: −1 and −2 → mean −1.5, sd √½, CI −1.5 ± 12.7062·0.5.
    let p = &v["paired"][0];
    assert_eq!((p["n"].as_i64(), p["baseline"].as_str()), (Some(2), Some("schedule=linear")));
    assert!((p["mean"].as_f64().unwrap() + 1.5).abs() < 1e-12);
    assert!((p["ci95_low"].as_f64().unwrap() - (-1.5 - 12.706205 * 0.5)).abs() < 1e-5, "{p}");
    assert_eq!(p["ci_excludes_zero"], false);
    assert_eq!((v["runs"].as_i64(), v["curves"].as_i64()), (Some(6), Some(12)));
    assert_eq!((v["seed_dtype"].as_str(), v["fid_dtype"].as_str()), (Some("Int64"), Some("Float64")));

    // The report names the winner per metric and says whether its interval excludes zero.
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("`fid`: best `schedule=cosine` (mean 9.50000)"), "{report}");
    assert!(report.contains("includes zero"), "{report}");
    assert!(report.contains("[grid]") && report.contains("![training loss](loss.png)"));

    let png = std::fs::read(dir.join("loss.png")).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let reader = decoder.read_info().unwrap();
    assert_eq!((reader.info().width, reader.info().height), (900, 540));

    // The same runs give the same files.
    let before: Vec<Vec<u8>> = ["runs.csv", "summary.csv", "paired.csv", "report.md"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    assert!(ddpm(&["analyze", exp.to_str().unwrap()], &results).status.success());
    for (f, b) in ["runs.csv", "summary.csv", "paired.csv", "report.md"].iter().zip(before) {
        assert_eq!(std::fs::read(dir.join(f)).unwrap(), b, "{f} changed");
    }
}
