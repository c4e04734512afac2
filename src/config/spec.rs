//! `RunSpec`: the single source of truth for one run. Its hash is computed one floor up, where the
//! schedule and the data are known (`experiment::identity`).
use super::schema::RunConfig;
use serde_json::Value;

/// One run of an experiment, fully resolved: everything that decides its results is in `config`,
/// and `hash` is derived from it (see `experiment::identity`).
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub experiment: String,
    /// The varied keys and their values, e.g. `schedule=cosine,seed=1`; the experiment name when
    /// nothing varies.
    pub label: String,
    pub config: RunConfig,
    pub hash: String,
}

impl RunSpec {
    /// The variant this run belongs to: its label without the seed part (`schedule=cosine`) and
    /// without the evaluation replicate (`replicate=1`, a repeat of the same evaluation), or
    /// `experiment` when nothing but those varies.
    pub fn variant(&self) -> String {
        let parts: Vec<&str> =
            self.label.split(',').filter(|p| !p.starts_with("seed=") && !p.starts_with("replicate=")).collect();
        if parts.is_empty() || self.label == self.experiment {
            self.experiment.clone()
        } else {
            parts.join(",")
        }
    }

    /// The run's configuration value at a dotted key (`diffusion.schedule.name`), as JSON.
    pub fn value_at(&self, key: &str) -> Option<Value> {
        let mut v = serde_json::to_value(&self.config).ok()?;
        for seg in key.split('.') {
            v = v.get(seg)?.clone();
        }
        Some(v)
    }
}
