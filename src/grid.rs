//! Sample grids as PNG, laid out like torchvision's `make_grid` (rows of `ncol` images with
//! `padding` pixels of black between and around them).
use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};

/// An 8-bit image: `channels` is 1 (grey) or 3 (RGB), pixels interleaved row by row.
#[derive(Debug, Clone)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub pixels: Vec<u8>,
}

/// Maps a batch `[N, C, H, W]` in [-1, 1] to bytes: round((x + 1) · 127.5), clamped to 0..=255.
pub fn to_u8(images: &Tensor) -> Tensor {
    ((images.to_device(Device::Cpu).to_kind(Kind::Float) + 1.0) * 127.5).round().clamp(0.0, 255.0).to_kind(Kind::Uint8)
}

/// Tiles a batch `[N, C, H, W]` (values in [-1, 1]) into one image, `ncol` images per row.
pub fn make_grid(images: &Tensor, ncol: usize, padding: usize) -> Result<Image> {
    let size = images.size();
    ensure!(size.len() == 4, "expected a batch [N, C, H, W], got shape {size:?}");
    let (n, c, h, w) = (size[0] as usize, size[1] as usize, size[2] as usize, size[3] as usize);
    ensure!(c == 1 || c == 3, "images must have 1 or 3 channels, got {c}");
    let bytes = Vec::<u8>::try_from(&to_u8(images).contiguous().view(-1))?;
    let ncol = ncol.min(n).max(1);
    let nrow = n.div_ceil(ncol);
    let (gw, gh) = (ncol * (w + padding) + padding, nrow * (h + padding) + padding);
    let mut pixels = vec![0u8; gw * gh * c];
    for i in 0..n {
        let (x0, y0) = (padding + (i % ncol) * (w + padding), padding + (i / ncol) * (h + padding));
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    pixels[((y0 + y) * gw + x0 + x) * c + ch] = bytes[((i * c + ch) * h + y) * w + x];
                }
            }
        }
    }
    Ok(Image { width: gw as u32, height: gh as u32, channels: c as u32, pixels })
}

/// The reverse process of the first `rows` samples: one row per sample, one column per recorded
/// step (in the order recorded, x_T first).
pub fn trajectory_grid(trajectory: &[(usize, Tensor)], rows: i64) -> Result<Image> {
    ensure!(!trajectory.is_empty(), "no trajectory steps were recorded");
    let rows = rows.min(trajectory[0].1.size()[0]);
    let frames: Vec<Tensor> = trajectory.iter().map(|(_, x)| x.narrow(0, 0, rows)).collect();
    // [steps, rows, C, H, W] → [rows, steps, C, H, W]: row-major tiles are a sample's steps.
    let tiles = Tensor::stack(&frames, 0).transpose(0, 1).flatten(0, 1);
    make_grid(&tiles, trajectory.len(), 2)
}

impl Image {
    /// The same pixels in one channel when every RGB pixel is grey (r = g = b): a third of the bytes
    /// to store, and a PNG about half the size (the analysis' sample rows of MNIST-like data).
    pub fn greyed(self) -> Image {
        if self.channels != 3 || !self.pixels.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]) {
            return self;
        }
        let pixels = self.pixels.chunks_exact(3).map(|p| p[0]).collect();
        Image { channels: 1, pixels, ..self }
    }

    pub fn to_png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, self.width, self.height);
        enc.set_color(if self.channels == 1 { png::ColorType::Grayscale } else { png::ColorType::Rgb });
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()?.write_image_data(&self.pixels)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grey RGB pixels become one channel with the same values; one coloured pixel keeps all three.
    #[test]
    fn an_all_grey_image_is_stored_in_one_channel() {
        let grey = Image { width: 2, height: 1, channels: 3, pixels: vec![7, 7, 7, 200, 200, 200] };
        let g = grey.greyed();
        assert_eq!((g.channels, g.pixels.as_slice()), (1, [7u8, 200].as_slice()));
        let coloured = Image { width: 2, height: 1, channels: 3, pixels: vec![7, 7, 7, 200, 200, 201] };
        assert_eq!(coloured.clone().greyed().pixels, coloured.pixels);
    }

    /// Two 1×2×2 images, −1 → 0, 1 → 255, 0 → round(127.5) = 128; laid out side by side with
    /// padding 1: width 2·(2+1)+1 = 7, height 4.
    #[test]
    fn grid_layout_and_pixel_mapping() {
        let imgs = Tensor::from_slice(&[-1f32, 1., 0., 1., 1., 1., 1., 1.]).reshape([2, 1, 2, 2]);
        let g = make_grid(&imgs, 8, 1).unwrap();
        assert_eq!((g.width, g.height, g.channels), (7, 4, 1));
        assert_eq!(&g.pixels[7 + 1..7 + 3], &[0, 255]);
        assert_eq!(&g.pixels[2 * 7 + 1..2 * 7 + 3], &[128, 255]);
        assert_eq!(g.pixels[7 + 3], 0, "padding column between images");
        assert_eq!(&g.pixels[7 + 4..7 + 6], &[255, 255]);
        let png = g.to_png().unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
