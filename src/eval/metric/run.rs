//! The training's numbers, read from the run's status file: the final loss and the timings.
use super::Metric;
use crate::track::run_dir::Status;

pub const LOSS: [Metric; 1] = [Metric::model("final_loss", "final loss", 5).untagged().panel("final training loss")];

/// The wall clock: the training's images/s and time, the sampler's seconds for the FID images.
pub const TIMINGS: [Metric; 3] = [
    Metric::timing("sample_seconds", "sampling seconds"),
    Metric::timing("images_per_sec", "images/s").higher(),
    Metric::timing("wall_seconds", "wall seconds"),
];

pub fn of_status(s: &Status) -> Vec<(String, f64)> {
    [("final_loss", s.final_loss), ("images_per_sec", s.images_per_sec), ("wall_seconds", s.wall_seconds)]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v?)))
        .chain(s.train_metrics.iter().map(|(k, v)| (k.clone(), *v)))
        .collect()
}
