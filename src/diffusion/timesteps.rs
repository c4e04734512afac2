//! How training timesteps are drawn.
//!
//! `LossSecondMoment` is improved-diffusion's `LossSecondMomentResampler` (Nichol & Dhariwal 2021,
//! §3.3): keep the last 10 losses seen at each t; until every t has 10, draw uniformly; then draw t
//! with p_t ∝ √E[L_t²], mixed with 0.1% of the uniform distribution, and weight each sample's loss by
//! 1/(T p_t) so that the objective's expectation is unchanged. Its bookkeeping reads the batch's
//! losses back to the host every step, as improved-diffusion does; uniform sampling never does.
use tch::{Device, Kind, Tensor};

const HISTORY: usize = 10;
const UNIFORM_PROB: f64 = 0.001;

pub enum TimestepSampler {
    Uniform { timesteps: usize },
    LossSecondMoment { timesteps: usize, history: Vec<[f64; HISTORY]>, seen: Vec<usize> },
}

impl TimestepSampler {
    pub fn uniform(timesteps: usize) -> Self {
        TimestepSampler::Uniform { timesteps }
    }

    pub fn loss_second_moment(timesteps: usize) -> Self {
        TimestepSampler::LossSecondMoment {
            timesteps,
            history: vec![[0.0; HISTORY]; timesteps],
            seen: vec![0; timesteps],
        }
    }

    /// Draws `n` timestep indices and, when they are not uniform, the loss weights 1/(T p_t).
    pub fn sample(&self, n: i64, device: Device) -> (Tensor, Option<Tensor>) {
        match self.probabilities() {
            None => (Tensor::randint(self.timesteps() as i64, [n], (Kind::Int64, device)), None),
            Some(p) => {
                let p = Tensor::from_slice(&p).to_device(device);
                let t = p.multinomial(n, true);
                let weights = (p.index_select(0, &t) * self.timesteps() as f64).reciprocal().to_kind(Kind::Float);
                (t, Some(weights))
            }
        }
    }

    /// Records the unweighted per-sample losses of a batch (a host read-back for importance sampling).
    pub fn update(&mut self, t: &Tensor, losses: &Tensor) {
        if let TimestepSampler::LossSecondMoment { history, seen, .. } = self {
            let t = Vec::<i64>::try_from(t.to_device(Device::Cpu)).expect("int64 timesteps");
            let losses = Vec::<f64>::try_from(losses.to_device(Device::Cpu).to_kind(Kind::Double)).expect("losses");
            for (&ti, &loss) in t.iter().zip(&losses) {
                let ti = ti as usize;
                history[ti][seen[ti] % HISTORY] = loss;
                seen[ti] += 1;
            }
        }
    }

    pub fn timesteps(&self) -> usize {
        match self {
            TimestepSampler::Uniform { timesteps } | TimestepSampler::LossSecondMoment { timesteps, .. } => *timesteps,
        }
    }

    /// What a checkpoint needs to continue the same draws: the loss history (JSON; null if uniform).
    pub fn state(&self) -> serde_json::Value {
        match self {
            TimestepSampler::Uniform { .. } => serde_json::Value::Null,
            TimestepSampler::LossSecondMoment { history, seen, .. } => {
                serde_json::json!({ "history": history, "seen": seen })
            }
        }
    }

    pub fn load_state(&mut self, state: &serde_json::Value) -> anyhow::Result<()> {
        if let TimestepSampler::LossSecondMoment { history, seen, .. } = self {
            *history = serde_json::from_value(state["history"].clone())?;
            *seen = serde_json::from_value(state["seen"].clone())?;
        }
        Ok(())
    }

    /// The sampling distribution over t, or `None` while it is uniform.
    pub fn probabilities(&self) -> Option<Vec<f64>> {
        let TimestepSampler::LossSecondMoment { timesteps, history, seen } = self else { return None };
        if seen.iter().any(|&s| s < HISTORY) {
            return None;
        }
        let rms: Vec<f64> =
            history.iter().map(|h| (h.iter().map(|l| l * l).sum::<f64>() / HISTORY as f64).sqrt()).collect();
        let total: f64 = rms.iter().sum();
        Some(rms.iter().map(|r| r / total * (1.0 - UNIFORM_PROB) + UNIFORM_PROB / *timesteps as f64).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three timesteps whose losses are constant 1, 2 and 3: √E[L²] = 1, 2, 3, so p = (1/6, 2/6, 3/6)
    /// · 0.999 + 0.001/3, and weights 1/(3 p).
    #[test]
    fn importance_distribution_follows_the_loss_second_moment() {
        let mut s = TimestepSampler::loss_second_moment(3);
        assert!(s.probabilities().is_none(), "uniform until every t has 10 losses");
        for _ in 0..HISTORY {
            s.update(&Tensor::from_slice(&[0i64, 1, 2]), &Tensor::from_slice(&[1f32, 2., 3.]));
        }
        let p = s.probabilities().unwrap();
        for (i, k) in [1.0, 2.0, 3.0].iter().enumerate() {
            assert!((p[i] - (k / 6.0 * 0.999 + 0.001 / 3.0)).abs() < 1e-12);
        }
        tch::manual_seed(0);
        let (t, w) = s.sample(20_000, Device::Cpu);
        let w = w.unwrap();
        let counts = Vec::<i64>::try_from(t.bincount::<Tensor>(None, 3)).unwrap();
        assert!((counts[2] as f64 / 20_000.0 - p[2]).abs() < 0.02, "{counts:?}");
        // The weights undo the sampling: E[w] over the draws is 1.
        assert!((w.mean(Kind::Double).double_value(&[]) - 1.0).abs() < 0.02);
    }

    #[test]
    fn uniform_sampler_has_no_weights_and_covers_the_range() {
        tch::manual_seed(0);
        let (t, w) = TimestepSampler::uniform(7).sample(1000, Device::Cpu);
        assert!(w.is_none());
        assert_eq!(t.min().int64_value(&[]), 0);
        assert_eq!(t.max().int64_value(&[]), 6);
    }
}
