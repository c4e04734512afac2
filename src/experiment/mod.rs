//! Loading an experiment: its files layered and expanded into runs (`load`), each run's identity and
//! hash (`identity`). One floor above `data` and `diffusion`, whose fingerprints the identity reads.
pub mod identity;
mod load;
pub mod question;

pub use identity::HASH_LEN;
pub use load::{load_experiment, Experiment, LoadOptions, DEFAULT_PROFILE};
pub use question::{Question, SeedDesign};
