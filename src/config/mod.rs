//! The vocabulary of the program: the TOML schema of a run (`schema`, with its validation) and the
//! plain `RunSpec`. Imports nothing of the crate; loading and hashing live in `experiment`.
pub mod cluster;
mod cpu_isa;
pub mod formulation;
pub mod model;
pub mod rules;
pub mod sampler;
pub mod schedule;
mod schema;
mod spec;

pub use cpu_isa::{CpuIsa, PINNED_VARIABLES};
pub use schema::*;
pub use spec::RunSpec;
