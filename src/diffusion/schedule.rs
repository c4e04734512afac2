//! Variance schedules β_1..β_T and the quantities derived from them (Ho et al. 2020, §2, §3.2).
//!
//! Everything is computed in f64 on the host; the few arrays the training step gathers from are also
//! held on the device in f32. The realised β array (not the schedule's name) is what identifies a run:
//! the same name means different numbers in different tools (see `betas_fingerprint`).
use crate::config::ScheduleConfig;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

/// β_t for the configured schedule and number of steps.
pub fn betas(schedule: &ScheduleConfig, timesteps: usize) -> Vec<f64> {
    match *schedule {
        ScheduleConfig::Linear { beta_start, beta_end } => linear_betas(timesteps, beta_start, beta_end),
        ScheduleConfig::Cosine { s, max_beta } => cosine_betas(timesteps, s, max_beta),
    }
}

/// Ho et al. 2020 §4: β increases linearly from `beta_start` to `beta_end` (both included), as
/// `torch.linspace(beta_start, beta_end, T)` in the paper's code and in the blog recipe.
pub fn linear_betas(timesteps: usize, beta_start: f64, beta_end: f64) -> Vec<f64> {
    if timesteps == 1 {
        return vec![beta_start];
    }
    let step = (beta_end - beta_start) / (timesteps - 1) as f64;
    (0..timesteps).map(|i| beta_start + step * i as f64).collect()
}

/// Nichol & Dhariwal 2021, eq. 17: ᾱ_t = f(t)/f(0) with f(t) = cos²(((t/T) + s)/(1 + s) · π/2), and
/// β_t = 1 − ᾱ_t/ᾱ_{t−1} clipped at `max_beta` (0.999 in the paper) to avoid the singularity at t = T.
pub fn cosine_betas(timesteps: usize, s: f64, max_beta: f64) -> Vec<f64> {
    let f = |t: f64| (((t / timesteps as f64) + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2).cos().powi(2);
    (0..timesteps)
        .map(|i| {
            let beta = 1.0 - f((i + 1) as f64) / f(i as f64);
            beta.min(max_beta)
        })
        .collect()
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
    crate::track::hex(&h.finalize())
}

/// A schedule with every derived term the forward process and the sampler need.
pub struct NoiseSchedule {
    pub betas: Vec<f64>,
    pub alpha_bar: Vec<f64>,
    /// ᾱ_{t−1}, with ᾱ_0 = 1.
    pub alpha_bar_prev: Vec<f64>,
    /// β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), the variance of q(x_{t−1} | x_t, x_0) (Ho et al. eq. 7).
    pub posterior_variance: Vec<f64>,
    /// √ᾱ_t on the device (f32), gathered per sample by `q_sample`.
    pub sqrt_alpha_bar: Tensor,
    /// √(1 − ᾱ_t) on the device (f32).
    pub sqrt_one_minus_alpha_bar: Tensor,
}

impl NoiseSchedule {
    pub fn new(schedule: &ScheduleConfig, timesteps: usize, device: Device) -> Self {
        Self::from_betas(betas(schedule, timesteps), device)
    }

    pub fn from_betas(betas: Vec<f64>, device: Device) -> Self {
        let alpha_bar = alpha_bar(&betas);
        let alpha_bar_prev: Vec<f64> =
            std::iter::once(1.0).chain(alpha_bar[..alpha_bar.len() - 1].iter().copied()).collect();
        let posterior_variance = betas
            .iter()
            .zip(alpha_bar.iter().zip(&alpha_bar_prev))
            .map(|(b, (ab, abp))| b * (1.0 - abp) / (1.0 - ab))
            .collect();
        let on_device = |v: Vec<f64>| Tensor::from_slice(&v).to_kind(Kind::Float).to_device(device);
        let sqrt_alpha_bar = on_device(alpha_bar.iter().map(|a| a.sqrt()).collect());
        let sqrt_one_minus_alpha_bar = on_device(alpha_bar.iter().map(|a| (1.0 - a).sqrt()).collect());
        Self { betas, alpha_bar, alpha_bar_prev, posterior_variance, sqrt_alpha_bar, sqrt_one_minus_alpha_bar }
    }

    pub fn timesteps(&self) -> usize {
        self.betas.len()
    }

    /// Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) at index t.
    pub fn snr(&self, t: usize) -> f64 {
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
}
