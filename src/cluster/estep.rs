//! The E-step's estimate of L_k(x_i) = −ELBO of image i under cluster k, in nats: the bound that
//! `eval bpd` computes (L_T + Σ L_{t−1} + L_0), with the decoder term L_0 evaluated exactly and the
//! T − 1 diffusion terms estimated by stratified sampling: `strata` timesteps per image, one drawn
//! uniformly in each of `strata` geometric slices of t = 2..T, each standing for its slice's terms.
//!
//! Common random numbers: for an image, every cluster k is evaluated at the same timesteps and the
//! same ε, so the differences L_k − L_j that decide the responsibilities carry only the part of the
//! Monte-Carlo error that differs between the conditioned networks. The draws come from the stream
//! (run seed, "e-step/<iteration>", chunk): fresh each E-step, identical on a resumed run.
use crate::diffusion::likelihood::prior_bpd;
use crate::diffusion::Diffusion;
use crate::models::Denoiser;
use crate::rng::reseed;
use tch::{Kind, Tensor};

/// The stratification of the diffusion terms t = 1..T−1 (0-based indices) into `strata` slices,
/// each slice's first index and size: geometric, the k-th slice starting near T^(k/strata), so that
/// the small t, where the terms are largest and change fastest, are sampled most finely.
pub fn strata(timesteps: usize, strata: usize) -> Vec<(i64, i64)> {
    let (t, s) = (timesteps as i64, (strata as i64).clamp(1, (timesteps as i64 - 1).max(1)));
    let mut bounds = vec![1i64];
    for j in 1..s {
        let at = (t as f64).powf(j as f64 / s as f64).round() as i64;
        // At least one timestep per slice, and room for the slices after it.
        let at = at.max(bounds[j as usize - 1] + 1).min(t - (s - j));
        bounds.push(at);
    }
    bounds.push(t);
    bounds.windows(2).map(|w| (w[0], w[1] - w[0])).collect()
}

/// How the E-step evaluates: `strata` diffusion timesteps per image (plus the decoder term), and
/// (image, t, cluster) triples per network call.
#[derive(Debug, Clone, Copy)]
pub struct EStep {
    pub strata: usize,
    pub batch: i64,
    /// The run's seed, which the draws' streams start from.
    pub seed: u64,
}

impl EStep {
    /// Network evaluations per image: every cluster at every evaluated t.
    pub fn evaluations_per_image(&self, q: i64) -> i64 {
        q * (self.strata as i64 + 1)
    }

    /// L_k(x_i) in nats, `[N, Q]` f64 on the images' device, for a network conditioned on the
    /// cluster through its class-embedding path.
    pub fn negative_bounds(
        &self,
        diffusion: &Diffusion,
        model: &dyn Denoiser,
        images: &Tensor,
        q: i64,
        iteration: usize,
        progress: &mut dyn FnMut(i64),
    ) -> Tensor {
        let _guard = tch::no_grad_guard();
        let (n, device) = (images.size()[0], images.device());
        let dims: i64 = images.size()[1..].iter().product();
        let slices = strata(diffusion.timesteps(), self.strata);
        let m = slices.len() as i64 + 1;
        // Column 0 is the decoder term (t index 0, weight 1); then one t per slice, weighted by its size.
        let start = Tensor::from_slice(&std::iter::once(0).chain(slices.iter().map(|s| s.0)).collect::<Vec<i64>>())
            .to_device(device);
        let size = Tensor::from_slice(&std::iter::once(1).chain(slices.iter().map(|s| s.1)).collect::<Vec<i64>>())
            .to_device(device);
        let weight = size.to_kind(Kind::Double);
        let per_chunk = (self.batch / (q * m)).max(1);
        let stream = format!("e-step/{iteration}");
        let mut out = Vec::new();
        for (c, first) in (0..n).step_by(per_chunk as usize).enumerate() {
            let b = per_chunk.min(n - first);
            let x0 = images.narrow(0, first, b);
            reseed(self.seed, &stream, c as u64);
            let u = Tensor::rand([b, m], (Kind::Double, device));
            let t = (&start + (u * size.to_kind(Kind::Double)).floor().to_kind(Kind::Int64)).flatten(0, -1);
            let mut shape = vec![b * m];
            shape.extend(&images.size()[1..]);
            let noise = Tensor::randn(shape.as_slice(), (Kind::Float, device));
            let x0m = x0.repeat_interleave_self_int(m, 0, None);
            // All clusters in one call: cluster k's copy of the (image, t) pairs at rows k·b·m….
            let labels = Tensor::arange(q, (Kind::Int64, device)).repeat_interleave_self_int(b * m, 0, None);
            let mut network = |x: &Tensor, t: &Tensor| model.forward_t(x, t, Some(&labels), false);
            let rep = |x: &Tensor| x.repeat([q].iter().chain(&vec![1; x.dim() - 1]).copied().collect::<Vec<i64>>());
            let (bits, _) = diffusion.bound_terms(&mut network, &rep(&x0m), &rep(&t), &rep(&noise));
            let terms = bits.to_kind(Kind::Double).view([q, b, m]) * weight.view([1, 1, m]);
            let prior = prior_bpd(&diffusion.schedule, &x0);
            let bpd = terms.sum_dim_intlist(2, false, Kind::Double).tr() + prior.unsqueeze(1);
            out.push(bpd * (dims as f64 * std::f64::consts::LN_2));
            progress(first + b);
        }
        Tensor::cat(&out, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strata_cover_the_diffusion_terms_once() {
        for (t, s) in [(1000, 4), (1000, 7), (10, 3), (5, 10), (2, 4)] {
            let slices = strata(t, s);
            let mut next = 1;
            for &(first, size) in &slices {
                assert_eq!(first, next, "T = {t}, {s} strata: {slices:?}");
                assert!(size >= 1);
                next = first + size;
            }
            assert_eq!(next, t as i64, "T = {t}, {s} strata: {slices:?}");
        }
        // 1000^(1/4) = 5.6, 1000^(1/2) = 31.6, 1000^(3/4) = 177.8.
        assert_eq!(strata(1000, 4), vec![(1, 5), (6, 26), (32, 146), (178, 822)]);
        // Where T^(k/s) crowds, each slice still gets a timestep.
        assert_eq!(strata(10, 5), vec![(1, 1), (2, 1), (3, 1), (4, 2), (6, 4)]);
    }
}
