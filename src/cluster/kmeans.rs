//! k-means on pixels (Lloyd's algorithm from a k-means++ start, Arthur & Vassilvitskii 2007): the
//! baseline a clustering by a diffusion model has to beat, and its `kmeans_pixels` initialisation.
//! Batched on the device: one distance matrix per iteration, no per-image work.
use crate::rng::reseed;
use tch::{Kind, Tensor};

pub struct KMeans {
    /// `[K, D]`.
    pub centers: Tensor,
    /// Each point's center, `[N]` (Int64).
    pub assignment: Tensor,
    /// Σ_i ‖x_i − c_{a(i)}‖².
    pub inertia: f64,
    pub iterations: usize,
    /// Clusters that emptied during Lloyd's iterations and were moved to the point farthest from
    /// its center.
    pub relocated: usize,
}

/// Squared distances `[N, K]` from the points `[N, D]` to the centers `[K, D]` (f64, so that the
/// expansion ‖x‖² − 2x·c + ‖c‖² does not cancel badly).
fn squared_distances(x: &Tensor, centers: &Tensor) -> Tensor {
    let xx = x.square().sum_dim_intlist(1, true, Kind::Double);
    let cc = centers.square().sum_dim_intlist(1, false, Kind::Double).unsqueeze(0);
    (xx - x.to_kind(Kind::Double).matmul(&centers.to_kind(Kind::Double).tr()) * 2.0 + cc).clamp_min(0.0)
}

/// k-means++'s start: the first center uniform, each next drawn with probability ∝ the squared
/// distance to the nearest center so far; from the stream (`seed`, "kmeans").
pub fn kmeans_plus_plus(x: &Tensor, k: i64, seed: u64) -> Tensor {
    reseed(seed, "kmeans", 0);
    let n = x.size()[0];
    let first = Tensor::randint(n, [1], (Kind::Int64, x.device()));
    let mut centers = x.index_select(0, &first);
    let mut nearest = squared_distances(x, &centers).squeeze_dim(1);
    for _ in 1..k {
        // All points coincide with a center: any point will do.
        let weights = if nearest.sum(Kind::Double).double_value(&[]) > 0.0 {
            nearest.shallow_clone()
        } else {
            nearest.ones_like()
        };
        let next = weights.multinomial(1, false);
        let c = x.index_select(0, &next);
        nearest = nearest.minimum(&squared_distances(x, &c).squeeze_dim(1));
        centers = Tensor::cat(&[centers, c], 0);
    }
    centers
}

/// Lloyd's iterations from k-means++ until no point changes cluster or `max_iter` iterations.
pub fn kmeans(x: &Tensor, k: i64, seed: u64, max_iter: usize) -> KMeans {
    let x = x.flatten(1, -1).to_kind(Kind::Float);
    let (n, device) = (x.size()[0], x.device());
    assert!(k >= 1 && k <= n, "k-means: k = {k} for {n} points");
    let mut centers = kmeans_plus_plus(&x, k, seed);
    let mut assignment = Tensor::full([n], -1, (Kind::Int64, device));
    let (mut iterations, mut relocated) = (0, 0);
    loop {
        let d = squared_distances(&x, &centers);
        let next = d.argmin(1, false);
        let changed = next.ne_tensor(&assignment).any().int64_value(&[]) != 0;
        assignment = next;
        if !changed || iterations == max_iter {
            let inertia = d.gather(1, &assignment.unsqueeze(1), false).sum(Kind::Double).double_value(&[]);
            return KMeans { centers, assignment, inertia, iterations, relocated };
        }
        iterations += 1;
        let counts = Tensor::zeros([k], (Kind::Float, device)).index_add(
            0,
            &assignment,
            &x.ones_like().narrow(1, 0, 1).squeeze_dim(1),
        );
        let sums = Tensor::zeros([k, x.size()[1]], (Kind::Float, device)).index_add(0, &assignment, &x);
        let empty: Vec<i64> = Vec::<f32>::try_from(&counts)
            .expect("counts")
            .iter()
            .enumerate()
            .filter(|(_, &c)| c == 0.0)
            .map(|(j, _)| j as i64)
            .collect();
        centers = (&sums / counts.clamp_min(1.0).unsqueeze(1)).where_self(&counts.gt(0.0).unsqueeze(1), &centers);
        // An empty cluster takes the point farthest from its own center (scikit-learn relocates too).
        let own = d.gather(1, &assignment.unsqueeze(1), false).squeeze_dim(1);
        let far = own.argsort(0, true);
        for (slot, j) in empty.iter().enumerate() {
            let p = far.get(slot as i64);
            centers.get(*j).copy_(&x.get(p.int64_value(&[])));
            relocated += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Points on a line: {0, 1, 2} and {10, 11, 12}; the optimum has centers 1 and 11 and inertia
    /// 2 · (1 + 0 + 1) = 4, whatever the start.
    #[test]
    fn two_groups_on_a_line() {
        let x = Tensor::from_slice(&[0f32, 1., 2., 10., 11., 12.]).view([6, 1]);
        for seed in 0..5 {
            let km = kmeans(&x, 2, seed, 100);
            assert!((km.inertia - 4.0).abs() < 1e-9, "seed {seed}: inertia {}", km.inertia);
            let a = Vec::<i64>::try_from(&km.assignment).unwrap();
            assert!(a[0] == a[1] && a[1] == a[2] && a[3] == a[4] && a[4] == a[5] && a[0] != a[3], "{a:?}");
            let mut c = Vec::<f32>::try_from(km.centers.flatten(0, -1)).unwrap();
            c.sort_by(f32::total_cmp);
            assert_eq!(c, vec![1.0, 11.0]);
        }
    }

    #[test]
    fn k_means_plus_plus_never_picks_a_point_twice_while_others_are_away() {
        // Three distinct points, k = 3: a drawn point has distance 0 and probability 0 afterwards.
        let x = Tensor::from_slice(&[0f32, 5., 9.]).view([3, 1]);
        for seed in 0..10 {
            let mut c = Vec::<f32>::try_from(kmeans_plus_plus(&x, 3, seed).flatten(0, -1)).unwrap();
            c.sort_by(f32::total_cmp);
            assert_eq!(c, vec![0.0, 5.0, 9.0]);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_clustering() {
        tch::manual_seed(3);
        let x = Tensor::randn([200, 8], (Kind::Float, Device::Cpu));
        let (a, b) = (kmeans(&x, 4, 7, 50), kmeans(&x, 4, 7, 50));
        assert!(a.assignment.equal(&b.assignment) && a.inertia == b.inertia);
    }
}
