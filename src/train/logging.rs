//! The logging hook: the loss of every step summed on the device (`Window`), read back once per
//! logging window, checked to be finite, and written to `metrics.jsonl`, TensorBoard (`train/*`) and
//! the progress display.
use super::hook::{Begin, End, Hook, Step};
use super::window::Window;
use crate::config::LossKind;
use crate::progress::LogRecord;
use crate::track::metrics::MetricsWriter;
use crate::track::run_dir::{Artifact, RunDir};
use crate::track::tensorboard::EventWriter;
use anyhow::{bail, Result};

pub struct Logging {
    loss: LossKind,
    batch: i64,
    timesteps: usize,
    writer: Option<MetricsWriter>,
    /// Started at the first step of the attempt, and again at each logging step.
    window: Option<Window>,
    last: Option<LogRecord>,
}

impl Logging {
    pub fn new(loss: LossKind, batch: i64, timesteps: usize) -> Self {
        Logging { loss, batch, timesteps, writer: None, window: None, last: None }
    }
}

impl Hook for Logging {
    fn name(&self) -> &'static str {
        "logging"
    }

    /// Continues `metrics.jsonl` at the step resumed from (dropping later lines), or starts it.
    fn begin(&mut self, at: &mut Begin) -> Result<()> {
        let path = at.run.file(Artifact::MetricsLog);
        self.writer =
            Some(if at.start > 0 { MetricsWriter::resume(&path, at.start)? } else { MetricsWriter::create(&path)? });
        Ok(())
    }

    fn after_step(&mut self, s: &mut Step) -> Result<()> {
        let device = s.loss.device();
        let window = self.window.get_or_insert_with(|| Window::since(device, self.timesteps, s.step_started));
        window.add(s.loss, s.per_sample, s.t);
        if !s.logging {
            return Ok(());
        }
        let w = window.take();
        let step = s.step;
        if !w.loss.is_finite() {
            let previous = self.last.as_ref().map_or("none".into(), |r| format!("{:.6} at step {}", r.loss, r.step));
            bail!(
                "training loss is {} over steps {}..={step}; last finite loss: {previous}",
                w.loss,
                step + 1 - w.steps
            );
        }
        let record = LogRecord {
            step,
            loss: w.loss,
            grad_norm: s.grad_norm.map(|g| g.double_value(&[])),
            loss_quarters: w.quarters,
            images_per_sec: (w.steps as i64 * self.batch) as f64 / w.seconds,
            lr: s.lr,
            elapsed_seconds: s.started.elapsed().as_secs_f64(),
        };
        let writer = self.writer.as_mut().expect("Logging::begin opened metrics.jsonl");
        write(writer, s.events, &record, self.loss)?;
        s.reporter.logged(&record);
        *s.last_loss = Some(record.loss);
        self.last = Some(record);
        Ok(())
    }

    /// The final loss: the last window's, or (a run resumed at its last step) the last logged line's.
    fn finish(&mut self, end: &mut End) -> Result<()> {
        end.final_loss = Some(match &self.last {
            Some(r) => r.loss,
            None => last_logged_loss(end.run).unwrap_or(f64::NAN),
        });
        Ok(())
    }
}

fn last_logged_loss(run: &RunDir) -> Option<f64> {
    run.loss_curve().last().map(|l| l.loss)
}

fn write(metrics: &mut MetricsWriter, events: &mut EventWriter, r: &LogRecord, loss: LossKind) -> Result<()> {
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
