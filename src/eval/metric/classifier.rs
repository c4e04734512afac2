//! The evaluation classifier's scores of the samples (`eval::classifier`: IS, share confident, class
//! entropy, classifier FID and, for class-conditional runs, the share of the class asked for), beside
//! the same scores of as many held-out real images and the classifier's test accuracy. Datasets
//! without a classifier give none.
use super::{Computed, Inputs, Metric, SampleMetric};
use crate::eval::classifier::{self, Classifier};
use crate::eval::images::ImageSet;
use crate::progress::Reporter;
use anyhow::Result;
use std::path::Path;
use tch::Tensor;

pub struct Scores;

const METRICS: [Metric; 10] = [
    Metric::model("confident", "confident", 1).higher().percent().panel("share confident (higher is better)"),
    Metric::reference("confident_real", "confident (real)", "floor_confident", "confident").percent().digits(1),
    Metric::model("is", "classifier IS", 3).higher(),
    Metric::reference("is_real", "classifier IS (real)", "floor_is", "is"),
    Metric::model("class_entropy", "class entropy", 3).higher(),
    Metric::reference("class_entropy_real", "class entropy (real)", "floor_class_entropy", "class_entropy"),
    Metric::model("cfid", "classifier FID", 3),
    Metric::reference("cfid_floor", "classifier FID floor", "floor_cfid", "cfid"),
    Metric::model("cond_accuracy", "conditional accuracy", 1).higher().percent(),
    Metric {
        reference_of: None,
        ..Metric::reference("classifier_accuracy", "classifier accuracy", "floor_classifier_accuracy", "")
    },
];

/// An image set's images in [-1, 1] as one CPU tensor.
fn images_of(set: &ImageSet, data_dir: &Path) -> Result<Tensor> {
    let mut all = Vec::new();
    set.for_each_batch(data_dir, 500, &mut |pixels| {
        all.push(pixels / 127.5 - 1.0);
        Ok(())
    })?;
    Ok(Tensor::cat(&all, 0))
}

impl SampleMetric for Scores {
    fn key(&self) -> &'static str {
        "classifier"
    }

    fn metrics(&self) -> &'static [Metric] {
        &METRICS
    }

    fn compute(&self, i: &Inputs, progress: &mut dyn Reporter) -> Result<Computed> {
        if !classifier::supported(&i.config.data) {
            return Ok(Computed::default());
        }
        let c = Classifier::load_or_train(&i.config.data, i.data_dir, i.device, &mut |line| progress.note(line))?;
        let reference = images_of(i.reference_set, i.data_dir)?;
        let mut values: Vec<(String, f64)> =
            c.scores(&i.images.clamp(-1.0, 1.0), &reference, i.labels).into_iter().collect();
        let real = images_of(i.real_set, i.data_dir)?;
        for (k, v) in c.scores(&real, &reference, None) {
            let name = if k == "cfid" { "cfid_floor".to_string() } else { format!("{k}_real") };
            values.push((name, v));
        }
        values.push(("classifier_accuracy".into(), c.info.test_accuracy));
        Ok(Computed { values, detail: None })
    }
}
