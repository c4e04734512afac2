//! The training loop of one run, then sampling of a grid (and of a reverse-process trajectory).
//!
//! A run resumes from its newest valid checkpoint. Every stream of random draws is seeded from the run's
//! seed and the stream's index (see `rng`), so a resumed run ends with the same weights as an
//! uninterrupted one. Everything around the step itself (logging, the evaluation during training, a
//! clustering's E-steps, the stop signal, checkpoints) is a `Hook`, listed in `hooks`.
mod checkpoints;
mod clustering;
mod draws;
pub mod ema;
pub mod hook;
mod logging;
pub mod optim;
mod outputs;
pub mod step;
pub mod stop;
mod window;

pub use hook::Hook;

use crate::config::{RunSpec, TimestepSampling};
use crate::data::Dataset;
use crate::diffusion::timesteps::TimestepSampler;
use crate::diffusion::Diffusion;
use crate::models;
use crate::progress::phases::Phases;
use crate::progress::Reporter;
use crate::rng::reseed;
use crate::track::run_dir::{Artifact, Folder, RunDir};
use crate::track::{checkpoint, tensorboard};
use anyhow::{bail, Result};
use checkpoints::{Core, Spent};
use draws::{Draws, StepDraws};
use hook::{Begin, End};
use std::path::Path;
use std::time::Instant;
use tch::{nn, Device};
use tensorboard::EventWriter;

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
    /// The best headline metric of the evaluations during training (FID, lowest) and its step.
    pub best_fid_during: Option<(usize, f64)>,
    /// Numbers the training itself measured (a cluster-conditional run's clustering scores).
    pub metrics: std::collections::BTreeMap<String, f64>,
}

/// The hooks of a run, in the order they run after each step: logging first (its NaN check stops a
/// diverged run before anything else sees it), then the caller's (the evaluation during training),
/// the clustering's E-step, the stop signal and the checkpoints last (they save every hook's state).
fn hooks<'a>(
    spec: &RunSpec,
    data: &Dataset,
    outer: Vec<Box<dyn Hook + 'a>>,
    reporter: &mut dyn Reporter,
) -> Vec<Box<dyn Hook + 'a>> {
    let cfg = &spec.config;
    let mut hooks: Vec<Box<dyn Hook + 'a>> =
        vec![Box::new(logging::Logging::new(cfg.train.loss, cfg.train.batch_size, cfg.diffusion.timesteps))];
    hooks.extend(outer);
    if cfg.cluster.on() {
        hooks.push(Box::new(clustering::Clustering::start(cfg, data, reporter)));
    }
    hooks.push(Box::new(stop::StopOnSignal));
    hooks.push(Box::new(checkpoints::Checkpoints { every: cfg.train.checkpoint_every }));
    hooks
}

/// Trains the run described by `spec` in `dir` (resuming from its newest valid checkpoint), saves
/// the final weights as `model.safetensors` and their average as `ema.safetensors`, then draws
/// `sample.num_samples` images with the configured sampler. `outer` are the caller's hooks (the
/// evaluation during training, which sits above training).
pub fn train_run<'a>(
    spec: &RunSpec,
    dir: &RunDir,
    device: Device,
    data_dir: &Path,
    reporter: &mut dyn Reporter,
    outer: Vec<Box<dyn Hook + 'a>>,
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

    let mut hooks = hooks(spec, &data, outer, reporter);
    let checkpoints = dir.folder(Folder::Checkpoints);
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
            checkpoints::restore(&ck, &vs, &mut opt, &mut ema, &mut timestep_sampler)?;
            for h in hooks.iter_mut() {
                h.restore(&ck)?;
            }
            reporter.note(&format!("resuming from the checkpoint at step {}", ck.step));
            before = Spent::of(&ck.state, ck.step);
            ck.step
        }
        None => {
            dir.clear_attempt()?;
            0
        }
    };
    if start > 0 {
        tensorboard::truncate_after(&dir.path, start as i64)?;
    }
    let mut events = EventWriter::create(&dir.path)?;
    if start == 0 {
        outputs::log_run_once(dir, &data, &diffusion.schedule, seed, &mut events)?;
    }
    for h in hooks.iter_mut() {
        h.begin(&mut Begin { start, classes, run: dir, events: &mut events, reporter })?;
    }
    reporter.phase("train", steps as u64);
    reporter.advance(start as u64);
    let mut draws = Draws::new(seed, n, batch, device)
        .with_random_flip(cfg.data.random_flip)
        .with_label_dropout(classes.filter(|_| cfg.conditioning.classes).map(|_| cfg.conditioning.label_dropout))
        .with_offset_noise(cfg.train.offset_noise_strength > 0.0)
        .with_self_condition(cfg.model.self_condition());
    let image_shape = data.images.size()[1..].to_vec();
    let train_started = Instant::now();
    let mut last_loss: Option<f64> = None;
    let mut first_window = true;
    let mut phases = reporter.wants_phases().then(|| Phases::new(device));
    let mark = |phases: &mut Option<Phases>, phase: &'static str| {
        if let Some(p) = phases.as_mut() {
            p.mark(phase)
        }
    };
    for step in start + 1..=steps {
        let step_started = Instant::now();
        let StepDraws { indices, t, importance, noise, flip, drop_label, offset, self_condition } =
            draws.step(step, &image_shape, &timestep_sampler);
        mark(&mut phases, "draws (indices, t, noise)");
        let x0 = data.images.index_select(0, &indices);
        // One batched select between the images and their mirror images, no per-image work.
        let x0 = match &flip {
            Some(f) => x0.flip([3]).where_self(&f.view([-1, 1, 1, 1]), &x0),
            None => x0,
        };
        // The batch's classes, some dropped to "no class" (−1) so the network also learns ε(x_t, ∅);
        // a hook may give its own (a cluster-conditional run's clusters, drawn from the responsibilities).
        let labels = hooks.iter().find_map(|h| h.labels(&indices, step)).or_else(|| {
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
        mark(&mut phases, "timestep sampler");

        let mut s = hook::Step {
            step,
            steps,
            logging,
            loss: &loss,
            per_sample: &per_sample,
            t: &t,
            grad_norm: grad_norm.as_ref(),
            lr,
            started,
            step_started,
            spec,
            run: dir,
            diffusion: &diffusion,
            data: &data,
            model: model.as_ref(),
            weights: &vs,
            ema: &ema,
            events: &mut events,
            reporter,
            last_loss: &mut last_loss,
            checkpoint: false,
            stop: None,
        };
        for h in hooks.iter_mut() {
            h.after_step(&mut s)?;
            mark(&mut phases, h.name());
        }
        if logging {
            if step == steps {
                // The profile covers the training steps; the last checkpoint, written once, is not one.
                if let Some(p) = phases.take() {
                    s.reporter.phases(p);
                }
            }
            if first_window {
                // The first window is the warm-up: profile the steps after it.
                if let Some(p) = phases.as_mut() {
                    p.reset();
                }
                first_window = false;
            }
        }
        if s.checkpoint {
            let spent = before.plus(train_started.elapsed().as_secs_f64(), started.elapsed().as_secs_f64());
            let core = Core { vs: &vs, opt: &opt, ema: &ema, timesteps: &timestep_sampler };
            checkpoints::save(&checkpoints, step, core, &spent, &hooks)?;
            for h in hooks.iter_mut() {
                h.saved(&mut s)?;
            }
        }
        mark(&mut phases, "checkpoint written");
        s.reporter.advance(step as u64);
        if let Some(signal) = s.stop {
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
    let weights_sha256 = outputs::save_weights(&vs, &dir.file(Artifact::Weights))?;
    let ema_sha256 = outputs::save_weights(&ema_vs, &dir.file(Artifact::EmaWeights))?;
    let sampling_model = if cfg.sample.use_ema { &ema_model } else { &model };

    let image_shape = [channels, height, width];
    outputs::draw_samples(cfg, &diffusion, sampling_model.as_ref(), classes, image_shape, dir, &mut events, reporter)?;
    let mut end = End {
        spec,
        run: dir,
        diffusion: &diffusion,
        data: &data,
        sampling_model: sampling_model.as_ref(),
        events: &mut events,
        reporter,
        metrics: Default::default(),
        final_loss: None,
        best_during: None,
    };
    for h in hooks.iter_mut() {
        h.finish(&mut end)?;
    }
    let End { metrics, final_loss, best_during, .. } = end;
    events.flush()?;
    Ok(Outcome {
        final_loss: final_loss.unwrap_or(f64::NAN),
        images_per_sec,
        wall_seconds: before.wall_seconds + started.elapsed().as_secs_f64(),
        weights_sha256,
        ema_sha256,
        parameters,
        resumed_from: (start > 0).then_some(start),
        best_fid_during: best_during,
        metrics,
    })
}
