//! What an experiment asks its analysis: the `[analysis]` table (the primary metric, the level, the
//! smallest differences worth deciding) and sequential seeds (`experiment.seeds = { start, max, step }`).
//! None of it is part of any run's identity: it changes what the report decides, not what is trained.
//!
//! ```toml
//! [experiment]
//! seeds = { start = 3, max = 12, step = 1 }   # add seeds until `primary` is decided, at most 12
//!
//! [analysis]
//! primary = "fid"                  # decided at `alpha`; every other verdict is secondary
//! alpha = 0.05                     # the family-wise level (default 0.05)
//! min_effect = { fid = 10.0 }      # seeds needed to decide a difference of 10, not the observed one
//! ```
use crate::eval::metric::{self, Role};
use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The level when `[analysis] alpha` is not given.
pub const DEFAULT_ALPHA: f64 = 0.05;

#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// The one metric the experiment is run to decide (`[analysis] primary`).
    pub primary: Option<String>,
    /// The family-wise error rate of the decisions (Holm over the family; the sequential rule).
    pub alpha: f64,
    /// Per metric, the smallest difference worth detecting: the seeds-needed column uses it in place
    /// of the observed difference.
    pub min_effect: BTreeMap<String, f64>,
    /// Sequential seeds: looks after `start`, `start + step`, … seeds, stopping when `primary` is
    /// decided or at `max`.
    pub sequential: Option<SeedDesign>,
}

impl Default for Question {
    fn default() -> Self {
        Question { primary: None, alpha: DEFAULT_ALPHA, min_effect: BTreeMap::new(), sequential: None }
    }
}

/// `seeds = { start, max, step }`: the first look after `start` seeds of every variant (seeds
/// 0 … start − 1), then one look per `step` more seeds, the last at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeedDesign {
    pub start: usize,
    pub max: usize,
    #[serde(default = "one")]
    pub step: usize,
}

fn one() -> usize {
    1
}

impl SeedDesign {
    /// Why the design cannot be run, naming the bound.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.start < 2 {
            return Err(format!("start = {} must be at least 2 (a paired t statistic needs two seeds)", self.start));
        }
        if self.max < self.start {
            return Err(format!("max = {} must be at least start = {}", self.max, self.start));
        }
        if self.step < 1 {
            return Err("step must be at least 1".into());
        }
        Ok(())
    }

    /// The numbers of seeds at which the comparison is looked at: start, start + step, …, and max.
    pub fn looks(&self) -> Vec<usize> {
        let mut out: Vec<usize> = (self.start..=self.max).step_by(self.step.max(1)).collect();
        if out.last() != Some(&self.max) {
            out.push(self.max);
        }
        out
    }
}

/// `[analysis]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AnalysisTable {
    primary: Option<String>,
    alpha: Option<f64>,
    min_effect: Option<BTreeMap<String, f64>>,
}

const ALLOWED_KEYS: &str = "primary, alpha, min_effect";

/// The metrics an experiment can decide: those of the model (not floors, baselines or timings).
fn decidable() -> Vec<&'static str> {
    metric::all().into_iter().filter(|m| m.role == Role::Model).map(|m| m.name).collect()
}

impl AnalysisTable {
    pub(super) fn parse(value: toml::Value, shown: &str) -> Result<Self> {
        value.try_into().map_err(|e| anyhow!("{shown}: in [analysis]: {e} (allowed keys: {ALLOWED_KEYS})"))
    }

    /// The question, checked: every metric named must be one the analysis ranks.
    pub(super) fn resolve(&self, sequential: Option<SeedDesign>, shown: &str) -> Result<Question> {
        let allowed = decidable();
        let known = |key: &str, name: &str| -> Result<()> {
            if allowed.contains(&name) {
                Ok(())
            } else {
                bail!(
                    "{shown}: key `{key}` = {name:?} is not a metric the analysis decides; allowed are: {}",
                    allowed.join(", ")
                )
            }
        };
        if let Some(p) = &self.primary {
            known("analysis.primary", p)?;
        }
        let alpha = self.alpha.unwrap_or(DEFAULT_ALPHA);
        if !(alpha > 0.0 && alpha < 0.5) {
            bail!("{shown}: key `analysis.alpha` = {alpha}: allowed is a level strictly between 0 and 0.5");
        }
        let mut min_effect = BTreeMap::new();
        for (name, &v) in self.min_effect.iter().flatten() {
            known(&format!("analysis.min_effect.{name}"), name)?;
            if !(v.is_finite() && v > 0.0) {
                bail!("{shown}: key `analysis.min_effect.{name}` = {v}: allowed is a positive difference in the metric's units");
            }
            min_effect.insert(name.clone(), v);
        }
        if let Some(d) = &sequential {
            d.check().map_err(|why| anyhow!("{shown}: key `experiment.seeds`: {why}"))?;
            if self.primary.is_none() {
                bail!(
                    "{shown}: key `experiment.seeds` = {{ start = {}, max = {}, step = {} }} adds seeds until the primary \
                     comparison is decided: set `[analysis] primary` to one of: {}",
                    d.start,
                    d.max,
                    d.step,
                    allowed.join(", ")
                );
            }
        }
        Ok(Question { primary: self.primary.clone(), alpha, min_effect, sequential })
    }
}

/// `experiment.seeds` as written: a list of seeds, or a sequential design whose seeds are 0 … max − 1
/// (the runner takes them a look at a time).
pub(super) fn seeds(value: &toml::Value, shown: &str, key: &str) -> Result<(Vec<toml::Value>, Option<SeedDesign>)> {
    match value {
        toml::Value::Array(a) => Ok((a.clone(), None)),
        toml::Value::Table(_) => {
            let design: SeedDesign = value.clone().try_into().map_err(|e| {
                anyhow!("{shown}: key `{key}`: {e} (allowed: a list of seeds, or {{ start, max, step }})")
            })?;
            design.check().map_err(|why| anyhow!("{shown}: key `{key}`: {why}"))?;
            let values = (0..design.max as i64).map(toml::Value::Integer).collect();
            Ok((values, Some(design)))
        }
        other => bail!(
            "{shown}: key `{key}` = {other}: allowed are a list of integers ([0, 1, 2]) or a sequential design \
             ({{ start = 3, max = 12, step = 1 }})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> AnalysisTable {
        AnalysisTable::parse(toml::from_str::<toml::Value>(text).unwrap(), "x.toml").unwrap()
    }

    #[test]
    fn looks_of_a_design() {
        assert_eq!(SeedDesign { start: 3, max: 12, step: 1 }.looks(), (3..=12).collect::<Vec<_>>());
        assert_eq!(SeedDesign { start: 3, max: 10, step: 3 }.looks(), vec![3, 6, 9, 10]);
        assert_eq!(SeedDesign { start: 4, max: 4, step: 2 }.looks(), vec![4]);
        assert!(SeedDesign { start: 1, max: 4, step: 1 }.check().unwrap_err().contains("start = 1"));
        assert!(SeedDesign { start: 5, max: 4, step: 1 }.check().unwrap_err().contains("max = 4"));
        assert!(SeedDesign { start: 2, max: 4, step: 0 }.check().is_err());
    }

    #[test]
    fn the_question_is_checked() {
        let q = table("primary = \"fid\"\nmin_effect = { bpd = 0.05 }").resolve(None, "x.toml").unwrap();
        assert_eq!(q.primary.as_deref(), Some("fid"));
        assert_eq!(q.alpha, 0.05);
        assert_eq!(q.min_effect.get("bpd"), Some(&0.05));

        let e = table("primary = \"fid_floor\"").resolve(None, "x.toml").unwrap_err().to_string();
        assert!(
            e.contains("x.toml") && e.contains("analysis.primary") && e.contains("allowed are: ") && e.contains("kid"),
            "{e}"
        );
        let e = table("min_effect = { fid = -1.0 }").resolve(None, "x.toml").unwrap_err().to_string();
        assert!(e.contains("analysis.min_effect.fid") && e.contains("positive"), "{e}");
        let e = table("alpha = 0.7").resolve(None, "x.toml").unwrap_err().to_string();
        assert!(e.contains("analysis.alpha"), "{e}");
        let e = AnalysisTable::parse(toml::from_str::<toml::Value>("primry = \"fid\"").unwrap(), "x.toml")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("primry") && e.contains(ALLOWED_KEYS), "{e}");

        let design = SeedDesign { start: 3, max: 12, step: 1 };
        let e = table("").resolve(Some(design), "x.toml").unwrap_err().to_string();
        assert!(e.contains("experiment.seeds") && e.contains("analysis] primary"), "{e}");
        assert_eq!(table("primary = \"bpd\"").resolve(Some(design), "x.toml").unwrap().sequential, Some(design));
    }

    #[test]
    fn seeds_as_a_list_or_a_design() {
        let v: toml::Value = toml::from_str("s = { start = 3, max = 5 }").unwrap();
        let (values, design) = seeds(&v["s"], "x.toml", "experiment.seeds").unwrap();
        assert_eq!(
            values,
            vec![
                toml::Value::Integer(0),
                toml::Value::Integer(1),
                toml::Value::Integer(2),
                toml::Value::Integer(3),
                toml::Value::Integer(4)
            ]
        );
        assert_eq!(design, Some(SeedDesign { start: 3, max: 5, step: 1 }));
        let v: toml::Value = toml::from_str("s = { start = 3, max = 5, stride = 1 }").unwrap();
        let e = seeds(&v["s"], "x.toml", "experiment.seeds").unwrap_err().to_string();
        assert!(e.contains("stride") && e.contains("experiment.seeds"), "{e}");
        let v: toml::Value = toml::from_str("s = 3").unwrap();
        assert!(seeds(&v["s"], "x.toml", "experiment.seeds").is_err());
    }
}
