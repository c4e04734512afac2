//! The analysis charts: loss curves per variant, final metrics with their intervals, loss and bound
//! terms against log-SNR, the schedules' ᾱ_t, and the variants' sample grids side by side.
use super::collect::RunRecord;
use super::stats::Summary;
use crate::config::ScheduleConfig;
use crate::experiment::Experiment;
use crate::plot::{interval_chart, labelled_row, line_chart, Axes, Figure, Interval, Panel, Series};
use anyhow::Result;
use std::collections::BTreeMap;

/// The finished runs of a variant.
fn done<'a>(records: &'a [RunRecord], variant: &'a str) -> impl Iterator<Item = &'a RunRecord> + 'a {
    records.iter().filter(move |r| r.variant == variant && r.state == "done")
}

/// Mean over the variant's runs at each x, with the band from the smallest to the largest run.
fn mean_with_range(name: &str, runs: Vec<Vec<(f64, f64)>>) -> Series {
    let mut at: BTreeMap<i64, (f64, Vec<f64>)> = BTreeMap::new();
    for points in &runs {
        for &(x, y) in points {
            // Keyed by x rounded to 1e-6: the runs of a variant share their steps and log-SNRs.
            at.entry((x * 1e6).round() as i64).or_insert((x, Vec::new())).1.push(y);
        }
    }
    let mut series = Series::line(name, Vec::new());
    for (x, ys) in at.into_values() {
        let mean = ys.iter().sum::<f64>() / ys.len() as f64;
        series.points.push((x, mean));
        if runs.len() > 1 {
            let (lo, hi) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &y| (l.min(y), h.max(y)));
            series.band.push((x, lo, hi));
        }
    }
    series
}

/// A clustering's EM against training step, per variant (mean over seeds, band: lowest to highest):
/// the largest mixing weight π_k, the share of images that changed cluster at each E-step and, where
/// the data has labels, the assignment's NMI. As (file stem, caption, figure); empty when no run
/// clusters.
pub fn em_curves(records: &[RunRecord], order: &[String]) -> Result<Vec<(&'static str, &'static str, Figure)>> {
    let has = |curve: &str| records.iter().any(|r| r.curves.iter().any(|c| c.0 == curve));
    let charts = [
        (
            "em_pi",
            "em_pi_max",
            "Largest cluster weight over EM",
            "largest mixing weight max_k π_k over EM (1/Q: balanced; 1: collapsed)",
            "max π_k",
        ),
        (
            "em_changed",
            "em_changed",
            "Images that changed cluster at each E-step",
            "share of images whose cluster changed at each E-step",
            "changed",
        ),
        (
            "em_nmi",
            "em_nmi",
            "NMI of the assignment against the labels over EM",
            "NMI of the most responsible cluster against the labels (step 0: the start)",
            "NMI",
        ),
        (
            "em_estimate_nmi",
            "em_estimate_nmi",
            "NMI of each E-step's own estimate against the labels",
            "NMI of the E-step's own estimate (before damping) against the labels",
            "NMI",
        ),
        (
            "em_estimate_keeps",
            "em_estimate_keeps",
            "Images each E-step's estimate keeps in their cluster",
            "share of images whose E-step estimate keeps the cluster they were trained in",
            "kept",
        ),
        (
            "em_pi_estimate",
            "em_pi_estimate_max",
            "Largest cluster of each E-step's own estimate",
            "largest share the E-step's own estimate puts in one cluster (1/Q: balanced)",
            "max π̂_k",
        ),
    ];
    let mut out = Vec::new();
    for (stem, curve, caption, title, y) in charts {
        if !has(curve) {
            continue;
        }
        let series: Vec<Series> = order
            .iter()
            .map(|v| {
                let runs = done(records, v)
                    .map(|r| r.curves.iter().filter(|c| c.0 == curve).map(|c| (c.1 as f64, c.2)).collect::<Vec<_>>())
                    .collect();
                mean_with_range(v, runs)
            })
            .collect();
        let axes = Axes::new(title, "training step (E-step after it; 0: the initialisation)", y);
        out.push((stem, caption, line_chart(&axes, &series)?));
    }
    Ok(out)
}

/// The training loss against step, mean over seeds, band from the lowest to the highest seed.
pub fn loss_curves(records: &[RunRecord], order: &[String], log_y: bool) -> Result<Figure> {
    let series: Vec<Series> = order
        .iter()
        .map(|v| {
            let runs = done(records, v)
                .map(|r| r.curves.iter().filter(|c| c.0 == "train_loss").map(|c| (c.1 as f64, c.2)).collect::<Vec<_>>())
                .collect();
            mean_with_range(v, runs)
        })
        .collect();
    let title = "training loss (mean over seeds; band: lowest to highest seed)";
    line_chart(&Axes { log_y, ..Axes::new(title, "step", "loss over the logging window") }, &series)
}

/// Panels for the final metrics that have values: each variant's mean, 95% interval and single runs.
pub fn metric_intervals(
    records: &[RunRecord],
    summary: &[(String, String, Summary)],
    order: &[String],
) -> Result<Option<Figure>> {
    // Every registered metric with a panel, in registry order.
    let all = crate::eval::metric::all();
    let shown: Vec<(&str, &str)> = all.iter().filter_map(|m| Some((m.name, m.panel?))).collect();
    let mut panels = Vec::new();
    for (metric, title) in shown {
        let intervals: Vec<Interval> = order
            .iter()
            .filter_map(|v| {
                let s = summary.iter().find(|(sv, m, _)| sv == v && m == metric)?;
                let values = done(records, v).filter_map(|r| r.metrics.get(metric).copied()).collect();
                Some(Interval { label: v.clone(), mean: s.2.mean, low: s.2.ci_low, high: s.2.ci_high, values })
            })
            .collect();
        if !intervals.is_empty() {
            // What held-out real images score under the same spec (its floor or ceiling), when every
            // run shares it.
            let reference = all.iter().find(|r| r.reference_of == Some(metric));
            let floors: Vec<f64> = records.iter().filter_map(|r| r.metrics.get(reference?.name).copied()).collect();
            let floor = floors.first().copied().filter(|f| floors.iter().all(|g| g == f));
            let word = match reference {
                Some(r) if r.role == crate::eval::metric::Role::Baseline => r.title,
                _ if crate::eval::metric::lower_is_better(metric) => "floor",
                _ => "real images",
            };
            let title = match floor {
                Some(f) => format!("{title}; dashed: {word} {f:.2}"),
                None => title.to_string(),
            };
            panels.push(Panel { title, y_label: metric.to_string(), intervals, floor });
        }
    }
    if panels.is_empty() {
        return Ok(None);
    }
    let title = "final metrics: mean (dot), 95% Student-t interval (bar), single seeds (circles)";
    interval_chart(title, &panels, (520, 520)).map(Some)
}

/// The training loss and the bound's term at each evaluated t against log-SNR(t), mean over seeds, so
/// that variants with different schedules or T line up; None when no run has the per-t evaluation.
pub fn per_t_charts(records: &[RunRecord], order: &[String], log_y: bool) -> Result<Option<(Figure, Figure)>> {
    if records.iter().all(|r| r.per_t.is_empty()) {
        return Ok(None);
    }
    let series = |value: fn(&crate::eval::bpd::PerT) -> f64| -> Vec<Series> {
        order
            .iter()
            .map(|v| {
                let runs = done(records, v).map(|r| r.per_t.iter().map(|p| (p.log_snr, value(p))).collect()).collect();
                mean_with_range(v, runs)
            })
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    let x = "log SNR(t) = ln(ᾱ_t / (1 − ᾱ_t))   (t = 1 at the right)";
    let loss = line_chart(
        &Axes {
            log_y,
            legend_upper_left: true,
            ..Axes::new("training loss at each t (same test images and noise)", x, "loss")
        },
        &series(|p| p.loss),
    )?;
    let bits = line_chart(
        &Axes {
            log_y: true,
            legend_upper_left: true,
            ..Axes::new("variational bound term L_(t−1) at each t", x, "bits/dim")
        },
        &series(|p| p.bits),
    )?;
    Ok(Some((loss, bits)))
}

/// ᾱ_t against t/T for every distinct (schedule, T) the experiment's DDPM runs use (EDM and flow
/// matching have their own noise levels; None when no run is DDPM's).
pub fn schedules(exp: &Experiment) -> Result<Option<Figure>> {
    let mut seen: Vec<(ScheduleConfig, usize)> = Vec::new();
    for r in exp.runs.iter().filter(|r| r.config.diffusion.formulation.is_ddpm()) {
        let key = (r.config.diffusion.schedule.clone(), r.config.diffusion.timesteps);
        if !seen.contains(&key) {
            seen.push(key);
        }
    }
    if seen.is_empty() {
        return Ok(None);
    }
    crate::eval::schedules::plot(&seen).map(Some)
}

/// Each variant's `samples.png` at one seed side by side: the smallest seed every variant has a
/// finished run for (their samples then start from the same noise), else each variant's first.
pub fn sample_grids(records: &[RunRecord], order: &[String]) -> Result<Option<Vec<u8>>> {
    let seeds: Vec<u64> = {
        let mut s: Vec<u64> = records.iter().filter(|r| r.state == "done").map(|r| r.seed).collect();
        s.sort();
        s.dedup();
        s
    };
    let common = seeds.into_iter().find(|&seed| order.iter().all(|v| done(records, v).any(|r| r.seed == seed)));
    let mut images = Vec::new();
    for v in order {
        let run = match common {
            Some(seed) => done(records, v).find(|r| r.seed == seed),
            None => done(records, v).next(),
        };
        let Some(run) = run else { continue };
        let path = &run.samples;
        if path.exists() {
            images.push((format!("{v} (seed {})", run.seed), crate::eval::images::read_png(path)?));
        }
    }
    if images.is_empty() {
        return Ok(None);
    }
    labelled_row(&images).map(Some)
}

/// A varied key's short name in a chart's legend: its last part, or the table's for a `name`
/// (`diffusion.formulation.name` → `formulation`).
fn short(key: &str) -> &str {
    let mut parts = key.rsplit('.');
    match (parts.next(), parts.next()) {
        (Some("name"), Some(table)) => table,
        (Some(last), _) => last,
        _ => key,
    }
}

/// The legend of a run's line: its varied keys but those of `skip` (prefixes), as `key=value`. A table
/// chosen by `name` (the formulation, the schedule) is named by it alone: its other keys differ because
/// the tables differ.
fn line_name(r: &RunRecord, first: Option<String>, skip: &[&str]) -> String {
    let named = |k: &str| {
        k.rsplit_once('.').is_some_and(|(table, last)| {
            last != "name" && r.varied.iter().any(|(other, _)| *other == format!("{table}.name"))
        })
    };
    let others = r
        .varied
        .iter()
        .filter(|(k, _)| !skip.iter().any(|p| k.starts_with(p)) && !named(k))
        .map(|(k, v)| format!("{}={}", short(k), v.text()));
    first.into_iter().chain(others).collect::<Vec<_>>().join(", ")
}

/// When the experiment varies the evaluation's sampler: FID against the sampler's network evaluations
/// per image, and against its wall seconds per image, one line per sampler (DDPM, DDIM at each η, and
/// any other varied key but the samples' sampler), each point the mean over seeds (band: lowest to
/// highest seed). Evaluations of a post-hoc EMA width are `posthoc_charts`' points, not these.
pub fn sampler_charts(exp: &Experiment, records: &[RunRecord]) -> Result<Option<(Figure, Figure)>> {
    if !exp.runs.iter().any(|r| r.config.eval.sampler != exp.runs[0].config.eval.sampler) {
        return Ok(None);
    }
    // (line, NFE) -> (FID, seconds per image) of each finished run.
    let mut at: BTreeMap<(String, usize), Vec<(f64, f64)>> = BTreeMap::new();
    let mut lines: Vec<String> = Vec::new();
    for (spec, r) in exp.runs.iter().zip(records) {
        let (Some(nfe), Some(fid), "done", None) = (
            r.model_evaluations,
            r.metrics.get(crate::eval::metric::fid::FID.name),
            r.state.as_str(),
            spec.config.eval.ema_sigma_rel,
        ) else {
            continue;
        };
        let sampler = spec.config.eval.sampler.label(None);
        let line = line_name(r, Some(sampler), &["eval.sampler", "sample.sampler"]);
        if !lines.contains(&line) {
            lines.push(line.clone());
        }
        let per_image = r.metrics.get("sample_seconds").map_or(f64::NAN, |s| s / spec.config.eval.num_samples as f64);
        at.entry((line, nfe)).or_default().push((*fid, per_image));
    }
    if lines.is_empty() {
        return Ok(None);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut by_steps = Vec::new();
    let mut by_time = Vec::new();
    for line in &lines {
        let (mut steps, mut time) = (Series::line(line.as_str(), vec![]), Series::line(line.as_str(), vec![]));
        for ((_, nfe), runs) in at.range((line.clone(), 0)..=(line.clone(), usize::MAX)) {
            let fids: Vec<f64> = runs.iter().map(|r| r.0).collect();
            let secs: Vec<f64> = runs.iter().map(|r| r.1).collect();
            let (fid, sec) = (mean(&fids), mean(&secs));
            steps.points.push((*nfe as f64, fid));
            time.points.push((sec, fid));
            if runs.len() > 1 {
                let (lo, hi) = fids.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &y| (l.min(y), h.max(y)));
                steps.band.push((*nfe as f64, lo, hi));
            }
        }
        time.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        by_steps.push(steps);
        by_time.push(time);
    }
    let steps = Axes { log_x: true, ..Axes::new("FID against sampling steps", "network evaluations per image", "FID") };
    let time =
        Axes { log_x: true, ..Axes::new("FID against sampling time", "sampler seconds per image (wall clock)", "FID") };
    Ok(Some((line_chart(&steps, &by_steps)?, line_chart(&time, &by_time)?)))
}

/// When the experiment evaluates post-hoc EMA widths (`eval.ema_sigma_rel`): each of FID and the
/// classifier's FID against σ_rel, one line per other varied key (the formulation, …), each point the
/// mean over seeds. The ordinary EMA's value is in the tables, not on this axis.
pub fn posthoc_charts(exp: &Experiment, records: &[RunRecord]) -> Result<Vec<(&'static str, &'static str, Figure)>> {
    let mut out = Vec::new();
    for (metric, label, stem, title) in [
        (crate::eval::metric::fid::FID.name, "FID", "fid_vs_ema_width", "FID against the post-hoc EMA width"),
        ("cfid", "classifier FID", "cfid_vs_ema_width", "classifier FID against the post-hoc EMA width"),
    ] {
        let mut at: BTreeMap<String, BTreeMap<i64, (f64, Vec<f64>)>> = BTreeMap::new();
        for (spec, r) in exp.runs.iter().zip(records) {
            let (Some(width), Some(y), "done") =
                (spec.config.eval.ema_sigma_rel, r.metrics.get(metric), r.state.as_str())
            else {
                continue;
            };
            let line = line_name(r, None, &["eval.ema_sigma_rel", "eval.sampler", "sample.sampler"]);
            at.entry(line).or_default().entry((width * 1e6).round() as i64).or_insert((width, vec![])).1.push(*y);
        }
        if at.is_empty() {
            continue;
        }
        let series: Vec<Series> = at
            .into_iter()
            .map(|(line, points)| {
                let pts = points.into_values().map(|(x, ys)| (x, ys.iter().sum::<f64>() / ys.len() as f64)).collect();
                Series::line(line.as_str(), pts)
            })
            .collect();
        let axes = Axes::new(title, "σ_rel (post-hoc EMA width, share of training)", label);
        out.push((stem, title, line_chart(&axes, &series)?));
    }
    Ok(out)
}
