//! `ddpm run-one <run-dir>`: executes one run in this process, holding the run's lock, resuming from
//! its newest valid checkpoint, and recording the outcome in `status.json`.
use super::events::{emit, Event, EventReporter};
use crate::progress::Progress;
use crate::track::lock::{self, Acquired};
use crate::track::run_dir::{RunDir, State, Status};
use crate::train::{train_run, Reporter};
use anyhow::Result;
use std::path::Path;
use tch::Device;

/// How `run-one` ended; its exit code tells the runner.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Done,
    AlreadyDone,
    Failed,
    Busy,
}

impl Ended {
    pub const BUSY_EXIT: i32 = 75;
    pub const ALREADY_DONE_EXIT: i32 = 76;

    pub fn exit_code(&self) -> i32 {
        match self {
            Ended::Done => 0,
            Ended::Failed => 1,
            Ended::Busy => Self::BUSY_EXIT,
            Ended::AlreadyDone => Self::ALREADY_DONE_EXIT,
        }
    }
}

pub fn run_one(run_dir: &Path, device: Device, data_dir: &Path, events: bool) -> Result<Ended> {
    let dir = RunDir { path: run_dir.to_path_buf() };
    let spec = dir.load_spec()?;
    let _lock = match lock::try_acquire(&dir.path)? {
        Acquired::Held(l) => l,
        Acquired::Busy(holder) => {
            if events {
                emit(&Event::Busy { holder: holder.clone() });
            }
            eprintln!("run {} is being executed by {holder}", spec.label);
            return Ok(Ended::Busy);
        }
    };
    if dir.status()?.is_some_and(|s| s.state == State::Done) {
        return Ok(Ended::AlreadyDone);
    }
    let device_name = crate::device::describe(device);
    let resume = dir.checkpoint_step();
    dir.record_attempt(&device_name, resume)?;
    dir.write_status(&Status::new(State::Running, &spec, resume.unwrap_or(0)))?;
    let mut reporter: Box<dyn Reporter> =
        if events { Box::new(EventReporter::new()) } else { Box::new(Progress::new(&spec.label)) };
    let result = train_run(&spec, &dir, device, data_dir, reporter.as_mut());
    match result {
        Ok(o) => {
            let mut status = Status::new(State::Done, &spec, spec.config.train.steps);
            status.final_loss = Some(o.final_loss);
            status.images_per_sec = Some(o.images_per_sec);
            status.wall_seconds = Some(o.wall_seconds);
            status.weights_sha256 = Some(o.weights_sha256);
            status.ema_sha256 = Some(o.ema_sha256);
            status.parameters = Some(o.parameters);
            status.resumed_from = o.resumed_from;
            dir.write_status(&status)?;
            Ok(Ended::Done)
        }
        Err(e) => {
            let message = format!("{e:#}");
            reporter.note(&format!("failed: {message}"));
            let mut status = Status::new(State::Failed, &spec, dir.checkpoint_step().unwrap_or(0));
            status.error = Some(message);
            dir.write_status(&status)?;
            Ok(Ended::Failed)
        }
    }
}
