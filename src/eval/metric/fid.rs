//! FID (Heusel et al. 2017): the Fréchet distance between the Gaussians of the samples' and the
//! reference set's Inception features; its floor is that of as many held-out real images.
use super::{Computed, DuringInputs, Inputs, Metric, SampleMetric};
use crate::eval::fid::frechet_distance;
use crate::progress::Reporter;
use anyhow::Result;

pub struct Fid;

/// FID itself (the sampling-cost plots draw it against the sampler's steps).
pub const FID: Metric = Metric::model("fid", "FID", 2).headline().panel("FID (lower is better)").during();

const METRICS: [Metric; 2] = [FID, Metric::reference("fid_floor", "FID floor", "floor_fid", "fid").digits(2)];

impl SampleMetric for Fid {
    fn key(&self) -> &'static str {
        "fid"
    }

    fn metrics(&self) -> &'static [Metric] {
        &METRICS
    }

    fn compute(&self, i: &Inputs, _progress: &mut dyn Reporter) -> Result<Computed> {
        let fid = frechet_distance(&i.generated.gaussian, &i.reference.gaussian);
        let floor = frechet_distance(&i.real.gaussian, &i.reference.gaussian);
        Ok(Computed {
            values: vec![(METRICS[0].name.into(), fid.fid), (METRICS[1].name.into(), floor.fid)],
            detail: Some(serde_json::to_value(&fid)?),
        })
    }

    fn compute_during(&self, i: &DuringInputs) -> Option<Vec<(String, f64)>> {
        let fid = frechet_distance(&i.generated.gaussian, &i.reference.gaussian);
        Some(vec![(FID.name.into(), fid.fid)])
    }
}
