//! Offset noise and self-conditioning against lucidrains' `GaussianDiffusion.p_losses` itself
//! (denoising-diffusion-pytorch 2.3.4, `tests/tricks/lucidrains_p_losses.py`, run from `.venv`):
//! on the same x_0, t, noise and offset draws, and the same decision of the self-conditioning coin,
//! every input our training step gives the network (the first pass's and the trained one's, with
//! the self-conditioning channels in lucidrains' order [x̂_0; x_t]) and the regression target equal
//! the package's within 1e-5.
use ddpm::config::{DiffusionConfig, Target, TrainConfig};
use ddpm::diffusion::process::Noise;
use ddpm::diffusion::target::training_target;
use ddpm::diffusion::Diffusion;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use tch::{Device, Kind, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Case {
    name: &'static str,
    target: Target,
    offset: f64,
    self_condition: bool,
    coin: bool,
}

const CASES: [Case; 5] = [
    Case { name: "eps-offset", target: Target::Eps, offset: 0.1, self_condition: false, coin: false },
    Case { name: "v-offset", target: Target::V, offset: 0.3, self_condition: false, coin: false },
    Case { name: "eps-selfcond-on", target: Target::Eps, offset: 0.0, self_condition: true, coin: true },
    Case { name: "v-selfcond-on-offset", target: Target::V, offset: 0.1, self_condition: true, coin: true },
    Case { name: "v-selfcond-off", target: Target::V, offset: 0.0, self_condition: true, coin: false },
];

#[test]
fn offset_noise_and_self_conditioning_are_lucidrains() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(5);
    let (b, c) = (3, 2);
    let x0 = Tensor::rand([b, c, 8, 8], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let noise = Tensor::randn([b, c, 8, 8], (Kind::Float, Device::Cpu));
    let offset = Tensor::randn([b, c], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[3i64, 500, 999]);
    let mut inputs = Vec::new();
    let mut json = Vec::new();
    for k in &CASES {
        for (what, v) in [("x0", &x0), ("t", &t), ("noise", &noise), ("offset", &offset)] {
            inputs.push((format!("{}.{what}", k.name), v.copy()));
        }
        json.push(serde_json::json!({
            "name": k.name,
            "objective": if k.target == Target::V { "pred_v" } else { "pred_noise" },
            "offset": k.offset,
            "self_condition": k.self_condition,
            "coin": if k.coin { 0.0 } else { 0.99 },
        }));
    }
    Tensor::write_safetensors(&inputs, dir.path().join("inputs.safetensors")).unwrap();
    std::fs::write(dir.path().join("cases.json"), serde_json::to_string(&json).unwrap()).unwrap();
    let out = dir.path().join("out.safetensors");
    let run = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/tricks/lucidrains_p_losses.py"))
        .arg(dir.path().join("cases.json"))
        .arg(dir.path().join("inputs.safetensors"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "lucidrains_p_losses.py failed (pip install denoising-diffusion-pytorch==2.3.4: `just test` does):\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let theirs: HashMap<String, Tensor> = Tensor::read_safetensors(&out).unwrap().into_iter().collect();
    let max = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
    for k in &CASES {
        let dc = DiffusionConfig { target: k.target, ..DiffusionConfig::default() };
        let tc = TrainConfig { offset_noise_strength: k.offset, ..TrainConfig::default() };
        let mut d = Diffusion::of(&dc, &tc, false, Device::Cpu);
        d.self_condition = k.self_condition;
        let mut calls = Vec::new();
        let mut network = |input: &Tensor, _: &Tensor| {
            calls.push(input.copy());
            if k.self_condition {
                let (cond, x) = (input.narrow(1, 0, c), input.narrow(1, c, c));
                x.tanh() * 0.5 + cond * 0.1
            } else {
                input.tanh() * 0.5
            }
        };
        let draws = Noise {
            t: &t,
            time: None,
            noise: &noise,
            offset: (k.offset > 0.0).then_some(&offset),
            self_condition: k.coin,
        };
        d.training_losses(&mut network, &x0, &draws);
        let expected_calls = if k.self_condition && k.coin { 2 } else { 1 };
        assert_eq!(calls.len(), expected_calls, "{}: network calls", k.name);
        for (i, call) in calls.iter().enumerate() {
            let other = &theirs[&format!("{}.input.{i}", k.name)];
            assert_eq!(call.size(), other.size(), "{}: input {i} shape", k.name);
            let diff = max(call, other);
            assert!(diff < 1e-5, "{}: input {i} differs by {diff}", k.name);
        }
        assert!(
            !theirs.contains_key(&format!("{}.input.{expected_calls}", k.name)),
            "{}: lucidrains called more",
            k.name
        );
        let target = training_target(k.target, &d.schedule, &x0, &d.training_noise(&noise, draws.offset), &t);
        let diff = max(&target, &theirs[&format!("{}.target", k.name)]);
        assert!(diff < 1e-5, "{}: target differs by {diff}", k.name);
        println!(
            "{}: {} network input(s) and the target equal lucidrains' (target max diff {diff:.1e})",
            k.name,
            calls.len()
        );
    }
}
