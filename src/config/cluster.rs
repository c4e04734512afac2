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

/// How the network sees the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterEmbedding {
    /// A learned vector per cluster (N(0, 1) at the start), added to the timestep embedding: the
    /// class-embedding path of class-conditional models.
    #[default]
    Learned,
    /// A fixed one-hot vector (cluster k: 1 in coordinate k, 0 elsewhere) added to the timestep
    /// embedding and never trained: the clusters stay apart in the network's input however
    /// the training pulls (needs q at most the embedding's width).
    OneHot,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_learned(v: &ClusterEmbedding) -> bool {
    *v == ClusterEmbedding::Learned
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The number of clusters Q (0: no clustering).
    pub q: i64,
    /// Training steps between E-steps (the last E-step follows the last step).
    pub e_step_every: usize,
    /// The M-phase before the first E-step, in units of `e_step_every`: the first E-step follows
    /// step m · `e_step_every`, the next ones every `e_step_every` (1: from the first interval on).
    /// Relative, so that a profile that rescales `e_step_every` rescales it too.
    #[serde(skip_serializing_if = "is_one")]
    pub m_phase: usize,
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
    /// Decreasing step sizes (Robbins-Monro, as SAEM's): E-step e (from 1) moves τ by
    /// γ_e = step_size · e^(−step_size_decay) (0: a constant step).
    #[serde(skip_serializing_if = "is_zero")]
    pub step_size_decay: f64,
    /// Balanced assignments: the E-step's responsibilities are scaled by Sinkhorn-Knopp towards
    /// equal cluster sizes N/q (Asano et al. 2020; SwAV), with this strength ρ in [0, 1]: the
    /// column scaling of unbalanced Sinkhorn, v ← (N/q / colsum)^ρ (Chizat et al. 2018, a KL penalty
    /// λ = ρ/(1 − ρ) on the sizes). 0: the posterior; 1: an exact equipartition (π then 1/q).
    #[serde(skip_serializing_if = "is_zero")]
    pub balance: f64,
    /// A symmetric Dirichlet prior on π against collapse, its pseudo-counts as a share w of the
    /// images: π_k = (1 − w) · mean_i τ_ik + w/q (MAP with α = 1 + wN/(q(1 − w))). 0: none.
    #[serde(skip_serializing_if = "is_zero")]
    pub pi_prior: f64,
    /// Per-cluster bound offsets: before the responsibilities, each cluster's bounds L_ik lose their
    /// mean over the images, so a cluster whose network is broadest does not win every image by
    /// a constant; false: the raw bound.
    #[serde(skip_serializing_if = "is_false")]
    pub offsets: bool,
    #[serde(skip_serializing_if = "is_learned")]
    pub embedding: ClusterEmbedding,
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
            m_phase: 1,
            e_step_timesteps: 4,
            e_step_batch: 512,
            init: ClusterInit::KmeansPixels,
            temperature: 1.0,
            anneal_e_steps: 0,
            step_size: 1.0,
            step_size_decay: 0.0,
            balance: 0.0,
            pi_prior: 0.0,
            offsets: false,
            embedding: ClusterEmbedding::Learned,
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
        check(c.m_phase >= 1, "cluster.m_phase", c.m_phase.to_string(), "an integer >= 1 (1: no longer M-phase)");
        check(
            (0.0..=2.0).contains(&c.step_size_decay),
            "cluster.step_size_decay",
            c.step_size_decay.to_string(),
            "0 <= step_size_decay <= 2 (0: a constant step; 1: γ_e = step_size / e)",
        );
        check(
            (0.0..=1.0).contains(&c.balance),
            "cluster.balance",
            c.balance.to_string(),
            "0 <= balance <= 1 (0: the posterior; 1: equal cluster sizes)",
        );
        check(
            (0.0..1.0).contains(&c.pi_prior),
            "cluster.pi_prior",
            c.pi_prior.to_string(),
            "0 <= pi_prior < 1 (the prior's pseudo-counts as a share of the images; 0: none)",
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

    /// The step after which the first E-step runs.
    pub fn first(&self) -> usize {
        self.m_phase.max(1) * self.e_step_every.max(1)
    }

    /// The training steps after which an E-step runs: m · `e_step_every`, then every `e_step_every`,
    /// and after the last.
    pub fn e_step_at(&self, step: usize, steps: usize) -> bool {
        let first = self.first();
        self.on() && (step == steps || (step >= first && (step - first).is_multiple_of(self.e_step_every.max(1))))
    }

    /// The step size of E-step `e` (from 1): `step_size` · e^(−`step_size_decay`).
    pub fn step_size_at(&self, e: usize) -> f64 {
        self.step_size * (e.max(1) as f64).powf(-self.step_size_decay)
    }
}
