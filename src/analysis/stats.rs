//! Summary statistics for comparing variants: mean, sample standard deviation and the two-sided 95%
//! confidence interval of the mean with Student's t (the quantile computed, not tabulated).

/// Mean, standard deviation (divisor n − 1) and the 95% interval of the mean of `values`.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// NaN for fewer than two values.
    pub std: f64,
    /// The interval mean ± t₀.₉₇₅,ₙ₋₁ · std/√n; NaN for fewer than two values.
    pub ci_low: f64,
    pub ci_high: f64,
}

pub fn summarize(values: &[f64]) -> Summary {
    let n = values.len();
    if n == 0 {
        return Summary { n, mean: f64::NAN, std: f64::NAN, ci_low: f64::NAN, ci_high: f64::NAN };
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Summary { n, mean, std: f64::NAN, ci_low: f64::NAN, ci_high: f64::NAN };
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    let half = student_t_quantile(0.975, (n - 1) as f64) * std / (n as f64).sqrt();
    Summary { n, mean, std, ci_low: mean - half, ci_high: mean + half }
}

/// The p-quantile of Student's t with `df` degrees of freedom, by bisection on the CDF.
pub fn student_t_quantile(p: f64, df: f64) -> f64 {
    assert!(p > 0.0 && p < 1.0 && df > 0.0, "p in (0, 1), df > 0");
    if p < 0.5 {
        return -student_t_quantile(1.0 - p, df);
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while student_t_cdf(hi, df) < p {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if student_t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// P(T ≤ t) = 1 − ½ I_{df/(df+t²)}(df/2, ½) for t ≥ 0.
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    let x = df / (df + t * t);
    let tail = 0.5 * incomplete_beta(x, df / 2.0, 0.5);
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The regularised incomplete beta function I_x(a, b) by its continued fraction (Lentz's method),
/// using the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) where the fraction converges slowly.
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(1.0 - x, b, a) / b
    }
}

fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    d = 1.0 / if d.abs() < TINY { TINY } else { d };
    let mut h = d;
    for m in 1..500 {
        let m = m as f64;
        let m2 = 2.0 * m;
        for aa in [m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))] {
            d = 1.0 + aa * d;
            d = 1.0 / if d.abs() < TINY { TINY } else { d };
            c = 1.0 + aa / c;
            if c.abs() < TINY {
                c = TINY;
            }
            h *= d * c;
        }
        // The last factor d·c of the pair is 1 at convergence.
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms: about 15 digits).
pub(crate) fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1 − x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = C[1..].iter().enumerate().fold(C[0], |acc, (i, c)| acc + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_the_published_table() {
        // Two-sided 95% critical values (Student 1908; any statistics table).
        for (df, expected) in
            [(1.0, 12.7062), (2.0, 4.3027), (4.0, 2.7764), (9.0, 2.2622), (29.0, 2.0452), (1e6, 1.9600)]
        {
            let q = student_t_quantile(0.975, df);
            assert!((q - expected).abs() < 1e-4, "df {df}: {q} vs {expected}");
        }
        // df = 1 is the Cauchy distribution: F(t) = ½ + atan(t)/π.
        assert!((student_t_cdf(0.7, 1.0) - (0.5 + 0.7f64.atan() / std::f64::consts::PI)).abs() < 1e-12);
        assert!((student_t_quantile(0.025, 4.0) + 2.7764).abs() < 1e-4);
    }

    #[test]
    fn ln_gamma_of_integers_and_a_half() {
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn summary_by_hand() {
        // 1, 2, 3, 4: mean 2.5, variance 5/3, half-width t₀.₉₇₅,₃ · √(5/3)/2 = 3.18245 · 0.645497.
        let s = summarize(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!((s.n, s.mean), (4, 2.5));
        assert!((s.std - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        let half = 3.182446 * (5.0f64 / 3.0).sqrt() / 2.0;
        assert!((s.ci_high - 2.5 - half).abs() < 1e-5 && (2.5 - s.ci_low - half).abs() < 1e-5, "{s:?}");
        let one = summarize(&[7.0]);
        assert_eq!(one.mean, 7.0);
        assert!(one.std.is_nan() && one.ci_low.is_nan());
    }
}

/// Simulation helpers for the tests of statistical claims (sequential seeds, reproduce's comparison).
#[cfg(test)]
pub mod simulate {
    /// xoshiro256** with SplitMix64 seeding and Box–Muller: a stream of standard normals, so that the
    /// simulation needs no tensors and gives the same numbers everywhere.
    pub struct Normals {
        s: [u64; 4],
        spare: Option<f64>,
    }

    impl Normals {
        pub fn new(seed: u64) -> Self {
            let mut z = seed;
            let mut next = || {
                z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut x = z;
                x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                x ^ (x >> 31)
            };
            Self { s: [next(), next(), next(), next()], spare: None }
        }

        pub fn uniform(&mut self) -> f64 {
            let s = &mut self.s;
            let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
            let t = s[1] << 17;
            s[2] ^= s[0];
            s[3] ^= s[1];
            s[1] ^= s[2];
            s[0] ^= s[3];
            s[2] ^= t;
            s[3] = s[3].rotate_left(45);
            // 53 random bits in (0, 1].
            ((result >> 11) as f64 + 1.0) / (1u64 << 53) as f64
        }

        pub fn normal(&mut self) -> f64 {
            if let Some(z) = self.spare.take() {
                return z;
            }
            let (u, v) = (self.uniform(), self.uniform());
            let r = (-2.0 * u.ln()).sqrt();
            let theta = 2.0 * std::f64::consts::PI * v;
            self.spare = Some(r * theta.sin());
            r * theta.cos()
        }
    }
}
