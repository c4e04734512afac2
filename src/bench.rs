//! `ddpm bench`: how fast the harness trains and evaluates each recipe's model on this device.
//!
//! For each model at its recipe's size and batch: steady-state training images/s, measured by the real
//! training loop (`train::train_run` on a scratch run directory: the first logging window of `steps`
//! steps is the warm-up, the second is measured, and reading its loss back synchronises the device);
//! sampling model evaluations/s at the evaluation batch size; Inception feature extraction images/s (the
//! FID network); and the process's peak resident memory while training (VmHWM, reset per model).
//! `--compare` runs `bench/pytorch_reference.py` (the same networks and training step in PyTorch eager,
//! with `.venv`'s torch) on the same device with the same counts, and prints ddpm / PyTorch.
//! `--profile` times the phases of each training step (the loop's own marks) after the warm-up.
//! On CUDA each model's peak device memory while training is read from libtorch's caching allocator
//! (torch.cuda.max_memory_allocated), and the measured window's start and end are recorded as Unix
//! times, so that a sampler of GPU utilisation running beside it (`bench/gpu_check.py`) can be read
//! over exactly that window. The run's execution keys (`train.precision`, `train.tf32`,
//! `train.channels_last`, `train.deterministic`) are given to the PyTorch reference as well, so both
//! sides measure the same arithmetic.
//! Results go to `analysis/bench/<device>.csv` (and `profile-<device>.csv`).
use crate::eval::inception::{self, Inception};
use crate::experiment::{load_experiment, LoadOptions};
use crate::progress::{phases::Phases, LogRecord, Reporter};
use crate::track::run_dir::RunDir;
use crate::train::train_run;
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// A recipe's model, the images it trains on, and how many steps make a window on a CPU / a GPU.
pub struct Recipe {
    pub model: &'static str,
    pub source: &'static str,
    pub dataset: &'static str,
    pub image_size: i64,
    pub batch: i64,
    pub cpu_steps: usize,
    pub gpu_steps: usize,
}

pub const RECIPES: [Recipe; 4] = [
    Recipe {
        model: "simple",
        source: "blog SimpleUNet",
        dataset: "mnist",
        image_size: 32,
        batch: 128,
        cpu_steps: 10,
        gpu_steps: 50,
    },
    Recipe {
        model: "simple_bn",
        source: "notebook BatchNorm U-Net",
        dataset: "mnist",
        image_size: 32,
        batch: 128,
        cpu_steps: 2,
        gpu_steps: 30,
    },
    Recipe {
        model: "unet",
        source: "practical-work U-Net",
        dataset: "fashion_mnist",
        image_size: 28,
        batch: 128,
        cpu_steps: 2,
        gpu_steps: 30,
    },
    Recipe {
        model: "ddpm_cifar",
        source: "DDPM CIFAR-10 model (1 channel here)",
        dataset: "mnist",
        image_size: 32,
        batch: 128,
        cpu_steps: 1,
        gpu_steps: 20,
    },
];

pub struct BenchOptions {
    pub models: Vec<String>,
    /// Run keys for every model, e.g. `train.precision=bf16` (to measure an option).
    pub sets: Vec<String>,
    pub device: Device,
    /// Steps per window (warm-up and measured) [default: the recipe's for the device].
    pub steps: Option<usize>,
    /// Training batch [default: the recipe's]; smaller batches make the test-suite run cheap.
    pub batch: Option<i64>,
    pub eval_batch: i64,
    /// Model calls (sampling) and Inception batches timed.
    pub eval_calls: usize,
    pub compare: bool,
    pub profile: bool,
    pub data_dir: PathBuf,
    pub out_dir: PathBuf,
    /// The Python with torch for `--compare`.
    pub python: PathBuf,
    /// `bench/pytorch_reference.py` for `--compare` [default: found at run time, see
    /// [`find_reference_script`]].
    pub reference_script: Option<PathBuf>,
}

/// Where the PyTorch reference lives, decided when the bench runs (never where the binary was built:
/// a staged binary runs on a machine whose tree lies elsewhere). In order: the explicit path
/// (`--reference-script`), `bench/pytorch_reference.py` under the working directory or one of its
/// ancestors, then under an ancestor of the executable (`<root>/target/release/ddpm`).
pub fn find_reference_script(explicit: Option<&Path>) -> Result<PathBuf> {
    const REL: &str = "bench/pytorch_reference.py";
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--reference-script {}: no such file", p.display());
    }
    let mut looked = Vec::new();
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf));
    for start in [cwd, exe].into_iter().flatten() {
        for dir in start.ancestors() {
            let candidate = dir.join(REL);
            if candidate.is_file() {
                return Ok(candidate);
            }
            looked.push(dir.display().to_string());
        }
    }
    bail!(
        "--compare: cannot find {REL} under the working directory, the executable's folder or their \
         ancestors ({}); run from the repository or pass --reference-script <path>",
        looked.join(", ")
    )
}

/// One model's numbers.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub parameters: i64,
    pub steps: usize,
    pub train_images_per_sec: f64,
    pub sample_evals_per_sec: f64,
    pub fid_images_per_sec: Option<f64>,
    pub peak_host_bytes: u64,
    /// libtorch's CUDA allocator peak while training; `None` on the CPU.
    pub peak_device_bytes: Option<u64>,
    /// Unix times of the measured window's start (the warm-up window's record) and end.
    pub window_unix: (f64, f64),
    pub batch: i64,
    /// The measured run's training keys (precision, TF32, channels-last, determinism).
    pub train: crate::config::TrainConfig,
    pub pytorch: Option<serde_json::Value>,
    /// The PyTorch reference script that ran (`--compare`).
    pub reference_script: Option<PathBuf>,
    pub phases: Vec<(&'static str, f64)>,
}

/// Collects what the training loop reports.
struct Collect {
    records: Vec<LogRecord>,
    /// The Unix time at which each record arrived.
    times: Vec<f64>,
    profile: bool,
    phases: Option<Phases>,
}

impl Reporter for Collect {
    fn phase(&mut self, _: &str, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn logged(&mut self, record: &LogRecord) {
        self.records.push(record.clone());
        self.times.push(unix_now());
    }
    fn note(&mut self, _: &str) {}
    fn wants_phases(&self) -> bool {
        self.profile
    }
    fn phases(&mut self, phases: Phases) {
        self.phases = Some(phases);
    }
}

/// Peak resident memory of this process since the last reset (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets VmHWM to the current resident size (Linux ≥ 4.0).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn sync(device: Device) {
    crate::device::synchronize(device)
}

/// The experiment file of one benchmark run: the recipe's model, size and batch; two logging windows.
pub fn experiment(r: &Recipe, steps: usize, batch: i64) -> String {
    format!(
        r#"seed = 0
[experiment]
name = "bench_{model}"
[data]
name = "{dataset}"
image_size = {size}
limit = 1024
[model]
name = "{model}"
[diffusion]
timesteps = 1000
[train]
steps = {total}
batch_size = {batch}
lr = 2e-4
log_every = {steps}
checkpoint_every = {total}
[sample]
num_samples = 1
trajectory = []
sampler = {{ name = "ddim", steps = 1 }}
[eval]
fid = false
bpd = false
"#,
        model = r.model,
        dataset = r.dataset,
        size = r.image_size,
        total = 2 * steps,
    )
}

fn measure(r: &Recipe, o: &BenchOptions, scratch: &Path) -> Result<Measured> {
    let steps = o.steps.unwrap_or(if o.device.is_cuda() { r.gpu_steps } else { r.cpu_steps }).max(1);
    let batch = o.batch.unwrap_or(r.batch);
    let file = scratch.join(format!("{}.toml", r.model));
    crate::track::atomic_write(&file, experiment(r, steps, batch).as_bytes())?;
    let exp = load_experiment(&file, &LoadOptions { sets: o.sets.clone(), ..Default::default() })?;
    let spec = &exp.runs[0];
    let dir = RunDir::new(&scratch.join("results"), &spec.hash);
    dir.prepare(spec, None, Some("ddpm bench"))?;
    // `--set train.cpu_isa=avx2` measures the pinned kernels (re-executing before the first kernel).
    crate::hardware::pin_process(spec.config.train.cpu_isa)?;
    crate::device::prepare(&spec.config.train, o.device);
    reset_peak_rss();
    crate::device::reset_peak_device_memory(o.device);
    let mut collect = Collect { records: Vec::new(), times: Vec::new(), profile: o.profile, phases: None };
    let outcome = crate::device::catching(o.device, || {
        train_run(spec, &dir, o.device, &o.data_dir, &mut collect, Vec::new(), None)
    })?;
    let peak_host_bytes = peak_rss();
    let peak_device_bytes = crate::device::peak_device_memory(o.device);
    let measured = collect.records.get(1).context("the training loop logged no second window")?;
    if measured.step != 2 * steps {
        bail!("the measured window ends at step {}, not {}", measured.step, 2 * steps);
    }
    let _ = std::fs::remove_dir_all(&dir.path);

    // Sampling: the model's forward pass without gradients at the evaluation batch size.
    let channels = spec.config.data.channels();
    let vs = tch::nn::VarStore::new(o.device);
    let model = crate::models::build(&spec.config.model, channels, r.image_size, None, &vs.root());
    let sample_evals_per_sec = tch::no_grad(|| {
        let shape = [o.eval_batch, channels, r.image_size, r.image_size];
        let mut x = Tensor::randn(shape, (Kind::Float, o.device));
        let t = Tensor::full([o.eval_batch], 500, (Kind::Int64, o.device));
        x = model.forward_t(&x, &t, None, false);
        sync(o.device);
        let started = Instant::now();
        for _ in 0..o.eval_calls {
            x = model.forward_t(&x, &t, None, false);
        }
        sync(o.device);
        (o.eval_calls as i64 * o.eval_batch) as f64 / started.elapsed().as_secs_f64()
    });

    // FID's feature extraction, when the network's weights are here.
    let fid_images_per_sec = if inception::weights_path(&o.data_dir).is_file() {
        let mut net = Inception::load(&o.data_dir, o.device)?;
        net.batch = o.eval_batch;
        let shape = [o.eval_batch, channels, r.image_size, r.image_size];
        let pixels = Tensor::randint(256, shape, (Kind::Float, o.device));
        let _ = net.features_of_pixels(&pixels)?;
        let started = Instant::now();
        for _ in 0..o.eval_calls {
            let _ = net.features_of_pixels(&pixels)?;
        }
        Some((o.eval_calls as i64 * o.eval_batch) as f64 / started.elapsed().as_secs_f64())
    } else {
        None
    };

    let reference_script = o.compare.then(|| find_reference_script(o.reference_script.as_deref())).transpose()?;
    let pytorch = match &reference_script {
        Some(script) => Some(pytorch_reference(script, r, o, steps, batch, channels, &spec.config.train)?),
        None => None,
    };
    if let Some(p) = &pytorch {
        // The same network on both sides, or the ratio means nothing.
        if p["parameters"].as_i64() != Some(outcome.parameters) {
            bail!(
                "the PyTorch reference's {} has {} parameters, ddpm's {}",
                r.model,
                p["parameters"],
                outcome.parameters
            );
        }
    }
    let per_step = |total: f64| total / steps as f64;
    Ok(Measured {
        parameters: outcome.parameters,
        steps,
        train_images_per_sec: measured.images_per_sec,
        sample_evals_per_sec,
        fid_images_per_sec,
        peak_host_bytes,
        peak_device_bytes,
        window_unix: (collect.times[0], collect.times[1]),
        batch,
        train: spec.config.train.clone(),
        pytorch,
        reference_script,
        phases: collect
            .phases
            .map(|p| p.totals.into_iter().map(|(n, s)| (n, per_step(s))).collect())
            .unwrap_or_default(),
    })
}

fn pytorch_reference(
    script: &Path,
    r: &Recipe,
    o: &BenchOptions,
    steps: usize,
    batch: i64,
    channels: i64,
    train: &crate::config::TrainConfig,
) -> Result<serde_json::Value> {
    let device = match o.device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".into(),
    };
    let mut command = std::process::Command::new(&o.python);
    command.arg(script);
    // The same execution options as the measured run, so that both sides do the same arithmetic.
    if train.precision == crate::config::Precision::Bf16 {
        command.arg("--bf16");
    }
    for (on, flag) in
        [(train.tf32, "--tf32"), (train.channels_last, "--channels-last"), (train.deterministic, "--deterministic")]
    {
        if on {
            command.arg(flag);
        }
    }
    let out = command
        .args(["--model", r.model, "--device", &device])
        .args(["--channels", &channels.to_string(), "--size", &r.image_size.to_string()])
        .args(["--batch", &batch.to_string(), "--warmup", &steps.to_string(), "--steps", &steps.to_string()])
        .args(["--eval-batch", &o.eval_batch.to_string()])
        .args(["--sample-calls", &o.eval_calls.to_string(), "--fid-batches", &o.eval_calls.to_string()])
        .arg("--inception")
        .arg(inception::weights_path(&o.data_dir))
        .output()
        .with_context(|| format!("cannot run {} {}", o.python.display(), script.display()))?;
    if !out.status.success() {
        bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .with_context(|| format!("{} printed no JSON: {text}", script.display()))
}

fn device_slug(device: Device) -> &'static str {
    if device.is_cuda() {
        "cuda"
    } else {
        "cpu"
    }
}

fn git_commit() -> String {
    let state = crate::track::run_dir::git_state();
    match (state.get("commit").and_then(|c| c.as_str()), state.get("dirty").and_then(|d| d.as_bool())) {
        (Some(c), Some(true)) => format!("{}-dirty", &c[..12.min(c.len())]),
        (Some(c), _) => c[..12.min(c.len())].to_string(),
        _ => "unknown".into(),
    }
}

/// Runs the benchmark and writes its tables; returns the printed table.
pub fn run(o: &BenchOptions) -> Result<String> {
    let recipes: Vec<&Recipe> = if o.models.is_empty() {
        RECIPES.iter().collect()
    } else {
        o.models
            .iter()
            .map(|m| {
                RECIPES.iter().find(|r| r.model == m).with_context(|| {
                    let names: Vec<&str> = RECIPES.iter().map(|r| r.model).collect();
                    format!("--models: unknown model {m:?}; allowed are {}", names.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    let scratch = std::env::temp_dir().join(format!("ddpm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let device_name = crate::device::describe(o.device);
    let (commit, libtorch, threads) = (git_commit(), env!("DDPM_LIBTORCH_VERSION"), tch::get_num_threads());
    let mut rows = Vec::new();
    let hardware = crate::hardware::Hardware::here(o.device, crate::hardware::isa_in_environment()).key();
    let mut table = format!(
        "ddpm bench on {device_name}, libtorch {libtorch}, commit {commit}\nhardware: {hardware}\n{:11} {:>5} {:>6} {:>11} {:>10} {:>12} {:>9} {:>9} {:>10} {:>10} {:>8}\n",
        "model", "side", "batch", "parameters", "train img/s", "sample ev/s", "FID img/s", "peak MB", "device MB", "torch img/s", "ddpm/torch"
    );
    for r in recipes {
        eprintln!("bench {} ({}) at {}x{}, batch {}", r.model, r.source, r.image_size, r.image_size, r.batch);
        let m = measure(r, o, &scratch);
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(e.context(format!("bench {}", r.model)));
            }
        };
        let torch = m.pytorch.as_ref().and_then(|p| p["train_images_per_sec"].as_f64());
        let opt = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
        let line = format!(
            "{:11} {:>5} {:>6} {:>11} {:>10.1} {:>12.1} {:>9} {:>9.0} {:>10} {:>10} {:>8}\n",
            r.model,
            r.image_size,
            m.batch,
            m.parameters,
            m.train_images_per_sec,
            m.sample_evals_per_sec,
            opt(m.fid_images_per_sec, 1),
            m.peak_host_bytes as f64 / 1e6,
            opt(m.peak_device_bytes.map(|b| b as f64 / 1e6), 0),
            opt(torch, 1),
            opt(torch.map(|t| m.train_images_per_sec / t), 3),
        );
        eprint!("{line}");
        table.push_str(&line);
        rows.push((r, m));
    }
    let _ = std::fs::remove_dir_all(&scratch);
    write_tables(o, &rows, &device_name, &commit, libtorch, threads)?;
    Ok(table)
}

fn write_tables(
    o: &BenchOptions,
    rows: &[(&Recipe, Measured)],
    device_name: &str,
    commit: &str,
    libtorch: &str,
    threads: i32,
) -> Result<()> {
    let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    let mut csv = String::from(
        "model,source,dataset,image_size,batch,parameters,steps_measured,train_images_per_sec,sample_evals_per_sec,\
         fid_images_per_sec,peak_host_mb,pytorch_train_images_per_sec,pytorch_sample_evals_per_sec,\
         pytorch_fid_images_per_sec,pytorch_peak_host_mb,train_ratio,peak_device_mb,pytorch_peak_device_mb,\
         precision,tf32,channels_last,deterministic,window_start_unix,window_end_unix,device,ddpm_commit,libtorch,threads,\
         pytorch_reference\n",
    );
    for (r, m) in rows {
        let p = |k: &str| m.pytorch.as_ref().and_then(|p| p[k].as_f64());
        let t = &m.train;
        let precision = match t.precision {
            crate::config::Precision::Fp32 => "fp32",
            crate::config::Precision::Bf16 => "bf16",
        };
        writeln!(
            csv,
            "{},\"{}\",{},{},{},{},{},{:.3},{:.3},{},{:.1},{},{},{},{},{},{},{},{},{},{},{},{:.3},{:.3},\"{device_name}\",{commit},{libtorch},{threads},\"{}\"",
            r.model,
            r.source,
            r.dataset,
            r.image_size,
            m.batch,
            m.parameters,
            m.steps,
            m.train_images_per_sec,
            m.sample_evals_per_sec,
            num(m.fid_images_per_sec),
            m.peak_host_bytes as f64 / 1e6,
            num(p("train_images_per_sec")),
            num(p("sample_evals_per_sec")),
            num(p("fid_images_per_sec")),
            num(p("peak_host_bytes").map(|b| b / 1e6)),
            num(p("train_images_per_sec").map(|t| m.train_images_per_sec / t)),
            num(m.peak_device_bytes.map(|b| b as f64 / 1e6)),
            num(p("peak_device_bytes").map(|b| b / 1e6)),
            precision,
            t.tf32,
            t.channels_last,
            t.deterministic,
            m.window_unix.0,
            m.window_unix.1,
            m.reference_script.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        )
        .expect("String");
    }
    let slug = device_slug(o.device);
    std::fs::create_dir_all(&o.out_dir).with_context(|| format!("cannot create {}", o.out_dir.display()))?;
    crate::track::atomic_write(&o.out_dir.join(format!("{slug}.csv")), csv.as_bytes())?;
    if o.profile {
        let mut prof = String::from("model,phase,ms_per_step,share\n");
        for (r, m) in rows {
            let total: f64 = m.phases.iter().map(|(_, s)| s).sum();
            for (phase, s) in &m.phases {
                writeln!(prof, "{},{phase},{:.3},{:.4}", r.model, s * 1e3, s / total.max(1e-12)).expect("String");
            }
        }
        crate::track::atomic_write(&o.out_dir.join(format!("profile-{slug}.csv")), prof.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_resident_size_is_read_and_reset() {
        reset_peak_rss();
        let before = peak_rss();
        assert!(before > 0);
        let mut big = vec![0u8; 64 << 20];
        for page in big.chunks_mut(4096) {
            page[0] = 1;
        }
        std::hint::black_box(&big);
        assert!(peak_rss() >= before + (60 << 20), "64 MB touched shows in VmHWM");
        drop(big);
        reset_peak_rss();
        assert!(peak_rss() < before + (60 << 20), "reset to the current size");
    }

    /// The reference is found at run time: an explicit path, else under the working directory (or an
    /// ancestor), wherever the binary was built; a missing one is an error naming the flag.
    #[test]
    fn the_pytorch_reference_is_found_at_run_time() {
        let tree = tempfile::tempdir().unwrap();
        let script = tree.path().join("bench/pytorch_reference.py");
        std::fs::create_dir_all(script.parent().unwrap()).unwrap();
        std::fs::write(&script, "# a moved tree's reference").unwrap();
        assert_eq!(find_reference_script(Some(&script)).unwrap(), script);
        let missing = find_reference_script(Some(&tree.path().join("nope.py"))).unwrap_err().to_string();
        assert!(missing.contains("--reference-script") && missing.contains("nope.py"), "{missing}");
        let deeper = tree.path().join("analysis/bench");
        std::fs::create_dir_all(&deeper).unwrap();
        let before = std::env::current_dir().unwrap();
        std::env::set_current_dir(&deeper).unwrap();
        let found = find_reference_script(None);
        std::env::set_current_dir(before).unwrap();
        assert_eq!(
            found.unwrap().canonicalize().unwrap(),
            script.canonicalize().unwrap(),
            "from a folder below the root"
        );
    }

    #[test]
    fn every_recipe_is_a_valid_two_window_experiment() {
        let dir = tempfile::tempdir().unwrap();
        for r in &RECIPES {
            let file = dir.path().join(format!("{}.toml", r.model));
            std::fs::write(&file, experiment(r, 3, r.batch)).unwrap();
            let exp = load_experiment(&file, &LoadOptions::default()).unwrap();
            let t = &exp.runs[0].config.train;
            assert_eq!((t.steps, t.log_every, t.batch_size), (6, 3, 128), "{}", r.model);
            assert_eq!(exp.runs[0].config.data.image_size, r.image_size);
        }
    }
}
