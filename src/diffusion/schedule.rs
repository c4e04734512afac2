//! Variance schedules β_1..β_T and the quantities derived from them (Ho et al. 2020, §2, §3.2).
//!
//! Everything is computed in f64 on the host; the arrays the batched operations gather from are also
//! held on the device in f32. The realised β array (not the schedule's name) is what identifies a run:
//! the same name means different numbers in different tools (see `betas_fingerprint`).
use crate::config::{DiffusionConfig, ScheduleConfig, Variance};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

/// β_t for the configured schedule and number of steps.
pub fn betas(schedule: &ScheduleConfig, timesteps: usize) -> Vec<f64> {
    match schedule {
        ScheduleConfig::Linear(c) => {
            let scale = c.scale(timesteps);
            linear_betas(timesteps, c.beta_start * scale, c.beta_end * scale)
        }
        ScheduleConfig::Cosine(c) => {
            let betas = cosine_betas(timesteps, c.s, c.max_beta);
            match c.min_beta {
                Some(min) => betas.into_iter().map(|b| b.max(min)).collect(),
                None => betas,
            }
        }
        ScheduleConfig::Quadratic(c) => quadratic_betas(timesteps, c.beta_start, c.beta_end),
        ScheduleConfig::Sigmoid(c) => sigmoid_betas(timesteps, c.beta_start, c.beta_end),
        ScheduleConfig::LucidrainsSigmoid(c) => lucidrains_sigmoid_betas(timesteps, c.start, c.end, c.tau),
    }
}

/// The run's β: its schedule's, rescaled to zero terminal SNR with `diffusion.zero_terminal_snr`.
pub fn diffusion_betas(d: &DiffusionConfig) -> Vec<f64> {
    let b = betas(&d.schedule, d.timesteps);
    if d.zero_terminal_snr {
        rescale_zero_terminal_snr(&b)
    } else {
        b
    }
}

/// Lin et al. 2024, Algorithm 1 (diffusers' `rescale_zero_terminal_snr`), in f64: with
/// r_t = √ᾱ_t, r'_t = (r_t − r_T) · r_1/(r_1 − r_T), so that ᾱ'_T = 0 and ᾱ'_1 = ᾱ_1; then
/// α'_1 = ᾱ'_1, α'_t = ᾱ'_t/ᾱ'_{t−1} and β' = 1 − α'.
pub fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let root: Vec<f64> = alpha_bar(betas).into_iter().map(f64::sqrt).collect();
    let (first, last) = (root[0], root[root.len() - 1]);
    let ab: Vec<f64> = root.iter().map(|r| ((r - last) * first / (first - last)).powi(2)).collect();
    (0..ab.len()).map(|t| 1.0 - if t == 0 { ab[0] } else { ab[t] / ab[t - 1] }).collect()
}

/// `torch.linspace(start, end, n)` in f64: both ends included.
fn linspace(n: usize, start: f64, end: f64) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n).map(|i| start + step * i as f64).collect()
}

/// Ho et al. 2020 §4: β increases linearly from `beta_start` to `beta_end` (both included), as
/// `np.linspace(beta_start, beta_end, T)` in the paper's code (`get_beta_schedule('linear')`).
pub fn linear_betas(timesteps: usize, beta_start: f64, beta_end: f64) -> Vec<f64> {
    linspace(timesteps, beta_start, beta_end)
}

/// Nichol & Dhariwal 2021, eq. 17: ᾱ_t = f(t)/f(0) with f(t) = cos²(((t/T) + s)/(1 + s) · π/2), and
/// β_t = 1 − ᾱ_t/ᾱ_{t−1} clipped at `max_beta` (0.999 in the paper) to avoid the singularity at t = T.
pub fn cosine_betas(timesteps: usize, s: f64, max_beta: f64) -> Vec<f64> {
    let f = |t: f64| (((t / timesteps as f64) + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2).cos().powi(2);
    (0..timesteps).map(|i| (1.0 - f((i + 1) as f64) / f(i as f64)).min(max_beta)).collect()
}

/// Ho et al.'s code, `get_beta_schedule('quad')`: `np.linspace(beta_start ** 0.5, beta_end ** 0.5, T) ** 2`.
pub fn quadratic_betas(timesteps: usize, beta_start: f64, beta_end: f64) -> Vec<f64> {
    linspace(timesteps, beta_start.sqrt(), beta_end.sqrt()).into_iter().map(|r| r * r).collect()
}

/// The "sigmoid" schedule of GeoDiff (Xu et al. 2022) and of many DDPM tutorials:
/// `sigmoid(linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start`. Its ends are
/// beta_start + σ(∓6)·(beta_end − beta_start), not exactly the given bounds. lucidrains' and
/// diffusers' "sigmoid" schedules are different curves of the same name.
pub fn sigmoid_betas(timesteps: usize, beta_start: f64, beta_end: f64) -> Vec<f64> {
    linspace(timesteps, -6.0, 6.0)
        .into_iter()
        .map(|x| beta_start + (beta_end - beta_start) / (1.0 + (-x).exp()))
        .collect()
}

/// lucidrains' `sigmoid_beta_schedule(T, start, end, tau)`: with τ_i = i/T for i = 0..T,
/// ᾱ(τ) = (σ(end/tau) − σ((τ(end − start) + start)/tau)) / (σ(end/tau) − σ(start/tau)), divided by
/// ᾱ(τ_0), and β_i = 1 − ᾱ(τ_{i+1})/ᾱ(τ_i) clipped to [0, 0.999].
pub fn lucidrains_sigmoid_betas(timesteps: usize, start: f64, end: f64, tau: f64) -> Vec<f64> {
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    let (v_start, v_end) = (sigmoid(start / tau), sigmoid(end / tau));
    let ac: Vec<f64> = linspace(timesteps + 1, 0.0, timesteps as f64)
        .into_iter()
        .map(|t| t / timesteps as f64)
        .map(|t| (-sigmoid((t * (end - start) + start) / tau) + v_end) / (v_end - v_start))
        .collect();
    ac.windows(2).map(|w| (1.0 - (w[1] / ac[0]) / (w[0] / ac[0])).clamp(0.0, 0.999)).collect()
}

/// ᾱ_t = Π_{s≤t} (1 − β_s).
pub fn alpha_bar(betas: &[f64]) -> Vec<f64> {
    betas
        .iter()
        .scan(1.0, |acc, b| {
            *acc *= 1.0 - b;
            Some(*acc)
        })
        .collect()
}

/// sha256 of the β array as little-endian f64 bytes: part of a run's identity, so two spellings of
/// the same numbers are the same run and a change of formula is a different run.
pub fn betas_fingerprint(betas: &[f64]) -> String {
    let mut h = Sha256::new();
    for b in betas {
        h.update(b.to_le_bytes());
    }
    crate::hash::hex(&h.finalize())
}

/// A schedule with every derived term the forward process, the samplers and the bound need (the
/// buffers of improved-diffusion's `GaussianDiffusion`), host arrays in f64 and device copies in f32.
pub struct NoiseSchedule {
    pub betas: Vec<f64>,
    pub alpha_bar: Vec<f64>,
    /// ᾱ_{t−1}, with ᾱ_0 = 1.
    pub alpha_bar_prev: Vec<f64>,
    /// β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), the variance of q(x_{t−1} | x_t, x_0) (Ho et al. eq. 7).
    pub posterior_variance: Vec<f64>,
    /// √ᾱ_t.
    pub sqrt_alpha_bar: Tensor,
    /// √(1 − ᾱ_t).
    pub sqrt_one_minus_alpha_bar: Tensor,
    /// 1/√ᾱ_t and √(1/ᾱ_t − 1): x_0 = x_t/√ᾱ_t − √(1/ᾱ_t − 1) ε.
    pub sqrt_recip_alpha_bar: Tensor,
    pub sqrt_recipm1_alpha_bar: Tensor,
    /// The coefficients of x_0 and x_t in the posterior mean μ̃_t (eq. 7).
    pub posterior_mean_coef1: Tensor,
    pub posterior_mean_coef2: Tensor,
    /// log β̃_t, with β̃_1 = 0 replaced by β̃_2 so the logarithm is finite.
    pub posterior_log_variance_clipped: Tensor,
    /// log β_t, with β_1 replaced by β̃_2 (improved-diffusion's "fixed large").
    pub beta_log_variance: Tensor,
    /// SNR_t = ᾱ_t / (1 − ᾱ_t).
    pub snr: Tensor,
    /// log β_t, unclipped: the upper end of the learned range (improved-diffusion's `max_log`).
    pub log_betas: Tensor,
}

impl NoiseSchedule {
    /// The run's schedule (`diffusion.schedule`, `timesteps`, `zero_terminal_snr`).
    pub fn new(d: &DiffusionConfig, device: Device) -> Self {
        Self::from_betas(diffusion_betas(d), device)
    }

    pub fn from_betas(betas: Vec<f64>, device: Device) -> Self {
        let n = betas.len();
        let alpha_bar = alpha_bar(&betas);
        let alpha_bar_prev: Vec<f64> = std::iter::once(1.0).chain(alpha_bar[..n - 1].iter().copied()).collect();
        let posterior_variance: Vec<f64> =
            (0..n).map(|t| betas[t] * (1.0 - alpha_bar_prev[t]) / (1.0 - alpha_bar[t])).collect();
        let dev = |f: &dyn Fn(usize) -> f64| {
            let v: Vec<f64> = (0..n).map(f).collect();
            Tensor::from_slice(&v).to_kind(Kind::Float).to_device(device)
        };
        // β̃ at t = 1 is 0; both log-variances use β̃_2 there (for a single step, β_1 itself).
        let first = if n > 1 { posterior_variance[1] } else { betas[0] };
        Self {
            sqrt_alpha_bar: dev(&|t| alpha_bar[t].sqrt()),
            sqrt_one_minus_alpha_bar: dev(&|t| (1.0 - alpha_bar[t]).sqrt()),
            sqrt_recip_alpha_bar: dev(&|t| 1.0 / alpha_bar[t].sqrt()),
            sqrt_recipm1_alpha_bar: dev(&|t| (1.0 / alpha_bar[t] - 1.0).sqrt()),
            posterior_mean_coef1: dev(&|t| betas[t] * alpha_bar_prev[t].sqrt() / (1.0 - alpha_bar[t])),
            posterior_mean_coef2: dev(&|t| (1.0 - alpha_bar_prev[t]) * (1.0 - betas[t]).sqrt() / (1.0 - alpha_bar[t])),
            posterior_log_variance_clipped: dev(&|t| if t == 0 { first.ln() } else { posterior_variance[t].ln() }),
            beta_log_variance: dev(&|t| if t == 0 { first.ln() } else { betas[t].ln() }),
            snr: dev(&|t| alpha_bar[t] / (1.0 - alpha_bar[t])),
            log_betas: dev(&|t| betas[t].ln()),
            betas,
            alpha_bar,
            alpha_bar_prev,
            posterior_variance,
        }
    }

    /// The schedule restricted to the given increasing timestep indices, with β recomputed so that
    /// ᾱ at each kept step is unchanged: β'_i = 1 − ᾱ_{k_i}/ᾱ_{k_{i−1}} (improved-diffusion's
    /// `SpacedDiffusion`, Nichol & Dhariwal §4).
    pub fn respaced(&self, kept: &[usize], device: Device) -> Self {
        let mut prev = 1.0;
        let betas = kept
            .iter()
            .map(|&k| {
                let b = 1.0 - self.alpha_bar[k] / prev;
                prev = self.alpha_bar[k];
                b
            })
            .collect();
        Self::from_betas(betas, device)
    }

    pub fn timesteps(&self) -> usize {
        self.betas.len()
    }

    /// log σ_t² of p_θ(x_{t−1} | x_t) for the configured variance.
    pub fn model_log_variance(&self, variance: Variance) -> &Tensor {
        match variance {
            Variance::Posterior => &self.posterior_log_variance_clipped,
            Variance::Beta => &self.beta_log_variance,
        }
    }

    /// Whether ᾱ_T = 0 (zero terminal SNR): x_T is pure noise.
    pub fn zero_terminal_snr(&self) -> bool {
        self.alpha_bar.last() == Some(&0.0)
    }

    /// ᾱ as the σ-based samplers (DPM-Solver++, Euler, Heun) read it: with zero terminal SNR, ᾱ_T
    /// is 2^−24 instead of 0 so that σ_T = √((1 − ᾱ_T)/ᾱ_T) is finite (diffusers does the same).
    pub fn sampler_alpha_bar(&self) -> Vec<f64> {
        let mut ab = self.alpha_bar.clone();
        if let Some(last) = ab.last_mut().filter(|a| **a == 0.0) {
            *last = 2f64.powi(-24);
        }
        ab
    }

    /// Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) at index t.
    pub fn snr_at(&self, t: usize) -> f64 {
        self.alpha_bar[t] / (1.0 - self.alpha_bar[t])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linear schedule, T = 1000, 1e-4..0.02 (Ho et al. §4). Independent values:
    /// - β_1 = 1e-4 and β_T = 0.02 by definition of the end points.
    /// - β_500 (index 499) = 1e-4 + 499 · 0.0199/999 = 0.0100400400400... (hand arithmetic).
    /// - ᾱ_T: ln ᾱ_T = Σ ln(1 − β_t) = −Σβ − Σβ²/2 − Σβ³/3 − Σβ⁴/4 − …, with Σβ = 1000 · (1e-4 + 0.02)/2
    ///   = 10.05, Σβ² = 0.1340694, Σβ³ = 0.0020120, Σβ⁴ = 3.2209e-5 (power sums of an arithmetic
    ///   sequence), so ln ᾱ_T = −10.05 − 0.0670347 − 0.0006707 − 0.0000081 − … = −10.1177135 and
    ///   ᾱ_T = 4.03583e-5 (checked to 40 digits with mpmath: 4.0358297654e-5).
    #[test]
    fn linear_schedule_matches_hand_computed_values() {
        let b = linear_betas(1000, 1e-4, 0.02);
        assert_eq!(b.len(), 1000);
        assert!((b[0] - 1e-4).abs() < 1e-15);
        assert!((b[999] - 0.02).abs() < 1e-15);
        assert!((b[499] - 0.010_040_040_040_040_04).abs() < 1e-12);
        let ab = alpha_bar(&b);
        assert!((ab[999] - 4.035_829_765e-5).abs() < 1e-12, "alpha_bar_T = {}", ab[999]);
    }

    /// Cosine schedule (Nichol & Dhariwal eq. 17), T = 1000, s = 0.008. Without clipping,
    /// ᾱ_t = f(t)/f(0), so at t = T/2: (0.508/1.008) · π/2 = 0.7916315 rad, cos = 0.7026855,
    /// f(500) = 0.4937670; f(0): (0.008/1.008) · π/2 = 0.0124666 rad, cos² = 0.9998446; ratio
    /// 0.4938436 (mpmath: 0.49384359044). The clip only bites at the very end: unclipped β_T = 1
    /// because f(T) = cos²(π/2) = 0.
    #[test]
    fn cosine_schedule_matches_closed_form_and_clips() {
        let b = cosine_betas(1000, 0.008, 0.999);
        let ab = alpha_bar(&b);
        assert!((ab[499] - 0.493_843_590_44).abs() < 1e-9, "alpha_bar_500 = {}", ab[499]);
        assert_eq!(b[999], 0.999);
        assert!(b[998] < 0.999);
        let unclipped = cosine_betas(1000, 0.008, 1.0);
        assert!((unclipped[999] - 1.0).abs() < 1e-12);
        let clipped = cosine_betas(1000, 0.008, 0.02);
        assert!(clipped.iter().all(|&x| x <= 0.02));
        assert_eq!(clipped[999], 0.02);
    }

    /// End points worked out by hand. Quadratic: (√1e-4)² = 1e-4 and (√0.02)² = 0.02; the middle
    /// of T = 3 is ((0.01 + 0.1414213562)/2)² = 0.0757106781² = 0.0057321068. Sigmoid: σ(−6) = 1/(1 + e⁶) =
    /// 0.0024726232, σ(6) = 0.9975273768, so β_1 = 1e-4 + 0.0199 · 0.0024726232 = 0.000149205,
    /// β_T = 1e-4 + 0.0199 · 0.9975273768 = 0.019950795; the middle (x = 0) is 1e-4 + 0.0199/2 = 0.01005.
    #[test]
    fn quadratic_and_sigmoid_end_points() {
        let q = quadratic_betas(1000, 1e-4, 0.02);
        assert!((q[0] - 1e-4).abs() < 1e-15 && (q[999] - 0.02).abs() < 1e-15);
        let q3 = quadratic_betas(3, 1e-4, 0.02);
        assert!((q3[1] - 0.005_732_106_8).abs() < 1e-10, "{}", q3[1]);
        let s = sigmoid_betas(1000, 1e-4, 0.02);
        assert!((s[0] - 0.000_149_205).abs() < 1e-9, "{}", s[0]);
        assert!((s[999] - 0.019_950_795).abs() < 1e-9, "{}", s[999]);
        let s3 = sigmoid_betas(3, 1e-4, 0.02);
        assert!((s3[1] - 0.010_05).abs() < 1e-12);
    }

    /// improved-diffusion's rescaling: at T = 4000, 1000/T = 0.25, so 2.5e-5..0.005.
    #[test]
    fn scale_to_t_and_min_beta() {
        let cfg = ScheduleConfig::Linear(crate::config::schedule::linear::Config {
            beta_start: 1e-4,
            beta_end: 0.02,
            scale_to_t: true,
        });
        let b = betas(&cfg, 4000);
        assert!((b[0] - 2.5e-5).abs() < 1e-15 && (b[3999] - 0.005).abs() < 1e-15);
        let clipped = ScheduleConfig::Cosine(crate::config::schedule::cosine::Config {
            s: 0.008,
            max_beta: 0.02,
            min_beta: Some(1e-4),
        });
        let b = betas(&clipped, 600);
        assert!(b.iter().all(|&x| (1e-4..=0.02).contains(&x)));
        assert_eq!(
            b[0], 1e-4,
            "the cosine schedule's first β (1 − f(1)/f(0) = 7.15e-5 at T = 600) is raised to min_beta"
        );
    }

    /// Respacing keeps ᾱ at the kept steps: with all steps kept it is the same schedule.
    #[test]
    fn respacing_keeps_alpha_bar() {
        let s = NoiseSchedule::from_betas(linear_betas(100, 1e-4, 0.02), Device::Cpu);
        let kept = [0usize, 9, 49, 99];
        let r = s.respaced(&kept, Device::Cpu);
        for (i, &k) in kept.iter().enumerate() {
            assert!((r.alpha_bar[i] - s.alpha_bar[k]).abs() < 1e-15);
        }
        let all: Vec<usize> = (0..100).collect();
        let same = s.respaced(&all, Device::Cpu);
        for t in 0..100 {
            assert!((same.betas[t] - s.betas[t]).abs() < 1e-12);
        }
    }

    #[test]
    fn posterior_variance_is_zero_at_first_step_and_below_beta() {
        let s = NoiseSchedule::from_betas(linear_betas(100, 1e-4, 0.02), Device::Cpu);
        assert_eq!(s.posterior_variance[0], 0.0);
        for t in 1..100 {
            assert!(s.posterior_variance[t] <= s.betas[t]);
        }
    }

    #[test]
    fn fingerprint_depends_on_the_numbers_only() {
        let a = linear_betas(10, 1e-4, 0.02);
        let b: Vec<f64> = a.clone();
        assert_eq!(betas_fingerprint(&a), betas_fingerprint(&b));
        assert_ne!(betas_fingerprint(&a), betas_fingerprint(&linear_betas(10, 1e-4, 0.03)));
    }

    /// Zero terminal SNR (Lin et al. 2024, Algorithm 1) by hand on β = (0.1, 0.2, 0.3): ᾱ = (0.9,
    /// 0.72, 0.504), √ᾱ = (0.9486833, 0.8485281, 0.7099296); shifted by √ᾱ_3 and scaled by
    /// √ᾱ_1/(√ᾱ_1 − √ᾱ_3) = 3.9734806: (0.9486833, 0.5507187, 0) → ᾱ' = (0.9, 0.3032911, 0), so
    /// β' = (0.1, 1 − 0.3032911/0.9 = 0.6630099, 1) (30-digit decimal arithmetic: 0.66300989496).
    #[test]
    fn zero_terminal_snr_by_hand() {
        let b = rescale_zero_terminal_snr(&[0.1, 0.2, 0.3]);
        let ab = alpha_bar(&b);
        assert!((b[0] - 0.1).abs() < 1e-12 && (b[1] - 0.663_009_894_96).abs() < 1e-10 && b[2] == 1.0, "{b:?}");
        assert!(ab[2] == 0.0 && (ab[1] - 0.303_291_094_54).abs() < 1e-10, "{ab:?}");
        // Any schedule: ᾱ_T = 0, ᾱ_1 kept, √ᾱ an affine map of the original (so still decreasing).
        for betas in [linear_betas(1000, 1e-4, 0.02), cosine_betas(1000, 0.008, 0.999)] {
            let (old, new) = (alpha_bar(&betas), alpha_bar(&rescale_zero_terminal_snr(&betas)));
            assert_eq!(new[999], 0.0);
            assert!((new[0] - old[0]).abs() < 1e-12);
            assert!(new.windows(2).all(|w| w[1] < w[0]));
        }
    }
}
