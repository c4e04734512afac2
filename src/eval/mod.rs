//! Evaluation: FID and KID through Inception-v3, the variational bound in bits/dim, sample grids and
//! the schedules' comparison.
pub mod bpd;
pub mod classifier;
pub mod during;
pub mod fid;
pub mod images;
pub mod inception;
pub mod metric;
pub mod reference;
pub mod run_eval;
pub mod schedules;
