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
        .env("DDPM_EVAL__FID", "false")
        .env("DDPM_EVAL__BPD", "false")
        .env_remove("DDPM_RESULTS_DIR")
        .output()
        .expect("ddpm binary runs")
}

/// Commands that take no `--results`.
fn ddpm_plain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args(args)
        .env("DDPM_DATA_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("data"))
        .env("DDPM_EVAL__FID", "false")
        .env("DDPM_EVAL__BPD", "false")
        .output()
        .expect("ddpm binary runs")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn png_size(path: &Path) -> (u32, u32) {
    let reader = png::Decoder::new(std::io::Cursor::new(std::fs::read(path).unwrap())).read_info().unwrap();
    (reader.info().width, reader.info().height)
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

        // One TensorBoard event file of the training, starting with a TFRecord frame holding the file
        // version, beside the HParams session file the runner writes.
        let mut events: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("events.out.tfevents."))
            .collect();
        assert_eq!(events.len(), 2);
        events.sort_by_key(|p| p.file_name().unwrap().to_str().unwrap().ends_with(".hparams"));
        assert!(events[1].ends_with("events.out.tfevents.0000000000.hparams"), "{events:?}");
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
    check(
        "[train]\nsteps = 10\nwarmup_steps = 11\n",
        &["key `train.warmup_steps` = 11", "an integer from 0 to train.steps (10)"],
    );
    check("[train]\nlr_decay = \"linear\"\n", &["key `train.lr_decay`", "constant", "cosine"]);
    check("[experimnt]\nname = \"x\"\n", &["key `experimnt`", "unknown field"]);
}

#[test]
fn data_fetch_rejects_unknown_datasets() {
    let out = Command::new(env!("CARGO_BIN_EXE_ddpm")).args(["data", "fetch", "cifar"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("mnist, fashion_mnist"), "{stderr}");
}

/// Every option of the diffusion core is reachable from an experiment and changes the resolved run:
/// each override below gives a run hash different from the base and from every other override.
#[test]
fn every_diffusion_option_changes_the_resolved_run() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write_experiment(tmp.path(), "base.toml", "[diffusion]\ntimesteps = 100\n");
    let overrides: &[&[&str]] = &[
        &[],
        &["diffusion.schedule={name=\"linear\", scale_to_T=true}"],
        &["diffusion.schedule={name=\"linear\", beta_end=0.03}"],
        &["diffusion.schedule={name=\"cosine\"}"],
        &["diffusion.schedule={name=\"cosine\", max_beta=0.5}"],
        &["diffusion.schedule={name=\"cosine\", min_beta=1e-3}"],
        &["diffusion.schedule={name=\"quadratic\"}"],
        &["diffusion.schedule={name=\"sigmoid\"}"],
        &["diffusion.target=\"x0\""],
        &["diffusion.target=\"v\""],
        &["diffusion.variance=\"beta\""],
        &["train.loss=\"l1\""],
        &["train.loss=\"huber\""],
        &["train.loss=\"huber\"", "train.huber_delta=0.5"],
        &["train.weighting=\"min_snr\""],
        &["train.weighting=\"min_snr\"", "train.min_snr_gamma=1.0"],
        &["train.timestep_sampling=\"loss_second_moment\""],
        &["train.warmup_steps=10"],
        &["train.lr_decay=\"cosine\""],
        &["train.warmup_steps=10", "train.lr_decay=\"cosine\""],
        &["sample.clip_x0=false"],
        &["sample.trajectory=[100, 50, 0]"],
        &["sample.sampler={name=\"ddpm\", steps=10}"],
        &["sample.sampler={name=\"ddpm\", steps=10, spacing=\"trailing\"}"],
        &["sample.sampler={name=\"ddim\"}"],
        &["sample.sampler={name=\"ddim\", eta=1.0}"],
        &["sample.sampler={name=\"ddim\", steps=10}"],
        &["sample.sampler={name=\"ddim\", spacing=\"leading\"}"],
    ];
    let mut hashes = Vec::new();
    for sets in overrides {
        let mut args = vec!["plan", exp.to_str().unwrap()];
        for set in *sets {
            args.extend(["--set", set]);
        }
        let out = ddpm(&args, &tmp.path().join("results"));
        assert!(out.status.success(), "{sets:?}: {}", text(&out.stderr));
        let hash = text(&out.stdout).lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();
        assert!(!hashes.contains(&hash), "{sets:?} resolves to a run that another setting already gave");
        hashes.push(hash);
    }
}

/// The non-default options train and sample together: v-prediction, Huber loss, min-SNR weighting,
/// importance-sampled timesteps (warm after 10 draws of each of the 10 timesteps), a trajectory, and
/// a grid over two shortened samplers, which draw different samples from the same trained weights.
#[test]
fn non_default_options_train_and_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let body = r#"
seed = 1
[data]
image_size = 16
limit = 64
[diffusion]
timesteps = 10
target = "v"
variance = "beta"
[train]
steps = 30
batch_size = 8
log_every = 10
loss = "huber"
huber_delta = 0.5
warmup_steps = 5
lr_decay = "cosine"
weighting = "min_snr"
timestep_sampling = "loss_second_moment"
[sample]
num_samples = 4
trajectory = [10, 5, 0]
[grid]
"sample.sampler" = [{ name = "ddim", steps = 5 }, { name = "ddpm", steps = 5, spacing = "trailing" }]
"#;
    let exp = write_experiment(tmp.path(), "options.toml", body);
    let results = tmp.path().join("results");
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let mut samples = Vec::new();
    for label in ["sampler=ddim", "sampler=ddpm"] {
        let dir = results.join("experiments/options").join(label);
        // 3 recorded steps of 4 samples: 3·18 + 2 = 56 wide, 4·18 + 2 = 74 high.
        assert_eq!(png_size(&dir.join("trajectory.png")), (56, 74));
        let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
        let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
        assert_eq!(last["loss_quarters"].as_array().unwrap().len(), 4);
        assert!(last["loss"].as_f64().unwrap().is_finite());
        samples.push(std::fs::read(dir.join("samples.png")).unwrap());
        let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
        samples.push(weights);
    }
    assert_eq!(samples[1], samples[3], "the sampler does not change training: same weights");
    assert_ne!(samples[0], samples[2], "different samplers draw different samples");
}

#[test]
fn bits_per_dim_of_a_trained_run_adds_up() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = write_experiment(
        tmp.path(),
        "tiny.toml",
        &TINY.replace("[grid]\n\"diffusion.schedule\" = [{ name = \"linear\" }, { name = \"cosine\" }]\n", ""),
    );
    let results = tmp.path().join("results");
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = run_dirs(&results).pop().unwrap();
    let out = ddpm_plain(&["eval", "bpd", dir.to_str().unwrap(), "--images", "3", "--device", "cpu"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("all 10 timesteps"), "{}", text(&out.stdout));
    let r = json(&dir.join("bpd.json"));
    let get = |k: &str| r[k].as_f64().unwrap();
    assert!(get("total").is_finite() && get("total") > 0.0);
    assert!((get("total") - (get("prior") + get("diffusion") + get("decoder"))).abs() < 1e-9);
    let per_t = r["per_t"].as_array().unwrap();
    assert_eq!(per_t.len(), 10);
    let sum: f64 = per_t[1..].iter().map(|p| p["bits"].as_f64().unwrap()).sum();
    assert!((sum - get("diffusion")).abs() < 1e-9, "the diffusion term is the sum of L_1..L_(T-1)");
    let field = |p: &serde_json::Value, k: &str| p[k].as_f64().unwrap();
    assert!(per_t.windows(2).all(|w| field(&w[0], "log_snr") > field(&w[1], "log_snr")), "log-SNR falls with t");
    assert!(per_t.iter().all(|p| field(p, "loss").is_finite() && field(p, "loss") > 0.0));
    assert_eq!(per_t.iter().map(|p| p["t"].as_u64().unwrap()).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    assert_eq!(r["estimated"], false);
    assert_eq!(r["images"], 3);

    let out =
        ddpm_plain(&["eval", "bpd", dir.to_str().unwrap(), "--images", "2", "--t-stride", "3", "--device", "cpu"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ESTIMATED"), "{}", text(&out.stdout));
    let r = json(&dir.join("bpd.json"));
    assert_eq!(r["estimated"], true);
    assert_eq!(r["timesteps_evaluated"], 4, "t = 1, 4, 7, 10");

    // Corrupt weights are refused.
    // (evaluation uses the EMA weights by default)
    let mut weights = std::fs::read(dir.join("ema.safetensors")).unwrap();
    let last = weights.len() - 1;
    weights[last] ^= 0xff;
    std::fs::write(dir.join("ema.safetensors"), weights).unwrap();
    let out = ddpm_plain(&["eval", "bpd", dir.to_str().unwrap(), "--images", "1", "--device", "cpu"]);
    assert!(!out.status.success(), "stdout {} stderr {}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("checksum mismatch"), "{}", text(&out.stderr));
}

#[test]
fn schedules_command_tabulates_and_plots_all_four() {
    let tmp = tempfile::tempdir().unwrap();
    let plot = tmp.path().join("s.png");
    let out = ddpm_plain(&["schedules", "--T", "1000", "--plot", plot.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for name in ["linear", "cosine", "quadratic", "sigmoid"] {
        assert_eq!(stdout.lines().filter(|l| l.starts_with(name)).count(), 5, "{name}: t = 1, 250, 500, 750, 1000");
    }
    // Linear ᾱ_T = 4.03583e-5 (see the schedule's unit test for the hand computation).
    assert!(
        stdout.lines().any(|l| l.starts_with("linear") && l.contains(" 1000 ") && l.contains("4.03583e-5")),
        "{stdout}"
    );
    assert_eq!(png_size(&plot), (800, 520));
    let bad = ddpm_plain(&["schedules", "--schedules", "linear,cosin"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("allowed are linear, cosine, quadratic, sigmoid"), "{}", text(&bad.stderr));
}

#[test]
fn models_command_lists_every_model_with_its_parameter_count() {
    let out = ddpm_plain(&["models", "--channels", "3", "--image-size", "32"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for (name, count) in [("simple ", "859395"), ("simple_bn", "62438883"), ("unet", ""), ("ddpm_cifar", "35746307")] {
        let line =
            stdout.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_else(|| panic!("{name} in {stdout}"));
        assert!(line.contains(count), "{line}");
    }
    let out = ddpm_plain(&["models", "--image-size", "28"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("simple_bn") && l.contains("cannot take 28x28") && l.contains("multiples of 16")),
        "{stdout}"
    );
}

/// The architecture is an axis like any other: a grid over `model` tables with their own keys
/// trains and samples each, and each run records its parameter count.
#[test]
fn an_experiment_varies_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let body = r#"
[data]
image_size = 16
limit = 16
[diffusion]
timesteps = 10
[train]
steps = 2
batch_size = 4
log_every = 1
[sample]
num_samples = 2
[grid]
model = [
    { name = "simple" },
    { name = "simple_bn", channels = [8, 16, 32] },
    { name = "unet", dim = 16, dim_mults = [1, 2], block = "convnext" },
    { name = "ddpm_cifar", ch = 32, ch_mult = [1, 2], attn_resolutions = [8] },
]
"#;
    let exp = write_experiment(tmp.path(), "models.toml", body);
    let results = tmp.path().join("results");
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu"], &results);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("model simple: 858753 parameters"), "{stdout}");
    for label in ["model=simple", "model=simple_bn", "model=unet", "model=ddpm_cifar"] {
        let status = json(&results.join("experiments/models").join(label).join("status.json"));
        assert_eq!(status["state"], "done", "{label}");
        assert!(status["parameters"].as_i64().unwrap() > 1000, "{label}");
    }
    // A size the model cannot take is refused before anything runs.
    let bad = write_experiment(tmp.path(), "bad.toml", "[model]\nname = \"simple_bn\"\n[data]\nimage_size = 24\n");
    let out = ddpm(&["run", bad.to_str().unwrap(), "--device", "cpu"], &tmp.path().join("r2"));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("a multiple of 16 for model `simple_bn`"), "{}", text(&out.stderr));
}

/// `ddpm bench` on one model with one-step windows: the CSV has the recipe's row with positive speeds,
/// the PyTorch reference ran the same network (equal parameter counts are checked by bench itself),
/// and the profile's phases cover the training step. Speeds are not asserted (that is `just bench`).
#[test]
fn bench_writes_its_table_and_profile() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .env("DDPM_DATA_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("data"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["bench", "--models", "simple", "--steps", "1", "--eval-calls", "1", "--eval-batch", "8"])
        .args(["--device", "cpu", "--compare", "--profile", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = std::fs::read_to_string(tmp.path().join("cpu.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    let row: Vec<&str> = lines[1].split(',').collect();
    let col = |name: &str| row[header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("{name}"))];
    assert_eq!(col("model"), "simple");
    assert_eq!(col("parameters"), "858753");
    for speed in ["train_images_per_sec", "sample_evals_per_sec", "pytorch_train_images_per_sec", "train_ratio"] {
        assert!(col(speed).parse::<f64>().unwrap() > 0.0, "{speed}: {csv}");
    }
    assert!(col("libtorch").starts_with("2.11.0"), "{csv}");
    let profile = std::fs::read_to_string(tmp.path().join("profile-cpu.csv")).unwrap();
    for phase in ["forward and loss", "backward", "adam", "ema"] {
        assert!(profile.contains(&format!("simple,{phase},")), "{profile}");
    }
    let share: f64 = profile.lines().skip(1).map(|l| l.rsplit(',').next().unwrap().parse::<f64>().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-3, "shares add up to 1: {share}");
}
