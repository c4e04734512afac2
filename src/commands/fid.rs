//! `ddpm fid A B`: FID and KID between two image sets (folders of PNGs or dataset splits).
use anyhow::Result;
use ddpm::eval::fid::{frechet_distance, kid};
use ddpm::eval::images::ImageSet;
use ddpm::eval::inception::Inception;
use ddpm::eval::reference::{dataset_stats, set_stats};

#[derive(clap::Args)]
pub struct Args {
    pub a: String,
    pub b: String,
    /// KID: subsets and subset size.
    #[arg(long, default_value_t = 100)]
    pub kid_subsets: usize,
    #[arg(long, default_value_t = 1000)]
    pub kid_subset_size: usize,
    /// Images per Inception call.
    #[arg(long, default_value_t = 50)]
    pub batch: i64,
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// `ddpm fid A B`.
pub fn exec(args: Args) -> Result<bool> {
    let (a, b, subsets, subset_size, batch) =
        (args.a.as_str(), args.b.as_str(), args.kid_subsets, args.kid_subset_size, args.batch);
    let device = args.device.as_str();
    let device = ddpm::device::parse(device)?;
    let data_dir = ddpm::data::data_dir();
    let mut net = Inception::load(&data_dir, device)?;
    net.batch = batch.max(1);
    let started = std::time::Instant::now();
    let mut stats = Vec::new();
    for text in [a, b] {
        let set = ImageSet::parse(text)?;
        let s = match set {
            ImageSet::Dataset { .. } => dataset_stats(&set, &net, &data_dir, &mut |l| eprintln!("{l}"))?.0,
            ImageSet::Folder(_) => set_stats(&set, &net, &data_dir)?,
        };
        eprintln!("{}: {} images", set.describe(), s.gaussian.n);
        stats.push(s);
    }
    let d = frechet_distance(&stats[0].gaussian, &stats[1].gaussian);
    ddpm::rng::reseed(0, "fid-kid", 0);
    let k = kid(&stats[0].features, &stats[1].features, subsets, subset_size);
    println!("FID  {:.4}", d.fid);
    println!("KID  {:.6} ± {:.6}  ({} subsets of {})", k.mean, k.std, k.subsets, k.subset_size);
    println!(
        "sets: {} ({} images) vs {} ({} images); {} negative eigenvalues clipped; {:.1}s",
        a,
        stats[0].gaussian.n,
        b,
        stats[1].gaussian.n,
        d.negative_eigenvalues,
        started.elapsed().as_secs_f64()
    );
    Ok(true)
}
