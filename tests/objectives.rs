//! The options of issue 23 in the schema: wrong combinations are errors naming their keys (through
//! the real binary, with the file), each option is part of the run's identity, every model takes
//! self-conditioning and a learned variance, and a learned-variance, self-conditioned run trains,
//! samples with every sampler and evaluates its bound end to end.
use ddpm::config::RunSpec;
use ddpm::config::{ModelConfig, Objective, RunConfig, SamplerConfig, Target, Variance, Weighting};
use ddpm::models;
use std::path::Path;
use std::process::Command;
use tch::{nn, Device, Kind, Tensor};

type Change = Box<dyn Fn(&mut RunConfig)>;

fn errors(c: &RunConfig) -> Vec<String> {
    c.validate().iter().map(|e| e.to_string()).collect()
}

fn model(text: &str) -> ModelConfig {
    toml::from_str(text).unwrap()
}

#[test]
fn wrong_combinations_name_their_keys() {
    let base = RunConfig::default();
    assert!(errors(&base).is_empty(), "{:?}", errors(&base));
    let cases: Vec<(&str, Change)> = vec![
        ("key `train.objective` = hybrid", Box::new(|c| c.train.objective = Objective::Hybrid)),
        ("key `model.learn_sigma` = true", Box::new(|c| c.model = model("name = 'simple'\nlearn_sigma = true"))),
        (
            "key `diffusion.variance` = beta",
            Box::new(|c| {
                c.model = model("name = 'simple'\nlearn_sigma = true");
                c.train.objective = Objective::Vlb;
                c.diffusion.variance = Variance::Beta;
            }),
        ),
        (
            "key `train.weighting` = min_snr",
            Box::new(|c| {
                c.train.objective = Objective::Vlb;
                c.train.weighting = Weighting::MinSnr;
            }),
        ),
        ("key `diffusion.target` = eps", Box::new(|c| c.diffusion.zero_terminal_snr = true)),
        ("key `train.offset_noise_strength` = -0.1", Box::new(|c| c.train.offset_noise_strength = -0.1)),
        (
            "key `eval.guidance_scale` = 2",
            Box::new(|c| {
                c.model = model("name = 'simple'\nlearn_sigma = true");
                c.train.objective = Objective::Hybrid;
                c.conditioning.classes = true;
                c.eval.guidance_scale = 2.0;
            }),
        ),
    ];
    for (expected, change) in cases {
        let mut c = RunConfig::default();
        change(&mut c);
        let errs = errors(&c);
        assert!(errs.iter().any(|e| e.starts_with(expected)), "expected `{expected}…`, got {errs:?}");
    }
    // The valid combinations of the experiment files.
    for (objective, learned) in
        [(Objective::Simple, false), (Objective::Hybrid, true), (Objective::Vlb, true), (Objective::Vlb, false)]
    {
        let mut c = RunConfig::default();
        c.train.objective = objective;
        c.model = model(&format!("name = 'simple'\nlearn_sigma = {learned}\nself_condition = true"));
        c.diffusion.zero_terminal_snr = true;
        c.diffusion.target = Target::V;
        c.train.offset_noise_strength = 0.1;
        assert!(errors(&c).is_empty(), "{objective:?} learned {learned}: {:?}", errors(&c));
    }
}

/// Through the binary: the error names the file, the key, the value and what is allowed.
#[test]
fn the_binary_reports_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zero_snr_eps.toml");
    std::fs::write(&path, "[diffusion]\nzero_terminal_snr = true\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ddpm")).arg("show").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("zero_snr_eps.toml"), "{err}");
    assert!(err.contains("diffusion.target") && err.contains("`v` or `x0`"), "{err}");
    let path = dir.path().join("sampler_key.toml");
    std::fs::write(&path, "[eval]\nsampler = { name = \"heun\", steps = 5, eta = 1.0 }\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ddpm")).arg("show").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("eta"), "unknown key of heun: {err}");
    // `ddpm show` lists every new key with its value.
    let path = dir.path().join("ok.toml");
    std::fs::write(
        &path,
        "[model]\nname = 'simple'\nlearn_sigma = true\nself_condition = true\n[train]\nobjective = 'hybrid'\n\
         offset_noise_strength = 0.1\n[diffusion]\ntarget = 'v'\nzero_terminal_snr = true\n\
         [eval]\nsampler = { name = 'dpm_solver', steps = 10 }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ddpm")).arg("show").arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "model.learn_sigma = true",
        "model.self_condition = true",
        "train.objective = \"hybrid\"",
        "train.offset_noise_strength = 0.1",
        "diffusion.zero_terminal_snr = true",
        "eval.sampler.name = \"dpm_solver\"",
    ] {
        assert!(text.contains(line), "`{line}` missing from ddpm show:\n{text}");
    }
}

/// Each training option changes the run's hash; the evaluation's sampler does not.
#[test]
fn every_training_option_is_in_the_identity() {
    let hash = |c: RunConfig| RunSpec::new("x", "x".into(), c).unwrap().hash;
    let base = hash(RunConfig::default());
    let mut changed = Vec::new();
    let mut c = RunConfig { model: model("name = 'simple'\nlearn_sigma = true"), ..Default::default() };
    c.train.objective = Objective::Vlb;
    changed.push(hash(c));
    let mut c = RunConfig::default();
    c.train.objective = Objective::Vlb;
    changed.push(hash(c));
    changed.push(hash(RunConfig { model: model("name = 'simple'\nself_condition = true"), ..Default::default() }));
    let mut c = RunConfig::default();
    c.train.offset_noise_strength = 0.1;
    changed.push(hash(c));
    let mut c = RunConfig::default();
    c.diffusion.target = Target::V;
    let v = hash(c.clone());
    c.diffusion.zero_terminal_snr = true;
    changed.push(hash(c));
    assert!(changed.iter().all(|h| *h != base && *h != v), "{changed:?}");
    let mut c = RunConfig::default();
    c.eval.sampler = SamplerConfig::Heun(Default::default());
    assert_eq!(hash(c), base, "the evaluation is not part of the run");
}

/// Every model takes 2·C input channels with self-conditioning and gives 2·C output channels with a
/// learned variance.
#[test]
fn every_model_takes_both_options() {
    for (name, extra) in [
        ("simple", ""),
        ("simple_bn", "channels = [8, 16, 32, 64, 128]"),
        ("unet", "dim = 8"),
        ("lucidrains", "dim = 8"),
        ("ddpm_cifar", "ch = 32\nch_mult = [1, 2]\nattn_resolutions = [16]"),
    ] {
        for (sc, ls) in [(true, false), (false, true), (true, true)] {
            let cfg = model(&format!("name = '{name}'\nself_condition = {sc}\nlearn_sigma = {ls}\n{extra}"));
            let vs = nn::VarStore::new(Device::Cpu);
            let m = models::build(&cfg, 3, 32, None, &vs.root());
            let input = Tensor::randn([2, if sc { 6 } else { 3 }, 32, 32], (Kind::Float, Device::Cpu));
            let out = m.forward_t(&input, &Tensor::from_slice(&[1i64, 500]), None, false);
            assert_eq!(out.size(), vec![2, if ls { 6 } else { 3 }, 32, 32], "{name} sc {sc} ls {ls}");
        }
    }
}

/// A learned-variance (L_hybrid), self-conditioned, offset-noise, zero-SNR v-prediction run trains,
/// samples with every sampler (`ddpm sample`) and evaluates its bound, with finite numbers.
#[test]
fn a_run_with_every_option_trains_samples_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exp = dir.path().join("all.toml");
    std::fs::write(
        &exp,
        "[experiment]\nname = 'all_options'\n[data]\nname = 'mnist'\nimage_size = 16\nlimit = 256\n\
         [model]\nname = 'simple'\nlearn_sigma = true\nself_condition = true\n\
         [diffusion]\ntimesteps = 50\ntarget = 'v'\nzero_terminal_snr = true\n\
         [train]\nsteps = 8\nbatch_size = 16\nobjective = 'hybrid'\noffset_noise_strength = 0.1\nlog_every = 4\ncheckpoint_every = 4\n\
         [sample]\nnum_samples = 4\nsampler = { name = 'heun', steps = 4 }\n\
         [eval]\nfid = false\nbpd = true\nbpd_images = 2\nbpd_t_stride = 5\n",
    )
    .unwrap();
    let results = dir.path().join("results");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ddpm"))
            .args(args)
            .arg("--results")
            .arg(&results)
            .env("DDPM_DATA_DIR", root.join("data"))
            .env_remove("DDPM_RESULTS_DIR")
            .output()
            .unwrap()
    };
    let out = run(&["run", exp.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let runs: Vec<_> = std::fs::read_dir(results.join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1);
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(runs[0].join("status.json")).unwrap()).unwrap();
    let bpd = status["metrics"]["bpd"].as_f64().expect("bits/dim in status.json");
    assert!(bpd.is_finite() && bpd > 0.0, "{bpd}");
    for sampler in ["ddpm", "ddim", "dpm_solver", "euler", "heun", "euler_ancestral"] {
        let png = dir.path().join(format!("{sampler}.png"));
        let out = Command::new(env!("CARGO_BIN_EXE_ddpm"))
            .args(["sample", runs[0].to_str().unwrap(), "--sampler", sampler, "--steps", "5", "--num", "4", "--output"])
            .arg(&png)
            .env("DDPM_DATA_DIR", root.join("data"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{sampler}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(png.exists(), "{sampler}");
    }
}

/// The HParams dashboard's columns of the three experiment files are the keys they vary: the
/// objective, the learned variance, self-conditioning, offset noise, zero SNR and the samplers.
#[test]
fn the_experiments_hparams_name_their_options() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let opts = ddpm::experiment::LoadOptions { profile: None, sets: vec![], use_env: false, profile_reason: None };
    for (file, keys) in [
        ("improved_ddpm.toml", &["train.objective", "model.learn_sigma", "diffusion.schedule.name"][..]),
        (
            "training_tricks.toml",
            &["model.self_condition", "train.offset_noise_strength", "diffusion.zero_terminal_snr", "diffusion.target"]
                [..],
        ),
        ("fast_samplers.toml", &["eval.sampler.name", "eval.sampler.steps"][..]),
    ] {
        let exp = ddpm::experiment::load_experiment(&root.join("experiments").join(file), &opts).unwrap();
        let (columns, _) = ddpm::runner::board::hparams_of(&exp);
        for k in keys {
            assert!(columns.iter().any(|c| c == k), "{file}: HParams column `{k}` missing from {columns:?}");
        }
    }
}
