//! Timestep embeddings, and the class embedding of class-conditional models.
use tch::nn::Module;
use tch::{Kind, Tensor};

/// The transformer's sinusoidal position embedding applied to timesteps, as in the DDPM code and
/// the blog recipe: with h = dim/2, frequencies exp(−ln(10000) · i/(h − 1)) for i < h, and
/// [sin(t·f), cos(t·f)] concatenated. `t` is an integer tensor `[B]`; the result is `[B, dim]`.
pub fn sinusoidal(t: &Tensor, dim: i64) -> Tensor {
    let half = dim / 2;
    let scale = -(10000f64.ln()) / (half - 1) as f64;
    let freqs = (Tensor::arange(half, (Kind::Float, t.device())) * scale).exp();
    let args = t.to_kind(Kind::Float).unsqueeze(1) * freqs.unsqueeze(0);
    Tensor::cat(&[args.sin(), args.cos()], 1)
}

/// lucidrains' learned sinusoidal embedding: with learned frequencies w (`half` of them, initialised
/// from N(0, 1)), [t, sin(2π t w), cos(2π t w)]; the result is `[B, 2·half + 1]`.
#[derive(Debug)]
pub struct LearnedSinusoidal {
    weights: Tensor,
}

impl LearnedSinusoidal {
    pub fn new(p: tch::nn::Path, dim: i64) -> Self {
        Self { weights: p.var("weights", &[dim / 2], tch::nn::Init::Randn { mean: 0.0, stdev: 1.0 }) }
    }

    pub fn forward(&self, t: &Tensor) -> Tensor {
        let t = t.to_kind(Kind::Float).unsqueeze(1);
        let freqs = &t * self.weights.unsqueeze(0) * (2.0 * std::f64::consts::PI);
        Tensor::cat(&[t, freqs.sin(), freqs.cos()], 1)
    }
}

/// A learned vector per class, plus one for "no class" (the last row), added to the timestep
/// embedding: the conditioning of classifier-free guidance (Ho & Salimans 2022), where dropping labels
/// to "no class" in training makes the same network the unconditional model too.
#[derive(Debug)]
pub struct ClassEmbedding {
    table: tch::nn::Embedding,
    /// The index of "no class".
    pub null: i64,
}

impl ClassEmbedding {
    pub fn new(p: &tch::nn::Path, classes: i64, dim: i64) -> Self {
        Self { table: tch::nn::embedding(p / "class_emb", classes + 1, dim, Default::default()), null: classes }
    }

    /// `temb` plus each sample's class vector: `labels` `[B]` in 0..classes, with −1 (or `null`) for
    /// "no class"; None is "no class" for the whole batch (the unconditional model).
    pub fn add_to(&self, temb: Tensor, labels: Option<&Tensor>) -> Tensor {
        let labels = match labels {
            Some(l) => l.where_scalarother(&l.ge(0), self.null),
            None => Tensor::full([temb.size()[0]], self.null, (Kind::Int64, temb.device())),
        };
        temb + self.table.forward(&labels)
    }
}

/// Makes the class vectors of a class-conditional network (every `…class_emb.weight` in `vs`) fixed
/// one-hot vectors, class k's 1 in coordinate k and "no class" all zeros, and takes them out of
/// training (`cluster.embedding = "one_hot"`). Refused when the classes outnumber the embedding's
/// coordinates.
pub fn fix_one_hot(vs: &tch::nn::VarStore) -> anyhow::Result<()> {
    let mut vars = vs.variables_.lock().expect("the variables' lock");
    let names: Vec<String> = vars.named_variables.keys().filter(|n| n.ends_with("class_emb.weight")).cloned().collect();
    if names.is_empty() {
        anyhow::bail!("a one-hot class embedding needs a class-conditional model; this one has no class embedding");
    }
    for name in names {
        let mut table = vars.named_variables[&name].shallow_clone();
        let (classes, dim) = (table.size()[0] - 1, table.size()[1]);
        if classes > dim {
            anyhow::bail!(
                "cluster.embedding = \"one_hot\": {classes} clusters need {classes} coordinates, and the model's \
                 class embedding has {dim} (allowed: cluster.q <= {dim}, or cluster.embedding = \"learned\")"
            );
        }
        let fixed = Tensor::eye_m(classes + 1, dim, (Kind::Float, table.device())).index_fill(
            0,
            &Tensor::from_slice(&[classes]).to_device(table.device()),
            0.0,
        );
        tch::no_grad(|| table.copy_(&fixed));
        let _ = table.set_requires_grad(false);
        let ptr = table.data_ptr();
        vars.trainable_variables.retain(|v| v.tensor.data_ptr() != ptr);
    }
    Ok(())
}

/// The timestep embedding of a model, conditioned on the labels when the model has classes.
pub fn condition(classes: &Option<ClassEmbedding>, temb: Tensor, labels: Option<&Tensor>) -> Tensor {
    match classes {
        Some(c) => c.add_to(temb, labels),
        None => temb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One-hot: class k's vector is e_k, "no class" is 0, and the table is no longer trained.
    #[test]
    fn one_hot_classes_are_fixed() {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let c = ClassEmbedding::new(&(vs.root() / "m"), 3, 4);
        let before = vs.trainable_variables().len();
        fix_one_hot(&vs).unwrap();
        assert_eq!(vs.trainable_variables().len(), before - 1);
        let temb = Tensor::zeros([4, 4], (Kind::Float, tch::Device::Cpu));
        let out = c.add_to(temb, Some(&Tensor::from_slice(&[0i64, 1, 2, -1])));
        let want =
            Tensor::from_slice(&[1.0f32, 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 0.]).view([4, 4]);
        assert!(out.equal(&want), "{out}");
        assert!(!out.requires_grad());
        let small = tch::nn::VarStore::new(tch::Device::Cpu);
        let _ = ClassEmbedding::new(&small.root(), 5, 4);
        let err = fix_one_hot(&small).unwrap_err().to_string();
        assert!(err.contains("cluster.q <= 4"), "{err}");
    }

    /// Label −1 and None both pick the "no class" row; a class picks its own row.
    #[test]
    fn unlabelled_samples_get_the_null_class() {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let c = ClassEmbedding::new(&vs.root(), 3, 4);
        let temb = Tensor::zeros([3, 4], (Kind::Float, tch::Device::Cpu));
        let with = c.add_to(temb.shallow_clone(), Some(&Tensor::from_slice(&[2i64, -1, 3])));
        let without = c.add_to(temb, None);
        let rows = (vs.root() / "class_emb").get("weight").unwrap();
        assert!(with.get(0).equal(&rows.get(2)));
        assert!(with.get(1).equal(&rows.get(3)) && with.get(2).equal(&rows.get(3)));
        assert!(without.get(0).equal(&rows.get(3)));
    }

    /// dim 4 → h = 2, frequencies exp(0) = 1 and exp(−ln 10000) = 1e-4. For t = 2:
    /// [sin 2, sin 2e-4, cos 2, cos 2e-4] = [0.909297, 0.0002, −0.416147, 1.0].
    #[test]
    fn matches_hand_values() {
        let e = sinusoidal(&Tensor::from_slice(&[0i64, 2]), 4);
        let v = Vec::<f32>::try_from(&e.reshape([-1])).unwrap();
        let expected = [0.0, 0.0, 1.0, 1.0, 0.909_297_4, 0.000_2, -0.416_146_8, 1.0];
        for (a, b) in v.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
    }
}
