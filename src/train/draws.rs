//! The random draws of a training step: which images, which timesteps, which noise. They depend on
//! the run's seed and the step only (each epoch's order and each step's draws come from their own
//! streams, see `rng`), not on what else drew random numbers before (the model's initialisation, its
//! dropout). Two runs of an experiment with the same seed, the same data and the same T therefore
//! train on the same batches, timesteps and noise: common random numbers, so a paired difference
//! between variants measures the variant and not the luck of the draw.
use crate::diffusion::formulation::TimeDraw;
use crate::diffusion::timesteps::TimestepSampler;
use crate::rng::reseed;
use tch::{Device, Kind, Tensor};

pub struct Draws {
    seed: u64,
    /// Dataset size and batch size; the incomplete last batch of an epoch is dropped.
    n: i64,
    batch: i64,
    device: Device,
    /// The current epoch and its permutation of the dataset.
    epoch_order: Option<(usize, Tensor)>,
    random_flip: bool,
    label_dropout: Option<f64>,
    offset_noise: bool,
    self_condition: bool,
    time: Option<TimeDraw>,
}

/// One step's draws.
pub struct StepDraws {
    /// Indices into the dataset, `[B]`.
    pub indices: Tensor,
    /// 0-based timesteps, `[B]`.
    pub t: Tensor,
    /// Importance weights when timesteps are importance-sampled.
    pub importance: Option<Tensor>,
    /// ε, shaped like the batch.
    pub noise: Tensor,
    /// Which images to flip left-right (`[B]` booleans), when flips are on.
    pub flip: Option<Tensor>,
    /// Which images' class labels to drop to "no class" (`[B]` booleans), for classifier-free guidance.
    pub drop_label: Option<Tensor>,
    /// Offset noise's n ~ N(0, I), `[B, C]`, when it is on.
    pub offset: Option<Tensor>,
    /// Whether this step runs self-conditioning's first pass (probability 1/2, drawn on the host from
    /// the step's stream, so the branch costs no device sync).
    pub self_condition: bool,
    /// A continuous formulation's per-image draw `[B]` of its noise level, from the "time" stream
    /// (DDPM draws none: its runs draw what they drew before formulations existed).
    pub time: Option<Tensor>,
}

impl Draws {
    pub fn new(seed: u64, n: i64, batch: i64, device: Device) -> Self {
        Draws {
            seed,
            n,
            batch,
            device,
            epoch_order: None,
            random_flip: false,
            label_dropout: None,
            offset_noise: false,
            self_condition: false,
            time: None,
        }
    }

    /// Also draw a left-right flip per image (after the noise: runs without flips draw what they drew).
    pub fn with_random_flip(mut self, on: bool) -> Self {
        self.random_flip = on;
        self
    }

    /// Also draw, with probability `p`, whether to drop each image's class label (after the flips).
    pub fn with_label_dropout(mut self, p: Option<f64>) -> Self {
        self.label_dropout = p;
        self
    }

    /// Also draw offset noise's `[B, C]` normals (after the label drops).
    pub fn with_offset_noise(mut self, on: bool) -> Self {
        self.offset_noise = on;
        self
    }

    /// Also decide each step whether self-conditioning's first pass runs.
    pub fn with_self_condition(mut self, on: bool) -> Self {
        self.self_condition = on;
        self
    }

    /// Also draw a continuous formulation's per-image normal or uniform, from a stream of its own
    /// after everything else, so the indices, t and ε stay those of a DDPM run of the same seed.
    pub fn with_time(mut self, draw: Option<TimeDraw>) -> Self {
        self.time = draw;
        self
    }

    pub fn steps_per_epoch(&self) -> usize {
        (self.n / self.batch) as usize
    }

    /// The draws of training step `step` (1-based) for images of shape `image_shape` ([C, H, W]).
    pub fn step(&mut self, step: usize, image_shape: &[i64], timesteps: &TimestepSampler) -> StepDraws {
        let per_epoch = self.steps_per_epoch();
        let (epoch, position) = ((step - 1) / per_epoch, (step - 1) % per_epoch);
        if self.epoch_order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            reseed(self.seed, "epoch", epoch as u64);
            self.epoch_order = Some((epoch, Tensor::randperm(self.n, (Kind::Int64, self.device))));
        }
        let order = &self.epoch_order.as_ref().expect("drawn above").1;
        let indices = order.narrow(0, position as i64 * self.batch, self.batch);
        reseed(self.seed, "step", step as u64);
        let (t, importance) = timesteps.sample(self.batch, self.device);
        let shape: Vec<i64> = std::iter::once(self.batch).chain(image_shape.iter().copied()).collect();
        let noise = Tensor::randn(shape.as_slice(), (Kind::Float, self.device));
        let flip = self.random_flip.then(|| Tensor::rand([self.batch], (Kind::Float, self.device)).lt(0.5));
        let drop_label = self.label_dropout.map(|p| Tensor::rand([self.batch], (Kind::Float, self.device)).lt(p));
        let offset = self.offset_noise.then(|| Tensor::randn([self.batch, image_shape[0]], (Kind::Float, self.device)));
        let self_condition =
            self.self_condition && crate::rng::stream_seed(self.seed, "self-condition", step as u64) % 2 == 0;
        let time = self.time.map(|draw| {
            reseed(self.seed, "time", step as u64);
            match draw {
                TimeDraw::Normal => Tensor::randn([self.batch], (Kind::Float, self.device)),
                TimeDraw::Uniform => Tensor::rand([self.batch], (Kind::Float, self.device)),
            }
        });
        StepDraws { indices, t, importance, noise, flip, drop_label, offset, self_condition, time }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(d: &StepDraws) -> Vec<f64> {
        let mut v = Vec::<f64>::try_from(d.indices.to_kind(Kind::Double)).unwrap();
        v.extend(Vec::<f64>::try_from(d.t.to_kind(Kind::Double)).unwrap());
        v.extend(Vec::<f64>::try_from(d.noise.to_kind(Kind::Double).flatten(0, -1)).unwrap());
        v
    }

    /// Steps 1..=7 over two epochs of 10 images in batches of 4 (two steps per epoch).
    fn run(seed: u64, start: usize, mut between: impl FnMut(usize)) -> Vec<Vec<f64>> {
        let sampler = TimestepSampler::uniform(50);
        let mut draws = Draws::new(seed, 10, 4, Device::Cpu);
        (start..=7)
            .map(|step| {
                between(step);
                all(&draws.step(step, &[1, 2, 2], &sampler))
            })
            .collect()
    }

    #[test]
    fn same_seed_same_draws_whatever_else_draws_in_between() {
        let plain = run(5, 1, |_| {});
        // Another variant: a model of another size initialised first, dropout drawing each step.
        let other = run(5, 1, |step| {
            let _ = Tensor::randn([37 * step as i64], (Kind::Float, Device::Cpu));
        });
        assert_eq!(plain, other);
        // A resumed run draws what the uninterrupted one drew from its step on.
        assert_eq!(run(5, 4, |_| {}), plain[3..].to_vec());
        // Batches within an epoch do not repeat an image; another seed draws differently.
        let first_epoch: Vec<f64> = plain[0][..4].iter().chain(&plain[1][..4]).copied().collect();
        let mut unique = first_epoch.clone();
        unique.sort_by(f64::total_cmp);
        unique.dedup();
        assert_eq!(unique.len(), 8, "{first_epoch:?}");
        let seed6 = run(6, 1, |_| {});
        assert!(plain.iter().zip(&seed6).all(|(a, b)| a != b));
    }

    /// Flips: about half the images of a batch, the same ones for the same (seed, step), and turning
    /// them on leaves the indices, timesteps and noise as they were.
    #[test]
    fn flips_are_drawn_after_everything_else() {
        let sampler = TimestepSampler::uniform(50);
        let plain = Draws::new(3, 1000, 400, Device::Cpu).step(2, &[1, 2, 2], &sampler);
        let flipped = Draws::new(3, 1000, 400, Device::Cpu).with_random_flip(true).step(2, &[1, 2, 2], &sampler);
        assert!(plain.flip.is_none());
        assert!(
            plain.noise.equal(&flipped.noise) && plain.t.equal(&flipped.t) && plain.indices.equal(&flipped.indices)
        );
        let mask = flipped.flip.unwrap();
        let count = mask.to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[]);
        // Binomial(400, 1/2): mean 200, sd 10; 5 sd either side.
        assert!((150..=250).contains(&count), "{count}");
        let again = Draws::new(3, 1000, 400, Device::Cpu).with_random_flip(true).step(2, &[1, 2, 2], &sampler);
        assert!(mask.equal(&again.flip.unwrap()));
    }

    /// A continuous formulation's draws leave the indices, t and ε of the same seed as they were
    /// (common random numbers across formulations), and are the same for the same (seed, step).
    #[test]
    fn time_draws_leave_the_rest_alone() {
        let sampler = TimestepSampler::uniform(50);
        let plain = Draws::new(3, 1000, 400, Device::Cpu).step(2, &[1, 2, 2], &sampler);
        let timed =
            Draws::new(3, 1000, 400, Device::Cpu).with_time(Some(TimeDraw::Uniform)).step(2, &[1, 2, 2], &sampler);
        assert!(plain.time.is_none());
        assert!(plain.noise.equal(&timed.noise) && plain.t.equal(&timed.t) && plain.indices.equal(&timed.indices));
        let u = timed.time.unwrap();
        let again =
            Draws::new(3, 1000, 400, Device::Cpu).with_time(Some(TimeDraw::Uniform)).step(2, &[1, 2, 2], &sampler);
        assert!(u.equal(&again.time.unwrap()));
        let (lo, hi) = (u.min().double_value(&[]), u.max().double_value(&[]));
        assert!((0.0..1.0).contains(&lo) && hi < 1.0 && hi > 0.9, "{lo} {hi}");
    }
}
