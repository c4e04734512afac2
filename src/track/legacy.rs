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
}
