//! KID (Bińkowski et al. 2018): the unbiased MMD² with the cubic polynomial kernel between the
//! samples' and the reference set's Inception features, over random subsets; its floor is that of as
//! many held-out real images. Draws come from streams `eval-kid-<stream>` and `eval-kid-floor`.
use super::{Computed, DuringInputs, Inputs, Metric, SampleMetric};
use crate::eval::fid::kid;
use crate::progress::Reporter;
use crate::rng::reseed;
use anyhow::Result;
use serde_json::json;

pub struct KernelInception;

const METRICS: [Metric; 2] = [
    Metric::model("kid", "KID", 5).headline().panel("KID (lower is better)").during(),
    Metric::reference("kid_floor", "KID floor", "floor_kid", "kid").digits(5),
];

impl SampleMetric for KernelInception {
    fn key(&self) -> &'static str {
        "kid"
    }

    fn metrics(&self) -> &'static [Metric] {
        &METRICS
    }

    fn compute(&self, i: &Inputs, _progress: &mut dyn Reporter) -> Result<Computed> {
        let e = &i.config.eval;
        reseed(i.config.seed, &crate::rng::replicate_stream("eval-kid", e.replicate), i.stream);
        let k = kid(&i.generated.features, &i.reference.features, e.kid_subsets, e.kid_subset_size);
        reseed(i.config.seed, "eval-kid-floor", 0);
        let floor = kid(&i.real.features, &i.reference.features, e.kid_subsets, e.kid_subset_size);
        Ok(Computed {
            values: vec![(METRICS[0].name.into(), k.mean), (METRICS[1].name.into(), floor.mean)],
            detail: Some(json!({ "std": k.std, "subsets": k.subsets, "subset_size": k.subset_size })),
        })
    }

    fn compute_during(&self, i: &DuringInputs) -> Option<Vec<(String, f64)>> {
        let e = &i.config.eval;
        reseed(i.config.seed, &crate::rng::replicate_stream("eval-kid", e.replicate), i.stream);
        let k = kid(&i.generated.features, &i.reference.features, e.kid_subsets, e.kid_subset_size);
        Some(vec![(METRICS[0].name.into(), k.mean)])
    }
}
