//! Improved precision and recall (Kynkäänniemi et al. 2019) on the Inception features FID uses.
//! Each set's manifold is the union of balls around its features, each ball reaching the feature's
//! k-th nearest neighbour in its own set (k = 3, as the paper recommends):
//! precision = the share of samples inside the reference manifold (how many look real), recall = the
//! share of reference features inside the samples' manifold (how much of the data is covered). The
//! same two numbers of as many held-out real images are the ceilings at these set sizes.
use super::{Computed, Inputs, Metric, SampleMetric};
use crate::progress::Reporter;
use anyhow::Result;
use tch::{Device, Kind, Tensor};

/// Neighbours per ball.
pub const K: i64 = 3;
/// Rows of the distance matrix computed at once (memory, not results).
const CHUNK: i64 = 1024;

pub struct PrecisionRecall;

const METRICS: [Metric; 4] = [
    Metric::model("precision", "precision", 3).higher().headline().panel("precision (higher is better)"),
    Metric::reference("precision_real", "precision (real)", "floor_precision", "precision"),
    Metric::model("recall", "recall", 3).higher().headline().panel("recall (higher is better)"),
    Metric::reference("recall_real", "recall (real)", "floor_recall", "recall"),
];

/// Squared Euclidean distances between the rows of `a` `[n, d]` and of `b` `[m, d]`, both f64.
fn squared_distances(a: &Tensor, b: &Tensor) -> Tensor {
    let aa = (a * a).sum_dim_intlist([1i64].as_slice(), true, Kind::Double);
    let bb = (b * b).sum_dim_intlist([1i64].as_slice(), true, Kind::Double).tr();
    (aa + bb - a.matmul(&b.tr()) * 2.0).clamp_min(0.0)
}

/// Squared distance of each row of `x` to its k-th nearest other row.
pub fn radii(x: &Tensor, k: i64) -> Tensor {
    let n = x.size()[0];
    assert!(n > k, "{n} features: the k-th neighbour needs more than k = {k}");
    let parts: Vec<Tensor> = (0..n)
        .step_by(CHUNK as usize)
        .map(|s| {
            let rows = x.narrow(0, s, CHUNK.min(n - s));
            let mut d = squared_distances(&rows, x);
            // The row itself is its own nearest neighbour at distance 0: take the (k+1)-th.
            let own = Tensor::arange_start(s, s + rows.size()[0], (Kind::Int64, Device::Cpu));
            let _ = d.index_put_(
                &[Some(Tensor::arange(rows.size()[0], (Kind::Int64, Device::Cpu))), Some(own)],
                &Tensor::from(0.0f64),
                false,
            );
            d.kthvalue(k + 1, 1, false).0
        })
        .collect();
    Tensor::cat(&parts, 0)
}

/// The share of `points` within the ball of some row of `centers` (squared radii `radii`).
pub fn covered(points: &Tensor, centers: &Tensor, radii: &Tensor) -> f64 {
    let n = points.size()[0];
    let mut inside = 0i64;
    for s in (0..n).step_by(CHUNK as usize) {
        let rows = points.narrow(0, s, CHUNK.min(n - s));
        let hit = squared_distances(&rows, centers).le_tensor(&radii.view([1, -1])).any_dim(1, false);
        inside += hit.sum(Kind::Int64).int64_value(&[]);
    }
    inside as f64 / n as f64
}

/// (precision, recall) of `generated` against `real` features, with k nearest neighbours.
pub fn precision_recall(real: &Tensor, generated: &Tensor, k: i64) -> (f64, f64) {
    let real = real.to_device(Device::Cpu).to_kind(Kind::Double);
    let generated = generated.to_device(Device::Cpu).to_kind(Kind::Double);
    let precision = covered(&generated, &real, &radii(&real, k));
    let recall = covered(&real, &generated, &radii(&generated, k));
    (precision, recall)
}

impl SampleMetric for PrecisionRecall {
    fn key(&self) -> &'static str {
        "precision_recall"
    }

    fn metrics(&self) -> &'static [Metric] {
        &METRICS
    }

    fn compute(&self, i: &Inputs, _progress: &mut dyn Reporter) -> Result<Computed> {
        let (p, r) = precision_recall(&i.reference.features, &i.generated.features, K);
        let (p_real, r_real) = precision_recall(&i.reference.features, &i.real.features, K);
        Ok(Computed {
            values: vec![
                ("precision".into(), p),
                ("precision_real".into(), p_real),
                ("recall".into(), r),
                ("recall_real".into(), r_real),
            ],
            detail: Some(serde_json::json!({ "k": K, "reference_features": i.reference.features.size()[0] })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(xs: &[f64]) -> Tensor {
        Tensor::from_slice(xs).view([-1, 1])
    }

    #[test]
    fn worked_by_hand_on_a_line() {
        // Real points 0, 1, 2, 3, 10 with k = 1: radii 1, 1, 1, 1, 7 (squared 1, 1, 1, 1, 49).
        let real = points(&[0.0, 1.0, 2.0, 3.0, 10.0]);
        let r = radii(&real, 1);
        assert_eq!(Vec::<f64>::try_from(&r).unwrap(), [1.0, 1.0, 1.0, 1.0, 49.0]);
        // Generated 0.5 (inside 0's ball), 4 (inside 3's: distance exactly 1), 20 (outside every ball:
        // 10's reaches 17), 16 (inside 10's): precision 3/4.
        let generated = points(&[0.5, 4.0, 20.0, 16.0]);
        assert_eq!(covered(&generated, &real, &r), 0.75);
        // Generated radii with k = 1: 3.5, 3.5, 4, 4. Real 0 (0.5's ball reaches 4), 1, 2, 3 inside;
        // 10 inside 16's ball (radius 4 reaches 12)? |10 − 16| = 6 > 4, |10 − 4| = 6 > 3.5: outside.
        let (p, rec) = precision_recall(&real, &generated, 1);
        assert_eq!((p, rec), (0.75, 0.8));
    }

    #[test]
    fn a_set_against_itself_is_fully_precise_and_covered() {
        tch::manual_seed(3);
        let x = Tensor::randn([300, 16], (Kind::Double, Device::Cpu));
        assert_eq!(precision_recall(&x, &x, K), (1.0, 1.0));
        // Far away: nothing inside.
        assert_eq!(precision_recall(&x, &(&x + 100.0), K), (0.0, 0.0));
    }
}
