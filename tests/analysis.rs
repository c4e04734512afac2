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
        "profile",
        "hardware",
        "cpu_isa",
    ] {
        assert!(header.contains(&col), "{col} in {header:?}");
    }
    assert_eq!(runs.lines().count(), 7);
    // The profile the runs were made with: the file's default here (no --profile); these attempts
    // record no hardware (as before hardware records), so its columns are empty.
    assert!(runs.lines().skip(1).all(|l| l.ends_with(",20,cpu (2 threads),abc123,false,default,,")), "{runs}");
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

    // The report opens with the verdict table: the winner per metric, its paired difference with the
    // interval, whether it is decided after Holm's correction, and the seeds that would decide it.
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let row = report.lines().find(|l| l.starts_with("| `fid` |")).unwrap_or_else(|| panic!("{report}"));
    assert!(
        row.starts_with(
            "| `fid` | `schedule=cosine` (9.500) | `schedule=cosine`: -1.500 [-7.853, 4.853] | 2 | no (Holm p "
        ),
        "{row}"
    );
    assert!(report.find("## Verdicts").unwrap() < report.find("## Runs").unwrap());
    // No run was evaluated twice and the fid comparison is undecided: the report says how to learn
    // whether samples or seeds would decide it.
    assert!(
        report.contains("More seeds or samples: not measured here") && report.contains("\"eval.replicate\" = [0, 1]")
    );
    // Every FID beside its floor; the confident share ranked higher-is-better.
    assert!(
        report.contains("`fid` of `schedule=cosine`: floor 5.000 (held-out real images under the same spec)"),
        "{report}"
    );

    // verdicts: the p-value by hand, and the seeds needed against SciPy's noncentral t. Differences
    // −1 and −2: mean −1.5, sd √½, t = −3 on 1 df, p = 1 − 2·atan(3)/π; d = 1.5/√½, planned at
    // α/m for the m comparisons in the family.
    let py = format!(
        "import polars as pl, json; v = pl.read_parquet('{}/verdicts.parquet'); \
         print(json.dumps({{'fid': v.filter(pl.col('metric') == 'fid').to_dicts()[0], \
         'family': int(v['p'].is_not_null().sum())}}))",
        dir.display()
    );
    let out = Command::new(root().join(".venv/bin/python")).args(["-c", &py]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let fid = &v["fid"];
    let p = 1.0 - 2.0 * 3f64.atan() / std::f64::consts::PI;
    assert!((fid["p"].as_f64().unwrap() - p).abs() < 1e-9, "{fid}");
    assert_eq!((fid["decided"].as_bool(), fid["variant"].as_str()), (Some(false), Some("schedule=cosine")));
    let m = v["family"].as_i64().unwrap();
    assert!(m >= 2, "{v}");
    let scipy = format!(
        "from scipy import stats; import math\n\
         a, d = 0.05 / {m}, 1.5 / math.sqrt(0.5)\n\
         def power(n):\n    c = stats.t.ppf(1 - a / 2, n - 1); l = d * math.sqrt(n)\n    \
         return stats.nct.sf(c, n - 1, l) + stats.nct.cdf(-c, n - 1, l)\n\
         print(next(n for n in range(2, 1000) if power(n) >= 0.8))"
    );
    let out = Command::new(root().join(".venv/bin/python")).args(["-c", &scipy]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(fid["seeds_needed"].as_i64().unwrap().to_string(), text(&out.stdout).trim(), "{fid}");
    assert!(row.ends_with(&format!("| {} |", text(&out.stdout).trim())), "{row}");
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

    // Decided again from the record alone (runs.parquet; no run directories): the same report.
    std::fs::rename(results.join("runs"), results.join("runs.moved")).unwrap();
    let out = ddpm(&["analyze", exp.to_str().unwrap(), "--from-record"], &results);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(dir.join("report.md")).unwrap(), report, "the report from the record");
    std::fs::rename(results.join("runs.moved"), results.join("runs")).unwrap();

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

/// Evaluation replicates through real (seconds-long) runs: two schedules × two seeds, each evaluated
/// as replicates 0, 1 and 2 of one training.
const REPLICATES: &str = r#"
seed = 4
[experiment]
name = "tiny_replicates"
seeds = [0, 1]
[data]
name = "mnist"
image_size = 16
limit = 128
[diffusion]
timesteps = 20
[train]
steps = 8
batch_size = 16
log_every = 4
checkpoint_every = 8
[sample]
num_samples = 4
[eval]
num_samples = 16
sampler = { name = "ddim", steps = 4 }
reference_images = 32
kid_subsets = 10
kid_subset_size = 8
bpd_images = 2
[grid]
"diffusion.schedule.name" = ["linear", "cosine"]
"eval.replicate" = [0, 1, 2]
"#;

#[test]
fn evaluation_replicates_split_the_variance_without_retraining() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("replicates.toml");
    std::fs::write(&exp, REPLICATES).unwrap();
    let results = tmp.path().join("results");
    let out = Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args(["run", exp.to_str().unwrap(), "--device", "cpu", "--results"])
        .arg(&results)
        .env("DDPM_DATA_DIR", root().join("data"))
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    // Four trainings, each evaluated three times: replicates are evaluations, not runs.
    let runs: Vec<PathBuf> = std::fs::read_dir(results.join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 4);
    let dir = results.join("analysis/tiny_replicates");
    let table = std::fs::read_to_string(dir.join("runs.csv")).unwrap();
    assert_eq!(table.lines().count(), 1 + 4, "{table}");
    assert!(!table.contains("replicate=1"), "{table}");

    // Replicate 0 is the evaluation as it was before replicates existed: its spec hash is that of the
    // same [eval] without the key.
    let mut plain = EvalConfig {
        num_samples: 16,
        reference_images: 32,
        kid_subsets: 10,
        kid_subset_size: 8,
        bpd_images: 2,
        ..Default::default()
    };
    plain.sampler = toml::from_str::<toml::Table>("name = \"ddim\"\nsteps = 4").unwrap().try_into().unwrap();
    let plain = plain.for_device(false);
    for run in &runs {
        let evals: Vec<String> = std::fs::read_dir(run.join("eval"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(evals.len(), 3, "{evals:?}");
        assert!(evals.contains(&spec_hash(&plain)), "{evals:?} holds the plain spec {}", spec_hash(&plain));
    }

    // The replicates' metrics: other samples, other bound noise and test images, the same weights.
    let py = format!(
        "import polars as pl, json; r = pl.read_parquet('{0}/replicates.parquet'); \
         v = pl.read_parquet('{0}/variance.parquet'); \
         f = r.filter((pl.col('metric') == 'fid') & (pl.col('label') == 'schedule=linear,seed=0')).sort('replicate'); \
         b = r.filter((pl.col('metric') == 'bpd') & (pl.col('label') == 'schedule=linear,seed=0')).sort('replicate'); \
         print(json.dumps({{'fid': f['value'].to_list(), 'bpd': b['value'].to_list(), 'reps': r['replicate'].unique().sort().to_list(), \
         'variance': v.filter(pl.col('metric') == 'fid').to_dicts()}}))",
        dir.display()
    );
    let out = Command::new(root().join(".venv/bin/python")).args(["-c", &py]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["reps"], serde_json::json!([0, 1, 2]));
    let fid: Vec<f64> = serde_json::from_value(v["fid"].clone()).unwrap();
    let bpd: Vec<f64> = serde_json::from_value(v["bpd"].clone()).unwrap();
    assert_eq!((fid.len(), bpd.len()), (3, 3));
    assert!(fid[0] != fid[1] && fid[1] != fid[2] && bpd[0] != bpd[1], "{fid:?} {bpd:?}");
    // Replicate 0 in the replicates table is the run's own FID.
    let own = table.lines().find(|l| l.starts_with("\"schedule=linear,seed=0\"")).unwrap();
    assert!(own.contains(&fid[0].to_string()), "{own} has {}", fid[0]);

    // The decomposition of linear's FID by hand from the table: σ²_e pooled within seeds, s² between
    // the seeds' replicate-0 values.
    let py = format!(
        "import polars as pl, json; r = pl.read_parquet('{0}/replicates.parquet').filter((pl.col('metric') == 'fid') & (pl.col('variant') == 'schedule=linear')); \
         print(json.dumps([r.filter(pl.col('seed') == s).sort('replicate')['value'].to_list() for s in (0, 1)]))",
        dir.display()
    );
    let out = Command::new(root().join(".venv/bin/python")).args(["-c", &py]).output().unwrap();
    let groups: Vec<Vec<f64>> = serde_json::from_str(&text(&out.stdout)).unwrap();
    let within: f64 = groups
        .iter()
        .map(|g| {
            let m = g.iter().sum::<f64>() / 3.0;
            g.iter().map(|x| (x - m).powi(2)).sum::<f64>()
        })
        .sum::<f64>()
        / 4.0;
    let between = (groups[0][0] - groups[1][0]).powi(2) / 2.0;
    let row = v["variance"].as_array().unwrap().iter().find(|r| r["variant"] == "schedule=linear").unwrap();
    assert!((row["variance_evaluation"].as_f64().unwrap() - within).abs() < 1e-9 * within.max(1.0), "{row}");
    assert!((row["variance_between_seeds"].as_f64().unwrap() - between).abs() < 1e-9 * between.max(1.0), "{row}");

    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        report.contains("## Where the variance comes from")
            && report.contains("more seeds or samples?")
            && !report.contains("not measured here"),
        "{report}"
    );
    // The record alone decides the same way.
    let before = report.clone();
    let out = ddpm(&["analyze", exp.to_str().unwrap(), "--from-record"], &results);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let verdicts = |r: &str| r[r.find("## Verdicts").unwrap()..r.find("## Runs").unwrap()].to_string();
    assert_eq!(verdicts(&after), verdicts(&before));
    // The header keeps the record's profile; why it was chosen is known only to the run that chose it.
    assert!(before.contains("Profile: `default` (default (--device cpu, no --profile)).\n"), "{before}");
    assert!(after.contains("Profile: `default`.\n"), "{after}");
}
