//! Progress of one run: an indicatif bar on a terminal, plain lines otherwise (logs, CI).
use crate::train::{LogRecord, Reporter};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::io::IsTerminal;

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
