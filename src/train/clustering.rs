//! The EM of a cluster-conditional run (`[cluster]`), woven into training: the responsibilities τ
//! `[N, Q]` of every training image live on the device beside the dataset; each training step draws
//! every image's cluster from its row of τ (the M-step's cheaper, unbiased estimator of
//! Σ_k τ_ik loss_k(x_i)); every `e_step_every` steps and after the last the E-step recomputes τ from
//! each image's bound under every cluster (`cluster::estep`) and π_k = mean_i τ_ik. τ, π's history and
//! the k-means baseline are part of each checkpoint, so a resumed run ends with what an
//! uninterrupted one ends with.
use super::hook::{Begin, End, Hook, Saved, Step};
use crate::cluster::em;
use crate::cluster::estep::EStep;
pub use crate::cluster::history::{EmRecord, Replicate, Scores};
use crate::cluster::kmeans;
use crate::config::{ClusterConfig, ClusterInit, RunConfig};
use crate::data::Dataset;
use crate::diffusion::Diffusion;
use crate::grid::make_grid;
use crate::models::Denoiser;
use crate::progress::Reporter;
use crate::rng::reseed;
use crate::track::atomic_replace;
use crate::track::checkpoint::Checkpoint;
use crate::track::run_dir::{Artifact, Folder, RunDir};
use crate::track::tensorboard::EventWriter;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Lloyd iterations of the k-means baseline at most.
const KMEANS_ITERATIONS: usize = 300;

fn to_ints(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Int64)).expect("integers")
}

pub struct Clustering {
    cfg: ClusterConfig,
    seed: u64,
    estep: EStep,
    /// τ, `[N, Q]` f32 on the device.
    pub tau: Tensor,
    /// k-means on pixels with the run's seed: the baseline (and the `kmeans_pixels` start), `[N]`.
    pub kmeans: Tensor,
    pub history: Vec<EmRecord>,
    /// The training images' labels (−1: none), for the scores of each E-step.
    truth: Vec<i64>,
}

impl Clustering {
    /// The start: k-means on the training images' pixels (always, as the baseline) and the
    /// initial responsibilities.
    pub fn start(config: &RunConfig, data: &Dataset, reporter: &mut dyn Reporter) -> Self {
        let (cfg, seed) = (config.cluster.clone(), config.seed);
        let started = Instant::now();
        let (n, q) = (data.len(), cfg.q);
        let km = kmeans::kmeans(&data.images, q, seed, KMEANS_ITERATIONS);
        reporter.note(&format!(
            "k-means on pixels: {q} clusters of {n} images, {} Lloyd iterations, inertia {:.1}",
            km.iterations, km.inertia
        ));
        let first = match cfg.init {
            ClusterInit::KmeansPixels => km.assignment.shallow_clone(),
            ClusterInit::Random => em::random_assignment(n, q, seed, data.images.device()),
        };
        let tau = em::one_hot(&first, q);
        let estep = EStep { strata: cfg.e_step_timesteps, batch: cfg.e_step_batch, seed };
        let truth = to_ints(&data.labels);
        let record = EmRecord {
            iteration: 0,
            step: 0,
            temperature: None,
            step_size: None,
            sinkhorn_iterations: None,
            pi: em_pi(&tau, cfg.pi_prior),
            pi_estimate: None,
            changed: 1.0,
            estimate_keeps: None,
            estimate_scores: None,
            margin_nats: None,
            bound_bpd: None,
            refills: Vec::new(),
            collapsed: false,
            replicate: None,
            scores: Scores::of(&truth, &to_ints(&first)),
            seconds: started.elapsed().as_secs_f64(),
        };
        Clustering { cfg, seed, estep, tau, kmeans: km.assignment, history: vec![record], truth }
    }

    /// π: mean_i τ_ik, with `cluster.pi_prior`'s pseudo-counts.
    pub fn pi(&self) -> Vec<f64> {
        em_pi(&self.tau, self.cfg.pi_prior)
    }

    /// The clusters of the images at `indices` for training step `step`: drawn from their rows of τ
    /// (stream "cluster-draw"/step), `[B]`.
    pub fn labels(&self, indices: &Tensor, step: usize) -> Tensor {
        reseed(self.seed, "cluster-draw", step as u64);
        self.tau.index_select(0, indices).multinomial(1, true).squeeze_dim(1)
    }

    /// The E-step after training step `step` with the network being trained; `replicate`: estimate
    /// the bounds a second time with independent draws and record how far the two agree.
    #[allow(clippy::too_many_arguments)]
    pub fn e_step(
        &mut self,
        step: usize,
        replicate: bool,
        diffusion: &Diffusion,
        model: &dyn Denoiser,
        images: &Tensor,
        reporter: &mut dyn Reporter,
    ) -> EmRecord {
        let started = Instant::now();
        let (n, q) = (images.size()[0], self.cfg.q);
        let iteration = self.history.len();
        let temperature = em::temperature_at(iteration - 1, self.cfg.temperature, self.cfg.anneal_e_steps);
        reporter.phase("e-step", n as u64);
        let bounds =
            self.estep.negative_bounds(diffusion, model, images, q, iteration, &mut |k| reporter.advance(k as u64));
        let replicate = replicate.then(|| {
            // A stream no E-step uses: iteration indices count from 1.
            let other = self.estep.negative_bounds(diffusion, model, images, q, 0, &mut |_| {});
            compare(&bounds, &other)
        });
        // What decides: the raw bounds or, with offsets, each cluster's less its mean over the images.
        let deciding = if self.cfg.offsets { em::offset(&bounds) } else { bounds.shallow_clone() };
        let log_pi = em::weights_with_prior(&self.tau, self.cfg.pi_prior).clamp_min(1e-12).log();
        let (estimate, sinkhorn) = if self.cfg.balance > 0.0 {
            let b = em::balanced(&em::log_kernel(&deciding, &log_pi, temperature), self.cfg.balance);
            if b.iterations >= em::SINKHORN_ITERATIONS {
                reporter.note(&format!(
                    "E-step {iteration}: Sinkhorn-Knopp stopped after {} iterations, its scaling still changing by {:.1e}",
                    b.iterations, b.change
                ));
            }
            (b.tau, Some(b.iterations))
        } else {
            (em::responsibilities(&deciding, &log_pi, temperature), None)
        };
        let estimate = estimate.to_kind(Kind::Float);
        let (before, proposed) = (self.tau.argmax(1, false), estimate.argmax(1, false));
        let estimate_keeps = proposed.eq_tensor(&before).to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        let estimate_scores = Scores::of(&self.truth, &to_ints(&proposed));
        let step_size = self.cfg.step_size_at(iteration);
        let mut tau = em::damped(&self.tau, &estimate, step_size);
        let min_weight = self.cfg.min_weight();
        let light = pi_of(&tau).iter().filter(|&&p| p < min_weight).count();
        let collapsed = q > 1 && light as i64 == q - 1;
        let refills = em::refill_empty(&mut tau, &bounds, min_weight);
        let changed =
            tau.argmax(1, false).ne_tensor(&self.tau.argmax(1, false)).to_kind(Kind::Double).mean(Kind::Double);
        let (sorted, _) = bounds.sort(1, false);
        let margin = (sorted.select(1, 1) - sorted.select(1, 0)).mean(Kind::Double);
        let dims = images.size()[1..].iter().product::<i64>() as f64;
        let own = bounds.gather(1, &tau.argmax(1, true), false).mean(Kind::Double) / (dims * std::f64::consts::LN_2);
        self.tau = tau;
        let record = EmRecord {
            iteration,
            step,
            temperature: Some(temperature),
            step_size: Some(step_size),
            sinkhorn_iterations: sinkhorn,
            pi: self.pi(),
            pi_estimate: Some(pi_of(&estimate)),
            estimate_keeps: Some(estimate_keeps),
            estimate_scores,
            changed: changed.double_value(&[]),
            margin_nats: Some(margin.double_value(&[])),
            bound_bpd: Some(own.double_value(&[])),
            refills,
            collapsed,
            replicate,
            scores: Scores::of(&self.truth, &to_ints(&self.tau.argmax(1, false))),
            seconds: started.elapsed().as_secs_f64(),
        };
        for r in &record.refills {
            reporter.note(&format!(
                "E-step {iteration}: cluster {} had π < {:.4}; refilled with {} images of cluster {}",
                r.cluster,
                self.cfg.min_weight(),
                r.images,
                r.from
            ));
        }
        self.history.push(record.clone());
        record
    }

    /// Logs an E-step's numbers to TensorBoard: π_k, the changed share, the margin.
    pub fn log(&self, record: &EmRecord, events: &mut EventWriter) -> Result<()> {
        let step = record.step as i64;
        for (k, p) in record.pi.iter().enumerate() {
            events.add_scalar(&format!("cluster/pi_{k}"), *p, step)?;
        }
        events.add_scalar("cluster/changed", record.changed, step)?;
        for (tag, v) in [
            ("cluster/margin_nats", record.margin_nats),
            ("cluster/bound_bpd", record.bound_bpd),
            ("cluster/temperature", record.temperature),
        ] {
            if let Some(v) = v {
                events.add_scalar(tag, v, step)?;
            }
        }
        Ok(())
    }

    /// What a checkpoint carries: τ and the k-means baseline as tensors, the history as state.
    fn state(&self) -> (Vec<(String, Tensor)>, serde_json::Value) {
        let tensors = vec![
            ("cluster.tau".to_string(), self.tau.shallow_clone()),
            ("cluster.kmeans".to_string(), self.kmeans.shallow_clone()),
        ];
        (tensors, serde_json::to_value(&self.history).expect("history serialises"))
    }

    fn restore_from(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        state: &serde_json::Value,
        device: Device,
    ) -> Result<()> {
        let get = |name: &str| tensors.get(name).with_context(|| format!("the checkpoint lacks {name}"));
        self.tau = get("cluster.tau")?.to_device(device);
        self.kmeans = get("cluster.kmeans")?.to_device(device);
        self.history = serde_json::from_value(state.clone()).context("the checkpoint's cluster history")?;
        Ok(())
    }

    /// The run's clustering numbers: against the dataset's labels where it has them, for the EM's
    /// final assignment and for k-means on pixels; how often a cluster was refilled and how many
    /// E-steps found one cluster holding everything (all others below the minimum weight).
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        let em = to_ints(&self.tau.argmax(1, false));
        for (prefix, found) in [("cluster", em), ("kmeans", to_ints(&self.kmeans))] {
            if let Some(s) = Scores::of(&self.truth, &found) {
                out.insert(format!("{prefix}_accuracy"), s.accuracy);
                out.insert(format!("{prefix}_nmi"), s.nmi);
                out.insert(format!("{prefix}_ari"), s.ari);
            }
        }
        let e_steps = &self.history[1..];
        out.insert("em_refills".into(), e_steps.iter().map(|r| r.refills.len()).sum::<usize>() as f64);
        out.insert("em_collapses".into(), e_steps.iter().filter(|r| r.collapsed).count() as f64);
        out.insert("e_step_seconds".into(), e_steps.iter().map(|r| r.seconds).sum());
        if let Some(r) = e_steps.last().and_then(|r| r.replicate.as_ref()) {
            out.insert("e_step_agreement".into(), r.agreement);
            out.insert("e_step_gap_noise".into(), r.gap_noise_nats);
        }
        if let Some(m) = e_steps.last().and_then(|r| r.margin_nats) {
            out.insert("e_step_margin".into(), m);
        }
        out
    }

    /// `assignments.parquet`: each training image's index, label, EM cluster, its responsibility and
    /// its k-means cluster; `em_history.json`: the E-steps.
    pub fn write(&self, dir: &RunDir) -> Result<()> {
        use polars::prelude::*;
        let (best, cluster) = self.tau.max_dim(1, false);
        let n = self.truth.len() as i64;
        let mut df = DataFrame::new_infer_height(vec![
            Column::new("index".into(), (0..n).collect::<Vec<i64>>()),
            Column::new("label".into(), self.truth.clone()),
            Column::new("cluster".into(), to_ints(&cluster)),
            Column::new(
                "responsibility".into(),
                Vec::<f64>::try_from(best.to_device(Device::Cpu).to_kind(Kind::Double)).expect("τ"),
            ),
            Column::new("kmeans".into(), to_ints(&self.kmeans)),
        ])?;
        atomic_replace(&dir.file(Artifact::Assignments), |tmp| {
            let mut f = std::fs::File::create(tmp)?;
            ParquetWriter::new(&mut f).finish(&mut df)?;
            Ok(())
        })?;
        crate::track::atomic_write(
            &dir.file(Artifact::EmHistory),
            serde_json::to_string_pretty(&self.history)?.as_bytes(),
        )
    }

    /// Per cluster k: 16 samples conditioned on k beside its 16 most responsible training images,
    /// `clusters/cluster_<k>.png` (4 × 4 each), and all clusters in `clusters.png` (a row each: 8
    /// samples, then 8 images).
    #[allow(clippy::too_many_arguments)]
    pub fn draw_grids(
        &self,
        config: &RunConfig,
        diffusion: &Diffusion,
        model: &dyn Denoiser,
        images: &Tensor,
        dir: &RunDir,
        steps: usize,
        events: &mut EventWriter,
        reporter: &mut dyn Reporter,
    ) -> Result<()> {
        let q = self.cfg.q;
        let device = images.device();
        let per = 16i64;
        let sample_steps = config.sample.sampler.steps(diffusion.timesteps());
        reporter.phase("cluster samples", sample_steps as u64);
        reseed(config.seed, "cluster-samples", 0);
        let labels = Tensor::arange(q, (Kind::Int64, device)).repeat_interleave_self_int(per, 0, None);
        let mut shape = vec![q * per];
        shape.extend(&images.size()[1..]);
        let x_t = Tensor::randn(shape.as_slice(), (Kind::Float, device));
        let mut network = |x: &Tensor, t: &Tensor| model.forward_t(x, t, Some(&labels), false);
        let samples = diffusion
            .sample(&config.sample.sampler, x_t, &[], &mut network, &mut |k, _| {
                reporter.advance(k as u64);
                crate::signal::go_on()
            })
            .x0;
        crate::signal::check("the cluster samples")?;
        std::fs::create_dir_all(dir.folder(Folder::ClusterGrids))?;
        let assigned = self.tau.argmax(1, false);
        let (mut rows, mut top_all) = (Vec::new(), Vec::new());
        for k in 0..q {
            // The most responsible images of those assigned to k (fewer if k holds fewer; blank then).
            let score = self.tau.select(1, k).where_self(&assigned.eq(k), &self.tau.select(1, k).full_like(-1.0));
            let held = assigned.eq(k).sum(Kind::Int64).int64_value(&[]).min(per);
            let order = score.argsort(0, true).narrow(0, 0, held);
            let mut blank = vec![per - held];
            blank.extend(&images.size()[1..]);
            let top = Tensor::cat(
                &[images.index_select(0, &order), Tensor::full(blank.as_slice(), -1.0, (Kind::Float, device))],
                0,
            );
            let s = samples.narrow(0, k * per, per);
            // 4 rows of 8: four samples, then four images.
            let side: Vec<Tensor> = (0..4).flat_map(|r| [s.narrow(0, 4 * r, 4), top.narrow(0, 4 * r, 4)]).collect();
            let grid = make_grid(&Tensor::cat(&side, 0), 8, 2)?;
            super::outputs::save_image(&dir.cluster_grid(k), &grid, &format!("cluster_{k}"), steps, events)?;
            rows.push(s.narrow(0, 0, 8));
            top_all.push(top.narrow(0, 0, 8));
        }
        let overview: Vec<Tensor> = rows.into_iter().zip(top_all).flat_map(|(s, t)| [s, t]).collect();
        let grid = make_grid(&Tensor::cat(&overview, 0), 16, 2)?;
        super::outputs::save_image(&dir.file(Artifact::Clusters), &grid, "clusters", steps, events)
    }
}

/// The EM as a training hook: the batch's classes are drawn from τ, the E-step runs after the steps
/// `cluster.e_step_at` names, τ and the history ride in every checkpoint, and the end writes the
/// assignments, the history, the grids and the scores.
impl Hook for Clustering {
    fn name(&self) -> &'static str {
        "e-step"
    }

    fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        let device = self.tau.device();
        self.restore_from(&ck.tensors, &ck.state["cluster"], device)
    }

    fn begin(&mut self, at: &mut Begin) -> Result<()> {
        if at.start == 0 {
            self.log(&self.history[0], at.events)?;
        }
        Ok(())
    }

    fn labels(&self, indices: &Tensor, step: usize) -> Option<Tensor> {
        Some(Clustering::labels(self, indices, step))
    }

    fn after_step(&mut self, s: &mut Step) -> Result<()> {
        let (step, steps) = (s.step, s.steps);
        if !self.cfg.e_step_at(step, steps) {
            return Ok(());
        }
        let record = self.e_step(step, step == steps, s.diffusion, s.model, &s.data.images, s.reporter);
        self.log(&record, s.events)?;
        s.reporter.note(&format!(
            "E-step {} at step {step}: π = [{}], {:.1} % changed cluster, margin {:.1} nats, {:.1} s",
            record.iteration,
            record.pi.iter().map(|p| format!("{p:.3}")).collect::<Vec<_>>().join(", "),
            100.0 * record.changed,
            record.margin_nats.unwrap_or(0.0),
            record.seconds
        ));
        s.resume_progress();
        Ok(())
    }

    fn save(&self, into: &mut Saved) {
        let (tensors, state) = self.state();
        into.tensors.extend(tensors);
        into.state.insert("cluster".into(), state);
    }

    fn finish(&mut self, end: &mut End) -> Result<()> {
        let steps = end.spec.config.train.steps;
        self.write(end.run)?;
        self.draw_grids(
            &end.spec.config,
            end.diffusion,
            end.sampling_model,
            &end.data.images,
            end.run,
            steps,
            end.events,
            end.reporter,
        )?;
        let metrics = self.metrics();
        // Beside the evaluation's numbers (`eval/<name>`: the HParams dashboard's metric columns).
        for (k, v) in &metrics {
            end.events.add_scalar(&format!("eval/{k}"), *v, steps as i64)?;
        }
        end.metrics.extend(metrics);
        Ok(())
    }
}

/// π_k = mean_i τ_ik.
fn pi_of(tau: &Tensor) -> Vec<f64> {
    em_pi(tau, 0.0)
}

/// π with a prior's pseudo-counts (`em::weights_with_prior`).
fn em_pi(tau: &Tensor, prior: f64) -> Vec<f64> {
    Vec::<f64>::try_from(em::weights_with_prior(tau, prior)).expect("π")
}

/// Two estimates of the bounds `[N, Q]`: the share of images whose best cluster agrees, and the
/// noise of the gap between the first estimate's two best clusters.
fn compare(first: &Tensor, second: &Tensor) -> Replicate {
    let (a, b) = (first.argmin(1, false), second.argmin(1, false));
    let agreement = a.eq_tensor(&b).to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
    let (_, order) = first.sort(1, false);
    let top2 = order.narrow(1, 0, 2);
    let gap = |x: &Tensor| {
        let g = x.gather(1, &top2, false);
        g.select(1, 1) - g.select(1, 0)
    };
    let d = gap(first) - gap(second);
    let gap_noise_nats = if d.size()[0] > 1 { d.std(true).double_value(&[]) / std::f64::consts::SQRT_2 } else { 0.0 };
    Replicate { agreement, gap_noise_nats }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::em::Refill;

    #[test]
    fn a_collapse_and_the_refills_are_counted() {
        let record = |pi: Vec<f64>, refills: usize| EmRecord {
            collapsed: refills > 0,
            iteration: 1,
            step: 1,
            temperature: Some(1.0),
            step_size: Some(1.0),
            sinkhorn_iterations: None,
            pi,
            pi_estimate: None,
            changed: 0.0,
            estimate_keeps: None,
            estimate_scores: None,
            margin_nats: Some(0.0),
            bound_bpd: Some(0.0),
            refills: vec![Refill { cluster: 0, from: 1, images: 2 }; refills],
            replicate: None,
            scores: None,
            seconds: 1.0,
        };
        let c = Clustering {
            cfg: ClusterConfig { q: 2, ..ClusterConfig::default() },
            seed: 0,
            estep: EStep { strata: 1, batch: 8, seed: 0 },
            tau: em::one_hot(&Tensor::from_slice(&[0i64, 0, 1, 1]), 2),
            kmeans: Tensor::from_slice(&[1i64, 1, 0, 1]),
            history: vec![record(vec![0.5, 0.5], 0), record(vec![0.9, 0.1], 1), record(vec![0.5, 0.5], 0)],
            truth: vec![3, 3, 4, 4],
        };
        let m = c.metrics();
        assert_eq!(m["cluster_accuracy"], 1.0);
        assert_eq!(m["kmeans_accuracy"], 0.75);
        assert_eq!(m["cluster_ari"], 1.0);
        assert_eq!(m["em_refills"], 1.0);
        assert_eq!(m["em_collapses"], 1.0);
        assert_eq!(m["e_step_seconds"], 2.0);
    }

    /// Bounds of 3 images under 3 clusters, estimated twice: image 2's best cluster differs; the
    /// gaps (2nd best − best under the first) are 1, 2, 1 and 3, 2, −1 under the second: differences
    /// −2, 0, 2 with standard deviation 2, so the noise of one gap is 2/√2.
    #[test]
    fn two_estimates_are_compared_by_hand() {
        let first = Tensor::from_slice(&[0.0f64, 1.0, 5.0, 4.0, 2.0, 9.0, 3.0, 8.0, 4.0]).view([3, 3]);
        let second = Tensor::from_slice(&[0.0f64, 3.0, 5.0, 4.0, 2.0, 9.0, 3.0, 8.0, 2.0]).view([3, 3]);
        let r = compare(&first, &second);
        assert!((r.agreement - 2.0 / 3.0).abs() < 1e-15);
        assert!((r.gap_noise_nats - 2.0 / std::f64::consts::SQRT_2).abs() < 1e-12, "{}", r.gap_noise_nats);
    }
}
