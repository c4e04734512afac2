//! The post-hoc EMA hook (`train.posthoc_ema`): after every step it updates the two power-function
//! averages (`crate::posthoc::Profiles`), stores both in `ema_snapshots/` every `every` steps and at
//! the last, and carries them in the checkpoints, so that a resumed run continues them bit for bit.
use super::hook::{Hook, Saved, Step};
use crate::config::PosthocEmaConfig;
use crate::posthoc::Profiles;
use crate::track::checkpoint::Checkpoint;
use crate::track::run_dir::Folder;
use anyhow::Result;

/// The prefix of its tensors in a checkpoint.
const PREFIX: &str = "posthoc.";

pub struct PosthocEma {
    profiles: Profiles,
    every: usize,
}

impl PosthocEma {
    pub fn new(c: &PosthocEmaConfig) -> Self {
        PosthocEma { profiles: Profiles::new(&c.sigma_rels), every: c.every }
    }
}

impl Hook for PosthocEma {
    fn name(&self) -> &'static str {
        "post-hoc EMA"
    }

    fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        let first = format!("{PREFIX}p0.");
        let mut names: Vec<String> =
            ck.tensors.keys().filter_map(|k| k.strip_prefix(&first)).map(String::from).collect();
        names.sort();
        if names.is_empty() {
            anyhow::bail!(
                "the checkpoint at step {} has no post-hoc EMA averages ({first}*): it was written without \
                 [train.posthoc_ema]",
                ck.step
            );
        }
        self.profiles.load(&ck.tensors, PREFIX, &names)
    }

    fn after_step(&mut self, s: &mut Step) -> Result<()> {
        let mut weights: Vec<(String, tch::Tensor)> = s.weights.variables().into_iter().collect();
        weights.sort_by(|a, b| a.0.cmp(&b.0));
        self.profiles.update(&weights, s.step as u64);
        if s.step.is_multiple_of(self.every) || s.step == s.steps {
            self.profiles.snapshot(&s.run.folder(Folder::EmaSnapshots), s.step)?;
        }
        Ok(())
    }

    fn save(&self, into: &mut Saved) {
        into.tensors.extend(self.profiles.tensors(PREFIX));
    }
}
