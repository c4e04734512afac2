//! `ddpm schedules`: the schedules side by side, as a table of ᾱ_t, SNR and log-SNR at chosen t and
//! as a plot of ᾱ_t against t/T.
use crate::config::ScheduleConfig;
use crate::diffusion::schedule::{alpha_bar, betas};
use crate::plot::{line_chart, Axes, Figure, Series};
use anyhow::Result;
use std::fmt::Write;

/// One row per (schedule, t) at the paper's timesteps `ts` (1..=T).
pub fn table(schedules: &[ScheduleConfig], timesteps: usize, ts: &[usize]) -> String {
    let mut out = format!(
        "T = {timesteps}\n{:10} {:>6} {:>12} {:>12} {:>12} {:>9}\n",
        "schedule", "t", "beta_t", "alpha_bar_t", "SNR", "log SNR"
    );
    for schedule in schedules {
        let b = betas(schedule, timesteps);
        let ab = alpha_bar(&b);
        for &t in ts {
            let (beta, a) = (b[t - 1], ab[t - 1]);
            let snr = a / (1.0 - a);
            writeln!(
                out,
                "{:10} {:>6} {:>12.5e} {:>12.5e} {:>12.5e} {:>9.4}",
                schedule.name(),
                t,
                beta,
                a,
                snr,
                snr.ln()
            )
            .expect("writing to a String");
        }
    }
    out
}

/// ᾱ_t against t/T for each (schedule, T); T is named in the legend when they differ.
pub fn plot(schedules: &[(ScheduleConfig, usize)]) -> Result<Figure> {
    let several_t = schedules.iter().any(|(_, t)| *t != schedules[0].1);
    let series: Vec<Series> = schedules
        .iter()
        .map(|(s, timesteps)| {
            let ab = alpha_bar(&betas(s, *timesteps));
            let points = std::iter::once((0.0, 1.0))
                .chain(ab.iter().enumerate().map(|(i, a)| ((i + 1) as f64 / *timesteps as f64, *a)))
                .collect();
            let name = if several_t { format!("{}, T = {timesteps}", s.name()) } else { s.name().to_string() };
            Series::line(name, points)
        })
        .collect();
    let title = match schedules.first() {
        Some((_, t)) if !several_t => format!("ᾱ_t of the schedules, T = {t}"),
        _ => "ᾱ_t of the schedules".to_string(),
    };
    line_chart(&Axes { size: (800, 520), ..Axes::new(&title, "t / T", "ᾱ_t") }, &series)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_each_schedule_at_each_t() {
        let all: Vec<ScheduleConfig> =
            ScheduleConfig::NAMES.iter().map(|n| ScheduleConfig::default_named(n).unwrap()).collect();
        let text = table(&all, 1000, &[1, 500, 1000]);
        assert_eq!(text.lines().count(), 2 + ScheduleConfig::NAMES.len() * 3);
        // Linear at t = 1: β = ᾱ complement = 1e-4, SNR = 0.9999/1e-4 = 9999, log 9.2102.
        let first = text.lines().nth(2).unwrap();
        assert!(first.contains("1.00000e-4") && first.contains("9.99900e3") && first.contains("9.2102"), "{first}");
    }
}
