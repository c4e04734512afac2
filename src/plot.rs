//! Charts drawn with plotters, each as PNG (a pixel buffer) and as SVG (text) from the same drawing
//! code: line charts with optional bands and a logarithmic y axis, interval charts (one panel per
//! metric, a mean with its interval and the single runs per category), and labelled rows of images.
//! Text uses DejaVu Sans embedded in the binary (assets/fonts, Bitstream Vera licence), so PNGs need
//! no system fonts; SVGs name the `sans-serif` family and let the viewer pick it.
use crate::grid::Image;
use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("embedded font loads"));
    });
}

/// One line of a line chart; `band` (x, low, high) is shaded behind it when not empty.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub band: Vec<(f64, f64, f64)>,
}

impl Series {
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, band: Vec::new() }
    }
}

/// Titles and scale of a line chart.
#[derive(Debug, Clone)]
pub struct Axes {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Logarithmic y axis; ignored (linear) when a value is not positive.
    pub log_y: bool,
    /// Logarithmic x axis (points with x <= 0 are left out).
    pub log_x: bool,
    pub size: (u32, u32),
    /// Where the legend goes: a corner the lines leave free.
    pub legend_upper_left: bool,
}

impl Axes {
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Axes {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_y: false,
            log_x: false,
            size: (900, 540),
            legend_upper_left: false,
        }
    }
}

/// A chart in both formats.
pub struct Figure {
    pub png: Vec<u8>,
    pub svg: String,
}

impl Figure {
    /// Writes `<stem>.png` and `<stem>.svg` into `dir` atomically; returns the PNG's path.
    pub fn save(&self, dir: &Path, stem: &str) -> Result<PathBuf> {
        let png = dir.join(format!("{stem}.png"));
        crate::track::atomic_write(&png, &self.png)?;
        crate::track::atomic_write(&dir.join(format!("{stem}.svg")), self.svg.as_bytes())?;
        Ok(png)
    }
}

type DrawResult = Result<()>;

fn drawing_error<E: std::error::Error + Send + Sync>(
    what: &str,
) -> impl Fn(DrawingAreaErrorKind<E>) -> anyhow::Error + '_ {
    move |e| anyhow!("drawing the chart `{what}`: {e}")
}

/// Draws the same picture with both backends.
fn render(
    size: (u32, u32),
    draw_png: impl Fn(DrawingArea<BitMapBackend<'_>, Shift>) -> DrawResult,
    draw_svg: impl Fn(DrawingArea<SVGBackend<'_>, Shift>) -> DrawResult,
) -> Result<Figure> {
    register_font();
    let (w, h) = size;
    let mut pixels = vec![255u8; (w * h * 3) as usize];
    draw_png(BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area())?;
    let mut svg = String::new();
    draw_svg(SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area())?;
    let png = Image { width: w, height: h, channels: 3, pixels }.to_png()?;
    Ok(Figure { png, svg })
}

/// The smallest and largest finite value.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// An axis tick on an axis spanning `span` (0 for a logarithmic axis): four significant digits, more
/// where the axis is narrow (ticks about span/10 apart stay distinct), trailing zeros dropped;
/// scientific notation for very large or small magnitudes. On a linear axis, a tick a billionth of the
/// span from zero is zero (the rounding error of a tick grid through 0, e.g. -2.78e-17).
pub fn tick(v: f64, span: f64) -> String {
    let a = v.abs();
    if a == 0.0 || !v.is_finite() || (span > 0.0 && a < span * 1e-9) {
        return if v.is_finite() { "0".into() } else { v.to_string() };
    }
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let for_span = if span > 0.0 { 2 - span.log10().floor() as i32 } else { 0 };
    let decimals = (3 - a.log10().floor() as i32).max(for_span).clamp(0, 12) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Series with at most this many points get a marker at each.
const MARKED_POINTS: usize = 12;

/// Lines (with their bands) on linear x and linear or logarithmic y axes spanning the data.
pub fn line_chart(axes: &Axes, series: &[Series]) -> Result<Figure> {
    // A logarithmic x axis is drawn as a linear axis over log10(x), labelled with x itself.
    let logged: Vec<Series>;
    let series = if axes.log_x {
        let log = |x: f64| (x > 0.0).then(|| x.log10());
        logged = series
            .iter()
            .map(|s| Series {
                name: s.name.clone(),
                points: s.points.iter().filter_map(|&(x, y)| Some((log(x)?, y))).collect(),
                band: s.band.iter().filter_map(|&(x, lo, hi)| Some((log(x)?, lo, hi))).collect(),
            })
            .collect();
        &logged[..]
    } else {
        series
    };
    render(axes.size, |root| draw_lines(&root, axes, series), |root| draw_lines(&root, axes, series))
}

fn draw_lines<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, axes: &Axes, series: &[Series]) -> DrawResult {
    let err = drawing_error(&axes.title);
    root.fill(&WHITE).map_err(&err)?;
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0).chain(s.band.iter().map(|b| b.0)));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1).chain(s.band.iter().flat_map(|b| [b.1, b.2])));
    let (mut x0, mut x1) = span(xs);
    let (mut y0, mut y1) = span(ys);
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let mut builder = ChartBuilder::on(root);
    builder.caption(&axes.title, ("sans-serif", 22)).margin(14).x_label_area_size(44).y_label_area_size(72);
    if axes.log_y && y0 > 0.0 {
        // plotters labels a log axis from the first power of ten inside it on, so the axis starts just
        // below one (just below: exactly 10^k may round to the next power).
        let lo = 10f64.powf(y0.log10().floor()) * 0.95;
        let hi = if y1 > y0 { y1 * 1.1 } else { y0 * 2.0 };
        let chart = builder.build_cartesian_2d(x0..x1, (lo..hi).log_scale()).map_err(&err)?;
        finish_lines(chart, axes, series, (x1 - x0, 0.0), &err)
    } else {
        let pad = ((y1 - y0) * 0.04).max(1e-9 * y1.abs().max(1.0));
        let chart = builder.build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad)).map_err(&err)?;
        finish_lines(chart, axes, series, (x1 - x0, y1 - y0 + 2.0 * pad), &err)
    }
}

fn finish_lines<'a, DB: DrawingBackend + 'a, Y>(
    mut chart: ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    axes: &Axes,
    series: &[Series],
    (x_span, y_span): (f64, f64),
    err: &impl Fn(DrawingAreaErrorKind<DB::ErrorType>) -> anyhow::Error,
) -> DrawResult
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(axes.x_label.as_str())
        .y_desc(axes.y_label.as_str())
        .x_label_formatter(&|v| if axes.log_x { tick(10f64.powf(*v), 0.0) } else { tick(*v, x_span) })
        .y_label_formatter(&|v| tick(*v, y_span))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        if !s.band.is_empty() {
            let upper = s.band.iter().map(|b| (b.0, b.2));
            let lower = s.band.iter().rev().map(|b| (b.0, b.1));
            let outline: Vec<(f64, f64)> = upper.chain(lower).collect();
            chart.draw_series(std::iter::once(Polygon::new(outline, colour.mix(0.18).filled()))).map_err(err)?;
        }
        let style = colour.stroke_width(2);
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))
            .map_err(err)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        // A series of few points (a sampler's steps) shows each one: a single point draws no line.
        if s.points.len() <= MARKED_POINTS {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, colour.filled()))).map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(if axes.legend_upper_left { SeriesLabelPosition::UpperLeft } else { SeriesLabelPosition::UpperRight })
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    chart.plotting_area().present().map_err(err)
}

/// One category of an interval panel: its mean, its interval (NaN when there is none, e.g. one run)
/// and its single values.
#[derive(Debug, Clone)]
pub struct Interval {
    pub label: String,
    pub mean: f64,
    pub low: f64,
    pub high: f64,
    pub values: Vec<f64>,
}

#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub intervals: Vec<Interval>,
    /// A reference level drawn as a dashed grey line across the panel (the FID floor of the spec).
    pub floor: Option<f64>,
}

/// Panels side by side, each with its categories along x: the mean as a filled dot, the interval as a
/// bar with caps, the single values as open circles.
pub fn interval_chart(title: &str, panels: &[Panel], panel_size: (u32, u32)) -> Result<Figure> {
    // Wide enough that the categories' labels (about 8 px per character at 14 px) do not overlap.
    let widest = panels.iter().flat_map(|p| p.intervals.iter().map(|c| c.label.chars().count() + 6)).max().unwrap_or(0);
    let categories = panels.iter().map(|p| p.intervals.len()).max().unwrap_or(1) as u32;
    let panel_width = panel_size.0.max(100 + categories * (widest as u32 * 8 + 16));
    let size = (panel_width * panels.len().max(1) as u32, panel_size.1);
    render(size, |root| draw_panels(&root, title, panels), |root| draw_panels(&root, title, panels))
}

fn draw_panels<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, panels: &[Panel]) -> DrawResult {
    let err = drawing_error(title);
    root.fill(&WHITE).map_err(&err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(&err)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(&areas) {
        // A segmented range a..b has the b − a + 1 segments a..=b.
        let n = panel.intervals.len().max(1) as i32;
        let values = panel.intervals.iter().flat_map(|c| c.values.iter().copied().chain([c.mean, c.low, c.high]));
        let (lo, hi) = span(values.chain(panel.floor));
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let pad = ((hi - lo) * 0.08).max(1e-9 * hi.abs().max(1.0));
        let labels: Vec<String> =
            panel.intervals.iter().map(|c| format!("{} (n={})", c.label, c.values.len())).collect();
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(72)
            .build_cartesian_2d((0..n - 1).into_segmented(), (lo - pad)..(hi + pad))
            .map_err(&err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(panel.y_label.as_str())
            .x_labels(n as usize)
            .y_label_formatter(&|v| tick(*v, hi - lo + 2.0 * pad))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(&err)?;
        if let Some(f) = panel.floor {
            let grey = RGBColor(110, 110, 110).stroke_width(2);
            let line = DashedLineSeries::new([(SegmentValue::Exact(0), f), (SegmentValue::Last, f)], 8, 6, grey);
            chart.draw_series(line).map_err(&err)?;
        }
        for (i, c) in panel.intervals.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let at = |y: f64| (SegmentValue::CenterOf(i as i32), y);
            if c.low.is_finite() && c.high.is_finite() {
                chart
                    .draw_series([PathElement::new(vec![at(c.low), at(c.high)], colour.stroke_width(3))])
                    .map_err(&err)?;
                let cap = |y: f64| {
                    EmptyElement::at(at(y)) + PathElement::new(vec![(-10, 0), (10, 0)], colour.stroke_width(3))
                };
                chart.draw_series([cap(c.low), cap(c.high)]).map_err(&err)?;
            }
            chart.draw_series(c.values.iter().map(|&v| Circle::new(at(v), 5, colour.stroke_width(1)))).map_err(&err)?;
            chart.draw_series([Circle::new(at(c.mean), 6, colour.filled())]).map_err(&err)?;
        }
    }
    root.present().map_err(&err)
}

/// Images side by side, each under its caption, on a white background; PNG bytes. Each column is as
/// wide as its image or its caption (about 9 px per character), the image centred in it.
pub fn labelled_row(images: &[(String, Image)]) -> Result<Vec<u8>> {
    register_font();
    let (gap, caption) = (16u32, 34u32);
    let columns: Vec<u32> = images.iter().map(|(l, im)| im.width.max(l.chars().count() as u32 * 9)).collect();
    let width = columns.iter().map(|c| c + gap).sum::<u32>() + gap;
    let height = images.iter().map(|(_, im)| im.height).max().unwrap_or(0) + caption + gap;
    let mut pixels = vec![255u8; (width * height * 3) as usize];
    let mut left = gap;
    for ((_, im), column) in images.iter().zip(&columns) {
        let x = left + (column - im.width) / 2;
        for row in 0..im.height {
            for col in 0..im.width {
                let src = ((row * im.width + col) * im.channels) as usize;
                let rgb = match im.channels {
                    1 | 2 => [im.pixels[src]; 3],
                    _ => [im.pixels[src], im.pixels[src + 1], im.pixels[src + 2]],
                };
                let dst = (((row + caption) * width + x + col) * 3) as usize;
                pixels[dst..dst + 3].copy_from_slice(&rgb);
            }
        }
        left += column + gap;
    }
    {
        let err = drawing_error("sample grids");
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        let style = TextStyle::from(("sans-serif", 16).into_font()).color(&BLACK);
        let mut x = gap as i32;
        for ((label, _), column) in images.iter().zip(&columns) {
            root.draw_text(label, &style, (x, 8)).map_err(&err)?;
            x += (column + gap) as i32;
        }
        root.present().map_err(&err)?;
    }
    // Grey images under black captions: stored in one channel when no pixel has a colour.
    Image { width, height, channels: 3, pixels }.greyed().to_png()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png: &[u8]) -> ((u32, u32), Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(png.to_vec())).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        ((reader.info().width, reader.info().height), buf)
    }

    fn colour_pixels(rgb: &[u8], i: usize) -> usize {
        let c = Palette99::pick(i).to_rgba();
        rgb.chunks(3).filter(|p| p[0] == c.0 && p[1] == c.1 && p[2] == c.2).count()
    }

    #[test]
    fn ticks_are_short() {
        let cases = [
            (0.30000000000000004, "0.3"),
            (10.0, "10"),
            (12.5, "12.5"),
            (0.0421, "0.0421"),
            (0.123456, "0.1235"),
            (1234.5, "1234"),
            (0.0, "0"),
            (-2.0, "-2"),
            (2.5e-5, "2.50e-5"),
            (3e6, "3.00e6"),
        ];
        for (v, want) in cases {
            assert_eq!(tick(v, 0.0), want, "{v}");
        }
        // The grid of a KID axis from -0.2 to 0.45 passes 0 as -2.78e-17.
        assert_eq!(tick(-2.7755575615628914e-17, 0.65), "0");
        assert_eq!(tick(2.5e-5, 0.65), "2.50e-5");
        // A narrow axis (FIDs 172.667 and 172.715) keeps its ticks apart.
        assert_eq!(tick(172.665, 0.06), "172.665");
        assert_eq!(tick(172.67, 0.06), "172.67");
        assert_eq!(tick(0.1705, 0.005), "0.1705");
        assert_eq!(tick(250.0, 475.0), "250");
    }

    #[test]
    fn line_chart_draws_each_series_in_png_and_svg() {
        let series = vec![
            Series::line("up", (0..=10).map(|i| (i as f64, 1.0 + i as f64)).collect()),
            Series {
                name: "down".into(),
                points: (0..=10).map(|i| (i as f64, 11.0 - i as f64)).collect(),
                band: (0..=10).map(|i| (i as f64, 10.0 - i as f64, 12.0 - i as f64)).collect(),
            },
        ];
        for log_y in [false, true] {
            let axes = Axes { log_y, size: (320, 240), ..Axes::new("title", "x", "y") };
            let fig = line_chart(&axes, &series).unwrap();
            let (size, rgb) = decode(&fig.png);
            assert_eq!(size, (320, 240));
            assert!(colour_pixels(&rgb, 0) > 100 && colour_pixels(&rgb, 1) > 100, "both series drawn");
            assert!(
                fig.svg.starts_with("<svg") && fig.svg.contains("width=\"320\"") && fig.svg.contains("height=\"240\"")
            );
            for text in ["up", "down", "title"] {
                assert!(fig.svg.contains(&format!(">\n{text}\n</text>")), "{text} in the SVG");
            }
            assert!(fig.svg.contains("<polygon") || fig.svg.contains("<path"), "the band is drawn");
        }
    }

    #[test]
    fn interval_chart_has_one_panel_per_metric() {
        let interval = |label: &str, values: Vec<f64>| {
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            Interval { label: label.into(), mean, low: mean - 1.0, high: mean + 1.0, values }
        };
        let panel = |t: &str| Panel {
            floor: None,
            title: t.into(),
            y_label: t.into(),
            intervals: vec![interval("linear", vec![1.0, 2.0, 3.0]), interval("cosine", vec![4.0, 5.0])],
        };
        let fig = interval_chart("metrics", &[panel("FID"), panel("bits/dim")], (400, 260)).unwrap();
        let (size, rgb) = decode(&fig.png);
        assert_eq!(size, (800, 260));
        assert!(colour_pixels(&rgb, 0) > 50 && colour_pixels(&rgb, 1) > 50);
        for text in ["FID", "bits/dim", "linear (n=3)", "cosine (n=2)", "metrics"] {
            assert!(fig.svg.contains(&format!(">\n{text}\n</text>")), "{text} in the SVG");
        }
    }

    #[test]
    fn labelled_row_places_images_under_captions() {
        let grey = Image { width: 20, height: 10, channels: 1, pixels: vec![0; 200] };
        // The second caption (4 characters, 36 px) is wider than its image: the image is centred.
        let png = labelled_row(&[("a".into(), grey.clone()), ("bbbb".into(), grey)]).unwrap();
        let ((w, h), grey) = decode(&png);
        assert_eq!((w, h), (16 + 36 + 52, 10 + 34 + 16));
        assert_eq!(grey.len(), (w * h) as usize, "grey images and black captions: one channel");
        // The first image's top-left pixel is black, the gap left of it white.
        let at = |x: u32, y: u32| grey[(y * w + x) as usize];
        assert_eq!(at(16, 34), 0);
        assert_eq!(at(15, 34), 255);
        // The second column starts at 52; its image at 52 + (36 − 20)/2 = 60.
        assert_eq!(at(59, 40), 255);
        assert_eq!(at(60, 40), 0);
        assert_eq!(at(79, 43), 0);
        assert_eq!(at(80, 43), 255);
        // A coloured image keeps the row in RGB.
        let red = Image { width: 2, height: 2, channels: 3, pixels: [255, 0, 0].repeat(4) };
        let ((w, h), rgb) = decode(&labelled_row(&[("a".into(), red)]).unwrap());
        assert_eq!(rgb.len(), (w * h * 3) as usize);
    }
}
