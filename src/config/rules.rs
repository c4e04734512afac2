//! The rules across sections of a run's configuration: what one key allows depends on another's
//! value. Each section's own ranges are beside its keys (`DataConfig::check`, `TrainConfig::check`,
//! the model's, sampler's, schedule's and cluster's `check`); `RunConfig::validate`, here, runs those,
//! then these. A rule is a function here, named for what it protects.
use super::model::Check;
use super::schema::{
    check_count, DatasetName, EvalClasses, Objective, RunConfig, SplitName, Target, Variance, Weighting,
};
use super::schema::{Invalid, MAX_IMAGES, MAX_IMAGE_SIZE};
use super::schema::{LossKind, SamplerConfig, TimestepSampling};

impl RunConfig {
    /// Every problem of the configuration: each section's own ranges (`<Section>Config::check`, the
    /// model's and the cluster's beside their keys), then the rules across sections (`rules`).
    pub fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        let mut check = |ok: bool, key: &'static str, value: String, allowed: &str| {
            if !ok {
                out.push(Invalid { key, value, allowed: allowed.to_string() });
            }
        };
        self.diffusion.check(&mut check);
        self.data.check(&mut check);
        model_fits_the_images(self, &mut check);
        self.train.check(&mut check);
        self.conditioning.check(&mut check);
        self.sample.check(self.diffusion.timesteps, &mut check);
        self.eval.check(&mut check);
        self.cluster.check(&mut check);
        across_sections(self, &mut check);
        out
    }
}

/// Every rule below, in the order their problems are reported (the model's fit is reported with the
/// data's keys, by `RunConfig::validate`).
pub fn across_sections(c: &RunConfig, check: &mut Check) {
    counts_fit_the_dataset(c, check);
    a_folder_has_the_splits_it_needs(c, check);
    objective(c, check);
    guidance_needs_an_unconditional_model(c, check);
    cluster(c, check);
    formulation(c, check);
    churn_keys(c, check);
    posthoc_ema(c, check);
    processes(c, check);
}

/// A run of several processes: the clustering's E-steps relabel the images between steps on one
/// process only, so a cluster-conditional run trains in one.
fn processes(c: &RunConfig, check: &mut Check) {
    if c.train.processes > 1 {
        check(
            !c.cluster.on(),
            "train.processes",
            c.train.processes.to_string(),
            "1 with [cluster] (the E-steps relabel the images on one process)",
        );
    }
}

/// The model's downsamplings fit the image size (checked once the size itself is in range).
pub fn model_fits_the_images(c: &RunConfig, check: &mut Check) {
    let side = c.data.image_size;
    if (1..=MAX_IMAGE_SIZE).contains(&side) {
        c.model.check(side, check);
    }
}

/// Counts of images are at most what the dataset has, where that is known.
fn counts_fit_the_dataset(c: &RunConfig, check: &mut Check) {
    let data = &c.data;
    let (train_n, test_n) = data.name.known_size().map_or((MAX_IMAGES, MAX_IMAGES), |(a, b, _)| (a as i64, b as i64));
    let train_what = format!("the training images of `{}`", data.name.as_str());
    let test_what = format!("the test images of `{}`", data.name.as_str());
    let clamp = |n: usize| n.min(i64::MAX as usize) as i64;
    let limit = data.limit.map_or(train_n, |l| l as i64).min(train_n);
    check_count(check, "train.batch_size", c.train.batch_size, limit, &train_what);
    check_count(check, "eval.bpd_images", clamp(c.eval.bpd_images), test_n, &test_what);
    let reference_n = if c.eval.reference_split == SplitName::Test { test_n } else { train_n };
    let reference = clamp(c.eval.reference_images);
    check_count(check, "eval.reference_images", reference, reference_n, "the reference split's images");
    if let Some(limit) = data.limit {
        check(
            limit as i64 >= c.train.batch_size.max(1),
            "data.limit",
            limit.to_string(),
            &format!("at least train.batch_size ({}) images", c.train.batch_size),
        );
    }
}

/// An image folder used for the bound or a test reference needs a test split.
fn a_folder_has_the_splits_it_needs(c: &RunConfig, check: &mut Check) {
    if c.data.name != DatasetName::ImageFolder {
        return;
    }
    let needs_test = if c.eval.bpd {
        Some("eval.bpd")
    } else if c.eval.reference_split == SplitName::Test {
        Some("eval.reference_split = \"test\"")
    } else {
        None
    };
    if let Some(what) = needs_test {
        check(
            c.data.has_test_split(),
            "data.test_images",
            "0".into(),
            &format!("at least 1: {what} needs a test split (or turn it off)"),
        );
    }
}

/// The combinations of the objective, the learned variance, the weighting and zero terminal SNR.
fn objective(c: &RunConfig, check: &mut Check) {
    let (d, t) = (&c.diffusion, &c.train);
    let learned = c.model.learn_sigma();
    let objective = format!("{:?}", t.objective).to_lowercase();
    check(
        t.objective != Objective::Hybrid || learned,
        "train.objective",
        objective.clone(),
        "`simple` or `vlb` unless model.learn_sigma = true (the hybrid's bound term trains only the variance: \
         with a fixed one it is a constant)",
    );
    check(
        !learned || t.objective != Objective::Simple,
        "model.learn_sigma",
        "true".into(),
        "false with train.objective = \"simple\" (L_simple gives the variance channels no gradient); \
         use train.objective = \"hybrid\" or \"vlb\"",
    );
    check(
        !learned || d.variance == Variance::Posterior,
        "diffusion.variance",
        format!("{:?}", d.variance).to_lowercase(),
        "`posterior` (the default) with model.learn_sigma = true: the network's interpolation between log β and \
         log β̃ replaces the fixed variance",
    );
    check(
        t.weighting == Weighting::Uniform || t.objective == Objective::Simple,
        "train.weighting",
        "min_snr".into(),
        &format!("`uniform` with train.objective = \"{objective}\" (min-SNR weights L_simple only)"),
    );
    check(
        !d.zero_terminal_snr || d.target != Target::Eps,
        "diffusion.target",
        "eps".into(),
        "`v` or `x0` with diffusion.zero_terminal_snr = true (at SNR 0, x_T is pure noise and ε-prediction \
         cannot give x_0)",
    );
    for (key, w) in [("sample.guidance_scale", c.sample.guidance_scale), ("eval.guidance_scale", c.eval.guidance_scale)]
    {
        check(
            !learned || w == 0.0,
            key,
            w.to_string(),
            "0 with model.learn_sigma = true (guidance would mix the variance channels too)",
        );
    }
}

/// Guidance mixes the conditional and the unconditional model: it needs label dropout to train one.
fn guidance_needs_an_unconditional_model(c: &RunConfig, check: &mut Check) {
    let cond = &c.conditioning;
    for (key, w) in [("sample.guidance_scale", c.sample.guidance_scale), ("eval.guidance_scale", c.eval.guidance_scale)]
    {
        if w > 0.0 {
            check(
                cond.classes && cond.label_dropout > 0.0,
                key,
                w.to_string(),
                "0 unless conditioning.classes = true with conditioning.label_dropout > 0 (guidance needs the \
                 unconditional model that label dropout trains)",
            );
        }
    }
}

/// What `[cluster]` excludes: the dataset's own classes (the clusters take the class-embedding path),
/// unconditional evaluation (no label dropout trains an unconditional model); an E-step before the
/// last step; at most as many clusters as images.
fn cluster(c: &RunConfig, check: &mut Check) {
    let k = &c.cluster;
    if !k.on() {
        return;
    }
    check(
        !c.conditioning.classes,
        "conditioning.classes",
        "true".into(),
        "false with cluster.q > 0 (the clusters are the model's classes)",
    );
    check(
        c.eval.classes == EvalClasses::Balanced,
        "eval.classes",
        "\"unconditional\"".into(),
        "\"balanced\" with cluster.q > 0 (without label dropout the network has no unconditional model)",
    );
    check(
        (1..c.train.steps.max(2)).contains(&k.e_step_every),
        "cluster.e_step_every",
        k.e_step_every.to_string(),
        &format!("an integer from 1 to train.steps − 1 ({}): at least one E-step before the last", c.train.steps - 1),
    );
    if k.m_phase > 1 {
        check(
            k.first() < c.train.steps,
            "cluster.m_phase",
            k.m_phase.to_string(),
            &format!(
                "m with m · cluster.e_step_every ({}) below train.steps ({}): an E-step before the last",
                k.e_step_every, c.train.steps
            ),
        );
    }
    let n = c.data.limit.or(c.data.name.known_size().map(|s| s.0));
    if let Some(n) = n {
        check(n as i64 >= k.q, "cluster.q", k.q.to_string(), &format!("at most the number of training images ({n})"));
    }
}

/// EDM and flow matching bring their own noise levels, targets, losses and samplers: the DDPM
/// formulation's keys must stay at their defaults (they would do nothing), the samplers must be the
/// formulation's, and what needs the discrete chain (the bound, clustering's E-step) is refused.
fn formulation(c: &RunConfig, check: &mut Check) {
    let f = &c.diffusion.formulation;
    if f.is_ddpm() {
        for (key, sampler) in [("sample.sampler.name", &c.sample.sampler), ("eval.sampler.name", &c.eval.sampler)] {
            check(
                !matches!(sampler, SamplerConfig::Midpoint(_)),
                key,
                "\"midpoint\"".into(),
                &format!(
                    "one of {} with diffusion.formulation = \"ddpm\" (midpoint is flow matching's)",
                    f.samplers().join(", ")
                ),
            );
            if let SamplerConfig::Heun(h) = sampler {
                check(
                    !h.churns(),
                    if key.starts_with("eval") { "eval.sampler.s_churn" } else { "sample.sampler.s_churn" },
                    h.s_churn.to_string(),
                    "0 with diffusion.formulation = \"ddpm\" (Algorithm 2's churn is EDM's; the discrete model's Heun \
                     is diffusers' deterministic one)",
                );
            }
        }
        return;
    }
    let name = f.name();
    let why = |what: &str| format!("{what} with diffusion.formulation = \"{name}\" (a DDPM-only key)");
    let (d, t) = (&c.diffusion, &c.train);
    check(
        d.target == Target::Eps,
        "diffusion.target",
        format!("{:?}", d.target).to_lowercase(),
        &why("`eps`, the default,"),
    );
    check(!d.zero_terminal_snr, "diffusion.zero_terminal_snr", "true".into(), &why("false"));
    check(
        d.variance == Variance::Posterior,
        "diffusion.variance",
        format!("{:?}", d.variance).to_lowercase(),
        &why("`posterior`, the default,"),
    );
    check(
        t.objective == Objective::Simple,
        "train.objective",
        format!("{:?}", t.objective).to_lowercase(),
        &why("`simple`"),
    );
    check(
        t.loss == LossKind::L2,
        "train.loss",
        format!("{:?}", t.loss).to_lowercase(),
        &format!("`l2` with diffusion.formulation = \"{name}\" (its loss is its own weighted mse)"),
    );
    check(t.weighting == Weighting::Uniform, "train.weighting", "min_snr".into(), &why("`uniform`"));
    check(
        t.timestep_sampling == TimestepSampling::Uniform,
        "train.timestep_sampling",
        "loss_second_moment".into(),
        &why("`uniform`"),
    );
    check(
        t.offset_noise_strength == 0.0,
        "train.offset_noise_strength",
        t.offset_noise_strength.to_string(),
        &why("0"),
    );
    check(!c.model.learn_sigma(), "model.learn_sigma", "true".into(), &why("false"));
    check(!c.model.self_condition(), "model.self_condition", "true".into(), &why("false"));
    check(
        !c.cluster.on(),
        "cluster.q",
        c.cluster.q.to_string(),
        &format!("0 with diffusion.formulation = \"{name}\" (the E-step needs DDPM's bound)"),
    );
    check(
        !c.eval.bpd,
        "eval.bpd",
        "true".into(),
        &format!("false with diffusion.formulation = \"{name}\" (bits/dim is DDPM's variational bound; the probability-flow ODE's likelihood is not computed)"),
    );
    for (key, sampler) in [("sample.sampler.name", &c.sample.sampler), ("eval.sampler.name", &c.eval.sampler)] {
        check(
            f.samplers().contains(&sampler.name()),
            key,
            format!("\"{}\"", sampler.name()),
            &format!("one of {} with diffusion.formulation = \"{name}\"", f.samplers().join(", ")),
        );
        let karras = match sampler {
            SamplerConfig::Euler(e) => e.karras,
            SamplerConfig::Heun(h) => h.karras,
            _ => true,
        };
        check(
            karras,
            if key.starts_with("eval") { "eval.sampler.karras" } else { "sample.sampler.karras" },
            "false".into(),
            &format!("true (the default) with diffusion.formulation = \"{name}\": its grid is its own (EDM: Karras σ; flow: shifted uniform t)"),
        );
        if let (SamplerConfig::Heun(h), false) = (sampler, matches!(f, super::FormulationConfig::Edm(_))) {
            check(
                !h.churns(),
                if key.starts_with("eval") { "eval.sampler.s_churn" } else { "sample.sampler.s_churn" },
                h.s_churn.to_string(),
                &format!("0 with diffusion.formulation = \"{name}\" (churn is EDM's Algorithm 2)"),
            );
        }
    }
    if let super::FormulationConfig::Flow(fl) = f {
        use super::formulation::flow::TimeSampling;
        let logit_normal = fl.time_sampling == TimeSampling::LogitNormal;
        for (key, value, default) in
            [("diffusion.formulation.location", fl.location, 0.0), ("diffusion.formulation.scale", fl.scale, 1.0)]
        {
            check(
                logit_normal || value == default,
                key,
                value.to_string(),
                &format!("{default} (the default) with time_sampling = \"uniform\": it shapes logit-normal t only"),
            );
        }
    }
}

/// Algorithm 2's S_tmin, S_tmax and S_noise act only when S_churn > 0 (and churn is EDM's).
fn churn_keys(c: &RunConfig, check: &mut Check) {
    for (prefix, sampler) in [("sample.sampler", &c.sample.sampler), ("eval.sampler", &c.eval.sampler)] {
        let SamplerConfig::Heun(h) = sampler else { continue };
        if h.churns() {
            continue;
        }
        let keys = [
            ("s_tmin", h.s_tmin != 0.0, h.s_tmin.to_string()),
            ("s_tmax", h.s_tmax.is_some(), format!("{:?}", h.s_tmax)),
            ("s_noise", h.s_noise != 1.0, h.s_noise.to_string()),
        ];
        for (k, set, value) in keys {
            let key: &'static str = match (prefix, k) {
                ("sample.sampler", "s_tmin") => "sample.sampler.s_tmin",
                ("sample.sampler", "s_tmax") => "sample.sampler.s_tmax",
                ("sample.sampler", _) => "sample.sampler.s_noise",
                (_, "s_tmin") => "eval.sampler.s_tmin",
                (_, "s_tmax") => "eval.sampler.s_tmax",
                _ => "eval.sampler.s_noise",
            };
            check(
                !set,
                key,
                value,
                &format!("absent unless {prefix}.s_churn > 0 (EDM's Algorithm 2; without churn it does nothing)"),
            );
        }
    }
}

/// A post-hoc EMA width needs the snapshots that `train.posthoc_ema` stores, replaces the choice of
/// the EMA or the raw weights, and at `eval.checkpoint` needs a snapshot of that step.
fn posthoc_ema(c: &RunConfig, check: &mut Check) {
    let Some(s) = c.eval.ema_sigma_rel else { return };
    check(
        c.train.posthoc_ema.is_some(),
        "eval.ema_sigma_rel",
        s.to_string(),
        "absent unless [train.posthoc_ema] stores the snapshots it is reconstructed from",
    );
    check(
        c.eval.use_ema,
        "eval.use_ema",
        "false".into(),
        "true (the default) with eval.ema_sigma_rel: the post-hoc average replaces both the EMA and the raw weights",
    );
    if let (Some(p), Some(step)) = (&c.train.posthoc_ema, c.eval.checkpoint) {
        check(
            step <= c.train.steps && (step.is_multiple_of(p.every.max(1)) || step == c.train.steps),
            "eval.checkpoint",
            step.to_string(),
            &format!(
                "with eval.ema_sigma_rel, a step with a snapshot: a multiple of train.posthoc_ema.every ({}) up to \
                 train.steps ({}), or train.steps",
                p.every, c.train.steps
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(toml_text: &str) -> RunConfig {
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn keys(c: &RunConfig) -> Vec<&'static str> {
        c.validate().iter().map(|i| i.key).collect()
    }

    /// An EDM or flow run must sample with its own samplers, keep DDPM's keys at their defaults and
    /// not ask for the bound or a clustering; each problem names its key and the allowed values.
    #[test]
    fn formulations_refuse_what_they_cannot_do() {
        let edm = parsed(
            "[diffusion.formulation]\nname = \"edm\"\n[eval]\nbpd = false\nsampler = { name = \"heun\", steps = 5 }\n\
             [sample]\nsampler = { name = \"euler\", steps = 10 }\n",
        );
        assert!(edm.validate().is_empty(), "{:?}", edm.validate());
        let mut bad = edm.clone();
        bad.eval.bpd = true;
        bad.diffusion.target = Target::V;
        bad.sample.sampler = SamplerConfig::default();
        let problems = bad.validate();
        assert_eq!(keys(&bad), ["diffusion.target", "eval.bpd", "sample.sampler.name"], "{problems:?}");
        assert!(problems[2].allowed.contains("euler, heun"), "{}", problems[2]);
        let flow = parsed(
            "[diffusion.formulation]\nname = \"flow\"\nshift = 3.0\n[eval]\nbpd = false\n\
             sampler = { name = \"midpoint\", steps = 5 }\n[sample]\nsampler = { name = \"heun\", steps = 5, s_churn = 1.0 }\n",
        );
        assert_eq!(keys(&flow), ["sample.sampler.s_churn"]);
        // DDPM has no midpoint and no churn; unknown formulation keys are parse errors.
        let ddpm = parsed(
            "[eval]\nsampler = { name = \"midpoint\" }\n[sample]\nsampler = { name = \"heun\", s_churn = 2.0 }\n",
        );
        assert_eq!(keys(&ddpm), ["sample.sampler.s_churn", "eval.sampler.name"]);
        let err = toml::from_str::<RunConfig>("[diffusion.formulation]\nname = \"edm\"\np_men = 1.0\n").unwrap_err();
        assert!(err.to_string().contains("p_men"), "{err}");
        let err = toml::from_str::<RunConfig>("[diffusion.formulation]\nname = \"ddim\"\n").unwrap_err();
        assert!(err.to_string().contains("ddpm") && err.to_string().contains("flow"), "{err}");
        let mut range = edm.clone();
        range.diffusion.formulation = super::super::FormulationConfig::Edm(super::super::formulation::edm::Config {
            sigma_min: 100.0,
            ..Default::default()
        });
        assert_eq!(keys(&range), ["diffusion.formulation.sigma_max"]);
    }

    /// A post-hoc EMA width needs the snapshots, and both widths are in (0, 1/√12).
    #[test]
    fn posthoc_ema_needs_its_snapshots() {
        let mut c = RunConfig::default();
        c.eval.ema_sigma_rel = Some(0.1);
        assert_eq!(keys(&c), ["eval.ema_sigma_rel"]);
        let c = parsed("[train.posthoc_ema]\nevery = 10\nsigma_rels = [0.05, 0.3]\n[eval]\nema_sigma_rel = 0.4\n");
        assert_eq!(keys(&c), ["train.posthoc_ema.sigma_rels", "eval.ema_sigma_rel"]);
        let c = parsed("[train.posthoc_ema]\nevery = 10\n[eval]\nema_sigma_rel = 0.15\n");
        assert!(c.validate().is_empty());
        // It replaces the choice of weights, and a checkpoint step needs its snapshot (every 10 of 1000).
        let c =
            parsed("[train.posthoc_ema]\nevery = 10\n[eval]\nema_sigma_rel = 0.15\nuse_ema = false\ncheckpoint = 25\n");
        assert_eq!(keys(&c), ["eval.use_ema", "eval.checkpoint"]);
    }

    /// Keys that would do nothing are refused: churn's range and noise without churn, logit-normal's
    /// location and scale with uniform t.
    #[test]
    fn keys_that_would_do_nothing_are_refused() {
        let c = parsed("[sample]\nsampler = { name = \"heun\", s_tmin = 0.1, s_noise = 1.01 }\n");
        assert_eq!(keys(&c), ["sample.sampler.s_tmin", "sample.sampler.s_noise"]);
        let c = parsed(
            "[diffusion.formulation]\nname = \"flow\"\ntime_sampling = \"uniform\"\nscale = 2.0\n[eval]\nbpd = false\n\
             sampler = { name = \"euler\" }\n[sample]\nsampler = { name = \"euler\" }\n",
        );
        assert_eq!(keys(&c), ["diffusion.formulation.scale"]);
    }
}
