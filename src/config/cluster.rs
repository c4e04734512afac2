//! `[cluster]`: a cluster-conditional DDPM fitted by variational EM (seed 000, §8). Images fall into
//! `q` clusters with weights π; the network is conditioned on the cluster through the class-embedding
//! path (no label dropout); E-steps every `e_step_every` training steps recompute each training
//! image's responsibilities from its bound under every cluster; the M-step is the training itself,
//! each image's cluster drawn from its responsibilities. Off (`q = 0`) by default and then absent
//! from the run's identity.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterInit {
    /// Each image in a uniformly drawn cluster.
    Random,
    /// k-means on pixels (k-means++ start, the run's seed), the clustering the EM then refines.
    KmeansPixels,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The number of clusters Q (0: no clustering).
    pub q: i64,
    /// Training steps between E-steps (the last E-step follows the last step).
    pub e_step_every: usize,
    /// Diffusion timesteps per image in an E-step's estimate of the bound (stratified over t = 2..T;
    /// the decoder term at t = 1 is always evaluated): Q · (e_step_timesteps + 1) network
    /// evaluations per image.
    pub e_step_timesteps: usize,
    /// (image, t, cluster) triples per network call in an E-step.
    pub e_step_batch: i64,
    pub init: ClusterInit,
    /// Deterministic annealing: τ ∝ (π_k e^{−L_k})^{1/temperature}, `temperature` at the first E-step
    /// falling geometrically to 1 at E-step `anneal_e_steps` (1: plain EM).
    pub temperature: f64,
    pub anneal_e_steps: usize,
    /// Stochastic-approximation EM: τ ← (1 − γ) τ + γ τ̂ with the E-step's τ̂, γ = `step_size` (1:
    /// plain EM, each E-step replaces τ). Below 1 an image changes cluster only when several E-steps
    /// agree, which averages the bound estimates' Monte-Carlo error out of the assignments.
    pub step_size: f64,
    /// A cluster whose weight π_k falls below this is refilled from the heaviest (0: never); default
    /// 1/(10 Q) when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_weight: Option<f64>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            q: 0,
            e_step_every: 200,
            e_step_timesteps: 4,
            e_step_batch: 512,
            init: ClusterInit::KmeansPixels,
            temperature: 1.0,
            anneal_e_steps: 0,
            step_size: 1.0,
            min_weight: None,
        }
    }
}

impl ClusterConfig {
    pub fn is_off(&self) -> bool {
        *self == ClusterConfig::default()
    }

    pub fn on(&self) -> bool {
        self.q > 0
    }

    pub fn min_weight(&self) -> f64 {
        self.min_weight.unwrap_or(if self.q > 0 { 0.1 / self.q as f64 } else { 0.0 })
    }

    /// `[cluster]`'s own ranges (what it excludes elsewhere is in `rules::cluster`).
    pub fn check(&self, check: &mut super::model::Check) {
        let c = self;
        if !c.on() {
            check(
                c.is_off(),
                "cluster.q",
                c.q.to_string(),
                "an integer >= 2 when any other `cluster` key is set (q = 0: no clustering)",
            );
            return;
        }
        check(c.q >= 2, "cluster.q", c.q.to_string(), "0 (off) or an integer >= 2");
        check(c.e_step_timesteps >= 1, "cluster.e_step_timesteps", c.e_step_timesteps.to_string(), "an integer >= 1");
        check(c.e_step_batch >= 1, "cluster.e_step_batch", c.e_step_batch.to_string(), "an integer >= 1");
        check(
            c.temperature >= 1.0 && c.temperature.is_finite(),
            "cluster.temperature",
            c.temperature.to_string(),
            "a finite number >= 1 (1: plain EM; above: deterministic annealing's start)",
        );
        check(
            c.step_size > 0.0 && c.step_size <= 1.0,
            "cluster.step_size",
            c.step_size.to_string(),
            "0 < step_size <= 1 (1: plain EM)",
        );
        if let Some(w) = c.min_weight {
            check(
                (0.0..1.0 / c.q.max(1) as f64).contains(&w),
                "cluster.min_weight",
                w.to_string(),
                &format!("0 <= min_weight < 1/q ({:.4})", 1.0 / c.q.max(1) as f64),
            );
        }
    }

    /// The training steps after which an E-step runs: every `e_step_every`, and after the last.
    pub fn e_step_at(&self, step: usize, steps: usize) -> bool {
        self.on() && (step == steps || step.is_multiple_of(self.e_step_every.max(1)))
    }
}
