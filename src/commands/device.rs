//! `ddpm device`: the device `--device auto` picks and what CUDA libtorch sees.
use anyhow::Result;

pub fn exec() -> Result<bool> {
    println!("device: {}", ddpm::device::describe(tch::Device::cuda_if_available()));
    let (gloo, nccl) = ddpm::distributed::backends();
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!("collectives (train.processes > 1): gloo {}, NCCL {}", yes(gloo), yes(nccl));
    println!("cuda available: {}, devices: {}", tch::Cuda::is_available(), tch::Cuda::device_count());
    Ok(true)
}
