//! Denoising networks behind one trait, built by name from the run's `ModelConfig`.
//!
//! | name | source | parameters (1 channel, defaults) |
//! |---|---|---|
//! | `simple` | the blog recipe's SimpleUNet | 858,753 |
//! | `simple_bn` | the notebook recipe's BatchNorm SimpleUnet | 62,437,601 |
//! | `unet` | the practical work's U-Net (The Annotated Diffusion Model) | depends on `dim`, `dim_mults` |
//! | `lucidrains` | denoising-diffusion-pytorch 2.3.4's `Unet` (seed 001) | 35,705,089 (1 channel, dim 64) |
//! | `ddpm_cifar` | Ho et al. 2020, Appendix B | 35,741,697 (35,746,307 with 3 channels) |
pub mod attention;
pub mod ddpm_cifar;
pub mod deterministic;
pub mod embedding;
pub mod layers;
pub mod lucidrains;
pub mod simple_bn;
pub mod simple_unet;
pub mod unet;

use crate::config::{ModelConfig, RunConfig};
use tch::{nn, Tensor};

/// A network that maps a noisy batch x_t and its timestep indices t to a tensor of x_t's shape.
pub trait Denoiser {
    /// `class_labels` (`[B]`, −1 for "no class") condition a class-conditional model; None is "no
    /// class" for the whole batch (its unconditional model); models without classes ignore them.
    /// `train` switches layers that behave differently in training (dropout, batch norm).
    fn forward_t(&self, x_t: &Tensor, t: &Tensor, class_labels: Option<&Tensor>, train: bool) -> Tensor;
}

/// The run's model: its architecture for the dataset's channels and image size, class-conditional
/// (with the dataset's classes) when `conditioning.classes` is on.
/// `classes`: what `num_classes` or `classes_of` says.
pub fn build_for(config: &RunConfig, classes: Option<i64>, path: &nn::Path) -> Box<dyn Denoiser> {
    build(&config.model, config.data.channels(), config.data.image_size, classes, path)
}

/// The number of classes a run's model is conditioned on (None: unconditional), from the dataset's
/// class names.
pub fn num_classes(config: &RunConfig) -> anyhow::Result<Option<i64>> {
    if config.cluster.on() {
        return Ok(Some(config.cluster.q));
    }
    if !config.conditioning.classes {
        return Ok(None);
    }
    classes_of(config, crate::data::class_names(&config.data)?.len())
}

/// The same for a loaded dataset with `available` classes.
pub fn classes_of(config: &RunConfig, available: usize) -> anyhow::Result<Option<i64>> {
    if config.cluster.on() {
        return Ok(Some(config.cluster.q));
    }
    if !config.conditioning.classes {
        return Ok(None);
    }
    if available == 0 {
        anyhow::bail!(
            "conditioning.classes = true: dataset `{}` has no classes (an image folder has them when its images lie \
             in sub-folders)",
            config.data.name.as_str()
        );
    }
    Ok(Some(available as i64))
}

/// Builds the configured model for images of `channels` × `image_size`², with its parameters under
/// `path` (checkpoint keys read like the architecture: `down.0.block1.conv1.weight`), conditioned on
/// `classes` classes when given. Initialisation draws from libtorch's generator, so it is fixed by the
/// run's seed.
pub fn build(
    cfg: &ModelConfig,
    channels: i64,
    image_size: i64,
    classes: Option<i64>,
    path: &nn::Path,
) -> Box<dyn Denoiser> {
    let io = cfg.io_channels(channels);
    match cfg {
        ModelConfig::Simple(c) => Box::new(simple_unet::SimpleUNet::new(path, io, c.time_emb_dim, classes)),
        ModelConfig::SimpleBn(c) => {
            Box::new(simple_bn::SimpleBnUnet::new(path, io, c.time_emb_dim, &c.channels, classes))
        }
        ModelConfig::Unet(c) => Box::new(unet::Unet::new(path, io, &c.into(), classes)),
        ModelConfig::Lucidrains(c) => Box::new(lucidrains::LucidrainsUnet::new(path, io, &c.into(), classes)),
        ModelConfig::DdpmCifar(c) => {
            Box::new(ddpm_cifar::DdpmCifar::new(path, io, &ddpm_cifar::DdpmCifarOptions::of(c, image_size), classes))
        }
    }
}

/// The network as the samplers see it ((x_t, t) → prediction) for a batch with class `labels` (−1:
/// no class; None: no class for any) and guidance scale `w`: with w > 0 one call on the doubled batch
/// [x_t with the labels; x_t without] combined by classifier-free guidance.
pub fn sampling_fn<'a>(
    model: &'a dyn Denoiser,
    labels: Option<Tensor>,
    w: f64,
) -> impl FnMut(&Tensor, &Tensor) -> Tensor + 'a {
    move |x, t| match &labels {
        Some(l) if w > 0.0 => {
            let b = x.size()[0];
            let both = Tensor::cat(&[l, &l.full_like(-1)], 0);
            let out = model.forward_t(&Tensor::cat(&[x, x], 0), &Tensor::cat(&[t, t], 0), Some(&both), false);
            crate::diffusion::guidance::guide(&out.narrow(0, 0, b), &out.narrow(0, b, b), w)
        }
        l => model.forward_t(x, t, l.as_ref(), false),
    }
}

/// Class labels start, start + 1, … modulo `classes`, `[len]`: class-balanced samples.
pub fn balanced_labels(start: i64, len: i64, classes: i64, device: tch::Device) -> Tensor {
    Tensor::arange_start(start, start + len, (tch::Kind::Int64, device)).remainder(classes)
}

/// Trainable parameters (BatchNorm's running statistics are not counted, as in PyTorch).
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

/// One line of `ddpm models`: a model with its default keys at the given image shape.
pub struct CatalogueEntry {
    pub name: &'static str,
    /// Trainable parameters, or why the model cannot take this image size.
    pub parameters: Result<i64, String>,
    /// The image sides the model accepts.
    pub sizes: String,
}

/// Every registered model, built with its defaults for `channels` × `image_size`² images.
pub fn catalogue(channels: i64, image_size: i64) -> Vec<CatalogueEntry> {
    ModelConfig::NAMES
        .iter()
        .map(|&name| {
            let cfg = ModelConfig::default_named(name).expect("registered model");
            let factor = 1i64 << cfg.downsamplings();
            let sizes = format!("multiples of {factor}");
            let parameters = if image_size >= factor && image_size % factor == 0 {
                let vs = nn::VarStore::new(tch::Device::Cpu);
                let _model = build(&cfg, channels, image_size, None, &vs.root());
                Ok(parameter_count(&vs))
            } else {
                Err(format!("cannot take {image_size}x{image_size}"))
            };
            CatalogueEntry { name, parameters, sizes }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::OptimizerConfig, Device, Kind};

    fn default(name: &str) -> ModelConfig {
        ModelConfig::default_named(name).unwrap()
    }

    fn built(cfg: &ModelConfig, channels: i64, size: i64) -> (nn::VarStore, Box<dyn Denoiser>) {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = build(cfg, channels, size, None, &vs.root());
        (vs, m)
    }

    /// Output shape = input shape for every model with its defaults, 1 and 3 channels, at 28 where
    /// the model allows it (only `unet`, with two halvings), 32 and 64.
    #[test]
    fn every_model_keeps_the_input_shape() {
        let _guard = tch::no_grad_guard();
        for name in ModelConfig::NAMES {
            let cfg = default(name);
            let factor = 1 << cfg.downsamplings();
            for size in [28i64, 32, 64] {
                if size % factor != 0 {
                    assert!(name != "unet", "unet takes 28");
                    continue;
                }
                for channels in [1i64, 3] {
                    let (_vs, m) = built(&cfg, channels, size);
                    let x = Tensor::randn([2, channels, size, size], (Kind::Float, Device::Cpu));
                    let t = Tensor::from_slice(&[0i64, 999]);
                    assert_eq!(
                        m.forward_t(&x, &t, None, false).size(),
                        vec![2, channels, size, size],
                        "{name} {channels}x{size}"
                    );
                }
            }
        }
    }

    /// The counts of the sources: the blog's 858,753; the notebook's 62,437,601 for one channel (it
    /// prints 62,438,883 for three); the DDPM paper's 35.7M for CIFAR-10 (3 channels), within 1%.
    #[test]
    fn parameter_counts_match_the_sources() {
        let count = |name: &str, channels: i64| parameter_count(&built(&default(name), channels, 32).0);
        assert_eq!(count("simple", 1), 858_753);
        assert_eq!(count("simple_bn", 1), 62_437_601);
        assert_eq!(count("simple_bn", 3), 62_438_883);
        let cifar = count("ddpm_cifar", 3) as f64;
        assert!((cifar / 35.7e6 - 1.0).abs() < 0.01, "{cifar}");
    }

    /// A few Adam steps (lr 1e-4) on one fixed batch lower the loss of each model: gradients reach
    /// the weights with the right sign. Dropout is off, so the loss is a function of the weights.
    #[test]
    fn training_steps_reduce_the_loss_on_a_fixed_batch() {
        tch::manual_seed(0);
        let x = Tensor::randn([4, 1, 32, 32], (Kind::Float, Device::Cpu));
        let target = Tensor::randn([4, 1, 32, 32], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[1i64, 100, 500, 900]);
        let no_dropout = |name: &str| {
            let mut table = toml::Table::new();
            table.insert("name".into(), name.into());
            if name == "unet" || name == "ddpm_cifar" {
                table.insert("dropout".into(), 0.0.into());
            }
            toml::Value::Table(table).try_into::<ModelConfig>().unwrap()
        };
        for name in ModelConfig::NAMES {
            let (vs, m) = built(&no_dropout(name), 1, 32);
            let mut opt = nn::Adam::default().build(&vs, 1e-4).unwrap();
            let mut losses = Vec::new();
            for _ in 0..5 {
                let loss = (m.forward_t(&x, &t, None, true) - &target).square().mean(Kind::Float);
                losses.push(loss.double_value(&[]));
                opt.backward_step(&loss);
            }
            assert!(losses[4] < losses[0], "{name}: {losses:?}");
        }
    }

    /// BatchNorm: evaluation uses the running statistics (the same output twice, whatever the batch),
    /// and a training step updates them.
    #[test]
    fn simple_bn_running_statistics() {
        let (vs, m) = built(&default("simple_bn"), 1, 16);
        let x = Tensor::randn([3, 1, 16, 16], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[5i64, 50, 500]);
        let running = || vs.variables()["downs.0.bnorm1.running_mean"].copy();
        let (a, b) = (m.forward_t(&x, &t, None, false), m.forward_t(&x, &t, None, false));
        assert_eq!((a.shallow_clone() - b).abs().max().double_value(&[]), 0.0);
        // One sample alone gives the same result in evaluation: no batch statistics are used.
        let first = m.forward_t(&x.narrow(0, 0, 1), &t.narrow(0, 0, 1), None, false);
        assert!((first - a.narrow(0, 0, 1)).abs().max().double_value(&[]) < 1e-5);
        let before = running();
        let _ = m.forward_t(&x, &t, None, true);
        assert!((running() - before).abs().max().double_value(&[]) > 0.0, "a training pass moves the running mean");
    }

    #[test]
    fn initialisation_is_fixed_by_the_seed() {
        let weights = |seed: i64| {
            tch::manual_seed(seed);
            let (vs, _m) = built(&default("unet"), 1, 32);
            vs.variables()["down.0.block1.conv1.weight"].copy()
        };
        assert_eq!((weights(3) - weights(3)).abs().max().double_value(&[]), 0.0);
        assert!((weights(3) - weights(4)).abs().max().double_value(&[]) > 0.0);
    }
}
