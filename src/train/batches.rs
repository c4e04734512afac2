//! The batches of a run: dataset indices, timesteps and noise from their named streams (`Draws`), the
//! images mirrored where drawn, and the classes: a hook's (a clustering's clusters), else the
//! dataset's with some dropped to "no class" (−1) so the network also learns ε(x_t, ∅). One batched
//! select per step, no per-image work.
use super::draws::{Draws, StepDraws};
use super::hook::Hook;
use super::step;
use crate::config::RunConfig;
use crate::data::Dataset;
use crate::diffusion::formulation::Formulation;
use crate::diffusion::timesteps::TimestepSampler;
use crate::progress::phases::Phases;
use tch::{Device, Tensor};

pub struct Batches<'d> {
    draws: Draws,
    formulation: Formulation,
    timesteps: usize,
    data: &'d Dataset,
    classes: Option<i64>,
    image_shape: Vec<i64>,
}

/// One step's batch, owning what `step::Batch` borrows.
pub struct Prepared {
    pub x0: Tensor,
    pub t: Tensor,
    pub time: Option<Tensor>,
    pub noise: Tensor,
    pub offset: Option<Tensor>,
    pub self_condition: bool,
    pub labels: Option<Tensor>,
    pub importance: Option<Tensor>,
}

impl Prepared {
    /// Rank `rank`'s share of the batch among `size` ranks: images `rank·B/size .. (rank + 1)·B/size`
    /// with their t, noise and every other per-image draw (`train.processes` divides B).
    pub fn shard(&self, rank: usize, size: usize) -> Prepared {
        let b = self.x0.size()[0];
        let (n, start) = (b / size as i64, rank as i64 * (b / size as i64));
        let part = |t: &Tensor| t.narrow(0, start, n);
        Prepared {
            x0: part(&self.x0),
            t: part(&self.t),
            time: self.time.as_ref().map(part),
            noise: part(&self.noise),
            offset: self.offset.as_ref().map(part),
            self_condition: self.self_condition,
            labels: self.labels.as_ref().map(part),
            importance: self.importance.as_ref().map(part),
        }
    }

    pub fn batch(&self) -> step::Batch<'_> {
        step::Batch {
            x0: &self.x0,
            t: &self.t,
            time: self.time.as_ref(),
            noise: &self.noise,
            offset: self.offset.as_ref(),
            self_condition: self.self_condition,
            labels: self.labels.as_ref(),
            importance: self.importance.as_ref().map(|i| i.shallow_clone()),
        }
    }
}

impl<'d> Batches<'d> {
    pub fn new(cfg: &RunConfig, data: &'d Dataset, classes: Option<i64>, device: Device) -> Self {
        let draws = Draws::new(cfg.seed, data.len(), cfg.train.batch_size, device)
            .with_random_flip(cfg.data.random_flip)
            .with_label_dropout(classes.filter(|_| cfg.conditioning.classes).map(|_| cfg.conditioning.label_dropout))
            .with_offset_noise(cfg.train.offset_noise_strength > 0.0)
            .with_self_condition(cfg.model.self_condition())
            .with_time(Formulation::time_draw(&cfg.diffusion.formulation));
        Batches {
            draws,
            formulation: Formulation::of(&cfg.diffusion.formulation),
            timesteps: cfg.diffusion.timesteps,
            data,
            classes,
            image_shape: data.images.size()[1..].to_vec(),
        }
    }

    pub fn next(
        &mut self,
        step: usize,
        timesteps: &TimestepSampler,
        hooks: &[Box<dyn Hook + '_>],
        phases: &mut Option<Phases>,
    ) -> Prepared {
        let StepDraws { indices, t, importance, noise, flip, drop_label, offset, self_condition, time } =
            self.draws.step(step, &self.image_shape, timesteps);
        // A continuous formulation's t (drawn, so that ε stays DDPM's) is replaced by its noise levels
        // as indices: the loss window's quarters group by them.
        let t = time.as_ref().and_then(|u| self.formulation.level_index(u, self.timesteps)).unwrap_or(t);
        if let Some(p) = phases.as_mut() {
            p.mark("draws (indices, t, noise)");
        }
        let x0 = self.data.images.index_select(0, &indices);
        let x0 = match &flip {
            Some(f) => x0.flip([3]).where_self(&f.view([-1, 1, 1, 1]), &x0),
            None => x0,
        };
        let labels = hooks.iter().find_map(|h| h.labels(&indices, step)).or_else(|| {
            self.classes.map(|_| {
                let l = self.data.labels.index_select(0, &indices);
                match &drop_label {
                    Some(d) => l.where_scalarother(&d.logical_not(), -1),
                    None => l,
                }
            })
        });
        if let Some(p) = phases.as_mut() {
            p.mark("batch");
        }
        Prepared { x0, t, time, noise, offset, self_condition, labels, importance }
    }
}
