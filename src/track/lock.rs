//! One process at a time per run: an exclusive `flock` on `<run>/lock`, which also records the
//! holder's pid and host. The kernel releases the lock when its process dies (kill -9 included), so a
//! dead runner's lock is taken over by the next one without any clean-up.
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Held for as long as this value lives.
pub struct RunLock {
    _file: File,
}

pub enum Acquired {
    Held(RunLock),
    /// Another live process holds it; its recorded pid and host.
    Busy(String),
}

fn open(dir: &Path) -> Result<File> {
    let path = dir.join(super::run_dir::Artifact::Lock.name());
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))
}

fn try_flock(file: &File) -> bool {
    // SAFETY: flock on a valid open file descriptor.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let text = text.trim();
    if text.is_empty() {
        "another process".into()
    } else {
        text.to_string()
    }
}

pub fn try_acquire(dir: &Path) -> Result<Acquired> {
    let mut file = open(dir)?;
    if !try_flock(&file) {
        return Ok(Acquired::Busy(holder(&mut file)));
    }
    let record = |file: &mut File| -> std::io::Result<()> {
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "pid {} on {}", std::process::id(), super::hostname())?;
        file.flush()
    };
    record(&mut file).with_context(|| format!("cannot write the lock file in {}", dir.display()))?;
    Ok(Acquired::Held(RunLock { _file: file }))
}

/// The holder when some live process holds the lock.
pub fn held_by(dir: &Path) -> Option<String> {
    if !dir.join(super::run_dir::Artifact::Lock.name()).exists() {
        return None;
    }
    let mut file = open(dir).ok()?;
    if try_flock(&file) {
        // SAFETY: releases the lock this probe just took on a valid descriptor.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        None
    } else {
        Some(holder(&mut file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_taker_is_told_who_holds_it_and_takes_over_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let Acquired::Held(lock) = try_acquire(dir.path()).unwrap() else { panic!("first acquire") };
        let Acquired::Busy(who) = try_acquire(dir.path()).unwrap() else { panic!("second must be busy") };
        assert!(who.contains(&format!("pid {}", std::process::id())), "{who}");
        assert!(held_by(dir.path()).is_some());
        drop(lock);
        assert!(held_by(dir.path()).is_none());
        assert!(matches!(try_acquire(dir.path()).unwrap(), Acquired::Held(_)));
    }
}
