//! Post-hoc EMA against ema-pytorch 0.8.3's `PostHocEMA` itself (`tests/posthoc_ema/oracle.py`, run
//! from `.venv`; `just test` installs it): the same parameter trajectory of 40 steps, profiles of
//! σ_rel 0.05 and 0.10 updated every step and stored every 10; the two tracked averages and the
//! averages reconstructed for σ_rel 0.05 (a stored profile), 0.075 and 0.15 equal ema-pytorch's within
//! 1e-6.
use ddpm::posthoc::{reconstruct, Profiles};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use tch::{Device, Kind, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn posthoc_ema_equals_ema_pytorch() {
    let steps = 40;
    tch::manual_seed(23);
    // A drifting trajectory, so that profiles of different widths differ.
    let drift = Tensor::randn([1, 3, 4], (Kind::Float, Device::Cpu));
    let theta = Tensor::randn([steps, 3, 4], (Kind::Float, Device::Cpu)) * 0.3
        + Tensor::arange(steps, (Kind::Float, Device::Cpu)).reshape([-1, 1, 1]) / steps as f64 * drift;
    let dir = tempfile::tempdir().unwrap();
    Tensor::write_safetensors(&[("theta", theta.copy())], dir.path().join("theta.safetensors")).unwrap();
    let out = dir.path().join("out.safetensors");
    let run = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("tests/posthoc_ema/oracle.py"))
        .arg(dir.path().join("theta.safetensors"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "oracle.py failed (ema-pytorch in .venv: `just test` installs it):\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let theirs: HashMap<String, Tensor> = Tensor::read_safetensors(&out).unwrap().into_iter().collect();

    let snapshots = dir.path().join("snapshots");
    let mut profiles = Profiles::new(&[0.05, 0.10]);
    for s in 1..=steps {
        profiles.update(&[("weight".to_string(), theta.get(s - 1))], s as u64);
        if s % 10 == 0 {
            profiles.snapshot(&snapshots, s as usize).unwrap();
        }
    }
    let mut report = Vec::new();
    let mut check = |name: &str, ours: &Tensor| {
        let b = &theirs[name];
        let d = (ours.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[]);
        report.push(format!("{name}: max |ours − ema-pytorch| = {d:.2e}"));
        assert!(d <= 1e-6, "{name}: {d:e}\n{}", report.join("\n"));
    };
    for (j, avg) in profiles.averages.iter().enumerate() {
        check(&format!("tracked.{j}"), &avg[0].1);
    }
    for sigma_rel in [0.05, 0.075, 0.15] {
        let rec = reconstruct(&snapshots, sigma_rel, None).unwrap();
        check(&format!("synth.{sigma_rel}"), &rec.weights["weight"]);
        if sigma_rel == 0.05 {
            // A stored profile reconstructs to itself: weight 1 on its own last snapshot.
            let own = rec.terms.iter().find(|t| t.0 == 40 && (t.1 - 16.972198).abs() < 1e-3).unwrap();
            assert!((own.2 - 1.0).abs() < 1e-6, "{:?}", rec.terms);
        }
    }
    // The averages differ from each other and from the last weights (the check is not vacuous).
    let spread = (&profiles.averages[0][0].1 - &profiles.averages[1][0].1).abs().max().double_value(&[]);
    assert!(spread > 1e-3, "{spread}");
    println!("{}", report.join("\n"));
}
