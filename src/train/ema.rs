//! An exponential moving average of the weights (Ho et al. use decay 0.9999), used for sampling and
//! evaluation. With warm-up the decay at update n is min(decay, (1 + n)/(10 + n)), as TensorFlow's
//! `ExponentialMovingAverage(num_updates=n)`, so early averages are not dominated by the random
//! initialisation. Buffers that are not trained (BatchNorm's running statistics) are copied.
use std::collections::HashMap;
use tch::{nn, Tensor};

pub struct Ema {
    decay: f64,
    warmup: bool,
    /// Shadow copies of every variable, by name.
    pub shadow: Vec<(String, Tensor)>,
    trainable: Vec<bool>,
}

impl Ema {
    pub fn new(vs: &nn::VarStore, decay: f64, warmup: bool) -> Self {
        let trainable_ptrs: std::collections::HashSet<_> =
            vs.trainable_variables().iter().map(|t| t.data_ptr()).collect();
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let trainable = vars.iter().map(|(_, t)| trainable_ptrs.contains(&t.data_ptr())).collect();
        let shadow = vars.into_iter().map(|(n, t)| (n, t.detach().copy())).collect();
        Self { decay, warmup, shadow, trainable }
    }

    /// The decay applied at update `n` (counting from 0).
    pub fn decay_at(&self, n: i64) -> f64 {
        if self.warmup {
            self.decay.min((1.0 + n as f64) / (10.0 + n as f64))
        } else {
            self.decay
        }
    }

    /// shadow ← d·shadow + (1 − d)·weights for trained variables; buffers are copied. Both with
    /// libtorch's multi-tensor kernels (one or two launches in all; on the CPU bitwise the
    /// per-tensor lerp and copy).
    pub fn update(&mut self, vs: &nn::VarStore, n: i64) {
        let d = self.decay_at(n);
        let vars = vs.variables();
        let (mut trained, mut trained_w, mut buffers, mut buffers_w) = (vec![], vec![], vec![], vec![]);
        for ((name, s), &is_trained) in self.shadow.iter().zip(&self.trainable) {
            let (targets, sources) =
                if is_trained { (&mut trained, &mut trained_w) } else { (&mut buffers, &mut buffers_w) };
            targets.push(s.shallow_clone());
            sources.push(&vars[name]);
        }
        crate::foreach::lerp_(&trained, &trained_w, 1.0 - d);
        crate::foreach::copy_(&buffers, &buffers_w);
    }

    /// Writes the averaged weights into `target` (a VarStore of the same model).
    pub fn copy_to(&self, target: &nn::VarStore) {
        let vars = target.variables();
        tch::no_grad(|| {
            for (name, s) in &self.shadow {
                vars[name].shallow_clone().copy_(s);
            }
        });
    }

    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.shadow.iter().map(|(n, t)| (format!("ema.{n}"), t.shallow_clone())).collect()
    }

    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> anyhow::Result<()> {
        for (name, s) in &mut self.shadow {
            let src =
                tensors.get(&format!("ema.{name}")).ok_or_else(|| anyhow::anyhow!("checkpoint lacks ema.{name}"))?;
            tch::no_grad(|| s.copy_(src));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The multi-tensor update against the per-tensor loop it replaced (lerp of each trained variable,
    /// copy of each buffer), over 50 updates of changing weights: bitwise equal on the CPU.
    #[test]
    fn multi_tensor_update_equals_the_per_tensor_loop_bitwise() {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let w = root.var("w", &[3, 4], nn::Init::Randn { mean: 0.0, stdev: 1.0 });
        let b = root.var("b", &[4], nn::Init::Const(0.5));
        let running = root.zeros_no_train("running", &[4]);
        let mut ema = Ema::new(&vs, 0.999, true);
        let mut reference: Vec<(String, Tensor)> = ema.shadow.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
        for n in 0..50 {
            tch::no_grad(|| {
                let _ = w.shallow_clone().g_add_(&(w.sin() * 0.1));
                let _ = b.shallow_clone().g_add_scalar_(0.01 * n as f64);
                let _ = running.shallow_clone().g_add_scalar_(1.0);
            });
            ema.update(&vs, n);
            let d = ema.decay_at(n);
            let vars = vs.variables();
            tch::no_grad(|| {
                for (name, s) in &mut reference {
                    if name == "running" {
                        s.copy_(&vars[name.as_str()]);
                    } else {
                        let _ = s.lerp_(&vars[name.as_str()], 1.0 - d);
                    }
                }
            });
        }
        for ((name, a), (_, r)) in ema.shadow.iter().zip(&reference) {
            assert!(a.equal(r), "{name}");
        }
        assert_eq!(ema.shadow.iter().find(|(n, _)| n == "running").unwrap().1.double_value(&[0]), 50.0);
    }

    /// Warm-up decays (1 + n)/(10 + n): 0.1, 2/11, 3/12; capped at the configured decay. With a weight
    /// that jumps from 0 to 1, the shadow after three updates is 1 − 0.1·(2/11)·(3/12) = 0.995455.
    #[test]
    fn warmup_and_average() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[1], nn::Init::Const(0.0));
        let mut ema = Ema::new(&vs, 0.9999, true);
        assert_eq!(ema.decay_at(0), 0.1);
        assert!((ema.decay_at(1) - 2.0 / 11.0).abs() < 1e-15);
        assert_eq!(ema.decay_at(1_000_000), 0.9999);
        let _ = tch::no_grad(|| w.shallow_clone().fill_(1.0));
        for n in 0..3 {
            ema.update(&vs, n);
        }
        let s = ema.shadow[0].1.double_value(&[0]);
        assert!((s - (1.0 - 0.1 * (2.0 / 11.0) * (3.0 / 12.0))).abs() < 1e-6, "{s}");
        let target = nn::VarStore::new(Device::Cpu);
        let _t = target.root().var("w", &[1], nn::Init::Const(0.0));
        ema.copy_to(&target);
        assert!((target.variables()["w"].double_value(&[0]) - s).abs() < 1e-7);
        assert_eq!(ema.state()[0].0, "ema.w");
    }
}
