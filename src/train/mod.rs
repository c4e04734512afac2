//! The training loop of one run, then sampling of a grid (and of a reverse-process trajectory).
//!
//! A run resumes from its newest valid checkpoint. Every stream of random draws is seeded from the run's
//! seed and the stream's index (see `rng`), so a resumed run ends with the same weights as an
//! uninterrupted one. The loop trains one step (`Learner::update` on a batch from `Batches`), then
//! calls the run's hooks; everything else (logging, the evaluation during training, a clustering's
//! E-steps, the stop signal, checkpoints) is a `Hook`, listed in `hooks`.
mod batches;
mod checkpoints;
mod clustering;
mod draws;
pub mod ema;
pub mod hook;
mod learner;
mod logging;
pub mod optim;
mod outputs;
mod posthoc_ema;
pub mod step;
pub mod stop;
mod window;

pub use hook::Hook;

use crate::config::RunSpec;
use crate::data::Dataset;
use crate::diffusion::Diffusion;
use crate::distributed::Group;
use crate::models;
use crate::progress::phases::Phases;
use crate::progress::Reporter;
use crate::track::run_dir::{Artifact, Folder, RunDir};
use crate::track::{checkpoint, tensorboard};
use anyhow::{bail, Result};
use batches::Batches;
use checkpoints::Spent;
use hook::{Begin, End};
use learner::Learner;
use std::collections::BTreeMap;
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
    pub metrics: BTreeMap<String, f64>,
}

/// The hooks of a run, in the order they run after each step: logging first (its NaN check stops a
/// diverged run before anything else sees it), then the caller's (the evaluation during training),
/// the clustering's E-step, the post-hoc EMA's averages, the stop signal and the checkpoints last (they
/// save every hook's state).
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
    if let Some(p) = &cfg.train.posthoc_ema {
        hooks.push(Box::new(posthoc_ema::PosthocEma::new(p)));
    }
    hooks.push(Box::new(stop::StopOnSignal));
    hooks.push(Box::new(checkpoints::Checkpoints { every: cfg.train.checkpoint_every }));
    hooks
}

/// Trains the run described by `spec` in `dir` (resuming from its newest valid checkpoint), saves
/// the final weights as `model.safetensors` and their average as `ema.safetensors`, then draws
/// `sample.num_samples` images with the configured sampler. `outer` are the caller's hooks (the
/// evaluation during training, which sits above training).
///
/// With `parallel` (a run of several processes), this is one rank: rank 0 does all of the above and
/// writes everything; the other ranks only `follow` it, training their share of every batch.
pub fn train_run<'a>(
    spec: &RunSpec,
    dir: &RunDir,
    device: Device,
    data_dir: &Path,
    reporter: &mut dyn Reporter,
    outer: Vec<Box<dyn Hook + 'a>>,
    parallel: Option<&Group>,
) -> Result<Outcome> {
    if let Some(g) = parallel.filter(|g| g.rank > 0) {
        return follow(spec, dir, device, data_dir, g);
    }
    let (cfg, started) = (&spec.config, Instant::now());
    let data = Dataset::load_train(&cfg.data, data_dir, device)?;
    let diffusion = Diffusion::new(cfg, device);
    let classes = models::classes_of(cfg, data.classes)?;
    let mut learner = Learner::new(cfg, classes, device)?;
    let parameters = models::parameter_count(&learner.vs);
    reporter.note(&format!("model {}: {parameters} parameters", cfg.model.name()));
    let (n, batch, steps) = (data.len(), cfg.train.batch_size, cfg.train.steps);
    if batch > n {
        bail!("train.batch_size = {batch} is larger than the dataset ({n} images)");
    }
    let mut hooks = hooks(spec, &data, outer, reporter);
    let (start, before) = resume(dir, &mut learner, &mut hooks, reporter)?;
    if let Some(g) = parallel {
        g.broadcast_i64(start as i64, device)?;
        reporter.note(&format!(
            "rank 0 of {} ({}): each rank trains {} images of every batch",
            g.size,
            backend(g),
            batch / g.size as i64
        ));
    }
    if start > 0 {
        tensorboard::truncate_after(&dir.path, start as i64)?;
    }
    let mut events = EventWriter::create(&dir.path)?;
    if start == 0 {
        outputs::log_run_once(dir, &data, &diffusion, cfg.seed, &mut events)?;
    }
    for h in hooks.iter_mut() {
        h.begin(&mut Begin { start, classes, run: dir, events: &mut events, reporter })?;
    }
    reporter.phase("train", steps as u64);
    reporter.advance(start as u64);
    let mut batches = Batches::new(cfg, &data, classes, device);
    let (train_started, mut last_loss) = (Instant::now(), None);
    let mut profile = Profile::new(reporter.wants_phases().then(|| Phases::new(device)));
    for step in start + 1..=steps {
        let step_started = Instant::now();
        let b = batches.next(step, &learner.timesteps, &hooks, &mut profile.phases);
        per_rank_stream(cfg.seed, step, parallel);
        let logging = step % cfg.train.log_every == 0 || step == steps;
        let update =
            learner.update(&diffusion, &cfg.train, device, &b, step, logging, &mut profile.phases, parallel)?;
        let mut s = hook::Step {
            step,
            steps,
            logging,
            loss: &update.loss.loss,
            per_sample: &update.loss.per_sample,
            t: &b.t,
            grad_norm: update.grad_norm.as_ref(),
            lr: update.lr,
            started,
            step_started,
            spec,
            run: dir,
            diffusion: &diffusion,
            data: &data,
            model: learner.model.as_ref(),
            weights: &learner.vs,
            ema: &learner.ema,
            events: &mut events,
            reporter,
            last_loss: &mut last_loss,
            checkpoint: false,
            stop: None,
        };
        for h in hooks.iter_mut() {
            h.after_step(&mut s)?;
            profile.mark(h.name());
        }
        if let Some(g) = parallel.filter(|_| logging && step < steps) {
            // The ranks stop at the same step: a signal that reached any of them stops all.
            if g.any(s.stop.is_some() || crate::signal::requested().is_some(), device)? && s.stop.is_none() {
                s.stop = Some(crate::signal::requested().unwrap_or("a stop request on another rank"));
                s.checkpoint = true;
            }
        }
        profile.window_closed(logging, step == steps, s.reporter);
        if s.checkpoint {
            let spent = before.plus(train_started.elapsed().as_secs_f64(), started.elapsed().as_secs_f64());
            checkpoints::save(&dir.folder(Folder::Checkpoints), step, learner.core(), &spent, &hooks)?;
            for h in hooks.iter_mut() {
                h.saved(&mut s)?;
            }
        }
        profile.mark("checkpoint written");
        s.reporter.advance(step as u64);
        if let Some(signal) = s.stop {
            events.flush()?;
            reporter.note(&format!("{signal}: checkpoint written at step {step}; stopping"));
            return Err(stop::Stopped { step, signal }.into());
        }
    }
    let spent = before.plus(train_started.elapsed().as_secs_f64(), 0.0);
    let mut agreement = BTreeMap::new();
    if let Some(g) = parallel {
        let d = g.max_difference(learner.opt.params())?;
        reporter.note(&format!("the {} ranks' weights differ by at most {d:e}", g.size));
        agreement.insert("ranks_max_weight_difference".to_string(), d);
    }
    let images_per_sec = ((steps - spent.uncounted_steps) as i64 * batch) as f64 / spent.train_seconds.max(1e-9);
    let run = Run { spec, dir, diffusion: &diffusion, data: &data, classes, device };
    let f = finish(&run, &learner, &mut hooks, &mut events, reporter)?;
    Ok(Outcome {
        final_loss: f.final_loss.unwrap_or(f64::NAN),
        images_per_sec,
        wall_seconds: before.wall_seconds + started.elapsed().as_secs_f64(),
        weights_sha256: f.weights_sha256,
        ema_sha256: f.ema_sha256,
        parameters,
        resumed_from: (start > 0).then_some(start),
        best_fid_during: f.best_during,
        metrics: f.metrics.into_iter().chain(agreement).collect(),
    })
}

/// With several ranks, what the network draws itself (dropout's masks) comes from a stream of each
/// rank's own, after the batch's draws (which every rank makes alike): otherwise every rank would draw
/// the same masks for its share. One process keeps drawing where the batch's draws left off.
fn per_rank_stream(seed: u64, step: usize, parallel: Option<&Group>) {
    if let Some(g) = parallel {
        crate::rng::reseed(seed, "rank", (step * g.size + g.rank) as u64);
    }
}

fn backend(g: &Group) -> &'static str {
    if g.nccl {
        "NCCL"
    } else {
        "gloo"
    }
}

/// A rank other than 0 of a run of several processes: the same model, batches and updates as rank 0
/// (from the checkpoint rank 0 resumes from), its share of each batch, no hooks and no files; it stops
/// where rank 0 stops. Its outcome carries only the ranks' agreement.
pub fn follow(spec: &RunSpec, dir: &RunDir, device: Device, data_dir: &Path, g: &Group) -> Result<Outcome> {
    let (cfg, started) = (&spec.config, Instant::now());
    let data = Dataset::load_train(&cfg.data, data_dir, device)?;
    let diffusion = Diffusion::new(cfg, device);
    let classes = models::classes_of(cfg, data.classes)?;
    let mut learner = Learner::new(cfg, classes, device)?;
    let start = g.broadcast_i64(0, device)? as usize;
    if start > 0 {
        learner.restore(&checkpoint::load(&dir.folder(Folder::Checkpoints), start)?)?;
    }
    let steps = cfg.train.steps;
    let mut batches = Batches::new(cfg, &data, classes, device);
    for step in start + 1..=steps {
        let b = batches.next(step, &learner.timesteps, &[], &mut None);
        per_rank_stream(cfg.seed, step, Some(g));
        let logging = step % cfg.train.log_every == 0 || step == steps;
        learner.update(&diffusion, &cfg.train, device, &b, step, logging, &mut None, Some(g))?;
        if logging && step < steps && g.any(crate::signal::requested().is_some(), device)? {
            let signal = crate::signal::requested().unwrap_or("a stop request on another rank");
            return Err(stop::Stopped { step, signal }.into());
        }
    }
    let d = g.max_difference(learner.opt.params())?;
    Ok(Outcome {
        final_loss: f64::NAN,
        images_per_sec: 0.0,
        wall_seconds: started.elapsed().as_secs_f64(),
        weights_sha256: String::new(),
        ema_sha256: String::new(),
        parameters: models::parameter_count(&learner.vs),
        resumed_from: (start > 0).then_some(start),
        best_fid_during: None,
        metrics: BTreeMap::from([("ranks_max_weight_difference".to_string(), d)]),
    })
}

/// Restores the newest valid checkpoint into the learner and the hooks (corrupt newer ones are
/// reported and skipped), or clears what an earlier attempt without one left. Returns the step to
/// start from and the time spent before it, so that a run's images/s and wall time add up over its
/// attempts (checkpoints of older versions lack it: then only this attempt's steps are counted).
fn resume(
    dir: &RunDir,
    learner: &mut Learner,
    hooks: &mut [Box<dyn Hook + '_>],
    reporter: &mut dyn Reporter,
) -> Result<(usize, Spent)> {
    let (latest, problems) = checkpoint::load_latest(&dir.folder(Folder::Checkpoints));
    for p in &problems {
        reporter.note(p);
    }
    match latest {
        Some(ck) => {
            learner.restore(&ck)?;
            for h in hooks.iter_mut() {
                h.restore(&ck)?;
            }
            reporter.note(&format!("resuming from the checkpoint at step {}", ck.step));
            Ok((ck.step, Spent::of(&ck.state, ck.step)))
        }
        None => {
            dir.clear_attempt()?;
            Ok((0, Spent::default()))
        }
    }
}

/// What the end of training works with.
struct Run<'r> {
    spec: &'r RunSpec,
    dir: &'r RunDir,
    diffusion: &'r Diffusion,
    data: &'r Dataset,
    classes: Option<i64>,
    device: Device,
}

/// What the end of training gives the outcome.
struct Finished {
    weights_sha256: String,
    ema_sha256: String,
    final_loss: Option<f64>,
    best_during: Option<(usize, f64)>,
    metrics: BTreeMap<String, f64>,
}

/// The end of training: the final weights and their average (`model.safetensors`, `ema.safetensors`),
/// the sample grid from the one `sample.use_ema` names, then every hook's `finish`.
fn finish(
    run: &Run,
    learner: &Learner,
    hooks: &mut [Box<dyn Hook + '_>],
    events: &mut EventWriter,
    reporter: &mut dyn Reporter,
) -> Result<Finished> {
    let (cfg, dir) = (&run.spec.config, run.dir);
    let ema_vs = nn::VarStore::new(run.device);
    let ema_model = models::build_for(cfg, run.classes, &ema_vs.root());
    learner.ema.copy_to(&ema_vs);
    let weights_sha256 = outputs::save_weights(&learner.vs, &dir.file(Artifact::Weights))?;
    let ema_sha256 = outputs::save_weights(&ema_vs, &dir.file(Artifact::EmaWeights))?;
    let sampling_model = if cfg.sample.use_ema { ema_model.as_ref() } else { learner.model.as_ref() };
    let shape = run.data.image_shape();
    outputs::draw_samples(cfg, run.diffusion, sampling_model, run.classes, shape, dir, events, reporter)?;
    let mut end = End {
        spec: run.spec,
        run: dir,
        diffusion: run.diffusion,
        data: run.data,
        sampling_model,
        events,
        reporter,
        metrics: BTreeMap::new(),
        final_loss: None,
        best_during: None,
    };
    for h in hooks.iter_mut() {
        h.finish(&mut end)?;
    }
    end.events.flush()?;
    let End { final_loss, best_during, metrics, .. } = end;
    Ok(Finished { weights_sha256, ema_sha256, final_loss, best_during, metrics })
}

/// The step profile (`--profile`): time per phase of the steps after the first logging window (the
/// warm-up), up to the last step (the last checkpoint, written once, is not one).
struct Profile {
    phases: Option<Phases>,
    first_window: bool,
}

impl Profile {
    fn new(phases: Option<Phases>) -> Self {
        Profile { phases, first_window: true }
    }

    fn mark(&mut self, phase: &'static str) {
        if let Some(p) = self.phases.as_mut() {
            p.mark(phase)
        }
    }

    /// After a step's hooks: a logging step closes the warm-up window, the last one reports.
    fn window_closed(&mut self, logging: bool, last: bool, reporter: &mut dyn Reporter) {
        if !logging {
            return;
        }
        if last {
            if let Some(p) = self.phases.take() {
                reporter.phases(p);
            }
        }
        if std::mem::take(&mut self.first_window) {
            if let Some(p) = self.phases.as_mut() {
                p.reset();
            }
        }
    }
}
