//! The run configuration: every key a run can set, its default, and what values are allowed.
//!
//! Unknown keys are errors (`deny_unknown_fields`). Defaults live here, in serde, rather than in a
//! configuration layer, so that replacing a whole table (e.g. the schedule) in a sweep does not mix
//! its keys with a default table of another kind.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Seeds every random draw of the run: initialisation, data order, timesteps, noise, sampling.
    pub seed: u64,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub diffusion: DiffusionConfig,
    pub train: TrainConfig,
    pub sample: SampleConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetName {
    Mnist,
    FashionMnist,
}

impl DatasetName {
    pub const ALL: [DatasetName; 2] = [DatasetName::Mnist, DatasetName::FashionMnist];

    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion_mnist",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub name: DatasetName,
    /// Images are resized (bilinear, once at load time) to this side length.
    pub image_size: i64,
    /// Use only the first `limit` training images (for quick tests); all when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self { name: DatasetName::Mnist, image_size: 32, limit: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelName {
    /// The blog recipe's SimpleUNet (see `models::simple_unet`).
    Simple,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub name: ModelName,
    /// Width of the sinusoidal time embedding.
    pub time_emb_dim: i64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self { name: ModelName::Simple, time_emb_dim: 32 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiffusionConfig {
    /// Number of diffusion steps T.
    pub timesteps: usize,
    pub schedule: ScheduleConfig,
}

impl Default for DiffusionConfig {
    fn default() -> Self {
        Self { timesteps: 1000, schedule: ScheduleConfig::default() }
    }
}

/// The variance schedule, chosen by `name`; each kind has its own keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// Ho et al. 2020: β linear from `beta_start` to `beta_end`.
    Linear {
        #[serde(default = "default_beta_start")]
        beta_start: f64,
        #[serde(default = "default_beta_end")]
        beta_end: f64,
    },
    /// Nichol & Dhariwal 2021: ᾱ_t = cos²(((t/T + s)/(1 + s)) π/2), β clipped at `max_beta`.
    Cosine {
        #[serde(default = "default_cosine_s")]
        s: f64,
        #[serde(default = "default_max_beta")]
        max_beta: f64,
    },
}

fn default_beta_start() -> f64 {
    1e-4
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_cosine_s() -> f64 {
    0.008
}
fn default_max_beta() -> f64 {
    0.999
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig::Linear { beta_start: default_beta_start(), beta_end: default_beta_end() }
    }
}

impl ScheduleConfig {
    pub fn name(&self) -> &'static str {
        match self {
            ScheduleConfig::Linear { .. } => "linear",
            ScheduleConfig::Cosine { .. } => "cosine",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimizer steps (one batch each).
    pub steps: usize,
    pub batch_size: i64,
    /// Adam learning rate.
    pub lr: f64,
    /// Log the loss every this many steps (execution only: not part of the run's identity).
    pub log_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { steps: 1000, batch_size: 128, lr: 2e-4, log_every: 50 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampleConfig {
    /// Images drawn with DDPM ancestral sampling at the end of training, saved as `samples.png`.
    pub num_samples: i64,
    /// Clip the predicted x_0 to [-1, 1] at each sampling step (as Ho et al.'s code does).
    pub clip_x0: bool,
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self { num_samples: 64, clip_x0: true }
    }
}

/// Keys that change how a run is executed or displayed but not its results; they are left out of
/// the run's identity (its hash).
pub const EXECUTION_ONLY_KEYS: &[&str] = &["train.log_every"];

/// A violated constraint: the key, the offending value and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("key `{key}` = {value}: {allowed}")]
pub struct Invalid {
    pub key: &'static str,
    pub value: String,
    pub allowed: String,
}

impl RunConfig {
    /// Checks ranges and combinations that serde cannot express. Returns every problem found.
    pub fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        let mut check = |ok: bool, key: &'static str, value: String, allowed: &str| {
            if !ok {
                out.push(Invalid { key, value, allowed: allowed.to_string() });
            }
        };
        let d = &self.diffusion;
        check(d.timesteps >= 2, "diffusion.timesteps", d.timesteps.to_string(), "an integer >= 2");
        match d.schedule {
            ScheduleConfig::Linear { beta_start, beta_end } => {
                let ok = |b: f64| b > 0.0 && b < 1.0;
                check(ok(beta_start), "diffusion.schedule.beta_start", beta_start.to_string(), "0 < beta_start < 1");
                check(ok(beta_end), "diffusion.schedule.beta_end", beta_end.to_string(), "0 < beta_end < 1");
                check(
                    beta_start <= beta_end,
                    "diffusion.schedule.beta_end",
                    beta_end.to_string(),
                    &format!("beta_end >= beta_start ({beta_start})"),
                );
            }
            ScheduleConfig::Cosine { s, max_beta } => {
                check(s >= 0.0 && s.is_finite(), "diffusion.schedule.s", s.to_string(), "a finite s >= 0");
                check(
                    max_beta > 0.0 && max_beta <= 1.0,
                    "diffusion.schedule.max_beta",
                    max_beta.to_string(),
                    "0 < max_beta <= 1",
                );
            }
        }
        let size = self.data.image_size;
        match self.model.name {
            ModelName::Simple => check(
                size >= 8 && size % 8 == 0,
                "data.image_size",
                size.to_string(),
                "a multiple of 8 for model `simple` (three 2x poolings); MNIST's 28 must be resized, e.g. to 32",
            ),
        }
        let ted = self.model.time_emb_dim;
        check(ted >= 4 && ted % 2 == 0, "model.time_emb_dim", ted.to_string(), "an even integer >= 4");
        let t = &self.train;
        if let Some(limit) = self.data.limit {
            check(
                limit as i64 >= t.batch_size.max(1),
                "data.limit",
                limit.to_string(),
                &format!("at least train.batch_size ({}) images", t.batch_size),
            );
        }
        check(t.steps >= 1, "train.steps", t.steps.to_string(), "an integer >= 1");
        check(t.batch_size >= 1, "train.batch_size", t.batch_size.to_string(), "an integer >= 1");
        check(t.lr > 0.0 && t.lr.is_finite(), "train.lr", t.lr.to_string(), "a finite number > 0");
        check(t.log_every >= 1, "train.log_every", t.log_every.to_string(), "an integer >= 1");
        let n = self.sample.num_samples;
        check(n >= 1, "sample.num_samples", n.to_string(), "an integer >= 1");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(RunConfig::default().validate().is_empty());
    }

    #[test]
    fn validation_names_key_value_and_allowed() {
        let mut c = RunConfig::default();
        c.data.image_size = 28;
        c.train.lr = -1.0;
        let errs = c.validate();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].key, "data.image_size");
        assert_eq!(errs[0].value, "28");
        assert!(errs[0].allowed.contains("multiple of 8"));
        assert_eq!(errs[1].to_string(), "key `train.lr` = -1: a finite number > 0");
    }
}
