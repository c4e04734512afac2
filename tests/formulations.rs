//! EDM and flow matching against the reference packages themselves (`tests/formulations/oracle.py`,
//! run from `.venv`; `just test` installs them): k-diffusion 0.1.1.post1's `Denoiser` (Table 1's
//! scalings, the denoiser, the loss), `get_sigmas_karras`, `sample_euler` and `sample_heun` with and
//! without churn (the same libtorch generator after the same seed); Meta's flow_matching 1.0.10
//! (`AffineProbPath(CondOTScheduler())` for x_t and the velocity, `ODESolver` Euler and midpoint on the
//! same grid); diffusers 0.42.1's `FlowMatchEulerDiscreteScheduler` (σ's with shift 3, every step) and
//! `FlowMatchHeunDiscreteScheduler`. Each on a fixed analytic network both sides compute.
use ddpm::config::formulation::{edm, flow};
use ddpm::config::sampler::{euler, heun, midpoint};
use ddpm::config::SamplerConfig;
use ddpm::diffusion::edm::Edm;
use ddpm::diffusion::flow::{Flow, TRAIN_STEPS};
use ddpm::diffusion::sampler::Sampling;
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::Command;
use tch::{Device, Kind, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The oracle's EDM network F(x_in, σ) with c = ln(σ)/4, here from the time input 250 ln σ.
fn edm_inner(x: &Tensor, t: &Tensor) -> Tensor {
    let c = (t.to_kind(Kind::Double) / 1000.0).reshape([-1, 1, 1, 1]);
    let x = x.to_kind(Kind::Double);
    (&x * (-c.tanh() * 0.2 + 0.9) + (&x * 3.0).sin() * 0.1 * c).to_kind(Kind::Float)
}

/// The oracle's velocity v(x, t) = x (1 − 0.5 t) − 0.3 tanh(x) + 0.2 t, here from the time input 1000 t.
fn flow_velocity(x: &Tensor, t: &Tensor) -> Tensor {
    let t = (t.to_kind(Kind::Double) / TRAIN_STEPS).reshape([-1, 1, 1, 1]);
    let x = x.to_kind(Kind::Double);
    (&x * (-&t * 0.5 + 1.0) - x.tanh() * 0.3 + t * 0.2).to_kind(Kind::Float)
}

/// max |a − b| over the larger of the largest |b|, `scale` and 1 (both sides compute in float32).
fn rel(a: &Tensor, b: &Tensor, scale: f64) -> f64 {
    assert_eq!(a.size(), b.size());
    let diff = (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[]);
    diff / b.abs().max().double_value(&[]).max(scale).max(1.0)
}

#[test]
fn edm_and_flow_matching_equal_the_reference_packages() {
    let f32s = |v: &[f64]| Tensor::from_slice(v).to_kind(Kind::Float);
    tch::manual_seed(17);
    let randn = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let sigma = f32s(&[0.002, 0.05, 0.5, 1.0, 3.0, 80.0]);
    let (x0, noise) = (randn(&[6, 1, 4, 4]).tanh(), randn(&[6, 1, 4, 4]));
    let edm_x_t = randn(&[2, 1, 4, 4]);
    let tau = f32s(&[0.0, 0.125, 0.25, 0.5, 0.75, 1.0]);
    let (fx0, fnoise) = (randn(&[6, 1, 4, 4]).tanh(), randn(&[6, 1, 4, 4]));
    let flow_x_t = randn(&[2, 1, 4, 4]);
    let inputs: Vec<(&str, Tensor)> = vec![
        ("edm.sigma", sigma.copy()),
        ("edm.x0", x0.copy()),
        ("edm.noise", noise.copy()),
        ("edm.x_T", edm_x_t.copy()),
        ("flow.tau", tau.copy()),
        ("flow.x0", fx0.copy()),
        ("flow.noise", fnoise.copy()),
        ("flow.x_T", flow_x_t.copy()),
    ];
    let dir = tempfile::tempdir().unwrap();
    Tensor::write_safetensors(&inputs, dir.path().join("inputs.safetensors")).unwrap();
    let out = dir.path().join("out.safetensors");
    let run = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/formulations/oracle.py"))
        .arg(dir.path().join("inputs.safetensors"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "oracle.py failed (k-diffusion, flow_matching, diffusers in .venv: `just test` installs them):\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let theirs: HashMap<String, Tensor> = Tensor::read_safetensors(&out).unwrap().into_iter().collect();
    let mut report = Vec::new();
    let mut check = |name: &str, ours: &Tensor, scale: f64| {
        let (d, tol) = (rel(ours, &theirs[name], scale), 1e-6);
        report.push(format!("{name}: {d:.2e}"));
        assert!(d <= tol, "{name}: {d:e} > {tol:e}\n{}", report.join("\n"));
    };

    // EDM: the scalings, the denoiser and the loss at given σ.
    let e = Edm::new(&edm::Config::default());
    let s = e.scalings(&sigma, 4);
    check("edm.c_skip", &s.c_skip.reshape([-1]), 1.0);
    check("edm.c_out", &s.c_out.reshape([-1]), 1.0);
    check("edm.c_in", &s.c_in.reshape([-1]), 1.0);
    check("edm.loss", &e.loss_at(&mut edm_inner, &x0, &noise, &sigma), 1.0);
    let noised = &x0 + &noise * sigma.reshape([-1, 1, 1, 1]);
    check("edm.denoised", &e.denoise(&mut edm_inner, &noised, &sigma), 1.0);
    for n in [1usize, 2, 10] {
        check(&format!("edm.sigmas.{n}"), &Tensor::from_slice(&e.sigmas(n)), 1.0);
    }
    let churn = heun::Config {
        steps: 0,
        s_churn: 40.0,
        s_tmin: 0.05,
        s_tmax: Some(50.0),
        s_noise: 1.003,
        ..Default::default()
    };
    for n in [1usize, 2, 8] {
        for (name, sampler) in [
            ("euler", SamplerConfig::Euler(euler::Config { steps: n, karras: true })),
            ("heun", SamplerConfig::Heun(heun::Config { steps: n, ..Default::default() })),
            ("heun_churn", SamplerConfig::Heun(heun::Config { steps: n, ..churn.clone() })),
        ] {
            tch::manual_seed(5);
            let x = e
                .sample(&sampler, edm_x_t.copy(), &Sampling::plain(1000), &mut edm_inner, &mut |_, _| {
                    ControlFlow::Continue(())
                })
                .x0;
            check(&format!("edm.{name}.{n}"), &x, 1.0);
        }
    }

    // Flow matching: the path against flow_matching's (t ↦ 1 − τ, its velocity is −v).
    let fl = Flow::new(&flow::Config { shift: 3.0, ..flow::Config::default() });
    let (x_tau, v) = fl.path(&fx0, &fnoise, &tau);
    check("flow.x_t", &x_tau, 1.0);
    check("flow.dx_t", &(-v), 1.0);
    for n in [1usize, 10] {
        check(&format!("flow.sigmas.{n}"), &Tensor::from_slice(&fl.times(n)), 1.0);
        let states = |sampler: SamplerConfig| {
            let mut states = Vec::new();
            let out = fl.sample(&sampler, flow_x_t.copy(), &Sampling::plain(1000), &mut flow_velocity, &mut |_, x| {
                states.push(x.copy());
                ControlFlow::Continue(())
            });
            (Tensor::stack(&states, 0), out.x0)
        };
        let (euler_states, _) = states(SamplerConfig::Euler(euler::Config { steps: n, karras: true }));
        check(&format!("flow.diffusers_euler.{n}"), &euler_states, 1.0);
        check(&format!("flow.ode_euler.{n}"), &euler_states, 1.0);
        let (_, heun_x) = states(SamplerConfig::Heun(heun::Config { steps: n, ..Default::default() }));
        check(&format!("flow.diffusers_heun.{n}"), &heun_x, 1.0);
        let (midpoint_states, _) = states(SamplerConfig::Midpoint(midpoint::Config { steps: n }));
        check(&format!("flow.ode_midpoint.{n}"), &midpoint_states, 1.0);
    }
    println!("{}", report.join("\n"));
}
