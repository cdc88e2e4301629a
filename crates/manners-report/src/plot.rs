//! `loss.png` and comparison plots, drawn with plotters' bitmap backend.
//!
//! Text is rendered with plotters' pure-Rust `ab_glyph` path and the DejaVu Sans font embedded
//! from `assets/fonts/` (Bitstream Vera licence, see `assets/fonts/LICENSE-DejaVu.txt`), so
//! no system fontconfig or freetype is needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use manners_events::stats::{Ema, fmt_sig3};

static FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
const FONT_NAME: &str = "sans-serif";

/// Width and height of the PNGs written here.
pub const PLOT_SIZE: (u32, u32) = (1200, 720);

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Every series was empty (or held no finite point).
    #[error("nothing to plot in {path}: no finite points")]
    Empty { path: PathBuf },
    /// The embedded font could not be loaded (should not happen).
    #[error("the embedded plot font could not be loaded")]
    Font,
    /// plotters failed to draw or to encode the PNG.
    #[error("drawing {path}: {message}")]
    Draw { path: PathBuf, message: String },
}

fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

/// Series colours: colour-blind friendly (Okabe-Ito).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

fn finite(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// A bias-corrected EMA whose span grows with the run: about 1/12 of the points, between 5
/// and 200 (none below 20 points). Packed SFT batches differ a lot in content, so a shorter
/// span (it was 1/25) left the smoothed line following the raw one on short runs.
pub fn smooth(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let span = if points.len() < 20 {
        1.0
    } else {
        (points.len() as f64 / 12.0).clamp(5.0, 200.0)
    };
    let mut ema = Ema::new(1.0 - 2.0 / (span + 1.0));
    points
        .iter()
        .filter_map(|&(x, y)| ema.push(y).map(|m| (x, m)))
        .collect()
}

struct Range {
    x: (f64, f64),
    y: (f64, f64),
}

fn range(all: &[&[(f64, f64)]], y_cap_from: &[&[(f64, f64)]]) -> Option<Range> {
    let pts = || all.iter().flat_map(|s| s.iter());
    let (x0, x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.0), b.max(p.0))
    });
    let (y0, y1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.1), b.max(p.1))
    });
    if !x0.is_finite() {
        return None;
    }
    // Cap the top so that a single raw spike does not flatten the curves: at most half the
    // smoothed range above the smoothed maximum.
    let capped = y_cap_from
        .iter()
        .flat_map(|s| s.iter())
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max);
    let y1 = if capped.is_finite() {
        y1.min(capped + (capped - y0).max(0.0) * 0.5)
    } else {
        y1
    };
    let ypad = ((y1 - y0) * 0.06).max(1e-3);
    let (x0, x1) = if x1 - x0 < 1e-9 {
        (x0 - 1.0, x1 + 1.0)
    } else {
        (x0, x1)
    };
    // Losses are non-negative: do not pad below zero.
    let ylo = if y0 >= 0.0 {
        (y0 - ypad).max(0.0)
    } else {
        y0 - ypad
    };
    Some(Range {
        x: (x0, x1),
        y: (ylo, y1 + ypad),
    })
}

/// Tick labels: integers print without decimals (`50`, not `50.0`).
fn axis_label(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        fmt_sig3(x)
    }
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes the training curve of a run: raw train loss (faint), its smoothed version (see
/// [`smooth`]), and held-out loss as markers joined by a thin line. Points are `(step, loss)`;
/// non-finite points are dropped. Fails with [`PlotError::Empty`] if nothing is left.
pub fn plot_losses(
    path: &Path,
    title: &str,
    train: &[(f64, f64)],
    mixed: &[(f64, f64)],
    eval: &[(f64, f64)],
) -> Result<(), PlotError> {
    register_font()?;
    let train = finite(train);
    let eval = finite(eval);
    let smoothed = smooth(&train);
    let mixed = smooth(&finite(mixed));
    let r = range(&[&train, &mixed, &eval], &[&smoothed, &mixed, &eval]).ok_or_else(|| {
        PlotError::Empty {
            path: path.to_path_buf(),
        }
    })?;
    let root = BitMapBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT_NAME, 30))
        .margin(24)
        .x_label_area_size(56)
        .y_label_area_size(80)
        .build_cartesian_2d(r.x.0..r.x.1, r.y.0..r.y.1)
        .map_err(|e| draw_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss (supervised tokens)")
        .label_style((FONT_NAME, 18))
        .axis_desc_style((FONT_NAME, 20))
        .light_line_style(RGBColor(244, 244, 244))
        .bold_line_style(RGBColor(210, 210, 210))
        .x_label_formatter(&|x| axis_label(*x))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(|e| draw_err(path, e))?;

    let ymax = r.y.1;
    let clip = |p: &(f64, f64)| (p.0, p.1.min(ymax));
    let train_color = PALETTE[0];
    if !train.is_empty() {
        chart
            .draw_series(LineSeries::new(
                train.iter().map(clip),
                train_color.mix(0.25).stroke_width(1),
            ))
            .map_err(|e| draw_err(path, e))?
            .label("train (raw)")
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 24, y)],
                    train_color.mix(0.3).stroke_width(2),
                )
            });
        chart
            .draw_series(LineSeries::new(
                smoothed.iter().map(clip),
                train_color.stroke_width(3),
            ))
            .map_err(|e| draw_err(path, e))?
            .label("train (smoothed)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], train_color.stroke_width(3))
            });
    }
    if !mixed.is_empty() {
        let c = PALETTE[2];
        chart
            .draw_series(LineSeries::new(mixed.iter().map(clip), c.stroke_width(2)))
            .map_err(|e| draw_err(path, e))?
            .label("raw text mixed in (smoothed)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(2)));
    }
    if !eval.is_empty() {
        let c = PALETTE[1];
        chart
            .draw_series(LineSeries::new(eval.iter().map(clip), c.stroke_width(2)))
            .map_err(|e| draw_err(path, e))?;
        chart
            .draw_series(eval.iter().map(|p| Circle::new(clip(p), 5, c.filled())))
            .map_err(|e| draw_err(path, e))?
            .label("held-out")
            .legend(move |(x, y)| Circle::new((x + 12, y), 5, c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT_NAME, 20))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .margin(12)
        .draw()
        .map_err(|e| draw_err(path, e))?;
    root.present().map_err(|e| draw_err(path, e))?;
    Ok(())
}

/// Writes several named series on one chart (e.g. the training loss of three learning rates).
/// Series are drawn as given (smooth them first with [`smooth`] if they are noisy); each gets
/// its own colour and a legend entry. Non-finite points are dropped.
pub fn plot_series(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), PlotError> {
    register_font()?;
    let series: Vec<(String, Vec<(f64, f64)>)> =
        series.iter().map(|(n, p)| (n.clone(), finite(p))).collect();
    let all: Vec<&[(f64, f64)]> = series.iter().map(|(_, p)| p.as_slice()).collect();
    let r = range(&all, &[]).ok_or_else(|| PlotError::Empty {
        path: path.to_path_buf(),
    })?;
    let root = BitMapBackend::new(path, PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT_NAME, 30))
        .margin(24)
        .x_label_area_size(56)
        .y_label_area_size(80)
        .build_cartesian_2d(r.x.0..r.x.1, r.y.0..r.y.1)
        .map_err(|e| draw_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style((FONT_NAME, 18))
        .axis_desc_style((FONT_NAME, 20))
        .light_line_style(RGBColor(244, 244, 244))
        .bold_line_style(RGBColor(210, 210, 210))
        .x_label_formatter(&|x| axis_label(*x))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()
        .map_err(|e| draw_err(path, e))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let c = PALETTE[i % PALETTE.len()];
        let drawn = if pts.len() == 1 {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 5, c.filled())))
        } else {
            chart.draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(3)))
        };
        drawn
            .map_err(|e| draw_err(path, e))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT_NAME, 20))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .margin(12)
        .draw()
        .map_err(|e| draw_err(path, e))?;
    root.present().map_err(|e| draw_err(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&bytes[16..20]), be(&bytes[20..24]))
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("manners-report-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join(name)
    }

    fn curve(n: usize) -> Vec<(f64, f64)> {
        (1..=n)
            .map(|i| {
                let x = i as f64;
                // A decaying loss with deterministic wiggle.
                (
                    x,
                    0.4 + 2.6 * (-x / 120.0).exp() + 0.15 * ((x * 1.7).sin() * (x * 0.31).cos()),
                )
            })
            .collect()
    }

    #[test]
    fn plot_losses_writes_a_png() {
        let path = tmp("loss.png");
        let train = curve(600);
        let eval: Vec<_> = (1..=6)
            .map(|k| (k as f64 * 100.0, 0.5 + 2.0 * (-(k as f64) / 1.5).exp()))
            .collect();
        plot_losses(&path, "demo run: loss", &train, &[], &eval).expect("plot");
        let bytes = std::fs::read(&path).expect("read png");
        assert!(
            bytes.len() > 10_000,
            "suspiciously small PNG: {} bytes",
            bytes.len()
        );
        assert_eq!(png_size(&bytes), PLOT_SIZE);
    }

    #[test]
    fn plot_series_writes_a_png() {
        let path = tmp("lr.png");
        let series: Vec<(String, Vec<(f64, f64)>)> =
            [("lr 1e-4", 1.0), ("lr 3e-4", 0.8), ("lr 1e-3", 0.6)]
                .into_iter()
                .map(|(n, k)| {
                    (
                        n.to_string(),
                        smooth(&curve(300))
                            .into_iter()
                            .map(|(x, y)| (x, y * k))
                            .collect(),
                    )
                })
                .collect();
        plot_series(&path, "learning rate sweep", "step", "train loss", &series).expect("plot");
        let bytes = std::fs::read(&path).expect("read png");
        assert_eq!(png_size(&bytes), PLOT_SIZE);
    }

    #[test]
    fn empty_input_is_an_error() {
        let path = tmp("empty.png");
        let err = plot_losses(&path, "x", &[], &[], &[(1.0, f64::NAN)]);
        assert!(matches!(err, Err(PlotError::Empty { .. })), "{err:?}");
    }

    #[test]
    fn single_point_plots() {
        let path = tmp("one.png");
        plot_losses(&path, "one step", &[(1.0, 2.0)], &[], &[]).expect("plot");
        assert_eq!(png_size(&std::fs::read(&path).expect("read")), PLOT_SIZE);
    }
}
