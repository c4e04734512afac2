//! The Fréchet distance between Gaussians fitted to features (Heusel et al. 2017) and the kernel
//! inception distance (Bińkowski et al. 2018): pure math on `[N, D]` feature tensors, in f64 on the CPU.
use tch::{Device, Kind, Tensor};

/// Running sums of a stream of feature batches; never holds the features themselves.
pub struct Moments {
    n: i64,
    sum: Tensor,
    outer: Tensor,
}

impl Moments {
    pub fn new(dim: i64) -> Self {
        let opts = (Kind::Double, Device::Cpu);
        Self { n: 0, sum: Tensor::zeros([dim], opts), outer: Tensor::zeros([dim, dim], opts) }
    }

    pub fn add(&mut self, features: &Tensor) {
        let f = features.to_device(Device::Cpu).to_kind(Kind::Double);
        self.n += f.size()[0];
        self.sum += f.sum_dim_intlist(0, false, Kind::Double);
        self.outer += f.tr().matmul(&f);
    }

    pub fn count(&self) -> i64 {
        self.n
    }

    /// Mean and unbiased covariance (divisor N − 1, as `numpy.cov`).
    pub fn gaussian(&self) -> Gaussian {
        let n = self.n as f64;
        let mean = &self.sum / n;
        let centred = &self.outer - mean.outer(&mean) * n;
        Gaussian { mean, cov: centred / (n - 1.0), n: self.n }
    }
}

/// μ and Σ of a feature set (f64, CPU).
pub struct Gaussian {
    pub mean: Tensor,
    pub cov: Tensor,
    pub n: i64,
}

impl Gaussian {
    pub fn of(features: &Tensor) -> Self {
        let mut m = Moments::new(features.size()[1]);
        m.add(features);
        m.gaussian()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Frechet {
    pub fid: f64,
    /// ‖μ₁ − μ₂‖², tr Σ₁ + tr Σ₂ and 2 tr √(√Σ₁ Σ₂ √Σ₁): the three parts of the distance.
    pub mean_term: f64,
    pub trace_term: f64,
    pub cross_term: f64,
    /// Eigenvalues below zero (round-off of singular covariances) clipped to zero when taking the
    /// roots of Σ₁ and Σ₂.
    pub negative_eigenvalues: i64,
    /// The most negative eigenvalue clipped (0 when none).
    pub most_negative: f64,
}

/// The square root of a symmetric positive semi-definite matrix by its eigen-decomposition
/// V diag(√λ) Vᵀ; negative eigenvalues (round-off) are clipped to 0 and counted.
pub fn sqrtm_psd(a: &Tensor) -> (Tensor, i64, f64) {
    let a = a.to_kind(Kind::Double);
    let sym = (&a + a.tr()) / 2.0;
    let (lambda, v) = sym.linalg_eigh("L");
    let (negatives, most_negative) = negatives(&lambda);
    let root = lambda.clamp_min(0.0).sqrt();
    ((&v * root.unsqueeze(0)).matmul(&v.tr()), negatives, most_negative)
}

fn negatives(lambda: &Tensor) -> (i64, f64) {
    let count = lambda.lt(0.0).sum(Kind::Int64).int64_value(&[]);
    let min = lambda.min().double_value(&[]).min(0.0);
    (count, min)
}

/// d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(√Σ₁ Σ₂ √Σ₁) (the symmetric form of tr √(Σ₁Σ₂), same spectrum).
/// Since √Σ₁ Σ₂ √Σ₁ = (√Σ₁√Σ₂)(√Σ₁√Σ₂)ᵀ, the square roots of its eigenvalues are the singular values of
/// √Σ₁√Σ₂; those are taken directly (absolute error ε‖·‖ for the many near-zero ones a covariance of
/// fewer than 2048 samples has, where square roots of tiny eigenvalues would carry √ε).
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> Frechet {
    let diff = &a.mean - &b.mean;
    let mean_term = diff.dot(&diff).double_value(&[]);
    let trace_term = a.cov.trace().double_value(&[]) + b.cov.trace().double_value(&[]);
    let (root_a, n1, m1) = sqrtm_psd(&a.cov);
    let (root_b, n2, m2) = sqrtm_psd(&b.cov);
    let (_, singular, _) = root_a.matmul(&root_b).svd(true, false);
    let cross_term = 2.0 * singular.sum(Kind::Double).double_value(&[]);
    Frechet {
        fid: mean_term + trace_term - cross_term,
        mean_term,
        trace_term,
        cross_term,
        negative_eigenvalues: n1 + n2,
        most_negative: m1.min(m2),
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Kid {
    /// Mean and standard deviation over the subsets of the unbiased MMD² estimate.
    pub mean: f64,
    pub std: f64,
    pub subsets: usize,
    pub subset_size: i64,
}

/// KID: the unbiased estimate of MMD² with the polynomial kernel k(x, y) = (xᵀy/d + 1)³, averaged over
/// `subsets` random subsets of `subset_size` features of each set (capped at the smaller set), as
/// Bińkowski et al. and torch-fidelity compute it. Draws come from libtorch's generator: seed it first.
pub fn kid(a: &Tensor, b: &Tensor, subsets: usize, subset_size: usize) -> Kid {
    let a = a.to_device(Device::Cpu).to_kind(Kind::Double);
    let b = b.to_device(Device::Cpu).to_kind(Kind::Double);
    let (na, nb, d) = (a.size()[0], b.size()[0], a.size()[1]);
    let m = (subset_size as i64).min(na).min(nb);
    let kernel = |x: &Tensor, y: &Tensor| (x.matmul(&y.tr()) / d as f64 + 1.0).pow_tensor_scalar(3);
    let mut values = Vec::with_capacity(subsets);
    for _ in 0..subsets {
        let x = a.index_select(0, &Tensor::randperm(na, (Kind::Int64, Device::Cpu)).narrow(0, 0, m));
        let y = b.index_select(0, &Tensor::randperm(nb, (Kind::Int64, Device::Cpu)).narrow(0, 0, m));
        let (kxx, kyy, kxy) = (kernel(&x, &x), kernel(&y, &y), kernel(&x, &y));
        let off_diagonal = |k: &Tensor| k.sum(Kind::Double).double_value(&[]) - k.trace().double_value(&[]);
        let mf = m as f64;
        let mmd = (off_diagonal(&kxx) + off_diagonal(&kyy)) / (mf * (mf - 1.0))
            - 2.0 * kxy.sum(Kind::Double).double_value(&[]) / (mf * mf);
        values.push(mmd);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    Kid { mean, std: var.sqrt(), subsets, subset_size: m }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_features(n: i64, d: i64, shift: f64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        let mix = Tensor::randn([d, d], (Kind::Double, Device::Cpu)) / (d as f64).sqrt();
        Tensor::randn([n, d], (Kind::Double, Device::Cpu)).matmul(&mix) + shift
    }

    fn spd(d: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        let a = Tensor::randn([d, d], (Kind::Double, Device::Cpu));
        a.matmul(&a.tr()) + Tensor::eye(d, (Kind::Double, Device::Cpu)) * 1e-3
    }

    #[test]
    fn sqrtm_squares_back_to_the_matrix() {
        for (d, seed) in [(3, 1), (64, 2), (512, 3)] {
            let a = spd(d, seed);
            let (r, negatives, _) = sqrtm_psd(&a);
            let err = (r.matmul(&r) - &a).norm().double_value(&[]) / a.norm().double_value(&[]);
            assert!(err < 1e-8, "d = {d}: relative error {err}");
            assert_eq!(negatives, 0);
        }
        // A hand-checkable case: diag(4, 9) has root diag(2, 3).
        let (r, _, _) = sqrtm_psd(&Tensor::from_slice(&[4.0f64, 0.0, 0.0, 9.0]).reshape([2, 2]));
        assert_eq!(Vec::<f64>::try_from(r.flatten(0, 1)).unwrap(), vec![2.0, 0.0, 0.0, 3.0]);
    }

    #[test]
    fn moments_match_the_direct_covariance() {
        let f = random_features(300, 8, 0.5, 4);
        let mut m = Moments::new(8);
        for chunk in f.split(70, 0) {
            m.add(&chunk);
        }
        let g = m.gaussian();
        let centred = &f - f.mean_dim(0, true, Kind::Double);
        let cov = centred.tr().matmul(&centred) / 299.0;
        assert!((g.cov - cov).abs().max().double_value(&[]) < 1e-12);
        assert_eq!(g.n, 300);
    }

    #[test]
    fn frechet_matches_the_closed_form_of_diagonal_gaussians() {
        // Diagonal covariances commute: d² = Σ (μ₁ − μ₂)² + Σ (√σ₁² − √σ₂²)².
        let g = |mean: &[f64], var: &[f64]| Gaussian {
            mean: Tensor::from_slice(mean),
            cov: Tensor::from_slice(var).diag(0),
            n: 10,
        };
        let (a, b) = (g(&[0.0, 1.0, 2.0], &[1.0, 4.0, 9.0]), g(&[1.0, 1.0, 0.0], &[4.0, 4.0, 1.0]));
        let expected = (1.0 + 0.0 + 4.0) + (1.0 + 0.0 + 4.0);
        let d = frechet_distance(&a, &b);
        assert!((d.fid - expected).abs() < 1e-10, "{} vs {expected}", d.fid);
    }

    #[test]
    fn frechet_is_zero_on_itself_and_symmetric() {
        // 100 samples of 256 dimensions: a singular covariance, as a small FID sample gives.
        let (a, b) = (random_features(100, 256, 0.0, 5), random_features(120, 256, 0.1, 6));
        let (ga, gb) = (Gaussian::of(&a), Gaussian::of(&b));
        let own = frechet_distance(&ga, &ga);
        assert!(own.fid.abs() < 1e-6, "FID of a set with itself: {}", own.fid);
        let (ab, ba) = (frechet_distance(&ga, &gb).fid, frechet_distance(&gb, &ga).fid);
        assert!(ab > 1.0, "{ab}");
        assert!((ab - ba).abs() < 1e-6 * ab, "{ab} vs {ba}");
    }

    #[test]
    fn kid_is_near_zero_on_itself_and_positive_between_shifted_sets() {
        let a = random_features(400, 32, 0.0, 7);
        let b = random_features(400, 32, 0.0, 8);
        let shifted = random_features(400, 32, 1.0, 9);
        tch::manual_seed(0);
        let same = kid(&a, &a, 20, 200);
        let similar = kid(&a, &b, 20, 200);
        let far = kid(&a, &shifted, 20, 200);
        assert!(same.mean.abs() < 0.05 * far.mean, "{same:?} vs {far:?}");
        assert!(similar.mean.abs() < 0.05 * far.mean, "{similar:?} vs {far:?}");
        assert!(far.mean > 0.1, "{far:?}");
        assert_eq!(far.subset_size, 200);
    }

    #[test]
    fn kid_of_one_subset_matches_the_formula_by_hand() {
        // Two 1-d sets {0, 1} and {2, 3}: k(x, y) = (xy + 1)³.
        let k = |x: f64, y: f64| (x * y + 1.0f64).powi(3);
        let expected = (2.0 * k(0.0, 1.0)) / 2.0 + (2.0 * k(2.0, 3.0)) / 2.0
            - 2.0 * (k(0.0, 2.0) + k(0.0, 3.0) + k(1.0, 2.0) + k(1.0, 3.0)) / 4.0;
        let a = Tensor::from_slice(&[0.0f64, 1.0]).reshape([2, 1]);
        let b = Tensor::from_slice(&[2.0f64, 3.0]).reshape([2, 1]);
        let r = kid(&a, &b, 3, 2);
        assert!((r.mean - expected).abs() < 1e-12 && r.std < 1e-12, "{r:?} vs {expected}");
    }
}
