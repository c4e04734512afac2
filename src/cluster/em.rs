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
    let logits = (log_pi.to_kind(Kind::Double).unsqueeze(0) - bounds.to_kind(Kind::Double)) / temperature;
    logits.log_softmax(1, Kind::Double).exp()
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
