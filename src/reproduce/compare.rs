//! Comparing a reproduced `runs` table with the committed one, run by run and metric by metric.
use crate::analysis::collect::{is_timing, metric_names};
use anyhow::{Context as _, Result};
use polars::prelude::*;
use std::fmt::Write as _;

/// The metrics that must agree: everything measured on the model, not the wall clock.
pub fn compared_metrics() -> Vec<&'static str> {
    metric_names().into_iter().filter(|m| !is_timing(m)).collect()
}

/// The checks of a run's identity, equal on any hardware: its hash and state, its presence, the seeds.
pub const IDENTITY: [&str; 4] = ["hash", "state", "run", "seeds"];

/// How a row was compared: bit for bit (or within a relative tolerance the user gave), or
/// statistically against the record's seed-to-seed spread (`statistical`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Bitwise,
    Relative(f64),
    Statistical,
}

impl Kind {
    pub fn of_tolerance(tolerance: f64) -> Kind {
        if tolerance == 0.0 {
            Kind::Bitwise
        } else {
            Kind::Relative(tolerance)
        }
    }

    pub fn label(self) -> String {
        match self {
            Kind::Bitwise => "bitwise".into(),
            Kind::Relative(t) => format!("within {t:e}"),
            Kind::Statistical => "statistical".into(),
        }
    }
}

/// One comparison: a run's hash or state, one of its metrics, or (statistically) a variant's metric
/// or a verdict.
#[derive(Debug, Clone)]
pub struct Check {
    pub run: String,
    pub what: String,
    pub committed: String,
    pub reproduced: String,
    /// reproduced − committed, for numbers.
    pub difference: Option<f64>,
    pub pass: bool,
    pub kind: Kind,
    /// What `difference` had to stay within (statistical rows), or why the row could not be tested.
    pub tolerance: Option<String>,
    /// False: the row could not be tested (no spread to judge by); shown as `n/a`, neither passed nor failed.
    pub tested: bool,
}

impl Check {
    /// A row compared as `kind` says, with nothing untested.
    pub fn new(
        run: &str,
        what: &str,
        committed: String,
        reproduced: String,
        difference: Option<f64>,
        pass: bool,
        kind: Kind,
    ) -> Check {
        Check {
            run: run.into(),
            what: what.into(),
            committed,
            reproduced,
            difference,
            pass,
            kind,
            tolerance: None,
            tested: true,
        }
    }

    pub fn result(&self) -> &'static str {
        match (self.tested, self.pass) {
            (false, _) => "n/a",
            (true, true) => "PASS",
            (true, false) => "FAIL",
        }
    }
}

pub fn read_parquet(bytes: Vec<u8>, what: &str) -> Result<DataFrame> {
    anyhow::Context::with_context(ParquetReader::new(std::io::Cursor::new(bytes)).finish(), || {
        format!("cannot read {what} as Parquet")
    })
}

pub fn texts(df: &DataFrame, name: &str) -> Option<Vec<Option<String>>> {
    let c = df.column(name).ok()?.str().ok()?.clone();
    Some((0..c.len()).map(|i| c.get(i).map(String::from)).collect())
}

pub fn numbers(df: &DataFrame, name: &str) -> Option<Vec<Option<f64>>> {
    let c = df.column(name).ok()?.cast(&DataType::Float64).ok()?;
    let c = c.f64().ok()?;
    Some((0..c.len()).map(|i| c.get(i)).collect())
}

/// Whether two values agree: exactly when `tolerance` is 0 (NaN agrees with NaN), else within
/// `tolerance` relative to the committed value.
pub fn agree(committed: f64, reproduced: f64, tolerance: f64) -> bool {
    if committed.is_nan() || reproduced.is_nan() {
        return committed.is_nan() && reproduced.is_nan();
    }
    if tolerance == 0.0 {
        return committed.to_bits() == reproduced.to_bits() || committed == reproduced;
    }
    (reproduced - committed).abs() <= tolerance * committed.abs()
}

pub fn shown(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x}"))
}

/// Every committed run's hash, state and compared metrics against the reproduced table's run of the
/// same label; the metrics only when `metrics` (a statistical comparison judges them per variant).
pub fn compare(committed: &DataFrame, reproduced: &DataFrame, tolerance: f64) -> Result<Vec<Check>> {
    compare_runs(committed, reproduced, Some(tolerance))
}

/// [`compare`] with the metrics left out when `tolerance` is None: the runs' identity (hash, state,
/// the seeds), which must agree bit for bit on any hardware.
pub fn compare_runs(committed: &DataFrame, reproduced: &DataFrame, tolerance: Option<f64>) -> Result<Vec<Check>> {
    let labels = texts(committed, "label").context("the committed runs table has no `label` column")?;
    let new_labels = texts(reproduced, "label").context("the reproduced runs table has no `label` column")?;
    let kind = Kind::of_tolerance(tolerance.unwrap_or(0.0));
    let exact = |run: &str, what: &str, a: String, b: String| {
        let pass = a == b;
        Check::new(run, what, a, b, None, pass, Kind::Bitwise)
    };
    let mut checks = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        let run = label.clone().unwrap_or_default();
        let Some(j) = new_labels.iter().position(|l| l == label) else {
            checks.push(exact(&run, "run", "present".into(), "missing".into()));
            continue;
        };
        for key in ["hash", "state"] {
            let a = texts(committed, key).and_then(|c| c[i].clone()).unwrap_or_default();
            let b = texts(reproduced, key).and_then(|c| c[j].clone()).unwrap_or_default();
            checks.push(exact(&run, key, a, b));
        }
        let Some(tolerance) = tolerance else { continue };
        for metric in compared_metrics() {
            let a = numbers(committed, metric).and_then(|c| c[i]);
            let b = numbers(reproduced, metric).and_then(|c| c[j]);
            let (pass, difference) = match (a, b) {
                (None, None) => continue,
                (Some(x), Some(y)) => (agree(x, y, tolerance), Some(y - x)),
                _ => (false, None),
            };
            checks.push(Check::new(&run, metric, shown(a), shown(b), difference, pass, kind));
        }
    }
    // Runs the record does not have: a sequential experiment that stopped later, or a changed grid.
    for label in new_labels.iter().filter(|l| !labels.contains(l)) {
        checks.push(exact(&label.clone().unwrap_or_default(), "run", "absent".into(), "present".into()));
    }
    // The seeds: with sequential seeds, where the experiment stopped.
    let seeds = |df: &DataFrame| -> String {
        let mut s: Vec<i64> = numbers(df, "seed").unwrap_or_default().into_iter().flatten().map(|x| x as i64).collect();
        s.sort_unstable();
        s.dedup();
        s.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
    };
    checks.push(exact("(all runs)", "seeds", seeds(committed), seeds(reproduced)));
    Ok(checks)
}

/// The checks as an aligned table.
pub fn table(checks: &[Check]) -> String {
    let header = ["run", "metric", "committed", "reproduced", "difference", "tolerance", "comparison", "result"];
    let rows: Vec<[String; 8]> = checks
        .iter()
        .map(|c| {
            [
                c.run.clone(),
                c.what.clone(),
                c.committed.clone(),
                c.reproduced.clone(),
                c.difference.map_or("-".into(), |d| format!("{d:+e}")),
                c.tolerance.clone().unwrap_or_else(|| "-".into()),
                c.kind.label(),
                c.result().into(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:w$}")).collect();
        let _ = writeln!(out, "  {}", padded.join("  ").trim_end());
    };
    line(&header.map(String::from), &mut out);
    for r in &rows {
        line(r, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(hash: &str, fid: Option<f64>, loss: f64) -> DataFrame {
        df!(
            "label" => ["schedule=linear"],
            "hash" => [hash],
            "state" => ["done"],
            "fid" => [fid],
            "final_loss" => [loss],
            "wall_seconds" => [3.0],
        )
        .unwrap()
    }

    #[test]
    fn exact_and_tolerant_comparisons() {
        assert!(agree(0.1 + 0.2, 0.1 + 0.2, 0.0));
        assert!(!agree(0.3, 0.1 + 0.2, 0.0), "5.5e-17 apart is a difference on CPU");
        assert!(agree(100.0, 100.05, 1e-3) && !agree(100.0, 100.2, 1e-3));
        assert!(agree(f64::NAN, f64::NAN, 0.0) && !agree(f64::NAN, 1.0, 1.0));

        let same = compare(&runs("ab", Some(10.0), 0.5), &runs("ab", Some(10.0), 0.5), 0.0).unwrap();
        // hash, state, fid, final_loss; wall time is not compared, absent metrics are skipped; the
        // seeds (no column here: both empty).
        assert_eq!(
            same.iter().map(|c| c.what.as_str()).collect::<Vec<_>>(),
            ["hash", "state", "final_loss", "fid", "seeds"]
        );
        assert!(same.iter().all(|c| c.pass));

        let changed = compare(&runs("ab", Some(10.0), 0.5), &runs("ac", None, 0.25), 0.0).unwrap();
        let failed: Vec<&str> = changed.iter().filter(|c| !c.pass).map(|c| c.what.as_str()).collect();
        assert_eq!(failed, ["hash", "final_loss", "fid"]);
        let loss = changed.iter().find(|c| c.what == "final_loss").unwrap();
        assert_eq!(loss.difference, Some(-0.25));
        let text = table(&changed);
        assert!(text.contains("FAIL") && text.contains("-2.5e-1"), "{text}");
    }

    #[test]
    fn a_reproduction_that_stopped_at_another_seed_fails() {
        let table = |n: usize| {
            let labels: Vec<String> = (0..n).map(|s| format!("lr=0,seed={s}")).collect();
            let seeds: Vec<i64> = (0..n as i64).collect();
            df!("label" => labels, "seed" => seeds, "hash" => vec!["h"; n], "state" => vec!["done"; n]).unwrap()
        };
        let checks = compare(&table(5), &table(6), 0.0).unwrap();
        let failed: Vec<(&str, &str)> =
            checks.iter().filter(|c| !c.pass).map(|c| (c.run.as_str(), c.what.as_str())).collect();
        assert_eq!(failed, [("lr=0,seed=5", "run"), ("(all runs)", "seeds")]);
        let seeds = checks.iter().find(|c| c.what == "seeds").unwrap();
        assert_eq!((seeds.committed.as_str(), seeds.reproduced.as_str()), ("0,1,2,3,4", "0,1,2,3,4,5"));
        assert!(compare(&table(5), &table(5), 0.0).unwrap().iter().all(|c| c.pass));
    }
}
