//! End-to-end tests through the real `ddpm` binary. They read MNIST from the repository's `data/`
//! (fetched by `just test` before the tests run, or on demand by the binary).
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ddpm(args: &[&str], results: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args(args)
        .arg("--results")
        .arg(results)
        .env("DDPM_DATA_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("data"))
        .env_remove("DDPM_RESULTS_DIR")
        .output()
        .expect("ddpm binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_experiment(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

/// A few steps on 64 MNIST images at 16x16 with T = 10: seconds on a CPU.
const TINY: &str = r#"
seed = 3
[data]
name = "mnist"
image_size = 16
limit = 64
[diffusion]
timesteps = 10
[train]
steps = 3
batch_size = 8
log_every = 1
[sample]
num_samples = 4
[grid]
"diffusion.schedule" = [{ name = "linear" }, { name = "cosine" }]
"#;

fn run_dirs(results: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(results.join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    dirs
}

#[test]
fn tiny_experiment_writes_every_file_and_a_second_run_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write_experiment(tmp.path(), "tiny.toml", TINY);
    let results = tmp.path().join("results");
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
    assert!(out.status.success(), "stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("schedule=linear") && stdout.contains("schedule=cosine"), "{stdout}");

    let dirs = run_dirs(&results);
    assert_eq!(dirs.len(), 2, "one directory per schedule");
    for dir in &dirs {
        // config.toml is the resolved configuration, and reads back as one.
        let config: toml::Table = toml::from_str(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
        assert_eq!(config["train"]["steps"].as_integer(), Some(3));
        assert_eq!(config["data"]["image_size"].as_integer(), Some(16));

        // metrics.jsonl: one line per step (log_every = 1) with step, loss and images/s.
        let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line["step"].as_u64(), Some(i as u64 + 1));
            let loss = line["loss"].as_f64().unwrap();
            assert!(loss.is_finite() && loss > 0.0, "{line}");
            assert!(line["images_per_sec"].as_f64().unwrap() > 0.0);
        }

        let status: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("status.json")).unwrap()).unwrap();
        assert_eq!(status["state"], "done");
        assert_eq!(status["final_loss"].as_f64(), lines[2]["loss"].as_f64());

        // samples.png: 4 samples of 16x16 in a 2x2 grid with 2 px padding → 2·18 + 2 = 38 px square.
        let png = std::fs::read(dir.join("samples.png")).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let reader = decoder.read_info().unwrap();
        assert_eq!((reader.info().width, reader.info().height), (38, 38));
        assert_eq!(reader.info().color_type, png::ColorType::Grayscale);

        // One TensorBoard event file that starts with a TFRecord frame holding the file version.
        let events: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("events.out.tfevents."))
            .collect();
        assert_eq!(events.len(), 1);
        let bytes = std::fs::read(&events[0]).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert!(bytes[12..12 + len].windows(13).any(|w| w == b"brain.Event:2"));
        assert!(bytes.windows(10).any(|w| w == b"train/loss"));

        // The final weights, with their checksum in status.json.
        let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
        let digest = sha2::Sha256::digest(&weights);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(status["weights_sha256"].as_str(), Some(hex.as_str()));

        let provenance: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("provenance.json")).unwrap()).unwrap();
        assert_eq!(provenance["hash"].as_str(), dir.file_name().unwrap().to_str());
    }
    // Readable links for TensorBoard.
    let link = results.join("experiments/tiny/schedule=cosine");
    assert!(link.join("status.json").is_file(), "{} resolves to a run directory", link.display());

    // Second invocation: both runs are skipped and nothing is rewritten.
    let before = std::fs::metadata(dirs[0].join("samples.png")).unwrap().modified().unwrap();
    let started = std::time::Instant::now();
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("already done").count(), 2, "{stdout}");
    assert!(!stdout.lines().any(|l| l.starts_with("run ")), "nothing trains again:\n{stdout}");
    assert!(started.elapsed().as_secs() < 10);
    assert_eq!(std::fs::metadata(dirs[0].join("samples.png")).unwrap().modified().unwrap(), before);
}

#[test]
fn identity_ignores_key_order_and_spelling_but_not_values() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let plan = |body: &str, extra: &[&str]| {
        let exp = write_experiment(tmp.path(), "e.toml", body);
        let mut args = vec!["plan", exp.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = ddpm(&args, &results);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).lines().skip(1).map(|l| l.split_whitespace().next().unwrap().to_string()).collect::<Vec<_>>()
    };
    let a = plan("[train]\nlr = 0.001\nsteps = 10\n[data]\nimage_size = 32\n", &[]);
    let b = plan("[data]\nimage_size = 32\n[train]\nsteps = 10\nlr = 1e-3\n", &[]);
    assert_eq!(a, b, "same numbers in another order and spelling");
    let c = plan("[train]\nlr = 0.001\nsteps = 11\n", &[]);
    assert_ne!(a, c);
    // The cosine schedule's defaults written out are the same run as the defaults left implicit.
    let d = plan("[diffusion.schedule]\nname = \"cosine\"\n", &[]);
    let e = plan("[diffusion.schedule]\nname = \"cosine\"\ns = 0.008\nmax_beta = 0.999\n", &[]);
    assert_eq!(d, e);
    // Layers: --set overrides the file; log_every is execution-only.
    assert_eq!(plan("[train]\nsteps = 11\n", &["--set", "train.steps=10", "--set", "train.lr=1e-3"]), a);
    assert_eq!(plan("[train]\nlr = 0.001\nsteps = 10\nlog_every = 3\n[data]\nimage_size = 32\n", &[]), a);
}

#[test]
fn invalid_experiments_name_file_key_and_allowed_values() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    let check = |body: &str, expected: &[&str]| {
        let exp = write_experiment(tmp.path(), "bad.toml", body);
        let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(stderr.contains("bad.toml"), "{stderr}");
        for e in expected {
            assert!(stderr.contains(e), "missing {e:?} in:\n{stderr}");
        }
        assert!(!results.join("runs").exists(), "nothing ran");
    };
    check("[train]\nstepz = 3\n", &["key `train.stepz`", "unknown field", "`steps`"]);
    check("[train]\nsteps = \"many\"\n", &["key `train.steps`", "invalid type"]);
    check("[data]\nimage_size = 28\n", &["key `data.image_size` = 28", "multiple of 8"]);
    check("[data]\nname = \"cifar\"\n", &["key `data.name`", "mnist", "fashion_mnist"]);
    check(
        "[diffusion.schedule]\nname = \"cosine\"\nbeta_end = 0.1\n",
        &["key `diffusion.schedule`", "unknown field", "beta_end"],
    );
    check("[grid]\n\"train.lr\" = 0.1\n", &["grid key `train.lr`", "non-empty list"]);
    check("[experimnt]\nname = \"x\"\n", &["key `experimnt`", "unknown field"]);
}

#[test]
fn data_fetch_rejects_unknown_datasets() {
    let out = Command::new(env!("CARGO_BIN_EXE_ddpm")).args(["data", "fetch", "cifar"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("mnist, fashion_mnist"), "{stderr}");
}
