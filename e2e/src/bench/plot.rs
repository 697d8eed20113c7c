//! PNG bar charts of a run (plotters, bitmap backend). Text is drawn with
//! ab_glyph from a TrueType file (DejaVu Sans from Debian's
//! `fonts-dejavu-core`, or `SHOAL_BENCH_FONT`), so no fontconfig is needed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::report::BenchReport;

const FONT_PATHS: [&str; 2] =
    ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"];
const SIZE: (u32, u32) = (900, 480);
const BLUE: RGBColor = RGBColor(52, 101, 164);
const ORANGE: RGBColor = RGBColor(245, 121, 0);

/// One bar: a label, a value, a colour.
struct Bar {
    label: String,
    value: f64,
    color: RGBColor,
}

/// Draws every chart the report has data for into `dir`; returns their paths.
pub fn draw(report: &BenchReport, dir: &Path) -> Result<Vec<PathBuf>> {
    register_font()?;
    let mut written = Vec::new();
    if let Some(blob) = &report.blob {
        let bars = blob.targets.iter().map(|t| bar(&t.name, t.mb_per_s, BLUE)).collect();
        let title = format!("a. {} MB blob, MB/s (median of {})", blob.blob_bytes / 1_000_000, blob.reps);
        written.push(bar_chart(&dir.join("bench-blob.png"), &title, bars)?);
    }
    if let Some(c) = &report.concurrent {
        let bars = c.modes.iter().map(|m| bar(&m.name, m.aggregate_mb_per_s, BLUE)).collect();
        let title = format!("b. {} concurrent clients, aggregate MB/s", c.clients);
        written.push(bar_chart(&dir.join("bench-concurrent.png"), &title, bars)?);
    }
    if let Some(p) = &report.pull {
        let mut bars = Vec::new();
        for image in &p.images {
            bars.push(bar(&format!("{} upstream", image.name), image.upstream_median_seconds, ORANGE));
            bars.push(bar(&format!("{} peer", image.name), image.peer_median_seconds, BLUE));
        }
        let title = format!("c. pull time in s, upstream at {} vs through a peer", p.upstream_rate);
        written.push(bar_chart(&dir.join("bench-pull.png"), &title, bars)?);
    }
    Ok(written)
}

fn bar(label: &str, value: f64, color: RGBColor) -> Bar {
    Bar { label: label.to_owned(), value, color }
}

fn register_font() -> Result<()> {
    let configured = std::env::var("SHOAL_BENCH_FONT").ok();
    let path = configured
        .iter()
        .map(String::as_str)
        .chain(FONT_PATHS)
        .find(|p| Path::new(p).is_file())
        .context("no font for the plots: install fonts-dejavu-core or set SHOAL_BENCH_FONT to a .ttf file")?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{path} is not a usable TrueType font"))
}

/// A horizontal bar chart, one row per bar, labelled on the left.
fn bar_chart(path: &Path, title: &str, bars: Vec<Bar>) -> Result<PathBuf> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("draw {}: {e}", path.display()))?;
    let top = bars.iter().map(|b| b.value).fold(0.0, f64::max).max(1e-9) * 1.15;
    let rows = i32::try_from(bars.len())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(230)
        .build_cartesian_2d(0.0..top, (0..rows).into_segmented())
        .map_err(|e| anyhow!("draw {}: {e}", path.display()))?;
    // Row 0 is at the bottom: the first bar goes on the top row.
    let label_of = |value: &SegmentValue<i32>| match value {
        SegmentValue::CenterOf(row) => {
            usize::try_from(rows - 1 - row).ok().and_then(|i| bars.get(i)).map(|b| b.label.clone()).unwrap_or_default()
        }
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len() + 1)
        .y_label_formatter(&label_of)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| anyhow!("draw {}: {e}", path.display()))?;
    let row_of = |i: usize| rows - 1 - i32::try_from(i).unwrap_or(rows - 1);
    let rectangles = bars.iter().enumerate().map(|(i, b)| {
        let row = row_of(i);
        Rectangle::new([(0.0, SegmentValue::Exact(row)), (b.value, SegmentValue::Exact(row + 1))], b.color.filled())
    });
    chart.draw_series(rectangles).map_err(|e| anyhow!("draw {}: {e}", path.display()))?;
    let values = bars.iter().enumerate().map(|(i, b)| {
        let position = (b.value, SegmentValue::CenterOf(row_of(i)));
        Text::new(format!(" {:.2}", b.value), position, ("sans-serif", 14).into_font())
    });
    chart.draw_series(values).map_err(|e| anyhow!("draw {}: {e}", path.display()))?;
    root.present().map_err(|e| anyhow!("write {}: {e}", path.display()))?;
    Ok(path.to_path_buf())
}
