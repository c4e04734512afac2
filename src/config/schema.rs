//! The run configuration: every key a run can set, its default, and what values are allowed.
//!
//! Unknown keys are errors (`deny_unknown_fields`). Defaults live here, in serde, rather than in a
//! configuration layer, so that replacing a whole table (e.g. the schedule) in a sweep does not mix
//! its keys with a default table of another kind.
pub use super::cluster::{ClusterConfig, ClusterEmbedding, ClusterInit};
pub use super::formulation::FormulationConfig;
pub use super::model::unet::{TimeEmbedding, UnetBlock};
pub use super::model::ModelConfig;
use super::sampler;
pub use super::sampler::{SamplerConfig, Spacing};
pub use super::schedule::ScheduleConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Seeds every random draw of the run: initialisation, data order, timesteps, noise, sampling.
    pub seed: u64,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub diffusion: DiffusionConfig,
    pub train: TrainConfig,
    /// Class-conditional training for classifier-free guidance (off: an unconditional model).
    pub conditioning: ConditioningConfig,
    /// A cluster-conditional model fitted by EM (off: absent from the identity).
    #[serde(skip_serializing_if = "ClusterConfig::is_off")]
    pub cluster: ClusterConfig,
    pub sample: SampleConfig,
    /// How the run is evaluated (FID, KID, bits/dim); not part of the run's identity: an evaluation
    /// has its own (see `eval::spec`), so changing it re-evaluates without retraining.
    pub eval: EvalConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetName {
    Mnist,
    FashionMnist,
    /// The binary version of CIFAR-10, from `data.path` or `DDPM_CIFAR10` (no registry ships it).
    Cifar10,
    /// Any folder of images at `data.path`; sub-folders are classes.
    ImageFolder,
}

impl DatasetName {
    pub const ALL: [DatasetName; 4] =
        [DatasetName::Mnist, DatasetName::FashionMnist, DatasetName::Cifar10, DatasetName::ImageFolder];

    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion_mnist",
            DatasetName::Cifar10 => "cifar10",
            DatasetName::ImageFolder => "image_folder",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Fetched from a package registry (MNIST, Fashion-MNIST), rather than given by the user.
    pub fn is_fetched(self) -> bool {
        matches!(self, DatasetName::Mnist | DatasetName::FashionMnist)
    }

    /// The (train, test) image counts and channels of a dataset of fixed content; `None` for an image
    /// folder, whose size is known only once it is read.
    pub fn known_size(self) -> Option<(usize, usize, i64)> {
        match self {
            DatasetName::Mnist | DatasetName::FashionMnist => Some((60_000, 10_000, 1)),
            DatasetName::Cifar10 => Some((50_000, 10_000, 3)),
            DatasetName::ImageFolder => None,
        }
    }
}

/// The largest image side the harness accepts (an image folder's images are resized to it).
pub const MAX_IMAGE_SIZE: i64 = 1024;
/// The largest count of images of any size key (samples, batches, references): above every dataset.
pub const MAX_IMAGES: i64 = 10_000_000;

/// `1.2 GB`-style bytes.
fn bytes_text(b: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let k = ((b.max(1.0).log10() / 3.0).floor() as usize).min(units.len() - 1);
    format!("{:.1} {}", b / 1000f64.powi(k as i32), units[k])
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub name: DatasetName,
    /// Images are resized (bilinear, once at load time) to this side length; an image folder's images
    /// are resized on their shorter side and center-cropped.
    pub image_size: i64,
    /// Use only the first `limit` training images (for quick tests); all when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Flip each training image left-right with probability 1/2 (Ho et al. on CIFAR-10), drawn per
    /// step for the whole batch at once.
    pub random_flip: bool,
    /// `cifar10`: the `cifar-10-batches-bin` folder or the official `cifar-10-binary.tar.gz` (default:
    /// the `DDPM_CIFAR10` environment variable); `image_folder`: the folder. Made absolute when the
    /// experiment is loaded. Not part of the run's identity: the sha256 of the content is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `image_folder`: 1 (grey, ITU-R 601 luma) or 3 (RGB) channels; default 3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<i64>,
    /// `image_folder`: images held out as the test split (for bits/dim and test references), chosen
    /// by the hash of their path; 0 leaves the folder without a test split.
    #[serde(skip_serializing_if = "is_zero")]
    pub test_images: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            name: DatasetName::Mnist,
            image_size: 32,
            limit: None,
            random_flip: false,
            path: None,
            channels: None,
            test_images: 0,
        }
    }
}

impl DataConfig {
    /// The dataset of that name with the other keys at their defaults.
    pub fn named(name: DatasetName) -> Self {
        Self { name, ..Self::default() }
    }

    /// Colour channels of the images.
    pub fn channels(&self) -> i64 {
        match self.name {
            DatasetName::Mnist | DatasetName::FashionMnist => 1,
            DatasetName::Cifar10 => 3,
            DatasetName::ImageFolder => self.channels.unwrap_or(3),
        }
    }

    /// Whether the dataset has a test split (an image folder only with `test_images`).
    pub fn has_test_split(&self) -> bool {
        self.name != DatasetName::ImageFolder || self.test_images > 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiffusionConfig {
    /// Number of diffusion steps T.
    pub timesteps: usize,
    pub schedule: ScheduleConfig,
    /// What the network predicts: the noise ε, the clean image x_0, or v = √ᾱ ε − √(1−ᾱ) x_0.
    pub target: Target,
    /// σ_t² of the reverse process p_θ(x_{t−1}|x_t) = N(μ_θ, σ_t² I), used by DDPM sampling and by
    /// the variational bound: the posterior variance β̃_t or β_t (Ho et al. §3.2). With
    /// `model.learn_sigma` the network's second half of channels sets it instead (learned range).
    pub variance: Variance,
    /// Rescale the schedule's β so that ᾱ_T = 0, zero terminal SNR (Lin et al. 2024, Algorithm 1;
    /// diffusers' `rescale_betas_zero_snr`): √ᾱ is shifted to 0 at T and scaled back to its value at
    /// t = 1. Needs a v or x_0 target (ε is undefined at SNR 0).
    pub zero_terminal_snr: bool,
    /// DDPM (the default: absent from a run's identity), EDM or flow matching; see `formulation`.
    #[serde(skip_serializing_if = "FormulationConfig::is_ddpm")]
    pub formulation: FormulationConfig,
}

impl Default for DiffusionConfig {
    fn default() -> Self {
        Self {
            timesteps: 1000,
            schedule: ScheduleConfig::default(),
            target: Target::Eps,
            variance: Variance::Posterior,
            zero_terminal_snr: false,
            formulation: FormulationConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Eps,
    X0,
    V,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variance {
    /// σ_t² = β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) ("fixed small").
    Posterior,
    /// σ_t² = β_t ("fixed large"; at t = 1, where β̃ would be 0 in the bound, β̃_2 as improved-diffusion).
    Beta,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimizer steps (one batch each).
    pub steps: usize,
    pub batch_size: i64,
    /// Adam learning rate (the peak of the schedule below).
    pub lr: f64,
    /// Linear learning-rate warm-up: update n (1-based) uses lr·n/warmup_steps for n < warmup_steps
    /// (0: none).
    pub warmup_steps: usize,
    /// The learning rate after the warm-up: `constant`, or `cosine` decay from lr to 0 at `train.steps`
    /// (lr·(1 + cos(π·(n − warmup)/(steps − warmup)))/2 at update n).
    pub lr_decay: LrDecay,
    /// What is minimised: `simple` (Ho et al.'s L_simple, the distance of `loss` to the target),
    /// `hybrid` (L_simple + λ L_vlb with λ = 0.001, the mean detached in the bound's term: Nichol &
    /// Dhariwal 2021 §3.1) or `vlb` (the bound alone). `hybrid` and `vlb` train the variance of
    /// `model.learn_sigma`.
    pub objective: Objective,
    /// The distance between the prediction and the target, averaged over each sample's pixels.
    pub loss: LossKind,
    /// δ of the Huber loss (PyTorch's smooth_l1 convention: quadratic below δ, linear above).
    pub huber_delta: f64,
    /// Per-sample weighting of the loss: uniform (L_simple) or min-SNR-γ (Hang et al. 2023).
    pub weighting: Weighting,
    /// γ of min-SNR-γ weighting.
    pub min_snr_gamma: f64,
    /// Offset noise (lucidrains' `offset_noise_strength`): ε += s·n with n ~ N(0, I) of shape
    /// [B, C, 1, 1], one value per image and channel (0: off).
    pub offset_noise_strength: f64,
    /// How training timesteps are drawn: uniformly, or by importance sampling on the running second
    /// moment of each timestep's loss (improved-diffusion's `loss-second-moment`).
    pub timestep_sampling: TimestepSampling,
    /// Decay of the exponential moving average of the weights (0.9999 in Ho et al.).
    pub ema_decay: f64,
    /// Warm the EMA up: decay min(ema_decay, (1 + n)/(10 + n)) at update n.
    pub ema_warmup: bool,
    /// Post-hoc EMA (EDM2): two power-function averages stored every `every` steps, from which
    /// evaluation reconstructs any `eval.ema_sigma_rel` (absent: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posthoc_ema: Option<PosthocEmaConfig>,
    /// Log the loss every this many steps (execution only: not part of the run's identity).
    pub log_every: usize,
    /// Write a checkpoint every this many steps, and at the end (execution only: a resumed run ends
    /// with the same weights).
    pub checkpoint_every: usize,
    /// On CUDA, libtorch's deterministic algorithms, deterministic cuDNN without autotuning, and
    /// cuBLAS's fixed workspace (`CUBLAS_WORKSPACE_CONFIG=:4096:8`), so that the same run on the same
    /// GPU gives the same weights. CPU runs are deterministic either way. Execution only. Off, cuDNN
    /// benchmarks its convolution algorithms and keeps the fastest.
    pub deterministic: bool,
    /// The instruction set libtorch's CPU kernels may use: `native` (the CPU's best), or `avx2` /
    /// `sse41`, which pin oneDNN, ATen and MKL at that level so that x86 CPUs having it give the same
    /// bits (portable math; `crate::config::CpuIsa`). Execution only: recorded in the attempts.
    pub cpu_isa: crate::config::CpuIsa,
    /// The forward pass and loss in `fp32`, or under `bf16` autocast (convolutions and matmuls in
    /// bfloat16, reductions and the loss in float32); weights, Adam and EMA stay float32 either way.
    pub precision: Precision,
    /// Convolutions on channels-last (NHWC) weights and activations (cuDNN's tensor cores prefer it).
    pub channels_last: bool,
    /// TF32 for float32 matmuls on Ampere and newer GPUs (libtorch's default is off for matmuls and on
    /// for cuDNN convolutions; this key changes the former).
    pub tf32: bool,
    /// Processes ("ranks") that train this one run together (data parallelism through libtorch's c10d:
    /// gloo on the CPU, NCCL on CUDA): each computes the gradient of its share of the global batch
    /// `batch_size`, and the summed gradients update identical weights on every rank. Execution only
    /// (the same run within the all-reduce's rounding: README, "One run on several devices"), except
    /// for models with batch norm or dropout, whose result depends on the split.
    #[serde(skip_serializing_if = "is_one")]
    pub processes: usize,
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// `[train.posthoc_ema]`: the relative widths σ_rel of the two stored averaging profiles and how
/// often both are stored (Karras et al. 2024 store σ_rel 0.05 and 0.10).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PosthocEmaConfig {
    #[serde(default = "default_sigma_rels")]
    pub sigma_rels: Vec<f64>,
    /// Steps between snapshots (the last step is stored too).
    pub every: usize,
}

fn default_sigma_rels() -> Vec<f64> {
    vec![0.05, 0.10]
}

/// The largest σ_rel a power profile with γ ≥ 0 has: 1/√12.
pub const MAX_SIGMA_REL: f64 = 0.288_675_134_594_812_9;

/// σ_rel's range: a power profile with γ ≥ 0.
pub const SIGMA_REL_ALLOWED: &str = "0 < sigma_rel < 0.2887 (1/√12: a power profile with γ >= 0)";

pub fn sigma_rel_ok(s: f64) -> bool {
    s > 0.0 && s < MAX_SIGMA_REL
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrDecay {
    #[default]
    Constant,
    Cosine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    Fp32,
    Bf16,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 128,
            lr: 2e-4,
            warmup_steps: 0,
            lr_decay: LrDecay::Constant,
            objective: Objective::Simple,
            loss: LossKind::L2,
            huber_delta: 1.0,
            weighting: Weighting::Uniform,
            min_snr_gamma: 5.0,
            offset_noise_strength: 0.0,
            timestep_sampling: TimestepSampling::Uniform,
            ema_decay: 0.9999,
            ema_warmup: true,
            posthoc_ema: None,
            log_every: 50,
            checkpoint_every: 1000,
            processes: 1,
            deterministic: true,
            cpu_isa: crate::config::CpuIsa::Native,
            precision: Precision::Fp32,
            channels_last: false,
            tf32: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    #[default]
    Simple,
    Hybrid,
    Vlb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    L1,
    L2,
    Huber,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    Uniform,
    MinSnr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSampling {
    Uniform,
    LossSecondMoment,
}

/// Classifier-free guidance (Ho & Salimans 2022): the network sees each image's class, replaced by
/// "no class" with probability `label_dropout`, so that one network is both the conditional model
/// ε(x_t, c) and the unconditional one ε(x_t, ∅); sampling then follows
/// ε̃ = (1 + w) ε(x_t, c) − w ε(x_t, ∅) with the guidance scale w (`sample.guidance_scale`,
/// `eval.guidance_scale`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConditioningConfig {
    /// Condition the network on the dataset's class labels.
    pub classes: bool,
    /// p_uncond: the probability of dropping a training image's label to "no class" (0.1 or 0.2 in
    /// the paper).
    pub label_dropout: f64,
}

impl Default for ConditioningConfig {
    fn default() -> Self {
        Self { classes: false, label_dropout: 0.1 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampleConfig {
    /// Images drawn at the end of training, saved as `samples.png`.
    pub num_samples: i64,
    /// Clip the predicted x_0 to [-1, 1] at each sampling step (as Ho et al.'s code does).
    pub clip_x0: bool,
    /// Sample (and evaluate) with the EMA weights rather than the last trained weights.
    pub use_ema: bool,
    /// Paper timesteps t (T..1, and 0 for the final image) at which to record the reverse process of
    /// the first samples in `trajectory.png`; absent: T, 3T/4, T/2, T/4, T/10 and 0; empty: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trajectory: Option<Vec<usize>>,
    pub sampler: SamplerConfig,
    /// Guidance scale w of a class-conditional run's samples; `samples.png` then has one column per
    /// class (column j: class j).
    pub guidance_scale: f64,
}

impl SampleConfig {
    /// The trajectory steps to record: the configured ones, or T, 3T/4, T/2, T/4, T/10 and 0.
    pub fn trajectory_steps(&self, timesteps: usize) -> Vec<usize> {
        self.trajectory.clone().unwrap_or_else(|| {
            let mut steps = vec![timesteps, 3 * timesteps / 4, timesteps / 2, timesteps / 4, timesteps / 10, 0];
            steps.dedup();
            steps
        })
    }
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self {
            num_samples: 64,
            clip_x0: true,
            use_ema: true,
            trajectory: None,
            sampler: SamplerConfig::default(),
            guidance_scale: 0.0,
        }
    }
}

/// The evaluation of a run: FID and KID of generated samples against a reference split (through the
/// Inception-v3 of pytorch-fid/StyleGAN3) and the variational bound in bits/dim on test images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Compute FID and KID at the end of the run.
    pub fid: bool,
    /// Compute the bits/dim bound at the end of the run.
    pub bpd: bool,
    /// Generated images for FID/KID (10,000 is the literature's minimum for comparable FIDs; the CPU
    /// default is smaller, and every FID is printed with its spec so the two are never compared).
    pub num_samples: i64,
    /// The sampler of the evaluation's images.
    pub sampler: SamplerConfig,
    /// A class-conditional run's FID images: class-balanced (image i of class i mod K, with guidance
    /// `guidance_scale`) or unconditional ("no class", no guidance).
    pub classes: EvalClasses,
    /// Guidance scale w of class-balanced FID images.
    pub guidance_scale: f64,
    /// Sample with the EMA weights (true) or the last trained weights.
    pub use_ema: bool,
    /// Which weights: the final ones (absent), or the checkpoint of this training step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<usize>,
    /// The reference images: the dataset's train or test split.
    pub reference_split: SplitName,
    /// The first N images of the reference split; 0 for all of them.
    pub reference_images: usize,
    /// Images per sampling batch, per Inception call and (image, t) pairs per call of the bound;
    /// absent: the device's default (`EVAL_BATCH_CPU`, `EVAL_BATCH_CUDA`), resolved where the
    /// evaluation runs (`for_device`). The noise drawn depends on it, so the resolved value is part
    /// of the evaluation spec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<i64>,
    /// KID: subsets drawn and the size of each (capped at the smaller set's size).
    pub kid_subsets: usize,
    pub kid_subset_size: usize,
    /// Bits/dim on the first N test images, every `bpd_t_stride`-th timestep (1: all T terms).
    pub bpd_images: usize,
    pub bpd_t_stride: usize,
    /// Also evaluate FID/KID every this many training steps (0: only at the end), with
    /// `every_num_samples` images, logged at their step; the best value is recorded.
    pub every: usize,
    pub every_num_samples: i64,
    /// Evaluation replicate r: r > 0 draws the samples, KID's subsets and the bound's noise from
    /// streams of their own (the reference set and the bound's test images stay those of the spec),
    /// so that the same weights evaluated under replicates 0, 1, … measure the evaluation's own
    /// noise (the analysis' variance decomposition). 0, the default, is every evaluation before it.
    #[serde(skip_serializing_if = "is_zero")]
    pub replicate: usize,
    /// Evaluate the post-hoc EMA of this relative width σ_rel, reconstructed from the run's
    /// snapshots (`train.posthoc_ema`), in place of the ordinary EMA or raw weights (absent: those).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ema_sigma_rel: Option<f64>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            fid: true,
            bpd: true,
            num_samples: 256,
            sampler: SamplerConfig::Ddim(sampler::ddim::Config::default()),
            classes: EvalClasses::Balanced,
            guidance_scale: 0.0,
            use_ema: true,
            checkpoint: None,
            reference_split: SplitName::Train,
            reference_images: 1000,
            batch_size: None,
            kid_subsets: 100,
            kid_subset_size: 1000,
            bpd_images: 16,
            bpd_t_stride: 1,
            every: 0,
            every_num_samples: 64,
            replicate: 0,
            ema_sigma_rel: None,
        }
    }
}

/// `eval.batch_size` on the CPU when not given: what the CPU measured fastest, and what every record
/// of this project was made with.
pub const EVAL_BATCH_CPU: i64 = 64;
/// `eval.batch_size` on a GPU when not given: a sampling step of the small models at batch 64 is a few
/// hundred kernel launches of almost no work each (launch-bound), and the main job's `full` profile
/// draws 10,000 images × 1000 steps per run. 500 keeps Inception's activations near 8 GB.
pub const EVAL_BATCH_CUDA: i64 = 500;

impl EvalConfig {
    /// The spec as it runs on a CUDA device (`cuda`) or the CPU: `batch_size` resolved to the
    /// device's default when not given.
    pub fn for_device(&self, cuda: bool) -> EvalConfig {
        let default = if cuda { EVAL_BATCH_CUDA } else { EVAL_BATCH_CPU };
        EvalConfig { batch_size: Some(self.batch_size.unwrap_or(default)), ..self.clone() }
    }

    /// The resolved batch size (`for_device` first).
    pub fn batch(&self) -> i64 {
        self.batch_size.expect("an evaluation spec resolved for its device (EvalConfig::for_device)")
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalClasses {
    #[default]
    Balanced,
    Unconditional,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitName {
    #[default]
    Train,
    Test,
}

impl SplitName {
    pub fn as_str(self) -> &'static str {
        match self {
            SplitName::Train => "train",
            SplitName::Test => "test",
        }
    }
}

/// Keys that change how a run is executed or displayed but not its results; they are left out of
/// the run's identity (its hash). `data.path` says where the data is; its content's sha256 is in the
/// identity instead.
pub const EXECUTION_ONLY_KEYS: &[&str] = &[
    "train.log_every",
    "train.checkpoint_every",
    "train.deterministic",
    "train.cpu_isa",
    "train.processes",
    "eval",
    "data.path",
];

/// A violated constraint: the key, the offending value and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("key `{key}` = {value}: {allowed}")]
pub struct Invalid {
    pub key: &'static str,
    pub value: String,
    pub allowed: String,
}

/// The check every rule reports through: (holds, key, value, what is allowed).
pub use super::model::Check;

/// `count` as a check: at most `max` (`what`: of what).
pub(crate) fn check_count(check: &mut Check, key: &'static str, v: i64, max: i64, what: &str) {
    check(v <= max, key, v.to_string(), &format!("at most {max} ({what})"));
}

fn clamp(n: usize) -> i64 {
    n.min(i64::MAX as usize) as i64
}

/// The range of `diffusion.timesteps`, as every command that takes a T checks it: the text of what
/// is allowed when `t` is out of it.
pub fn timesteps_problem(t: usize) -> Option<&'static str> {
    if t < 2 {
        Some("an integer >= 2")
    } else if t > 100_000 {
        Some("at most 100000")
    } else {
        None
    }
}

impl DiffusionConfig {
    /// `diffusion.timesteps` and the schedule's keys.
    pub fn check(&self, check: &mut Check) {
        let t_max = self.timesteps;
        if let Some(allowed) = timesteps_problem(t_max) {
            check(false, "diffusion.timesteps", t_max.to_string(), allowed);
        }
        self.schedule.check(t_max, check);
        self.formulation.check(check);
    }
}

impl DataConfig {
    /// The image size (the dataset lives on the device), the keys of an image folder, and the counts.
    pub fn check(&self, check: &mut Check) {
        let side = self.image_size;
        let known = self.name.known_size();
        let (images, channels) = match known {
            Some((train, _, c)) => (self.limit.unwrap_or(train).min(train) as f64, c),
            None => (self.limit.map_or(1.0, |l| l as f64), self.channels.unwrap_or(3)),
        };
        let resident = images * channels as f64 * (side.max(1) as f64).powi(2) * 4.0;
        check(
            (1..=MAX_IMAGE_SIZE).contains(&side),
            "data.image_size",
            side.to_string(),
            &format!(
                "1 to {MAX_IMAGE_SIZE} pixels (the dataset lives on the device as float32: {} {}x{side}x{side} images \
                 would take {})",
                images as u64,
                channels,
                bytes_text(resident)
            ),
        );
        if let Some(limit) = self.limit {
            let train_n = known.map_or(MAX_IMAGES, |(a, _, _)| a as i64);
            let what = format!("the training images of `{}`", self.name.as_str());
            check_count(check, "data.limit", clamp(limit), train_n, &what);
        }
        check_count(check, "data.test_images", clamp(self.test_images), MAX_IMAGES, "images");
        let name = self.name.as_str();
        let folder_only = "only for data.name = \"image_folder\"";
        if let Some(c) = self.channels {
            check(self.name == DatasetName::ImageFolder, "data.channels", c.to_string(), folder_only);
            check(c == 1 || c == 3, "data.channels", c.to_string(), "1 (grey) or 3 (RGB)");
        }
        if self.test_images > 0 {
            check(self.name == DatasetName::ImageFolder, "data.test_images", self.test_images.to_string(), folder_only);
        }
        if let Some(p) = &self.path {
            check(
                !self.name.is_fetched(),
                "data.path",
                format!("{p:?}"),
                &format!("only for cifar10 and image_folder (`{name}` is fetched from a package registry)"),
            );
        }
        if self.name == DatasetName::ImageFolder {
            check(
                self.path.is_some(),
                "data.path",
                "absent".into(),
                "the folder of images (data.name = \"image_folder\")",
            );
        }
    }
}

impl TrainConfig {
    pub fn check(&self, check: &mut Check) {
        let t = self;
        check(t.steps >= 1, "train.steps", t.steps.to_string(), "an integer >= 1");
        check(t.batch_size >= 1, "train.batch_size", t.batch_size.to_string(), "an integer >= 1");
        check(t.lr > 0.0 && t.lr.is_finite(), "train.lr", t.lr.to_string(), "a finite number > 0");
        check(
            t.warmup_steps <= t.steps,
            "train.warmup_steps",
            t.warmup_steps.to_string(),
            &format!("an integer from 0 to train.steps ({})", t.steps),
        );
        check(t.log_every >= 1, "train.log_every", t.log_every.to_string(), "an integer >= 1");
        check(t.checkpoint_every >= 1, "train.checkpoint_every", t.checkpoint_every.to_string(), "an integer >= 1");
        check(
            t.processes >= 1 && t.batch_size % t.processes.max(1) as i64 == 0,
            "train.processes",
            t.processes.to_string(),
            &format!(
                "an integer >= 1 that divides train.batch_size ({}): each rank takes an equal share",
                t.batch_size
            ),
        );
        check((0.0..1.0).contains(&t.ema_decay), "train.ema_decay", t.ema_decay.to_string(), "0 <= ema_decay < 1");
        let delta = t.huber_delta;
        check(delta > 0.0 && delta.is_finite(), "train.huber_delta", delta.to_string(), "a finite number > 0");
        let gamma = t.min_snr_gamma;
        check(gamma > 0.0 && gamma.is_finite(), "train.min_snr_gamma", gamma.to_string(), "a finite number > 0");
        let s = t.offset_noise_strength;
        check(
            (0.0..=1.0).contains(&s),
            "train.offset_noise_strength",
            s.to_string(),
            "0 <= offset_noise_strength <= 1 (0: off; lucidrains suggests 0.1)",
        );
        if let Some(p) = &t.posthoc_ema {
            check(p.every >= 1, "train.posthoc_ema.every", p.every.to_string(), "an integer >= 1");
            let mut sorted = p.sigma_rels.clone();
            sorted.sort_by(f64::total_cmp);
            sorted.dedup();
            check(
                p.sigma_rels.len() >= 2 && sorted.len() == p.sigma_rels.len(),
                "train.posthoc_ema.sigma_rels",
                format!("{:?}", p.sigma_rels),
                "at least two different widths (the reconstruction combines profiles of different γ)",
            );
            for &s in &p.sigma_rels {
                check(sigma_rel_ok(s), "train.posthoc_ema.sigma_rels", s.to_string(), SIGMA_REL_ALLOWED);
            }
        }
    }
}

impl ConditioningConfig {
    pub fn check(&self, check: &mut Check) {
        check(
            (0.0..1.0).contains(&self.label_dropout),
            "conditioning.label_dropout",
            self.label_dropout.to_string(),
            "0 <= label_dropout < 1",
        );
    }
}

/// A guidance scale's range (`sample.guidance_scale`, `eval.guidance_scale`).
pub fn check_guidance(w: f64, key: &'static str, check: &mut Check) {
    check(w >= 0.0 && w.is_finite(), key, w.to_string(), "a finite number >= 0 (0: no guidance)");
}

impl SampleConfig {
    /// With the run's T (`t_max`): the sampler takes at most T steps and the trajectory's steps are in
    /// 0..=T.
    pub fn check(&self, t_max: usize, check: &mut Check) {
        check_count(check, "sample.num_samples", self.num_samples, 1 << 16, "images in samples.png");
        check_guidance(self.guidance_scale, "sample.guidance_scale", check);
        check(self.num_samples >= 1, "sample.num_samples", self.num_samples.to_string(), "an integer >= 1");
        for &step in self.trajectory.iter().flatten() {
            check(step <= t_max, "sample.trajectory", step.to_string(), &format!("timesteps from 0 to T ({t_max})"));
        }
        let steps_allowed = format!("1 <= steps <= diffusion.timesteps ({t_max})");
        let keys =
            sampler::Keys { steps: "sample.sampler.steps", eta: "sample.sampler.eta", steps_allowed, max_steps: t_max };
        self.sampler.check(&keys, check);
    }
}

impl EvalConfig {
    pub fn check(&self, check: &mut Check) {
        let e = self;
        if let Some(s) = e.ema_sigma_rel {
            check(sigma_rel_ok(s), "eval.ema_sigma_rel", s.to_string(), SIGMA_REL_ALLOWED);
        }
        check_count(check, "eval.num_samples", e.num_samples, MAX_IMAGES, "generated images");
        check_count(check, "eval.every_num_samples", e.every_num_samples, MAX_IMAGES, "generated images");
        if let Some(b) = e.batch_size {
            check_count(check, "eval.batch_size", b, 1 << 16, "images per sampling batch");
        }
        check_count(check, "eval.kid_subset_size", clamp(e.kid_subset_size), MAX_IMAGES, "images");
        check_guidance(e.guidance_scale, "eval.guidance_scale", check);
        // The evaluation's sampler is shared by runs of any T: it takes min(steps, T) steps.
        let keys = sampler::Keys {
            steps: "eval.sampler.steps",
            eta: "eval.sampler.eta",
            steps_allowed: "an integer >= 1".into(),
            max_steps: usize::MAX,
        };
        e.sampler.check(&keys, check);
        check(
            e.num_samples >= 2,
            "eval.num_samples",
            e.num_samples.to_string(),
            "an integer >= 2 (a covariance needs two)",
        );
        if let Some(b) = e.batch_size {
            check(b >= 1, "eval.batch_size", b.to_string(), "an integer >= 1 (absent: 64 on the CPU, 500 on CUDA)");
        }
        check(e.reference_images != 1, "eval.reference_images", "1".into(), "0 (all) or an integer >= 2");
        check(e.kid_subsets >= 1, "eval.kid_subsets", e.kid_subsets.to_string(), "an integer >= 1");
        check(e.kid_subset_size >= 2, "eval.kid_subset_size", e.kid_subset_size.to_string(), "an integer >= 2");
        check(e.bpd_images >= 1, "eval.bpd_images", e.bpd_images.to_string(), "an integer >= 1");
        check(e.bpd_t_stride >= 1, "eval.bpd_t_stride", e.bpd_t_stride.to_string(), "an integer >= 1");
        check(e.every_num_samples >= 2, "eval.every_num_samples", e.every_num_samples.to_string(), "an integer >= 2");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(RunConfig::default().validate().is_empty());
    }

    #[test]
    fn validation_names_key_value_and_allowed() {
        let mut c = RunConfig::default();
        c.data.image_size = 28;
        c.train.lr = -1.0;
        let errs = c.validate();
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].key, "data.image_size");
        assert_eq!(errs[0].value, "28");
        assert!(errs[0].allowed.contains("multiple of 8"));
        assert_eq!(errs[1].to_string(), "key `train.lr` = -1: a finite number > 0");
    }
}
