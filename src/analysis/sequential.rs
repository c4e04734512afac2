//! Sequential seeds: deciding the primary comparison while seeds are added, with a type-I error that
//! holds over every look, however many looks are taken and whenever the experiment stops.
//!
//! The rule is the safe (anytime-valid) paired t test: the Bayes factor of the differences with the
//! right-Haar prior 1/σ on their scale under both hypotheses and a normal prior δ ~ N(0, g) on the
//! standardised mean difference under the alternative,
//!
//!   E_n = (1 + n g)^{−1/2} · [(1 + t²/(ν(1 + n g))) / (1 + t²/ν)]^{−(ν+1)/2},  ν = n − 1,
//!
//! with t the paired t statistic of the first n differences (Rouder et al. 2009, eq. 1 at a fixed g).
//! It is the likelihood ratio of the t statistics' sequence, which does not depend on σ, so under equal
//! means (E_n) is a nonnegative martingale with E_1 = 1 (Pérez-Ortiz, Lardy, de Heide & Grünwald 2024,
//! "E-statistics, group invariance and anytime-valid testing"; Grünwald, de Heide & Koolen 2024, "Safe
//! testing"). Ville's inequality then gives P(E_n ≥ 1/α for some n) ≤ α: deciding at the first look
//! where E_n ≥ 1/α keeps the type-I error at most α over all looks. `tests::simulation` measures it.
use super::stats::student_t_quantile;
use crate::experiment::SeedDesign as Design;

/// The prior variance g of the standardised difference under the alternative: a unit-information
/// prior, under which a difference of about one standard deviation is expected.
pub const PRIOR_G: f64 = 1.0;

/// The e-value E_n of n paired differences with this mean and standard deviation (module comment);
/// `None` below two differences or without spread.
pub fn e_value(n: usize, mean: f64, std: f64, g: f64) -> Option<f64> {
    // Differences without spread (a metric that is constant per seed) leave t undefined and break
    // the normal model the rule's guarantee rests on: no evidence, as for the fixed-n test.
    if n < 2 || !mean.is_finite() || !std.is_finite() || std <= 0.0 {
        return None;
    }
    let nu = (n - 1) as f64;
    let t2 = (mean / (std / (n as f64).sqrt())).powi(2);
    let a = 1.0 + n as f64 * g;
    let ln = -0.5 * a.ln() - (nu + 1.0) / 2.0 * ((1.0 + t2 / (nu * a)).ln() - (1.0 + t2 / nu).ln());
    Some(ln.exp())
}

/// One look of a sequential comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Look {
    pub seeds: usize,
    pub mean: f64,
    pub e_value: f64,
    pub decided: bool,
}

/// Mean and standard deviation (divisor n − 1) of `x`, n ≥ 2.
fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    (mean, (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt())
}

/// The fewest seeds at which E_n can reach `threshold` at all: E_n tends to (1 + n g)^{(n−1)/2} as
/// |t| grows (5 at g = 1 and a threshold of 20).
pub fn earliest_decision(threshold: f64) -> usize {
    (2..10_000).find(|&n| ((n - 1) as f64 / 2.0) * (1.0 + n as f64 * PRIOR_G).ln() >= threshold.ln()).unwrap_or(10_000)
}

/// Applies the rule to differences in seed order at the design's looks (those it has the seeds for):
/// the looks taken, the last one the stopping point (decided, or the design's or the data's end).
/// `alpha` is the level of this one comparison: α/k when k comparisons are decided by the rule
/// (Bonferroni over e-values: P(any E ≥ k/α) ≤ k · α/k).
pub fn replay(differences: &[f64], design: &Design, alpha: f64) -> Vec<Look> {
    let mut out = Vec::new();
    for n in design.looks().into_iter().filter(|&n| n <= differences.len()) {
        let (mean, std) = mean_std(&differences[..n]);
        let e = e_value(n, mean, std, PRIOR_G).unwrap_or(1.0);
        let decided = e >= 1.0 / alpha;
        out.push(Look { seeds: n, mean, e_value: e, decided });
        if decided {
            break;
        }
    }
    out
}

/// The rule the sequential one replaces, kept to show in the simulation why: stop as soon as the 95 %
/// interval of the mean difference excludes zero (|t| > t₀.₉₇₅,ₙ₋₁ at a look).
pub struct NaiveRule {
    /// Each look's number of seeds and its two-sided 95 % critical value.
    looks: Vec<(usize, f64)>,
}

impl NaiveRule {
    pub fn new(design: &Design) -> Self {
        let looks = design.looks().into_iter().map(|n| (n, student_t_quantile(0.975, (n - 1) as f64))).collect();
        NaiveRule { looks }
    }

    /// The look it stops at, if any.
    pub fn stop(&self, differences: &[f64]) -> Option<usize> {
        self.looks.iter().filter(|(n, _)| *n <= differences.len()).find_map(|&(n, c)| {
            let (mean, std) = mean_std(&differences[..n]);
            (mean.abs() > c * std / (n as f64).sqrt()).then_some(n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::stats::simulate::Normals;
    use crate::analysis::stats::summarize;

    #[test]
    fn e_value_by_hand() {
        // n = 2, t = 2 (differences 1 and 3), g = 1: a = 3, ν = 1:
        // 3^{−1/2} · (1 + 4/3)^{−1} / (1 + 4)^{−1} = (1/√3) · (3/7) · 5 = 15/(7√3) = 1.237179…
        let e = e_value(2, 2.0, 2f64.sqrt(), 1.0).unwrap();
        assert!((e - 15.0 / (7.0 * 3f64.sqrt())).abs() < 1e-12, "{e}");
        // t = 0: the evidence is (1 + n g)^{−1/2} against the alternative.
        assert!((e_value(5, 0.0, 1.0, 1.0).unwrap() - 6f64.powf(-0.5)).abs() < 1e-12);
        assert_eq!(e_value(3, 0.5, 0.0, 1.0), None);
        assert_eq!(e_value(1, 0.5, f64::NAN, 1.0), None);
        // (1 + n)^{(n−1)/2}: 4 at n = 3, 11.2 at 4, 36 at 5; 40 (two comparisons at 5 %) needs 6 (76).
        assert_eq!((earliest_decision(20.0), earliest_decision(40.0), earliest_decision(4.0)), (5, 6, 3));
    }

    /// The e-value as the Bayes factor of the data themselves, integrated numerically over σ (prior
    /// 1/σ) and δ (prior N(0, g)): ∫∫ Π N(xᵢ; δσ, σ²) N(δ; 0, g) σ⁻¹ dδ dσ / ∫ Π N(xᵢ; 0, σ²) σ⁻¹ dσ.
    /// Nothing of the t statistic is used, so this checks the closed form independently.
    #[test]
    fn e_value_is_the_bayes_factor_of_the_data() {
        let x = [1.0, 2.0, 0.5, 1.7];
        let g = 1.0;
        let log_lik = |mu: f64, sigma: f64| -> f64 {
            x.iter()
                .map(|xi| -0.5 * ((xi - mu) / sigma).powi(2) - sigma.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln())
                .sum()
        };
        // σ = e^s, dσ/σ = ds: the 1/σ prior becomes flat in s.
        let (s_lo, s_hi, ns) = (-8.0, 6.0, 1400);
        let (d_lo, d_hi, nd) = (-12.0, 12.0, 2400);
        let hs = (s_hi - s_lo) / ns as f64;
        let hd = (d_hi - d_lo) / nd as f64;
        let (mut num, mut den) = (0.0, 0.0);
        for i in 0..=ns {
            let sigma = (s_lo + i as f64 * hs).exp();
            den += log_lik(0.0, sigma).exp() * hs;
            for j in 0..=nd {
                let delta = d_lo + j as f64 * hd;
                let prior = (-delta * delta / (2.0 * g)).exp() / (2.0 * std::f64::consts::PI * g).sqrt();
                num += log_lik(delta * sigma, sigma).exp() * prior * hs * hd;
            }
        }
        let s = summarize(&x);
        let closed = e_value(x.len(), s.mean, s.std, g).unwrap();
        assert!((num / den - closed).abs() < 1e-4 * closed, "integrated {} vs closed form {closed}", num / den);
    }

    /// The share of `sims` simulated sequential experiments (differences N(effect, 1)) that the safe
    /// rule and the naive rule decide.
    fn simulate(design: &Design, effect: f64, sims: usize, seed: u64) -> (f64, f64) {
        let mut rng = Normals::new(seed);
        let rule = NaiveRule::new(design);
        let (mut safe, mut naive) = (0usize, 0usize);
        for _ in 0..sims {
            let d: Vec<f64> = (0..design.max).map(|_| effect + rng.normal()).collect();
            safe += usize::from(replay(&d, design, 0.05).last().is_some_and(|l| l.decided));
            naive += usize::from(rule.stop(&d).is_some());
        }
        (safe as f64 / sims as f64, naive as f64 / sims as f64)
    }

    /// The naive rule stops exactly where the report's 95 % interval (`summarize`) first excludes zero.
    #[test]
    fn the_naive_rule_is_the_interval_excluding_zero() {
        let design = Design { start: 3, max: 12, step: 1 };
        let rule = NaiveRule::new(&design);
        let mut rng = Normals::new(3);
        for _ in 0..200 {
            let d: Vec<f64> = (0..12).map(|_| 0.5 + rng.normal()).collect();
            let by_interval = design.looks().into_iter().find(|&n| {
                let s = summarize(&d[..n]);
                s.ci_low > 0.0 || s.ci_high < 0.0
            });
            assert_eq!(rule.stop(&d), by_interval, "{d:?}");
        }
    }

    #[test]
    fn the_normals_are_standard() {
        let mut rng = Normals::new(7);
        let x: Vec<f64> = (0..200_000).map(|_| rng.normal()).collect();
        let s = summarize(&x);
        // Mean within 4 standard errors (0.0089) of 0; sd within 0.01 of 1.
        assert!(s.mean.abs() < 0.009 && (s.std - 1.0).abs() < 0.01, "{s:?}");
    }

    /// The stopping rule's error rate, by simulation: 10,000 experiments of the design of issue 34's
    /// example (looks after 3, 4, …, 12 seeds). The Monte-Carlo standard error of a rate near 5 % over
    /// 10,000 experiments is √(0.05·0.95/10⁴) = 0.0022; a rate is "at most 5 %" when it is below
    /// 0.05 + 3 × 0.0022 = 0.0565.
    #[test]
    fn simulation() {
        let design = Design { start: 3, max: 12, step: 1 };
        let sims = 10_000;
        let mc = (0.05f64 * 0.95 / sims as f64).sqrt();
        let (safe_null, naive_null) = simulate(&design, 0.0, sims, 1);
        let (safe_power, naive_power) = simulate(&design, 1.0, sims, 2);
        println!(
            "sequential seeds {:?}, α = 0.05, {sims} simulated experiments each (Monte-Carlo s.e. {mc:.4} at 5 %):\n  \
             equal means: the safe t test decides {safe_null:.4}, the naive rule (stop when the 95 % interval excludes zero) {naive_null:.4}\n  \
             a difference of 1 SD: the safe t test decides {safe_power:.4} (power), the naive rule {naive_power:.4}",
            design.looks()
        );
        assert!(safe_null <= 0.05 + 3.0 * mc, "the safe rule decides {safe_null} of null experiments");
        // The naive rule looks ten times at the 5 % level: its error is far above 5 %, which this
        // simulation detects; were the safe rule as bad, the assertion above would fail the same way.
        assert!(naive_null > 0.05 + 3.0 * mc, "the naive rule decides {naive_null}: the simulation cannot tell");
        // And the safe rule is not trivially safe: it does decide real differences.
        assert!(safe_power > 0.3, "power {safe_power}");
    }
}
