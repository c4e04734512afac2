//! `ddpm analyze` on run directories written by the test (no training): the tables' rows, columns and
//! values against numbers computed by hand, failed runs left out with a warning, the Parquet read back
//! by Python's polars, the plots valid PNG and SVG of the expected sizes, the report's verdicts, the
//! baseline named in the file.
use ddpm::config::EvalConfig;
use ddpm::eval::bpd::PerT;
use ddpm::eval::run_eval::{spec_hash, BpdSummary, EvalResult};
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

/// A finished (or failed) run: status.json, metrics.jsonl, a 12x10 grey samples.png whose pixels
/// are the FID, and for finished runs an evaluation result with the bound per t (bpd = FID / 10).
fn write_run(dir: &Path, label: &str, state: &str, fid: Option<f64>, losses: &[f64]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut status = serde_json::json!({
        "state": state, "label": label, "step": 20, "steps": 20, "pid": 1, "host": "h", "updated_unix": 0.0,
    });
    if let Some(f) = fid {
        status["fid"] = f.into();
        status["bpd"] = (f / 10.0).into();
        status["final_loss"] = (*losses.last().unwrap()).into();
        // The experiment's `[eval]`, as the CPU that evaluated it resolved it.
        let eval = EvalConfig::default().for_device(false);
        let per_t: Vec<PerT> =
            (1..=4).map(|t| PerT { t, log_snr: 6.0 - 3.0 * t as f64, bits: f / 40.0, loss: f / t as f64 }).collect();
        let mut result = EvalResult::new(spec_hash(&eval), "fixture".into(), eval.clone(), 20, "0".repeat(64));
        result.metrics = [
            ("fid", f),
            ("bpd", f / 10.0),
            ("bpd_prior", 0.0),
            ("bpd_diffusion", f / 10.0 - f / 40.0),
            ("bpd_decoder", f / 40.0),
            ("confident", f / 1000.0),
            ("fid_floor", 5.0),
            ("sample_seconds", 2.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        result.bpd = Some(BpdSummary {
            total: f / 10.0,
            prior: 0.0,
            diffusion: f / 10.0 - f / 40.0,
            decoder: f / 40.0,
            images: 1,
            timesteps_evaluated: 4,
            estimated: false,
            per_t,
        });
        result.floor_spec = Some("fixture floor".into());
        result.model_evaluations = Some(50);
        result.seconds = 1.0;
        let eval_dir = dir.join("eval").join(spec_hash(&eval));
        std::fs::create_dir_all(&eval_dir).unwrap();
        std::fs::write(eval_dir.join("metrics.json"), serde_json::to_string(&result).unwrap()).unwrap();
        let mut png = Vec::new();
        let mut encoder = png::Encoder::new(&mut png, 12, 10);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.write_header().unwrap().write_image_data(&[f as u8; 120]).unwrap();
        std::fs::write(dir.join("samples.png"), png).unwrap();
    }
    std::fs::write(dir.join("status.json"), status.to_string()).unwrap();
    std::fs::write(dir.join("provenance.json"), r#"{"git": {"commit": "abc123", "dirty": false}}"#).unwrap();
    std::fs::write(dir.join("attempts.jsonl"), "{\"device\": \"cuda:0\"}\n{\"device\": \"cpu (2 threads)\"}\n")
        .unwrap();
    let lines: Vec<String> =
        losses.iter().enumerate().map(|(i, l)| format!("{{\"step\": {}, \"loss\": {l}}}", (i + 1) * 10)).collect();
    std::fs::write(dir.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
}

fn png_size(path: &Path) -> (u32, u32) {
    let reader = png::Decoder::new(std::io::Cursor::new(std::fs::read(path).unwrap())).read_info().unwrap();
    (reader.info().width, reader.info().height)
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
    for col in [
        "label",
        "hash",
        "variant",
        "seed",
        "state",
        "diffusion.schedule.name",
        "model.name",
        "fid",
        "steps",
        "device",
        "git_commit",
        "git_dirty",
    ] {
        assert!(header.contains(&col), "{col} in {header:?}");
    }
    assert_eq!(runs.lines().count(), 7);
    assert!(runs.lines().skip(1).all(|l| l.ends_with(",20,cpu (2 threads),abc123,false")), "{runs}");
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
    // Every FID beside its floor; the confident share ranked higher-is-better.
    assert!(report.contains("(floor 5.00000: held-out real images under the same spec)"), "{report}");
    assert!(report.contains("| fid_floor |") || report.contains("fid_floor"), "{report}");
    assert!(report.contains("[grid]"));

    // Plots: valid PNG and SVG (parsed as XML by Python) of the expected sizes, embedded in the report.
    // metrics: four panels (FID with its floor, share confident, bits/dim, final loss) of 520x520.
    let sizes = [
        ("loss", (900, 540)),
        ("metrics", (4 * 520, 520)),
        ("loss_vs_log_snr", (900, 540)),
        ("bound_vs_log_snr", (900, 540)),
        ("schedules", (800, 520)),
    ];
    let svgs: Vec<String> = sizes.iter().map(|(stem, _)| format!("'{}/{stem}.svg'", dir.display())).collect();
    let py = format!(
        "import xml.etree.ElementTree as ET, json; print(json.dumps([[ET.parse(f).getroot().get(a) for a in \
         ('width', 'height')] + [len(list(ET.parse(f).getroot().iter()))] for f in [{}]]))",
        svgs.join(", ")
    );
    let out = Command::new(root().join(".venv/bin/python")).args(["-c", &py]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let parsed: Vec<(String, String, usize)> = serde_json::from_str(&text(&out.stdout)).unwrap();
    for ((stem, (w, h)), (sw, sh, elements)) in sizes.iter().zip(parsed) {
        assert_eq!(png_size(&dir.join(format!("{stem}.png"))), (*w, *h), "{stem}.png");
        assert_eq!((sw, sh), (w.to_string(), h.to_string()), "{stem}.svg");
        assert!(elements > 20, "{stem}.svg has {elements} elements");
        assert!(report.contains(&format!("({stem}.png)")), "{stem} in the report");
    }
    // Captions "schedule=linear (seed 0)" are 24 characters, 9 px each: wider than the images.
    assert_eq!(png_size(&dir.join("samples.png")), (16 + 2 * (24 * 9 + 16), 10 + 34 + 16));
    assert!(report.contains("(samples.png)"));
    let metrics_svg = std::fs::read_to_string(dir.join("metrics.svg")).unwrap();
    for label in ["schedule=linear (n=3)", "schedule=cosine (n=2)", "FID (lower is better); dashed: floor 5.00"] {
        assert!(metrics_svg.contains(&format!(">\n{label}\n</text>")), "{label} in metrics.svg");
    }
    let schedules_svg = std::fs::read_to_string(dir.join("schedules.svg")).unwrap();
    assert!(schedules_svg.contains(">\nlinear\n</text>") && schedules_svg.contains(">\ncosine\n</text>"));

    // per_t: five evaluated runs x four timesteps.
    let per_t = std::fs::read_to_string(dir.join("per_t.csv")).unwrap();
    assert_eq!(per_t.lines().next(), Some("label,variant,seed,t,log_snr,bits,loss"));
    assert_eq!(per_t.lines().count(), 1 + 5 * 4);

    // The same runs give the same files.
    let before: Vec<Vec<u8>> = ["runs.csv", "summary.csv", "paired.csv", "report.md"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    assert!(ddpm(&["analyze", exp.to_str().unwrap()], &results).status.success());
    for (f, b) in ["runs.csv", "summary.csv", "paired.csv", "report.md"].iter().zip(before) {
        assert_eq!(std::fs::read(dir.join(f)).unwrap(), b, "{f} changed");
    }

    // A baseline named in the file, as run keys: the differences turn around (linear − cosine).
    let named = EXPERIMENT.replace(
        "description = \"two schedules, three seeds\"",
        "baseline = { \"diffusion.schedule.name\" = \"cosine\" }",
    );
    std::fs::write(&exp, &named).unwrap();
    let out = ddpm(&["analyze", exp.to_str().unwrap()], &results);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let paired = std::fs::read_to_string(dir.join("paired.csv")).unwrap();
    let fid_row = paired.lines().find(|l| l.contains(",fid,")).unwrap();
    assert!(fid_row.starts_with("schedule=linear,schedule=cosine,fid,2,1.5,"), "{fid_row}");
    // The same by label; a baseline that matches nothing names the file, the key and the variants.
    std::fs::write(
        &exp,
        EXPERIMENT.replace("description = \"two schedules, three seeds\"", "baseline = \"schedule=cosine\""),
    )
    .unwrap();
    assert!(ddpm(&["analyze", exp.to_str().unwrap()], &results).status.success());
    assert_eq!(std::fs::read_to_string(dir.join("paired.csv")).unwrap(), paired);
    std::fs::write(
        &exp,
        EXPERIMENT.replace("description = \"two schedules, three seeds\"", "baseline = \"schedule=quad\""),
    )
    .unwrap();
    let out = ddpm(&["analyze", exp.to_str().unwrap()], &results);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    for part in ["fixture.toml", "experiment.baseline", "matches no run", "schedule=linear; schedule=cosine"] {
        assert!(stderr.contains(part), "{part:?} in {stderr}");
    }
}
