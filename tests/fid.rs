//! FID and KID with the real Inception network (`data/inception/default_1.pt`, fetched by `just test`):
//! features against PyTorch, the distances on MNIST and Fashion-MNIST, the reference cache, and a run
//! that ends with FID, KID and bits/dim.
use ddpm::config::DatasetName;
use ddpm::data::Split;
use ddpm::eval::fid::{frechet_distance, kid, Gaussian};
use ddpm::eval::images::ImageSet;
use ddpm::eval::inception::Inception;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data() -> PathBuf {
    root().join("data")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ddpm(args: &[&str], data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args(args)
        .env("DDPM_DATA_DIR", data_dir)
        .env_remove("DDPM_RESULTS_DIR")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn features(net: &Inception, set: &str) -> Tensor {
    let set = ImageSet::parse(set).unwrap();
    let mut all = Vec::new();
    set.for_each_batch(&data(), 50, &mut |pixels| {
        all.push(net.features_of_pixels(pixels)?);
        Ok(())
    })
    .unwrap();
    Tensor::cat(&all, 0)
}

#[test]
fn inception_features_match_pytorch_on_the_same_module() {
    let net = Inception::load(&data(), Device::Cpu).unwrap();
    // A synthetic grey 28×28 pattern and the first MNIST test image: every pixel value path.
    let pattern =
        Tensor::from_slice(&(0..28 * 28).map(|k| ((k / 28 * 7 + k % 28 * 13) % 256) as u8).collect::<Vec<_>>());
    let mnist = ddpm::data::load_images_u8(&ddpm::config::DataConfig::named(DatasetName::Mnist), Split::Test, &data())
        .unwrap()
        .narrow(0, 0, 1);
    let images = Tensor::cat(&[pattern.reshape([1, 1, 28, 28]), mnist], 0);
    let ours = net.features_of_pixels(&images).unwrap();
    assert_eq!(ours.size(), vec![2, 2048]);

    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("images.u8");
    std::fs::write(&raw, Vec::<u8>::try_from(images.flatten(0, -1)).unwrap()).unwrap();
    let weights = ddpm::eval::inception::weights_path(&data());
    let out = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/fid/features.py"))
        .args([weights.as_os_str(), raw.as_os_str()])
        .args(["2", "1", "28", "28"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let theirs: Vec<Vec<f32>> = serde_json::from_str(&text(&out.stdout)).unwrap();
    let theirs = Tensor::from_slice(&theirs.concat()).reshape([2, 2048]);
    let diff = (&ours - &theirs).abs().max().double_value(&[]);
    let scale = theirs.abs().max().double_value(&[]);
    assert!(diff < 1e-4, "max |ours - PyTorch| = {diff} (largest feature {scale})");
    assert!(theirs.std(true).double_value(&[]) > 0.01, "features are not constant");
}

#[test]
fn fid_and_kid_on_mnist_and_fashion_mnist() {
    let net = Inception::load(&data(), Device::Cpu).unwrap();
    let a = features(&net, "mnist:test[0:250]");
    let b = features(&net, "mnist:test[5000:5250]");
    let f = features(&net, "fashion_mnist:test[0:250]");
    let (ga, gb, gf) = (Gaussian::of(&a), Gaussian::of(&b), Gaussian::of(&f));
    let own = frechet_distance(&ga, &ga);
    assert!(own.fid.abs() < 1e-6, "FID of a set with itself: {}", own.fid);
    let (ab, ba) = (frechet_distance(&ga, &gb).fid, frechet_distance(&gb, &ga).fid);
    assert!((ab - ba).abs() < 1e-6 * ab, "FID is symmetric: {ab} vs {ba}");
    let af = frechet_distance(&ga, &gf).fid;
    println!("FID mnist/mnist {ab:.3}, mnist/fashion {af:.3}");
    assert!(ab > 0.0 && ab < af / 3.0, "MNIST halves {ab} should be far below MNIST vs Fashion {af}");
    tch::manual_seed(0);
    let k_own = kid(&a, &a, 20, 200);
    let k_ab = kid(&a, &b, 20, 200);
    let k_af = kid(&a, &f, 20, 200);
    println!("KID own {:.5}, mnist/mnist {:.5}, mnist/fashion {:.5}", k_own.mean, k_ab.mean, k_af.mean);
    // Subsets of one set overlap, and shared images enter the cross term: a small negative bias.
    assert!(k_own.mean.abs() < 0.02 * k_af.mean, "KID of a set with itself: {k_own:?}");
    assert!(k_ab.mean < 0.1 * k_af.mean && k_af.mean > 0.0, "{k_ab:?} vs {k_af:?}");
    // The features flow through f64 statistics unchanged by batching.
    let halves = Gaussian::of(&Tensor::cat(&[a.narrow(0, 0, 100), a.narrow(0, 100, 150)], 0));
    assert!((halves.cov - &ga.cov).abs().max().double_value(&[]) < 1e-9);
    let _ = Kind::Float;
}

/// A data directory holding links to MNIST and the network, and nothing cached.
fn fresh_data_dir(dir: &Path) -> PathBuf {
    let d = dir.join("data");
    std::fs::create_dir_all(&d).unwrap();
    for name in ["mnist", "inception"] {
        std::os::unix::fs::symlink(data().join(name), d.join(name)).unwrap();
    }
    d
}

#[test]
fn reference_statistics_are_computed_once_and_then_read_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let d = fresh_data_dir(tmp.path());
    let args = ["fid", "mnist:test[0:40]", "mnist:test[40:80]", "--device", "cpu", "--kid-subset-size", "20"];
    let first = ddpm(&args, &d);
    let first_out = ok(&first);
    assert_eq!(text(&first.stderr).matches("computing").count(), 2, "{}", text(&first.stderr));
    // The cache as written by the first call: the second reads it and writes nothing.
    let snapshot = || -> Vec<(PathBuf, std::time::SystemTime, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(d.join("fid-reference"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.clone(), std::fs::metadata(&p).unwrap().modified().unwrap(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        files
    };
    let cache = snapshot();
    assert_eq!(cache.len(), 4, "statistics and their metadata for both sets: {cache:?}");
    let second = ddpm(&args, &d);
    assert_eq!(snapshot(), cache, "the cached statistics were read, not rewritten");
    assert_eq!(text(&second.stderr).matches("from the cache").count(), 2, "{}", text(&second.stderr));
    assert!(!text(&second.stderr).contains("computing"));
    let fid_line = |s: &str| s.lines().find(|l| l.starts_with("FID")).unwrap().to_string();
    assert_eq!(fid_line(&first_out), fid_line(&ok(&second)));
    // A corrupted cache file is detected and recomputed.
    let cached = std::fs::read_dir(d.join("fid-reference"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .unwrap();
    let mut bytes = std::fs::read(&cached).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&cached, bytes).unwrap();
    let third = ddpm(&args, &d);
    assert!(text(&third.stderr).contains("checksum mismatch"), "{}", text(&third.stderr));
    assert_eq!(fid_line(&ok(&third)), fid_line(&first_out));
}

const EVALUATED: &str = r#"
seed = 3
[data]
image_size = 16
limit = 64
[diffusion]
timesteps = 50
[train]
steps = 20
batch_size = 16
lr = 1e-3
log_every = 5
checkpoint_every = 10
[sample]
num_samples = 4
[eval]
num_samples = 16
batch_size = 8
sampler = { name = "ddim", steps = 5 }
reference_split = "test"
reference_images = 32
kid_subsets = 5
kid_subset_size = 16
bpd_images = 2
bpd_t_stride = 10
every = 10
every_num_samples = 8
"#;

#[test]
fn a_run_ends_with_fid_kid_and_bits_per_dim_and_can_be_evaluated_again() {
    let tmp = tempfile::tempdir().unwrap();
    let d = fresh_data_dir(tmp.path());
    let exp = tmp.path().join("e.toml");
    std::fs::write(&exp, EVALUATED).unwrap();
    let results = tmp.path().join("results");
    let (exp_s, results_s) = (exp.to_str().unwrap(), results.to_str().unwrap());
    let out = ok(&ddpm(&["run", exp_s, "--results", results_s, "--device", "cpu"], &d));
    assert!(out.contains("FID"), "{out}");
    let run = std::fs::read_dir(results.join("runs")).unwrap().next().unwrap().unwrap().path();
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("status.json")).unwrap()).unwrap();
    let fid = status["metrics"]["fid"].as_f64().unwrap();
    assert!(
        fid > 0.0 && status["metrics"]["kid"].as_f64().is_some() && status["metrics"]["bpd"].as_f64().unwrap() > 0.0,
        "{status}"
    );
    assert!(status["eval_spec"].as_str().unwrap().contains("16 samples (DDIM 5 steps"), "{status}");
    assert_eq!(status["best_fid_during"][0], 10, "{status}");
    let history = std::fs::read_to_string(run.join("eval_history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 1, "one evaluation during training (step 10): {history}");

    let evals: Vec<PathBuf> = std::fs::read_dir(run.join("eval")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(evals.len(), 1);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(evals[0].join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["metrics"]["fid"].as_f64(), Some(fid));
    assert_eq!(metrics["bpd"]["images"], 2);
    assert_eq!(metrics["eval"]["batch_size"], 8, "a given batch is kept, and stored with the spec: {metrics}");
    assert!(evals[0].join("samples.png").is_file());

    // TensorBoard holds the metrics at the last step, the evaluation during training at step 10.
    let read = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/tensorboard/read_run.py"))
        .arg(&run)
        .output()
        .unwrap();
    assert!(read.status.success(), "{}", text(&read.stderr));
    let tb: serde_json::Value = serde_json::from_str(&text(&read.stdout)).unwrap();
    for tag in ["eval/fid", "eval/kid", "eval/bpd", "eval/bpd_decoder"] {
        assert_eq!(tb["scalars"][tag][0][0], 20, "{tag}: {}", tb["scalars"]);
    }
    assert!((tb["scalars"]["eval/fid"][0][1].as_f64().unwrap() - fid).abs() < 1e-3 * fid);
    assert_eq!(tb["scalars"]["eval_during/fid"][0][0], 10);
    assert_eq!(tb["images"]["eval/samples"][0][0], 20);

    // Running again does nothing; another spec adds a result; the same spec again is stored.
    let again = ok(&ddpm(&["run", exp_s, "--results", results_s, "--device", "cpu"], &d));
    assert!(again.contains("already done"), "{again}");
    let other =
        ok(&ddpm(&["eval", exp_s, "--results", results_s, "--spec", "num_samples=12", "--spec", "bpd=false"], &d));
    assert!(other.contains(" new ") && other.contains("12 samples"), "{other}");
    assert_eq!(std::fs::read_dir(run.join("eval")).unwrap().count(), 2);
    let started = Instant::now();
    let stored = ok(&ddpm(&["eval", run.to_str().unwrap(), "--spec", "num_samples=12", "--spec", "bpd=false"], &d));
    assert!(stored.contains(" yes ") && started.elapsed().as_secs() < 10, "{stored}");
    // The same spec asking for the bound too computes only the bound and keeps the FID.
    let more = ok(&ddpm(&["eval", run.to_str().unwrap(), "--spec", "num_samples=12"], &d));
    assert!(more.contains(" new "), "{more}");
    let other_dir = std::fs::read_dir(run.join("eval")).unwrap().map(|e| e.unwrap().path()).find(|p| *p != evals[0]);
    let other_metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(other_dir.unwrap().join("metrics.json")).unwrap()).unwrap();
    assert!(other_metrics["metrics"]["fid"].as_f64().is_some() && other_metrics["bpd"]["total"].as_f64().is_some());
    let read = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/tensorboard/read_run.py"))
        .arg(&run)
        .output()
        .unwrap();
    let tb: serde_json::Value = serde_json::from_str(&text(&read.stdout)).unwrap();
    let tag = format!("eval@{}/fid", other_metrics["spec_hash"].as_str().unwrap());
    let (logged, stored) =
        (tb["scalars"][&tag][0][1].as_f64().unwrap(), other_metrics["metrics"]["fid"].as_f64().unwrap());
    assert!((logged - stored).abs() < 1e-5 * stored, "{tag}: {logged} vs {stored}");
    assert_eq!(tb["scalars"]["eval/fid"].as_array().unwrap().len(), 1, "other specs do not mix into eval/fid");
    let bad = ddpm(&["eval", run.to_str().unwrap(), "--spec", "num_sample=12"], &d);
    assert!(!bad.status.success() && text(&bad.stderr).contains("num_sample"), "{}", text(&bad.stderr));

    // Samples as a grid and as single files, which `ddpm fid` reads as a folder.
    let grid = tmp.path().join("grid.png");
    let pngs = tmp.path().join("pngs");
    ok(&ddpm(
        &["sample", run.to_str().unwrap(), "-n", "6", "--steps", "5", "-o", grid.to_str().unwrap()]
            .into_iter()
            .chain(["--out-dir", pngs.to_str().unwrap(), "--device", "cpu"])
            .collect::<Vec<_>>(),
        &d,
    ));
    assert!(grid.is_file());
    assert_eq!(std::fs::read_dir(&pngs).unwrap().count(), 6);
    let fid_out = ok(&ddpm(&["fid", pngs.to_str().unwrap(), "mnist:test[0:32]", "--kid-subset-size", "6"], &d));
    assert!(fid_out.contains("FID") && fid_out.contains("6 images"), "{fid_out}");
}

/// The evaluation's batch is the network's batch (`eval.batch_size`: 64 on the CPU, 500 on CUDA), but
/// a set's statistics do not depend on it: at batch 50, 64 and 128 the features of the same 120
/// images and their moment sums (added 50 rows at a time from the first image) are bitwise equal.
#[test]
fn set_statistics_do_not_depend_on_the_network_batch() {
    let set = ImageSet::parse("mnist:test[0:120]").unwrap();
    let stats = |batch: i64| {
        let mut net = Inception::load(&data(), Device::Cpu).unwrap();
        net.batch = batch;
        ddpm::eval::reference::set_stats(&set, &net, &data()).unwrap()
    };
    let base = stats(50);
    assert_eq!(base.gaussian.n, 120);
    for batch in [64, 128] {
        let other = stats(batch);
        assert!(other.features.equal(&base.features), "features at batch {batch}");
        assert!(other.gaussian.mean.equal(&base.gaussian.mean), "mean at batch {batch}");
        assert!(other.gaussian.cov.equal(&base.gaussian.cov), "covariance at batch {batch}");
    }
}
