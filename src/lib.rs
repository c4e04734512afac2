//! `ddpm`: a research harness for diffusion-model ablations.
//!
//! Data flows one way: experiment TOML → `experiment` (loaded, validated by `config`, each run a
//! `RunSpec` hashed by `experiment::identity`) → `runner` → `train` (with `models`, `diffusion`, `data`,
//! and its hooks) → a run folder (`track::run_dir`, its schema) → `eval` → `analysis` and `reproduce`.
//! CONTRIBUTING.md gives each module its floor; `tests/architecture.rs` holds the layering.
pub mod analysis;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod data;
pub mod device;
pub mod diffusion;
pub mod distributed;
pub mod eval;
pub mod experiment;
pub mod foreach;
pub mod grid;
pub mod hardware;
pub mod hash;
pub mod models;
pub mod plot;
pub mod posthoc;
pub mod progress;
pub mod reproduce;
pub mod rng;
pub mod runner;
pub mod scaling;
pub mod signal;
pub mod track;
pub mod train;
pub mod weights;
