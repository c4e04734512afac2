//! What a run trains and updates every step: the network and its weights, Adam, the EMA, and the
//! timestep sampler (the loss history of importance-sampled t).
use super::batches::Prepared;
use super::checkpoints::{self, Core};
use super::{ema, optim, step};
use crate::config::{ClusterEmbedding, RunConfig, TimestepSampling, TrainConfig};
use crate::diffusion::timesteps::TimestepSampler;
use crate::diffusion::Diffusion;
use crate::distributed::{Group, Op};
use crate::models::{self, Denoiser};
use crate::progress::phases::Phases;
use crate::rng::reseed;
use crate::track::checkpoint::Checkpoint;
use anyhow::Result;
use tch::{nn, Device, Kind, Tensor};

pub struct Learner {
    pub vs: nn::VarStore,
    pub model: Box<dyn Denoiser>,
    pub opt: optim::Adam,
    pub ema: ema::Ema,
    pub timesteps: TimestepSampler,
}

/// One step's results: the loss (the optimised scalar and each sample's), the gradient norm on
/// logging steps, the learning rate used.
pub struct Update {
    pub loss: step::BatchLoss,
    pub grad_norm: Option<Tensor>,
    pub lr: f64,
}

fn mark(phases: &mut Option<Phases>, phase: &'static str) {
    if let Some(p) = phases.as_mut() {
        p.mark(phase)
    }
}

impl Learner {
    /// The network initialised from the run's "init" stream, and fresh optimizer state.
    pub fn new(cfg: &RunConfig, classes: Option<i64>, device: Device) -> Result<Self> {
        let tc = &cfg.train;
        reseed(cfg.seed, "init", 0);
        let vs = nn::VarStore::new(device);
        let model = models::build_for(cfg, classes, &vs.root());
        if cfg.cluster.on() && cfg.cluster.embedding == ClusterEmbedding::OneHot {
            models::embedding::fix_one_hot(&vs)?;
        }
        if tc.channels_last {
            for (_, mut v) in vs.variables() {
                v.set_data(&crate::device::channels_last(&v));
            }
        }
        let opt = optim::Adam::new(&vs, tc.lr);
        let ema = ema::Ema::new(&vs, tc.ema_decay, tc.ema_warmup);
        let timesteps = match tc.timestep_sampling {
            TimestepSampling::Uniform => TimestepSampler::uniform(cfg.diffusion.timesteps),
            TimestepSampling::LossSecondMoment => TimestepSampler::loss_second_moment(cfg.diffusion.timesteps),
        };
        Ok(Learner { vs, model, opt, ema, timesteps })
    }

    pub fn core(&self) -> Core<'_> {
        Core { vs: &self.vs, opt: &self.opt, ema: &self.ema, timesteps: &self.timesteps }
    }

    pub fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        checkpoints::restore(ck, &self.vs, &mut self.opt, &mut self.ema, &mut self.timesteps)
    }

    /// One optimizer step on `batch` (Ho et al. Algorithm 1): the loss, its gradient, Adam at the
    /// step's learning rate, the EMA, and the timestep sampler's history; the gradient norm only on
    /// logging steps (it costs a reduction).
    ///
    /// With `parallel`, this rank's share of the batch gives the loss (the share's mean over the number
    /// of ranks), the ranks' gradients are summed (so every rank holds the gradient of the whole
    /// batch's mean loss), and so are the per-image losses, each rank's in its own place: the update,
    /// the EMA and the timestep sampler then see what one process would.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        diffusion: &Diffusion,
        tc: &TrainConfig,
        device: Device,
        batch: &Prepared,
        step: usize,
        logging: bool,
        phases: &mut Option<Phases>,
        parallel: Option<&Group>,
    ) -> Result<Update> {
        let t = &batch.t;
        let loss = match parallel {
            None => {
                let loss = step::batch_loss(self.model.as_ref(), diffusion, tc, device, batch.batch());
                mark(phases, "forward and loss");
                self.opt.zero_grad();
                loss.loss.backward();
                mark(phases, "backward");
                loss
            }
            Some(g) => {
                let share = batch.shard(g.rank, g.size);
                let loss = step::batch_loss(self.model.as_ref(), diffusion, tc, device, share.batch());
                mark(phases, "forward and loss");
                self.opt.zero_grad();
                (&loss.loss / g.size as f64).backward();
                mark(phases, "backward");
                g.sum_gradients(self.opt.params())?;
                let (b, n) = (t.size()[0], share.t.size()[0]);
                let whole = Tensor::zeros([b + 1], (Kind::Float, device));
                whole.narrow(0, g.rank as i64 * n, n).copy_(&loss.per_sample.detach().to_kind(Kind::Float));
                whole.narrow(0, b, 1).copy_(&(loss.loss.detach().to_kind(Kind::Float) / g.size as f64).reshape([1]));
                g.all_reduce(&[&whole], Op::Sum)?;
                mark(phases, "all-reduce");
                step::BatchLoss { loss: whole.get(b), per_sample: whole.narrow(0, 0, b) }
            }
        };
        let grad_norm = logging.then(|| self.opt.grad_norm());
        let lr = optim::lr_at(tc.lr, tc.warmup_steps, tc.lr_decay, step, tc.steps);
        self.opt.set_lr(lr);
        self.opt.step();
        mark(phases, "adam");
        self.ema.update(&self.vs, step as i64 - 1);
        mark(phases, "ema");
        self.timesteps.update(t, &loss.per_sample.detach());
        mark(phases, "timestep sampler");
        Ok(Update { loss, grad_norm, lr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{simple_bn, ModelConfig};

    fn distance(a: &[Tensor], b: &[Tensor]) -> f64 {
        let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).square().sum(Kind::Double).double_value(&[])).sum();
        let n: f64 = a.iter().map(|x| x.square().sum(Kind::Double).double_value(&[])).sum();
        (d / n).sqrt()
    }

    fn running_stats(vs: &nn::VarStore) -> Vec<Tensor> {
        let mut v: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(n, _)| n.contains("running_mean") || n.contains("running_var"))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, t)| t.copy()).collect()
    }

    /// Batch norm with two ranks normalises each rank's half of the batch by that half's statistics,
    /// as torch's DistributedDataParallel without SyncBatchNorm: the summed gradient (read from Adam's
    /// first moment, 0.1·g after one step) is the mean of the two halves' gradients, each half through
    /// batch norm alone, and not the whole batch's; the running statistics each rank keeps are its own
    /// half's (rank 0's are the ones saved).
    #[test]
    fn batch_norm_statistics_are_per_rank() {
        let model = ModelConfig::SimpleBn(simple_bn::Config { channels: vec![8, 16], ..Default::default() });
        let mut cfg = RunConfig { model, ..Default::default() };
        cfg.data.image_size = 16;
        cfg.diffusion.timesteps = 50;
        cfg.train.batch_size = 4;
        let device = Device::Cpu;
        tch::manual_seed(3);
        let (x0, noise) = (
            Tensor::randn([4, 1, 16, 16], (Kind::Float, device)),
            Tensor::randn([4, 1, 16, 16], (Kind::Float, device)),
        );
        // Tensors are not shared between threads: each rank builds its own from these numbers.
        let (x0, noise) =
            (Vec::<f32>::try_from(x0.reshape([-1])).unwrap(), Vec::<f32>::try_from(noise.reshape([-1])).unwrap());
        let inputs = || {
            let batch = Prepared {
                x0: Tensor::from_slice(&x0).view([4, 1, 16, 16]),
                t: Tensor::from_slice(&[3i64, 10, 25, 40]),
                time: None,
                noise: Tensor::from_slice(&noise).view([4, 1, 16, 16]),
                offset: None,
                self_condition: false,
                labels: None,
                importance: None,
            };
            (Diffusion::new(&cfg, device), batch)
        };
        // The initialisation draws from the process's one generator: one rank at a time.
        let init = std::sync::Mutex::new(());
        let ranks = crate::distributed::tests::on_ranks(2, |g| {
            let (diffusion, batch) = inputs();
            let mut l = {
                let _one = init.lock().unwrap();
                Learner::new(&cfg, None, device).unwrap()
            };
            l.update(&diffusion, &cfg.train, device, &batch, 1, false, &mut None, Some(&g)).unwrap();
            let m: Vec<Tensor> =
                l.opt.state().into_iter().filter(|(n, _)| n.starts_with("adam.exp_avg.")).map(|(_, t)| t).collect();
            (m, running_stats(&l.vs))
        });
        let (diffusion, batch) = inputs();
        // One process: each half through the network alone, the two gradients averaged.
        let r = Learner::new(&cfg, None, device).unwrap();
        let half =
            |k: usize| step::batch_loss(r.model.as_ref(), &diffusion, &cfg.train, device, batch.shard(k, 2).batch());
        (half(0).loss / 2.0).backward();
        let after_first_half = running_stats(&r.vs);
        (half(1).loss / 2.0).backward();
        let per_rank: Vec<Tensor> = r.opt.params().iter().map(|p| p.grad() * 0.1).collect();
        // One process, the whole batch through batch norm at once.
        let w = Learner::new(&cfg, None, device).unwrap();
        step::batch_loss(w.model.as_ref(), &diffusion, &cfg.train, device, batch.batch()).loss.backward();
        let whole: Vec<Tensor> = w.opt.params().iter().map(|p| p.grad() * 0.1).collect();
        for (m, _) in &ranks {
            let d = distance(&per_rank, m);
            assert!(d < 1e-5, "the halves' mean gradient: {d}");
            assert!(distance(&whole, m) > 1e-3, "not the whole batch's statistics");
        }
        assert!(distance(&after_first_half, &ranks[0].1) < 1e-6, "rank 0 keeps its half's running statistics");
        assert!(distance(&ranks[0].1, &ranks[1].1) > 1e-4, "rank 1's are its own half's");
    }
}
