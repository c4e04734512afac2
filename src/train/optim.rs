//! Adam (Kingma & Ba 2015) with its state in tensors we own, so that checkpoints can save and restore
//! it (tch's optimizers keep their state inside libtorch). The update is PyTorch's single-tensor Adam:
//! m ← m + (1 − β₁)(g − m), v ← v + (1 − β₂)(g² − v),
//! θ ← θ − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε),
//! done for every parameter at once with libtorch's multi-tensor kernels (`crate::foreach`): nine
//! launches per step in all on a GPU, not nine per parameter tensor; on the CPU bitwise the
//! per-tensor loop (`tests::multi_tensor_equals_the_per_tensor_loop_bitwise`).
use crate::config::LrDecay;
use tch::{nn, Tensor};

/// The learning rate of update `n` (1-based) of `steps`: linear warm-up to `lr` over `warmup` updates,
/// then constant or cosine decay to 0 at update `steps`.
pub fn lr_at(lr: f64, warmup: usize, decay: LrDecay, n: usize, steps: usize) -> f64 {
    if n < warmup {
        return lr * n as f64 / warmup as f64;
    }
    match decay {
        LrDecay::Constant => lr,
        LrDecay::Cosine if steps <= warmup => lr,
        LrDecay::Cosine => {
            let progress = (n - warmup) as f64 / (steps - warmup) as f64;
            lr * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
        }
    }
}

pub struct Adam {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// Trainable variables in a fixed order (sorted by name).
    params: Vec<(String, Tensor)>,
    /// The same tensors without their names, as the multi-tensor kernels take them.
    tensors: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// Updates done so far.
    pub step: i64,
}

impl Adam {
    /// PyTorch's defaults: β = (0.9, 0.999), ε = 1e-8, no weight decay.
    pub fn new(vs: &nn::VarStore, lr: f64) -> Self {
        let trainable: std::collections::HashSet<_> = vs.trainable_variables().iter().map(|t| t.data_ptr()).collect();
        let mut params: Vec<(String, Tensor)> =
            vs.variables().into_iter().filter(|(_, t)| trainable.contains(&t.data_ptr())).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |p: &[(String, Tensor)]| p.iter().map(|(_, t)| t.zeros_like()).collect();
        Self {
            lr,
            tensors: params.iter().map(|(_, t)| t.shallow_clone()).collect(),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            exp_avg: zeros(&params),
            exp_avg_sq: zeros(&params),
            params,
            step: 0,
        }
    }

    /// The trainable tensors, in the fixed order of the update (sorted by name).
    pub fn params(&self) -> &[Tensor] {
        &self.tensors
    }

    /// The learning rate of the next updates.
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    pub fn zero_grad(&mut self) {
        crate::foreach::zero_grad(&self.tensors);
    }

    pub fn backward_step(&mut self, loss: &Tensor) {
        self.zero_grad();
        loss.backward();
        self.step();
    }

    /// ‖g‖₂ over all gradients, on the device (read it back only when it is logged).
    pub fn grad_norm(&self) -> Tensor {
        let squares: Vec<Tensor> = self
            .params
            .iter()
            .map(|(_, p)| p.grad())
            .filter(|g| g.defined())
            .map(|g| g.square().sum(tch::Kind::Float))
            .collect();
        Tensor::stack(&squares, 0).sum(tch::Kind::Float).sqrt()
    }

    pub fn step(&mut self) {
        self.step += 1;
        let t = self.step as f64;
        let step_size = self.lr / (1.0 - self.beta1.powf(t));
        let bias_correction2_sqrt = (1.0 - self.beta2.powf(t)).sqrt();
        crate::foreach::adam(
            &self.tensors,
            &self.exp_avg,
            &self.exp_avg_sq,
            step_size,
            self.beta1,
            self.beta2,
            self.eps,
            bias_correction2_sqrt,
        );
    }

    /// The moment estimates, named `adam.exp_avg.<param>` and `adam.exp_avg_sq.<param>`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for ((name, _), (m, v)) in self.params.iter().zip(self.exp_avg.iter().zip(&self.exp_avg_sq)) {
            out.push((format!("adam.exp_avg.{name}"), m.shallow_clone()));
            out.push((format!("adam.exp_avg_sq.{name}"), v.shallow_clone()));
        }
        out
    }

    /// Restores the moment estimates saved by `state` and the update count.
    pub fn load_state(&mut self, tensors: &std::collections::HashMap<String, Tensor>, step: i64) -> anyhow::Result<()> {
        for ((name, _), (m, v)) in self.params.iter().zip(self.exp_avg.iter_mut().zip(self.exp_avg_sq.iter_mut())) {
            for (prefix, dst) in [("adam.exp_avg.", m), ("adam.exp_avg_sq.", v)] {
                let src = tensors
                    .get(&format!("{prefix}{name}"))
                    .ok_or_else(|| anyhow::anyhow!("checkpoint lacks {prefix}{name}"))?;
                tch::no_grad(|| dst.copy_(src));
            }
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Two Adam steps (lr 0.1) on f(w) = Σ wᵢ² from w = (1, −2), worked by hand: g = 2w = (2, −4);
    /// step 1: m = 0.1g, v = 0.001g², m̂ = g, v̂ = g², update lr·g/(|g| + ε) = 0.1·sign(g), so
    /// w = (0.9, −1.9). Step 2: g = (1.8, −3.8); m = 0.09·(2, −4) + 0.1·(1.8, −3.8) = (0.36, −0.74),
    /// m̂ = m/0.19 = (1.894737, −3.894737); v = 0.999·0.001·(4, 16) + 0.001·(3.24, 14.44) =
    /// (0.007236, 0.030424), v̂ = v/0.001999 = (3.619810, 15.219610), √v̂ = (1.902580, 3.901232);
    /// update 0.1·m̂/√v̂ = (0.0995878, −0.0998335), so w = (0.8004122, −1.8001665).
    #[test]
    fn two_steps_match_hand_computation() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2], nn::Init::Const(0.0));
        tch::no_grad(|| w.shallow_clone().copy_(&Tensor::from_slice(&[1f32, -2.0])));
        let mut adam = Adam::new(&vs, 0.1);
        for _ in 0..2 {
            adam.backward_step(&w.square().sum(Kind::Float));
        }
        let got = Vec::<f32>::try_from(&w).unwrap();
        assert!((got[0] - 0.800_412_2).abs() < 1e-6 && (got[1] + 1.800_166_5).abs() < 1e-6, "{got:?}");
        assert_eq!(adam.step, 2);
    }

    /// Warm-up and decay at values worked by hand: lr 1e-3, 10 warm-up updates of 110.
    #[test]
    fn learning_rate_schedule() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-15;
        assert!(close(lr_at(1e-3, 10, LrDecay::Constant, 1, 110), 1e-4));
        assert!(close(lr_at(1e-3, 10, LrDecay::Constant, 5, 110), 5e-4));
        assert!(close(lr_at(1e-3, 10, LrDecay::Constant, 10, 110), 1e-3));
        assert!(close(lr_at(1e-3, 10, LrDecay::Constant, 110, 110), 1e-3));
        assert!(close(lr_at(1e-3, 0, LrDecay::Constant, 1, 110), 1e-3));
        // Cosine: (1 + cos(π·p))/2 is 1 at p = 0, 1/2 at p = 1/2, (2 + √2)/4 at p = 1/4, 0 at p = 1.
        assert!(close(lr_at(1e-3, 10, LrDecay::Cosine, 10, 110), 1e-3));
        assert!(close(lr_at(1e-3, 10, LrDecay::Cosine, 35, 110), 1e-3 * (2.0 + 2f64.sqrt()) / 4.0));
        assert!(close(lr_at(1e-3, 10, LrDecay::Cosine, 60, 110), 5e-4));
        assert!(close(lr_at(1e-3, 10, LrDecay::Cosine, 110, 110), 0.0));
        assert!(close(lr_at(1e-3, 0, LrDecay::Cosine, 50, 100), 5e-4));
    }

    /// Today's multi-tensor step against the per-tensor loop it replaced (each parameter: lerp, square,
    /// lerp, sqrt, div, add, div, mul, sub), over 100 steps of a small convolutional network with a
    /// parameter that gets no gradient: on the CPU the weights and both moments are bitwise equal.
    #[test]
    fn multi_tensor_equals_the_per_tensor_loop_bitwise() {
        fn per_tensor_step(adam: &mut Adam) {
            adam.step += 1;
            let t = adam.step as f64;
            let step_size = adam.lr / (1.0 - adam.beta1.powf(t));
            let bias_correction2_sqrt = (1.0 - adam.beta2.powf(t)).sqrt();
            tch::no_grad(|| {
                for ((_, p), (m, v)) in
                    adam.params.iter_mut().zip(adam.exp_avg.iter_mut().zip(adam.exp_avg_sq.iter_mut()))
                {
                    let g = p.grad();
                    if !g.defined() {
                        continue;
                    }
                    let _ = m.lerp_(&g, 1.0 - adam.beta1);
                    let _ = v.lerp_(&g.square(), 1.0 - adam.beta2);
                    let denom = v.sqrt() / bias_correction2_sqrt + adam.eps;
                    let _ = p.f_sub_(&(&*m / denom * step_size)).expect("parameter update");
                }
            });
        }
        let run = |multi: bool| {
            tch::manual_seed(7);
            let vs = nn::VarStore::new(Device::Cpu);
            let root = vs.root();
            let conv = nn::conv2d(&root / "conv", 2, 4, 3, Default::default());
            let lin = nn::linear(&root / "lin", 4 * 6 * 6, 3, Default::default());
            let _unused = root.var("unused", &[5], nn::Init::Const(1.0));
            let x = Tensor::randn([16, 2, 8, 8], (Kind::Float, Device::Cpu));
            let y = Tensor::randn([16, 3], (Kind::Float, Device::Cpu));
            let mut adam = Adam::new(&vs, 3e-3);
            for step in 1..=100 {
                adam.set_lr(lr_at(3e-3, 10, LrDecay::Cosine, step, 100));
                adam.zero_grad();
                let out = x.apply(&conv).relu().flatten(1, -1).apply(&lin);
                (out - &y).square().mean(Kind::Float).backward();
                if multi {
                    adam.step();
                } else {
                    per_tensor_step(&mut adam);
                }
            }
            let mut all: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            all.extend(adam.state());
            all.sort_by(|a, b| a.0.cmp(&b.0));
            all
        };
        let (multi, single) = (run(true), run(false));
        assert_eq!(multi.len(), single.len());
        for ((name, a), (_, b)) in multi.iter().zip(&single) {
            assert!(a.equal(b), "{name} differs: max |diff| {}", (a - b).abs().max().double_value(&[]));
        }
        let moved = multi.iter().find(|(n, _)| n == "conv.weight").unwrap();
        assert!(moved.1.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        let unused = multi.iter().find(|(n, _)| n == "unused").unwrap();
        assert!(unused.1.equal(&Tensor::ones([5], (Kind::Float, Device::Cpu))), "no gradient: untouched");
    }

    /// The same five updates as libtorch's own Adam (tch's `nn::Adam`), which matched PyTorch's
    /// Python Adam to 8 digits when the blog model was checked against a PyTorch replica.
    #[test]
    fn matches_libtorch_adam() {
        use tch::nn::OptimizerConfig;
        let run = |ours: bool| {
            tch::manual_seed(4);
            let vs = nn::VarStore::new(Device::Cpu);
            let lin = nn::linear(vs.root() / "l", 5, 3, Default::default());
            let x = Tensor::randn([8, 5], (Kind::Float, Device::Cpu));
            let y = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
            let loss = |l: &nn::Linear| (x.apply(l) - &y).square().mean(Kind::Float);
            if ours {
                let mut opt = Adam::new(&vs, 1e-2);
                for _ in 0..5 {
                    opt.backward_step(&loss(&lin));
                }
            } else {
                let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
                for _ in 0..5 {
                    opt.backward_step(&loss(&lin));
                }
            }
            lin.ws.copy()
        };
        let diff = (run(true) - run(false)).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{diff}");
    }
}
