//! One run across several processes ("ranks"): libtorch's own collective engine, c10d, reached through
//! `src/libtorch_c10d.cpp` (tch has no distributed API). Rank 0 serves a `TCPStore` on the address and
//! port every rank is given; the ranks then form a process group, gloo for CPU tensors and NCCL for
//! CUDA tensors, and all-reduce or broadcast tensors in place.
//!
//! Who tells a process its rank: the runner (`DDPM_RANK`, `DDPM_WORLD_SIZE`, `DDPM_MASTER_ADDR`,
//! `DDPM_MASTER_PORT`), or, inside a Slurm step, Slurm itself (`SLURM_PROCID` for the rank; the sbatch
//! script exports the other three).
use anyhow::{bail, Context, Result};
use std::ffi::{c_char, c_int, c_void, CString};
use std::time::Duration;
use tch::{Kind, Tensor};

extern "C" {
    fn ddpm_c10d_backends() -> c_int;
    fn ddpm_c10d_join(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        size: c_int,
        timeout_ms: c_int,
        nccl: c_int,
        err: *mut c_char,
        len: c_int,
    ) -> *mut c_void;
    fn ddpm_c10d_free(group: *mut c_void);
    fn ddpm_c10d_allreduce(
        group: *mut c_void,
        tensors: *mut *mut c_void,
        n: c_int,
        op: c_int,
        err: *mut c_char,
        len: c_int,
    ) -> c_int;
    fn ddpm_c10d_broadcast(
        group: *mut c_void,
        tensors: *mut *mut c_void,
        n: c_int,
        root: c_int,
        err: *mut c_char,
        len: c_int,
    ) -> c_int;
}

/// The environment variables that place a process in a run's group.
pub const RANK: &str = "DDPM_RANK";
pub const WORLD_SIZE: &str = "DDPM_WORLD_SIZE";
pub const MASTER_ADDR: &str = "DDPM_MASTER_ADDR";
pub const MASTER_PORT: &str = "DDPM_MASTER_PORT";
/// CPU threads of this process (the runner splits the cores among a local run's ranks).
pub const THREADS: &str = "DDPM_THREADS";
/// Seconds a collective (and the rendezvous) may wait for the other ranks before it fails.
pub const TIMEOUT: &str = "DDPM_COLLECTIVE_TIMEOUT_S";
/// A killed rank closes its connections, which the others see at once; this bounds a rank that hangs.
pub const DEFAULT_TIMEOUT_S: u64 = 1800;
/// Gradients travel in buckets of this many bytes (torch DDP's default, 25 MiB).
pub const BUCKET_BYTES: i64 = 25 << 20;

/// Whether this build can form a group: gloo (CPU) and NCCL (CUDA).
pub fn backends() -> (bool, bool) {
    // SAFETY: reads two compile-time flags.
    let b = unsafe { ddpm_c10d_backends() };
    (b & 1 != 0, b & 2 != 0)
}

/// A process's place in its run's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub size: usize,
    pub addr: String,
    pub port: u16,
}

impl World {
    /// From the environment: None when no world size is set (a run of one process, no group).
    pub fn from_env() -> Result<Option<World>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<World>> {
        let number = |key: &str| -> Result<Option<usize>> {
            var(key).map(|v| v.trim().parse::<usize>().with_context(|| format!("{key}={v}: not a number"))).transpose()
        };
        // The runner sets it only above 1; a group of one (set by hand) exercises the collectives alone.
        let Some(size) = number(WORLD_SIZE)? else { return Ok(None) };
        if size == 0 {
            bail!("{WORLD_SIZE}=0: a group has at least one rank");
        }
        let rank = match number(RANK)? {
            Some(r) => r,
            None => number("SLURM_PROCID")?
                .with_context(|| format!("{WORLD_SIZE}={size} without {RANK} or SLURM_PROCID"))?,
        };
        if rank >= size {
            bail!("{RANK}={rank} is not below {WORLD_SIZE}={size}");
        }
        let addr = var(MASTER_ADDR).with_context(|| format!("{WORLD_SIZE}={size} without {MASTER_ADDR}"))?;
        let port = var(MASTER_PORT).with_context(|| format!("{WORLD_SIZE}={size} without {MASTER_PORT}"))?;
        let port = port.trim().parse::<u16>().with_context(|| format!("{MASTER_PORT}={port}: not a port"))?;
        Ok(Some(World { rank, size, addr, port }))
    }

    /// The environment that gives a process this place.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            (RANK, self.rank.to_string()),
            (WORLD_SIZE, self.size.to_string()),
            (MASTER_ADDR, self.addr.clone()),
            (MASTER_PORT, self.port.to_string()),
        ]
    }
}

/// A free TCP port on the loopback interface, for a local run's rendezvous.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("no free local port for the rendezvous")?;
    Ok(listener.local_addr()?.port())
}

pub fn timeout_from_env() -> Duration {
    let seconds = std::env::var(TIMEOUT).ok().and_then(|v| v.trim().parse::<u64>().ok());
    Duration::from_secs(seconds.unwrap_or(DEFAULT_TIMEOUT_S).max(1))
}

#[derive(Debug, Clone, Copy)]
pub enum Op {
    Sum,
    Max,
}

/// A process group: this rank's handle on c10d's backend.
pub struct Group {
    handle: *mut c_void,
    pub rank: usize,
    pub size: usize,
    /// NCCL (CUDA tensors) rather than gloo.
    pub nccl: bool,
}

// SAFETY: c10d's backends are used from one thread at a time here (the training loop's); the handle
// is only moved between threads (tests run one rank per thread).
unsafe impl Send for Group {}

fn error_buffer() -> Vec<c_char> {
    vec![0 as c_char; 2048]
}

fn error_text(buffer: &[c_char]) -> String {
    // SAFETY: the shim NUL-terminates what it writes into the zeroed buffer.
    unsafe { std::ffi::CStr::from_ptr(buffer.as_ptr()) }.to_string_lossy().trim().to_string()
}

impl Group {
    /// Joins the group of `world` (rank 0 serves the store and waits up to `timeout` for the others).
    pub fn join(world: &World, cuda: bool, timeout: Duration) -> Result<Group> {
        let host = CString::new(world.addr.clone()).context("address with a NUL byte")?;
        let mut err = error_buffer();
        let ms = timeout.as_millis().min(i32::MAX as u128) as c_int;
        // SAFETY: valid C string and buffer; the shim returns null on failure.
        let handle = unsafe {
            ddpm_c10d_join(
                host.as_ptr(),
                world.port as c_int,
                world.rank as c_int,
                world.size as c_int,
                ms,
                cuda as c_int,
                err.as_mut_ptr(),
                err.len() as c_int,
            )
        };
        if handle.is_null() {
            bail!(
                "rank {} of {} could not join the group at {}:{} ({}): {}",
                world.rank,
                world.size,
                world.addr,
                world.port,
                if cuda { "NCCL" } else { "gloo" },
                error_text(&err)
            );
        }
        Ok(Group { handle, rank: world.rank, size: world.size, nccl: cuda })
    }

    fn handles(tensors: &[&Tensor]) -> Vec<*mut c_void> {
        tensors.iter().map(|t| t.as_ptr() as *mut c_void).collect()
    }

    /// All-reduces each tensor in place (all in flight at once).
    pub fn all_reduce(&self, tensors: &[&Tensor], op: Op) -> Result<()> {
        let mut handles = Self::handles(tensors);
        let mut err = error_buffer();
        let op = match op {
            Op::Sum => 0,
            Op::Max => 1,
        };
        // SAFETY: the handles are live at::Tensor pointers for the call's duration.
        let rc = unsafe {
            ddpm_c10d_allreduce(
                self.handle,
                handles.as_mut_ptr(),
                handles.len() as c_int,
                op,
                err.as_mut_ptr(),
                err.len() as c_int,
            )
        };
        if rc != 0 {
            bail!(
                "rank {} of {}: a collective failed (another rank has stopped or hangs): {}",
                self.rank,
                self.size,
                error_text(&err)
            );
        }
        Ok(())
    }

    /// Broadcasts each tensor from rank `root` in place.
    pub fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<()> {
        let mut handles = Self::handles(tensors);
        let mut err = error_buffer();
        // SAFETY: as in `all_reduce`.
        let rc = unsafe {
            ddpm_c10d_broadcast(
                self.handle,
                handles.as_mut_ptr(),
                handles.len() as c_int,
                root as c_int,
                err.as_mut_ptr(),
                err.len() as c_int,
            )
        };
        if rc != 0 {
            bail!("rank {} of {}: a broadcast failed: {}", self.rank, self.size, error_text(&err));
        }
        Ok(())
    }

    /// Sums the gradients of `params` over the ranks, in buckets of at most `BUCKET_BYTES` (one
    /// flattened copy each, all in flight at once), and writes the sums back.
    pub fn sum_gradients(&self, params: &[Tensor]) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let grads: Vec<Tensor> = params.iter().map(|p| p.grad()).collect();
        if let Some(i) = grads.iter().position(|g| !g.defined()) {
            bail!("parameter {i} has no gradient on rank {}: every parameter must take part in the loss", self.rank);
        }
        let mut buckets: Vec<Vec<usize>> = vec![Vec::new()];
        let mut bytes = 0;
        for (i, g) in grads.iter().enumerate() {
            let size = g.numel() as i64 * g.kind().elt_size_in_bytes() as i64;
            if bytes > 0 && bytes + size > BUCKET_BYTES {
                buckets.push(Vec::new());
                bytes = 0;
            }
            buckets.last_mut().expect("a bucket").push(i);
            bytes += size;
        }
        let flat: Vec<Tensor> = buckets
            .iter()
            .map(|b| Tensor::cat(&b.iter().map(|&i| grads[i].reshape([-1])).collect::<Vec<_>>(), 0))
            .collect();
        self.all_reduce(&flat.iter().collect::<Vec<_>>(), Op::Sum)?;
        for (bucket, f) in buckets.iter().zip(&flat) {
            let mut offset = 0;
            for &i in bucket {
                let n = grads[i].numel() as i64;
                let mut g = grads[i].shallow_clone();
                g.copy_(&f.narrow(0, offset, n).view_as(&grads[i]));
                offset += n;
            }
        }
        Ok(())
    }

    /// Whether `flag` is set on any rank.
    pub fn any(&self, flag: bool, device: tch::Device) -> Result<bool> {
        let t = Tensor::from_slice(&[flag as i64]).to_device(device);
        self.all_reduce(&[&t], Op::Sum)?;
        Ok(t.int64_value(&[0]) > 0)
    }

    /// Rank 0's value of `value` on every rank.
    pub fn broadcast_i64(&self, value: i64, device: tch::Device) -> Result<i64> {
        let t = Tensor::from_slice(&[value]).to_device(device);
        self.broadcast(&[&t], 0)?;
        Ok(t.int64_value(&[0]))
    }

    /// The largest absolute difference between this rank's `tensors` and rank 0's, the same on every
    /// rank: 0 when the ranks hold the same weights.
    pub fn max_difference(&self, tensors: &[Tensor]) -> Result<f64> {
        let _guard = tch::no_grad_guard();
        if tensors.is_empty() {
            return Ok(0.0);
        }
        let mine = Tensor::cat(&tensors.iter().map(|t| t.reshape([-1]).to_kind(Kind::Float)).collect::<Vec<_>>(), 0);
        let first = mine.copy();
        self.broadcast(&[&first], 0)?;
        let d = (&mine - &first).abs().max().reshape([1]);
        self.all_reduce(&[&d], Op::Max)?;
        Ok(d.double_value(&[0]))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: the handle came from `ddpm_c10d_join` and is freed once.
        unsafe { ddpm_c10d_free(self.handle) }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn world(rank: usize, size: usize, port: u16) -> World {
        World { rank, size, addr: "127.0.0.1".into(), port }
    }

    /// Runs `f(group)` on `size` ranks, one thread each, and returns their results in rank order.
    pub(crate) fn on_ranks<T: Send>(size: usize, f: impl Fn(Group) -> T + Sync) -> Vec<T> {
        let port = free_port().unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..size)
                .map(|r| {
                    let f = &f;
                    s.spawn(move || f(Group::join(&world(r, size, port), false, Duration::from_secs(30)).unwrap()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn the_world_comes_from_the_runner_or_from_slurm() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(World::from_vars(vars(&[])).unwrap(), None);
        assert!(World::from_vars(vars(&[(WORLD_SIZE, "1")])).is_err(), "a group of one still needs its address");
        assert!(World::from_vars(vars(&[(WORLD_SIZE, "0")])).is_err());
        let full = [(WORLD_SIZE, "2"), (RANK, "1"), (MASTER_ADDR, "node7"), (MASTER_PORT, "29500")];
        let w = World::from_vars(vars(Box::leak(Box::new(full)))).unwrap().unwrap();
        assert_eq!(w, World { rank: 1, size: 2, addr: "node7".into(), port: 29500 });
        let slurm = [(WORLD_SIZE, "4"), ("SLURM_PROCID", "3"), (MASTER_ADDR, "n1"), (MASTER_PORT, "1")];
        assert_eq!(World::from_vars(vars(Box::leak(Box::new(slurm)))).unwrap().unwrap().rank, 3);
        let bad = [(WORLD_SIZE, "2"), (RANK, "2"), (MASTER_ADDR, "n1"), (MASTER_PORT, "1")];
        let err = World::from_vars(vars(Box::leak(Box::new(bad)))).unwrap_err().to_string();
        assert!(err.contains("DDPM_RANK=2 is not below DDPM_WORLD_SIZE=2"), "{err}");
        let no_port = [(WORLD_SIZE, "2"), (RANK, "0"), (MASTER_ADDR, "n1")];
        assert!(World::from_vars(vars(Box::leak(Box::new(no_port)))).unwrap_err().to_string().contains(MASTER_PORT));
    }

    /// gloo through the shim built against Debian's gloo headers, run by the wheel's gloo: sums,
    /// maxima and broadcasts over three ranks equal the values worked out by hand.
    #[test]
    fn collectives_over_three_ranks() {
        let out = on_ranks(3, |g| {
            let r = g.rank as f64;
            let a = Tensor::from_slice(&[r, 10.0 * r, 1.5]);
            let b = Tensor::from_slice(&[r * r]);
            g.all_reduce(&[&a, &b], Op::Sum).unwrap();
            let m = Tensor::from_slice(&[r, -r]);
            g.all_reduce(&[&m], Op::Max).unwrap();
            let c = Tensor::from_slice(&[r + 7.0]);
            g.broadcast(&[&c], 0).unwrap();
            let any = g.any(g.rank == 2, tch::Device::Cpu).unwrap();
            let none = g.any(false, tch::Device::Cpu).unwrap();
            (
                Vec::<f64>::try_from(&a).unwrap(),
                b.double_value(&[0]),
                Vec::<f64>::try_from(&m).unwrap(),
                c.double_value(&[0]),
                any,
                none,
            )
        });
        for o in out {
            assert_eq!(o.0, vec![3.0, 30.0, 4.5]);
            assert_eq!(o.1, 5.0);
            assert_eq!(o.2, vec![2.0, 0.0]);
            assert_eq!(o.3, 7.0);
            assert!(o.4 && !o.5);
        }
    }

    /// Gradients summed in buckets: with a bucket smaller than one tensor each goes alone, and the
    /// sums land back in the right parameters.
    #[test]
    fn gradients_are_summed_in_place() {
        let out = on_ranks(2, |g| {
            let r = g.rank as f64 + 1.0;
            let params: Vec<Tensor> = [3i64, 100_000, 5]
                .iter()
                .map(|&n| Tensor::zeros([n], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true))
                .collect();
            let loss = params
                .iter()
                .enumerate()
                .map(|(i, p)| (p * (r * (i as f64 + 1.0))).sum(Kind::Float))
                .fold(Tensor::from(0f32), |a, b| a + b);
            loss.backward();
            g.sum_gradients(&params).unwrap();
            params.iter().map(|p| p.grad().mean(Kind::Float).double_value(&[])).collect::<Vec<_>>()
        });
        for o in out {
            // (1 + 2) · (i + 1)
            assert_eq!(o, vec![3.0, 6.0, 9.0]);
        }
    }

    /// A rank that is gone makes the others' next collective fail at once (its connections close),
    /// not at the timeout.
    #[test]
    fn a_departed_rank_fails_the_next_collective() {
        let port = free_port().unwrap();
        let started = std::time::Instant::now();
        let errors = std::thread::scope(|s| {
            let a = s.spawn(|| {
                let g = Group::join(&world(0, 2, port), false, Duration::from_secs(120)).unwrap();
                let t = Tensor::ones([4], (Kind::Float, tch::Device::Cpu));
                g.all_reduce(&[&t], Op::Sum).unwrap();
                std::thread::sleep(Duration::from_millis(300));
                g.all_reduce(&[&t], Op::Sum).err().map(|e| e.to_string())
            });
            let b = s.spawn(|| {
                let g = Group::join(&world(1, 2, port), false, Duration::from_secs(120)).unwrap();
                let t = Tensor::ones([4], (Kind::Float, tch::Device::Cpu));
                g.all_reduce(&[&t], Op::Sum).unwrap();
                drop(g);
            });
            b.join().unwrap();
            a.join().unwrap()
        });
        let err = errors.expect("the second collective fails");
        assert!(err.contains("another rank has stopped"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    }
}
