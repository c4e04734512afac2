//! `ddpm models`: the registered models with their parameter counts.
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 1)]
    pub channels: i64,
    #[arg(long, default_value_t = 32)]
    pub image_size: i64,
}

pub fn exec(a: Args) -> Result<bool> {
    let (channels, image_size) = (a.channels, a.image_size);
    println!("models for {channels}-channel {image_size}x{image_size} images (default keys; see docs/experiments.md for options):");
    for e in ddpm::models::catalogue(channels, image_size) {
        let params = match e.parameters {
            Ok(n) => format!("{n:>12}"),
            Err(why) => format!("{:>12}  ({why})", "-"),
        };
        println!("  {:12} {params}  sides: {}", e.name, e.sizes);
    }
    Ok(true)
}
