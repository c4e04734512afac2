//! Experiment files: a base run configuration, axes of variation and named profiles, layered with
//! figment as defaults < file < profile < grid point < environment (`DDPM_TRAIN__LR=1e-4`) <
//! `--set train.lr=1e-4`.
//!
//! ```toml
//! [experiment]
//! name = "cosine_vs_linear"          # optional: the file's stem
//! description = "..."
//!
//! [data]                             # any run key (see `schema.rs`) is the base of every run
//! name = "mnist"
//!
//! [grid]                             # cartesian product; a value replaces the whole key
//! "diffusion.schedule" = [{ name = "linear" }, { name = "cosine" }]
//!
//! [profiles.full]                    # `--profile full`: run keys and grid axes over the base
//! train.steps = 23400
//! ```
use super::schema::RunConfig;
use super::spec::RunSpec;
use anyhow::{anyhow, bail, Context, Result};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Top-level keys of an experiment file that are not run keys.
const EXPERIMENT_KEYS: [&str; 3] = ["experiment", "grid", "profiles"];
/// Top-level run keys; environment variables `DDPM_<KEY>__...` are read only for these.
const RUN_SECTIONS: [&str; 6] = ["seed", "data", "model", "diffusion", "train", "sample"];

#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    pub profile: Option<String>,
    /// `key=value` overrides, value in TOML syntax (a bare word is a string).
    pub sets: Vec<String>,
    /// Read `DDPM_*` environment variables as a layer.
    pub use_env: bool,
}

#[derive(Debug)]
pub struct Experiment {
    pub name: String,
    pub description: Option<String>,
    pub path: PathBuf,
    pub profile: Option<String>,
    pub runs: Vec<RunSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentMeta {
    name: Option<String>,
    description: Option<String>,
}

/// One layer of configuration with a name that errors can point to.
struct Layer {
    name: String,
    file: Option<PathBuf>,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let meta = Metadata::named(self.name.clone());
        match &self.file {
            Some(path) => meta.source(figment::Source::File(path.clone())),
            None => meta,
        }
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// An axis of the grid: a dotted run key and the values it takes.
struct Axis {
    key: String,
    values: Vec<Value>,
}

pub fn load_experiment(path: &Path, opts: &LoadOptions) -> Result<Experiment> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read experiment file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("{}: invalid TOML", path.display()))?;
    let shown = path.display().to_string();

    let mut base = Dict::new();
    let mut meta = ExperimentMeta::default();
    let mut grid = toml::Table::new();
    let mut profiles = toml::Table::new();
    for (key, value) in table {
        match key.as_str() {
            "experiment" => {
                meta = value
                    .try_into()
                    .with_context(|| format!("{shown}: in [experiment] (allowed keys: name, description)"))?
            }
            "grid" => grid = into_table(value, &shown, "grid")?,
            "profiles" => profiles = into_table(value, &shown, "profiles")?,
            _ => {
                base.insert(key, to_figment(value));
            }
        }
    }

    let mut profile_dict = Dict::new();
    if let Some(name) = &opts.profile {
        let available: Vec<&String> = profiles.keys().collect();
        let Some(profile) = profiles.get(name) else {
            bail!("{shown}: no profile `{name}` (profiles in this file: {})", list_or_none(&available));
        };
        for (key, value) in into_table(profile.clone(), &shown, &format!("profiles.{name}"))? {
            if key == "grid" {
                grid.extend(into_table(value, &shown, &format!("profiles.{name}.grid"))?);
            } else if EXPERIMENT_KEYS.contains(&key.as_str()) {
                bail!(
                    "{shown}: key `profiles.{name}.{key}` is not allowed in a profile (allowed: run keys and `grid`)"
                );
            } else {
                profile_dict.insert(key, to_figment(value));
            }
        }
    }

    let name = match meta.name {
        Some(n) => n,
        None => path.file_stem().and_then(|s| s.to_str()).unwrap_or("experiment").to_string(),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        bail!("{shown}: key `experiment.name` = {name:?}: allowed are letters, digits, '_' and '-'");
    }

    let axes = parse_axes(grid, &shown)?;
    let sets = parse_sets(&opts.sets)?;
    let profile_label = opts.profile.as_ref().map(|p| format!("{shown} [profiles.{p}]"));

    let mut runs: Vec<RunSpec> = Vec::new();
    let mut problems = Vec::new();
    for point in cartesian(&axes) {
        let label = label_of(&axes, &point).unwrap_or_else(|| name.clone());
        let replaced: Vec<&str> = axes.iter().map(|a| a.key.as_str()).collect();
        let mut figment = Figment::new().merge(Layer {
            name: shown.clone(),
            file: Some(path.into()),
            dict: without(&base, &replaced),
        });
        if let Some(pl) = &profile_label {
            figment = figment.merge(Layer {
                name: pl.clone(),
                file: Some(path.into()),
                dict: without(&profile_dict, &replaced),
            });
        }
        let mut grid_dict = Dict::new();
        for (axis, &i) in axes.iter().zip(&point) {
            set_path(&mut grid_dict, &axis.key, axis.values[i].clone());
        }
        figment = figment.merge(Layer { name: format!("{shown} [grid]"), file: Some(path.into()), dict: grid_dict });
        if opts.use_env {
            figment = figment.merge(
                figment::providers::Env::prefixed("DDPM_")
                    // Keys are not lowercased yet when the filter sees them.
                    .filter(|k| {
                        RUN_SECTIONS.contains(&k.as_str().to_ascii_lowercase().split("__").next().unwrap_or_default())
                    })
                    .split("__"),
            );
        }
        figment = figment.merge(Layer { name: "--set".into(), file: None, dict: sets.clone() });
        let config: RunConfig = match figment.extract() {
            Ok(c) => c,
            Err(e) => {
                for err in e {
                    problems.push(format!("run `{label}`: {}", describe(&err)));
                }
                continue;
            }
        };
        for invalid in config.validate() {
            problems.push(format!("run `{label}`: {invalid}"));
        }
        let spec = RunSpec::new(&name, label, config);
        if let Some(same) = runs.iter().find(|r| r.hash == spec.hash) {
            problems.push(format!(
                "runs `{}` and `{}` resolve to the same configuration (hash {}): an override hides a varied key",
                same.label, spec.label, spec.hash
            ));
        }
        runs.push(spec);
    }
    if !problems.is_empty() {
        bail!("{shown}: invalid experiment, nothing was run:\n  - {}", problems.join("\n  - "));
    }
    Ok(Experiment {
        name,
        description: meta.description,
        path: path.to_path_buf(),
        profile: opts.profile.clone(),
        runs,
    })
}

/// `<where>: key `train.stepz`: <what>`, naming the layer the bad value came from (figment's own
/// message prefixes the key with its internal profile name).
fn describe(err: &figment::Error) -> String {
    let source = err.metadata.as_ref().map(|m| m.name.to_string()).unwrap_or_else(|| "defaults".into());
    format!("{source}: key `{}`: {}", err.path.join("."), err.kind)
}

fn into_table(value: toml::Value, file: &str, key: &str) -> Result<toml::Table> {
    match value {
        toml::Value::Table(t) => Ok(t),
        other => bail!("{file}: key `{key}` must be a table, found {}", other.type_str()),
    }
}

fn to_figment(value: toml::Value) -> Value {
    value.try_into().expect("every TOML value is a figment value")
}

fn list_or_none(items: &[&String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
    }
}

fn parse_axes(grid: toml::Table, file: &str) -> Result<Vec<Axis>> {
    grid.into_iter()
        .map(|(key, value)| {
            let top = key.split('.').next().unwrap_or_default();
            if !RUN_SECTIONS.contains(&top) {
                bail!(
                    "{file}: grid key `{key}` is not a run key (run keys start with one of: {})",
                    RUN_SECTIONS.join(", ")
                );
            }
            match value {
                toml::Value::Array(values) if !values.is_empty() => {
                    Ok(Axis { key, values: values.into_iter().map(to_figment).collect() })
                }
                _ => bail!("{file}: grid key `{key}` must be a non-empty list of values"),
            }
        })
        .collect()
}

fn parse_sets(sets: &[String]) -> Result<Dict> {
    let mut dict = Dict::new();
    for set in sets {
        let (key, raw) =
            set.split_once('=').ok_or_else(|| anyhow!("--set {set:?}: expected key=value, e.g. train.lr=1e-4"))?;
        let key = key.trim();
        if !RUN_SECTIONS.contains(&key.split('.').next().unwrap_or_default()) {
            bail!("--set {set:?}: `{key}` is not a run key (run keys start with one of: {})", RUN_SECTIONS.join(", "));
        }
        let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
            Ok(mut t) => to_figment(t.remove("v").expect("parsed key")),
            Err(_) => Value::from(raw.to_string()),
        };
        set_path(&mut dict, key, value);
    }
    Ok(dict)
}

/// Every combination of axis value indices, the last axis varying fastest; one empty point when
/// there are no axes.
fn cartesian(axes: &[Axis]) -> Vec<Vec<usize>> {
    axes.iter().fold(vec![vec![]], |acc, axis| {
        acc.into_iter()
            .flat_map(|prefix| (0..axis.values.len()).map(move |i| [prefix.clone(), vec![i]].concat()))
            .collect()
    })
}

/// `schedule=cosine,seed=1`: the short name of each varied key (its last part, or the one before
/// when the last is `name`) and a short form of the value.
fn label_of(axes: &[Axis], point: &[usize]) -> Option<String> {
    let parts: Vec<String> = axes
        .iter()
        .zip(point)
        .filter(|(axis, _)| axis.values.len() > 1)
        .map(|(axis, &i)| {
            let mut segs: Vec<&str> = axis.key.split('.').collect();
            if segs.len() > 1 && segs.last() == Some(&"name") {
                segs.pop();
            }
            format!("{}={}", segs.last().expect("non-empty key"), short_value(&axis.values[i]))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

fn short_value(v: &Value) -> String {
    match v {
        Value::String(_, s) => s.clone(),
        Value::Dict(_, d) => match d.get("name") {
            Some(Value::String(_, s)) => s.clone(),
            _ => serde_json::to_string(v).unwrap_or_default(),
        },
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

fn set_path(dict: &mut Dict, dotted: &str, value: Value) {
    let mut parts = dotted.split('.').peekable();
    let mut cur = dict;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(part.to_string(), value);
            return;
        }
        let entry = cur.entry(part.to_string()).or_insert_with(|| Value::from(Dict::new()));
        if !matches!(entry, Value::Dict(..)) {
            *entry = Value::from(Dict::new());
        }
        let Value::Dict(_, next) = entry else { unreachable!() };
        cur = next;
    }
}

/// A copy of `dict` without the given dotted keys, so that a grid value replaces the key whole
/// instead of being merged into the base's table.
fn without(dict: &Dict, keys: &[&str]) -> Dict {
    fn remove(dict: &mut Dict, parts: &[&str]) {
        match parts {
            [] => {}
            [last] => {
                dict.remove(*last);
            }
            [first, rest @ ..] => {
                if let Some(Value::Dict(_, next)) = dict.get_mut(*first) {
                    remove(next, rest);
                }
            }
        }
    }
    let mut out = dict.clone();
    for key in keys {
        remove(&mut out, &key.split('.').collect::<Vec<_>>());
    }
    out
}
