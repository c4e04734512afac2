//! The metrics: one definition each (its name, TensorBoard tag, which way is better, how it is
//! shown) and, for those computed from samples, how. A result carries a map of metric name to value;
//! the status file, the run summary, `ddpm status`, TensorBoard, the analysis and `reproduce` iterate
//! over it and over `all()`, so adding a metric is its module here plus its line in `SAMPLE_METRICS`
//! (or `all`, for a metric read from elsewhere).
pub mod bound;
pub mod classifier;
pub mod cluster;
pub mod fid;
pub mod kid;
pub mod precision_recall;
pub mod run;

use super::images::ImageSet;
use super::reference::SetStats;
use crate::config::RunConfig;
use crate::progress::Reporter;
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Lower,
    Higher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A number of the model: ranked in the verdicts, compared by `reproduce`.
    Model,
    /// What held-out real images score under the same spec (floors and ceilings): shown beside the
    /// models' values, compared by `reproduce`, never ranked.
    Reference,
    /// Another method's number on the same data (k-means on pixels for a clustering): shown beside
    /// the model's value, compared by `reproduce`, never ranked.
    Baseline,
    /// The wall clock: neither ranked nor compared.
    Timing,
}

/// One metric's definition.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The key in results, status files and tables (`fid`).
    pub name: &'static str,
    /// Its name for people (`FID`).
    pub title: &'static str,
    /// Its TensorBoard tag under the evaluation's prefix (`eval/<tag>`); None: not an evaluation scalar.
    pub tag: Option<&'static str>,
    pub better: Better,
    pub role: Role,
    /// Decimal places when shown.
    pub digits: usize,
    /// Shown as a percentage.
    pub percent: bool,
    /// A column of the run summary, `ddpm status` and `ddpm eval`.
    pub headline: bool,
    /// A panel of the analysis' `metrics.png`, with this title.
    pub panel: Option<&'static str>,
    /// For a reference value: the model metric it is the floor or ceiling of.
    pub reference_of: Option<&'static str>,
    /// Also computed during training (`eval.every`), logged as `eval_during/<tag>`.
    pub during: bool,
}

impl Metric {
    /// A model metric, lower is better, logged under its own name.
    pub const fn model(name: &'static str, title: &'static str, digits: usize) -> Self {
        Metric {
            name,
            title,
            tag: Some(name),
            better: Better::Lower,
            role: Role::Model,
            digits,
            percent: false,
            headline: false,
            panel: None,
            reference_of: None,
            during: false,
        }
    }

    /// What real images score for `of`, logged as `floor_<tag>`.
    pub const fn reference(name: &'static str, title: &'static str, tag: &'static str, of: &'static str) -> Self {
        Metric { tag: Some(tag), role: Role::Reference, reference_of: Some(of), ..Metric::model(name, title, 3) }
    }

    /// A baseline's value of the model metric `of`, logged under its own name.
    pub const fn baseline(name: &'static str, title: &'static str, of: &'static str) -> Self {
        Metric { role: Role::Baseline, reference_of: Some(of), ..Metric::model(name, title, 4) }
    }

    pub const fn timing(name: &'static str, title: &'static str) -> Self {
        Metric { tag: None, role: Role::Timing, ..Metric::model(name, title, 1) }
    }

    pub const fn higher(self) -> Self {
        Metric { better: Better::Higher, ..self }
    }

    pub const fn headline(self) -> Self {
        Metric { headline: true, ..self }
    }

    pub const fn panel(self, title: &'static str) -> Self {
        Metric { panel: Some(title), ..self }
    }

    pub const fn percent(self) -> Self {
        Metric { percent: true, ..self }
    }

    pub const fn digits(self, digits: usize) -> Self {
        Metric { digits, ..self }
    }

    pub const fn during(self) -> Self {
        Metric { during: true, ..self }
    }

    pub const fn untagged(self) -> Self {
        Metric { tag: None, ..self }
    }

    pub fn lower_is_better(&self) -> bool {
        self.better == Better::Lower
    }

    /// `v` as this metric is shown (`61.23`, `85.2 %`).
    pub fn show(&self, v: f64) -> String {
        let digits = self.digits;
        if self.percent {
            format!("{:.digits$} %", 100.0 * v)
        } else {
            format!("{v:.digits$}")
        }
    }
}

/// What a metric computed from samples sees: the samples, the Inception statistics of the samples,
/// of the reference set and of as many held-out real images (for the floors), and where to find the
/// images themselves.
pub struct Inputs<'a> {
    pub config: &'a RunConfig,
    /// The samples in [-1, 1] (clipped by the sampler or not), `[n, C, H, W]` on the CPU.
    pub images: &'a Tensor,
    /// The class each sample was asked for (class-balanced conditional sampling).
    pub labels: Option<&'a Tensor>,
    pub generated: &'a SetStats,
    pub reference: &'a SetStats,
    pub real: &'a SetStats,
    pub reference_set: &'a ImageSet,
    pub real_set: &'a ImageSet,
    pub data_dir: &'a Path,
    pub device: Device,
    /// The evaluation's random stream (0: the final evaluation), for metrics that draw.
    pub stream: u64,
}

/// What a sample metric gives: values of its registered names, and any detail kept in the result.
#[derive(Default)]
pub struct Computed {
    pub values: Vec<(String, f64)>,
    pub detail: Option<serde_json::Value>,
}

/// What a metric computed during training sees: the samples' and the reference's statistics (no
/// held-out real images: no floors).
pub struct DuringInputs<'a> {
    pub config: &'a RunConfig,
    pub generated: &'a SetStats,
    pub reference: &'a SetStats,
    /// The random stream of the evaluations during training (1: the same each time).
    pub stream: u64,
}

/// A metric of generated samples.
pub trait SampleMetric: Sync {
    /// The key of its detail in the result (`fid`).
    fn key(&self) -> &'static str;
    /// The definitions of the values it computes, in table order.
    fn metrics(&self) -> &'static [Metric];
    fn compute(&self, inputs: &Inputs, progress: &mut dyn Reporter) -> Result<Computed>;
    /// The values of its metrics marked `during`, computed during training; None: not computed then.
    fn compute_during(&self, _inputs: &DuringInputs) -> Option<Vec<(String, f64)>> {
        None
    }
}

/// The registry of sample metrics, in the order they are computed and shown.
pub const SAMPLE_METRICS: [&dyn SampleMetric; 4] =
    [&fid::Fid, &classifier::Scores, &kid::KernelInception, &precision_recall::PrecisionRecall];

/// Every metric, in table order: the training loss, the sample metrics, the bound, the timings.
pub fn all() -> Vec<&'static Metric> {
    let mut out: Vec<&'static Metric> = run::LOSS.iter().collect();
    for m in SAMPLE_METRICS {
        out.extend(m.metrics());
    }
    out.extend(bound::METRICS.iter());
    out.extend(cluster::METRICS.iter());
    out.extend(run::TIMINGS.iter());
    out
}

pub fn find(name: &str) -> Option<&'static Metric> {
    all().into_iter().find(|m| m.name == name)
}

/// Whether a lower value is better (unregistered names: yes).
pub fn lower_is_better(name: &str) -> bool {
    find(name).is_none_or(|m| m.lower_is_better())
}

/// The metrics computed during training (`eval.every`), in table order; the first is the one whose
/// best value the run reports (`best_fid_during`).
pub fn during() -> Vec<&'static Metric> {
    all().into_iter().filter(|m| m.during).collect()
}

/// Whether `values` hold the metrics of samples (an evaluation that sampled, not only the bound).
pub fn has_sample_metrics(values: &BTreeMap<String, f64>) -> bool {
    SAMPLE_METRICS.iter().flat_map(|m| m.metrics()).any(|m| m.role == Role::Model && values.contains_key(m.name))
}

/// The columns of the summaries.
pub fn headline() -> Vec<&'static Metric> {
    all().into_iter().filter(|m| m.headline).collect()
}

/// The headline metrics' titles as right-aligned columns, to follow a table's other headers.
pub fn headline_titles() -> String {
    headline().iter().map(|m| format!("  {:>9}", m.title)).collect()
}

/// The headline metrics' values (`-` where absent) as the columns under `headline_titles`.
pub fn headline_cells(values: &BTreeMap<String, f64>) -> String {
    headline().iter().map(|m| format!("  {:>9}", values.get(m.name).map_or("-".into(), |v| m.show(*v)))).collect()
}

/// A run's metrics: the training's from its status file and its evaluation's (the latest one's
/// recorded in the status file when `evaluation` is None).
pub fn of_run(
    status: Option<&crate::track::run_dir::Status>,
    evaluation: Option<&BTreeMap<String, f64>>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if let Some(s) = status {
        out.extend(run::of_status(s));
    }
    match (evaluation, status) {
        (Some(e), _) => out.extend(e.iter().map(|(k, v)| (k.clone(), *v))),
        (None, Some(s)) => out.extend(s.metrics.iter().map(|(k, v)| (k.clone(), *v))),
        (None, None) => {}
    }
    out
}

/// `FID 61.231 (floor 26.512), KID 0.01234 (floor 0.00190), confident 85.2 % (real 97.7 %), …`: each
/// model value of an evaluation with what real images score beside it.
pub fn quality_line(values: &BTreeMap<String, f64>) -> String {
    let all = all();
    let mut parts = Vec::new();
    for m in all.iter().filter(|m| m.role == Role::Model && m.tag.is_some()) {
        let Some(v) = values.get(m.name) else { continue };
        let mut part = format!("{} {}", m.title, m.show(*v));
        for r in all.iter().filter(|r| r.reference_of == Some(m.name)) {
            if let Some(f) = values.get(r.name) {
                let word = match (r.role, m.better) {
                    (Role::Baseline, _) => r.title,
                    (_, Better::Lower) => "floor",
                    (_, Better::Higher) => "real",
                };
                part.push_str(&format!(" ({word} {})", m.show(*f)));
            }
        }
        parts.push(part);
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_references_point_at_model_metrics() {
        let all = all();
        for (i, m) in all.iter().enumerate() {
            assert!(all[..i].iter().all(|o| o.name != m.name), "{} registered twice", m.name);
            if let Some(of) = m.reference_of {
                assert!(matches!(m.role, Role::Reference | Role::Baseline), "{}", m.name);
                assert_eq!(find(of).map(|o| o.role), Some(Role::Model), "{} refers to {of}", m.name);
            }
        }
        let names: Vec<&str> = all.iter().map(|m| m.name).collect();
        for n in ["final_loss", "fid", "fid_floor", "kid", "precision", "recall_real", "bpd", "wall_seconds"] {
            assert!(names.contains(&n), "{n} in {names:?}");
        }
        assert!(!lower_is_better("precision") && !lower_is_better("confident") && lower_is_better("fid"));
    }

    #[test]
    fn the_quality_line_puts_each_floor_beside_its_value() {
        let values = BTreeMap::from([
            ("fid".to_string(), 61.2345),
            ("fid_floor".to_string(), 26.5),
            ("confident".to_string(), 0.8515625),
            ("confident_real".to_string(), 0.9765625),
        ]);
        assert_eq!(quality_line(&values), "FID 61.23 (floor 26.50), confident 85.2 % (real 97.7 %)");
    }
}
