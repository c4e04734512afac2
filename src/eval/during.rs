//! The evaluation during training, a training hook (`train::Hook`): every `eval.every` steps, the
//! registered metrics marked `during` (`metric::during`: FID and KID) of `eval.every_num_samples`
//! samples drawn with the same noise each time (stream 1), logged as `eval_during/<tag>` at the step
//! and in `eval_history.jsonl`, with the sample grid in `eval_during/`.
use super::inception::Inception;
use super::metric::{self, DuringInputs, SAMPLE_METRICS};
use super::reference::SetStats;
use super::run_eval::{describe, reference_stats, sample_features};
use crate::config::RunConfig;
use crate::grid::make_grid;
use crate::models::{self, Denoiser};
use crate::track::atomic_write;
use crate::track::metrics::MetricsWriter;
use crate::track::run_dir::{Artifact, EvalHistoryLine, Folder, RunDir};
use crate::train::hook::{Begin, End, Hook, Step};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tch::{nn, Device};

pub struct DuringTraining {
    config: RunConfig,
    run: RunDir,
    device: Device,
    data_dir: PathBuf,
    /// Loaded when training starts (`begin`).
    state: Option<DuringState>,
    /// The best value of the first `during` metric so far, and its step.
    best: Option<(usize, f64)>,
}

struct DuringState {
    net: Inception,
    reference: SetStats,
    /// Where the weights to evaluate are copied (EMA or raw, as `eval.use_ema` says).
    vs: nn::VarStore,
    model: Box<dyn Denoiser>,
    classes: Option<i64>,
    history: MetricsWriter,
}

impl DuringTraining {
    /// The hook of a run whose `[eval]` asks for it (`fid`, `every` within the run), else None.
    pub fn for_run(config: &RunConfig, run_dir: &Path, device: Device, data_dir: &Path) -> Option<Self> {
        let e = &config.eval;
        // The weights evaluated during training are the ordinary EMA or the raw ones (a post-hoc EMA
        // width is reconstructed only after training): its spec says so.
        let mut config = config.clone();
        config.eval.ema_sigma_rel = None;
        (e.fid && e.every > 0 && e.every < config.train.steps).then(|| Self {
            config,
            run: RunDir::at(run_dir),
            device,
            data_dir: data_dir.to_path_buf(),
            state: None,
            best: None,
        })
    }

    /// Whether `value` of the criterion (the first `during` metric) beats the best so far.
    fn better(&self, value: f64) -> bool {
        let lower = metric::during().first().is_none_or(|m| m.lower_is_better());
        self.best.is_none_or(|(_, b)| if lower { value < b } else { value > b })
    }

    /// Evaluates the weights copied into the state's `vs` at training step `step`.
    fn evaluate(&mut self, s: &mut Step) -> Result<()> {
        let (config, device, step) = (&self.config, self.device, s.step);
        let st = self.state.as_mut().context("DuringTraining::begin was not called")?;
        let n = config.eval.every_num_samples;
        let sampled = sample_features(st.model.as_ref(), config, st.classes, None, n, 1, &st.net, device, s.reporter)?;
        let inputs = DuringInputs { config, generated: &sampled.generated, reference: &st.reference, stream: 1 };
        let values: Vec<(String, f64)> =
            SAMPLE_METRICS.iter().filter_map(|m| m.compute_during(&inputs)).flatten().collect();
        let first = sampled.first();
        let grid = make_grid(&first, (first.size()[0] as f64).sqrt().ceil() as usize, 2)?;
        let png = grid.to_png()?;
        let dir = self.run.folder(Folder::EvalDuring);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        atomic_write(&self.run.during_samples(step), &png)?;
        s.events.add_png("eval_during/samples", &png, grid.height, grid.width, grid.channels, step as i64)?;
        let mut shown = Vec::new();
        for (name, v) in &values {
            let m = metric::find(name).context("a registered metric")?;
            if let Some(tag) = m.tag {
                s.events.add_scalar(&format!("eval_during/{tag}"), *v, step as i64)?;
            }
            shown.push(format!("{} {}", m.title, m.show(*v)));
        }
        s.events.flush()?;
        let spec = describe(config, n, false);
        s.reporter.note(&format!("step {step}: {}  [{spec}]", shown.join(", ")));
        let metrics = values.iter().map(|(k, v)| (k.clone(), Some(*v))).collect();
        st.history.append(&EvalHistoryLine { step, metrics, spec })?;
        if let Some((_, v)) = values.first().filter(|(_, v)| self.better(*v)) {
            self.best = Some((step, *v));
        }
        Ok(())
    }
}

impl Hook for DuringTraining {
    fn name(&self) -> &'static str {
        "evaluation during training"
    }

    /// Loads the network and the reference statistics; resumes the history at `start`.
    fn begin(&mut self, at: &mut Begin) -> Result<()> {
        let mut net = Inception::load(&self.data_dir, self.device)?;
        net.batch = self.config.eval.for_device(self.device.is_cuda()).batch();
        let reference = reference_stats(&self.config, &net, &self.data_dir, at.reporter)?;
        let vs = nn::VarStore::new(self.device);
        let model = models::build_for(&self.config, at.classes, &vs.root());
        let path = self.run.file(Artifact::EvalHistory);
        let history =
            if at.start > 0 { MetricsWriter::resume(&path, at.start)? } else { MetricsWriter::create(&path)? };
        let criterion = metric::during().first().map(|m| m.name);
        for line in self.run.eval_history() {
            if let Some(v) = criterion.and_then(|c| line.metrics.get(c).copied().flatten()).filter(|v| self.better(*v))
            {
                self.best = Some((line.step, v));
            }
        }
        self.state = Some(DuringState { net, reference, vs, model, classes: at.classes, history });
        Ok(())
    }

    fn after_step(&mut self, s: &mut Step) -> Result<()> {
        let every = self.config.eval.every;
        if !s.step.is_multiple_of(every) || s.step >= s.steps {
            return Ok(());
        }
        let st = self.state.as_mut().context("DuringTraining::begin was not called")?;
        if self.config.eval.use_ema {
            s.ema.copy_to(&st.vs);
        } else {
            tch::no_grad(|| st.vs.copy(s.weights))?;
        }
        match self.evaluate(s) {
            // A stop asked for meanwhile: this evaluation is dropped (its point is missing from the
            // curve) and the stop hook checkpoints at the end of the logging window, as in training.
            Err(e) if crate::signal::is_interrupted(&e) => s.reporter.note(&format!(
                "{e:#}: the evaluation during training at step {} is dropped; training stops at the end of its \
                 logging window",
                s.step
            )),
            other => other?,
        }
        s.resume_progress();
        Ok(())
    }

    fn finish(&mut self, end: &mut End) -> Result<()> {
        end.best_during = self.best;
        Ok(())
    }
}
