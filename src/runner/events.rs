//! What a run's process tells its runner: JSON lines on standard output, one event each. The runner
//! draws them as progress bars or log lines; the child also writes readable lines to its log.
use crate::progress::{LogRecord, Reporter};
use serde::{Deserialize, Serialize};
use std::io::Write;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Phase {
        name: String,
        total: u64,
    },
    Advance {
        position: u64,
    },
    Logged {
        step: usize,
        loss: f64,
        images_per_sec: f64,
    },
    Note {
        text: String,
    },
    /// Another process holds the run's lock.
    Busy {
        holder: String,
    },
}

pub fn emit(event: &Event) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string(event).expect("event serializes"));
    let _ = out.flush();
}

/// Reports to the runner as events, and to the log (standard error) as lines.
pub struct EventReporter {
    phase: String,
    total: u64,
    last_sent: u64,
}

impl EventReporter {
    pub fn new() -> Self {
        Self { phase: String::new(), total: 0, last_sent: 0 }
    }
}

impl Default for EventReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for EventReporter {
    fn phase(&mut self, name: &str, total: u64) {
        self.phase = name.to_string();
        self.total = total;
        self.last_sent = 0;
        eprintln!("phase {name}: {total}");
        emit(&Event::Phase { name: name.into(), total });
    }

    fn advance(&mut self, position: u64) {
        // At most about 200 updates a phase reach the runner.
        if position == self.total || position >= self.last_sent + (self.total / 200).max(1) {
            self.last_sent = position;
            emit(&Event::Advance { position });
        }
    }

    fn logged(&mut self, r: &LogRecord) {
        eprintln!("step {} loss {:.6} images/s {:.1}", r.step, r.loss, r.images_per_sec);
        emit(&Event::Logged { step: r.step, loss: r.loss, images_per_sec: r.images_per_sec });
    }

    fn note(&mut self, text: &str) {
        eprintln!("{text}");
        emit(&Event::Note { text: text.into() });
    }
}
