//! The samplers, the learned-range variance, the posterior and zero terminal SNR against diffusers
//! 0.42.1 itself (`tests/samplers/diffusers_oracle.py`, run from `.venv`; `just test` installs it):
//! for each sampler, with a fixed analytic "model" that both sides compute, the same schedule, the
//! same x_T and, for Euler ancestral, the same noise (both draw from the same library's generator after
//! the same seed), every state of the sequence equals diffusers' within 1e-5.
use ddpm::config::sampler::{dpm_solver, euler, euler_ancestral, heun};
use ddpm::config::{SamplerConfig, Target, Variance};
use ddpm::diffusion::posterior::learned_log_variance;
use ddpm::diffusion::sampler::{self, SampleOptions};
use ddpm::diffusion::schedule::{cosine_betas, linear_betas, rescale_zero_terminal_snr};
use ddpm::diffusion::NoiseSchedule;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::Command;
use tch::{Device, Kind, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// x (1 − 0.3 g) + 0.05 g tanh(x) with g = (1 − t/999)², the function diffusers_oracle.py calls the
/// model: as ε̂ it tends to x_t where ᾱ → 0, so x̂_0 and the states stay of order 1 on every schedule.
fn analytic(x: &Tensor, t: &Tensor) -> Tensor {
    let g = (-t.to_kind(Kind::Double).reshape([-1, 1, 1, 1]) / 999.0 + 1.0).square();
    let x = x.to_kind(Kind::Double);
    (&x * (-&g * 0.3 + 1.0) + x.tanh() * g * 0.05).to_kind(Kind::Float)
}

struct Case {
    name: String,
    sampler: SamplerConfig,
    betas: Vec<f64>,
    target: Target,
    seed: i64,
    json: serde_json::Value,
}

fn case(schedule: &str, betas: &[f64], which: &str, steps: usize, karras: bool, target: Target) -> Case {
    let sampler = match which {
        "dpm_solver" => SamplerConfig::DpmSolver(dpm_solver::Config { steps }),
        "euler" => SamplerConfig::Euler(euler::Config { steps, karras }),
        "heun" => SamplerConfig::Heun(heun::Config { steps, karras, ..Default::default() }),
        "euler_ancestral" => SamplerConfig::EulerAncestral(euler_ancestral::Config { steps }),
        other => panic!("{other}"),
    };
    let t = if target == Target::V { "v" } else { "eps" };
    let name = format!("{schedule}-{which}-{steps}-{t}{}", if karras { "" } else { "-uniform" });
    let json =
        serde_json::json!({"name": name, "sampler": which, "steps": steps, "target": t, "seed": 11, "karras": karras});
    Case { name, sampler, betas: betas.to_vec(), target, seed: 11, json }
}

/// Our states: after each step, the state as the model sees it (`on_step`).
fn ours(c: &Case, x_t: &Tensor) -> Tensor {
    let s = NoiseSchedule::from_betas(c.betas.clone(), Device::Cpu);
    let opts = SampleOptions {
        target: c.target,
        variance: Variance::Posterior,
        clip_x0: false,
        learn_sigma: false,
        trajectory: &[],
    };
    let mut states = Vec::new();
    tch::manual_seed(c.seed);
    let out = sampler::sample(&c.sampler, &s, x_t.copy(), &opts, &mut analytic, &mut |_, x| {
        states.push(x.copy());
        ControlFlow::Continue(())
    });
    assert_eq!((states.last().unwrap() - &out.x0).abs().max().double_value(&[]), 0.0, "the last state is the sample");
    Tensor::stack(&states, 0)
}

#[test]
fn samplers_and_arrays_equal_diffusers() {
    let linear = linear_betas(1000, 1e-4, 0.02);
    let cosine = cosine_betas(1000, 0.008, 0.999);
    let zero = rescale_zero_terminal_snr(&linear);
    let mut cases = Vec::new();
    for (name, betas) in [("linear", &linear), ("cosine", &cosine)] {
        for (which, steps) in
            [("dpm_solver", 10), ("dpm_solver", 25), ("euler", 10), ("heun", 10), ("euler_ancestral", 10)]
        {
            cases.push(case(name, betas, which, steps, true, Target::Eps));
        }
        cases.push(case(name, betas, "euler", 12, false, Target::Eps));
        cases.push(case(name, betas, "heun", 6, false, Target::V));
        cases.push(case(name, betas, "dpm_solver", 5, true, Target::V));
    }
    for (which, steps) in [("dpm_solver", 8), ("euler", 8), ("heun", 8), ("euler_ancestral", 8)] {
        cases.push(case("zero_snr", &zero, which, steps, true, Target::V));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    tch::manual_seed(3);
    let x_t = Tensor::randn([2, 1, 4, 4], (Kind::Float, Device::Cpu));
    for c in &cases {
        inputs.push((format!("{}.betas", c.name), Tensor::from_slice(&c.betas)));
        inputs.push((format!("{}.x_T", c.name), x_t.copy()));
    }
    for (name, betas) in [("linear", &linear), ("cosine", &cosine)] {
        inputs.push((format!("arrays.{name}.betas"), Tensor::from_slice(betas)));
    }
    Tensor::write_safetensors(&inputs, dir.path().join("inputs.safetensors")).unwrap();
    let json: Vec<_> = cases.iter().map(|c| c.json.clone()).collect();
    std::fs::write(dir.path().join("cases.json"), serde_json::to_string(&json).unwrap()).unwrap();
    let out = dir.path().join("out.safetensors");
    let run = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/samplers/diffusers_oracle.py"))
        .arg(dir.path().join("cases.json"))
        .arg(dir.path().join("inputs.safetensors"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "diffusers_oracle.py failed (pip install diffusers==0.42.1 into .venv: `just test` does):\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let theirs: HashMap<String, Tensor> = Tensor::read_safetensors(&out).unwrap().into_iter().collect();
    let mut report = Vec::new();
    for c in &cases {
        let (a, b) = (ours(c, &x_t), &theirs[&format!("{}.states", c.name)]);
        assert_eq!(a.size(), b.size(), "{}: number of states", c.name);
        // Both sides step in float32; the states' size sets the rounding (the Karras samplers step
        // x/√ᾱ, which reaches σ_T·x_T ≈ 1e4 on the cosine schedule), so the error is relative to it.
        let diff = (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[]);
        let scale = b.abs().max().double_value(&[]).max(1.0);
        report.push(format!(
            "{}: {} states, max |ours - diffusers| = {diff:.2e} (largest state {scale:.2})",
            c.name,
            a.size()[0]
        ));
        assert!(diff <= 1e-5 * scale, "{}: {diff}\n{}", c.name, report.join("\n"));
    }
    println!("{}", report.join("\n"));

    for (name, betas) in [("linear", &linear), ("cosine", &cosine)] {
        let get = |k: &str| Vec::<f64>::try_from(&theirs[&format!("arrays.{name}.{k}")]).unwrap();
        let s = NoiseSchedule::from_betas(betas.clone(), Device::Cpu);
        let max_from = |a: &[f64], b: &[f64], from: usize| {
            a.iter().zip(b).skip(from).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
        };
        // The schedules themselves: diffusers' `linear` and `squaredcos_cap_v2` (float32) are ours.
        assert!(max_from(&get("diffusers_betas"), betas, 0) < 1e-7, "{name}: schedule");
        // The posterior variance β̃_t (f64 on both sides); diffusers floors β̃_1 = 0 at 1e-20.
        let posterior = get("posterior_variance");
        assert!(max_from(&posterior, &s.posterior_variance, 1) < 1e-15, "{name}: posterior variance");
        assert_eq!(posterior[0], 1e-20);
        // The posterior mean's coefficients (ours in f32 on the device).
        for (k, ours) in [("coef1", &s.posterior_mean_coef1), ("coef2", &s.posterior_mean_coef2)] {
            let ours = Vec::<f64>::try_from(ours.to_kind(Kind::Double)).unwrap();
            assert!(max_from(&get(k), &ours, 0) < 1e-6, "{name}: {k}");
        }
        // The learned range for v = linspace(−1, 1, T) at every t: equal from t = 2 on; at t = 1 we
        // use improved-diffusion's clipped log β̃ (β̃_2), diffusers log(1e-20).
        let v = Tensor::from_slice(&get("v")).to_kind(Kind::Float).reshape([-1, 1]);
        let t = Tensor::arange(betas.len() as i64, (Kind::Int64, Device::Cpu));
        let learned =
            Vec::<f64>::try_from(learned_log_variance(&s, &t, &v).to_kind(Kind::Double).reshape([-1])).unwrap();
        let diff = max_from(&learned, &get("learned_log_variance"), 1);
        assert!(diff < 1e-5, "{name}: learned range {diff}");
        // rescale_zero_terminal_snr in float64 on both sides.
        let zero = rescale_zero_terminal_snr(betas);
        assert!(max_from(&zero, &get("zero_snr_betas"), 0) < 1e-12, "{name}: zero-SNR β");
        assert_eq!(*zero.last().unwrap(), 1.0, "{name}: β_T = 1, ᾱ_T = 0");
    }
}
