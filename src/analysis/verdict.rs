//! The verdicts: per ranked metric, the best variant, its seed-paired difference against the
//! baseline, whether that difference is decided once the number of comparisons is accounted for, and
//! when it is not, how many seeds would decide it.
//!
//! The family is every (metric, variant) comparison against the baseline of the metrics the
//! analysis ranks. With `[analysis] primary`, the primary metric's comparisons are decided at α
//! (Holm among themselves when there are several variants) and every comparison, the primary's
//! included, is also corrected by Holm over the whole family for the secondary verdicts; without
//! `primary` every verdict is Holm-corrected over the whole family. A sequential experiment decides
//! its primary comparison by the safe t test's e-value (`sequential`) instead of a p-value.
use super::decide::{holm, paired_p_value, seeds_needed, TARGET_POWER};
use super::sequential::{replay, Look};
use super::stats::Summary;
use super::variance::{decompose, Decomposition};
use crate::eval::metric::{self, Role};
use crate::experiment::Question;

/// One comparison of the family: `variant` − baseline in `metric`.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub metric: String,
    pub variant: String,
    pub diff: Summary,
    /// The paired t test's two-sided p-value (None below two seeds).
    pub p: Option<f64>,
    /// Holm-adjusted over the whole family.
    pub p_holm: Option<f64>,
    /// The level its decision is made at before correction: α for the primary's, and the level the
    /// seeds-needed column plans for (α divided by the comparisons it is corrected over, Holm's
    /// first and strictest step).
    pub plan_alpha: f64,
    pub decided: bool,
    /// A sequential primary comparison: its looks, the last its stopping point.
    pub looks: Vec<Look>,
    /// The difference the seeds-needed column plans for (`min_effect`, else the observed one), and
    /// the seeds per variant it needs at 80 % power; None when decided or not computable.
    pub planned_effect: Option<f64>,
    pub seeds_needed: SeedsNeeded,
    /// From evaluation replicates: the split of the differences' variance, and the seeds needed
    /// if evaluation noise were gone (training variance alone).
    pub variance: Option<Decomposition>,
    pub seeds_needed_exact_evaluation: Option<SeedsNeeded>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SeedsNeeded {
    /// Decided already.
    Decided,
    Seeds(usize),
    /// A sequential primary: the fixed-n number (or the fewest seeds at which the safe rule can decide
    /// at all, if more) is a lower bound on what the anytime-valid rule needs.
    AtLeast(usize),
    /// More than `decide::MAX_SEEDS`, or no difference to detect.
    Unreachable,
    /// One seed, or the same difference at every seed: no spread to plan with.
    NoSpread,
}

/// One row of the verdict table: a metric's best variant and the comparison that speaks for it (the
/// best against the baseline, or, when the baseline is best, the runner-up against it).
#[derive(Debug, Clone)]
pub struct Verdict {
    pub metric: String,
    pub primary: bool,
    pub best: String,
    pub best_mean: f64,
    pub baseline_is_best: bool,
    pub comparison: Option<Comparison>,
}

/// Per comparison (variant, metric): the seed-ordered paired differences (for the sequential rule),
/// and the differences by seed and evaluation replicate (for the variance decomposition).
pub trait Differences {
    fn by_seed(&self, variant: &str, metric: &str) -> Vec<f64>;
    fn by_seed_and_replicate(&self, variant: &str, metric: &str) -> Vec<Vec<f64>>;
}

/// The comparisons of the ranked metrics, with p-values, Holm's correction, the sequential rule,
/// the seeds needed and where their variance comes from.
pub fn comparisons(
    pairs: &[(String, String, Summary)],
    question: &Question,
    data: &dyn Differences,
) -> Vec<Comparison> {
    let ranked: Vec<&str> = metric::all().into_iter().filter(|m| m.role == Role::Model).map(|m| m.name).collect();
    let mut out: Vec<Comparison> = pairs
        .iter()
        .filter(|(_, m, _)| ranked.contains(&m.as_str()))
        // Identical in every run (variants that share their training compared on a training number):
        // nothing to decide.
        .filter(|(_, _, d)| !(d.mean == 0.0 && d.std == 0.0))
        .map(|(v, m, d)| Comparison {
            metric: m.clone(),
            variant: v.clone(),
            diff: d.clone(),
            p: paired_p_value(d.n, d.mean, d.std),
            p_holm: None,
            plan_alpha: question.alpha,
            decided: false,
            looks: Vec::new(),
            planned_effect: None,
            seeds_needed: SeedsNeeded::NoSpread,
            variance: decompose(&data.by_seed_and_replicate(v, m)),
            seeds_needed_exact_evaluation: None,
        })
        .collect();
    let tested: Vec<usize> = (0..out.len()).filter(|&i| out[i].p.is_some()).collect();
    let family = tested.len().max(1);
    let adjusted = holm(&tested.iter().map(|&i| out[i].p.expect("tested")).collect::<Vec<_>>());
    for (&i, a) in tested.iter().zip(adjusted) {
        out[i].p_holm = Some(a);
    }
    let primary = question.primary.as_deref();
    let primary_tested: Vec<usize> =
        tested.iter().copied().filter(|&i| Some(out[i].metric.as_str()) == primary).collect();
    let k_primary = out.iter().filter(|c| Some(c.metric.as_str()) == primary).count();
    let primary_adjusted = holm(&primary_tested.iter().map(|&i| out[i].p.expect("tested")).collect::<Vec<_>>());
    for c in out.iter_mut() {
        let is_primary = Some(c.metric.as_str()) == primary;
        c.plan_alpha = if is_primary {
            question.alpha / primary_tested.len().max(1) as f64
        } else {
            question.alpha / family as f64
        };
        c.decided = c.p_holm.is_some_and(|p| p <= question.alpha);
        if is_primary {
            if let Some(design) = &question.sequential {
                // k comparisons decided by e-values: each at α/k (Bonferroni).
                let k = k_primary.max(1) as f64;
                c.looks = replay(&data.by_seed(&c.variant, &c.metric), design, question.alpha / k);
                c.decided = c.looks.last().is_some_and(|l| l.decided);
            }
        }
    }
    if question.sequential.is_none() {
        for (&i, a) in primary_tested.iter().zip(primary_adjusted) {
            out[i].decided = a <= question.alpha;
        }
    }
    for c in out.iter_mut() {
        let effect = question.min_effect.get(&c.metric).copied().unwrap_or(c.diff.mean.abs());
        c.planned_effect = Some(effect);
        c.seeds_needed = if c.decided {
            SeedsNeeded::Decided
        } else if !(c.diff.n >= 2 && c.diff.std.is_finite() && c.diff.std > 0.0) {
            // One seed, or the same difference at every seed.
            SeedsNeeded::NoSpread
        } else {
            needed(effect, c.diff.std, c.plan_alpha)
        };
        if let (false, SeedsNeeded::Seeds(n)) = (c.looks.is_empty(), &c.seeds_needed) {
            let k = k_primary.max(1) as f64;
            c.seeds_needed = SeedsNeeded::AtLeast((*n).max(super::sequential::earliest_decision(k / question.alpha)));
        }
        if c.seeds_needed != SeedsNeeded::Decided {
            c.seeds_needed_exact_evaluation =
                c.variance.as_ref().map(|v| needed(effect, v.training().sqrt(), c.plan_alpha));
        }
    }
    out
}

fn needed(effect: f64, sd: f64, alpha: f64) -> SeedsNeeded {
    if sd == 0.0 {
        // No training variance left: two seeds decide any difference the evaluation resolves.
        return SeedsNeeded::Seeds(2);
    }
    match seeds_needed(effect / sd, alpha, TARGET_POWER) {
        Some(n) => SeedsNeeded::Seeds(n),
        None => SeedsNeeded::Unreachable,
    }
}

impl Comparison {
    /// Whether more samples (less evaluation noise) or more seeds would help more: "samples" when
    /// removing the evaluation noise would at least halve the seeds needed.
    pub fn more_samples_help(&self) -> Option<bool> {
        match (&self.seeds_needed, &self.seeds_needed_exact_evaluation) {
            (SeedsNeeded::Seeds(now) | SeedsNeeded::AtLeast(now), Some(SeedsNeeded::Seeds(exact))) => {
                Some(2 * exact <= *now)
            }
            (SeedsNeeded::Unreachable, Some(SeedsNeeded::Seeds(_))) => Some(true),
            (SeedsNeeded::Unreachable | SeedsNeeded::Seeds(_) | SeedsNeeded::AtLeast(_), Some(_)) => Some(false),
            _ => None,
        }
    }
}

/// Per ranked metric, in the registry's order: the best variant by mean and the comparison that
/// speaks for it. `summary` holds (variant, metric, summary); `order` the variants.
pub fn verdicts(
    summary: &[(String, String, Summary)],
    comparisons: &[Comparison],
    order: &[String],
    baseline: &str,
    question: &Question,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    for m in metric::all().into_iter().filter(|m| m.role == Role::Model) {
        let mean_of = |v: &String| {
            summary.iter().find(|(sv, sm, _)| sv == v && sm == m.name).map(|(_, _, s)| (v.clone(), s.mean))
        };
        let mut ranked: Vec<(String, f64)> = order.iter().filter_map(mean_of).collect();
        ranked.sort_by(|a, b| if m.lower_is_better() { a.1.total_cmp(&b.1) } else { b.1.total_cmp(&a.1) });
        let Some((best, best_mean)) = ranked.first().cloned() else { continue };
        if ranked.len() > 1 && ranked.iter().all(|r| r.1 == best_mean) {
            continue;
        }
        let baseline_is_best = best == baseline;
        let speaker = if baseline_is_best { ranked.get(1).map(|r| r.0.clone()) } else { Some(best.clone()) };
        let comparison =
            speaker.and_then(|v| comparisons.iter().find(|c| c.variant == v && c.metric == m.name).cloned());
        out.push(Verdict {
            metric: m.name.to_string(),
            primary: question.primary.as_deref() == Some(m.name),
            best,
            best_mean,
            baseline_is_best,
            comparison,
        });
    }
    // The primary question first.
    out.sort_by_key(|v| !v.primary);
    out
}

/// `x` to `digits` significant digits (scientific notation below 10⁻³ and from 10⁶).
pub fn sig(x: f64, digits: usize) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "-".into()
        } else if x > 0.0 {
            "∞".into()
        } else {
            "−∞".into()
        };
    }
    if x == 0.0 {
        return "0".into();
    }
    let magnitude = x.abs().log10().floor() as i32;
    if !(-3..6).contains(&magnitude) {
        return format!("{:.*e}", digits.saturating_sub(1), x);
    }
    let decimals = (digits as i32 - 1 - magnitude).max(0) as usize;
    format!("{x:.decimals$}")
}

/// A p-value for people: 3 significant digits, "< 0.0001" below.
pub fn p_text(p: f64) -> String {
    if p < 1e-4 {
        "< 0.0001".into()
    } else {
        sig(p, 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::stats::summarize;
    use crate::experiment::SeedDesign;

    struct NoData;
    impl Differences for NoData {
        fn by_seed(&self, _: &str, _: &str) -> Vec<f64> {
            Vec::new()
        }
        fn by_seed_and_replicate(&self, _: &str, _: &str) -> Vec<Vec<f64>> {
            Vec::new()
        }
    }

    /// The same differences for every comparison, one replicate each unless `replicates` are given.
    struct Fixed(Vec<f64>);
    impl Differences for Fixed {
        fn by_seed(&self, _: &str, _: &str) -> Vec<f64> {
            self.0.clone()
        }
        fn by_seed_and_replicate(&self, _: &str, _: &str) -> Vec<Vec<f64>> {
            self.0.iter().map(|&d| vec![d, d + 0.5, d - 0.5]).collect()
        }
    }

    fn pair(variant: &str, metric: &str, diffs: &[f64]) -> (String, String, Summary) {
        (variant.into(), metric.into(), summarize(diffs))
    }

    #[test]
    fn significant_digits() {
        assert_eq!(sig(145.02821, 4), "145.0");
        assert_eq!(sig(-13.19844, 4), "-13.20");
        assert_eq!(sig(0.018794, 4), "0.01879");
        assert_eq!(sig(1521.5945, 4), "1522");
        assert_eq!(sig(2.5e-5, 3), "2.50e-5");
        assert_eq!(sig(0.0, 4), "0");
        assert_eq!(sig(f64::NAN, 4), "-");
        assert_eq!(p_text(0.00001), "< 0.0001");
        assert_eq!(p_text(0.04321), "0.0432");
    }

    /// Holm over the family, the primary decided at α on its own, seeds needed by hand.
    #[test]
    fn the_family_is_corrected_and_the_primary_is_not() {
        // fid: differences −1.9, −2.1, −2.0, −2.2, −1.8 (mean −2, sd 0.158): t = −28.3 on 4 df, p ≈ 9e-6.
        // bpd: 0.1, −0.3, 0.5, 0.2 (mean 0.125, sd 0.33): p = 0.50.
        // kid: 1, 2, 3 (mean 2, sd 1, t = 2√3 on 2 df): p = 1 − √(12/14) = 0.07418; Holm × 2 = 0.148.
        // recall: 0.30, 0.32 (mean 0.31, sd 0.01414, t = 31 on 1 df): p = 1 − 2·atan(31)/π = 0.02053;
        // alone it is decided at 5 %; corrected (second smallest of four: × 3 = 0.0616) it is not.
        let pairs = vec![
            pair("b", "fid", &[-1.9, -2.1, -2.0, -2.2, -1.8]),
            pair("b", "kid", &[1.0, 2.0, 3.0]),
            pair("b", "recall", &[0.30, 0.32]),
            pair("b", "bpd", &[0.1, -0.3, 0.5, 0.2]),
            pair("b", "fid_floor", &[0.0, 1.0]),
        ];
        let none = NoData;
        let q = Question::default();
        let c = comparisons(&pairs, &q, &none);
        assert_eq!(c.len(), 4, "floors are not in the family");
        let get = |m: &str| c.iter().find(|x| x.metric == m).unwrap();
        let p_recall = 1.0 - 2.0 * 31f64.atan() / std::f64::consts::PI;
        assert!((get("recall").p.unwrap() - p_recall).abs() < 1e-12);
        // Sorted p: fid (×4), recall (×3), kid (×2), bpd (×1).
        assert!((get("recall").p_holm.unwrap() - 3.0 * p_recall).abs() < 1e-12);
        let p_kid = 1.0 - (12.0f64 / 14.0).sqrt();
        assert!((get("kid").p_holm.unwrap() - 2.0 * p_kid).abs() < 1e-12);
        assert!(get("fid").decided && !get("recall").decided && !get("kid").decided && !get("bpd").decided);
        assert_eq!(get("fid").seeds_needed, SeedsNeeded::Decided);

        // recall as the primary: decided at 5 % on its own; the others still corrected over all four.
        let q = Question { primary: Some("recall".into()), ..Question::default() };
        let c = comparisons(&pairs, &q, &none);
        let get = |m: &str| c.iter().find(|x| x.metric == m).unwrap();
        assert!(get("recall").decided && get("fid").decided && !get("kid").decided);
        assert_eq!(get("recall").plan_alpha, 0.05);
        assert_eq!(get("kid").plan_alpha, 0.05 / 4.0);

        // Seeds needed for kid: d = 2/1 = 2 at α = 0.05/4 and 80 % power.
        let SeedsNeeded::Seeds(n) = get("kid").seeds_needed else { panic!("{:?}", get("kid").seeds_needed) };
        assert_eq!(Some(n), seeds_needed(2.0, 0.0125, 0.8));
        assert!((4..=8).contains(&n), "{n}");
        // A min_effect replaces the observed difference: 0.5 of an sd of 1 at α/4.
        let q = Question { min_effect: [("kid".to_string(), 0.5)].into(), ..Question::default() };
        let c = comparisons(&pairs, &q, &none);
        let kid = c.iter().find(|x| x.metric == "kid").unwrap();
        assert_eq!(kid.planned_effect, Some(0.5));
        assert_eq!(kid.seeds_needed, SeedsNeeded::Seeds(seeds_needed(0.5, 0.0125, 0.8).unwrap()));
    }

    #[test]
    fn a_sequential_primary_is_decided_by_its_e_value() {
        // Differences of 1 ± 0.1: t is large from the start, but E_n is at most (1 + n)^{(n−1)/2} at
        // g = 1 (4 at three seeds, 11.2 at four), so the first look that can reach 20 is the fifth seed.
        let d = vec![1.0, 1.1, 0.9, 1.05, 0.95, 1.0];
        let pairs = vec![(String::from("b"), String::from("fid"), summarize(&d))];
        let q = Question {
            primary: Some("fid".into()),
            sequential: Some(SeedDesign { start: 3, max: 12, step: 1 }),
            ..Question::default()
        };
        let c = comparisons(&pairs, &q, &Fixed(d.clone()));
        let seeds: Vec<usize> = c[0].looks.iter().map(|l| l.seeds).collect();
        assert_eq!(seeds, [3, 4, 5], "{:?}", c[0].looks);
        assert!(c[0].decided && c[0].looks[2].e_value >= 20.0 && c[0].looks[1].e_value < 11.2);
    }

    #[test]
    fn the_verdict_speaks_for_the_best() {
        let summary = vec![
            (String::from("a"), String::from("fid"), summarize(&[10.0, 12.0])),
            (String::from("b"), String::from("fid"), summarize(&[8.0, 9.0])),
            (String::from("a"), String::from("recall"), summarize(&[0.5, 0.6])),
            (String::from("b"), String::from("recall"), summarize(&[0.4, 0.5])),
        ];
        let pairs = vec![pair("b", "fid", &[-2.0, -3.0]), pair("b", "recall", &[-0.1, -0.1])];
        let q = Question { primary: Some("recall".into()), ..Question::default() };
        let c = comparisons(&pairs, &q, &NoData);
        let v = verdicts(&summary, &c, &["a".into(), "b".into()], "a", &q);
        assert_eq!(v[0].metric, "recall", "the primary first");
        assert!(v[0].baseline_is_best && v[0].comparison.as_ref().unwrap().variant == "b");
        assert_eq!((v[1].metric.as_str(), v[1].best.as_str()), ("fid", "b"));
    }

    #[test]
    fn evaluation_replicates_split_the_variance() {
        // Differences 1, 2, 3 (variance 1 between seeds); each seed's replicates d, d + 0.5, d − 0.5
        // (within variance 0.25). Training variance 0.75: seeds needed at d = 2/√0.75 instead of 2/1.
        let d = vec![1.0, 2.0, 3.0];
        let pairs = vec![pair("b", "kid", &d)];
        let c = comparisons(&pairs, &Question::default(), &Fixed(d));
        let v = c[0].variance.as_ref().unwrap();
        assert!((v.evaluation - 0.25).abs() < 1e-12 && (v.total - 1.0).abs() < 1e-12, "{v:?}");
        assert!((v.evaluation_share() - 0.25).abs() < 1e-12);
        let exact = seeds_needed(2.0 / 0.75f64.sqrt(), 0.05, 0.8).unwrap();
        assert_eq!(c[0].seeds_needed_exact_evaluation, Some(SeedsNeeded::Seeds(exact)));
        assert_eq!(c[0].seeds_needed, SeedsNeeded::Seeds(seeds_needed(2.0, 0.05, 0.8).unwrap()));
        // A quarter of the variance is evaluation noise: removing it does not halve the seeds.
        assert_eq!(c[0].more_samples_help(), Some(false));
    }
}
