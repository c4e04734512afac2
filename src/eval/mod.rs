//! Evaluation outputs: sample grids (FID and bits/dim come with the evaluation issue).
pub mod grid;
