//! The Slurm launcher's settings, layered by figment: built-in defaults < the user's
//! `~/.config/ddpm/launcher.toml` < the repository's `ddpm.toml` < `DDPM_SLURM_<KEY>` environment
//! variables < the command line. Both files keep the settings in a `[slurm]` table:
//!
//! ```toml
//! [slurm]
//! partition = "gpu"
//! account = "my-lab"
//! time = "04:00:00"
//! gres = "gpu:1"
//! cpus_per_run = 8
//! mem = "32G"
//! max_parallel = 8
//! extra_args = ["--constraint=a100"]
//! ```
use anyhow::{bail, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What each array task asks Slurm for, and how the tasks are run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmConfig {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Time limit of each run's task, in sbatch's syntax (`30`, `04:00:00`, `1-00:00:00`).
    pub time: Option<String>,
    /// Generic resources of each run, e.g. `gpu:1` or `gpu:a100:2` (`--gres`).
    pub gres: Option<String>,
    pub cpus_per_run: Option<u32>,
    /// Memory of each run, e.g. `32G` (`--mem`).
    pub mem: Option<String>,
    /// At most this many of the experiment's runs at once (`--array=0-N%P`).
    pub max_parallel: Option<u32>,
    /// Slurm sends SIGUSR1 this many seconds before the time limit; the run then writes a checkpoint
    /// and the task requeues itself.
    pub signal_seconds: u32,
    /// More sbatch arguments, given to both the array and the analysis job, e.g. `--constraint=a100`.
    pub extra_args: Vec<String>,
    /// The ddpm executable the tasks run, as the compute nodes see it [default: this executable].
    pub binary: Option<PathBuf>,
    /// Submit `ddpm analyze` as a job that starts when the array has ended.
    pub analyze: bool,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self {
            partition: None,
            account: None,
            qos: None,
            time: None,
            gres: None,
            cpus_per_run: None,
            mem: None,
            max_parallel: None,
            signal_seconds: 120,
            extra_args: Vec::new(),
            binary: None,
            analyze: true,
        }
    }
}

const KEYS: &[&str] = &[
    "partition",
    "account",
    "qos",
    "time",
    "gres",
    "cpus_per_run",
    "mem",
    "max_parallel",
    "signal_seconds",
    "extra_args",
    "binary",
    "analyze",
];

/// The command line's settings: only those given are layered over the files.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gres: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus_per_run: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_seconds: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analyze: Option<bool>,
}

/// `$XDG_CONFIG_HOME/ddpm/launcher.toml`, else `~/.config/ddpm/launcher.toml`.
pub fn user_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join("ddpm").join("launcher.toml"))
}

/// The settings from `files` (lowest first; missing ones are skipped), the environment and `cli`.
pub fn load(files: &[PathBuf], cli: &Overrides) -> Result<SlurmConfig> {
    let mut figment = Figment::from(Serialized::defaults(SlurmConfig::default()));
    for file in files.iter().filter(|f| f.is_file()) {
        let text = std::fs::read_to_string(file)?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not valid TOML: {}", file.display(), e.message()))?;
        if let Some(key) = table.keys().find(|k| *k != "slurm") {
            bail!("{}: unknown table or key `{key}`; allowed is the table [slurm]", file.display());
        }
        figment = figment.merge(SlurmTable(Toml::file(file)));
    }
    let env = Env::prefixed("DDPM_SLURM_");
    figment = figment.merge(env).merge(Serialized::defaults(cli));
    figment.extract::<SlurmConfig>().map_err(|e| describe(&e))
}

/// A settings file whose `[slurm]` table holds the keys.
struct SlurmTable(figment::providers::Data<Toml>);

impl figment::Provider for SlurmTable {
    fn metadata(&self) -> figment::Metadata {
        self.0.metadata()
    }

    fn data(&self) -> figment::Result<figment::value::Map<figment::Profile, figment::value::Dict>> {
        let mut out = figment::value::Map::new();
        for (profile, dict) in self.0.data()? {
            let inner = match dict.get("slurm") {
                Some(figment::value::Value::Dict(_, d)) => d.clone(),
                _ => figment::value::Dict::new(),
            };
            out.insert(profile, inner);
        }
        Ok(out)
    }
}

/// figment's error as one line per problem, naming the source (file or variable), the key and what
/// is allowed.
fn describe(err: &figment::Error) -> anyhow::Error {
    let lines: Vec<String> = err
        .clone()
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e.metadata.as_ref().map_or("the launcher settings".to_string(), |m| match &m.source {
                Some(figment::Source::File(p)) => format!("{} [slurm]", p.display()),
                _ if m.name.contains("environment") => {
                    format!("environment variable DDPM_SLURM_{}", key.to_uppercase())
                }
                Some(other) => other.to_string(),
                None => m.name.to_string(),
            });
            match &e.kind {
                figment::error::Kind::UnknownField(field, _) => {
                    format!("{source}: unknown key `{field}`; allowed keys are {}", KEYS.join(", "))
                }
                kind => format!("{source}: key `{key}`: {kind}"),
            }
        })
        .collect();
    anyhow::anyhow!("{}", lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn layers_user_file_repo_file_and_command_line_in_that_order() {
        let dir = tempfile::tempdir().unwrap();
        let user = write(dir.path(), "user.toml", "[slurm]\npartition = \"a\"\naccount = \"lab\"\nmax_parallel = 4\n");
        let repo = write(dir.path(), "ddpm.toml", "[slurm]\npartition = \"b\"\ngres = \"gpu:2\"\n");
        let cli = Overrides { gres: Some("gpu:1".into()), cpus_per_run: Some(3), ..Default::default() };
        let c = load(&[user, repo, dir.path().join("missing.toml")], &cli).unwrap();
        assert_eq!(c.partition.as_deref(), Some("b"), "the repository's file over the user's");
        assert_eq!(c.account.as_deref(), Some("lab"));
        assert_eq!(c.max_parallel, Some(4));
        assert_eq!(c.gres.as_deref(), Some("gpu:1"), "the command line over both");
        assert_eq!(c.cpus_per_run, Some(3));
        assert_eq!(c.signal_seconds, 120, "default");
        assert!(c.analyze);
        assert_eq!(c.qos, None);
    }

    #[test]
    fn unknown_keys_and_tables_and_wrong_types_name_file_key_and_allowed_values() {
        let dir = tempfile::tempdir().unwrap();
        let typo = write(dir.path(), "a.toml", "[slurm]\npartion = \"gpu\"\n");
        let e = load(&[typo], &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("a.toml") && e.contains("`partion`") && e.contains("allowed keys are partition"), "{e}");
        let table = write(dir.path(), "b.toml", "[slrum]\npartition = \"gpu\"\n");
        let e = load(&[table], &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("b.toml") && e.contains("`slrum`") && e.contains("[slurm]"), "{e}");
        let wrong = write(dir.path(), "c.toml", "[slurm]\ncpus_per_run = \"eight\"\n");
        let e = load(&[wrong], &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("cpus_per_run"), "{e}");
    }
}
