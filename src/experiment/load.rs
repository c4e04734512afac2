//! Experiment files: a base run configuration, axes of variation and named profiles, layered with
//! figment as built-in defaults < included files < the file < `--profile P` < the point's axis values
//! < environment variables (`DDPM_TRAIN__LR=1e-4`) < `--set train.lr=1e-4`.
//!
//! ```toml
//! [experiment]
//! name = "cosine_vs_linear"      # default: the file's stem
//! include = "base/mnist.toml"    # another experiment file as the base (relative to this one)
//! seeds = [0, 1, 2]              # an axis over `seed`
//!
//! [data]                         # any run key (see `schema.rs`) is the base of every run
//! name = "mnist"
//!
//! [grid]                         # cartesian product; each key is an axis
//! "diffusion.schedule" = [{ name = "linear" }, { name = "cosine" }]
//!
//! [zip]                          # lists of equal length, varied together: one axis
//! "train.lr" = [1e-3, 2e-4]
//! "train.steps" = [500, 2000]
//!
//! [[variants]]                   # named variants: one axis
//! label = "big"
//! model = { name = "unet", dim = 64 }
//!
//! [profiles.full]                # `--profile full`: run keys, axes and seeds over the base
//! train.steps = 23400
//! experiment.seeds = [0, 1, 2]
//! ```
//!
//! A value that is a table with a `name` key (a schedule, model or sampler) replaces that table of
//! the layers below it whole, and so does an axis key: keys of another kind are not mixed in.
use super::question::{self, AnalysisTable, Question, SeedDesign};
use crate::config::{RunConfig, RunSpec};
use anyhow::{anyhow, bail, Context, Result};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level run keys; environment variables `DDPM_<KEY>__...` are read only for these.
const RUN_SECTIONS: [&str; 9] =
    ["seed", "data", "model", "diffusion", "train", "conditioning", "cluster", "sample", "eval"];

/// The profile name that means the file without a profile (`--profile default`); reserved.
pub const DEFAULT_PROFILE: &str = "default";

#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    pub profile: Option<String>,
    /// `key=value` overrides, value in TOML syntax (a bare word is a string).
    pub sets: Vec<String>,
    /// Read `DDPM_*` environment variables as a layer.
    pub use_env: bool,
    /// Why `profile` is what it is (`--profile`, or the device's default), for provenance.
    pub profile_reason: Option<String>,
}

#[derive(Debug)]
pub struct Experiment {
    pub name: String,
    pub description: Option<String>,
    pub path: PathBuf,
    pub profile: Option<String>,
    /// Why the profile was chosen (recorded in each new run's provenance).
    pub profile_reason: Option<String>,
    /// The profile `run` without `--profile` uses on a CPU with native bf16 (`[experiment]
    /// cpu_bf16_profile`), checked to be one of the file's.
    pub cpu_bf16_profile: Option<String>,
    pub runs: Vec<RunSpec>,
    /// For each run, every resolved key with its value and where it came from.
    pub sources: Vec<Vec<KeySource>>,
    /// The variant named by `[experiment] baseline` (checked to match exactly one); the analysis takes
    /// the first variant otherwise.
    pub baseline: Option<String>,
    /// Draw loss axes logarithmically (`[experiment] loss_log_scale`, default true).
    pub loss_log_scale: bool,
    /// What the analysis decides: `[analysis]` and sequential seeds (`question`).
    pub question: Question,
}

impl Experiment {
    /// Keeps the runs of seeds below `n` (and their key sources): the runs of a look of sequential
    /// seeds, whose seeds are 0 … max − 1.
    pub fn keep_seeds_below(&mut self, n: u64) {
        let keep: Vec<bool> = self.runs.iter().map(|r| r.config.seed < n).collect();
        let mut k = keep.iter();
        self.runs.retain(|_| *k.next().expect("one flag per run"));
        if self.sources.len() == keep.len() {
            let mut k = keep.iter();
            self.sources.retain(|_| *k.next().expect("one flag per run"));
        }
    }
}

#[derive(Debug, Clone)]
pub struct KeySource {
    pub key: String,
    pub value: String,
    /// `file:line [region]`, `--set …`, `environment DDPM_…` or `default`.
    pub source: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentMeta {
    name: Option<String>,
    description: Option<String>,
    include: Option<String>,
    seeds: Option<toml::Value>,
    baseline: Option<toml::Value>,
    loss_log_scale: Option<bool>,
    cpu_bf16_profile: Option<String>,
}

/// The variant the analysis compares the others against (`[experiment] baseline`): a variant's label
/// as `ddpm plan` prints it without the seed (`"schedule=linear"`), or a table of dotted run keys and
/// the values the baseline's runs have (`{ "diffusion.schedule.name" = "linear" }`).
#[derive(Debug, Clone, PartialEq)]
pub enum Baseline {
    Label(String),
    Keys(Vec<(String, toml::Value)>),
}

impl Baseline {
    fn parse(value: &toml::Value, shown: &str) -> Result<Baseline> {
        match value {
            toml::Value::String(s) => Ok(Baseline::Label(s.clone())),
            toml::Value::Table(t) if !t.is_empty() => Ok(Baseline::Keys(flatten_keys(t, ""))),
            other => bail!(
                "{shown}: key `experiment.baseline` = {other}: allowed are a variant label (\"schedule=linear\") or \
                 a table of run keys ({{ \"diffusion.schedule.name\" = \"linear\" }})"
            ),
        }
    }

    fn matches(&self, run: &RunSpec) -> bool {
        match self {
            Baseline::Label(l) => run.variant() == *l,
            Baseline::Keys(keys) => keys.iter().all(|(k, want)| {
                let have = run.value_at(k);
                match (have, want) {
                    (Some(serde_json::Value::Number(h)), toml::Value::Integer(w)) => h.as_f64() == Some(*w as f64),
                    (Some(serde_json::Value::Number(h)), toml::Value::Float(w)) => h.as_f64() == Some(*w),
                    (Some(serde_json::Value::String(h)), toml::Value::String(w)) => h == *w,
                    (Some(serde_json::Value::Bool(h)), toml::Value::Boolean(w)) => h == *w,
                    _ => false,
                }
            }),
        }
    }
}

/// `{ diffusion = { schedule = { name = "x" } } }` and `{ "diffusion.schedule.name" = "x" }` alike.
fn flatten_keys(t: &toml::Table, prefix: &str) -> Vec<(String, toml::Value)> {
    let mut out = Vec::new();
    for (k, v) in t {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(inner) => out.extend(flatten_keys(inner, &key)),
            _ => out.push((key, v.clone())),
        }
    }
    out
}

/// The variant `baseline` names among `runs`: an error naming the variants when it matches none or
/// several.
fn resolve_baseline(baseline: &Baseline, runs: &[RunSpec], shown: &str) -> Result<String> {
    let mut all: Vec<String> = Vec::new();
    let mut matched: Vec<String> = Vec::new();
    for r in runs {
        let v = r.variant();
        if baseline.matches(r) && !matched.contains(&v) {
            matched.push(v.clone());
        }
        if !all.contains(&v) {
            all.push(v);
        }
    }
    let baseline = match baseline {
        Baseline::Label(l) => format!("{l:?}"),
        Baseline::Keys(keys) => {
            let pairs: Vec<String> = keys.iter().map(|(k, v)| format!("{k:?} = {v}")).collect();
            format!("{{ {} }}", pairs.join(", "))
        }
    };
    match matched.len() {
        1 => Ok(matched.remove(0)),
        0 => bail!(
            "{shown}: key `experiment.baseline` = {baseline} matches no run; the variants are: {}",
            all.join("; ")
        ),
        _ => bail!(
            "{shown}: key `experiment.baseline` = {baseline} matches several variants ({}); name one of: {}",
            matched.join("; "),
            all.join("; ")
        ),
    }
}

/// One path segment from a document's root to a layer's table.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Where a layer's values are written, for messages with line numbers.
#[derive(Debug, Clone)]
struct Origin {
    /// The layer's name as figment reports it (unique).
    name: String,
    file: Option<(PathBuf, std::rc::Rc<String>)>,
    region: Vec<Seg>,
}

impl Origin {
    fn describe(&self, key: &[String]) -> String {
        match &self.file {
            Some((path, text)) => match line_of(text, &self.region, key) {
                Some(line) => format!("{}:{line}", path.display()),
                None => path.display().to_string(),
            },
            None => self.name.clone(),
        }
    }
}

/// One layer of configuration for figment.
struct Layer {
    origin: Origin,
    dict: Dict,
    /// Paths this layer replaces whole in the layers below.
    replaces: Vec<String>,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let meta = Metadata::named(self.origin.name.clone());
        match &self.origin.file {
            Some((path, _)) => meta.source(figment::Source::File(path.clone())),
            None => meta,
        }
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// An axis of variation: the values each of its points sets.
struct Axis {
    /// Short names for labels, e.g. `schedule`.
    label_key: Option<String>,
    points: Vec<AxisPoint>,
}

struct AxisPoint {
    /// Dotted key → value.
    values: Vec<(String, Value)>,
    /// The variant's own label, if any.
    label: Option<String>,
    origin: Origin,
}

/// The parts of one experiment file.
struct FileParts {
    path: PathBuf,
    text: std::rc::Rc<String>,
    base: toml::Table,
    meta: ExperimentMeta,
    grid: toml::Table,
    zip: toml::Table,
    variants: Option<Vec<toml::Table>>,
    profiles: toml::Table,
    analysis: Option<AnalysisTable>,
}

fn read_file(path: &Path) -> Result<FileParts> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read experiment file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| anyhow!("{}: invalid TOML: {e}", path.display()))?;
    let shown = path.display().to_string();
    let mut parts = FileParts {
        path: path.to_path_buf(),
        text: std::rc::Rc::new(text),
        base: toml::Table::new(),
        meta: ExperimentMeta::default(),
        grid: toml::Table::new(),
        zip: toml::Table::new(),
        variants: None,
        profiles: toml::Table::new(),
        analysis: None,
    };
    for (key, value) in table {
        match key.as_str() {
            "experiment" => {
                parts.meta = value.try_into().map_err(|e| {
                    anyhow!("{shown}: in [experiment]: {e} (allowed keys: name, description, include, seeds, baseline, loss_log_scale, cpu_bf16_profile)")
                })?
            }
            "grid" => parts.grid = into_table(value, &shown, "grid")?,
            "zip" => parts.zip = into_table(value, &shown, "zip")?,
            "variants" => parts.variants = Some(into_tables(value, &shown, "variants")?),
            "profiles" => parts.profiles = into_table(value, &shown, "profiles")?,
            "analysis" => parts.analysis = Some(AnalysisTable::parse(value, &shown)?),
            _ => {
                parts.base.insert(key, value);
            }
        }
    }
    Ok(parts)
}

/// The include chain, the deepest included file first.
fn read_chain(path: &Path) -> Result<Vec<FileParts>> {
    let mut chain = vec![read_file(path)?];
    while let Some(include) = chain.last().expect("non-empty").meta.include.clone() {
        let from = &chain.last().expect("non-empty").path;
        let next = from.parent().unwrap_or(Path::new(".")).join(&include);
        if chain.iter().any(|f| same_file(&f.path, &next)) {
            bail!("{}: `experiment.include` = {include:?} includes itself (cycle)", from.display());
        }
        let parts =
            read_file(&next).with_context(|| format!("{}: `experiment.include` = {include:?}", from.display()))?;
        chain.push(parts);
    }
    chain.reverse();
    Ok(chain)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

pub fn load_experiment(path: &Path, opts: &LoadOptions) -> Result<Experiment> {
    let chain = read_chain(path)?;
    let top = chain.last().expect("the file itself");
    let shown = path.display().to_string();
    let origin = |f: &FileParts, name: String, region: Vec<Seg>| Origin {
        name,
        file: Some((f.path.clone(), f.text.clone())),
        region,
    };

    // Axes and seeds: later files override earlier ones per grid/zip key; variants and seeds whole.
    let mut grid: Vec<(String, toml::Value, Origin)> = Vec::new();
    let mut zip: Vec<(String, toml::Value, Origin)> = Vec::new();
    let mut variants: Option<(Vec<toml::Table>, Origin)> = None;
    let mut seeds: Option<(Vec<toml::Value>, Origin)> = None;
    let mut sequential: Option<SeedDesign> = None;
    let mut base_layers = Vec::new();
    for f in &chain {
        let file_name = f.path.display().to_string();
        base_layers.push((f.base.clone(), origin(f, file_name.clone(), vec![])));
        for (k, v) in &f.grid {
            grid.retain(|(key, _, _)| key != k);
            grid.push((k.clone(), v.clone(), origin(f, format!("{file_name} [grid]"), vec![Seg::Key("grid".into())])));
        }
        for (k, v) in &f.zip {
            zip.retain(|(key, _, _)| key != k);
            zip.push((k.clone(), v.clone(), origin(f, format!("{file_name} [zip]"), vec![Seg::Key("zip".into())])));
        }
        if let Some(v) = &f.variants {
            variants =
                Some((v.clone(), origin(f, format!("{file_name} [variants]"), vec![Seg::Key("variants".into())])));
        }
        if let Some(s) = &f.meta.seeds {
            let (values, design) = question::seeds(s, &file_name, "experiment.seeds")?;
            sequential = design;
            seeds = Some((
                values,
                origin(f, format!("{file_name} [experiment.seeds]"), vec![Seg::Key("experiment".into())]),
            ));
        }
    }

    // `--profile default` is the file without a profile: no file may define a profile of that name.
    if let Some(f) = chain.iter().find(|f| f.profiles.contains_key(DEFAULT_PROFILE)) {
        bail!(
            "{}: [profiles.{DEFAULT_PROFILE}]: the name `{DEFAULT_PROFILE}` is reserved (`--profile {DEFAULT_PROFILE}` \
             runs the file without a profile); rename the profile",
            f.path.display()
        );
    }
    let mut available: Vec<&String> = chain.iter().flat_map(|f| f.profiles.keys()).collect();
    available.sort();
    available.dedup();
    // The nearest file that names a profile for CPUs with native bf16; it must be one of the chain's.
    let cpu_bf16_profile = chain.iter().rev().find_map(|f| f.meta.cpu_bf16_profile.clone().map(|p| (p, &f.path)));
    if let Some((p, file)) = &cpu_bf16_profile {
        if !available.contains(&p) {
            bail!(
                "{}: key `experiment.cpu_bf16_profile` = {p:?} names no profile (profiles in this file: {})",
                file.display(),
                list_or_none(&available)
            );
        }
    }
    let profile_name = opts.profile.clone().filter(|p| p != DEFAULT_PROFILE);

    // The profile: run keys, and axes or seeds that replace the file's.
    let mut profile_layer = None;
    if let Some(name) = &profile_name {
        let Some((f, profile)) = chain.iter().rev().find_map(|f| f.profiles.get(name).map(|p| (f, p))) else {
            bail!(
                "{shown}: no profile `{name}` (profiles in this file: {}; `{DEFAULT_PROFILE}`: none)",
                list_or_none(&available)
            );
        };
        let region = vec![Seg::Key("profiles".into()), Seg::Key(name.clone())];
        let file_name = format!("{} [profiles.{name}]", f.path.display());
        let mut run_keys = toml::Table::new();
        for (key, value) in into_table(profile.clone(), &shown, &format!("profiles.{name}"))? {
            let sub = |s: &str| {
                let mut r = region.clone();
                r.push(Seg::Key(s.into()));
                origin(f, format!("{file_name} {s}"), r)
            };
            match key.as_str() {
                "grid" => {
                    for (k, v) in into_table(value, &shown, &format!("profiles.{name}.grid"))? {
                        grid.retain(|(key, _, _)| *key != k);
                        grid.push((k, v, sub("grid")));
                    }
                }
                "zip" => {
                    for (k, v) in into_table(value, &shown, &format!("profiles.{name}.zip"))? {
                        zip.retain(|(key, _, _)| *key != k);
                        zip.push((k, v, sub("zip")));
                    }
                }
                "variants" => {
                    variants =
                        Some((into_tables(value, &shown, &format!("profiles.{name}.variants"))?, sub("variants")))
                }
                "experiment" => {
                    let meta: ExperimentMeta =
                        value.try_into().map_err(|e| anyhow!("{shown}: in [profiles.{name}.experiment]: {e}"))?;
                    if meta.name.is_some()
                        || meta.include.is_some()
                        || meta.description.is_some()
                        || meta.baseline.is_some()
                        || meta.loss_log_scale.is_some()
                        || meta.cpu_bf16_profile.is_some()
                    {
                        bail!(
                            "{shown}: a profile may set only `experiment.seeds`, not the name, description, include, \
                             baseline, loss_log_scale or cpu_bf16_profile"
                        );
                    }
                    if let Some(s) = meta.seeds {
                        let (values, design) =
                            question::seeds(&s, &file_name, &format!("profiles.{name}.experiment.seeds"))?;
                        sequential = design;
                        seeds = Some((values, sub("experiment")));
                    }
                }
                "profiles" => bail!("{shown}: key `profiles.{name}.profiles`: profiles do not nest"),
                _ => {
                    run_keys.insert(key, value);
                }
            }
        }
        profile_layer = Some((run_keys, origin(f, file_name, region)));
    }

    let name = match &top.meta.name {
        Some(n) => n.clone(),
        None => path.file_stem().and_then(|s| s.to_str()).unwrap_or("experiment").to_string(),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        bail!("{shown}: key `experiment.name` = {name:?}: allowed are letters, digits, '_' and '-'");
    }

    let axes = build_axes(grid, zip, variants, seeds, &shown)?;
    let mut top_layers = env_layers(opts.use_env)?;
    top_layers.extend(set_layers(&opts.sets)?);

    let mut runs: Vec<RunSpec> = Vec::new();
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    for point in cartesian(&axes) {
        let label = label_of(&axes, &point).unwrap_or_else(|| name.clone());
        let mut layers: Vec<Layer> = base_layers.iter().map(|(t, o)| Layer::from_table(t, o.clone())).collect();
        if let Some((t, o)) = &profile_layer {
            layers.push(Layer::from_table(t, o.clone()));
        }
        for (axis, &i) in axes.iter().zip(&point) {
            let p = &axis.points[i];
            let mut dict = Dict::new();
            for (k, v) in &p.values {
                set_path(&mut dict, k, v.clone());
            }
            layers.push(Layer {
                origin: p.origin.clone(),
                replaces: p.values.iter().map(|(k, _)| k.clone()).collect(),
                dict,
            });
        }
        layers.extend(top_layers.iter().map(|l| Layer {
            origin: l.origin.clone(),
            dict: l.dict.clone(),
            replaces: l.replaces.clone(),
        }));
        // Each layer loses the paths that the layers above it replace whole.
        let mut replaced: Vec<String> = Vec::new();
        for layer in layers.iter_mut().rev() {
            layer.dict = without(&layer.dict, &replaced);
            replaced.extend(layer.replaces.iter().cloned());
        }
        let origins: BTreeMap<String, Origin> =
            layers.iter().map(|l| (l.origin.name.clone(), l.origin.clone())).collect();
        let figment = layers.into_iter().fold(Figment::new(), |f, l| f.merge(l));
        let mut config: RunConfig = match figment.extract() {
            Ok(c) => c,
            Err(e) => {
                for err in e {
                    problems.push(describe_error(&err, &origins, &label));
                }
                continue;
            }
        };
        for invalid in config.validate() {
            let key: Vec<String> = invalid.key.split('.').map(String::from).collect();
            let at = figment
                .find_metadata(invalid.key)
                .and_then(|m| origins.get(m.name.as_ref()))
                .map_or_else(|| "defaults".to_string(), |o| o.describe(&key));
            problems.push(format!("{at}: run `{label}`: {invalid}"));
        }
        if let Err(e) = crate::data::resolve_path(&mut config.data) {
            problems.push(format!("run `{label}`: {e:#}"));
            continue;
        }
        // The evaluation's sampler takes at most T steps: resolved here, so that `show` and the
        // evaluation spec say what runs (`eval.sampler.steps = 5000` with T = 1000 is 1000).
        config.eval.sampler = config.eval.sampler.limited_to(config.diffusion.timesteps);
        // What the run would refuse when it starts: classes asked of a dataset that has none.
        if config.conditioning.classes {
            if let Err(e) = crate::models::num_classes(&config) {
                let at = figment
                    .find_metadata("conditioning.classes")
                    .and_then(|m| origins.get(m.name.as_ref()))
                    .map_or_else(|| "defaults".to_string(), |o| o.describe(&["conditioning".into(), "classes".into()]));
                let message = format!("{e:#}");
                let hint =
                    if message.contains("has no classes") { "; allowed: conditioning.classes = false" } else { "" };
                problems.push(format!("{at}: run `{label}`: {message}{hint}"));
            }
        }
        let spec = match RunSpec::new(&name, label.clone(), config) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("run `{label}`: {e:#}"));
                continue;
            }
        };
        // Each label is a link name under results/experiments/<name>/: two must not share one.
        let link = super::link_name(&spec.label);
        if let Some(other) = runs.iter().find(|r| r.label != spec.label && super::link_name(&r.label) == link) {
            problems.push(format!(
                "labels `{}` and `{}` both make the link name `{link}` under results/experiments/{name}/ ('/' becomes \
                 '_'); one run would lose its link: rename one (allowed: labels whose link names differ)",
                other.label, spec.label
            ));
        }
        // Runs that differ only in `[eval]` share one training (the same hash) and add evaluations;
        // runs that are the same in everything are a mistake.
        if let Some(same) = runs.iter().find(|r| r.hash == spec.hash && r.config.eval == spec.config.eval) {
            problems.push(format!(
                "runs `{}` and `{}` resolve to the same configuration (hash {}): an override hides a varied key",
                same.label, spec.label, spec.hash
            ));
        }
        sources.push(key_sources(&spec.config, &figment, &origins));
        runs.push(spec);
    }
    if !problems.is_empty() {
        bail!("{shown}: invalid experiment, nothing was run:\n  - {}", problems.join("\n  - "));
    }
    // The nearest file in the include chain that names them.
    let baseline =
        match chain.iter().rev().find_map(|f| f.meta.baseline.as_ref().map(|b| (b, f.path.display().to_string()))) {
            Some((value, file)) => Some(resolve_baseline(&Baseline::parse(value, &file)?, &runs, &file)?),
            None => None,
        };
    let loss_log_scale = chain.iter().rev().find_map(|f| f.meta.loss_log_scale).unwrap_or(true);
    // The nearest file that has an `[analysis]` table decides the whole question.
    let question = match chain.iter().rev().find_map(|f| f.analysis.as_ref().map(|a| (a, f.path.display().to_string())))
    {
        Some((table, file)) => table.resolve(sequential, &file)?,
        None => AnalysisTable::default().resolve(sequential, &shown)?,
    };
    Ok(Experiment {
        name,
        description: top.meta.description.clone(),
        path: path.to_path_buf(),
        profile: profile_name,
        profile_reason: opts.profile_reason.clone(),
        cpu_bf16_profile: cpu_bf16_profile.map(|(p, _)| p),
        runs,
        sources,
        baseline,
        loss_log_scale,
        question,
    })
}

impl Layer {
    /// A layer of run keys from a file: tables with a `name` key replace what lies below.
    fn from_table(table: &toml::Table, origin: Origin) -> Layer {
        let dict: Dict = table.iter().map(|(k, v)| (k.clone(), to_figment(v.clone()))).collect();
        let mut replaces = Vec::new();
        named_tables(&dict, "", &mut replaces);
        Layer { origin, dict, replaces }
    }
}

/// Paths of the tables that carry a `name` key (schedules, models, samplers).
fn named_tables(dict: &Dict, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in dict {
        if let Value::Dict(_, d) = v {
            let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            if d.contains_key("name") {
                out.push(path.clone());
            }
            named_tables(d, &path, out);
        }
    }
}

fn build_axes(
    grid: Vec<(String, toml::Value, Origin)>,
    zip: Vec<(String, toml::Value, Origin)>,
    variants: Option<(Vec<toml::Table>, Origin)>,
    seeds: Option<(Vec<toml::Value>, Origin)>,
    file: &str,
) -> Result<Vec<Axis>> {
    let mut axes = Vec::new();
    let mut varied: Vec<String> = Vec::new();
    let claim = |key: &str, varied: &mut Vec<String>| -> Result<()> {
        if varied.iter().any(|v| v == key || v.starts_with(&format!("{key}.")) || key.starts_with(&format!("{v}."))) {
            bail!("{file}: key `{key}` is varied by two axes (grid, zip, variants or seeds)");
        }
        varied.push(key.to_string());
        Ok(())
    };
    for (key, value, origin) in grid {
        check_run_key(&key, &origin, "grid")?;
        claim(&key, &mut varied)?;
        let toml::Value::Array(values) = value else {
            bail!("{file}: grid key `{key}` must be a non-empty list of values")
        };
        if values.is_empty() {
            bail!("{file}: grid key `{key}` must be a non-empty list of values");
        }
        let points = values
            .into_iter()
            .map(|v| AxisPoint { values: vec![(key.clone(), to_figment(v))], label: None, origin: origin.clone() })
            .collect();
        axes.push(Axis { label_key: Some(short_key(&key)), points });
    }
    if !zip.is_empty() {
        let mut columns = Vec::new();
        for (key, value, origin) in zip {
            check_run_key(&key, &origin, "zip")?;
            claim(&key, &mut varied)?;
            let toml::Value::Array(values) = value else { bail!("{file}: zip key `{key}` must be a list of values") };
            columns.push((key, values, origin));
        }
        let len = columns[0].1.len();
        if len == 0 || columns.iter().any(|c| c.1.len() != len) {
            let lens: Vec<String> = columns.iter().map(|c| format!("`{}`: {}", c.0, c.1.len())).collect();
            bail!("{file}: the lists of [zip] must be non-empty and of equal length ({})", lens.join(", "));
        }
        let points = (0..len)
            .map(|i| AxisPoint {
                values: columns.iter().map(|(k, v, _)| (k.clone(), to_figment(v[i].clone()))).collect(),
                label: Some(
                    columns
                        .iter()
                        .map(|(k, v, _)| format!("{}={}", short_key(k), short_value(&to_figment(v[i].clone()))))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                origin: columns[0].2.clone(),
            })
            .collect();
        axes.push(Axis { label_key: None, points });
    }
    if let Some((tables, origin)) = variants {
        if tables.is_empty() {
            bail!("{file}: [[variants]] must list at least one variant");
        }
        let mut points = Vec::new();
        for (i, mut table) in tables.into_iter().enumerate() {
            let label = match table.remove("label") {
                Some(toml::Value::String(s)) => {
                    // A label names the run's folder under results/experiments/<experiment>/.
                    if s.trim().is_empty() || s == "." || s == ".." || s.chars().any(char::is_control) {
                        bail!(
                            "{file}: [[variants]] {}: key `label` = {s:?}: allowed are non-empty names other than \".\" \
                             and \"..\", without control characters (a label names the run's folder in results/experiments/)",
                            i + 1
                        );
                    }
                    s
                }
                Some(other) => bail!("{file}: variant {} has a `label` that is not a string: {other}", i + 1),
                None => format!("variant={}", i + 1),
            };
            let mut values = Vec::new();
            flatten_variant(&to_figment(toml::Value::Table(table)), "", &mut values);
            let mut region = origin.region.clone();
            region.push(Seg::Index(i));
            let o = Origin {
                name: format!(
                    "{} [variants.{}]",
                    origin.file.as_ref().map(|f| f.0.display().to_string()).unwrap_or_default(),
                    i + 1
                ),
                region,
                ..origin.clone()
            };
            for (k, _) in &values {
                check_run_key(k, &o, "variants")?;
            }
            points.push(AxisPoint { values, label: Some(label), origin: o });
        }
        for k in points
            .iter()
            .flat_map(|p| p.values.iter().map(|(k, _)| k.clone()))
            .collect::<std::collections::BTreeSet<_>>()
        {
            claim(&k, &mut varied)?;
        }
        axes.push(Axis { label_key: None, points });
    }
    if let Some((values, origin)) = seeds {
        claim("seed", &mut varied)?;
        if values.is_empty() {
            bail!("{file}: `experiment.seeds` must be a non-empty list of integers");
        }
        let points = values
            .into_iter()
            .map(|v| AxisPoint { values: vec![("seed".into(), to_figment(v))], label: None, origin: origin.clone() })
            .collect();
        axes.push(Axis { label_key: Some("seed".into()), points });
    }
    Ok(axes)
}

/// A variant's keys: a table with a `name` key is one value (replaced whole), others are descended.
fn flatten_variant(v: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Dict(_, d) if prefix.is_empty() || !d.contains_key("name") => {
            for (k, child) in d {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten_variant(child, &path, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

fn check_run_key(key: &str, origin: &Origin, section: &str) -> Result<()> {
    let top = key.split('.').next().unwrap_or_default();
    if !RUN_SECTIONS.contains(&top) {
        let at = origin.describe(&[key.to_string()]);
        bail!("{at}: {section} key `{key}` is not a run key (run keys start with one of: {})", RUN_SECTIONS.join(", "));
    }
    Ok(())
}

/// The harness's own environment variables: settings of the program, not run keys.
pub const HARNESS_VARIABLES: [&str; 12] = [
    "DDPM_DATA_DIR",
    "DDPM_RESULTS_DIR",
    "DDPM_CIFAR10",
    "DDPM_SKIP_SLURM_TEST",
    crate::hardware::NATIVE_BF16_ENV,
    crate::hardware::INHERITED_ENV,
    crate::distributed::RANK,
    crate::distributed::WORLD_SIZE,
    crate::distributed::MASTER_ADDR,
    crate::distributed::MASTER_PORT,
    crate::distributed::TIMEOUT,
    crate::distributed::THREADS,
];
/// Prefixes of the harness's own variables (the Slurm launcher's `DDPM_SLURM_<KEY>`, checked by it).
const HARNESS_PREFIXES: [&str; 1] = ["DDPM_SLURM_"];
/// What build.rs gives the compiler (cargo also exports them to the processes of `cargo test`/`run`).
const BUILD_VARIABLES: [&str; 4] =
    ["DDPM_CODE_SHA256", "DDPM_BUILD_SHA256", "DDPM_LIBTORCH_VERSION", "DDPM_LIBTORCH_CUDA"];

/// `DDPM_TRAIN__LR=1e-4` → one layer per variable. Every other `DDPM_` variable must be one of the
/// harness's own ([`HARNESS_VARIABLES`], `DDPM_SLURM_*`): a misspelled section (`DDPM_TRIAN__STEPS`)
/// is an error, as `--set trian.steps` is, rather than an override silently ignored.
fn env_layers(use_env: bool) -> Result<Vec<Layer>> {
    if !use_env {
        return Ok(Vec::new());
    }
    let mut vars: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("DDPM_")).collect();
    vars.sort();
    let mut layers = Vec::new();
    for (var, raw) in vars {
        if HARNESS_VARIABLES.contains(&var.as_str())
            || BUILD_VARIABLES.contains(&var.as_str())
            || HARNESS_PREFIXES.iter().any(|p| var.starts_with(p))
        {
            continue;
        }
        let key = var["DDPM_".len()..].to_ascii_lowercase().replace("__", ".");
        if !RUN_SECTIONS.contains(&key.split('.').next().unwrap_or_default()) {
            bail!(
                "environment variable {var}: `{key}` is not a run key (run keys start with one of: {}; \
                 sections are separated by `__`, e.g. DDPM_TRAIN__STEPS); the harness's own variables are {} and DDPM_SLURM_<KEY>",
                RUN_SECTIONS.join(", "),
                HARNESS_VARIABLES.join(", ")
            );
        }
        layers.push(top_layer(format!("environment {var}"), &key, parse_value(&raw)));
    }
    Ok(layers)
}

fn set_layers(sets: &[String]) -> Result<Vec<Layer>> {
    sets.iter()
        .map(|set| {
            let (key, raw) =
                set.split_once('=').ok_or_else(|| anyhow!("--set {set:?}: expected key=value, e.g. train.lr=1e-4"))?;
            let key = key.trim();
            if !RUN_SECTIONS.contains(&key.split('.').next().unwrap_or_default()) {
                bail!(
                    "--set {set:?}: `{key}` is not a run key (run keys start with one of: {})",
                    RUN_SECTIONS.join(", ")
                );
            }
            Ok(top_layer(format!("--set {set}"), key, parse_value(raw)))
        })
        .collect()
}

/// A single-key layer. Setting a `name` (`model.name=unet`) or a table with a `name` replaces the
/// whole table below, so the new kind starts from its own defaults.
fn top_layer(name: String, key: &str, value: Value) -> Layer {
    let mut dict = Dict::new();
    set_path(&mut dict, key, value.clone());
    let mut replaces = Vec::new();
    if let Some(parent) = key.strip_suffix(".name") {
        replaces.push(parent.to_string());
    } else if matches!(&value, Value::Dict(_, d) if d.contains_key("name")) {
        replaces.push(key.to_string());
    }
    Layer { origin: Origin { name, file: None, region: vec![] }, dict, replaces }
}

/// A value in TOML syntax; a bare word that is not valid TOML is a string.
fn parse_value(raw: &str) -> Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => to_figment(t.remove("v").expect("parsed key")),
        Err(_) => Value::from(raw.to_string()),
    }
}

/// `<file>:<line>: run `label`: key `train.stepz`: <what>`.
fn describe_error(err: &figment::Error, origins: &BTreeMap<String, Origin>, label: &str) -> String {
    let at = err
        .metadata
        .as_ref()
        .and_then(|m| origins.get(m.name.as_ref()))
        .map_or_else(|| "defaults".to_string(), |o| o.describe(&err.path));
    format!("{at}: run `{label}`: key `{}`: {}", err.path.join("."), err.kind)
}

fn key_sources(config: &RunConfig, figment: &Figment, origins: &BTreeMap<String, Origin>) -> Vec<KeySource> {
    let mut flat = Vec::new();
    flatten_json(&serde_json::to_value(config).expect("config serializes"), "", &mut flat);
    // A key left to the device that runs it (absent from the resolved file) is shown with its values.
    if config.eval.batch_size.is_none() {
        let (cpu, cuda) = (crate::config::EVAL_BATCH_CPU, crate::config::EVAL_BATCH_CUDA);
        let at = flat
            .iter()
            .position(|(k, _)| k.as_str() > "eval.batch_size" && k.starts_with("eval."))
            .unwrap_or(flat.len());
        flat.insert(at, ("eval.batch_size".into(), format!("{cpu} on the CPU, {cuda} on CUDA (the device's)")));
    }
    flat.into_iter()
        .map(|(key, value)| {
            let path: Vec<String> = key.split('.').map(String::from).collect();
            let source = figment.find_metadata(&key).and_then(|m| origins.get(m.name.as_ref())).map_or_else(
                || "default".to_string(),
                |o| match &o.file {
                    Some(_) => {
                        let region = o.name.split_once(" [").map(|(_, r)| format!(" [{r}")).unwrap_or_default();
                        format!("{}{region}", o.describe(&path))
                    }
                    None => o.name.clone(),
                },
            );
            KeySource { key, value, source }
        })
        .collect()
}

fn flatten_json(v: &serde_json::Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten_json(child, &path, out);
            }
        }
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// The line (1-based) of the deepest key of `key` found under `region` of the document; dotted keys
/// written as one quoted key (`"diffusion.schedule"` in `[grid]`) are matched too.
fn line_of(text: &str, region: &[Seg], key: &[String]) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text.to_string()).ok()?;
    let mut offset = None;
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut item: Option<&toml_edit::Item> = None;
    for seg in region {
        match seg {
            Seg::Key(k) => {
                let (key, it) = table.get_key_value(k)?;
                offset = key.span().map(|s| s.start).or(offset);
                item = Some(it);
                if let Some(t) = it.as_table_like() {
                    table = t;
                }
            }
            Seg::Index(i) => {
                let t = item?.as_array_of_tables()?.get(*i)?;
                offset = t.span().map(|s| s.start).or(offset);
                table = t;
            }
        }
    }
    walk(&mut table, &mut offset, key);
    offset.map(|o| text[..o].matches('\n').count() + 1)
}

fn walk(table: &mut &dyn toml_edit::TableLike, offset: &mut Option<usize>, key: &[String]) {
    let mut i = 0;
    'outer: while i < key.len() {
        for j in (i + 1..=key.len()).rev() {
            let joined = key[i..j].join(".");
            if let Some((k, item)) = table.get_key_value(&joined) {
                *offset = k.span().map(|s| s.start).or(*offset);
                i = j;
                match item.as_table_like() {
                    Some(t) => {
                        *table = t;
                        continue 'outer;
                    }
                    None => return,
                }
            }
        }
        return;
    }
}

fn into_table(value: toml::Value, file: &str, key: &str) -> Result<toml::Table> {
    match value {
        toml::Value::Table(t) => Ok(t),
        other => bail!("{file}: key `{key}` must be a table, found {}", other.type_str()),
    }
}

fn into_tables(value: toml::Value, file: &str, key: &str) -> Result<Vec<toml::Table>> {
    match value {
        toml::Value::Array(items) => items.into_iter().map(|i| into_table(i, file, key)).collect(),
        other => bail!("{file}: key `{key}` must be an array of tables ([[{key}]]), found {}", other.type_str()),
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

/// Every combination of axis point indices, the last axis varying fastest.
fn cartesian(axes: &[Axis]) -> Vec<Vec<usize>> {
    axes.iter().fold(vec![vec![]], |acc, axis| {
        acc.into_iter()
            .flat_map(|prefix| (0..axis.points.len()).map(move |i| [prefix.clone(), vec![i]].concat()))
            .collect()
    })
}

/// The last part of a dotted key, or the one before when the last is `name`.
fn short_key(key: &str) -> String {
    let mut segs: Vec<&str> = key.split('.').collect();
    if segs.len() > 1 && segs.last() == Some(&"name") {
        segs.pop();
    }
    segs.last().expect("non-empty key").to_string()
}

/// `schedule=cosine,seed=1`: the varied axes (those with more than one point).
fn label_of(axes: &[Axis], point: &[usize]) -> Option<String> {
    let parts: Vec<String> = axes
        .iter()
        .zip(point)
        .filter(|(axis, _)| axis.points.len() > 1)
        .map(|(axis, &i)| {
            let p = &axis.points[i];
            match (&p.label, &axis.label_key) {
                (Some(l), _) => l.clone(),
                (None, Some(k)) => {
                    // Named tables of the same name (two DDIM samplers) are told apart by their keys.
                    let name = short_value(&p.values[0].1);
                    let same_name = axis.points.iter().filter(|q| short_value(&q.values[0].1) == name).count();
                    let value = if same_name > 1 { long_value(&p.values[0].1) } else { name };
                    format!("{k}={value}")
                }
                (None, None) => format!("point={i}"),
            }
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

/// A named table with its other keys: `ddim(steps=50,eta=1)`.
fn long_value(v: &Value) -> String {
    match v {
        Value::Dict(_, d) if d.contains_key("name") => {
            let keys: Vec<String> =
                d.iter().filter(|(k, _)| *k != "name").map(|(k, v)| format!("{k}={}", short_value(v))).collect();
            format!("{}({})", short_value(v), keys.join(","))
        }
        other => short_value(other),
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

/// A copy of `dict` without the given dotted keys.
fn without(dict: &Dict, keys: &[String]) -> Dict {
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
