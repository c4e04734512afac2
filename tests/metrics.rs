//! Improved precision and recall (`eval::metric::precision_recall`) against `prdc`, the package of
//! Naeem et al. 2020 that computes Kynkäänniemi et al.'s k-NN precision and recall, on the same
//! features: sets of different sizes, overlapping partly, in 2048 dimensions as Inception's and fewer.
use ddpm::eval::metric::precision_recall::{precision_recall, K};
use std::path::PathBuf;
use std::process::Command;
use tch::{Device, Kind, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn precision_and_recall_are_prdcs() {
    let dir = tempfile::tempdir().unwrap();
    for (seed, n_real, n_fake, d, shift, k) in
        [(1, 300, 200, 2048, 0.3, K), (2, 500, 256, 8, 0.5, K), (3, 120, 160, 8, 1.0, 5), (4, 64, 64, 16, 0.2, 1)]
    {
        tch::manual_seed(seed);
        // Both sets on an 8-dimensional subspace (features of images are far from isotropic), the
        // generated one shifted and narrower, so that both numbers are strictly between 0 and 1.
        let mix = Tensor::randn([8, d], (Kind::Double, Device::Cpu));
        let real = Tensor::randn([n_real, 8], (Kind::Double, Device::Cpu)).matmul(&mix);
        let fake = (Tensor::randn([n_fake, 8], (Kind::Double, Device::Cpu)) * 0.8 + shift).matmul(&mix);
        let path = dir.path().join("features.safetensors");
        Tensor::write_safetensors(&[("real", real.shallow_clone()), ("fake", fake.shallow_clone())], &path).unwrap();
        let out = Command::new(root().join(".venv/bin/python"))
            .arg(root().join("tests/metrics/prdc_oracle.py"))
            .arg(&path)
            .arg(k.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let theirs: serde_json::Value =
            serde_json::from_slice(String::from_utf8_lossy(&out.stdout).lines().last().unwrap().as_bytes()).unwrap();
        let (p, r) = precision_recall(&real, &fake, k);
        println!("seed {seed}: ours ({p}, {r}), prdc {theirs}");
        assert_eq!(p, theirs["precision"].as_f64().unwrap(), "seed {seed}: precision");
        assert_eq!(r, theirs["recall"].as_f64().unwrap(), "seed {seed}: recall");
        assert!(p > 0.0 && p < 1.0 && r > 0.0 && r < 1.0, "seed {seed}: a test that can fail: ({p}, {r})");
    }
}
