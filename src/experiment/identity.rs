//! A run's identity and content hash: its resolved configuration without execution-only keys, the
//! realised β array, the training data's fingerprint and the code fingerprint. It sits above `data`
//! and `diffusion`, which it reads; `config` below stays the vocabulary.
use crate::config::{RunConfig, RunSpec, EXECUTION_ONLY_KEYS};
use crate::{data, diffusion::schedule};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Hex digits of the sha256 kept in a run's directory name.
pub const HASH_LEN: usize = 16;

impl RunSpec {
    /// The run of `config`; reads the training images' fingerprint (CIFAR-10 and image folders are
    /// hashed from the user's files, which must be there).
    pub fn new(experiment: &str, label: String, config: RunConfig) -> anyhow::Result<Self> {
        let hash = hash_identity(&identity(&config)?);
        Ok(Self { experiment: experiment.to_string(), label, config, hash })
    }

    /// What the hash is computed from; written to the run directory so a user can see why two runs
    /// differ.
    pub fn identity(&self) -> Value {
        identity(&self.config).expect("the fingerprint was computed when the spec was made")
    }
}

/// The canonical identity of a run: the resolved configuration without execution-only keys (sorted
/// keys, numbers in their shortest round-trip form, as serde_json writes them), the realised β array,
/// the content fingerprint of the training data and the code fingerprint (sha256 of `src/` and
/// `Cargo.lock`, computed at build time), so a change of code is a different run.
fn identity(config: &RunConfig) -> anyhow::Result<Value> {
    let mut canonical = serde_json::to_value(config).expect("RunConfig serializes to JSON");
    for key in EXECUTION_ONLY_KEYS {
        // The number of processes is a run's own when the network's training depends on the split
        // (batch norm's statistics, dropout's masks per rank): then N ranks train another run.
        if *key == "train.processes" && config.train.processes > 1 && config.model.depends_on_the_split().is_some() {
            continue;
        }
        remove_path(&mut canonical, key);
    }
    // The trajectory's steps as resolved: left out (T, 3T/4, …) and written out are the same run.
    canonical["sample"]["trajectory"] = json!(config.sample.trajectory_steps(config.diffusion.timesteps));
    // EDM and flow matching have noise levels of their own: DDPM's schedule does not change what they
    // train or sample, so runs that differ only in it are one run.
    let betas = if config.diffusion.formulation.is_ddpm() {
        json!(schedule::betas_fingerprint(&schedule::diffusion_betas(&config.diffusion)))
    } else {
        remove_path(&mut canonical, "diffusion.schedule");
        serde_json::Value::Null
    };
    Ok(json!({
        "identity_format": 2,
        "code_sha256": env!("DDPM_CODE_SHA256"),
        "config": canonical,
        "betas_sha256": betas,
        "train_images_sha256": data::train_images_fingerprint(&config.data)?,
    }))
}

fn hash_identity(identity: &Value) -> String {
    // serde_json's map is a BTreeMap (no `preserve_order` feature), so keys serialize sorted.
    let text = serde_json::to_string(identity).expect("JSON value serializes");
    let digest = Sha256::digest(text.as_bytes());
    crate::hash::hex(&digest)[..HASH_LEN].to_string()
}

fn remove_path(value: &mut Value, dotted: &str) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let last = parts.pop().expect("non-empty key");
    let mut cur = value;
    for p in parts {
        match cur.get_mut(p) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(map) = cur.as_object_mut() {
        map.remove(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScheduleConfig;

    #[test]
    fn execution_only_keys_do_not_change_the_hash() {
        let a = RunConfig::default();
        let mut b = a.clone();
        b.train.log_every = 7;
        assert_eq!(
            RunSpec::new("e", "x".into(), a.clone()).unwrap().hash,
            RunSpec::new("e", "y".into(), b).unwrap().hash
        );
        let mut c = a.clone();
        c.train.lr = 1e-3;
        assert_ne!(RunSpec::new("e", "x".into(), a).unwrap().hash, RunSpec::new("e", "x".into(), c).unwrap().hash);
    }

    /// Processes are execution only where they change nothing but rounding; with batch norm or
    /// dropout, N ranks train another run, with a hash of its own (and one process keeps its hash).
    #[test]
    fn processes_are_a_runs_own_only_where_the_split_matters() {
        let hash = |c: &RunConfig| RunSpec::new("e", "x".into(), c.clone()).unwrap().hash;
        let one = RunConfig::default();
        let mut two = one.clone();
        two.train.processes = 2;
        assert_eq!(hash(&one), hash(&two), "simple: no batch norm, no dropout");
        let mut bn = one.clone();
        bn.model = crate::config::model::ModelConfig::default_named("simple_bn").unwrap();
        let mut bn2 = bn.clone();
        bn2.train.processes = 2;
        assert_ne!(hash(&bn), hash(&bn2), "batch norm: statistics per rank");
        assert!(!serde_json::to_string(&identity(&bn).unwrap()).unwrap().contains("processes"));
        let mut dropout = one.clone();
        dropout.model = crate::config::model::ModelConfig::default_named("ddpm_cifar").unwrap();
        let mut dropout2 = dropout.clone();
        dropout2.train.processes = 2;
        assert_ne!(hash(&dropout), hash(&dropout2), "dropout 0.1: masks per rank");
    }

    #[test]
    fn a_default_trajectory_written_out_is_the_same_run() {
        let a = RunConfig::default();
        let mut b = a.clone();
        b.sample.trajectory = Some(vec![1000, 750, 500, 250, 100, 0]);
        let hash = |c: RunConfig| RunSpec::new("e", "x".into(), c).unwrap().hash;
        assert_eq!(hash(a.clone()), hash(b.clone()));
        b.sample.trajectory = Some(vec![1000, 0]);
        assert_ne!(hash(a), hash(b));
    }

    /// An EDM or flow run does not use DDPM's schedule: another schedule is the same run.
    #[test]
    fn a_continuous_formulations_schedule_is_not_its_identity() {
        let mut a = RunConfig::default();
        a.diffusion.formulation = crate::config::FormulationConfig::Flow(Default::default());
        let mut b = a.clone();
        b.diffusion.schedule = ScheduleConfig::Cosine(crate::config::schedule::cosine::Config::default());
        let hash = |c: RunConfig| RunSpec::new("e", "x".into(), c).unwrap().hash;
        assert_eq!(hash(a.clone()), hash(b.clone()));
        let mut ddpm = b.clone();
        ddpm.diffusion.formulation = Default::default();
        assert_ne!(hash(ddpm), hash(b));
    }

    #[test]
    fn schedule_numbers_not_names_identify_the_run() {
        let mut a = RunConfig::default();
        a.diffusion.schedule = ScheduleConfig::Cosine(crate::config::schedule::cosine::Config {
            s: 0.008,
            max_beta: 0.999,
            min_beta: None,
        });
        let mut b = a.clone();
        b.diffusion.schedule =
            ScheduleConfig::Cosine(crate::config::schedule::cosine::Config { s: 0.008, max_beta: 0.5, min_beta: None });
        let (ha, hb) = (RunSpec::new("e", "l".into(), a).unwrap().hash, RunSpec::new("e", "l".into(), b).unwrap().hash);
        assert_ne!(ha, hb);
        assert_eq!(ha.len(), HASH_LEN);
    }
}
