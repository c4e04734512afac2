//! Comparing a reproduction made on other hardware with its record, where the bits cannot agree:
//! libtorch's kernels round differently on another CPU model or GPU, and training amplifies a
//! difference in the last bit to one as large as a change of seed. So each variant's reproduced mean
//! of a metric is judged against the record's seed-to-seed spread of that variant:
//!
//! **Test** (named in the output as "t prediction interval, Bonferroni"): with the record's n values
//! of a variant's metric (mean x̄, standard deviation s) and the reproduction's m values (mean ȳ), the
//! reproduced mean must lie in x̄ ± t_{1−α/(2K), n−1} · s · √(1/n + 1/m), the prediction interval for
//! the mean of m new seeds. If the reproduction draws its seeds' results from the distribution the
//! record drew from, (ȳ − x̄) / (s √(1/n + 1/m)) follows Student's t with n − 1 degrees of freedom
//! (s is independent of both means), so one row fails with probability α/K; over the K rows tested
//! (Bonferroni) a faithful reproduction fails a metric row with probability at most α = 5 %. Reproducing
//! the same seeds on other hardware gives results correlated with the record's, which makes the rule
//! more lenient still. A row needs n ≥ 2 and a spread (s > 0); a metric that is the same for every
//! seed (a reference value such as the FID floor) cannot be judged this way and is shown as `n/a`.
//!
//! The power to catch a moved metric grows with the record's seeds: with 5 seeds and 20 rows a shift
//! of 8 seed standard deviations is caught 99 % of the time (simulated below); with 3 seeds the
//! critical t on 2 degrees of freedom is about 20 and such a shift is mostly missed.
//!
//! The verdicts must agree as well: for every metric, the same comparisons decided, in the same
//! direction, and the same best variant when any is decided (an undecided metric's best by mean is
//! noise and is not compared). These rows are not part of the α guarantee: a verdict whose p-value
//! lies near its threshold can flip on other hardware, and then the record's verdict did not
//! reproduce, which is what the row reports. Likewise a sequential-seeds record whose reproduction
//! stops at another look fails its `seeds` row.
use super::compare::{compared_metrics, numbers, texts, Check, Kind};
use crate::analysis::stats::{student_t_cdf, student_t_quantile, summarize};
use polars::prelude::DataFrame;
use std::collections::BTreeMap;

/// The family-wise rate at which a faithful reproduction is failed.
pub const ALPHA: f64 = 0.05;

/// A standard deviation below this share of the mean is rounding, not seed-to-seed spread.
pub const NO_SPREAD: f64 = 1e-9;

pub const TEST_NAME: &str = "t prediction interval for the reproduced mean, Bonferroni over the rows tested";

/// One row's judgement: the two-sided p-value of the reproduced mean under the record's spread, and
/// the interval's half-width at level `alpha`.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub difference: f64,
    pub half_width: f64,
    pub p: f64,
}

/// The record's values `committed` against the reproduction's `reproduced` at level `alpha` (the
/// per-row level, α/K); None with fewer than two committed values, no reproduced value or no spread.
pub fn judge(committed: &[f64], reproduced: &[f64], alpha: f64) -> Option<Judged> {
    let (n, m) = (committed.len(), reproduced.len());
    if n < 2 || m == 0 || committed.iter().any(|x| !x.is_finite()) {
        return None;
    }
    if reproduced.iter().any(|y| !y.is_finite()) {
        return Some(Judged { difference: f64::NAN, half_width: f64::NAN, p: 0.0 });
    }
    let (x, y) = (summarize(committed), summarize(reproduced));
    let scale = x.std * (1.0 / n as f64 + 1.0 / m as f64).sqrt();
    // A spread at the level of float rounding (a value computed the same way for every seed) is none.
    if !(scale.is_finite() && x.std > NO_SPREAD * x.mean.abs().max(f64::MIN_POSITIVE)) {
        return None;
    }
    let df = (n - 1) as f64;
    let difference = y.mean - x.mean;
    let p = 2.0 * (1.0 - student_t_cdf((difference / scale).abs(), df));
    Some(Judged { difference, half_width: student_t_quantile(1.0 - alpha / 2.0, df) * scale, p })
}

/// Each variant's values of `metric`, in the table's row order; a value that is not finite is kept
/// (a reproduced NaN must fail its row, not shrink it).
fn by_variant(df: &DataFrame, metric: &str) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let (Some(variants), Some(values)) = (texts(df, "variant"), numbers(df, metric)) else { return out };
    for (v, x) in variants.into_iter().zip(values) {
        if let (Some(v), Some(x)) = (v, x) {
            out.entry(v).or_default().push(x);
        }
    }
    out
}

fn sig(x: f64) -> String {
    crate::analysis::verdict::sig(x, 5)
}

/// One row per variant and compared metric: the reproduced mean against the record's prediction
/// interval, each at α/K where K counts the rows that can be tested.
pub fn compare_metrics(committed: &DataFrame, reproduced: &DataFrame, alpha: f64) -> Vec<Check> {
    let pairs: Vec<(String, &str, Vec<f64>, Vec<f64>)> = compared_metrics()
        .into_iter()
        .flat_map(|metric| {
            let (a, mut b) = (by_variant(committed, metric), by_variant(reproduced, metric));
            a.into_iter()
                .map(|(variant, x)| {
                    let y = b.remove(&variant).unwrap_or_default();
                    (variant, metric, x, y)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let testable = pairs.iter().filter(|(_, _, x, y)| judge(x, y, alpha).is_some()).count().max(1);
    let level = alpha / testable as f64;
    pairs
        .into_iter()
        .map(|(variant, metric, x, y)| {
            let (sx, sy) = (summarize(&x), summarize(&y));
            let committed = if x.len() > 1 {
                format!("{} ± {} (n={})", sig(sx.mean), sig(sx.std), x.len())
            } else {
                format!("{} (n={})", sig(sx.mean), x.len())
            };
            let reproduced = if y.is_empty() { "-".into() } else { format!("{} (n={})", sig(sy.mean), y.len()) };
            let mut check = Check::new(&variant, metric, committed, reproduced, None, false, Kind::Statistical);
            match judge(&x, &y, level) {
                Some(j) => {
                    check.difference = Some(j.difference);
                    check.pass = j.p >= level;
                    check.tolerance =
                        Some(format!("±{} (p {})", sig(j.half_width), crate::analysis::verdict::p_text(j.p)));
                }
                None if y.is_empty() => check.tolerance = Some("no reproduced value".into()),
                None => {
                    check.tested = false;
                    check.difference = (!y.is_empty()).then_some(sy.mean - sx.mean);
                    check.tolerance = Some(if x.len() < 2 {
                        "one seed: no spread".into()
                    } else {
                        "the same for every seed: no spread".into()
                    });
                }
            }
            check
        })
        .collect()
}

/// A metric's verdict in words: the comparisons decided with their direction, and the best variant
/// when any is decided; `undecided` otherwise.
fn verdict_words(df: &DataFrame) -> BTreeMap<String, String> {
    let (Some(metrics), Some(best), Some(variants), Some(baselines)) =
        (texts(df, "metric"), texts(df, "best"), texts(df, "variant"), texts(df, "baseline"))
    else {
        return BTreeMap::new();
    };
    let decided: Vec<bool> = df
        .column("decided")
        .ok()
        .and_then(|c| c.bool().ok().map(|b| (0..b.len()).map(|i| b.get(i).unwrap_or(false)).collect()))
        .unwrap_or_else(|| vec![false; metrics.len()]);
    let diffs = numbers(df, "diff_mean").unwrap_or_else(|| vec![None; metrics.len()]);
    let mut out: BTreeMap<String, (Option<String>, Vec<String>)> = BTreeMap::new();
    for i in 0..metrics.len() {
        let Some(metric) = metrics[i].clone() else { continue };
        let entry = out.entry(metric).or_default();
        if decided[i] {
            let sign = if diffs[i].unwrap_or(0.0) < 0.0 { "<" } else { ">" };
            let v = variants[i].clone().unwrap_or_default();
            let b = baselines[i].clone().unwrap_or_default();
            entry.1.push(format!("{v} {sign} {b}"));
            entry.0 = best[i].clone();
        }
    }
    out.into_iter()
        .map(|(metric, (best, decided))| {
            let words = match best {
                Some(b) if !decided.is_empty() => format!("{b} best; {}", decided.join(", ")),
                _ => "undecided".into(),
            };
            (metric, words)
        })
        .collect()
}

/// One row per metric of the record's verdict table: the reproduction's verdict must be the same.
pub fn compare_verdicts(committed: &DataFrame, reproduced: Option<&DataFrame>) -> Vec<Check> {
    let a = verdict_words(committed);
    let b = reproduced.map(verdict_words).unwrap_or_default();
    a.into_iter()
        .map(|(metric, words)| {
            let again = b.get(&metric).cloned().unwrap_or_else(|| "-".into());
            let pass = again == words;
            Check::new("(verdict)", &metric, words, again, None, pass, Kind::Statistical)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::stats::simulate::Normals;
    use polars::prelude::*;

    /// Worked by hand: x = [1, 2, 3] (mean 2, s 1), three reproduced seeds with mean 5: the scale is
    /// √(1/3 + 1/3) = 0.8165, t = 3/0.8165 = 3.674 on 2 degrees of freedom, p = 0.06674 (SciPy's
    /// 2·t.sf(3.674, 2)); the 95 % half-width is t₀.₉₇₅,₂ · 0.8165 = 4.3027 · 0.8165 = 3.5131.
    #[test]
    fn the_interval_and_p_value_match_hand_worked_values() {
        let j = judge(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], 0.05).unwrap();
        assert!((j.difference - 3.0).abs() < 1e-12);
        assert!((j.half_width - 3.513_101_242_759_782_7).abs() < 1e-9, "{}", j.half_width);
        assert!((j.p - 0.066_743_474_742_617_26).abs() < 1e-9, "{}", j.p);
        // Only the committed spread counts: the reproduced values' own spread does not widen it.
        assert_eq!(judge(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0], 0.05).unwrap().p, j.p);
        assert!(judge(&[1.0], &[1.0], 0.05).is_none(), "one seed: no spread");
        assert!(judge(&[2.0, 2.0], &[2.0, 2.0], 0.05).is_none(), "no spread");
        assert!(judge(&[3.8e-6, 3.8e-6 + 7e-22], &[3.8e-6], 0.05).is_none(), "a spread at rounding level is none");
        assert!(judge(&[1.0, 2.0], &[], 0.05).is_none());
        assert_eq!(judge(&[1.0, 2.0], &[1.5, f64::NAN], 0.05).unwrap().p, 0.0, "a reproduced NaN fails");
    }

    /// The share of `sims` simulated reproductions that fail somewhere among `rows` rows: the record
    /// draws n values per row from N(0, 1), the reproduction m from N(shift, 1) (correlated with the
    /// record's value of the same seed by `rho`); a row fails at α/rows (`bonferroni`) or at α.
    fn simulate(rows: usize, n: usize, shift: f64, rho: f64, bonferroni: bool, sims: usize, seed: u64) -> f64 {
        let mut rng = Normals::new(seed);
        let level = if bonferroni { ALPHA / rows as f64 } else { ALPHA };
        let mut failed = 0usize;
        for _ in 0..sims {
            let mut any = false;
            for r in 0..rows {
                let x: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
                let row_shift = if r == 0 { shift } else { 0.0 };
                let y: Vec<f64> =
                    x.iter().map(|xi| row_shift + rho * xi + (1.0 - rho * rho).sqrt() * rng.normal()).collect();
                any |= judge(&x, &y, level).unwrap().p < level;
            }
            failed += usize::from(any);
        }
        failed as f64 / sims as f64
    }

    /// The stated error rate, by simulation (10,000 reproductions of 20 rows of 5 seeds: Monte-Carlo
    /// standard error 0.22 % at 5 %): a faithful reproduction fails at most 5 % of the time, also when
    /// its seeds are correlated with the record's; the same rule without Bonferroni fails about 64 %
    /// of faithful reproductions (so the check can fail); a metric moved by 8 standard deviations of
    /// the seeds is caught.
    #[test]
    fn a_faithful_reproduction_fails_at_most_alpha_and_a_moved_metric_is_caught() {
        let faithful = simulate(20, 5, 0.0, 0.0, true, 10_000, 1);
        assert!(faithful <= ALPHA + 0.005 && faithful > 0.03, "family-wise false FAIL rate {faithful}");
        let correlated = simulate(20, 5, 0.0, 0.8, true, 10_000, 2);
        assert!(correlated <= faithful, "correlated seeds fail less: {correlated} vs {faithful}");
        let naive = simulate(20, 5, 0.0, 0.0, false, 10_000, 3);
        assert!(naive > 0.5, "without the correction, faithful reproductions fail {naive} of the time");
        let moved = simulate(20, 5, 8.0, 0.0, true, 2_000, 4);
        eprintln!("false FAIL: {faithful} (seeds correlated 0.8: {correlated}); without Bonferroni: {naive}; moved 8 sd caught: {moved}");
        assert!(moved > 0.9, "a metric moved by 8 sd is caught {moved} of the time");
    }

    fn runs(loss: [f64; 6], floor: f64) -> DataFrame {
        df!(
            "label" => ["a,seed=0", "a,seed=1", "a,seed=2", "b,seed=0", "b,seed=1", "b,seed=2"],
            "variant" => ["a", "a", "a", "b", "b", "b"],
            "final_loss" => loss,
            "fid_floor" => [floor; 6],
        )
        .unwrap()
    }

    #[test]
    fn rows_per_variant_with_untestable_reference_values() {
        let record = runs([1.0, 1.1, 0.9, 2.0, 2.2, 1.8], 25.8);
        let close = runs([1.05, 1.0, 0.95, 2.1, 1.9, 2.0], 25.9);
        let checks = compare_metrics(&record, &close, ALPHA);
        let row = |v: &str, m: &str| checks.iter().find(|c| c.run == v && c.what == m).unwrap().clone();
        assert!(row("a", "final_loss").pass && row("b", "final_loss").pass && row("a", "final_loss").tested);
        assert_eq!(row("a", "final_loss").kind, Kind::Statistical);
        // The floor is the same for every seed: no spread to judge a change of 0.1 by.
        assert!(!row("a", "fid_floor").tested && row("a", "fid_floor").result() == "n/a");
        // Moved by 2 (20 sd of a's seeds): fails; K = 2 testable rows.
        let moved = runs([3.0, 3.1, 2.9, 2.0, 2.2, 1.8], 25.8);
        let checks = compare_metrics(&record, &moved, ALPHA);
        let a = checks.iter().find(|c| c.run == "a" && c.what == "final_loss").unwrap();
        assert!(!a.pass && a.tested, "{a:?}");
        assert!(a.tolerance.as_deref().unwrap().starts_with("±"), "{a:?}");
    }

    #[test]
    fn verdicts_agree_on_decided_comparisons_and_ignore_an_undecided_best() {
        let table = |best: [&str; 2], decided: [bool; 2], diff: [f64; 2]| {
            df!(
                "metric" => ["bpd", "fid"],
                "best" => best,
                "variant" => ["cos", "cos"],
                "baseline" => ["lin", "lin"],
                "diff_mean" => diff,
                "decided" => decided,
            )
            .unwrap()
        };
        let record = table(["cos", "lin"], [true, false], [-0.2, 0.1]);
        let same = table(["cos", "cos"], [true, false], [-0.19, -0.05]);
        assert!(compare_verdicts(&record, Some(&same)).iter().all(|c| c.pass));
        let flipped = table(["cos", "lin"], [false, false], [-0.05, 0.1]);
        let checks = compare_verdicts(&record, Some(&flipped));
        let bpd = checks.iter().find(|c| c.what == "bpd").unwrap();
        assert!(!bpd.pass && bpd.committed == "cos best; cos < lin" && bpd.reproduced == "undecided", "{bpd:?}");
        assert!(compare_verdicts(&record, None).iter().any(|c| !c.pass));
    }
}
