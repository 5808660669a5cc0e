//! PNG reading and writing for RGB-D samples: the one code path every RGB-D file goes through
//! (NYUv2 as ESANet's `prepare_dataset.py` writes it, the real pair in `shared/data/rgbd-sample`,
//! and the inspection PNGs of the synthetic generator).
//!
//! Formats are checked strictly, each with a typed error naming the file:
//! - RGB: 8-bit, 3 channels (`cv2.imwrite` of a BGR array stores true RGB in the PNG, so no
//!   channel swap is needed here; ESANet's `cv2.imread` + `cvtColor(BGR2RGB)` gives the same
//!   array);
//! - depth: 16-bit, 1 channel, raw values multiplied by `depth_scale` to millimetres;
//! - labels: 8-bit, 1 channel, 0 = void, 1..=`num_classes` classes.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageBuffer, Luma, Rgb};

use super::RgbdSample;
use crate::{Error, Result};

/// An RGB image and its depth map, loaded and checked to be the same size.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbdPair {
    /// RGB in `[0, 255]`, channel-major. `(3, H, W)`
    pub rgb: Vec<f32>,
    /// Depth in millimetres (raw value × `depth_scale`; 0 = no measurement). `(1, H, W)`
    pub depth: Vec<f32>,
    /// Image height H.
    pub height: usize,
    /// Image width W.
    pub width: usize,
}

fn decode(path: &Path) -> Result<DynamicImage> {
    if !path.is_file() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            what: "image file",
        });
    }
    let reader = image::ImageReader::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = reader.with_guessed_format().map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    reader.decode().map_err(|e| Error::ImageDecode {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

fn format_name(img: &DynamicImage) -> String {
    format!("{:?}", img.color())
}

/// Loads an 8-bit RGB PNG as `(3, H, W)` values in `[0, 255]`; returns `(rgb, H, W)`.
pub fn load_rgb(path: &Path) -> Result<(Vec<f32>, usize, usize)> {
    let img = decode(path)?;
    let DynamicImage::ImageRgb8(buf) = img else {
        return Err(Error::ImageFormat {
            path: path.to_path_buf(),
            expected: "8-bit RGB",
            found: format_name(&img),
        });
    };
    let (w, h) = (buf.width() as usize, buf.height() as usize);
    let plane = h * w;
    let mut rgb = vec![0f32; 3 * plane];
    for (i, px) in buf.pixels().enumerate() {
        for c in 0..3 {
            rgb[c * plane + i] = f32::from(px.0[c]);
        }
    }
    Ok((rgb, h, w))
}

/// Loads a 16-bit single-channel depth PNG as `(1, H, W)` millimetres (raw × `depth_scale`);
/// returns `(depth, H, W)`. An 8-bit PNG is an error: it cannot hold millimetres.
pub fn load_depth(path: &Path, depth_scale: f32) -> Result<(Vec<f32>, usize, usize)> {
    let img = decode(path)?;
    let DynamicImage::ImageLuma16(buf) = img else {
        return Err(Error::ImageFormat {
            path: path.to_path_buf(),
            expected: "16-bit grayscale",
            found: format_name(&img),
        });
    };
    let (w, h) = (buf.width() as usize, buf.height() as usize);
    let depth = buf
        .pixels()
        .map(|p| f32::from(p.0[0]) * depth_scale)
        .collect();
    Ok((depth, h, w))
}

/// Loads an 8-bit label PNG `(H, W)`; every value must be in `0..=num_classes` (0 = void).
/// Returns `(labels, H, W)`.
pub fn load_labels(path: &Path, num_classes: usize) -> Result<(Vec<u8>, usize, usize)> {
    let img = decode(path)?;
    let DynamicImage::ImageLuma8(buf) = img else {
        return Err(Error::ImageFormat {
            path: path.to_path_buf(),
            expected: "8-bit grayscale label",
            found: format_name(&img),
        });
    };
    let (w, h) = (buf.width() as usize, buf.height() as usize);
    let labels = buf.into_raw();
    if let Some(pos) = labels.iter().position(|&v| usize::from(v) > num_classes) {
        return Err(Error::LabelOutOfRange {
            path: path.to_path_buf(),
            value: u32::from(labels[pos]),
            max: num_classes as u32,
            row: pos / w.max(1),
            col: pos % w.max(1),
        });
    }
    Ok((labels, h, w))
}

/// Checks that `path` has size `(h, w)`, the size of `reference`.
pub(crate) fn check_size(
    path: &Path,
    reference: &Path,
    expected: (usize, usize),
    found: (usize, usize),
) -> Result<()> {
    if expected == found {
        return Ok(());
    }
    Err(Error::ImageSizeMismatch {
        path: path.to_path_buf(),
        reference: reference.to_path_buf(),
        expected_height: expected.0,
        expected_width: expected.1,
        found_height: found.0,
        found_width: found.1,
    })
}

/// Loads an RGB file and a depth file of the same scene (the code path NYUv2 samples use too):
/// 8-bit RGB, 16-bit depth times `depth_scale` (1.0 for NYUv2 as prepared, already mm; 0.1 for
/// the ESANet sample pair, ESANet README: `--depth_scale 0.1`), same size.
pub fn load_rgbd_pair(rgb_path: &Path, depth_path: &Path, depth_scale: f32) -> Result<RgbdPair> {
    let (rgb, height, width) = load_rgb(rgb_path)?;
    let (depth, dh, dw) = load_depth(depth_path, depth_scale)?;
    check_size(depth_path, rgb_path, (height, width), (dh, dw))?;
    Ok(RgbdPair {
        rgb,
        depth,
        height,
        width,
    })
}

fn save<P, C>(buf: ImageBuffer<P, C>, path: &Path) -> Result<()>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    buf.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::ImageWrite {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })
}

fn buffer_error(path: &Path) -> Error {
    Error::ImageWrite {
        path: path.to_path_buf(),
        problem: "buffer length does not match height x width".into(),
    }
}

/// Writes `(3, H, W)` RGB in `[0, 255]` as an 8-bit RGB PNG (values rounded and clamped).
pub fn write_rgb_png(path: &Path, rgb: &[f32], height: usize, width: usize) -> Result<()> {
    let plane = height * width;
    if rgb.len() != 3 * plane {
        return Err(buffer_error(path));
    }
    let mut raw = vec![0u8; 3 * plane];
    for i in 0..plane {
        for c in 0..3 {
            raw[3 * i + c] = rgb[c * plane + i].round().clamp(0.0, 255.0) as u8;
        }
    }
    let buf = ImageBuffer::<Rgb<u8>, _>::from_raw(width as u32, height as u32, raw)
        .ok_or_else(|| buffer_error(path))?;
    save(buf, path)
}

/// Writes `(1, H, W)` depth in millimetres as a 16-bit PNG (rounded, clamped to 0..=65535).
pub fn write_depth_png(path: &Path, depth_mm: &[f32], height: usize, width: usize) -> Result<()> {
    let raw: Vec<u16> = depth_mm
        .iter()
        .map(|&d| d.round().clamp(0.0, 65535.0) as u16)
        .collect();
    let buf = ImageBuffer::<Luma<u16>, _>::from_raw(width as u32, height as u32, raw)
        .ok_or_else(|| buffer_error(path))?;
    save(buf, path)
}

/// Writes `(H, W)` labels as an 8-bit grayscale PNG (the `labels_40` format).
pub fn write_labels_png(path: &Path, labels: &[u8], height: usize, width: usize) -> Result<()> {
    let buf = ImageBuffer::<Luma<u8>, _>::from_raw(width as u32, height as u32, labels.to_vec())
        .ok_or_else(|| buffer_error(path))?;
    save(buf, path)
}

/// Writes `(H, W)` labels as a colour PNG with the VOC bit-interleaved palette that ESANet uses
/// for `labels_40_colored` (label 0, void, is black).
pub fn write_labels_colored_png(
    path: &Path,
    labels: &[u8],
    height: usize,
    width: usize,
) -> Result<()> {
    let raw: Vec<u8> = labels.iter().flat_map(|&l| voc_color(l)).collect();
    let buf = ImageBuffer::<Rgb<u8>, _>::from_raw(width as u32, height as u32, raw)
        .ok_or_else(|| buffer_error(path))?;
    save(buf, path)
}

/// The PASCAL VOC colour of label `index` (bits of the index interleaved into R, G, B).
pub fn voc_color(index: u8) -> [u8; 3] {
    let mut c = [0u8; 3];
    let mut id = index;
    for shift in (0..8).rev() {
        for (ch, value) in c.iter_mut().enumerate() {
            *value |= ((id >> ch) & 1) << shift;
        }
        id >>= 3;
        if id == 0 {
            break;
        }
    }
    c
}

/// The PNG files [`write_sample_pngs`] wrote for one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplePngs {
    /// `{stem}_rgb.png` (8-bit RGB).
    pub rgb: PathBuf,
    /// `{stem}_depth.png` (16-bit, mm).
    pub depth: PathBuf,
    /// `{stem}_labels.png` (8-bit, 0 = void).
    pub labels: PathBuf,
    /// `{stem}_labels_colored.png` (VOC palette, for viewing).
    pub labels_colored: PathBuf,
}

/// Writes an unnormalised sample (RGB in `[0, 255]`, depth in mm) as four PNGs in `dir`
/// named `{stem}_rgb.png`, `{stem}_depth.png`, `{stem}_labels.png` and
/// `{stem}_labels_colored.png`, for inspection. Creates `dir` if needed.
pub fn write_sample_pngs(dir: &Path, stem: &str, sample: &RgbdSample) -> Result<SamplePngs> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let (h, w) = (sample.height, sample.width);
    let out = SamplePngs {
        rgb: dir.join(format!("{stem}_rgb.png")),
        depth: dir.join(format!("{stem}_depth.png")),
        labels: dir.join(format!("{stem}_labels.png")),
        labels_colored: dir.join(format!("{stem}_labels_colored.png")),
    };
    write_rgb_png(&out.rgb, &sample.rgb, h, w)?;
    write_depth_png(&out.depth, &sample.depth, h, w)?;
    write_labels_png(&out.labels, &sample.labels, h, w)?;
    write_labels_colored_png(&out.labels_colored, &sample.labels, h, w)?;
    Ok(out)
}
