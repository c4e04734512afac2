//! Line charts as PNG, drawn with plotters into a pixel buffer. Text uses DejaVu Sans embedded in the
//! binary (assets/fonts, Bitstream Vera licence), so charts need no system fonts.
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("embedded font loads"));
    });
}

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Draws the series as lines on linear axes spanning their data, with a legend; returns PNG bytes.
pub fn line_chart_png(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    size: (u32, u32),
) -> Result<Vec<u8>> {
    register_font();
    let (w, h) = size;
    let mut pixels = vec![255u8; (w * h * 3) as usize];
    let bounds = |f: fn(&(f64, f64)) -> f64| {
        let values = series.iter().flat_map(|s| s.points.iter().map(f));
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    let (x0, x1) = bounds(|p| p.0);
    let (y0, y1) = bounds(|p| p.1);
    let pad = ((y1 - y0) * 0.03).max(1e-9);
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing the chart `{title}`: {e}");
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, s) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba().stroke_width(2);
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), color))
                .map_err(|e| err(&e))?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    let image = crate::eval::grid::Image { width: w, height: h, channels: 3, pixels };
    image.to_png()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_with_lines_in_the_series_colours() {
        let series = vec![
            Series { name: "up".into(), points: (0..=10).map(|i| (i as f64, i as f64)).collect() },
            Series { name: "down".into(), points: (0..=10).map(|i| (i as f64, 10.0 - i as f64)).collect() },
        ];
        let png = line_chart_png("t", "x", "y", &series, (320, 240)).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        assert_eq!((reader.info().width, reader.info().height), (320, 240));
        let first = Palette99::pick(0).to_rgba();
        let hits = buf.chunks(3).filter(|p| p[0] == first.0 && p[1] == first.1 && p[2] == first.2).count();
        assert!(hits > 100, "the first series is drawn ({hits} pixels of its colour)");
    }
}
