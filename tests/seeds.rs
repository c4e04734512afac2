//! Each seed recipe's model, training step and sampler step against the seed's own PyTorch code
//! (`tests/seeds/seed_models.py`: transcribed from `../shared/seeds/`, and lucidrains' `Unet` and
//! `GaussianDiffusion` from the PyPI package denoising-diffusion-pytorch 2.3.4 for seed 001), run in
//! `.venv` on the same weights, inputs and noise.
//!
//! - Models: ours builds and initialises the weights, the Python side loads them (every parameter
//!   and buffer, names mapped) and both run x_t, t in training mode, then in evaluation mode.
//! - Training step: the seed's loss and one Adam step on the same x_0, t and noise (the seed draws its
//!   noise from torch's generator after the same seed as ours; the script checks it equals ours).
//! - Sampler: one reverse step of the seed's `p_sample` at several t, the noise drawn by both after
//!   the same manual seed, against `sampler::ddpm_step` with the recipe's options.
use ddpm::config::{DiffusionConfig, LossKind, ModelConfig, ScheduleConfig, Target, TrainConfig, Variance, Weighting};
use ddpm::diffusion::sampler::{ddpm_step, SampleOptions};
use ddpm::diffusion::Diffusion;
use ddpm::diffusion::NoiseSchedule;
use ddpm::models::{self, Denoiser};
use ddpm::train::optim::Adam;
use ddpm::train::step::{batch_loss, Batch};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{nn, Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-5;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Seed {
    model: &'static str,
    config: &'static str,
    channels: i64,
    size: i64,
}

const BLOG: Seed = Seed { model: "blog", config: "name = 'simple'", channels: 1, size: 32 };
const NOTEBOOK: Seed = Seed { model: "notebook", config: "name = 'simple_bn'", channels: 1, size: 32 };
const LUCIDRAINS: Seed = Seed { model: "lucidrains", config: "name = 'lucidrains'", channels: 1, size: 32 };

fn model_config(toml_text: &str) -> ModelConfig {
    toml::from_str(toml_text).unwrap()
}

/// Builds the seed's model here with weights from libtorch's generator after `seed`.
fn build(s: &Seed, seed: i64) -> (nn::VarStore, Box<dyn Denoiser>) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let m = models::build(&model_config(s.config), s.channels, s.size, None, &vs.root());
    (vs, m)
}

fn save(path: &Path, tensors: &[(&str, Tensor)]) {
    let named: Vec<(String, Tensor)> = tensors.iter().map(|(k, t)| (k.to_string(), t.contiguous())).collect();
    Tensor::write_safetensors(&named, path).unwrap();
}

fn save_weights(vs: &nn::VarStore, path: &Path) {
    let named: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(k, t)| (k, t.contiguous())).collect();
    Tensor::write_safetensors(&named, path).unwrap();
}

/// Runs `seed_models.py COMMAND WHICH weights inputs out` and reads `out`.
fn python(command: &str, which: &str, dir: &Path) -> HashMap<String, Tensor> {
    let out = dir.join(format!("{command}-{which}-out.safetensors"));
    let status = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/seeds/seed_models.py"))
        .args([command, which])
        .arg(dir.join("weights.safetensors"))
        .arg(dir.join("inputs.safetensors"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "seed_models.py {command} {which} failed (pip install denoising-diffusion-pytorch==2.3.4 into .venv: `just test` \
         does):\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
    Tensor::read_safetensors(&out).unwrap().into_iter().collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn inputs(s: &Seed, timesteps: i64) -> (Tensor, Tensor) {
    tch::manual_seed(11);
    let x = Tensor::randn([3, s.channels, s.size, s.size], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[0i64, timesteps / 2, timesteps - 1]);
    (x, t)
}

/// Our model and the seed's on the same weights and inputs, training mode then evaluation mode.
fn same_function(s: &Seed, timesteps: i64) {
    let dir = tempfile::tempdir().unwrap();
    let (vs, model) = build(s, 3);
    save_weights(&vs, &dir.path().join("weights.safetensors"));
    let (x, t) = inputs(s, timesteps);
    save(&dir.path().join("inputs.safetensors"), &[("x", x.shallow_clone()), ("t", t.shallow_clone())]);
    let theirs = python("forward", s.model, dir.path());
    let _guard = tch::no_grad_guard();
    let train = model.forward_t(&x, &t, None, true);
    let eval = model.forward_t(&x, &t, None, false);
    let scale = theirs["eval"].abs().max().double_value(&[]);
    assert!(scale > 1e-3, "{}: the output is all but zero ({scale})", s.model);
    let (dt, de) = (max_diff(&train, &theirs["train"]), max_diff(&eval, &theirs["eval"]));
    eprintln!("{} train {dt:e} eval {de:e}", s.model);
    assert!(dt <= TOLERANCE && de <= TOLERANCE, "{}: max |ours − seed| train {dt:e}, eval {de:e}", s.model);
}

#[test]
fn blog_simple_unet_is_seed_000s() {
    same_function(&BLOG, 1000);
}

#[test]
fn notebook_batchnorm_unet_is_seed_003s() {
    // Batch norm: training mode normalises with the batch's statistics and updates the running ones,
    // which evaluation mode then uses; both sides do the same update in the same order.
    same_function(&NOTEBOOK, 200);
}

#[test]
fn lucidrains_unet_is_the_packages() {
    same_function(&LUCIDRAINS, 1000);
}

/// Seed 002 specifies its U-Net only as far as `Block` (Conv2d 3×3 → GroupNorm(groups) → SiLU) and
/// the sinusoidal embedding: `models::unet::block`, which the `unet` model's ResNet blocks are made
/// of (with the time scale and shift), and `embedding::sinusoidal`.
#[test]
fn practical_work_block_and_embedding_are_seed_002s() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let proj = ddpm::models::layers::conv2d(&root / "proj", 16, 32, 3, 1);
    let norm = ddpm::models::layers::group_norm(&root / "norm", 8, 32);
    save_weights(&vs, &dir.path().join("weights.safetensors"));
    let x = Tensor::randn([2, 16, 8, 8], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[3i64, 599]);
    save(&dir.path().join("inputs.safetensors"), &[("x", x.shallow_clone()), ("t", t.shallow_clone())]);
    let theirs = python("forward", "practical_block", dir.path());

    let _guard = tch::no_grad_guard();
    let ours = ddpm::models::unet::block(&x, &proj, &norm, None);
    let d = max_diff(&ours, &theirs["eval"]);
    assert!(d <= TOLERANCE, "Block: max |ours − seed| = {d:e}");
    let emb = ddpm::models::embedding::sinusoidal(&t, 32);
    let d = max_diff(&emb, &theirs["eval_emb"]);
    assert!(d <= TOLERANCE, "SinusoidalPositionEmbeddings: max |ours − seed| = {d:e}");
}

/// The seed recipe's diffusion and training keys, as the experiment files set them.
struct StepRecipe {
    seed: &'static str,
    model: Seed,
    timesteps: usize,
    schedule: ScheduleConfig,
    target: Target,
    weighting: Weighting,
    lr: f64,
    /// Pixel values x_0 are drawn in [-1, 1].
    batch: i64,
}

fn recipes() -> Vec<StepRecipe> {
    vec![
        StepRecipe {
            seed: "000",
            model: BLOG,
            timesteps: 1000,
            schedule: ScheduleConfig::Linear(ddpm::config::schedule::linear::Config {
                beta_start: 1e-4,
                beta_end: 0.02,
                scale_to_t: false,
            }),
            target: Target::Eps,
            weighting: Weighting::Uniform,
            lr: 2e-4,
            batch: 4,
        },
        StepRecipe {
            seed: "003",
            model: NOTEBOOK,
            timesteps: 200,
            schedule: ScheduleConfig::Linear(ddpm::config::schedule::linear::Config {
                beta_start: 1e-4,
                beta_end: 0.02,
                scale_to_t: false,
            }),
            target: Target::Eps,
            weighting: Weighting::Uniform,
            lr: 1e-3,
            batch: 4,
        },
        // GaussianDiffusion's defaults: objective pred_v, the sigmoid schedule, loss weight
        // SNR/(SNR + 1) = min-SNR with γ = ∞ for v.
        StepRecipe {
            seed: "001",
            model: LUCIDRAINS,
            timesteps: 1000,
            schedule: ScheduleConfig::LucidrainsSigmoid(ddpm::config::schedule::lucidrains_sigmoid::Config {
                start: -3.0,
                end: 3.0,
                tau: 1.0,
            }),
            target: Target::V,
            weighting: Weighting::MinSnr,
            lr: 1e-4,
            batch: 2,
        },
    ]
}

fn configs(r: &StepRecipe) -> (DiffusionConfig, TrainConfig) {
    let dc = DiffusionConfig {
        timesteps: r.timesteps,
        schedule: r.schedule.clone(),
        target: r.target,
        ..Default::default()
    };
    let tc = TrainConfig {
        lr: r.lr,
        loss: LossKind::L2,
        weighting: r.weighting,
        min_snr_gamma: f64::INFINITY,
        batch_size: r.batch,
        ..Default::default()
    };
    (dc, tc)
}

#[test]
fn training_steps_are_the_seeds() {
    for r in recipes() {
        let dir = tempfile::tempdir().unwrap();
        let (vs, model) = build(&r.model, 4);
        save_weights(&vs, &dir.path().join("weights.safetensors"));
        let (dc, tc) = configs(&r);
        let diffusion = Diffusion::of(&dc, &tc, false, Device::Cpu);
        let schedule = &diffusion.schedule;
        tch::manual_seed(21);
        let shape = [r.batch, r.model.channels, r.model.size, r.model.size];
        let x0 = Tensor::rand(shape, (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let t = Tensor::randint(r.timesteps as i64, [r.batch], (Kind::Int64, Device::Cpu));
        let torch_seed = 77i64;
        tch::manual_seed(torch_seed);
        let noise = x0.randn_like();
        save(
            &dir.path().join("inputs.safetensors"),
            &[
                ("x0", x0.shallow_clone()),
                ("t", t.shallow_clone()),
                ("noise", noise.shallow_clone()),
                ("torch_seed", Tensor::from_slice(&[torch_seed])),
                ("sqrt_ab", schedule.sqrt_alpha_bar.shallow_clone()),
                ("sqrt_1mab", schedule.sqrt_one_minus_alpha_bar.shallow_clone()),
            ],
        );
        let theirs = python("step", r.seed, dir.path());
        // The seed's float32 cumprod against our f64 one rounded to f32.
        let schedule_diff = theirs["schedule_diff"].double_value(&[0]);
        assert!(schedule_diff <= 1e-5, "seed {}: max |√ᾱ ours − seed| = {schedule_diff:e}", r.seed);
        let mut opt = Adam::new(&vs, tc.lr);
        let b = Batch {
            x0: &x0,
            t: &t,
            time: None,
            noise: &noise,
            offset: None,
            self_condition: false,
            labels: None,
            importance: None,
        };
        let loss = batch_loss(model.as_ref(), &diffusion, &tc, Device::Cpu, b).loss;
        let their_loss = theirs["loss"].double_value(&[0]);
        let ours = loss.double_value(&[]);
        assert!(
            (ours - their_loss).abs() <= TOLERANCE * their_loss.abs().max(1.0),
            "seed {}: loss ours {ours} seed {their_loss}",
            r.seed
        );
        opt.backward_step(&loss);
        // Gradients, and the weights after one Adam step (each moved by lr·g/(|g| + ε)).
        let _guard = tch::no_grad_guard();
        let mut compared = 0;
        for (name, w) in vs.variables() {
            let Some(their_w) = theirs.get(&name) else { continue };
            let Some(their_g) = theirs.get(&format!("grad.{name}")) else { continue };
            let dg = max_diff(&w.grad(), their_g);
            assert!(dg <= TOLERANCE, "seed {}: gradient of `{name}`: max |ours − seed| = {dg:e}", r.seed);
            let dw = max_diff(&w, their_w);
            assert!(dw <= TOLERANCE, "seed {}: `{name}` after one Adam step: max |ours − seed| = {dw:e}", r.seed);
            compared += 1;
        }
        assert_eq!(compared, vs.trainable_variables().len(), "seed {}: every trainable weight compared", r.seed);
    }
}

#[test]
fn sampler_steps_are_the_seeds() {
    for r in recipes() {
        let dir = tempfile::tempdir().unwrap();
        let (vs, model) = build(&r.model, 6);
        save_weights(&vs, &dir.path().join("weights.safetensors"));
        let (dc, _) = configs(&r);
        let schedule = NoiseSchedule::new(&dc, Device::Cpu);
        // Seeds 000 and 003 compute the mean from ε without clipping; lucidrains clips x̂_0 to [-1, 1].
        let clip_x0 = r.seed == "001";
        let opts = SampleOptions {
            target: dc.target,
            variance: Variance::Posterior,
            clip_x0,
            learn_sigma: false,
            trajectory: &[],
        };
        let t_max = r.timesteps;
        for t_index in [t_max - 1, t_max / 2, 1, 0] {
            tch::manual_seed(31 + t_index as i64);
            let x = Tensor::randn([2, r.model.channels, r.model.size, r.model.size], (Kind::Float, Device::Cpu));
            let torch_seed = 1000 + t_index as i64;
            save(
                &dir.path().join("inputs.safetensors"),
                &[
                    ("x", x.shallow_clone()),
                    ("t_index", Tensor::from_slice(&[t_index as i64])),
                    ("torch_seed", Tensor::from_slice(&[torch_seed])),
                ],
            );
            let theirs = python("p_sample", r.seed, dir.path());
            let _guard = tch::no_grad_guard();
            tch::manual_seed(torch_seed);
            let t = Tensor::full([2], t_index as i64, (Kind::Int64, Device::Cpu));
            let output = model.forward_t(&x, &t, None, false);
            let ours = ddpm_step(&schedule, t_index, &x, &output, &opts);
            let d = max_diff(&ours, &theirs["x_prev"]);
            assert!(d <= TOLERANCE, "seed {} p_sample at t = {t_index}: max |ours − seed| = {d:e}", r.seed);
        }
    }
}
