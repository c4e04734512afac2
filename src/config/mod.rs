//! From an experiment file to validated, hashed `RunSpec`s. Knows nothing of tensors.
mod experiment;
mod schema;
mod spec;

pub use experiment::{load_experiment, Experiment, LoadOptions};
pub use schema::*;
pub use spec::RunSpec;
