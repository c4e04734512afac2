//! EDM (Karras et al. 2022): the σ-parameterised process x = x_0 + σ n, the network's
//! preconditioning, the training loss and the samplers (Heun, Algorithm 1/2; Euler) over the Karras σ
//! schedule (eq. 5). The keys and their meaning: `config::formulation::edm`. Pure functions of tensors;
//! the network is a `ModelFn` of (input, time) called with c_in x and 1000·c_noise = 250 ln σ.
use super::per_image;
use super::sampler::{record, ModelFn, SampleOutput, Sampling};
use crate::config::formulation::edm::Config;
use crate::config::SamplerConfig;
use std::ops::ControlFlow;
use tch::{Kind, Tensor};

/// The network's time input for σ: 1000·c_noise = 250 ln σ.
pub fn time_input(sigma: &Tensor) -> Tensor {
    sigma.log() * 250.0
}

pub struct Edm {
    pub config: Config,
}

/// The preconditioning of Table 1 at per-sample σ `[B]`, each shaped `[B, 1, 1, 1]`.
pub struct Scalings {
    pub c_skip: Tensor,
    pub c_out: Tensor,
    pub c_in: Tensor,
}

impl Edm {
    pub fn new(config: &Config) -> Self {
        Edm { config: config.clone() }
    }

    /// c_skip = σ_d²/(σ² + σ_d²), c_out = σ σ_d/√(σ² + σ_d²), c_in = 1/√(σ² + σ_d²).
    pub fn scalings(&self, sigma: &Tensor, ndim: usize) -> Scalings {
        let sd = self.config.sigma_data;
        let s = per_image(sigma, ndim);
        let total = s.square() + sd * sd;
        Scalings { c_skip: total.reciprocal() * (sd * sd), c_out: &s * sd * total.rsqrt(), c_in: total.rsqrt() }
    }

    /// λ(σ) = (σ² + σ_d²)/(σ σ_d)².
    pub fn loss_weight(&self, sigma: &Tensor) -> Tensor {
        let sd = self.config.sigma_data;
        (sigma.square() + sd * sd) / (sigma * sd).square()
    }

    /// σ = exp(P_mean + P_std n) of standard normals n.
    pub fn training_sigma(&self, n: &Tensor) -> Tensor {
        (n * self.config.p_std + self.config.p_mean).exp()
    }

    /// D(x; σ) = c_skip x + c_out F(c_in x, 250 ln σ), σ `[B]`.
    pub fn denoise(&self, model: &mut ModelFn, x: &Tensor, sigma: &Tensor) -> Tensor {
        let c = self.scalings(sigma, x.dim());
        let f = model(&(x * &c.c_in), &time_input(sigma));
        &c.c_skip * x + &c.c_out * f
    }

    /// Each image's λ(σ)‖D(x_0 + σ ε; σ) − x_0‖² (mean over pixels) at σ = exp(P_mean + P_std n),
    /// computed as k-diffusion's `Denoiser.loss` does: ‖F − (x_0 − c_skip x)/c_out‖², which is the same
    /// since λ c_out² = 1.
    pub fn training_loss(&self, model: &mut ModelFn, x0: &Tensor, noise: &Tensor, n: &Tensor) -> Tensor {
        self.loss_at(model, x0, noise, &self.training_sigma(n))
    }

    /// The per-image loss at given σ `[B]` (`training_loss` draws σ).
    pub fn loss_at(&self, model: &mut ModelFn, x0: &Tensor, noise: &Tensor, sigma: &Tensor) -> Tensor {
        let c = self.scalings(sigma, x0.dim());
        let x = x0 + noise * per_image(sigma, x0.dim());
        let f = model(&(&x * &c.c_in), &time_input(sigma));
        let target = (x0 - &c.c_skip * &x) / &c.c_out;
        (f - target).square().flatten(1, -1).mean_dim(1, false, Kind::Float)
    }

    /// σ_0 > … > σ_{N−1} of eq. 5 between σ_max and σ_min with ρ, then σ_N = 0, computed in float32 by
    /// libtorch as k-diffusion's `get_sigmas_karras` computes them (the same kernels: the same values).
    pub fn sigmas(&self, n: usize) -> Vec<f64> {
        let c = &self.config;
        let (max, min) = (c.sigma_max.powf(1.0 / c.rho), c.sigma_min.powf(1.0 / c.rho));
        let ramp = Tensor::linspace(0.0, 1.0, n as i64, (Kind::Float, tch::Device::Cpu));
        let sigmas = (ramp * (min - max) + max).pow_tensor_scalar(c.rho);
        let mut out = Vec::<f64>::try_from(sigmas.to_kind(Kind::Double)).expect("float sigmas");
        out.push(0.0);
        out
    }

    /// Samples from x_T ~ N(0, I) (scaled to σ_0 here) with Euler or Heun (Algorithm 2 with churn:
    /// γ_i = min(S_churn/N, √2 − 1) for σ_i in [S_tmin, S_tmax], else 0; σ̂ = σ_i (1 + γ_i); x +=
    /// √(σ̂² − σ_i²) S_noise z, z drawn every step from libtorch's generator, as k-diffusion's
    /// `sample_heun` draws it). D is clamped to [-1, 1] with `clip`. `on_step(k, x)` after each step;
    /// the trajectory's paper t are read as the fraction t/T of the steps still to go, its states
    /// recorded as x/√(σ² + 1).
    pub fn sample(
        &self,
        sampler: &SamplerConfig,
        x_t: Tensor,
        run: &Sampling,
        model: &mut ModelFn,
        on_step: &mut dyn FnMut(usize, &Tensor) -> ControlFlow<()>,
    ) -> SampleOutput {
        let (clip, trajectory, timesteps) = (run.clip, run.trajectory, run.timesteps);
        let _guard = tch::no_grad_guard();
        let (steps, heun, churn) = match sampler {
            SamplerConfig::Euler(c) => (c.steps(timesteps), false, None),
            SamplerConfig::Heun(c) => (c.steps(timesteps), true, c.churns().then_some(c)),
            other => panic!("EDM has no {} sampler (refused by validation)", other.name()),
        };
        let sigmas = self.sigmas(steps);
        let (n, device) = (x_t.size()[0], x_t.device());
        let full = |v: f64| Tensor::full([n], v, (Kind::Float, device));
        let mut denoise = |x: &Tensor, sigma: f64| {
            let d = self.denoise(model, x, &full(sigma));
            if clip {
                d.clamp(-1.0, 1.0)
            } else {
                d
            }
        };
        let mut x = x_t * sigmas[0];
        let mut recorded = Vec::new();
        for i in 0..steps {
            let (sigma, next) = (sigmas[i], sigmas[i + 1]);
            // Shown as the variance-preserving x/√(σ² + 1), as the Karras samplers on DDPM show it.
            record(&mut recorded, trajectory, remaining(i, steps, timesteps), &(&x / (sigma * sigma + 1.0).sqrt()));
            let mut sigma_hat = sigma;
            if let Some(c) = churn {
                let in_range = c.s_tmin <= sigma && sigma <= c.s_tmax();
                let gamma = if in_range { (c.s_churn / steps as f64).min(2f64.sqrt() - 1.0) } else { 0.0 };
                let eps = x.randn_like() * c.s_noise;
                sigma_hat = sigma * (gamma + 1.0);
                if gamma > 0.0 {
                    x = &x + eps * (sigma_hat * sigma_hat - sigma * sigma).sqrt();
                }
            }
            let d = (&x - denoise(&x, sigma_hat)) / sigma_hat;
            let dt = next - sigma_hat;
            x = if !heun || next == 0.0 {
                &x + &d * dt
            } else {
                let predicted = &x + &d * dt;
                let d_next = (&predicted - denoise(&predicted, next)) / next;
                &x + (d + d_next) / 2.0 * dt
            };
            if on_step(i + 1, &x).is_break() {
                break;
            }
        }
        record(&mut recorded, trajectory, 0, &x);
        SampleOutput { x0: x, trajectory: recorded }
    }
}

/// The paper timestep a continuous sampler's step `i` of `steps` stands for in a trajectory: the
/// fraction of steps still to go, times T.
pub fn remaining(i: usize, steps: usize, timesteps: usize) -> usize {
    ((steps - i) as f64 / steps as f64 * timesteps as f64).round() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    /// Table 1 at σ_d = 0.5, σ = 1.5 worked out by hand: σ² + σ_d² = 2.5, c_skip = 0.25/2.5 = 0.1,
    /// c_out = 0.75/√2.5, c_in = 1/√2.5, λ = 2.5/0.5625; and D = x_0 exactly where F is the ideal
    /// output (x_0 − c_skip x)/c_out, so the loss is 0 there and λ c_out² = 1.
    #[test]
    fn preconditioning_matches_table_1() {
        let edm = Edm::new(&Config::default());
        let sigma = Tensor::from_slice(&[1.5f64]);
        let c = edm.scalings(&sigma, 4);
        let v = |t: &Tensor| t.double_value(&[0, 0, 0, 0]);
        assert!(close(v(&c.c_skip), 0.1, 1e-12));
        assert!(close(v(&c.c_out), 0.75 / 2.5f64.sqrt(), 1e-12));
        assert!(close(v(&c.c_in), 1.0 / 2.5f64.sqrt(), 1e-12));
        let lambda = edm.loss_weight(&sigma).double_value(&[0]);
        assert!(close(lambda, 2.5 / 0.5625, 1e-12));
        assert!(close(lambda * v(&c.c_out).powi(2), 1.0, 1e-12));
        // n = (ln 1.5 + 1.2)/1.2 gives σ = 1.5; an ideal F gives loss 0 and D = x_0.
        let n = Tensor::from_slice(&[(1.5f64.ln() + 1.2) / 1.2]);
        let x0 = Tensor::from_slice(&[0.3f64, -0.8]).reshape([1, 1, 1, 2]);
        let noise = Tensor::from_slice(&[1.1f64, 0.4]).reshape([1, 1, 1, 2]);
        let x = &x0 + &noise * 1.5;
        let ideal = (&x0 - &c.c_skip * &x) / &c.c_out;
        let mut oracle = |_: &Tensor, t: &Tensor| {
            assert!(close(t.double_value(&[0]), 250.0 * 1.5f64.ln(), 1e-9), "the network sees 250 ln σ");
            ideal.shallow_clone()
        };
        let loss = edm.training_loss(&mut oracle, &x0, &noise, &n).double_value(&[0]);
        assert!(loss.abs() < 1e-20, "{loss}");
        let d = edm.denoise(&mut oracle, &x, &Tensor::from_slice(&[1.5f64]));
        assert!((d - &x0).abs().max().double_value(&[]) < 1e-12);
        // A unit error in F costs exactly 1 per pixel: λ‖D − x_0‖² with D off by c_out.
        let mut off = |_: &Tensor, _: &Tensor| &ideal + 1.0;
        let loss = edm.training_loss(&mut off, &x0, &noise, &n).double_value(&[0]);
        assert!(close(loss, 1.0, 1e-12), "{loss}");
    }

    /// Classifier-free guidance mixes the network's raw outputs, (1 + w) F_c − w F_u; D is affine in F
    /// with the same c_skip and c_out, so the guided denoiser is (1 + w) D_c − w D_u, the guidance of
    /// Ho & Salimans on the denoised image.
    #[test]
    fn guidance_on_the_network_is_guidance_on_the_denoiser() {
        let edm = Edm::new(&Config::default());
        let x = Tensor::from_slice(&[0.7f64, -2.0, 5.0]).reshape([3, 1, 1, 1]);
        let sigma = Tensor::from_slice(&[0.3f64, 2.0, 40.0]);
        let (fc, fu) = (|x: &Tensor, _: &Tensor| x.sin() * 0.5, |x: &Tensor, _: &Tensor| x.cos() * 0.2);
        let w = 2.5;
        let mut guided = |x: &Tensor, t: &Tensor| crate::diffusion::guidance::guide(&fc(x, t), &fu(x, t), w);
        let (mut c, mut u) = (fc, fu);
        let want = edm.denoise(&mut c, &x, &sigma) * (1.0 + w) - edm.denoise(&mut u, &x, &sigma) * w;
        let got = edm.denoise(&mut guided, &x, &sigma);
        assert!((got - want).abs().max().double_value(&[]) < 1e-12);
    }

    /// Eq. 5's ends: σ_0 = σ_max, σ_{N−1} = σ_min, σ_N = 0, decreasing; ρ = 1 is linear in σ.
    #[test]
    fn karras_sigmas_have_the_papers_ends() {
        let edm = Edm::new(&Config::default());
        let s = edm.sigmas(18);
        assert_eq!(s.len(), 19);
        assert!(close(s[0], 80.0, 1e-6) && close(s[17], 0.002, 1e-6) && s[18] == 0.0);
        assert!(s.windows(2).all(|w| w[0] > w[1]));
        let linear = Edm::new(&Config { rho: 1.0, sigma_min: 1.0, sigma_max: 3.0, ..Config::default() }).sigmas(3);
        assert!(close(linear[1], 2.0, 1e-6), "{linear:?}");
    }

    /// Data of one point x_0 = a: the ideal denoiser is D = a at every σ, the probability-flow ODE
    /// dx/dσ = (x − a)/σ is solved by x = a + (σ/σ_0)(x_T σ_0 − a), and Euler and Heun are exact on it:
    /// after step i the state is on that line at σ_{i+1} (checked at every step, so a wrong grid or a
    /// wrong step fails), and every sampler ends at a; churn moves the state off the line, so with it
    /// only the end is checked.
    #[test]
    fn a_point_mass_is_sampled_exactly() {
        let edm = Edm::new(&Config::default());
        let a = 0.25;
        let start = Tensor::from_slice(&[0.7f32, -1.3, 2.0]).reshape([3, 1, 1, 1]);
        for sampler in [
            SamplerConfig::Euler(crate::config::sampler::euler::Config { steps: 7, karras: true }),
            SamplerConfig::Heun(crate::config::sampler::heun::Config { steps: 7, ..Default::default() }),
            SamplerConfig::Heun(crate::config::sampler::heun::Config { steps: 7, s_churn: 40.0, ..Default::default() }),
        ] {
            // F such that D = a: F = (a − c_skip x)/c_out, written from the network's inputs.
            let sd = 0.5f64;
            let mut model = |x_in: &Tensor, t: &Tensor| {
                let sigma = (t.to_kind(Kind::Double) / 250.0).exp().reshape([-1, 1, 1, 1]);
                let total = sigma.square() + sd * sd;
                let x = x_in.to_kind(Kind::Double) * total.sqrt();
                let f = (-(x * (sd * sd) / &total) + a) / (&sigma * sd * total.rsqrt());
                f.to_kind(Kind::Float)
            };
            let sigmas = edm.sigmas(7);
            let x_start = start.to_kind(Kind::Double) * sigmas[0];
            let churns = matches!(&sampler, SamplerConfig::Heun(h) if h.churns());
            let mut off = 0.0f64;
            let out = edm.sample(&sampler, start.copy(), &Sampling::plain(1000), &mut model, &mut |k, x| {
                let line = (&x_start - a) * (sigmas[k] / sigmas[0]) + a;
                off = off.max((x.to_kind(Kind::Double) - line).abs().max().double_value(&[]));
                ControlFlow::Continue(())
            });
            assert!(churns || off < 1e-3, "{}: off the ODE's line by {off}", sampler.label(None));
            let err = (out.x0 - a).abs().max().double_value(&[]);
            assert!(err < 1e-4, "{}: {err}", sampler.label(None));
        }
    }
}
