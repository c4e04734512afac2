//! The cluster-conditional DDPM fitted by EM (`[cluster]`): its scores against scikit-learn's own
//! (run from `.venv`), the recovery of two synthetic clusters from a random start, its outputs, the
//! validation of its keys, and resume after SIGKILL in the middle of the EM.
use ddpm::cluster::scores;
use polars::prelude::SerReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ddpm"));
    c.env("DDPM_DATA_DIR", root().join("data")).env_remove("DDPM_RESULTS_DIR");
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

/// A small deterministic generator (SplitMix64), so the test's data does not depend on a crate.
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn scores_equal_scikit_learns_on_random_labelings() {
    let mut rng = Mix(11);
    let mut cases = Vec::new();
    for (n, labels, clusters) in [(50, 2, 2), (200, 10, 10), (300, 5, 8), (120, 7, 3), (40, 1, 4), (64, 3, 1)] {
        let y: Vec<i64> = (0..n).map(|_| rng.below(labels) as i64).collect();
        // Half the cases agree with the labels more than chance: a relabelled copy with some noise.
        let k: Vec<i64> = y
            .iter()
            .map(|&l| if rng.below(3) == 0 { rng.below(clusters) as i64 } else { (l * 7 + 3) % clusters as i64 })
            .collect();
        cases.push((y, k));
    }
    let dir = tempfile::tempdir().unwrap();
    let json: Vec<_> = cases.iter().map(|(y, k)| serde_json::json!({"labels": y, "clusters": k})).collect();
    let path = dir.path().join("cases.json");
    std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    let out = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/clustering/sklearn_scores.py"))
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sklearn_scores.py failed (`just test` installs scikit-learn):\n{}",
        text(&out.stderr)
    );
    let theirs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for ((y, k), s) in cases.iter().zip(&theirs) {
        let ours =
            [("nmi", scores::nmi(y, k)), ("ari", scores::ari(y, k)), ("accuracy", scores::matched_accuracy(y, k))];
        for (name, v) in ours {
            let want = s[name].as_f64().unwrap();
            assert!((v - want).abs() < 1e-12, "{name}: ours {v}, scikit-learn {want} ({} items)", y.len());
        }
    }
}

/// 16 × 16 grey PNGs: `discs` (radius 5) and `squares` (side 9), each at a jittered centre, on a
/// noisy dark background; 30 % discs.
fn two_shapes(folder: &Path) {
    let mut rng = Mix(3);
    for (class, count) in [("discs", 36), ("squares", 84)] {
        std::fs::create_dir_all(folder.join(class)).unwrap();
        for i in 0..count {
            let (cx, cy) = (8.0 + rng.below(3) as f64 - 1.0, 8.0 + rng.below(3) as f64 - 1.0);
            let pixels: Vec<u8> = (0..16 * 16)
                .map(|p| {
                    let (x, y) = ((p % 16) as f64 + 0.5, (p / 16) as f64 + 0.5);
                    let inside = if class == "discs" {
                        (x - cx).powi(2) + (y - cy).powi(2) <= 25.0
                    } else {
                        (x - cx).abs() <= 4.5 && (y - cy).abs() <= 4.5
                    };
                    let noise = rng.below(21) as i64 - 10;
                    ((if inside { 220 } else { 30 }) + noise).clamp(0, 255) as u8
                })
                .collect();
            let file = std::fs::File::create(folder.join(class).join(format!("{i:03}.png"))).unwrap();
            let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 16, 16);
            enc.set_color(png::ColorType::Grayscale);
            enc.set_depth(png::BitDepth::Eight);
            enc.write_header().unwrap().write_image_data(&pixels).unwrap();
        }
    }
}

fn experiment(images: &Path, init: &str, steps: usize, strata: usize) -> String {
    format!(
        "seed = 1\n[experiment]\nname = 'two_shapes'\n\
         [data]\nname = 'image_folder'\npath = {:?}\nchannels = 1\nimage_size = 16\n\
         [model]\nname = 'simple'\n[diffusion]\ntimesteps = 100\n\
         [train]\nsteps = {steps}\nbatch_size = 30\nlr = 1e-3\nlog_every = 20\ncheckpoint_every = 20\n\
         [cluster]\nq = 2\ne_step_every = 40\ne_step_timesteps = {strata}\ninit = '{init}'\n\
         [sample]\nnum_samples = 4\nsampler = {{ name = 'ddim', steps = 10 }}\n\
         [eval]\nfid = false\nbpd = false\n",
        images.display().to_string()
    )
}

fn run_dir(results: &Path) -> PathBuf {
    std::fs::read_dir(results.join("runs")).unwrap().next().unwrap().unwrap().path()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// From a random start, EM separates discs from squares: ARI above 0.9 and both weights within 0.1
/// of the truth (0.3, 0.7); the outputs are there: every image's assignment in Parquet, π per E-step,
/// a grid per cluster, the scores in `status.json` beside k-means on pixels.
#[test]
fn em_recovers_two_synthetic_clusters_from_a_random_start() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    two_shapes(&images);
    let exp = tmp.path().join("two_shapes.toml");
    std::fs::write(&exp, experiment(&images, "random", 320, 8)).unwrap();
    let results = tmp.path().join("r");
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let dir = run_dir(&results);
    if let Ok(keep) = std::env::var("CLUSTERING_TEST_KEEP") {
        let _ = std::process::Command::new("cp").args(["-r", dir.to_str().unwrap(), &keep]).status();
    }
    let status = json(&dir.join("status.json"));
    let m = &status["train_metrics"];
    eprintln!("two shapes, from a random start: {m}");
    let ari = m["cluster_ari"].as_f64().unwrap();
    assert!(ari > 0.9, "ARI {ari}: {m}\n{}", text(&out.stdout));
    let history = json(&dir.join("em_history.json"));
    let steps: Vec<u64> = history.as_array().unwrap().iter().map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![0, 40, 80, 120, 160, 200, 240, 280, 320], "an E-step every 40 steps and after the last");
    let pi: Vec<f64> = history.as_array().unwrap().last().unwrap()["pi"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    let (small, large) = (pi[0].min(pi[1]), pi[0].max(pi[1]));
    assert!((small - 0.3).abs() < 0.1 && (large - 0.7).abs() < 0.1, "π = {pi:?}");
    // Every image's assignment, read back with polars.
    let file = std::fs::File::open(dir.join("assignments.parquet")).unwrap();
    let df = polars::prelude::ParquetReader::new(file).finish().unwrap();
    assert_eq!(df.height(), 120);
    for c in ["index", "label", "cluster", "responsibility", "kmeans"] {
        assert!(df.column(c).is_ok(), "assignments.parquet lacks {c}: {df}");
    }
    // A grid per cluster (16 samples beside 16 images: 8 columns × 4 rows of 18 px) and the overview.
    for k in 0..2 {
        let f = std::fs::File::open(dir.join(format!("clusters/cluster_{k}.png"))).unwrap();
        let info = png::Decoder::new(std::io::BufReader::new(f)).read_info().unwrap();
        assert_eq!((info.info().width, info.info().height), (8 * 18 + 2, 4 * 18 + 2));
    }
    assert!(dir.join("clusters.png").exists());
    // k-means on pixels, in the same record, groups the images by where the shape sits (the jitter
    // moves more pixels than the shape does): the diffusion model's bound sees the shape.
    let kmeans = m["kmeans_ari"].as_f64().unwrap();
    assert!(kmeans < ari, "k-means ARI {kmeans} against EM's {ari}");
    for key in ["cluster_nmi", "cluster_accuracy", "kmeans_nmi", "kmeans_accuracy", "em_refills", "em_collapses"] {
        assert!(m[key].as_f64().is_some(), "{key} in {m}");
    }
    // The analysis: π over EM in the curves table and its figures; the scores in the report, the
    // k-means baseline beside the verdict.
    let analysis = results.join("analysis/two_shapes");
    for f in [
        "em_pi.png",
        "em_changed.png",
        "em_nmi.png",
        "em_estimate_nmi.png",
        "em_estimate_keeps.png",
        "em_pi_estimate.png",
        "curves.parquet",
    ] {
        assert!(analysis.join(f).exists(), "{f} in {}", analysis.display());
    }
    let report = std::fs::read_to_string(analysis.join("report.md")).unwrap();
    assert!(report.contains("`cluster_ari`") && report.contains("k-means ARI"), "{report}");
    let curves = std::fs::read_to_string(analysis.join("curves.csv")).unwrap();
    assert_eq!(curves.lines().filter(|l| l.contains(",em_pi_max,")).count(), 9, "π at the start and 8 E-steps");
    // The scores of each E-step's assignment; the last is the run's.
    let last = &history.as_array().unwrap().last().unwrap()["scores"];
    assert_eq!(last["ari"].as_f64(), Some(ari), "{last}");
    assert_eq!(curves.lines().filter(|l| l.contains(",em_nmi,")).count(), 9, "NMI at the start and 8 E-steps");
}

/// Killed with SIGKILL after a checkpoint that follows an E-step, the run resumes and ends with the
/// same assignments, weights and E-step history as an uninterrupted one.
#[test]
fn a_run_killed_mid_em_resumes_to_the_same_assignments() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    two_shapes(&images);
    let exp = tmp.path().join("resume.toml");
    std::fs::write(&exp, experiment(&images, "kmeans_pixels", 120, 4)).unwrap();
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
    let started = Instant::now();
    // The checkpoint at step 60 follows the E-step at 40 and precedes the one at 80.
    while !(killed.join("runs").exists() && run_dir(&killed).join("checkpoints/step-00000060.json").exists()) {
        assert!(started.elapsed() < Duration::from_secs(300), "timed out waiting for the checkpoint at step 60");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &killed);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("resuming from the checkpoint at step"), "{}", text(&out.stdout));
    let (a, b) = (run_dir(&clean), run_dir(&killed));
    for f in ["model.safetensors", "ema.safetensors", "assignments.parquet"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
    let strip = |v: serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| (r["step"].clone(), r["pi"].clone(), r["changed"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(json(&a.join("em_history.json"))), strip(json(&b.join("em_history.json"))));
}

/// Wrong `[cluster]` settings are errors naming the key and what is allowed.
#[test]
fn cluster_keys_are_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("r");
    for (body, key, allowed) in [
        ("[cluster]\nq = 1\n", "cluster.q", "0 (off) or an integer >= 2"),
        ("[cluster]\ne_step_every = 5\n", "cluster.q", "when any other `cluster` key is set"),
        (
            "[conditioning]\nclasses = true\n[cluster]\nq = 3\n",
            "conditioning.classes",
            "the clusters are the model's classes",
        ),
        (
            "[train]\nsteps = 10\n[cluster]\nq = 3\ne_step_every = 10\n",
            "cluster.e_step_every",
            "at least one E-step before the last",
        ),
        ("[cluster]\nq = 3\ntemperature = 0.5\n", "cluster.temperature", ">= 1"),
        ("[cluster]\nq = 3\ninit = 'spectral'\n", "init", "kmeans_pixels"),
        ("[cluster]\nq = 3\nmin_weight = 0.5\n", "cluster.min_weight", "< 1/q"),
    ] {
        let exp = tmp.path().join("bad.toml");
        std::fs::write(&exp, body).unwrap();
        let out = ddpm(&["plan", exp.to_str().unwrap()], &results);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{body} was accepted");
        assert!(err.contains(key) && err.contains(allowed) && err.contains("bad.toml"), "{body}: {err}");
    }
}

/// The bound of a clustering run is the mixture's (it was refused): a run on 64 MNIST images with
/// `eval.bpd = true` reports bits/dim, and `ddpm eval bpd` writes π (the final E-step's), each
/// cluster's mean bound and the mean of the best cluster's, with the mixture's total between the best
/// cluster's (−log Σ π_k e^{−L_k} ≥ min_k L_k) and the π-weighted mean (Jensen).
#[test]
fn the_bound_of_a_clustering_run_is_the_mixtures() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tmp.path().join("mixture.toml");
    std::fs::write(
        &exp,
        "seed = 2\n[data]\nimage_size = 16\nlimit = 64\n[diffusion]\ntimesteps = 20\n[model]\nname = 'simple'\n\
         [train]\nsteps = 20\nbatch_size = 16\nlog_every = 10\ncheckpoint_every = 10\n\
         [cluster]\nq = 2\ne_step_every = 10\ne_step_timesteps = 4\n\
         [sample]\nnum_samples = 4\nsampler = { name = 'ddim', steps = 5 }\n\
         [eval]\nfid = false\nbpd = true\nbpd_images = 8\n",
    )
    .unwrap();
    let results = tmp.path().join("r");
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let dir = run_dir(&results);
    let status = json(&dir.join("status.json"));
    let bpd = status["metrics"]["bpd"].as_f64().unwrap();
    assert!(bpd.is_finite() && bpd > 0.0, "{status}");
    let out = bin().args(["eval", "bpd", dir.to_str().unwrap(), "--images", "8", "--device", "cpu"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = json(&dir.join("bpd.json"));
    let mixture = &report["mixture"];
    let floats = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect::<Vec<_>>();
    let history = json(&dir.join("em_history.json"));
    assert_eq!(floats(&mixture["pi"]), floats(&history.as_array().unwrap().last().unwrap()["pi"]));
    let (pi, per_cluster) = (floats(&mixture["pi"]), floats(&mixture["per_cluster"]));
    let total = report["total"].as_f64().unwrap();
    let best = mixture["best_cluster"].as_f64().unwrap();
    let weighted: f64 = pi.iter().zip(&per_cluster).map(|(p, l)| p * l).sum();
    assert!(best <= total + 1e-12 && total <= weighted + 1e-12, "best {best}, mixture {total}, weighted {weighted}");
    assert!(per_cluster.iter().all(|&l| l >= best - 1e-12), "{report}");
    // Per image, −log Σ π_k e^{−L_k} ≤ min_k (L_k − log π_k): in bits/dim over D = 16·16 dimensions
    // the mixture is at most max_k(−log π_k)/(D ln 2) above the best cluster (a few thousandths; a
    // mixture taken over bits/dim instead of nats would be tenths above).
    let slack = pi.iter().map(|p| -p.ln()).fold(0.0, f64::max) / (256.0 * std::f64::consts::LN_2);
    assert!(total <= best + slack + 1e-12, "mixture {total}, best cluster {best}, allowed {slack} above");
    // The run's own evaluation is the same computation on the same images and noise.
    assert!((total - bpd).abs() < 1e-6, "ddpm eval bpd {total} against the run's {bpd}");
}
