//! Figure 2 as a PNG (bars drawn into an RGB buffer, labels in a tiny embedded 3×5 bitmap
//! font) and as an SVG with the same content.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::report::Figure2;
use crate::run::write_atomic;
use crate::{Error, Result};

/// Series colours (colour-blind-safe Okabe–Ito).
const COLORS: [[u8; 3]; 4] = [
    [230, 159, 0],
    [86, 180, 233],
    [0, 158, 115],
    [204, 121, 167],
];

/// 3×5 glyphs: five rows of three bits (MSB left).
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [7, 4, 4, 4, 7],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [7, 4, 5, 5, 7],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 7],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [7, 5, 5, 5, 7],
        'P' => [7, 5, 7, 4, 4],
        'Q' => [7, 5, 5, 7, 1],
        'R' => [7, 5, 6, 5, 5],
        'S' => [7, 4, 7, 1, 7],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        '-' => [0, 0, 7, 0, 0],
        '.' => [0, 0, 0, 0, 2],
        '%' => [5, 1, 2, 4, 5],
        '+' => [0, 2, 7, 2, 0],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        ':' => [0, 2, 0, 2, 0],
        _ => [0; 5],
    }
}

/// Draws `text` with its top-left corner at (x, y), each font pixel `scale`² image pixels.
fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, scale: u32, color: [u8; 3]) {
    for (i, c) in s.chars().enumerate() {
        let g = glyph(c);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3u32 {
                if bits & (4 >> col) != 0 {
                    let x0 = x + (i as u32 * 4 + col) * scale;
                    let y0 = y + row as u32 * scale;
                    rect(img, x0, y0, scale, scale, color);
                }
            }
        }
    }
}

fn rect(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, color: [u8; 3]) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, Rgb(color));
        }
    }
}

/// Writes `figure2.png` and `figure2.svg` into `dir`.
pub fn write_figure2(fig: &Figure2, dir: &Path) -> Result<()> {
    let k = fig.classes.len().max(1) as u32;
    let s = fig.series.len().max(1) as u32;
    let (bar_w, gap, left, top, plot_h) = (10u32, 14u32, 60u32, 40u32, 300u32);
    let group_w = s * bar_w + gap;
    let width = (left + k * group_w + 20).max(780); // room for the title and legend
    let legend_h = 16 * s + 10;
    let height = top + plot_h + 40 + legend_h;
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let black = [0, 0, 0];
    text(
        &mut img,
        left,
        10,
        "FIGURE 2: VIDEO ENCODERS ON CLASSES WHERE AUDIO TEACHER IS BEST",
        2,
        black,
    );
    // Axes and y ticks (0, 25, 50, 75, 100 %).
    rect(&mut img, left - 2, top, 2, plot_h + 2, black);
    rect(&mut img, left - 2, top + plot_h, k * group_w, 2, black);
    for tick in [0u32, 25, 50, 75, 100] {
        let y = top + plot_h - plot_h * tick / 100;
        rect(&mut img, left - 6, y, 4, 1, black);
        rect(&mut img, left, y, k * group_w, 1, [225, 225, 225]);
        text(
            &mut img,
            8,
            y.saturating_sub(4),
            &format!("{tick}%"),
            2,
            black,
        );
    }
    for (gi, class) in fig.classes.iter().enumerate() {
        let gx = left + gi as u32 * group_w + gap / 2;
        for (si, series) in fig.series.iter().enumerate() {
            let v = series
                .per_class
                .get(gi)
                .copied()
                .unwrap_or(0.0)
                .clamp(0.0, 100.0);
            let h = (plot_h as f64 * v / 100.0).round() as u32;
            rect(
                &mut img,
                gx + si as u32 * bar_w,
                top + plot_h - h,
                bar_w - 1,
                h,
                COLORS[si % 4],
            );
        }
        text(&mut img, gx, top + plot_h + 8, &class.to_string(), 2, black);
    }
    text(
        &mut img,
        left,
        top + plot_h + 24,
        "CLASS (SORTED BY AUDIO TEACHER TEST ACCURACY)",
        2,
        black,
    );
    for (si, series) in fig.series.iter().enumerate() {
        let y = top + plot_h + 42 + 16 * si as u32;
        rect(&mut img, left, y, 12, 10, COLORS[si % 4]);
        text(
            &mut img,
            left + 18,
            y,
            &format!("{} (MEAN {:.1}%)", series.name, series.mean),
            2,
            black,
        );
    }
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::Io {
            path: dir.join("figure2.png"),
            source: std::io::Error::other(e.to_string()),
        })?;
    write_atomic(&dir.join("figure2.png"), &png)?;

    // The same figure as SVG (real text).
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"13\">Figure 2: per-class test accuracy of video encoders (linear evaluation) on the classes where the audio teacher is best</text>\n"
    );
    for tick in [0u32, 25, 50, 75, 100] {
        let y = top + plot_h - plot_h * tick / 100;
        svg += &format!(
            "<line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"8\" y=\"{}\">{tick}%</text>\n",
            left + k * group_w,
            y + 4
        );
    }
    for (gi, class) in fig.classes.iter().enumerate() {
        let gx = left + gi as u32 * group_w + gap / 2;
        for (si, series) in fig.series.iter().enumerate() {
            let v = series
                .per_class
                .get(gi)
                .copied()
                .unwrap_or(0.0)
                .clamp(0.0, 100.0);
            let h = plot_h as f64 * v / 100.0;
            let c = COLORS[si % 4];
            svg += &format!(
                "<rect x=\"{}\" y=\"{:.1}\" width=\"{}\" height=\"{h:.1}\" fill=\"rgb({},{},{})\"><title>{}: class {class}: {v:.1}%</title></rect>\n",
                gx + si as u32 * bar_w,
                (top + plot_h) as f64 - h,
                bar_w - 1,
                c[0],
                c[1],
                c[2],
                series.name
            );
        }
        svg += &format!(
            "<text x=\"{gx}\" y=\"{}\">{class}</text>\n",
            top + plot_h + 16
        );
    }
    svg += &format!(
        "<text x=\"{left}\" y=\"{}\">class (sorted by the audio teacher's test accuracy)</text>\n",
        top + plot_h + 32
    );
    for (si, series) in fig.series.iter().enumerate() {
        let y = top + plot_h + 42 + 16 * si as u32;
        let c = COLORS[si % 4];
        svg += &format!(
            "<rect x=\"{left}\" y=\"{y}\" width=\"12\" height=\"10\" fill=\"rgb({},{},{})\"/><text x=\"{}\" y=\"{}\">{} (mean {:.1}%)</text>\n",
            c[0],
            c[1],
            c[2],
            left + 18,
            y + 10,
            series.name,
            series.mean
        );
    }
    svg += "</svg>\n";
    write_atomic(&dir.join("figure2.svg"), svg.as_bytes())
}
