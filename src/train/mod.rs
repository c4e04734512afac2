//! The training loop of one run, then sampling of a grid (and of a reverse-process trajectory).
//!
//! A run resumes from its newest valid checkpoint. Every stream of random draws is seeded from the run's
//! seed and the stream's index (see `rng`), so a resumed run ends with the same weights as an
//! uninterrupted one.
mod clustering;
mod draws;
pub mod ema;
pub mod optim;
pub mod step;
pub mod stop;
mod window;

use crate::config::{LossKind, RunSpec, TimestepSampling};
use crate::data::Dataset;
use crate::diffusion::timesteps::TimestepSampler;
use crate::diffusion::{forward::q_sample, Diffusion, NoiseSchedule};
use crate::grid::{make_grid, trajectory_grid, Image};
use crate::models;
use crate::progress::phases::Phases;
use crate::progress::{LogRecord, Reporter};
use crate::rng::reseed;
use crate::track::run_dir::{RunDir, State, Status};
use crate::track::{atomic_replace, atomic_write, checkpoint, metrics::MetricsWriter, sha256_hex, tensorboard};
use anyhow::{bail, Context, Result};
use draws::{Draws, StepDraws};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};
use tensorboard::EventWriter;
use window::Window;

/// What training calls every `every()` steps: the evaluation during training, which the runner passes
/// in (training knows nothing of evaluation).
pub trait DuringHook {
    fn every(&self) -> usize;
    /// Whether it evaluates the EMA weights (else the raw ones).
    fn use_ema(&self) -> bool;
    /// Called once before the first step, with the step this attempt starts from and the classes
    /// the model is conditioned on.
    fn start(&mut self, start: usize, classes: Option<i64>, reporter: &mut dyn Reporter) -> Result<()>;
    /// Where the weights to evaluate are copied before `evaluate`.
    fn weights(&mut self) -> Result<&mut nn::VarStore>;
    fn evaluate(&mut self, step: usize, events: &mut EventWriter, reporter: &mut dyn Reporter) -> Result<()>;
    /// The lowest FID so far and its step.
    fn best(&self) -> Option<(usize, f64)>;
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub final_loss: f64,
    pub images_per_sec: f64,
    pub wall_seconds: f64,
    /// sha256 of the saved `model.safetensors` (the last weights) and `ema.safetensors`.
    pub weights_sha256: String,
    pub ema_sha256: String,
    /// Trainable parameters of the model.
    pub parameters: i64,
    /// The checkpoint step this invocation resumed from, if any.
    pub resumed_from: Option<usize>,
    /// The lowest FID of the evaluations during training and its step.
    pub best_fid_during: Option<(usize, f64)>,
    /// Numbers the training itself measured (a cluster-conditional run's clustering scores).
    pub metrics: std::collections::BTreeMap<String, f64>,
}

/// Trains the run described by `spec` in `dir` (resuming from its newest valid checkpoint), saves
/// the final weights as `model.safetensors` and their average as `ema.safetensors`, then draws
/// `sample.num_samples` images with the configured sampler. `during` evaluates every `every()` steps.
pub fn train_run(
    spec: &RunSpec,
    dir: &RunDir,
    device: Device,
    data_dir: &Path,
    reporter: &mut dyn Reporter,
    mut during: Option<&mut dyn DuringHook>,
) -> Result<Outcome> {
    let cfg = &spec.config;
    let (tc, dc, seed) = (&cfg.train, &cfg.diffusion, cfg.seed);
    let started = Instant::now();
    let data = Dataset::load_train(&cfg.data, data_dir, device)?;
    let diffusion = Diffusion::new(cfg, device);
    let [channels, height, width] = data.image_shape();
    reseed(seed, "init", 0);
    let vs = nn::VarStore::new(device);
    let classes = models::classes_of(cfg, data.classes)?;
    let model = models::build_for(cfg, classes, &vs.root());
    if tc.channels_last {
        for (_, mut v) in vs.variables() {
            v.set_data(&crate::device::channels_last(&v));
        }
    }
    let parameters = models::parameter_count(&vs);
    reporter.note(&format!("model {}: {parameters} parameters", cfg.model.name()));
    let mut opt = optim::Adam::new(&vs, tc.lr);
    let mut ema = ema::Ema::new(&vs, tc.ema_decay, tc.ema_warmup);
    let mut timestep_sampler = match tc.timestep_sampling {
        TimestepSampling::Uniform => TimestepSampler::uniform(dc.timesteps),
        TimestepSampling::LossSecondMoment => TimestepSampler::loss_second_moment(dc.timesteps),
    };
    let (n, batch, steps) = (data.len(), tc.batch_size, tc.steps);
    if batch > n {
        bail!("train.batch_size = {batch} is larger than the dataset ({n} images)");
    }

    let mut clustering = cfg.cluster.on().then(|| clustering::Clustering::start(cfg, &data, reporter));
    let checkpoints = dir.path.join("checkpoints");
    let (latest, problems) = checkpoint::load_latest(&checkpoints);
    for p in &problems {
        reporter.note(p);
    }
    // The time spent before this attempt, through the checkpoint it resumes from, so that a run's
    // images/s and wall time add up over its attempts (checkpoints of older versions lack it: then
    // only this attempt's steps are counted).
    let mut before = Spent::default();
    let start = match latest {
        Some(ck) => {
            restore(&ck, &vs, &mut opt, &mut ema, &mut timestep_sampler)?;
            if let Some(c) = clustering.as_mut() {
                c.restore(&ck.tensors, &ck.state["cluster"], device)?;
            }
            reporter.note(&format!("resuming from the checkpoint at step {}", ck.step));
            before = Spent::of(&ck.state, ck.step);
            ck.step
        }
        None => {
            clear_outputs(&dir.path)?;
            0
        }
    };
    let metrics_path = dir.path.join("metrics.jsonl");
    let mut metrics =
        if start > 0 { MetricsWriter::resume(&metrics_path, start)? } else { MetricsWriter::create(&metrics_path)? };
    if start > 0 {
        tensorboard::truncate_after(&dir.path, start as i64)?;
    }
    let mut events = EventWriter::create(&dir.path)?;
    if start == 0 {
        log_run_once(dir, &data, &diffusion.schedule, seed, &mut events)?;
        if let Some(c) = &clustering {
            c.log(&c.history[0], &mut events)?;
        }
    }

    if let Some(d) = during.as_mut() {
        d.start(start, classes, reporter)?;
    }
    reporter.phase("train", steps as u64);
    reporter.advance(start as u64);
    let mut draws = Draws::new(seed, n, batch, device)
        .with_random_flip(cfg.data.random_flip)
        .with_label_dropout(classes.filter(|_| cfg.conditioning.classes).map(|_| cfg.conditioning.label_dropout))
        .with_offset_noise(cfg.train.offset_noise_strength > 0.0)
        .with_self_condition(cfg.model.self_condition());
    let image_shape = data.images.size()[1..].to_vec();
    let mut window = Window::new(device, dc.timesteps);
    let train_started = Instant::now();
    let mut last: Option<LogRecord> = None;
    let mut phases = reporter.wants_phases().then(|| Phases::new(device));
    let mark = |phases: &mut Option<Phases>, phase: &'static str| {
        if let Some(p) = phases.as_mut() {
            p.mark(phase)
        }
    };
    for step in start + 1..=steps {
        let StepDraws { indices, t, importance, noise, flip, drop_label, offset, self_condition } =
            draws.step(step, &image_shape, &timestep_sampler);
        mark(&mut phases, "draws (indices, t, noise)");
        let x0 = data.images.index_select(0, &indices);
        // One batched select between the images and their mirror images, no per-image work.
        let x0 = match &flip {
            Some(f) => x0.flip([3]).where_self(&f.view([-1, 1, 1, 1]), &x0),
            None => x0,
        };
        // The batch's classes, some dropped to "no class" (−1) so the network also learns ε(x_t, ∅).
        // A cluster-conditional run's classes are the clusters, drawn from the responsibilities.
        let labels = clustering.as_ref().map(|c| c.labels(&indices, step)).or_else(|| {
            classes.map(|_| {
                let l = data.labels.index_select(0, &indices);
                match &drop_label {
                    Some(d) => l.where_scalarother(&d.logical_not(), -1),
                    None => l,
                }
            })
        });
        mark(&mut phases, "batch");
        let inputs = step::Batch {
            x0: &x0,
            t: &t,
            noise: &noise,
            offset: offset.as_ref(),
            self_condition,
            labels: labels.as_ref(),
            importance,
        };
        let step::BatchLoss { loss, per_sample } = step::batch_loss(model.as_ref(), &diffusion, tc, device, inputs);
        let logging = step % tc.log_every == 0 || step == steps;
        mark(&mut phases, "forward and loss");
        opt.zero_grad();
        loss.backward();
        mark(&mut phases, "backward");
        let grad_norm = logging.then(|| opt.grad_norm());
        let lr = optim::lr_at(tc.lr, tc.warmup_steps, tc.lr_decay, step, steps);
        opt.set_lr(lr);
        opt.step();
        mark(&mut phases, "adam");
        ema.update(&vs, step as i64 - 1);
        mark(&mut phases, "ema");
        timestep_sampler.update(&t, &per_sample.detach());
        window.add(&loss, &per_sample, &t);
        mark(&mut phases, "loss window");

        if logging {
            let w = window.take();
            if !w.loss.is_finite() {
                let previous = last.as_ref().map_or("none".into(), |r| format!("{:.6} at step {}", r.loss, r.step));
                bail!(
                    "training loss is {} over steps {}..={step}; last finite loss: {previous}",
                    w.loss,
                    step + 1 - w.steps
                );
            }
            let record = LogRecord {
                step,
                loss: w.loss,
                grad_norm: grad_norm.map(|g| g.double_value(&[])),
                loss_quarters: w.quarters,
                images_per_sec: (w.steps as i64 * batch) as f64 / w.seconds,
                lr,
                elapsed_seconds: started.elapsed().as_secs_f64(),
            };
            log(&mut metrics, &mut events, &record, tc.loss)?;
            reporter.logged(&record);
            mark(&mut phases, "logging");
            if step == steps {
                // The profile covers the training steps; the last checkpoint, written once, is not one.
                if let Some(p) = phases.take() {
                    reporter.phases(p);
                }
            }
            if last.is_none() {
                // The first window is the warm-up: profile the steps after it.
                if let Some(p) = phases.as_mut() {
                    p.reset();
                }
            }
            last = Some(record);
        }
        if let Some(d) = during.as_mut().filter(|d| step % d.every() == 0 && step < steps) {
            if d.use_ema() {
                ema.copy_to(d.weights()?);
            } else {
                let target = d.weights()?;
                tch::no_grad(|| target.copy(&vs))?;
            }
            d.evaluate(step, &mut events, reporter)?;
            reporter.phase("train", steps as u64);
            reporter.advance(step as u64);
        }
        if let Some(c) = clustering.as_mut().filter(|_| cfg.cluster.e_step_at(step, steps)) {
            let record = c.e_step(step, step == steps, &diffusion, model.as_ref(), &data.images, reporter);
            c.log(&record, &mut events)?;
            reporter.note(&format!(
                "E-step {} at step {step}: π = [{}], {:.1} % changed cluster, margin {:.1} nats, {:.1} s",
                record.iteration,
                record.pi.iter().map(|p| format!("{p:.3}")).collect::<Vec<_>>().join(", "),
                100.0 * record.changed,
                record.margin_nats.unwrap_or(0.0),
                record.seconds
            ));
            reporter.phase("train", steps as u64);
            reporter.advance(step as u64);
        }
        // A stop request waits for the end of the logging window: the resumed run then logs what an
        // uninterrupted one would (the window's sums are not part of the checkpoint).
        let stop = stop::requested().filter(|_| logging && step < steps);
        if step % tc.checkpoint_every == 0 || step == steps || stop.is_some() {
            let spent = before.plus(train_started.elapsed().as_secs_f64(), started.elapsed().as_secs_f64());
            save_checkpoint(&checkpoints, step, &vs, &opt, &ema, &timestep_sampler, &spent, clustering.as_ref())?;
            let mut status = Status::new(State::Running, spec, step);
            status.last_loss = last.as_ref().map(|r| r.loss);
            dir.write_status(&status)?;
        }
        mark(&mut phases, "checkpoint");
        reporter.advance(step as u64);
        if let Some(signal) = stop {
            events.flush()?;
            reporter.note(&format!("{signal}: checkpoint written at step {step}; stopping"));
            return Err(stop::Stopped { step, signal }.into());
        }
    }
    let spent = before.plus(train_started.elapsed().as_secs_f64(), 0.0);
    let images_per_sec = ((steps - spent.uncounted_steps) as i64 * batch) as f64 / spent.train_seconds.max(1e-9);

    // The final weights and their average; sampling uses the one configured.
    let ema_vs = nn::VarStore::new(device);
    let ema_model = models::build_for(cfg, classes, &ema_vs.root());
    ema.copy_to(&ema_vs);
    let weights_sha256 = save_weights(&vs, &dir.path.join("model.safetensors"))?;
    let ema_sha256 = save_weights(&ema_vs, &dir.path.join("ema.safetensors"))?;
    let sampling_model = if cfg.sample.use_ema { &ema_model } else { &model };

    let image_shape = [channels, height, width];
    draw_samples(cfg, &diffusion, sampling_model.as_ref(), classes, image_shape, dir, &mut events, reporter)?;
    let mut train_metrics = std::collections::BTreeMap::new();
    if let Some(c) = &clustering {
        c.write(&dir.path)?;
        c.draw_grids(cfg, &diffusion, sampling_model.as_ref(), &data.images, &dir.path, steps, &mut events, reporter)?;
        train_metrics = c.metrics();
        // Beside the evaluation's numbers (`eval/<name>`: the HParams dashboard's metric columns).
        for (k, v) in &train_metrics {
            events.add_scalar(&format!("eval/{k}"), *v, steps as i64)?;
        }
    }
    events.flush()?;

    let final_loss = match last {
        Some(r) => r.loss,
        None => last_logged_loss(&metrics_path).unwrap_or(f64::NAN),
    };
    Ok(Outcome {
        final_loss,
        images_per_sec,
        wall_seconds: before.wall_seconds + started.elapsed().as_secs_f64(),
        weights_sha256,
        ema_sha256,
        parameters,
        resumed_from: (start > 0).then_some(start),
        best_fid_during: during.and_then(|d| d.best()),
        metrics: train_metrics,
    })
}

/// The end of a run: `sample.num_samples` images from the trained network with `[sample]`'s sampler
/// (a class-conditional run's image i of class i mod K, so column j of the grid is class j), written
/// as `samples.png` and, when asked, the reverse process as `trajectory.png`; both in TensorBoard.
#[allow(clippy::too_many_arguments)]
fn draw_samples(
    cfg: &crate::config::RunConfig,
    diffusion: &Diffusion,
    model: &dyn models::Denoiser,
    classes: Option<i64>,
    [channels, height, width]: [i64; 3],
    dir: &RunDir,
    events: &mut EventWriter,
    reporter: &mut dyn Reporter,
) -> Result<()> {
    let (device, timesteps, steps) =
        (diffusion.schedule.sqrt_alpha_bar.device(), diffusion.timesteps(), cfg.train.steps);
    let sample_steps = cfg.sample.sampler.steps(timesteps);
    reporter.phase("sample", sample_steps as u64);
    reseed(cfg.seed, "sample", 0);
    let shape = [cfg.sample.num_samples, channels, height, width];
    let labels = classes.map(|k| models::balanced_labels(0, cfg.sample.num_samples, k, device));
    let mut eps_model = models::sampling_fn(model, labels, cfg.sample.guidance_scale);
    let x_t = Tensor::randn(shape, (Kind::Float, device));
    let trajectory = cfg.sample.trajectory_steps(timesteps);
    let out =
        diffusion.sample(&cfg.sample.sampler, x_t, &trajectory, &mut eps_model, &mut |k, _| reporter.advance(k as u64));
    let ncol = match classes {
        Some(k) => k as usize,
        None => (cfg.sample.num_samples as f64).sqrt().ceil() as usize,
    };
    save_image(&dir.path.join("samples.png"), &make_grid(&out.x0, ncol, 2)?, "samples", steps, events)?;
    if !out.trajectory.is_empty() {
        let grid = trajectory_grid(&out.trajectory, 8)?;
        save_image(&dir.path.join("trajectory.png"), &grid, "reverse_process", steps, events)?;
    }
    Ok(())
}

/// What a run logs once, at its start: the resolved configuration and the provenance as text, and
/// the forward process as an image strip (the first training image at t = 0, T/4, T/2, 3T/4, T).
fn log_run_once(
    dir: &RunDir,
    data: &Dataset,
    schedule: &NoiseSchedule,
    seed: u64,
    events: &mut EventWriter,
) -> Result<()> {
    let read = |name: &str| std::fs::read_to_string(dir.path.join(name)).unwrap_or_default();
    events.add_text("config", &format!("```toml\n{}\n```", read("config.toml")), 0)?;
    events.add_text("provenance", &format!("```json\n{}\n```", read("provenance.json")), 0)?;
    let t_max = schedule.timesteps();
    let ts: Vec<i64> = [0, t_max / 4, t_max / 2, 3 * t_max / 4, t_max - 1].iter().map(|&t| t as i64).collect();
    reseed(seed, "forward-strip", 0);
    let x0 = data.images.narrow(0, 0, 1).repeat([ts.len() as i64, 1, 1, 1]);
    let t = Tensor::from_slice(&ts).to_device(x0.device());
    let strip = q_sample(schedule, &x0, &t, &x0.randn_like());
    save_image(&dir.path.join("forward_process.png"), &make_grid(&strip, ts.len(), 2)?, "forward_process", 0, events)?;
    events.flush()
}

/// Removes what an earlier attempt without a checkpoint left, since the run starts over; an old event
/// file beside the new one would show TensorBoard two overlapping curves.
fn clear_outputs(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        // The HParams session file is the runner's, not this attempt's.
        let stale = (name.starts_with("events.out.tfevents.") && name != crate::track::hparams::EVENT_FILE)
            || [
                "samples.png",
                "trajectory.png",
                "forward_process.png",
                "metrics.jsonl",
                "eval_history.jsonl",
                "model.safetensors",
                "ema.safetensors",
                "assignments.parquet",
                "em_history.json",
                "clusters.png",
            ]
            .contains(&name);
        if (name == "eval" || name == "eval_during" || name == "clusters") && path.is_dir() {
            std::fs::remove_dir_all(&path).with_context(|| format!("cannot remove stale {}", path.display()))?;
        } else if stale {
            std::fs::remove_file(&path).with_context(|| format!("cannot remove stale {}", path.display()))?;
        }
    }
    Ok(())
}

/// Seconds a run has spent through a step, summed over its attempts: in the training loop (for
/// images/s) and in all (wall time). Kept in each checkpoint's state (execution bookkeeping: it does
/// not change what the run computes).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Spent {
    train_seconds: f64,
    wall_seconds: f64,
    /// Steps trained before the attempts that recorded their time (checkpoints of older versions).
    uncounted_steps: usize,
}

impl Spent {
    fn of(state: &serde_json::Value, step: usize) -> Self {
        match (state["train_seconds"].as_f64(), state["wall_seconds"].as_f64()) {
            (Some(train_seconds), Some(wall_seconds)) => Spent {
                train_seconds,
                wall_seconds,
                uncounted_steps: state["uncounted_steps"].as_u64().unwrap_or(0) as usize,
            },
            _ => Spent { uncounted_steps: step, ..Spent::default() },
        }
    }

    /// With this attempt's `train` and `wall` seconds so far.
    fn plus(&self, train: f64, wall: f64) -> Self {
        Spent { train_seconds: self.train_seconds + train, wall_seconds: self.wall_seconds + wall, ..*self }
    }
}

#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    dir: &Path,
    step: usize,
    vs: &nn::VarStore,
    opt: &optim::Adam,
    ema: &ema::Ema,
    ts: &TimestepSampler,
    spent: &Spent,
    clustering: Option<&clustering::Clustering>,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> =
        vs.variables().into_iter().map(|(k, v)| (format!("model.{k}"), v)).collect();
    tensors.extend(opt.state());
    tensors.extend(ema.state());
    let cluster_state = clustering.map(|c| {
        let (t, state) = c.state();
        tensors.extend(t);
        state
    });
    // safetensors stores row-major bytes: channels-last tensors are written as contiguous copies.
    let tensors: Vec<(String, Tensor)> = tensors.into_iter().map(|(k, t)| (k, t.contiguous())).collect();
    let mut state = serde_json::json!({
        // The device kind that computed these weights: a resume on the other kind is refused unless
        // allowed (`runner::one::check_device_change`).
        "device": if vs.device().is_cuda() { "cuda" } else { "cpu" },
        "adam_step": opt.step,
        "timestep_sampler": ts.state(),
        "train_seconds": spent.train_seconds,
        "wall_seconds": spent.wall_seconds,
        "uncounted_steps": spent.uncounted_steps,
    });
    if let Some(c) = cluster_state {
        state["cluster"] = c;
    }
    checkpoint::save(dir, step, &tensors, state)
}

fn restore(
    ck: &checkpoint::Checkpoint,
    vs: &nn::VarStore,
    opt: &mut optim::Adam,
    ema: &mut ema::Ema,
    ts: &mut TimestepSampler,
) -> Result<()> {
    let t: &HashMap<String, Tensor> = &ck.tensors;
    for (name, var) in vs.variables() {
        let src = t
            .get(&format!("model.{name}"))
            .with_context(|| format!("checkpoint at step {} lacks model.{name}", ck.step))?;
        tch::no_grad(|| var.shallow_clone().copy_(src));
    }
    opt.load_state(t, ck.state["adam_step"].as_i64().unwrap_or(ck.step as i64))?;
    ema.load_state(t)?;
    ts.load_state(&ck.state["timestep_sampler"])
}

fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<String> {
    let tensors: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(k, t)| (k, t.contiguous())).collect();
    atomic_replace(path, |tmp| Ok(Tensor::write_safetensors(&tensors, tmp)?))?;
    Ok(sha256_hex(&std::fs::read(path)?))
}

fn last_logged_loss(metrics: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(metrics).ok()?;
    serde_json::from_str::<serde_json::Value>(text.lines().last()?).ok()?["loss"].as_f64()
}

fn log(metrics: &mut MetricsWriter, events: &mut EventWriter, r: &LogRecord, loss: LossKind) -> Result<()> {
    metrics.append(r)?;
    let step = r.step as i64;
    events.add_scalar("train/loss", r.loss, step)?;
    for (q, value) in r.loss_quarters.iter().enumerate() {
        if let Some(v) = value {
            events.add_scalar(&format!("train/{}_q{q}", loss_name(loss)), *v, step)?;
        }
    }
    if let Some(g) = r.grad_norm {
        events.add_scalar("train/grad_norm", g, step)?;
    }
    events.add_scalar("train/images_per_sec", r.images_per_sec, step)?;
    events.add_scalar("train/lr", r.lr, step)?;
    events.flush()
}

fn loss_name(loss: LossKind) -> &'static str {
    match loss {
        LossKind::L1 => "l1",
        LossKind::L2 => "l2",
        LossKind::Huber => "huber",
    }
}

fn save_image(path: &Path, image: &Image, tag: &str, step: usize, events: &mut EventWriter) -> Result<()> {
    let png = image.to_png()?;
    atomic_write(path, &png)?;
    events.add_png(tag, &png, image.height, image.width, image.channels, step as i64)
}
