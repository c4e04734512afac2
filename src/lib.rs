//! `ddpm`: a research harness for diffusion-model ablations.
//!
//! Data flows one way: experiment TOML → `config` (validated, hashed `RunSpec`s) → `runner` →
//! `train` (with `models`, `diffusion`, `data`) → a run directory (`track`) → `eval` outputs.
pub mod analysis;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod data;
pub mod device;
pub mod diffusion;
pub mod eval;
pub mod experiment;
pub mod foreach;
pub mod grid;
pub mod hardware;
pub mod hash;
pub mod models;
pub mod plot;
pub mod progress;
pub mod reproduce;
pub mod rng;
pub mod runner;
pub mod track;
pub mod train;
pub mod weights;
