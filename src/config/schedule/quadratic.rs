//! `quadratic` (Ho et al.'s code, "quad"): √β linear from √beta_start to √beta_end.
pub use super::range::Config;
