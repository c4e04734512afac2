//! Event files read back by the real TensorBoard (`.venv`'s `tensorboard` package, which `just test`
//! installs): byte-identical records, scalars/images/text through EventAccumulator, and the HParams
//! dashboard's data through a running TensorBoard server's HTTP API.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `.venv`'s python, which must have `tensorboard` (`just test` installs it).
fn python() -> PathBuf {
    let py = root().join(".venv/bin/python");
    let ok = Command::new(&py).args(["-c", "import tensorboard"]).output().is_ok_and(|o| o.status.success());
    assert!(ok, "{} cannot import tensorboard: run `just test` (it installs tensorboard into .venv)", py.display());
    py
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ddpm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args(args)
        .env("DDPM_DATA_DIR", root().join("data"))
        .env("DDPM_EVAL__FID", "false")
        .env("DDPM_EVAL__BPD", "false")
        .output()
        .unwrap()
}

/// Two tiny runs (linear, cosine) of 6 steps each.
fn tiny_experiment(dir: &Path) -> (PathBuf, PathBuf) {
    let exp = dir.join("board.toml");
    std::fs::write(
        &exp,
        r#"
[experiment]
description = "TensorBoard test"
[data]
image_size = 16
limit = 32
[diffusion]
timesteps = 20
[train]
steps = 6
batch_size = 8
log_every = 2
[sample]
num_samples = 4
[grid]
"diffusion.schedule.name" = ["linear", "cosine"]
"#,
    )
    .unwrap();
    let results = dir.join("results");
    let out = ddpm(&["run", exp.to_str().unwrap(), "--device", "cpu", "--results", results.to_str().unwrap()]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    (exp, results)
}

/// A scalar record from our writer equals, byte for byte, the one TensorBoard's Python writer makes
/// for the same event: framing, both masked CRC32Cs and the protobuf encoding.
#[test]
fn records_are_byte_identical_to_tensorboards_own() {
    let py = python();
    for (wall, step, tag, value) in
        [(1.5, 3i64, "train/loss", 0.25f32), (1_795_000_000.125, 123_456, "eval/bpd", -7.0e-5)]
    {
        let ours = ddpm::track::tensorboard::frame(&ddpm::track::tensorboard::scalar_event(wall, step, tag, value));
        let out = Command::new(&py)
            .arg(root().join("tests/tensorboard/record.py"))
            .args([wall.to_string(), step.to_string(), tag.to_string(), format!("{value:e}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(ours, out.stdout, "{tag}");
    }
}

/// EventAccumulator reads every scalar with the steps and values of metrics.jsonl, the images with
/// their sizes, and the configuration as text.
#[test]
fn tensorboard_reads_scalars_images_and_text() {
    let tmp = tempfile::tempdir().unwrap();
    let (_exp, results) = tiny_experiment(tmp.path());
    let run = results.join("experiments/board/schedule=cosine");
    let out = Command::new(python()).arg(root().join("tests/tensorboard/read_run.py")).arg(&run).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let metrics: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let loss = read["scalars"]["train/loss"].as_array().unwrap();
    assert_eq!(loss.len(), metrics.len());
    for (point, m) in loss.iter().zip(&metrics) {
        assert_eq!(point[0], m["step"]);
        assert!((point[1].as_f64().unwrap() - m["loss"].as_f64().unwrap()).abs() < 1e-6, "{point} vs {m}");
    }
    for tag in ["train/grad_norm", "train/images_per_sec", "train/lr", "train/l2_q0"] {
        assert_eq!(read["scalars"][tag].as_array().map(|a| a.len()), Some(3), "{tag}: steps 2, 4, 6");
    }
    // samples: 2×2 of 16 px with 2 px padding = 38; forward strip 5 × 18 + 2 = 92 by 20;
    // reverse strip: 6 steps (T, 3T/4, T/2, T/4, T/10, 0) of 4 samples: 110 by 74.
    assert_eq!(read["images"]["samples"], serde_json::json!([[6, 38, 38]]));
    assert_eq!(read["images"]["forward_process"], serde_json::json!([[0, 92, 20]]));
    assert_eq!(read["images"]["reverse_process"], serde_json::json!([[6, 110, 74]]));
    let config = read["text"]["config"].as_str().unwrap();
    assert!(config.contains("name = \"cosine\"") && config.contains("steps = 6"), "{config}");
    assert!(read["text"]["provenance"].as_str().unwrap().contains("\"code_sha256\""));

    // The bound joins the scalars at the last training step.
    let out = ddpm(&["eval", "bpd", run.to_str().unwrap(), "--images", "2", "--device", "cpu"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = Command::new(python()).arg(root().join("tests/tensorboard/read_run.py")).arg(&run).output().unwrap();
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bpd: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("bpd.json")).unwrap()).unwrap();
    let point = &read["scalars"]["eval/bpd"][0];
    assert_eq!(point[0], 6);
    assert!((point[1].as_f64().unwrap() - bpd["total"].as_f64().unwrap()).abs() < 1e-4);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A minimal HTTP/1.0 request to the local TensorBoard; returns (status line, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Ok((head.lines().next().unwrap_or_default().to_string(), body.to_string()))
}

/// The HParams dashboard of two runs, as a running TensorBoard serves it: the experiment lists the
/// hyperparameters and metrics, and each run is a session group with its values and final loss.
#[test]
fn tensorboard_serves_the_hparams_of_both_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (exp, results) = tiny_experiment(tmp.path());
    let out = ddpm(&["logdir", exp.to_str().unwrap(), "--results", results.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logdir = text(&out.stdout).trim().to_string();
    let port = free_port();
    let mut server = Command::new(root().join(".venv/bin/tensorboard"))
        .args(["--logdir", &logdir, "--port", &port.to_string(), "--host", "127.0.0.1", "--load_fast", "false"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tensorboard starts (run `just test` to install it into .venv)");
    let result = std::panic::catch_unwind(|| {
        let start = Instant::now();
        loop {
            if let Ok((status, body)) = http(port, "GET", "/data/runs", "") {
                if status.contains("200") && body.contains("schedule=cosine") && body.contains("schedule=linear") {
                    break;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(90), "TensorBoard did not list both runs");
            std::thread::sleep(Duration::from_millis(300));
        }
        let (status, body) =
            http(port, "POST", "/data/plugin/hparams/experiment", r#"{"experimentName": ""}"#).unwrap();
        assert!(status.contains("200"), "{status} {body}");
        let experiment: serde_json::Value = serde_json::from_str(&body).unwrap();
        let names: Vec<&str> =
            experiment["hparamInfos"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
        for h in ["diffusion.schedule.name", "diffusion.schedule.s", "model.name", "diffusion.timesteps", "train.loss"]
        {
            assert!(names.contains(&h), "{h} in {names:?}");
        }
        assert!(body.contains("train/loss"), "{body}");
        let request = r#"{"experimentName":"","allowedStatuses":["STATUS_UNKNOWN","STATUS_SUCCESS","STATUS_FAILURE","STATUS_RUNNING"],"colParams":[],"startIndex":0,"sliceSize":100}"#;
        let (status, body) = http(port, "POST", "/data/plugin/hparams/session_groups", request).unwrap();
        assert!(status.contains("200"), "{status} {body}");
        let groups: serde_json::Value = serde_json::from_str(&body).unwrap();
        let groups = groups["sessionGroups"].as_array().unwrap();
        assert_eq!(groups.len(), 2, "{body}");
        for g in groups {
            let schedule = g["hparams"]["diffusion.schedule.name"].as_str().unwrap();
            let run = results.join(format!("experiments/board/schedule={schedule}"));
            let status: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(run.join("status.json")).unwrap()).unwrap();
            let loss = g["metricValues"].as_array().unwrap().iter().find(|m| m["name"]["tag"] == "train/loss").unwrap();
            assert!((loss["value"].as_f64().unwrap() - status["final_loss"].as_f64().unwrap()).abs() < 1e-6, "{g}");
            assert_eq!(g["sessions"][0]["status"], "STATUS_SUCCESS", "{g}");
        }
    });
    server.kill().unwrap();
    server.wait().unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
