//! The E-step's arithmetic for a mixture of Q diffusion models p_θ(x | z = k) with weights π:
//! responsibilities from per-cluster negative bounds, the weights' update, the initial assignments,
//! and the repair of a cluster that empties. Host-independent tensor math, no model inside.
use crate::rng::reseed;
use tch::{Kind, Tensor};

/// τ_ik ∝ (π_k · exp(−L_ik))^{1/temperature}: the posterior of the cluster of image i when L_ik is
/// its negative log-likelihood (in nats) under cluster k; with a temperature above 1, deterministic
/// annealing's flattened posterior (Ueda & Nakano 1998). `bounds` `[N, Q]`, `log_pi` `[Q]`; rows sum
/// to 1 (computed in f64 as a log-softmax, so that gaps of thousands of nats do not overflow).
pub fn responsibilities(bounds: &Tensor, log_pi: &Tensor, temperature: f64) -> Tensor {
    log_kernel(bounds, log_pi, temperature).log_softmax(1, Kind::Double).exp()
}

/// The log of the E-step's kernel, (log π_k − L_ik)/temperature, `[N, Q]` f64: what the
/// responsibilities normalise per image (row) and what `balanced` also scales per cluster (column).
pub fn log_kernel(bounds: &Tensor, log_pi: &Tensor, temperature: f64) -> Tensor {
    (log_pi.to_kind(Kind::Double).unsqueeze(0) - bounds.to_kind(Kind::Double)) / temperature
}

/// Per-cluster bound offsets: each column of `bounds` `[N, Q]` less its mean over the images, so that
/// a constant by which one cluster's network bounds every image better does not decide any image.
pub fn offset(bounds: &Tensor) -> Tensor {
    let b = bounds.to_kind(Kind::Double);
    &b - b.mean_dim(0, true, Kind::Double)
}

/// π with a symmetric Dirichlet prior whose pseudo-counts are a share `prior` of the N images:
/// π_k = (Σ_i τ_ik + a)/(N + Q a) with a = prior · N/(Q (1 − prior)), i.e. (1 − prior) · mean_i τ_ik +
/// prior/Q, `[Q]` f64 (`prior` = 0: mean_i τ_ik).
pub fn weights_with_prior(tau: &Tensor, prior: f64) -> Tensor {
    let q = tau.size()[1] as f64;
    mixing_weights(tau) * (1.0 - prior) + prior / q
}

/// Sinkhorn-Knopp's scaling of an E-step's kernel towards balanced clusters.
#[derive(Debug)]
pub struct Balanced {
    /// τ̂ = diag(u) K diag(v), `[N, Q]` f64: rows sum to 1.
    pub tau: Tensor,
    /// Scalings done (one column and one row scaling each).
    pub iterations: usize,
    /// max_k |log v_k's last change|: 0 at the fixed point (below 1e-13 · (1 + max_k |log v_k|) unless
    /// the iterations ran out).
    pub change: f64,
}

/// Iterations of `balanced` at most; the tolerance on the column scaling's change, relative to
/// 1 + max_k |log v_k| (log v is of the size of the bounds' gaps, hundreds of nats and more, where an
/// absolute 1e-13 would be a few float steps).
pub const SINKHORN_ITERATIONS: usize = 10_000;
const SINKHORN_TOLERANCE: f64 = 1e-13;

/// Responsibilities whose cluster sizes are pulled towards N/Q: unbalanced Sinkhorn-Knopp in the log
/// domain on the kernel K = exp(`log_kernel`) `[N, Q]` (Asano et al. 2020's self-labelling, with
/// Chizat et al. 2018's scaling for a soft size constraint). Alternately v_k ← ((N/Q) / Σ_i K_ik u_i)^ρ
/// and u_i ← 1 / Σ_k K_ik v_k until v stops changing; τ̂_ik = u_i K_ik v_k. Every row sums to 1 (each
/// image's responsibilities are a distribution); with ρ = `strength` = 1 every column sums to N/Q
/// (an equipartition), with ρ = 0 τ̂ is the posterior (v = 1), and in between the sizes are the
/// fixed point of the KL-penalised problem (penalty ρ/(1 − ρ)).
pub fn balanced(log_kernel: &Tensor, strength: f64) -> Balanced {
    let k = log_kernel.to_kind(Kind::Double);
    let (n, q) = (k.size()[0], k.size()[1]);
    let log_size = (n as f64 / q as f64).ln();
    let mut log_v = Tensor::zeros([q], (Kind::Double, k.device()));
    let row = |log_v: &Tensor| -(&k + log_v.unsqueeze(0)).logsumexp([1], false);
    let mut log_u = row(&log_v);
    let (mut iterations, mut change) = (0, 0.0);
    if strength > 0.0 {
        while iterations < SINKHORN_ITERATIONS {
            let column = (&k + log_u.unsqueeze(1)).logsumexp([0], false);
            let next = (-column + log_size) * strength;
            change = (&next - &log_v).abs().max().double_value(&[]);
            let size = 1.0 + next.abs().max().double_value(&[]);
            log_v = next;
            log_u = row(&log_v);
            iterations += 1;
            if change < SINKHORN_TOLERANCE * size {
                break;
            }
        }
    }
    let tau = (&k + log_u.unsqueeze(1) + log_v.unsqueeze(0)).exp();
    Balanced { tau, iterations, change }
}

/// The mixture's negative log-likelihood bound per image, −log Σ_k π_k e^{−L_ik}, in the units of
/// `bounds` `[N, Q]` (nats), `[N]` f64: a bound because p(x) = Σ_k π_k p(x | k) ≥ Σ_k π_k e^{−L_k}.
pub fn mixture_bound(bounds: &Tensor, log_pi: &Tensor) -> Tensor {
    -log_kernel(bounds, log_pi, 1.0).logsumexp([1], false)
}

/// `n` cluster labels in proportion to π: cluster k gets ⌊n π_k⌋ and the n − Σ⌊n π_k⌋ left over go
/// to the largest remainders (ties: the lower index), so every count is within 1 of n π_k and they
/// sum to n. Each cluster's j-th label sits at position (j + ½)/n_k of the sequence (ties: the lower
/// index), so any prefix (a batch, a grid) holds the clusters in proportion too.
pub fn proportional_labels(pi: &[f64], n: i64) -> Vec<i64> {
    let total: f64 = pi.iter().sum();
    let exact: Vec<f64> = pi.iter().map(|p| p / total * n as f64).collect();
    let mut counts: Vec<i64> = exact.iter().map(|e| e.floor() as i64).collect();
    let mut order: Vec<usize> = (0..pi.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    let left = n - counts.iter().sum::<i64>();
    for &k in order.iter().take(left.max(0) as usize) {
        counts[k] += 1;
    }
    let mut slots: Vec<(f64, usize)> =
        counts.iter().enumerate().flat_map(|(k, &c)| (0..c).map(move |j| ((j as f64 + 0.5) / c as f64, k))).collect();
    slots.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    slots.into_iter().map(|(_, k)| k as i64).collect()
}

/// Stochastic approximation's update τ ← (1 − γ) τ + γ τ̂ (γ = 1: τ̂).
pub fn damped(tau: &Tensor, estimate: &Tensor, step_size: f64) -> Tensor {
    if step_size >= 1.0 {
        return estimate.shallow_clone();
    }
    tau.to_kind(estimate.kind()) * (1.0 - step_size) + estimate * step_size
}

/// π_k = mean_i τ_ik, `[Q]`.
pub fn mixing_weights(tau: &Tensor) -> Tensor {
    tau.to_kind(Kind::Double).mean_dim(0, false, Kind::Double)
}

/// The temperature of E-step `e` (0-based): `start` at the first, falling geometrically to 1 at
/// E-step `anneal` and 1 from there on (`anneal` = 0 or `start` = 1: plain EM throughout).
pub fn temperature_at(e: usize, start: f64, anneal: usize) -> f64 {
    if anneal == 0 || start <= 1.0 || e >= anneal {
        return 1.0;
    }
    start.powf(1.0 - e as f64 / anneal as f64)
}

/// Hard assignments as responsibilities: one-hot rows, `[N, Q]` f32.
pub fn one_hot(assignment: &Tensor, q: i64) -> Tensor {
    assignment.one_hot(q).to_kind(Kind::Float)
}

/// The `random` initialisation: each image in a cluster drawn uniformly, from the stream
/// (`seed`, "cluster-init").
pub fn random_assignment(n: i64, q: i64, seed: u64, device: tch::Device) -> Tensor {
    reseed(seed, "cluster-init", 0);
    Tensor::randint(q, [n], (Kind::Int64, device))
}

/// A cluster whose weight fell below `min_weight` and what it was refilled from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Refill {
    pub cluster: i64,
    /// The cluster it took images from (the heaviest).
    pub from: i64,
    pub images: i64,
}

/// Refills every cluster whose weight is below `min_weight` (in order of index) with the worse
/// explained half of the heaviest cluster's images: those whose argmax is that cluster and whose
/// negative bound under it is above its median there. They become one-hot members of the empty
/// cluster, which the next M-steps then fit. `tau` `[N, Q]`, `bounds` `[N, Q]`. Returns what moved.
pub fn refill_empty(tau: &mut Tensor, bounds: &Tensor, min_weight: f64) -> Vec<Refill> {
    let q = tau.size()[1];
    let mut moved = Vec::new();
    for k in 0..q {
        let pi = Vec::<f64>::try_from(mixing_weights(tau)).expect("π");
        if pi[k as usize] >= min_weight {
            continue;
        }
        let from = pi.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(j, _)| j as i64);
        let members = tau.argmax(1, false).eq(from).nonzero().squeeze_dim(1);
        let count = members.size()[0];
        if count < 2 {
            continue;
        }
        let own = bounds.select(1, from).index_select(0, &members);
        let worst = own.argsort(0, true).narrow(0, 0, count / 2);
        let chosen = members.index_select(0, &worst);
        let row = Tensor::zeros([q], (Kind::Float, tau.device())).index_fill(
            0,
            &Tensor::from_slice(&[k]).to_device(tau.device()),
            1.0,
        );
        let rows = row.unsqueeze(0).expand([chosen.size()[0], q], false).to_kind(tau.kind());
        *tau = tau.index_copy(0, &chosen, &rows);
        moved.push(Refill { cluster: k, from, images: chosen.size()[0] });
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn rows(t: &Tensor) -> Vec<Vec<f64>> {
        let n = t.size()[0];
        (0..n).map(|i| Vec::<f64>::try_from(t.get(i).to_kind(Kind::Double)).unwrap()).collect()
    }

    /// Bounds (1, 2, 3) nats and π = (1/2, 1/4, 1/4): τ ∝ (e^{-1}/2, e^{-2}/4, e^{-3}/4), worked
    /// out by hand; at temperature 2 each term's square root.
    #[test]
    fn responsibilities_are_the_softmax_of_the_bounds_by_hand() {
        let bounds = Tensor::from_slice(&[1.0f64, 2.0, 3.0]).view([1, 3]);
        let log_pi = Tensor::from_slice(&[0.5f64, 0.25, 0.25]).log();
        let w = [(-1f64).exp() / 2.0, (-2f64).exp() / 4.0, (-3f64).exp() / 4.0];
        let s: f64 = w.iter().sum();
        let got = &rows(&responsibilities(&bounds, &log_pi, 1.0))[0];
        for k in 0..3 {
            assert!((got[k] - w[k] / s).abs() < 1e-15, "{got:?}");
        }
        let w2: Vec<f64> = w.iter().map(|v| v.sqrt()).collect();
        let s2: f64 = w2.iter().sum();
        let got = &rows(&responsibilities(&bounds, &log_pi, 2.0))[0];
        for k in 0..3 {
            assert!((got[k] - w2[k] / s2).abs() < 1e-15, "{got:?}");
        }
    }

    #[test]
    fn responsibilities_sum_to_one_and_follow_a_relabelling() {
        tch::manual_seed(0);
        // Gaps of thousands of nats, as real images' bounds have.
        let bounds = Tensor::rand([50, 4], (Kind::Double, Device::Cpu)) * 5000.0;
        let log_pi = Tensor::from_slice(&[0.1f64, 0.2, 0.3, 0.4]).log();
        let tau = responsibilities(&bounds, &log_pi, 1.0);
        let sums = tau.sum_dim_intlist(1, false, Kind::Double);
        assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-12);
        assert!(tau.isfinite().all().int64_value(&[]) == 1);
        // Permuting the clusters (the bounds' columns and π together) permutes τ's columns alike.
        let perm = Tensor::from_slice(&[2i64, 0, 3, 1]);
        let permuted = responsibilities(&bounds.index_select(1, &perm), &log_pi.index_select(0, &perm), 1.0);
        assert!((permuted - tau.index_select(1, &perm)).abs().max().double_value(&[]) < 1e-15);
        let pi = Vec::<f64>::try_from(mixing_weights(&tau)).unwrap();
        assert!((pi.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    fn sums(t: &Tensor, dim: i64) -> Vec<f64> {
        Vec::<f64>::try_from(t.sum_dim_intlist(dim, false, Kind::Double)).unwrap()
    }

    /// ρ = 1 on random bounds with gaps of up to a hundred nats (one cluster far the best for most
    /// images, as the E-step's one-cluster bias gives): rows sum to 1 and columns to N/Q, to 1e-9.
    #[test]
    fn sinkhorn_meets_both_marginals() {
        tch::manual_seed(1);
        let (n, q) = (300i64, 6i64);
        let mut bounds = Tensor::rand([n, q], (Kind::Double, Device::Cpu)) * 100.0;
        // Cluster 0 better by 200 nats for every image: the plain posterior puts ~all in it.
        bounds -= Tensor::from_slice(&[200.0f64, 0., 0., 0., 0., 0.]).unsqueeze(0);
        let log_pi = Tensor::full([q], -(q as f64).ln(), (Kind::Double, Device::Cpu));
        let kernel = log_kernel(&bounds, &log_pi, 1.0);
        let plain = responsibilities(&bounds, &log_pi, 1.0);
        assert!(sums(&plain, 0)[0] > 0.9 * n as f64);
        let b = balanced(&kernel, 1.0);
        // Converged, not stopped by the cap: log v is ~200 nats here, the tolerance relative to it.
        assert!(b.iterations < SINKHORN_ITERATIONS && b.change < 1e-10, "{b:?}");
        for s in sums(&b.tau, 1) {
            assert!((s - 1.0).abs() < 1e-9, "row {s}");
        }
        for s in sums(&b.tau, 0) {
            assert!((s - n as f64 / q as f64).abs() < 1e-9, "column {s}");
        }
        // Strength 0 is the posterior itself.
        let none = balanced(&kernel, 0.0);
        assert_eq!(none.iterations, 0);
        assert!((none.tau - plain).abs().max().double_value(&[]) < 1e-12);
        // The test can fail: one column scaling and one row normalisation (Sinkhorn's first
        // iteration) leave the columns far from N/Q.
        let column = -kernel.logsumexp([0], false) + (n as f64 / q as f64).ln();
        let one_step = (&kernel + column.unsqueeze(0)).log_softmax(1, Kind::Double).exp();
        assert!(sums(&one_step, 0).iter().any(|s| (s - n as f64 / q as f64).abs() > 1e-3));
    }

    /// Two images, two clusters, bounds L = [[1, 2], [3, 2]] nats, π uniform. The balanced τ has
    /// rows and columns summing to 1, so τ = [[x, 1 − x], [1 − x, x]], and the scaling keeps the
    /// cross ratio τ11 τ22 / (τ12 τ21) = K11 K22 / (K12 K21) = e^{−1−2}/e^{−2−3} = e²: x²/(1 − x)² = e²,
    /// x = e/(1 + e) (worked by hand; the plain posterior's row 2 would be (e^{-1}/(1 + e^{-1}), …)).
    #[test]
    fn sinkhorn_fixed_point_by_hand() {
        let bounds = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 2.0]).view([2, 2]);
        let log_pi = Tensor::from_slice(&[0.5f64, 0.5]).log();
        let b = balanced(&log_kernel(&bounds, &log_pi, 1.0), 1.0);
        let e = std::f64::consts::E;
        let x = e / (1.0 + e);
        let want = [x, 1.0 - x, 1.0 - x, x];
        let got = Vec::<f64>::try_from(b.tau.flatten(0, -1)).unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
        // Partial strength with every image alike (kernel row (a, b)): by symmetry every row is the
        // same p, u = 1/(a v1 + b v2), v_k = (N/2 / (N K_k u))^ρ, so p_k ∝ K_k v_k ∝ K_k^{1−ρ}: at
        // ρ = 1/2, p = √a/(√a + √b). a = e^{-1}, b = e^{-4}: p = e^{-1/2}/(e^{-1/2} + e^{-2}).
        let bounds = Tensor::from_slice(&[1.0f64, 4.0]).view([1, 2]).repeat([5, 1]);
        let b = balanced(&log_kernel(&bounds, &log_pi, 1.0), 0.5);
        let p = (-0.5f64).exp() / ((-0.5f64).exp() + (-2.0f64).exp());
        for row in rows(&b.tau) {
            assert!((row[0] - p).abs() < 1e-12 && (row[1] - (1.0 - p)).abs() < 1e-12, "{row:?} vs {p}");
        }
    }

    /// Offsets: a constant added to one cluster's bounds for every image changes the raw
    /// responsibilities and not the offset ones. By hand: L = [[1, 2], [3, 2]] with cluster 1's
    /// column 5 nats better ([[1, −3], [3, −3]]): raw, both images go to cluster 1; with offsets
    /// the columns' means (2, −3) are removed: [[−1, 0], [1, 0]], image 1 to cluster 0 with
    /// τ = e/(1 + e), image 2 to cluster 1 with 1/(1 + e^{-1}) = e/(1 + e).
    #[test]
    fn offsets_remove_a_clusters_constant() {
        let bounds = Tensor::from_slice(&[1.0f64, -3.0, 3.0, -3.0]).view([2, 2]);
        let log_pi = Tensor::from_slice(&[0.5f64, 0.5]).log();
        let raw = responsibilities(&bounds, &log_pi, 1.0);
        assert_eq!(Vec::<i64>::try_from(raw.argmax(1, false)).unwrap(), vec![1, 1]);
        let off = responsibilities(&offset(&bounds), &log_pi, 1.0);
        let e = std::f64::consts::E;
        let x = e / (1.0 + e);
        let got = Vec::<f64>::try_from(off.flatten(0, -1)).unwrap();
        for (g, w) in got.iter().zip([x, 1.0 - x, 1.0 - x, x]) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        let shifted = &bounds + Tensor::from_slice(&[7.0f64, -2.0]).unsqueeze(0);
        assert!((offset(&shifted) - offset(&bounds)).abs().max().double_value(&[]) < 1e-12);
    }

    /// π with the prior: τ puts 9 of 10 images in cluster 0 of 2; with w = 0.2, π_0 = 0.8 · 0.9 + 0.1
    /// = 0.82; as pseudo-counts, a = 0.2 · 10 / (2 · 0.8) = 1.25: (9 + 1.25)/(10 + 2.5) = 0.82.
    #[test]
    fn the_prior_on_pi_by_hand() {
        let tau = one_hot(&Tensor::from_slice(&[0i64, 0, 0, 0, 0, 0, 0, 0, 0, 1]), 2);
        let pi = Vec::<f64>::try_from(weights_with_prior(&tau, 0.2)).unwrap();
        assert!((pi[0] - 0.82).abs() < 1e-12 && (pi[1] - 0.18).abs() < 1e-12, "{pi:?}");
        assert!((pi[0] - (9.0 + 1.25) / 12.5).abs() < 1e-12);
        let none = Vec::<f64>::try_from(weights_with_prior(&tau, 0.0)).unwrap();
        assert_eq!(none, vec![0.9, 0.1]);
    }

    /// The mixture's bound by hand: image bounds (L_1, L_2) = (100, 102) nats, π = (1/4, 3/4):
    /// −log(e^{−100}/4 + 3e^{−102}/4) = 100 − log((1 + 3e^{−2})/4) = 100 + log 4 − log(1 + 3e^{−2})
    /// = 100 + 1.3862944 − 0.3407530 = 101.0455414; a second image with equal bounds (50, 50) gives
    /// 50 exactly, whatever π.
    #[test]
    fn the_mixture_bound_by_hand() {
        let bounds = Tensor::from_slice(&[100.0f64, 102.0, 50.0, 50.0]).view([2, 2]);
        let log_pi = Tensor::from_slice(&[0.25f64, 0.75]).log();
        let got = Vec::<f64>::try_from(mixture_bound(&bounds, &log_pi)).unwrap();
        let want = 100.0 + 4f64.ln() - (1.0 + 3.0 * (-2f64).exp()).ln();
        assert!((got[0] - want).abs() < 1e-12 && (want - 101.0455414).abs() < 1e-7, "{got:?}");
        assert!((got[1] - 50.0).abs() < 1e-12);
        // Never above the best single cluster's L_k − log π_k, never below min_k L_k.
        assert!(got[0] <= 102.0 - 0.75f64.ln() && got[0] <= 100.0 - 0.25f64.ln() && got[0] >= 100.0);
    }

    /// π = (0.5, 0.3, 0.2) for 7 samples: 3.5, 2.1, 1.4 → floors 3, 2, 1 and the one left to the
    /// largest remainder (0.5, cluster 0): counts 4, 2, 1. Positions: cluster 0 at 1/8, 3/8, 5/8, 7/8,
    /// cluster 1 at 1/4, 3/4, cluster 2 at 1/2: 0 1 0 2 0 1 0.
    #[test]
    fn labels_in_proportion_to_pi_by_hand() {
        assert_eq!(proportional_labels(&[0.5, 0.3, 0.2], 7), vec![0, 1, 0, 2, 0, 1, 0]);
        let labels = proportional_labels(&[0.07, 0.9, 0.03], 1000);
        let count = |k| labels.iter().filter(|&&l| l == k).count();
        assert_eq!((count(0), count(1), count(2)), (70, 900, 30));
        // Any batch of 100 holds about the same shares.
        let first = &labels[..100];
        assert_eq!(first.iter().filter(|&&l| l == 1).count(), 90);
    }

    #[test]
    fn a_damped_step_moves_a_share_of_the_way() {
        let tau = Tensor::from_slice(&[1.0f32, 0.0, 0.5, 0.5]).view([2, 2]);
        let estimate = Tensor::from_slice(&[0.0f32, 1.0, 1.0, 0.0]).view([2, 2]);
        let got = Vec::<f32>::try_from(damped(&tau, &estimate, 0.25).flatten(0, -1)).unwrap();
        assert_eq!(got, vec![0.75, 0.25, 0.625, 0.375]);
        assert!(damped(&tau, &estimate, 1.0).equal(&estimate));
    }

    #[test]
    fn temperature_falls_from_start_to_one() {
        assert_eq!(temperature_at(0, 8.0, 3), 8.0);
        assert!((temperature_at(1, 8.0, 3) - 4.0).abs() < 1e-12);
        assert!((temperature_at(2, 8.0, 3) - 2.0).abs() < 1e-12);
        assert_eq!(temperature_at(3, 8.0, 3), 1.0);
        assert_eq!(temperature_at(0, 8.0, 0), 1.0);
    }

    #[test]
    fn an_empty_cluster_takes_the_worse_half_of_the_heaviest() {
        // Six images all in cluster 0 of 2; their bounds under cluster 0 are 1..6: the three worst
        // (bounds 4, 5, 6: images 3, 4, 5) move to cluster 1.
        let mut tau = one_hot(&Tensor::from_slice(&[0i64; 6]), 2);
        let bounds = Tensor::from_slice(&[1.0f64, 7.0, 2.0, 7.0, 3.0, 7.0, 4.0, 7.0, 5.0, 7.0, 6.0, 7.0]).view([6, 2]);
        let moved = refill_empty(&mut tau, &bounds, 0.05);
        assert_eq!(moved, vec![Refill { cluster: 1, from: 0, images: 3 }]);
        let a = Vec::<i64>::try_from(tau.argmax(1, false)).unwrap();
        assert_eq!(a, vec![0, 0, 0, 1, 1, 1]);
        assert!(refill_empty(&mut tau, &bounds, 0.05).is_empty());
    }
}
