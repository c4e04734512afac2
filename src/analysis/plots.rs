//! The analysis charts: loss curves per variant, final metrics with their intervals, loss and bound
//! terms against log-SNR, the schedules' ᾱ_t, and the variants' sample grids side by side.
use super::collect::RunRecord;
use super::stats::Summary;
use crate::config::{Experiment, ScheduleConfig};
use crate::plot::{interval_chart, labelled_row, line_chart, Axes, Figure, Interval, Panel, Series};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

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
    let shown = [
        ("fid", "FID (lower is better)"),
        ("kid", "KID (lower is better)"),
        ("bpd", "bits/dim (lower is better)"),
        ("final_loss", "final training loss"),
    ];
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
            panels.push(Panel { title: title.to_string(), y_label: metric.to_string(), intervals });
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

/// ᾱ_t against t/T for every distinct (schedule, T) the experiment uses.
pub fn schedules(exp: &Experiment) -> Result<Figure> {
    let mut seen: Vec<(ScheduleConfig, usize)> = Vec::new();
    for r in &exp.runs {
        let key = (r.config.diffusion.schedule.clone(), r.config.diffusion.timesteps);
        if !seen.contains(&key) {
            seen.push(key);
        }
    }
    crate::eval::schedules::plot(&seen)
}

/// Each variant's `samples.png` at one seed side by side: the smallest seed every variant has a
/// finished run for (their samples then start from the same noise), else each variant's first.
pub fn sample_grids(records: &[RunRecord], order: &[String], results_root: &Path) -> Result<Option<Vec<u8>>> {
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
        let path = results_root.join("runs").join(&run.hash).join("samples.png");
        if path.exists() {
            images.push((format!("{v} (seed {})", run.seed), crate::eval::images::read_png(&path)?));
        }
    }
    if images.is_empty() {
        return Ok(None);
    }
    labelled_row(&images).map(Some)
}
