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
    /// The step size γ it moved τ by (None at the initialisation and in histories from before
    /// `cluster.step_size_decay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_size: Option<f64>,
    /// Sinkhorn-Knopp's iterations with `cluster.balance` > 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinkhorn_iterations: Option<usize>,
    /// π after the E-step (and any refill), with `cluster.pi_prior`'s pseudo-counts.
    pub pi: Vec<f64>,
    /// The E-step's own estimate, mean_i τ̂_ik, before damping and refills (None at the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pi_estimate: Option<Vec<f64>>,
    /// The share of images whose most responsible cluster changed.
    pub changed: f64,
    /// The share of images whose most responsible cluster under the E-step's own estimate τ̂ (before
    /// damping and refills) is the one τ gave them before it: how far the conditioned networks agree
    /// with the clusters they were trained on (None at the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_keeps: Option<f64>,
    /// The E-step's own estimate τ̂'s most responsible cluster against the labels: what the bound
    /// itself says, before damping (None at the start and without labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate_scores: Option<Scores>,
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

/// π of a clustering run after training step `step`: that of its last E-step at or before `step`,
/// from `em_history.json` (a finished run) or else from the checkpoint at `step`.
pub fn weights_at(dir: &crate::track::run_dir::RunDir, step: usize) -> anyhow::Result<Vec<f64>> {
    use crate::track::run_dir::{Artifact, Folder};
    use anyhow::Context;
    let file = dir.file(Artifact::EmHistory);
    let history: Vec<EmRecord> = if file.exists() {
        let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not an E-step history", file.display()))?
    } else {
        let ck = crate::track::checkpoint::load(&dir.folder(Folder::Checkpoints), step)?;
        let state =
            ck.state.get("cluster").with_context(|| format!("the checkpoint at step {step} has no clustering"))?;
        serde_json::from_value(state.clone()).context("the checkpoint's cluster history")?
    };
    let last = history.iter().rev().find(|r| r.step <= step);
    last.map(|r| r.pi.clone()).with_context(|| format!("{}: no E-step at or before step {step}", file.display()))
}
