//! Deciding a paired comparison, and what deciding would take: the paired t test's two-sided
//! p-value, Holm's step-down correction over a family of tests, and the power of the paired t test
//! (through the noncentral t distribution) with the number of seeds it needs.
use super::stats::{ln_gamma, student_t_cdf, student_t_quantile};

/// The power the seeds-needed column aims at.
pub const TARGET_POWER: f64 = 0.8;
/// Seeds-needed answers above this are reported as "more than".
pub const MAX_SEEDS: usize = 1_000_000;

/// The two-sided p-value of the paired t test of a zero mean difference, from n differences with
/// this mean and standard deviation (divisor n − 1); `None` below two differences and for
/// differences without spread (all equal), where the t statistic is undefined: two seeds that both
/// refill one cluster more are no evidence of a difference.
pub fn paired_p_value(n: usize, mean: f64, std: f64) -> Option<f64> {
    if n < 2 || !mean.is_finite() || !std.is_finite() || std <= 0.0 {
        return None;
    }
    let t = mean / (std / (n as f64).sqrt());
    Some((2.0 * student_t_cdf(-t.abs(), (n - 1) as f64)).min(1.0))
}

/// Holm's (1979) step-down adjusted p-values, in the order given: with p₍₁₎ ≤ … ≤ p₍ₘ₎ sorted,
/// p̃₍ᵢ₎ = max_{j ≤ i} min(1, (m − j + 1) p₍ⱼ₎). A test is rejected at level α when p̃ ≤ α; the
/// family-wise error rate is at most α whatever the dependence between the tests.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// Φ(x), the standard normal distribution function, as ½·erfc(−x/√2) through the regularised
/// incomplete gamma function: erf(z) = P(½, z²).
pub fn normal_cdf(x: f64) -> f64 {
    let z2 = x * x / 2.0;
    let half_erf = 0.5 * gamma_p(0.5, z2);
    if x >= 0.0 {
        0.5 + half_erf
    } else {
        0.5 - half_erf
    }
}

/// The regularised lower incomplete gamma function P(a, x): its series below a + 1, else one minus
/// the continued fraction of Q (Lentz's method).
fn gamma_p(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let ln_front = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut term, mut sum, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..1000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-17 {
                break;
            }
        }
        return sum * ln_front.exp();
    }
    const TINY: f64 = 1e-300;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..1000 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        d = 1.0 / if d.abs() < TINY { TINY } else { d };
        c = b + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    1.0 - ln_front.exp() * h
}

/// The power of the two-sided paired t test at level `alpha` with n pairs when the true mean
/// difference is `effect` standard deviations of a difference (Cohen's d_z).
///
/// T = (Z + λ)/U with λ = d√n, Z standard normal and U = √(V/ν), V ~ χ²_ν, ν = n − 1 (the noncentral
/// t). The test rejects when |T| > c = t_{1−α/2, ν}, so the power is
/// E_U[Φ(λ − cU) + Φ(−λ − cU)], integrated here over U's density
/// f(u) = 2 (ν/2)^{ν/2} u^{ν−1} e^{−νu²/2} / Γ(ν/2) by Simpson's rule.
pub fn paired_power(n: usize, effect: f64, alpha: f64) -> f64 {
    assert!(n >= 2 && alpha > 0.0 && alpha < 1.0, "n >= 2, alpha in (0, 1)");
    let nu = (n - 1) as f64;
    let c = student_t_quantile(1.0 - alpha / 2.0, nu);
    let lambda = effect.abs() * (n as f64).sqrt();
    let ln_norm = std::f64::consts::LN_2 + (nu / 2.0) * (nu / 2.0).ln() - ln_gamma(nu / 2.0);
    let density = |u: f64| {
        if u <= 0.0 {
            // u^{ν−1} at 0: zero unless ν = 1.
            return if nu == 1.0 { ln_norm.exp() } else { 0.0 };
        }
        (ln_norm + (nu - 1.0) * u.ln() - nu * u * u / 2.0).exp()
    };
    let reject = |u: f64| normal_cdf(lambda - c * u) + normal_cdf(-lambda - c * u);
    // U has mean ≈ 1 and standard deviation ≈ 1/√(2ν): 40 of them either side leave nothing out.
    let spread = 40.0 / (2.0 * nu).sqrt();
    let (lower, upper) = ((1.0 - spread).max(0.0), 1.0 + spread);
    let intervals = 4000;
    let h = (upper - lower) / intervals as f64;
    let mut sum = 0.0;
    for i in 0..=intervals {
        let u = lower + i as f64 * h;
        let w = if i == 0 || i == intervals {
            1.0
        } else if i % 2 == 1 {
            4.0
        } else {
            2.0
        };
        sum += w * density(u) * reject(u);
    }
    (sum * h / 3.0).clamp(0.0, 1.0)
}

/// The smallest number of pairs (seeds per variant, n ≥ 2) at which the two-sided paired t test at
/// level `alpha` has at least `power` against a true difference of `effect` standard deviations;
/// `None` when the effect is zero or more than `MAX_SEEDS` would be needed.
pub fn seeds_needed(effect: f64, alpha: f64, power: f64) -> Option<usize> {
    if !effect.is_finite() || effect == 0.0 {
        return None;
    }
    let enough = |n: usize| paired_power(n, effect, alpha) >= power;
    // The power grows with n: double until it suffices, then bisect.
    let mut hi = 2;
    while !enough(hi) {
        if hi >= MAX_SEEDS {
            return None;
        }
        hi = (hi * 2).min(MAX_SEEDS);
    }
    let mut lo = hi / 2; // not enough (or below 2)
    if lo < 2 {
        return Some(hi);
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if enough(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_matches_the_table() {
        // Φ at 0, 1, 1.959964, −2.326348, 3 and −6 (Abramowitz & Stegun, table 26.1; R's pnorm).
        for (x, expected) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_543),
            (1.959_963_984_540_054, 0.975),
            (-2.326_347_874_040_841, 0.01),
            (3.0, 0.998_650_101_968_370),
            (-6.0, 9.865_876_450_377e-10),
        ] {
            let got = normal_cdf(x);
            assert!((got - expected).abs() <= 1e-9 * expected, "Φ({x}) = {got}, table {expected}");
        }
    }

    #[test]
    fn p_values_by_hand() {
        // Differences 1, 2, 3: mean 2, sd 1, t = 2/(1/√3) = 2√3 on 2 df. With 2 df the t distribution
        // function is closed: F(t) = ½ + t / (2√(2 + t²)), so p = 1 − t/√(2 + t²) = 1 − √12/√14.
        let p = paired_p_value(3, 2.0, 1.0).unwrap();
        assert!((p - (1.0 - (12.0f64 / 14.0).sqrt())).abs() < 1e-12, "{p}");
        // With 1 df (two seeds) it is the Cauchy: p = 1 − 2·atan(|t|)/π; differences 1 and 3 give
        // mean 2, sd √2, t = 2/(√2/√2) = 2.
        let p = paired_p_value(2, 2.0, 2f64.sqrt()).unwrap();
        assert!((p - (1.0 - 2.0 * 2f64.atan() / std::f64::consts::PI)).abs() < 1e-12, "{p}");
        assert_eq!(paired_p_value(1, 2.0, f64::NAN), None);
        assert_eq!(paired_p_value(2, 0.0, 0.0), None);
        assert_eq!(paired_p_value(2, -1.0, 0.0), None);
    }

    #[test]
    fn holm_by_hand() {
        // m = 5 p-values, sorted 0.001, 0.01, 0.012, 0.04, 0.3:
        // 5·0.001 = 0.005; 4·0.01 = 0.04; 3·0.012 = 0.036 → 0.04 (monotone); 2·0.04 = 0.08; 1·0.3 = 0.3.
        let p = [0.04, 0.001, 0.3, 0.012, 0.01];
        let adjusted = holm(&p);
        let expected = [0.08, 0.005, 0.3, 0.04, 0.04];
        for (a, e) in adjusted.iter().zip(expected) {
            assert!((a - e).abs() < 1e-15, "{adjusted:?}");
        }
        // At 0.05 Holm rejects three (0.001, 0.01, 0.012) where Bonferroni (0.01 each) rejects two.
        assert_eq!(adjusted.iter().filter(|&&a| a <= 0.05).count(), 3);
        assert_eq!(p.iter().filter(|&&x| x * 5.0 <= 0.05).count(), 2);
        // Capped at 1, and an empty family is empty.
        assert_eq!(holm(&[0.6, 0.7]), vec![1.0, 1.0]);
        assert!(holm(&[]).is_empty());
    }

    #[test]
    fn power_without_an_effect_is_the_level() {
        // Under d = 0 the test rejects with probability α exactly, for any n.
        for n in [2, 3, 10, 50] {
            let p = paired_power(n, 0.0, 0.05);
            assert!((p - 0.05).abs() < 1e-6, "n {n}: {p}");
        }
    }

    #[test]
    fn power_matches_the_normal_limit() {
        // n = 2000, d = 0.07: λ = 3.1305, c ≈ 1.96115; with ν that large, power ≈ Φ(λ − c) + Φ(−λ − c)
        // ≈ 0.8789 (the t's extra spread shifts it by under 0.001; SciPy's noncentral t: 0.878804).
        let p = paired_power(2000, 0.07, 0.05);
        let lambda = 0.07 * 2000f64.sqrt();
        let c = student_t_quantile(0.975, 1999.0);
        let approx = normal_cdf(lambda - c) + normal_cdf(-lambda - c);
        assert!((p - approx).abs() < 1e-3, "{p} vs {approx}");
        assert!((p - 0.878_804).abs() < 2e-6, "{p} vs SciPy 0.878804");
    }

    #[test]
    fn seeds_needed_match_the_published_table() {
        // Sample sizes of the two-sided paired t test at α = 0.05 and power 0.8 for Cohen's small,
        // medium and large effects d_z = 0.2, 0.5, 0.8: 199, 34 and 15 pairs (G*Power 3, "t tests —
        // means: difference from constant (matched pairs)", a priori; Faul et al. 2007). Their powers
        // from SciPy 1.17's noncentral t (`nct.sf(c, n − 1, d√n) + nct.cdf(−c, n − 1, d√n)`):
        // 0.801691, 0.807778, 0.821311.
        for (d, n, power) in [(0.2, 199, 0.801_691), (0.5, 34, 0.807_778), (0.8, 15, 0.821_311)] {
            assert_eq!(seeds_needed(d, 0.05, 0.8), Some(n), "d = {d}");
            assert_eq!(seeds_needed(-d, 0.05, 0.8), Some(n), "d = −{d}");
            let got = paired_power(n, d, 0.05);
            assert!((got - power).abs() < 2e-6, "d = {d}, n = {n}: power {got}, SciPy {power}");
            assert!(paired_power(n - 1, d, 0.05) < 0.8);
        }
        assert_eq!(seeds_needed(0.0, 0.05, 0.8), None);
        assert_eq!(seeds_needed(1e-4, 0.05, 0.8), None, "about 785 million pairs: beyond the cap");
        // A huge effect needs the minimum of two seeds only if one degree of freedom can reach 80 %:
        // with t_{0.975,1} = 12.7 it takes λ ≈ 30 (d ≈ 21).
        assert_eq!(seeds_needed(30.0, 0.05, 0.8), Some(2));
    }
}
