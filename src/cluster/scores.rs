//! How well a clustering matches the dataset's labels: accuracy under the best one-to-one matching
//! of clusters to labels (Hungarian algorithm), normalised mutual information (arithmetic mean of
//! the entropies, scikit-learn's default) and the adjusted Rand index (Hubert & Arabie 1985, in the
//! pair-counting form scikit-learn uses). All three are invariant to renaming the clusters.
use std::collections::BTreeMap;

/// The contingency table n_ij (row i: the i-th distinct label, column j: the j-th distinct cluster)
/// of two labelings of the same items.
fn contingency(labels: &[i64], clusters: &[i64]) -> Vec<Vec<u64>> {
    assert_eq!(labels.len(), clusters.len(), "two labelings of the same items");
    let index = |v: &[i64]| {
        let mut m = BTreeMap::new();
        for &x in v {
            let next = m.len();
            m.entry(x).or_insert(next);
        }
        m
    };
    let (rows, cols) = (index(labels), index(clusters));
    let mut n = vec![vec![0u64; cols.len()]; rows.len()];
    for (l, c) in labels.iter().zip(clusters) {
        n[rows[l]][cols[c]] += 1;
    }
    n
}

/// The fraction of items whose cluster is matched to their label, under the matching of clusters
/// to labels that maximises it (each cluster to at most one label and back).
pub fn matched_accuracy(labels: &[i64], clusters: &[i64]) -> f64 {
    if labels.is_empty() {
        return f64::NAN;
    }
    let n = contingency(labels, clusters);
    let size = n.len().max(n[0].len());
    // Minimise −n_ij over a square matrix padded with zeros.
    let cost: Vec<Vec<f64>> = (0..size)
        .map(|i| (0..size).map(|j| -(n.get(i).and_then(|r| r.get(j)).copied().unwrap_or(0) as f64)).collect())
        .collect();
    let matched: f64 = hungarian(&cost).iter().enumerate().map(|(i, &j)| -cost[i][j]).sum();
    matched / labels.len() as f64
}

/// The assignment of rows to columns of a square cost matrix with the least total cost: `result[i]`
/// is row i's column. Kuhn–Munkres with potentials, O(n³).
pub fn hungarian(cost: &[Vec<f64>]) -> Vec<usize> {
    let n = cost.len();
    // 1-based arrays with a virtual column 0, as in the shortest-augmenting-path formulation.
    let (mut u, mut v) = (vec![0.0; n + 1], vec![0.0; n + 1]);
    let mut row_of = vec![0usize; n + 1];
    let mut way = vec![0usize; n + 1];
    for i in 1..=n {
        row_of[0] = i;
        let mut j0 = 0;
        let mut min_to = vec![f64::INFINITY; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = row_of[j0];
            let (mut delta, mut j1) = (f64::INFINITY, 0);
            for j in 1..=n {
                if !used[j] {
                    let reduced = cost[i0 - 1][j - 1] - u[i0] - v[j];
                    if reduced < min_to[j] {
                        min_to[j] = reduced;
                        way[j] = j0;
                    }
                    if min_to[j] < delta {
                        delta = min_to[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    min_to[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut result = vec![0; n];
    for j in 1..=n {
        if row_of[j] > 0 {
            result[row_of[j] - 1] = j - 1;
        }
    }
    result
}

fn entropy(counts: impl Iterator<Item = u64>, total: f64) -> f64 {
    counts.filter(|&c| c > 0).map(|c| c as f64 / total).map(|p| -p * p.ln()).sum()
}

/// Normalised mutual information I(U; V) / ((H(U) + H(V)) / 2); 1 when both labelings have one
/// group, 0 when I = 0 (scikit-learn's conventions).
pub fn nmi(labels: &[i64], clusters: &[i64]) -> f64 {
    let n = contingency(labels, clusters);
    let (rows, cols) = (n.len(), n.first().map_or(0, |r| r.len()));
    if rows == cols && rows <= 1 {
        return 1.0;
    }
    let total = labels.len() as f64;
    let a: Vec<u64> = n.iter().map(|r| r.iter().sum()).collect();
    let b: Vec<u64> = (0..cols).map(|j| n.iter().map(|r| r[j]).sum()).collect();
    let mut mi = 0.0;
    for (i, row) in n.iter().enumerate() {
        for (j, &nij) in row.iter().enumerate() {
            if nij > 0 {
                let nij = nij as f64;
                mi += nij / total * (nij * total / (a[i] as f64 * b[j] as f64)).ln();
            }
        }
    }
    if mi <= 0.0 {
        return 0.0;
    }
    let normaliser = (entropy(a.into_iter(), total) + entropy(b.into_iter(), total)) / 2.0;
    mi / normaliser
}

/// The adjusted Rand index from the pair confusion matrix (pairs together in both, in one only, in
/// neither): 2 (tp·tn − fn·fp) / ((tp + fn)(fn + tn) + (tp + fp)(fp + tn)); 1 when no pair disagrees.
pub fn ari(labels: &[i64], clusters: &[i64]) -> f64 {
    let n = contingency(labels, clusters);
    let total = labels.len() as f64;
    let pairs = |c: u64| c as f64 * c as f64;
    let sum_sq: f64 = n.iter().flatten().map(|&c| pairs(c)).sum();
    let a: f64 = n.iter().map(|r| pairs(r.iter().sum())).sum();
    let cols = n.first().map_or(0, |r| r.len());
    let b: f64 = (0..cols).map(|j| pairs(n.iter().map(|r| r[j]).sum())).sum();
    // Ordered pairs of distinct items, as scikit-learn's pair_confusion_matrix counts them.
    let tp = sum_sq - total;
    let fp = b - sum_sq;
    let fn_ = a - sum_sq;
    let tn = total * total - fp - fn_ - sum_sq;
    if fn_ == 0.0 && fp == 0.0 {
        return 1.0;
    }
    2.0 * (tp * tn - fn_ * fp) / ((tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels [0 0 0 1 1 1], clusters [0 0 1 1 2 2]: contingency rows (2 1 0), (0 1 2).
    const LABELS: [i64; 6] = [0, 0, 0, 1, 1, 1];
    const CLUSTERS: [i64; 6] = [0, 0, 1, 1, 2, 2];

    #[test]
    fn accuracy_by_hand() {
        // Best matching: cluster 0 → label 0 (2 items), cluster 2 → label 1 (2 items): 4 / 6.
        assert!((matched_accuracy(&LABELS, &CLUSTERS) - 4.0 / 6.0).abs() < 1e-15);
        // Renamed clusters match as well as the names they replace.
        assert_eq!(matched_accuracy(&[0, 0, 1, 1], &[7, 7, 3, 3]), 1.0);
        assert_eq!(matched_accuracy(&[0, 0, 1, 1], &[5, 5, 5, 5]), 0.5);
    }

    #[test]
    fn hungarian_finds_the_cheapest_assignment() {
        // By enumeration of the 6 permutations: rows → (1, 0, 2) costs 1 + 2 + 2 = 5, the least.
        let cost = vec![vec![4.0, 1.0, 3.0], vec![2.0, 0.0, 5.0], vec![3.0, 2.0, 2.0]];
        let a = hungarian(&cost);
        let total: f64 = a.iter().enumerate().map(|(i, &j)| cost[i][j]).sum();
        assert_eq!(total, 5.0);
        assert_eq!(a, vec![1, 0, 2]);
    }

    #[test]
    fn nmi_by_hand() {
        // H(U) = ln 2; H(V) = 3 · (1/3) ln 3 = ln 3; I = Σ n_ij/n ln(n n_ij / (a_i b_j)):
        // (2/6) ln(6·2/(3·2)) · 2 + (1/6) ln(6·1/(3·2)) · 2 = (2/3) ln 2.
        let expected = (2.0 / 3.0) * 2f64.ln() / ((2f64.ln() + 3f64.ln()) / 2.0);
        assert!((nmi(&LABELS, &CLUSTERS) - expected).abs() < 1e-15);
        assert_eq!(nmi(&[1, 1, 1], &[4, 4, 4]), 1.0);
        assert_eq!(nmi(&[0, 1, 0, 1], &[0, 0, 1, 1]), 0.0);
        assert!((nmi(&[0, 0, 1, 1], &[1, 1, 0, 0]) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn ari_by_hand() {
        // Unordered pairs: Σ C(n_ij, 2) = 1 + 1 = 2; Σ C(a_i, 2) = 3 + 3 = 6; Σ C(b_j, 2) = 3 · 1 = 3;
        // C(6, 2) = 15; expected index 6 · 3 / 15 = 1.2; ARI = (2 − 1.2) / ((6 + 3)/2 − 1.2) = 0.8 / 3.3.
        assert!((ari(&LABELS, &CLUSTERS) - 0.8 / 3.3).abs() < 1e-14);
        assert_eq!(ari(&[0, 0, 1, 1], &[3, 3, 9, 9]), 1.0);
        // Every pair split one way and joined the other: (0 − 1) / (1 − 1)... scikit-learn gives 0 here
        // by its pair form: tp = 0, fn = 0 (labels: all apart), fp = 12 → 2(0·0 − 0·12)/(…) = 0.
        assert_eq!(ari(&[0, 1, 2, 3], &[0, 0, 0, 0]), 0.0);
    }
}
