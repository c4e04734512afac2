//! The registry of formulations: which process a run's `Diffusion` trains and samples. DDPM is the
//! discrete chain of `process`; EDM (`edm`) and flow matching (`flow`) are continuous-time, with a
//! per-sample noise level (σ or t) drawn from its own stream. A new formulation: its module, its
//! `config::formulation` keys, and one arm in `Formulation::of`.
use super::edm::Edm;
use super::flow::Flow;
use crate::config::FormulationConfig;
use tch::{Kind, Tensor};

pub enum Formulation {
    Ddpm,
    Edm(Edm),
    Flow(Flow),
}

/// What a continuous formulation draws per image each training step, besides the noise: standard
/// normals (EDM's ln σ, logit-normal t) or uniforms on [0, 1) (uniform t).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDraw {
    Normal,
    Uniform,
}

impl Formulation {
    pub fn of(c: &FormulationConfig) -> Self {
        match c {
            FormulationConfig::Ddpm(_) => Formulation::Ddpm,
            FormulationConfig::Edm(e) => Formulation::Edm(Edm::new(e)),
            FormulationConfig::Flow(f) => Formulation::Flow(Flow::new(f)),
        }
    }

    /// A continuous formulation's per-image draws `time` as timestep indices in 0..T by noise level
    /// (0 the cleanest): the fraction Φ(n) for EDM (σ's quantile under its log-normal), t for flow,
    /// times T. What the loss window's quarters and the logged timesteps group by; None for DDPM.
    pub fn level_index(&self, time: &Tensor, timesteps: usize) -> Option<Tensor> {
        let fraction = match self {
            Formulation::Ddpm => return None,
            Formulation::Edm(_) => ((time / std::f64::consts::SQRT_2).erf() + 1.0) * 0.5,
            Formulation::Flow(flow) => flow.training_time(time),
        };
        let t = timesteps as f64;
        Some((fraction * t).floor().clamp(0.0, t - 1.0).to_kind(Kind::Int64))
    }

    /// The per-image draw of a continuous formulation (None: DDPM draws timestep indices).
    pub fn time_draw(c: &FormulationConfig) -> Option<TimeDraw> {
        use crate::config::formulation::flow::TimeSampling;
        match c {
            FormulationConfig::Ddpm(_) => None,
            FormulationConfig::Edm(_) => Some(TimeDraw::Normal),
            FormulationConfig::Flow(f) => Some(match f.time_sampling {
                TimeSampling::Uniform => TimeDraw::Uniform,
                TimeSampling::LogitNormal => TimeDraw::Normal,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::formulation::{edm, flow};

    /// EDM's n = 0 is σ's median (index T/2); n = ±∞-like draws go to the ends; flow's t = 0.3 is index
    /// 300 of 1000 (uniform t), its logit-normal u = 0 is t = ½.
    #[test]
    fn levels_index_by_noise() {
        let n = Tensor::from_slice(&[0.0f32, -8.0, 8.0]);
        let e = Formulation::of(&FormulationConfig::Edm(edm::Config::default()));
        let idx = Vec::<i64>::try_from(e.level_index(&n, 1000).unwrap()).unwrap();
        assert_eq!(idx, [500, 0, 999]);
        let uniform = flow::Config { time_sampling: flow::TimeSampling::Uniform, ..Default::default() };
        let f = Formulation::of(&FormulationConfig::Flow(uniform));
        let idx = Vec::<i64>::try_from(f.level_index(&Tensor::from_slice(&[0.3f64, 0.0]), 1000).unwrap()).unwrap();
        assert_eq!(idx, [300, 0]);
        let f = Formulation::of(&FormulationConfig::Flow(flow::Config::default()));
        let idx = Vec::<i64>::try_from(f.level_index(&Tensor::from_slice(&[0.0f32]), 1000).unwrap()).unwrap();
        assert_eq!(idx, [500]);
        assert!(Formulation::of(&FormulationConfig::default()).level_index(&n, 1000).is_none());
    }
}
