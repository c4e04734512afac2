//! Evaluation: sample grids, the schedules' comparison and the variational bound in bits/dim
//! (FID comes with the evaluation issue).
pub mod bpd;
pub mod grid;
pub mod schedules;
