//! Post-hoc EMA (Karras et al. 2024, "Analyzing and improving the training dynamics of diffusion
//! models", §3): training keeps two power-function averages of the weights, with exponents γ_1, γ_2,
//! and stores both every K steps (`ema_snapshots/`); after training, the average of any relative
//! width σ_rel is reconstructed as the least-squares combination of the stored snapshots.
//!
//! The averaging is ema-pytorch 0.8.3's `KarrasEMA` (`update_every = 1`), which `tests/posthoc_ema.rs`
//! checks it against: at update s = 1, 2, … (the training step) the average is first set to the
//! weights, then θ̂ ← β θ̂ + (1 − β) θ with β_s = (1 − 1/(s + 1))^{1 + γ} (the paper's β_t =
//! (1 − 1/t)^{1 + γ} at t = s + 1). A snapshot taken at step s is a profile ∝ τ^γ on [0, s]; the
//! reconstruction solves A w = b with A_ij = ⟨p_i, p_j⟩, b_i = ⟨p_i, p_r⟩ (`p_dot_p`, the closed-form
//! inner product of two power profiles), γ's rounded to float32 as ema-pytorch's `synthesize_ema_model`
//! does, and returns Σ w_i θ̂_i. Every float variable is averaged (BatchNorm's statistics too, as
//! ema-pytorch does).
use crate::track::checkpoint;
use anyhow::{bail, Context, Result};
use sha2::Digest;
use std::collections::HashMap;
use std::path::Path;
use tch::{Kind, Tensor};

/// The largest σ_rel a power profile with γ ≥ 0 has: 1/√12.
pub use crate::config::MAX_SIGMA_REL;

/// γ of relative width σ_rel: the largest real root of γ³ + 7γ² + (16 − σ_rel⁻²)γ + 12 − σ_rel⁻² = 0
/// (EDM2 eq. 3 solved for γ; ema-pytorch's `sigma_rel_to_gamma`), by Newton's method from the right
/// of every root, where the cubic is convex and increasing.
pub fn sigma_rel_to_gamma(sigma_rel: f64) -> f64 {
    let t = sigma_rel.powi(-2);
    let p = |g: f64| ((g + 7.0) * g + 16.0 - t) * g + 12.0 - t;
    let dp = |g: f64| (3.0 * g + 14.0) * g + 16.0 - t;
    let mut g = t.max(1.0) + 10.0;
    for _ in 0..200 {
        let next = g - p(g) / dp(g);
        if (next - g).abs() <= 1e-15 * g.abs().max(1.0) {
            return next;
        }
        g = next;
    }
    g
}

/// σ_rel of exponent γ: √((γ + 1)/((γ + 2)²(γ + 3))).
pub fn gamma_to_sigma_rel(gamma: f64) -> f64 {
    ((gamma + 1.0) / ((gamma + 2.0).powi(2) * (gamma + 3.0))).sqrt()
}

/// β of update s (1-based) for exponent γ.
pub fn beta(s: u64, gamma: f64) -> f64 {
    (1.0 - 1.0 / (s as f64 + 1.0)).powf(1.0 + gamma)
}

/// ⟨p_a, p_b⟩ of the power profiles of (t_a, γ_a) and (t_b, γ_b) (EDM2, Algorithm 3's p_dot_p).
pub fn p_dot_p(t_a: f64, g_a: f64, t_b: f64, g_b: f64) -> f64 {
    let ratio = t_a / t_b;
    let exponent = if t_a < t_b { g_b } else { -g_a };
    let t_max = t_a.max(t_b);
    (g_a + 1.0) * (g_b + 1.0) * ratio.powf(exponent) / ((g_a + g_b + 1.0) * t_max)
}

/// The weights of snapshots (t_i, γ_i) that reconstruct the profile (t_r, γ_r) best in least squares:
/// the solution of A w = b by Gaussian elimination with partial pivoting, in f64.
pub fn solve_weights(snapshots: &[(f64, f64)], t_r: f64, g_r: f64) -> Result<Vec<f64>> {
    let n = snapshots.len();
    let mut a: Vec<Vec<f64>> = snapshots
        .iter()
        .map(|&(ti, gi)| {
            let mut row: Vec<f64> = snapshots.iter().map(|&(tj, gj)| p_dot_p(ti, gi, tj, gj)).collect();
            row.push(p_dot_p(ti, gi, t_r, g_r));
            row
        })
        .collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).expect("rows");
        if a[pivot][col].abs() < 1e-300 {
            bail!("the snapshots' profiles are linearly dependent (two snapshots of the same step and γ?)");
        }
        a.swap(col, pivot);
        let (top, below) = a.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for row in below.iter_mut() {
            let f = row[col] / pivot_row[col];
            for (x, p) in row.iter_mut().zip(pivot_row).skip(col) {
                *x -= f * p;
            }
        }
    }
    let mut w = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * w[k]).sum();
        w[row] = (a[row][n] - s) / a[row][row];
    }
    Ok(w)
}

/// The two running averages of training, by variable name (sorted), and their exponents.
pub struct Profiles {
    pub gammas: Vec<f64>,
    /// Per profile, (name, average) in name order; empty until the first update.
    pub averages: Vec<Vec<(String, Tensor)>>,
}

impl Profiles {
    pub fn new(sigma_rels: &[f64]) -> Self {
        Profiles {
            gammas: sigma_rels.iter().map(|&s| sigma_rel_to_gamma(s)).collect(),
            averages: sigma_rels.iter().map(|_| Vec::new()).collect(),
        }
    }

    /// Update s (1-based) with the current weights: the first sets each average to them.
    pub fn update(&mut self, weights: &[(String, Tensor)], s: u64) {
        let _guard = tch::no_grad_guard();
        for (gamma, avg) in self.gammas.iter().zip(self.averages.iter_mut()) {
            if avg.is_empty() {
                *avg = weights.iter().map(|(n, w)| (n.clone(), w.detach().copy())).collect();
            }
            assert!(
                avg.len() == weights.len() && avg.iter().zip(weights).all(|(a, w)| a.0 == w.0),
                "the post-hoc EMA averages and the weights are the same variables, in the same order"
            );
            // Restored from a checkpoint (on the CPU): onto the weights' device once.
            for ((_, a), (_, x)) in avg.iter_mut().zip(weights) {
                if a.device() != x.device() {
                    *a = a.to_device(x.device());
                }
            }
            let w = 1.0 - beta(s, *gamma);
            let (floats, sources): (Vec<Tensor>, Vec<&Tensor>) = avg
                .iter()
                .zip(weights)
                .filter(|((_, a), _)| matches!(a.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16))
                .map(|((_, a), (_, x))| (a.shallow_clone(), x))
                .unzip();
            crate::foreach::lerp_(&floats, &sources, w);
        }
    }

    /// The averages as named tensors `p<j>.<name>` (a checkpoint's or a snapshot's).
    pub fn tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (j, avg) in self.averages.iter().enumerate() {
            for (name, t) in avg {
                // Written as safetensors, which need contiguous tensors (channels-last weights are not).
                out.push((format!("{prefix}p{j}.{name}"), t.contiguous()));
            }
        }
        out
    }

    /// Restores the averages from `tensors` (written by `tensors(prefix)`), for the variable `names`.
    pub fn load(&mut self, tensors: &HashMap<String, Tensor>, prefix: &str, names: &[String]) -> Result<()> {
        for (j, avg) in self.averages.iter_mut().enumerate() {
            *avg = names
                .iter()
                .map(|n| {
                    let key = format!("{prefix}p{j}.{n}");
                    let t = tensors.get(&key).with_context(|| format!("the checkpoint lacks {key}"))?;
                    Ok((n.clone(), t.copy()))
                })
                .collect::<Result<_>>()?;
        }
        Ok(())
    }

    /// Writes the snapshot of step `s` into `dir` (atomically, with its sha256; all are kept).
    pub fn snapshot(&self, dir: &Path, s: usize) -> Result<()> {
        let state = serde_json::json!({ "gammas": self.gammas });
        checkpoint::save_keeping(dir, s, &self.tensors(""), state, usize::MAX)
    }
}

/// What a reconstruction used.
pub struct Reconstruction {
    /// The weights by variable name.
    pub weights: HashMap<String, Tensor>,
    /// (step, γ, weight) of each snapshot profile.
    pub terms: Vec<(usize, f64, f64)>,
    /// sha256 of what the weights were rebuilt from: σ_rel, the step and each snapshot's record (which
    /// holds the sha256 of its tensors).
    pub sha256: String,
}

/// The average of relative width `sigma_rel` at step `at` (None: the last snapshot's, else a step a
/// snapshot was stored at) from the snapshots in `dir` up to that step, each checked against its
/// sha256. Solves for the weights first, then adds one snapshot at a time.
pub fn reconstruct(dir: &Path, sigma_rel: f64, at: Option<usize>) -> Result<Reconstruction> {
    let mut steps = checkpoint::steps(dir);
    steps.sort_unstable();
    let t_r = match at {
        Some(s) if steps.contains(&s) => s,
        Some(s) => bail!("no post-hoc EMA snapshot at step {s} in {}: available are {steps:?}", dir.display()),
        None => *steps.last().with_context(|| format!("{}: no post-hoc EMA snapshots", dir.display()))?,
    };
    steps.retain(|&s| s <= t_r);
    let gamma_r = sigma_rel_to_gamma(sigma_rel) as f32 as f64;
    let mut profiles = Vec::new();
    let mut hasher = sha2::Sha256::new();
    hasher.update(format!("sigma_rel={sigma_rel} step={t_r}\n").as_bytes());
    for &s in &steps {
        let state = checkpoint::state(dir, s)?;
        let gammas: Vec<f64> = serde_json::from_value(state["gammas"].clone())
            .with_context(|| format!("{}: snapshot {s} has no gammas", dir.display()))?;
        for (j, g) in gammas.iter().enumerate() {
            profiles.push((s, *g as f32 as f64, j));
        }
        let record = dir.join(format!("step-{s:08}.json"));
        hasher.update(std::fs::read(&record).with_context(|| format!("cannot read {}", record.display()))?);
    }
    let pairs: Vec<(f64, f64)> = profiles.iter().map(|p| (p.0 as f64, p.1)).collect();
    let w = solve_weights(&pairs, t_r as f64, gamma_r)?;
    let mut weights: HashMap<String, Tensor> = HashMap::new();
    for &s in &steps {
        let ck = checkpoint::load(dir, s)?;
        for ((_, _, j), wi) in profiles.iter().zip(&w).filter(|((ps, _, _), _)| *ps == s) {
            let prefix = format!("p{j}.");
            for (key, t) in &ck.tensors {
                if let Some(name) = key.strip_prefix(&prefix) {
                    let term = t.to_kind(Kind::Float) * (*wi as f32 as f64);
                    match weights.get_mut(name) {
                        Some(acc) => *acc += term,
                        None => {
                            weights.insert(name.to_string(), term);
                        }
                    }
                }
            }
        }
    }
    let terms = profiles.iter().zip(&w).map(|((s, g, _), wi)| (*s, *g, *wi)).collect();
    Ok(Reconstruction { weights, terms, sha256: crate::hash::hex(&hasher.finalize()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ema-pytorch's values of σ_rel → γ (EDM2's 0.05 and 0.10 profiles), and the round trip.
    #[test]
    fn gamma_of_sigma_rel() {
        for (s, g) in [(0.05, 16.972198602303447), (0.1, 6.937203937601809), (0.15, 3.5578687748994646)] {
            assert!((sigma_rel_to_gamma(s) - g).abs() < 1e-9, "{s}: {}", sigma_rel_to_gamma(s));
            assert!((gamma_to_sigma_rel(g) - s).abs() < 1e-12);
        }
        assert!((gamma_to_sigma_rel(0.0) - MAX_SIGMA_REL).abs() < 1e-15);
    }

    /// A profile's inner product with itself is (γ + 1)²/((2γ + 1) t) (∫_0^t ((γ + 1)τ^γ/t^{γ+1})² dτ),
    /// and a stored profile reconstructs to itself: weight 1 on its own snapshot, 0 on the others.
    #[test]
    fn a_stored_profile_reconstructs_to_itself() {
        let (g, t) = (6.9, 40.0);
        assert!((p_dot_p(t, g, t, g) - (g + 1.0).powi(2) / ((2.0 * g + 1.0) * t)).abs() < 1e-15);
        let snaps: Vec<(f64, f64)> = [10.0, 20.0, 30.0, 40.0].iter().flat_map(|&t| [(t, 16.97), (t, 6.94)]).collect();
        let w = solve_weights(&snaps, 30.0, 6.94).unwrap();
        for (i, wi) in w.iter().enumerate() {
            let want = if i == 5 { 1.0 } else { 0.0 };
            assert!((wi - want).abs() < 1e-8, "{i}: {wi} ({w:?})");
        }
        // A width between the two stored ones mixes them; its weights sum to about 1 (a mean).
        let w = solve_weights(&snaps, 40.0, sigma_rel_to_gamma(0.075)).unwrap();
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 0.05, "{w:?}");
    }
}
