//! What a run tells the outside world while it works (`Reporter`, the training log record `LogRecord`),
//! and the progress display of one run: an indicatif bar on a terminal, plain lines otherwise (logs, CI).
pub mod phases;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use phases::Phases;
use serde::Serialize;
use std::io::IsTerminal;

/// What the loop tells the outside world; the runner draws progress bars or prints lines from it.
pub trait Reporter {
    /// A new phase ("train", "sample") of `total` units begins.
    fn phase(&mut self, name: &str, total: u64);
    fn advance(&mut self, position: u64);
    fn logged(&mut self, record: &LogRecord);
    /// A line of information about the run (e.g. the model's size).
    fn note(&mut self, text: &str);
    /// Whether to time the phases of each training step (`ddpm bench --profile`).
    fn wants_phases(&self) -> bool {
        false
    }
    /// The phase times of the steps after the first logging window (the warm-up).
    fn phases(&mut self, _phases: Phases) {}
}

#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    pub step: usize,
    /// Mean of the optimised (weighted) loss over the steps since the previous record.
    pub loss: f64,
    /// ‖∇‖₂ of the logged step's gradients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Mean unweighted per-sample loss for t in each quarter of [0, T) over the same steps (as
    /// improved-diffusion logs it); null where no sample fell in a quarter.
    pub loss_quarters: [Option<f64>; 4],
    pub images_per_sec: f64,
    pub lr: f64,
    pub elapsed_seconds: f64,
}

pub struct Progress {
    label: String,
    /// Bars of concurrent runs share one display.
    multi: Option<MultiProgress>,
    bar: Option<ProgressBar>,
    phase: String,
    total: u64,
    /// Next fraction (in tenths) of the phase at which a plain line is printed.
    next_tenth: u64,
    last_loss: Option<f64>,
}

impl Progress {
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_string(),
            multi: None,
            bar: None,
            phase: String::new(),
            total: 0,
            next_tenth: 1,
            last_loss: None,
        }
    }

    /// A progress display whose bar joins `multi` (one line per active run).
    pub fn in_multi(label: &str, multi: &MultiProgress) -> Self {
        Self { multi: Some(multi.clone()), ..Self::new(label) }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Reporter for Progress {
    fn phase(&mut self, name: &str, total: u64) {
        self.finish();
        self.phase = name.to_string();
        self.total = total;
        self.next_tenth = 1;
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]")
                    .expect("valid template"),
            );
            bar.set_prefix(format!("{} {name}", self.label));
            self.bar = Some(match &self.multi {
                Some(m) => m.add(bar),
                None => bar,
            });
        }
    }

    fn advance(&mut self, position: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(position),
            None => {
                if self.total > 0 && position * 10 >= self.next_tenth * self.total {
                    self.next_tenth = position * 10 / self.total + 1;
                    let loss = self.last_loss.map(|l| format!(" loss {l:.5}")).unwrap_or_default();
                    println!("  {} {} {position}/{}{loss}", self.label, self.phase, self.total);
                }
            }
        }
    }

    fn note(&mut self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("  {} {text}", self.label)),
            None => println!("  {} {text}", self.label),
        }
    }

    fn logged(&mut self, record: &LogRecord) {
        self.last_loss = Some(record.loss);
        if let Some(bar) = &self.bar {
            bar.set_message(format!("loss {:.5} {:.0} img/s", record.loss, record.images_per_sec));
        }
    }
}
