//! Accumulates the training loss between two log lines on the device, so that the host reads it
//! back once per logging interval instead of once per step.
use std::time::Instant;
use tch::{Device, Kind, Tensor};

pub struct Window {
    device: Device,
    timesteps: usize,
    loss: Tensor,
    quarter_sum: Tensor,
    quarter_count: Tensor,
    steps: usize,
    started: Instant,
}

pub struct WindowMeans {
    pub loss: f64,
    pub quarters: [Option<f64>; 4],
    pub steps: usize,
    pub seconds: f64,
}

impl Window {
    pub fn new(device: Device, timesteps: usize) -> Self {
        Self::since(device, timesteps, Instant::now())
    }

    /// A window whose clock started at `started` (the beginning of its first step).
    pub fn since(device: Device, timesteps: usize, started: Instant) -> Self {
        let zeros = |n: i64| Tensor::zeros([n], (Kind::Float, device));
        Self { device, timesteps, loss: zeros(1), quarter_sum: zeros(4), quarter_count: zeros(4), steps: 0, started }
    }

    /// Adds one step: its optimised loss, and its unweighted per-sample losses by quarter of t.
    pub fn add(&mut self, loss: &Tensor, per_sample: &Tensor, t: &Tensor) {
        self.loss += loss.detach();
        let quarter = (t * 4).floor_divide_scalar(self.timesteps as i64);
        self.quarter_sum = self.quarter_sum.index_add(0, &quarter, &per_sample.detach());
        self.quarter_count = self.quarter_count.index_add(0, &quarter, &per_sample.ones_like());
        self.steps += 1;
    }

    /// The means since the last call (one device-to-host copy), and a fresh window.
    pub fn take(&mut self) -> WindowMeans {
        let all = Tensor::cat(&[&self.loss, &self.quarter_sum, &self.quarter_count], 0).to_kind(Kind::Double);
        let v = Vec::<f64>::try_from(all.to_device(Device::Cpu)).expect("window values");
        let quarters = std::array::from_fn(|q| (v[5 + q] > 0.0).then(|| v[1 + q] / v[5 + q]));
        let means = WindowMeans {
            loss: v[0] / self.steps.max(1) as f64,
            quarters,
            steps: self.steps,
            seconds: self.started.elapsed().as_secs_f64(),
        };
        *self = Window::new(self.device, self.timesteps);
        means
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// T = 8: t = 0, 1 fall in quarter 0, t = 6, 7 in quarter 3. Two steps of losses averaged by hand.
    #[test]
    fn window_means_by_quarter() {
        let mut w = Window::new(Device::Cpu, 8);
        w.add(&Tensor::from_slice(&[1.0f32]), &Tensor::from_slice(&[1.0f32, 3.0]), &Tensor::from_slice(&[0i64, 7]));
        w.add(&Tensor::from_slice(&[3.0f32]), &Tensor::from_slice(&[5.0f32, 2.0]), &Tensor::from_slice(&[1i64, 6]));
        let m = w.take();
        assert_eq!(m.loss, 2.0);
        assert_eq!(m.steps, 2);
        assert_eq!(m.quarters, [Some(3.0), None, None, Some(2.5)]);
        assert_eq!(w.take().steps, 0, "a fresh window after take");
    }
}
