//! The variational bound in bits/dim and its terms (`eval::bpd`), on the first test images.
use super::Metric;
use crate::eval::bpd::BpdReport;

pub const METRICS: [Metric; 4] = [
    Metric::model("bpd", "bits/dim", 4).headline().panel("bits/dim (lower is better)"),
    Metric::model("bpd_prior", "prior bits/dim", 4),
    Metric::model("bpd_diffusion", "diffusion bits/dim", 4),
    Metric::model("bpd_decoder", "decoder bits/dim", 4),
];

pub fn values(r: &BpdReport) -> Vec<(String, f64)> {
    values_of(r.total, r.prior, r.diffusion, r.decoder)
}

/// The bound's total and its prior, diffusion and decoder terms under their names.
pub fn values_of(total: f64, prior: f64, diffusion: f64, decoder: f64) -> Vec<(String, f64)> {
    [("bpd", total), ("bpd_prior", prior), ("bpd_diffusion", diffusion), ("bpd_decoder", decoder)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}
