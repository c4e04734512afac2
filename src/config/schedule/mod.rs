//! The variance schedule, chosen by `name`: one module per schedule with its keys (`Config`, their
//! defaults and `check`), and this registry. Adding a schedule: its `Config` module here, its β
//! function in `diffusion::schedule` (the paper's formula, f64) with its arm in
//! `diffusion::schedule::betas`, and one variant below.
pub mod cosine;
pub mod linear;
pub mod lucidrains_sigmoid;
pub mod quadratic;
mod range;
pub mod sigmoid;

pub use super::model::Check;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum ScheduleConfig {
    Linear(linear::Config),
    Cosine(cosine::Config),
    Quadratic(quadratic::Config),
    Sigmoid(sigmoid::Config),
    LucidrainsSigmoid(lucidrains_sigmoid::Config),
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig::Linear(linear::Config::default())
    }
}

impl ScheduleConfig {
    pub const NAMES: [&'static str; 5] = ["linear", "cosine", "quadratic", "sigmoid", "lucidrains_sigmoid"];

    pub fn name(&self) -> &'static str {
        match self {
            ScheduleConfig::Linear(_) => "linear",
            ScheduleConfig::Cosine(_) => "cosine",
            ScheduleConfig::Quadratic(_) => "quadratic",
            ScheduleConfig::Sigmoid(_) => "sigmoid",
            ScheduleConfig::LucidrainsSigmoid(_) => "lucidrains_sigmoid",
        }
    }

    /// The schedule of that name with its default keys.
    pub fn default_named(name: &str) -> Option<Self> {
        let table = toml::Table::from_iter([("name".to_string(), toml::Value::String(name.to_string()))]);
        toml::Value::Table(table).try_into().ok()
    }

    /// Problems with the schedule's keys for T = `t_max` steps.
    pub fn check(&self, t_max: usize, check: &mut Check) {
        match self {
            ScheduleConfig::Linear(c) => c.check(t_max, check),
            ScheduleConfig::Cosine(c) => c.check(check),
            ScheduleConfig::Quadratic(c) => c.check(check),
            ScheduleConfig::Sigmoid(c) => c.check(check),
            ScheduleConfig::LucidrainsSigmoid(c) => c.check(check),
        }
    }
}

fn default_beta_start() -> f64 {
    1e-4
}
fn default_beta_end() -> f64 {
    0.02
}

/// β's ends after `scale`: both in (0, 1), in order.
fn check_range(start: f64, end: f64, scale: f64, check: &mut Check) {
    let in_unit = |b: f64| b > 0.0 && b < 1.0;
    let (s, e) = (start * scale, end * scale);
    check(in_unit(s), "diffusion.schedule.beta_start", start.to_string(), "0 < beta_start < 1 (after scaling)");
    check(in_unit(e), "diffusion.schedule.beta_end", end.to_string(), "0 < beta_end < 1 (after scaling)");
    check(s <= e, "diffusion.schedule.beta_end", end.to_string(), &format!("beta_end >= beta_start ({start})"));
}
