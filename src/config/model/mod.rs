//! The network of a run, chosen by `name`: one module per architecture with its keys (`Config`,
//! their defaults and `check`), and this registry. Adding a model: its `Config` module here, its
//! network in `models/`, one variant below and one line in `models::build`.
pub mod ddpm_cifar;
pub mod lucidrains;
pub mod simple;
pub mod simple_bn;
pub mod unet;

use serde::{Deserialize, Serialize};

/// How a kind's `check` reports a problem: (ok, key, value, what is allowed).
pub type Check<'a> = dyn FnMut(bool, &'static str, String, &str) + 'a;

/// The network, chosen by `name`; each architecture has its own keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum ModelConfig {
    Simple(simple::Config),
    SimpleBn(simple_bn::Config),
    Unet(unet::Config),
    Lucidrains(lucidrains::Config),
    DdpmCifar(ddpm_cifar::Config),
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::Simple(simple::Config::default())
    }
}

impl ModelConfig {
    pub const NAMES: [&'static str; 5] = ["simple", "simple_bn", "unet", "lucidrains", "ddpm_cifar"];

    pub fn name(&self) -> &'static str {
        match self {
            ModelConfig::Simple(_) => "simple",
            ModelConfig::SimpleBn(_) => "simple_bn",
            ModelConfig::Unet(_) => "unet",
            ModelConfig::Lucidrains(_) => "lucidrains",
            ModelConfig::DdpmCifar(_) => "ddpm_cifar",
        }
    }

    /// The model of that name with its default keys.
    pub fn default_named(name: &str) -> Option<Self> {
        let table = toml::Table::from_iter([("name".to_string(), toml::Value::String(name.to_string()))]);
        toml::Value::Table(table).try_into().ok()
    }

    /// Whether the network outputs a learned variance beside its prediction (`learn_sigma`).
    pub fn learn_sigma(&self) -> bool {
        match self {
            ModelConfig::Simple(c) => c.learn_sigma,
            ModelConfig::SimpleBn(c) => c.learn_sigma,
            ModelConfig::Unet(c) => c.learn_sigma,
            ModelConfig::Lucidrains(c) => c.learn_sigma,
            ModelConfig::DdpmCifar(c) => c.learn_sigma,
        }
    }

    /// Whether the network takes its own x̂_0 as extra input channels (`self_condition`).
    pub fn self_condition(&self) -> bool {
        match self {
            ModelConfig::Simple(c) => c.self_condition,
            ModelConfig::SimpleBn(c) => c.self_condition,
            ModelConfig::Unet(c) => c.self_condition,
            ModelConfig::Lucidrains(c) => c.self_condition,
            ModelConfig::DdpmCifar(c) => c.self_condition,
        }
    }

    /// The dropout probability (0 for the models without dropout).
    pub fn dropout(&self) -> f64 {
        match self {
            ModelConfig::Simple(_) | ModelConfig::SimpleBn(_) => 0.0,
            ModelConfig::Unet(c) => c.dropout,
            ModelConfig::Lucidrains(c) => c.dropout,
            ModelConfig::DdpmCifar(c) => c.dropout,
        }
    }

    /// Whether the network's training forward depends on how the batch is split among ranks: batch
    /// norm normalises by each rank's statistics, dropout draws each rank's masks from its own stream.
    /// Without either, N ranks train the run of one process (within the all-reduce's rounding).
    pub fn depends_on_the_split(&self) -> Option<&'static str> {
        match self {
            ModelConfig::SimpleBn(_) => Some("batch norm (statistics per rank)"),
            m if m.dropout() > 0.0 => Some("dropout (masks per rank)"),
            _ => None,
        }
    }

    /// (input, output) channels of the network for images of `channels` channels.
    pub fn io_channels(&self, channels: i64) -> (i64, i64) {
        let times = |on: bool| if on { 2 * channels } else { channels };
        (times(self.self_condition()), times(self.learn_sigma()))
    }

    /// How many times the model halves the image side: sides must be multiples of 2^this.
    pub fn downsamplings(&self) -> u32 {
        match self {
            ModelConfig::Simple(c) => c.downsamplings(),
            ModelConfig::SimpleBn(c) => c.downsamplings(),
            ModelConfig::Unet(c) => c.downsamplings(),
            ModelConfig::Lucidrains(c) => c.downsamplings(),
            ModelConfig::DdpmCifar(c) => c.downsamplings(),
        }
    }

    /// Problems with the model's own keys, and whether it can take images of side `size`.
    pub fn check(&self, size: i64, check: &mut Check) {
        let factor = 1i64 << self.downsamplings();
        check(
            size >= factor && size % factor == 0,
            "data.image_size",
            size.to_string(),
            &format!(
                "a multiple of {factor} for model `{}` ({} halvings of the side), e.g. {}; MNIST's 28 must be resized",
                self.name(),
                self.downsamplings(),
                factor * (32 / factor).max(1)
            ),
        );
        match self {
            ModelConfig::Simple(c) => c.check(check),
            ModelConfig::SimpleBn(c) => c.check(check),
            ModelConfig::Unet(c) => c.check(check),
            ModelConfig::Lucidrains(c) => c.check(check),
            ModelConfig::DdpmCifar(c) => c.check(check),
        }
    }
}

/// A non-empty list of integers >= 1.
pub fn positive(v: &[i64]) -> bool {
    !v.is_empty() && v.iter().all(|&x| x >= 1)
}

/// The time embedding's width, shared by `simple` and `simple_bn`.
pub(crate) fn check_time_emb_dim(time_emb_dim: i64, check: &mut Check) {
    check(
        time_emb_dim >= 4 && time_emb_dim % 2 == 0,
        "model.time_emb_dim",
        time_emb_dim.to_string(),
        "an even integer >= 4",
    );
}

/// The keys the `unet` and `lucidrains` models share.
pub(crate) fn check_unet_keys(
    dim: i64,
    init_dim: Option<i64>,
    dim_mults: &[i64],
    dropout: f64,
    attn_heads: i64,
    attn_dim_head: i64,
    check: &mut Check,
) {
    check(dim >= 4 && dim % 2 == 0, "model.dim", dim.to_string(), "an even integer >= 4");
    check(positive(dim_mults), "model.dim_mults", format!("{dim_mults:?}"), "a non-empty list of positive integers");
    check((0.0..1.0).contains(&dropout), "model.dropout", dropout.to_string(), "0 <= dropout < 1");
    check(attn_heads >= 1, "model.attn_heads", attn_heads.to_string(), "an integer >= 1");
    check(attn_dim_head >= 1, "model.attn_dim_head", attn_dim_head.to_string(), "an integer >= 1");
    if let Some(i) = init_dim {
        check(i >= 1, "model.init_dim", i.to_string(), "an integer >= 1");
    }
}

fn default_time_emb_dim() -> i64 {
    32
}
fn default_unet_dim() -> i64 {
    64
}
fn default_attn_heads() -> i64 {
    4
}
fn default_attn_dim_head() -> i64 {
    32
}
