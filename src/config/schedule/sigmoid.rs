//! `sigmoid`: β = sigmoid(linspace(−6, 6, T)) · (beta_end − beta_start) + beta_start.
pub use super::range::Config;
