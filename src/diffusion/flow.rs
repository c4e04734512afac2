//! Flow matching / rectified flow with t = 1 noise and t = 0 data (Stable Diffusion 3's and diffusers'
//! direction): x_t = (1 − t) x_0 + (σ_min + (1 − σ_min) t) ε, the velocity v = (1 − σ_min) ε − x_0,
//! training t uniform or logit-normal, and the ODE dx/dt = v integrated from t = 1 to 0 by Euler, Heun
//! or the midpoint rule on diffusers' `FlowMatchEulerDiscreteScheduler` grid with SD3's shift. The
//! keys: `config::formulation::flow`. The network is a `ModelFn` of (x_t, 1000·t).
use super::edm::remaining;
use super::per_image;
use super::sampler::{record, ModelFn, SampleOutput, Sampling};
use crate::config::formulation::flow::{Config, TimeSampling};
use crate::config::SamplerConfig;
use std::ops::ControlFlow;
use tch::{Kind, Tensor};

/// The training steps of diffusers' flow-matching schedulers (`num_train_timesteps`): the network's
/// time input is 1000·t and the sampling grid starts from t's of this resolution.
pub const TRAIN_STEPS: f64 = 1000.0;

pub struct Flow {
    pub config: Config,
}

/// SD3's shift: t' = s t/(1 + (s − 1) t).
pub fn shifted(t: f64, shift: f64) -> f64 {
    shift * t / (1.0 + (shift - 1.0) * t)
}

impl Flow {
    pub fn new(config: &Config) -> Self {
        Flow { config: config.clone() }
    }

    /// Training t from the step's draws u: uniform u itself, or sigmoid(m + s u) of standard normals.
    pub fn training_time(&self, u: &Tensor) -> Tensor {
        match self.config.time_sampling {
            TimeSampling::Uniform => u.shallow_clone(),
            TimeSampling::LogitNormal => (u * self.config.scale + self.config.location).sigmoid(),
        }
    }

    /// (x_t, v) of the path at per-sample t `[B]`.
    pub fn path(&self, x0: &Tensor, noise: &Tensor, t: &Tensor) -> (Tensor, Tensor) {
        let s = self.config.sigma_min;
        let t = per_image(t, x0.dim());
        let x_t = x0 * (-&t + 1.0) + noise * (&t * (1.0 - s) + s);
        (x_t, noise * (1.0 - s) - x0)
    }

    /// Each image's mse between the network's velocity at (x_t, 1000 t) and v (mean over pixels).
    pub fn training_loss(&self, model: &mut ModelFn, x0: &Tensor, noise: &Tensor, u: &Tensor) -> Tensor {
        let t = self.training_time(u);
        let (x_t, v) = self.path(x0, noise, &t);
        let pred = model(&x_t, &(&t * TRAIN_STEPS));
        (pred - v).square().flatten(1, -1).mean_dim(1, false, Kind::Float)
    }

    /// The N + 1 times t_0 = 1 > … > t_{N−1} > t_N = 0 of an N-step sampler, as diffusers'
    /// `FlowMatchEulerDiscreteScheduler(shift=s).set_timesteps(N)`: its training t's are
    /// shift(i/1000), i = 1000 … 1; N times evenly spaced between the largest and the smallest of those,
    /// shifted again (diffusers applies the shift to the already shifted ends), then 0.
    pub fn times(&self, n: usize) -> Vec<f64> {
        let shift = self.config.shift;
        let (hi, lo) = (shifted(1.0, shift), shifted(1.0 / TRAIN_STEPS, shift));
        let mut out: Vec<f64> = (0..n)
            .map(|i| {
                let u = if n == 1 { hi } else { hi + (lo - hi) * i as f64 / (n - 1) as f64 };
                shifted(u, shift)
            })
            .collect();
        out.push(0.0);
        out
    }

    /// The network's velocity at (x, t), t `[B]`; with `clip`, the x̂_0 it implies is clamped to
    /// [-1, 1] and the velocity rebuilt from it: x̂_0 = (x − b v/(1 − σ_min))/(a + b/(1 − σ_min)) with
    /// a = 1 − t, b = σ_min + (1 − σ_min) t, then v' = (1 − σ_min)(x − a x̂_0)/b − x̂_0.
    pub fn velocity(&self, model: &mut ModelFn, x: &Tensor, t: f64, clip: bool) -> Tensor {
        let n = x.size()[0];
        let v = model(x, &Tensor::full([n], t * TRAIN_STEPS, (Kind::Float, x.device())));
        if !clip {
            return v;
        }
        let s = self.config.sigma_min;
        let (a, b) = (1.0 - t, s + (1.0 - s) * t);
        let x0 = ((x - &v * (b / (1.0 - s))) / (a + b / (1.0 - s))).clamp(-1.0, 1.0);
        (x - &x0 * a) * ((1.0 - s) / b) - x0
    }

    /// Integrates dx/dt = v from t = 1 (x = x_T ~ N(0, I), times 1 − … = 1 at σ_min = 0) to t = 0:
    /// Euler (N calls), Heun (Euler into t = 0, as diffusers' `FlowMatchHeunDiscreteScheduler`: 2N − 1)
    /// or the midpoint rule (2N). `on_step(k, x)` after each step; the trajectory's paper t are read as
    /// the fraction t/T of the steps still to go.
    pub fn sample(
        &self,
        sampler: &SamplerConfig,
        x_t: Tensor,
        run: &Sampling,
        model: &mut ModelFn,
        on_step: &mut dyn FnMut(usize, &Tensor) -> ControlFlow<()>,
    ) -> SampleOutput {
        let (clip, trajectory, timesteps) = (run.clip, run.trajectory, run.timesteps);
        #[derive(PartialEq)]
        enum Rule {
            Euler,
            Heun,
            Midpoint,
        }
        let _guard = tch::no_grad_guard();
        let (steps, rule) = match sampler {
            SamplerConfig::Euler(c) => (c.steps(timesteps), Rule::Euler),
            SamplerConfig::Heun(c) => (c.steps(timesteps), Rule::Heun),
            SamplerConfig::Midpoint(c) => (c.steps(timesteps), Rule::Midpoint),
            other => panic!("flow matching has no {} sampler (refused by validation)", other.name()),
        };
        let times = self.times(steps);
        let mut v = |x: &Tensor, t: f64| self.velocity(model, x, t, clip);
        let mut x = x_t;
        let mut recorded = Vec::new();
        for i in 0..steps {
            record(&mut recorded, trajectory, remaining(i, steps, timesteps), &x);
            let (t, next) = (times[i], times[i + 1]);
            let h = next - t;
            x = match rule {
                Rule::Euler => &x + v(&x, t) * h,
                Rule::Heun if next == 0.0 => &x + v(&x, t) * h,
                Rule::Heun => {
                    let d = v(&x, t);
                    let predicted = &x + &d * h;
                    let d_next = v(&predicted, next);
                    &x + (d + d_next) * (h / 2.0)
                }
                Rule::Midpoint => {
                    let half = &x + v(&x, t) * (h / 2.0);
                    &x + v(&half, t + h / 2.0) * h
                }
            };
            if on_step(i + 1, &x).is_break() {
                break;
            }
        }
        record(&mut recorded, trajectory, 0, &x);
        SampleOutput { x0: x, trajectory: recorded }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sampler::{euler, heun, midpoint};

    /// The path's ends and its velocity by hand: t = 0 is the data with σ_min ε (Lipman et al.'s
    /// conditional OT path keeps σ_min of noise there), t = 1 is (σ_min + 1 − σ_min) ε = ε;
    /// at σ_min = 0.1, t = 0.5: x = 0.5 x_0 + 0.55 ε, v = 0.9 ε − x_0, and dx/dt is v (finite
    /// differences of the path).
    #[test]
    fn the_path_and_its_velocity_by_hand() {
        let flow = Flow::new(&Config { sigma_min: 0.1, ..Config::default() });
        let x0 = Tensor::from_slice(&[0.4f64, -0.6]).reshape([1, 1, 1, 2]);
        let eps = Tensor::from_slice(&[1.2f64, 0.3]).reshape([1, 1, 1, 2]);
        let at = |t: f64| flow.path(&x0, &eps, &Tensor::from_slice(&[t]));
        let max = |t: Tensor| t.abs().max().double_value(&[]);
        assert!(max(at(0.0).0 - (&x0 + &eps * 0.1)) < 1e-15 && max(at(1.0).0 - &eps) < 1e-15);
        let (x, v) = at(0.5);
        assert!(max(x - (&x0 * 0.5 + &eps * 0.55)) < 1e-15);
        assert!(max(&v - (&eps * 0.9 - &x0)) < 1e-15);
        let h = 1e-6;
        let fd = (at(0.5 + h).0 - at(0.5 - h).0) / (2.0 * h);
        assert!(max(fd - v) < 1e-8);
        // Logit-normal t: sigmoid(m + s u); u = 0 gives sigmoid(m).
        let ln = Flow::new(&Config { location: 0.5, scale: 2.0, ..Config::default() });
        let t = ln.training_time(&Tensor::from_slice(&[0.0f64, 1.0])).to_kind(Kind::Double);
        let want = [1.0 / (1.0 + (-0.5f64).exp()), 1.0 / (1.0 + (-2.5f64).exp())];
        assert!((t.double_value(&[0]) - want[0]).abs() < 1e-12 && (t.double_value(&[1]) - want[1]).abs() < 1e-12);
    }

    /// The grid's ends and shift: t_0 = 1, t_N = 0, decreasing; shift 3 moves the middle up
    /// (3·0.5/(1 + 2·0.5) = 0.75).
    #[test]
    fn the_grid_and_its_shift() {
        let plain = Flow::new(&Config::default()).times(4);
        assert_eq!(plain.len(), 5);
        assert!((plain[0] - 1.0).abs() < 1e-15 && plain[4] == 0.0 && (plain[3] - 1e-3).abs() < 1e-15);
        assert!(plain.windows(2).all(|w| w[0] > w[1]));
        assert!((shifted(0.5, 3.0) - 0.75).abs() < 1e-15);
    }

    /// The straight path's ideal velocity for one data point a is v = (x − a)/t (σ_min = 0): x moves on
    /// the straight line x(t) = a + t (x_T − a), on which every rule is exact: after step i the state is
    /// there at t_{i+1} (checked at every step, so a wrong grid or step fails) and ends at a; with
    /// `clip` and a in [-1, 1] the velocity is unchanged.
    #[test]
    fn a_point_mass_is_sampled_exactly() {
        let flow = Flow::new(&Config { shift: 3.0, ..Config::default() });
        let a = -0.4;
        let start = Tensor::from_slice(&[0.7f32, -1.3, 2.0]).reshape([3, 1, 1, 1]);
        for sampler in [
            SamplerConfig::Euler(euler::Config { steps: 6, karras: true }),
            SamplerConfig::Heun(heun::Config { steps: 6, ..Default::default() }),
            SamplerConfig::Midpoint(midpoint::Config { steps: 6 }),
        ] {
            for clip in [false, true] {
                let mut model = |x: &Tensor, t: &Tensor| {
                    let t = (t.to_kind(Kind::Double) / TRAIN_STEPS).reshape([-1, 1, 1, 1]);
                    ((x.to_kind(Kind::Double) - a) / t).to_kind(Kind::Float)
                };
                let times = flow.times(6);
                let mut off = 0.0f64;
                let x_start = start.to_kind(Kind::Double);
                let run = Sampling { clip, ..Sampling::plain(1000) };
                let out = flow.sample(&sampler, start.copy(), &run, &mut model, &mut |k, x| {
                    let line = (&x_start - a) * times[k] + a;
                    off = off.max((x.to_kind(Kind::Double) - line).abs().max().double_value(&[]));
                    ControlFlow::Continue(())
                });
                assert!(off < 1e-5, "{} clip {clip}: off the line by {off}", sampler.label(None));
                let err = (out.x0 - a).abs().max().double_value(&[]);
                assert!(err < 1e-5, "{} clip {clip}: {err}", sampler.label(None));
            }
        }
    }
}
