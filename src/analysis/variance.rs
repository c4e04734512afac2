//! Where the variance of a comparison comes from: training (the seed's weights) or evaluation (the
//! samples drawn, KID's subsets, the bound's noise and test images). Evaluation replicates
//! (`eval.replicate`) evaluate the same weights again under other draws; the spread between them
//! is evaluation noise alone.
//!
//! For a paired comparison, with d_{s,r} the difference variant − baseline at seed s under
//! evaluation replicate r (replicate r of both variants draws the same noise):
//! - the evaluation variance of one difference, pooled within seeds:
//!   σ²_e = Σ_s Σ_r (d_{s,r} − d̄_s)² / Σ_s (R_s − 1);
//! - the variance between seeds of one evaluation's difference (replicate 0, what the verdict
//!   uses): s² = σ²_t + σ²_e, so σ²_t = max(0, s² − σ²_e) is what training contributes.
//!
//! Averaging R evaluations per run leaves σ²_t + σ²_e/R; more samples per evaluation shrink σ²_e the
//! same way. So the seeds needed with evaluation noise removed (σ_t alone) bound what more samples can
//! buy: when they are close to the seeds needed now, only more seeds help.
use super::collect::RunRecord;
use super::stats::summarize;

/// The decomposition of one comparison's paired differences (or of one variant's values).
#[derive(Debug, Clone, PartialEq)]
pub struct Decomposition {
    /// Seeds with at least two replicates of both sides.
    pub seeds: usize,
    /// Evaluations per run (the most any seed has).
    pub replicates: usize,
    /// Variance between seeds of one evaluation (replicate 0).
    pub total: f64,
    /// Evaluation variance of one evaluation, pooled within seeds.
    pub evaluation: f64,
}

impl Decomposition {
    /// σ²_t = max(0, total − evaluation).
    pub fn training(&self) -> f64 {
        (self.total - self.evaluation).max(0.0)
    }

    /// The share of the variance between seeds that is evaluation noise, in [0, 1].
    pub fn evaluation_share(&self) -> f64 {
        if self.total > 0.0 {
            (self.evaluation / self.total).min(1.0)
        } else {
            f64::NAN
        }
    }
}

/// Splits the variance of values grouped by seed: `groups[s]` holds seed s's values, replicate 0
/// first. `None` without two seeds, or without a seed that has two replicates.
pub fn decompose(groups: &[Vec<f64>]) -> Option<Decomposition> {
    let firsts: Vec<f64> = groups.iter().filter_map(|g| g.first().copied()).collect();
    if firsts.len() < 2 {
        return None;
    }
    let (mut within, mut df) = (0.0, 0usize);
    for g in groups.iter().filter(|g| g.len() >= 2) {
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        within += g.iter().map(|x| (x - mean).powi(2)).sum::<f64>();
        df += g.len() - 1;
    }
    if df == 0 {
        return None;
    }
    let s = summarize(&firsts);
    Some(Decomposition {
        seeds: groups.iter().filter(|g| g.len() >= 2).count(),
        replicates: groups.iter().map(Vec::len).max().unwrap_or(0),
        total: s.std * s.std,
        evaluation: within / df as f64,
    })
}

/// The paired differences `variant` − `baseline` of `metric` by seed and replicate (those both
/// sides have), for `decompose`.
pub fn paired_groups(records: &[RunRecord], baseline: &str, variant: &str, metric: &str) -> Vec<Vec<f64>> {
    let done = |v: &str, seed: u64| records.iter().find(|r| r.variant == v && r.seed == seed && r.state == "done");
    let mut seeds: Vec<u64> = records.iter().filter(|r| r.variant == variant).map(|r| r.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    seeds
        .into_iter()
        .filter_map(|seed| {
            let (a, b) = (done(variant, seed)?, done(baseline, seed)?);
            let diffs: Vec<f64> = a
                .evaluations
                .iter()
                .filter_map(|(r, m)| {
                    let (_, mb) = b.evaluations.iter().find(|(rb, _)| rb == r)?;
                    Some(m.get(metric)? - mb.get(metric)?)
                })
                .collect();
            (!diffs.is_empty()).then_some(diffs)
        })
        .collect()
}

/// One variant's values of `metric` by seed and replicate, for `decompose`.
pub fn variant_groups(records: &[RunRecord], variant: &str, metric: &str) -> Vec<Vec<f64>> {
    records
        .iter()
        .filter(|r| r.variant == variant && r.state == "done")
        .map(|r| r.evaluations.iter().filter_map(|(_, m)| m.get(metric).copied()).collect::<Vec<f64>>())
        .filter(|g| !g.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decomposition_by_hand() {
        // Seed 0: 10, 12 (mean 11, squares 1 + 1); seed 1: 20, 18, 22 (mean 20, squares 0 + 4 + 4);
        // seed 2: 15, 15 (0). σ²_e = (2 + 8 + 0) / (1 + 2 + 1) = 2.5. Between seeds, replicate 0:
        // 10, 20, 15: variance 25. Training 22.5; evaluation share 0.1.
        let d = decompose(&[vec![10.0, 12.0], vec![20.0, 18.0, 22.0], vec![15.0, 15.0]]).unwrap();
        assert_eq!((d.seeds, d.replicates), (3, 3));
        assert!((d.evaluation - 2.5).abs() < 1e-12 && (d.total - 25.0).abs() < 1e-12, "{d:?}");
        assert!((d.training() - 22.5).abs() < 1e-12 && (d.evaluation_share() - 0.1).abs() < 1e-12);
        // Evaluation noise larger than the spread between seeds: training 0, share capped at 1.
        let d = decompose(&[vec![10.0, 20.0], vec![11.0, 1.0]]).unwrap();
        assert_eq!((d.training(), d.evaluation_share()), (0.0, 1.0));
        // One evaluation per run, or one seed: nothing to split.
        assert_eq!(decompose(&[vec![1.0], vec![2.0]]), None);
        assert_eq!(decompose(&[vec![1.0, 2.0]]), None);
    }

    /// Simulated: training effects N(0, 4) per seed, evaluation noise N(0, 1) per replicate, 200
    /// seeds × 4 replicates. The estimates land within a few standard errors of 4 and 1.
    #[test]
    fn decomposition_recovers_simulated_components() {
        use tch::{Kind, Tensor};
        tch::manual_seed(11);
        let train = Vec::<f64>::try_from(Tensor::randn([200], (Kind::Double, tch::Device::Cpu)) * 2.0).unwrap();
        let noise = Vec::<f64>::try_from(Tensor::randn([800], (Kind::Double, tch::Device::Cpu))).unwrap();
        let groups: Vec<Vec<f64>> = (0..200).map(|s| (0..4).map(|r| train[s] + noise[4 * s + r]).collect()).collect();
        let d = decompose(&groups).unwrap();
        // σ²_e from 600 degrees of freedom: s.e. ≈ √(2/600) ≈ 0.058; total from 199: s.e. ≈ 5·√(2/199) ≈ 0.5.
        assert!((d.evaluation - 1.0).abs() < 0.2, "{d:?}");
        assert!((d.total - 5.0).abs() < 1.6 && (d.training() - 4.0).abs() < 1.6, "{d:?}");
    }
}
