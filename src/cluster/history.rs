//! A clustering's E-steps as `em_history.json` keeps them, and its scores against the labels.
use super::em::Refill;
use super::scores;
use serde::{Deserialize, Serialize};

/// One E-step (iteration 0: the initialisation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmRecord {
    pub iteration: usize,
    /// The training step it followed.
    pub step: usize,
    /// None at the initialisation.
    pub temperature: Option<f64>,
    /// π after the E-step (and any refill).
    pub pi: Vec<f64>,
    /// The E-step's own estimate, mean_i τ̂_ik, before damping and refills (None at the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pi_estimate: Option<Vec<f64>>,
    /// The share of images whose most responsible cluster changed.
    pub changed: f64,
    /// Mean over images of the gap, in nats, between the best and the second-best cluster's bound.
    pub margin_nats: Option<f64>,
    /// Mean over images of the bound under their most responsible cluster, bits/dim.
    pub bound_bpd: Option<f64>,
    pub refills: Vec<Refill>,
    /// Whether, before any refill, one cluster took (nearly) everything: every other cluster below
    /// the minimum weight.
    #[serde(default)]
    pub collapsed: bool,
    /// The final E-step only: a second estimate with independent timesteps and noise, and how far
    /// the two agree (see `Replicate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicate: Option<Replicate>,
    /// The assignment (τ's most responsible cluster) against the dataset's labels, where it has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<Scores>,
    pub seconds: f64,
}

/// A clustering against the labels: accuracy under the best matching, NMI, ARI.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub accuracy: f64,
    pub nmi: f64,
    pub ari: f64,
}

impl Scores {
    /// Over the labelled images (label ≥ 0); None when there are none.
    pub fn of(truth: &[i64], found: &[i64]) -> Option<Scores> {
        let labelled: Vec<usize> = (0..truth.len()).filter(|&i| truth[i] >= 0).collect();
        if labelled.is_empty() {
            return None;
        }
        let pick = |v: &[i64]| labelled.iter().map(|&i| v[i]).collect::<Vec<i64>>();
        let (truth, found) = (pick(truth), pick(found));
        Some(Scores {
            accuracy: scores::matched_accuracy(&truth, &found),
            nmi: scores::nmi(&truth, &found),
            ari: scores::ari(&truth, &found),
        })
    }
}

/// How much the Monte-Carlo error of the bound estimate moves the assignments: the final E-step is
/// estimated twice with independent draws.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replicate {
    /// The share of images with the same most likely cluster under both estimates.
    pub agreement: f64,
    /// The standard deviation of one estimate's gap L_b − L_a between an image's two best clusters
    /// (a, b under the first estimate), in nats: std(gap₁ − gap₂)/√2.
    pub gap_noise_nats: f64,
}
