//! Random streams. libtorch has one global generator per device (and tch exposes no way to save or
//! restore its state), so instead of checkpointing generator states, every stream of draws starts by
//! seeding the generators from (run seed, stream name, index):
//! - `init`: the weights; `epoch`/e: the data order of epoch e; `step`/k: the timesteps, noise and
//!   dropout of training step k (see `train::draws`); `rank`/(k·N + r): dropout of rank r of N at step
//!   k in a run of several processes (`train::per_rank_stream`); `sample`: sampling; `forward-strip`: the
//!   forward-process figure; `eval-sample-<s>`/b: batch b of an evaluation's samples (s = 0 for the
//!   final evaluation, 1 during training); `eval-kid`: KID's subsets; `eval-bpd`: the bound's noise;
//!   each with `-r<r>` appended under evaluation replicate r > 0 (`replicate_stream`).
//!
//! A run resumed at step k therefore draws exactly what it would have drawn uninterrupted, changing
//! the evaluation does not change training, and two runs with the same seed draw the same batches,
//! timesteps and noise (common random numbers), so their paired differences measure the variant.
use sha2::{Digest, Sha256};

/// The seed of a stream: the first 63 bits of sha256("<run seed>/<stream>/<index>").
pub fn stream_seed(run_seed: u64, stream: &str, index: u64) -> i64 {
    let digest = Sha256::digest(format!("{run_seed}/{stream}/{index}").as_bytes());
    (u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) >> 1) as i64
}

/// The name of an evaluation stream under evaluation replicate r (`eval.replicate`): the stream
/// itself for r = 0, so every evaluation made before replicates existed draws what it drew;
/// `<stream>-r<r>` otherwise.
pub fn replicate_stream(stream: &str, replicate: usize) -> String {
    if replicate == 0 {
        stream.to_string()
    } else {
        format!("{stream}-r{replicate}")
    }
}

/// Seeds libtorch's generators (CPU and every CUDA device) for a stream.
pub fn reseed(run_seed: u64, stream: &str, index: u64) {
    tch::manual_seed(stream_seed(run_seed, stream, index));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn streams_are_reproducible_and_distinct() {
        assert_eq!(stream_seed(0, "step", 5), stream_seed(0, "step", 5));
        assert_ne!(stream_seed(0, "step", 5), stream_seed(0, "step", 6));
        assert_ne!(stream_seed(0, "step", 5), stream_seed(1, "step", 5));
        assert_ne!(stream_seed(0, "step", 5), stream_seed(0, "epoch", 5));
        assert!(stream_seed(7, "init", 0) >= 0);
        let draw = || {
            reseed(3, "step", 9);
            Tensor::randn([4], (Kind::Float, Device::Cpu))
        };
        assert_eq!(Vec::<f32>::try_from(draw()).unwrap(), Vec::<f32>::try_from(draw()).unwrap());
    }
}
