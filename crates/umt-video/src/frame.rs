//! One frame: decode to RGB8, resize (Pillow's antialiased bilinear), crop, normalise.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::config::Normalization;
use crate::error::{Result, VideoError};

/// An 8-bit RGB image, `(H, W, 3)` row-major (interleaved), as decoders produce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `height * width * 3` bytes: `(H, W, 3)`.
    pub data: Vec<u8>,
}

impl Rgb8Image {
    /// Wraps `data` `(H, W, 3)`, checking its length.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self> {
        check_len("rgb8 image", &data, height, width)?;
        Ok(Self {
            width,
            height,
            data,
        })
    }
}

fn check_len<T>(what: &'static str, data: &[T], height: u32, width: u32) -> Result<()> {
    let expected = height as usize * width as usize * 3;
    if data.len() != expected {
        return Err(VideoError::BufferSize {
            what,
            shape: format!("(H={height}, W={width}, 3)"),
            expected,
            found: data.len(),
        });
    }
    Ok(())
}

/// Reads and decodes one frame file to RGB8 (see [`decode_rgb8`]).
pub fn decode_rgb8_file(path: &Path) -> Result<Rgb8Image> {
    let bytes = std::fs::read(path).map_err(|source| VideoError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    decode_rgb8(&bytes, path)
}

/// Decodes an encoded JPEG or PNG to RGB8. The format is taken from the content (magic
/// bytes), falling back to `path`'s extension; `path` is also used in error messages.
///
/// Colour JPEGs decode straight to RGB8 (zune-jpeg, through `image`) with no conversion
/// copy. Grayscale is replicated to three channels and alpha is dropped (not composited), as
/// Pillow's `Image.convert("RGB")`; 16-bit PNGs are scaled to 8 bits.
pub fn decode_rgb8(bytes: &[u8], path: &Path) -> Result<Rgb8Image> {
    let decode_err = |source| VideoError::Decode {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = image::ImageReader::new(Cursor::new(bytes));
    if let Some(format) = path
        .extension()
        .and_then(image::ImageFormat::from_extension)
    {
        reader.set_format(format);
    }
    let reader = reader
        .with_guessed_format()
        .map_err(|source| VideoError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
    let img = reader.decode().map_err(decode_err)?;
    let (width, height) = (img.width(), img.height());
    if width == 0 || height == 0 {
        return Err(VideoError::EmptyImage {
            path: path.to_path_buf(),
            width,
            height,
        });
    }
    let data = match img {
        image::DynamicImage::ImageRgb8(buf) => buf.into_raw(),
        other => other.into_rgb8().into_raw(),
    };
    Ok(Rgb8Image {
        width,
        height,
        data,
    })
}

/// Resizes an RGB8 image to `width × height` with Pillow's `Image.resize((W, H),
/// Image.BILINEAR)` algorithm (separable triangle filter whose support grows with the
/// downscale factor, i.e. antialiased; 8-bit intermediate between the horizontal and vertical
/// passes), which is what torchvision's `Resize` does on PIL images. fast_image_resize stores
/// the filter coefficients as `i16` with up to 15 fractional bits (Pillow-SIMD's scheme) where
/// Pillow uses `i32` with 22, so a sum that lands next to a rounding boundary can round the
/// other way: results match Pillow to within one grey level (1/255), on a minority of values
/// (golden tests in `tests/pipeline.rs`). A same-size request returns a copy.
///
/// `resizer` holds scratch buffers; reuse one per thread.
pub fn resize_rgb8(
    resizer: &mut Resizer,
    src: &Rgb8Image,
    width: u32,
    height: u32,
) -> Result<Rgb8Image> {
    resize_impl(resizer, src, width, height, Path::new("<memory>"))
}

pub(crate) fn resize_impl(
    resizer: &mut Resizer,
    src: &Rgb8Image,
    width: u32,
    height: u32,
    path: &Path,
) -> Result<Rgb8Image> {
    check_len("rgb8 resize input", &src.data, src.height, src.width)?;
    if width == 0 || height == 0 {
        return Err(VideoError::InvalidConfig {
            field: "resize size",
            expected: "width and height of at least 1 pixel".into(),
            found: format!("{width}x{height}"),
        });
    }
    if (src.width, src.height) == (width, height) {
        return Ok(src.clone());
    }
    let resize_err = |e: &dyn std::fmt::Display| VideoError::Resize {
        path: PathBuf::from(path),
        message: e.to_string(),
    };
    let src_view = ImageRef::new(src.width, src.height, &src.data, PixelType::U8x3)
        .map_err(|e| resize_err(&e))?;
    let mut dst = Image::new(width, height, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    resizer
        .resize(&src_view, &mut dst, &options)
        .map_err(|e| resize_err(&e))?;
    Ok(Rgb8Image {
        width,
        height,
        data: dst.into_vec(),
    })
}

/// 256-entry lookup tables, one per channel: `(v / 255 - mean[c]) / std[c]` in `f32`, exactly
/// torchvision's `ToTensor` + `Normalize` arithmetic.
pub(crate) struct NormLut([[f32; 256]; 3]);

impl NormLut {
    pub(crate) fn new(norm: &Normalization) -> Self {
        let mut lut = [[0.0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = (v as f32 / 255.0 - norm.mean[c]) / norm.std[c];
            }
        }
        Self(lut)
    }

    /// Writes the `(3, crop_h, crop_w)` window at `(top, left)` of `rgb` `(H, src_width, 3)`
    /// into `out`. The caller guarantees the window fits and `out.len() == 3 * crop_h * crop_w`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_chw(
        &self,
        rgb: &[u8],
        src_width: usize,
        top: usize,
        left: usize,
        crop_h: usize,
        crop_w: usize,
        out: &mut [f32],
    ) {
        let plane = crop_h * crop_w;
        let (r_out, rest) = out.split_at_mut(plane);
        let (g_out, b_out) = rest.split_at_mut(plane);
        let row_bytes = src_width * 3;
        let [lr, lg, lb] = &self.0;
        for y in 0..crop_h {
            let start = (top + y) * row_bytes + left * 3;
            let row = &rgb[start..start + crop_w * 3];
            let o = y * crop_w..(y + 1) * crop_w;
            for (((px, r), g), b) in row
                .chunks_exact(3)
                .zip(&mut r_out[o.clone()])
                .zip(&mut g_out[o.clone()])
                .zip(&mut b_out[o])
            {
                *r = lr[px[0] as usize];
                *g = lg[px[1] as usize];
                *b = lb[px[2] as usize];
            }
        }
    }
}

/// Normalises an in-memory RGB8 frame `(H, W, 3)` to `(3, H, W)` `f32`:
/// `(x / 255 - mean[c]) / std[c]`, exactly as the clip pipeline does (use it for synthetic
/// data so that it matches decoded frames bit for bit).
pub fn normalize_rgb8(
    rgb: &[u8],
    height: u32,
    width: u32,
    norm: &Normalization,
) -> Result<Vec<f32>> {
    let mut out = vec![0.0; rgb.len()];
    normalize_rgb8_into(rgb, height, width, norm, &mut out)?;
    Ok(out)
}

/// [`normalize_rgb8`] into a caller's buffer `out` of `3 * H * W` values `(3, H, W)` (e.g. one
/// frame of a `(T, 3, H, W)` batch).
pub fn normalize_rgb8_into(
    rgb: &[u8],
    height: u32,
    width: u32,
    norm: &Normalization,
    out: &mut [f32],
) -> Result<()> {
    norm.validate()?;
    check_len("rgb8 input", rgb, height, width)?;
    check_len("normalised output (3, H, W)", out, height, width)?;
    let (h, w) = (height as usize, width as usize);
    NormLut::new(norm).write_chw(rgb, w, 0, 0, h, w, out);
    Ok(())
}

/// Normalises `[0, 1]` float frames in place, `(…, 3, H, W)` channel-first (any number of
/// leading frames): `x ← (x - mean[c]) / std[c]`. For synthetic data generated as floats.
/// Errors if the length is not a multiple of `3 · plane_len` (`plane_len = H · W > 0`).
pub fn normalize_unit_chw_in_place(
    data: &mut [f32],
    plane_len: usize,
    norm: &Normalization,
) -> Result<()> {
    norm.validate()?;
    if plane_len == 0 || data.len() % (3 * plane_len) != 0 {
        return Err(VideoError::BufferSize {
            what: "(T, 3, H, W) f32 frames",
            shape: format!("a multiple of 3 * H * W = 3 * {plane_len}"),
            expected: (data.len() / (3 * plane_len.max(1)) + 1) * 3 * plane_len,
            found: data.len(),
        });
    }
    for frame in data.chunks_exact_mut(3 * plane_len) {
        for (c, plane) in frame.chunks_exact_mut(plane_len).enumerate() {
            let (m, s) = (norm.mean[c], norm.std[c]);
            plane.iter_mut().for_each(|x| *x = (*x - m) / s);
        }
    }
    Ok(())
}
