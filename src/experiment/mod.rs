//! Loading an experiment: its files layered and expanded into runs (`load`), each run's identity and
//! hash (`identity`). One floor above `data` and `diffusion`, whose fingerprints the identity reads.
pub mod identity;
mod load;
pub mod question;

pub use identity::HASH_LEN;

/// The name of a run's link under `results/experiments/<experiment>/`: its label with `/` made `_`
/// (a label is one folder name there). Two labels with one link name are refused at load.
pub fn link_name(label: &str) -> String {
    label.replace('/', "_")
}
pub use load::{load_experiment, Experiment, LoadOptions, DEFAULT_PROFILE};
pub use question::{Question, SeedDesign};
