//! TensorBoard's HParams dashboard: one row per run with its hyperparameters and final metrics.
//!
//! The plugin reads `HParamsPluginData` messages (tensorboard/plugins/hparams/plugin_data.proto and
//! api.proto) from summaries tagged `_hparams_/experiment` (in the experiment's root folder: which
//! hyperparameters and metrics exist), `_hparams_/session_start_info` and `_hparams_/session_end_info`
//! (in each run: its values and whether it finished). Metric values are the runs' own scalars.
//! Each file here is rewritten whole, under a fixed name, whenever the runner plans or finishes.
use super::tensorboard::{EventWriter, Pb};
use super::{atomic_replace, unix_now};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

pub const EVENT_FILE: &str = "events.out.tfevents.0000000000.hparams";

#[derive(Debug, Clone, PartialEq)]
pub enum HValue {
    Number(f64),
    Str(String),
    Bool(bool),
}

impl HValue {
    /// The value as a label shows it: `0.5`, `cosine`, `true`.
    pub fn text(&self) -> String {
        match self {
            HValue::Number(x) => x.to_string(),
            HValue::Str(s) => s.clone(),
            HValue::Bool(b) => b.to_string(),
        }
    }
}

/// google.protobuf.Value { double number_value = 2; string string_value = 3; bool bool_value = 4; }
fn value(pb: &mut Pb, field: u64, v: &HValue) {
    pb.msg(field, |m| match v {
        HValue::Number(x) => m.double(2, *x),
        HValue::Str(s) => m.bytes(3, s.as_bytes()),
        HValue::Bool(b) => m.int(4, *b as i64),
    });
}

/// HParamsPluginData { int32 version = 1 (0); SessionStartInfo session_start_info = 3 {
/// map<string, Value> hparams = 1; string group_name = 4; double start_time_secs = 5; } }
pub fn session_start(hparams: &[(String, HValue)], group_name: &str, start_time: f64) -> Vec<u8> {
    let mut pd = Pb::default();
    pd.int(1, 0);
    pd.msg(3, |ssi| {
        for (k, v) in hparams {
            ssi.msg(1, |entry| {
                entry.bytes(1, k.as_bytes());
                value(entry, 2, v);
            });
        }
        ssi.bytes(4, group_name.as_bytes());
        ssi.double(5, start_time);
    });
    pd.0
}

/// Status: STATUS_SUCCESS = 1, STATUS_FAILURE = 2, STATUS_RUNNING = 3.
#[derive(Debug, Clone, Copy)]
pub enum SessionStatus {
    Success = 1,
    Failure = 2,
    Running = 3,
}

/// HParamsPluginData { SessionEndInfo session_end_info = 4 { Status status = 1; double end_time_secs = 2; } }
pub fn session_end(status: SessionStatus, end_time: f64) -> Vec<u8> {
    let mut pd = Pb::default();
    pd.int(1, 0);
    pd.msg(4, |sei| {
        sei.int(1, status as i64);
        sei.double(2, end_time);
    });
    pd.0
}

/// A hyperparameter column: its name and the values it takes in the experiment.
pub struct HParamInfo {
    pub name: String,
    pub values: Vec<HValue>,
}

/// HParamsPluginData { Experiment experiment = 2 { string name = 6; string description = 1;
/// double time_created_secs = 3; repeated HParamInfo hparam_infos = 4 { string name = 1;
/// DataType type = 4 (STRING 1, BOOL 2, FLOAT64 3); ListValue domain_discrete = 5 { repeated Value
/// values = 1; } }; repeated MetricInfo metric_infos = 5 { MetricName name = 1 { string tag = 2; } } } }
pub fn experiment(name: &str, description: &str, hparams: &[HParamInfo], metric_tags: &[&str]) -> Vec<u8> {
    let mut pd = Pb::default();
    pd.int(1, 0);
    pd.msg(2, |e| {
        e.bytes(6, name.as_bytes());
        e.bytes(1, description.as_bytes());
        e.double(3, unix_now());
        for h in hparams {
            e.msg(4, |info| {
                info.bytes(1, h.name.as_bytes());
                let kind = match h.values.first() {
                    Some(HValue::Number(_)) => 3,
                    Some(HValue::Bool(_)) => 2,
                    _ => 1,
                };
                info.int(4, kind);
                info.msg(5, |list| {
                    for v in &h.values {
                        value(list, 1, v);
                    }
                });
            });
        }
        for tag in metric_tags {
            e.msg(5, |metric| metric.msg(1, |mn| mn.bytes(2, tag.as_bytes())));
        }
    });
    pd.0
}

/// Writes `dir/EVENT_FILE` holding the given plugin data messages under their tags.
pub fn write_file(dir: &Path, records: &[(&str, Vec<u8>)]) -> Result<()> {
    atomic_replace(&dir.join(EVENT_FILE), |tmp| {
        let mut w = EventWriter::create_at(tmp)?;
        for (tag, content) in records {
            w.add_plugin_data(tag, "hparams", content, 0)?;
        }
        w.flush()
    })
}

pub const EXPERIMENT_TAG: &str = "_hparams_/experiment";
pub const SESSION_START_TAG: &str = "_hparams_/session_start_info";
pub const SESSION_END_TAG: &str = "_hparams_/session_end_info";

/// Every key of a run configuration with its value, dotted (`diffusion.schedule.name`).
pub fn flat(config: &crate::config::RunConfig) -> BTreeMap<String, HValue> {
    fn walk(v: &serde_json::Value, prefix: &str, out: &mut BTreeMap<String, HValue>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, child) in m {
                    walk(child, &if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, out);
                }
            }
            serde_json::Value::Number(n) => {
                out.insert(prefix.into(), HValue::Number(n.as_f64().unwrap_or(f64::NAN)));
            }
            serde_json::Value::Bool(b) => {
                out.insert(prefix.into(), HValue::Bool(*b));
            }
            serde_json::Value::String(s) => {
                out.insert(prefix.into(), HValue::Str(s.clone()));
            }
            other => {
                out.insert(prefix.into(), HValue::Str(other.to_string()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&serde_json::to_value(config).expect("config serializes"), "", &mut out);
    // DDPM, the default formulation, is left out of the identity; named here so that a comparison
    // of formulations lists it.
    out.entry("diffusion.formulation.name".to_string())
        .or_insert_with(|| HValue::Str(config.diffusion.formulation.name().to_string()));
    out
}
