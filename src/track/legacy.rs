//! Files written by earlier versions, read as today's: every format upgrade of a run folder's
//! records in one place.
use serde::Deserialize;
use std::collections::BTreeMap;

/// Fields that `status.json` and `eval/<spec>/metrics.json` kept before the metric registry moved
/// every value into one map, `metrics` (read, never written).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MetricFields {
    #[serde(default)]
    fid: Option<f64>,
    #[serde(default)]
    kid: Option<f64>,
    #[serde(default)]
    bpd: Option<f64>,
    #[serde(default)]
    sample_seconds: Option<f64>,
    /// The classifier's scores, by their names of today.
    #[serde(default)]
    scores: BTreeMap<String, f64>,
    /// What held-out real images scored, by the name of the metric they are the floor of.
    #[serde(default)]
    floors: BTreeMap<String, f64>,
}

impl MetricFields {
    /// Moves the fields into `metrics` under today's names; a value already there wins.
    pub fn move_into(&mut self, metrics: &mut BTreeMap<String, f64>) {
        let fields = [("fid", self.fid.take()), ("kid", self.kid.take()), ("bpd", self.bpd.take())];
        for (k, v) in fields.into_iter().chain([("sample_seconds", self.sample_seconds.take())]) {
            if let Some(v) = v {
                metrics.entry(k.to_string()).or_insert(v);
            }
        }
        for (k, v) in std::mem::take(&mut self.scores) {
            metrics.entry(k).or_insert(v);
        }
        for (k, v) in std::mem::take(&mut self.floors) {
            let name = match k.as_str() {
                "fid" | "kid" | "cfid" => format!("{k}_floor"),
                "classifier_accuracy" => k,
                _ => format!("{k}_real"),
            };
            metrics.entry(name).or_insert(v);
        }
    }
}

/// What a checkpoint's state says of the time spent through its step: (train seconds, wall seconds,
/// steps not counted). Checkpoints written before the time was recorded: none counted, all the steps
/// uncounted.
pub fn checkpoint_spent(state: &serde_json::Value, step: usize) -> (f64, f64, usize) {
    match (state["train_seconds"].as_f64(), state["wall_seconds"].as_f64()) {
        (Some(train), Some(wall)) => (train, wall, state["uncounted_steps"].as_u64().unwrap_or(0) as usize),
        _ => (0.0, 0.0, step),
    }
}

/// Adam's step count of a checkpoint; checkpoints written before it was recorded took one Adam step
/// per training step.
pub fn checkpoint_adam_step(state: &serde_json::Value, step: usize) -> i64 {
    state["adam_step"].as_i64().unwrap_or(step as i64)
}

/// The device kind a checkpoint records (`cpu`, `cuda`); None for checkpoints written before it was
/// recorded (the caller then takes the last attempt's device).
pub fn checkpoint_device(state: &serde_json::Value) -> Option<String> {
    state["device"].as_str().map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result of the format before the registry: its fields land under today's names, and a value
    /// already in `metrics` is kept.
    #[test]
    fn old_fields_move_under_todays_names() {
        let mut old: MetricFields = serde_json::from_str(
            r#"{"fid": 12.5, "kid": 0.01, "sample_seconds": 3.0, "scores": {"confident": 0.9},
                "floors": {"fid": 2.0, "confident": 0.97, "classifier_accuracy": 0.99}}"#,
        )
        .unwrap();
        let mut metrics = BTreeMap::from([("kid".to_string(), 0.02)]);
        old.move_into(&mut metrics);
        let expected = [
            ("classifier_accuracy", 0.99),
            ("confident", 0.9),
            ("confident_real", 0.97),
            ("fid", 12.5),
            ("fid_floor", 2.0),
            ("kid", 0.02),
            ("sample_seconds", 3.0),
        ];
        assert_eq!(metrics, expected.iter().map(|(k, v)| (k.to_string(), *v)).collect());
        assert_eq!(old, MetricFields::default(), "moved, not copied");
    }

    #[test]
    fn an_old_checkpoint_counts_its_steps_as_uncounted_time() {
        let old = serde_json::json!({ "timestep_sampler": null });
        assert_eq!(checkpoint_spent(&old, 500), (0.0, 0.0, 500));
        assert_eq!(checkpoint_adam_step(&old, 500), 500);
        assert_eq!(checkpoint_device(&old), None);
        let new = serde_json::json!({ "train_seconds": 2.0, "wall_seconds": 3.0, "adam_step": 7, "device": "cpu" });
        assert_eq!(checkpoint_spent(&new, 500), (2.0, 3.0, 0));
        assert_eq!((checkpoint_adam_step(&new, 500), checkpoint_device(&new).as_deref()), (7, Some("cpu")));
    }
}
