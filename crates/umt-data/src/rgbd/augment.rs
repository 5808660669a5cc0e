//! ESANet's preprocessing (github.com/TUI-NICR/ESANet `src/preprocessing.py`), on plain
//! buffers, deterministic from a seed.
//!
//! **Training** ([`augment_train`]), in the reference order:
//! 1. `RandomRescale((1.0, 1.4))`: s ~ U(1.0, 1.4), size `round(s·H) × round(s·W)`; RGB
//!    bilinear (`cv2.INTER_LINEAR`), depth and labels nearest (`cv2.INTER_NEAREST`).
//! 2. `RandomCrop(H_net, W_net)`: if the image is not larger than the crop in *both* sizes
//!    (`h <= crop_h or w <= crop_w`) it is resized to the crop size instead (same
//!    interpolations); otherwise the origin is `randint(0, h − crop_h)`, `randint(0, w −
//!    crop_w)` (upper bound exclusive, as `np.random.randint`).
//! 3. `RandomHSV((0.9, 1.1), (0.9, 1.1), (25, 25))` on RGB only: matplotlib's `rgb_to_hsv` on
//!    values in `[0, 255]` (so V is in `[0, 255]`), H × U(0.9, 1.1) and S × U(0.9, 1.1) clipped
//!    to `[0, 1]`, V + U(−25, 25) clipped to `[0, 255]`, back with `hsv_to_rgb`.
//! 4. `RandomFlip`: horizontal flip of RGB, depth and labels when `rand() > 0.5`.
//!
//! **Validation** ([`resize_eval`]): `Rescale(H_net, W_net)`, RGB bilinear, depth and labels
//! nearest (a no-op when the image already has the network size, as NYUv2 at 480×640).
//!
//! **Normalisation** ([`Normalization`]): RGB / 255 then ImageNet mean/std; depth in mm
//! `(d − 2841.94941272766) / 1417.2594281672277` (NYUv2 train-set statistics of the refined
//! depth, used for raw depth too); in raw-depth mode pixels that were 0 are 0 again afterwards.
//!
//! Differences from the reference, on purpose: values stay `f32` between steps (cv2 rounds
//! the resized RGB to `u8`); the RNG is ChaCha8 seeded per sample, not NumPy's global state.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::RgbdSample;
use crate::{Error, Result};

/// Training augmentation settings. Defaults are ESANet's NYUv2 values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Network input height (crop height). Default 480 (ESANet `--height 480`).
    pub height: usize,
    /// Network input width (crop width). Default 640 (ESANet `--width 640`).
    pub width: usize,
    /// Smallest random rescale factor. Default 1.0 (ESANet `train_random_rescale=(1.0, 1.4)`).
    pub scale_min: f64,
    /// Largest random rescale factor. Default 1.4 (ESANet).
    pub scale_max: f64,
    /// Hue factor range low end. Default 0.9 (ESANet `RandomHSV((0.9, 1.1), ...)`).
    pub hue_factor_min: f64,
    /// Hue factor range high end. Default 1.1 (ESANet).
    pub hue_factor_max: f64,
    /// Saturation factor range low end. Default 0.9 (ESANet).
    pub saturation_factor_min: f64,
    /// Saturation factor range high end. Default 1.1 (ESANet).
    pub saturation_factor_max: f64,
    /// Value shift: V + U(−x, x) on the `[0, 255]` scale. Default 25 (ESANet `(25, 25)`).
    pub value_shift_max: f64,
    /// Whether to flip horizontally with probability 0.5. Default true (ESANet `RandomFlip`).
    pub horizontal_flip: bool,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            height: 480,
            width: 640,
            scale_min: 1.0,
            scale_max: 1.4,
            hue_factor_min: 0.9,
            hue_factor_max: 1.1,
            saturation_factor_min: 0.9,
            saturation_factor_max: 1.1,
            value_shift_max: 25.0,
            horizontal_flip: true,
        }
    }
}

impl AugmentConfig {
    /// ESANet's augmentation for a network input of `height × width`.
    pub fn for_size(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            ..Self::default()
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        let bad = super::invalid_config;
        if self.height == 0 || self.width == 0 {
            return bad(
                "augment.height/width",
                "> 0",
                format!("{}x{}", self.height, self.width),
            );
        }
        if !(self.scale_min > 0.0 && self.scale_min <= self.scale_max && self.scale_max < 16.0) {
            return bad(
                "augment.scale_min/scale_max",
                "0 < scale_min <= scale_max < 16",
                format!("{} / {}", self.scale_min, self.scale_max),
            );
        }
        for (field, lo, hi) in [
            (
                "augment.hue_factor_min/max",
                self.hue_factor_min,
                self.hue_factor_max,
            ),
            (
                "augment.saturation_factor_min/max",
                self.saturation_factor_min,
                self.saturation_factor_max,
            ),
        ] {
            if !(lo >= 0.0 && lo <= hi && hi.is_finite()) {
                return bad(field, "0 <= min <= max, finite", format!("{lo} / {hi}"));
            }
        }
        if !(self.value_shift_max >= 0.0 && self.value_shift_max <= 255.0) {
            return bad(
                "augment.value_shift_max",
                "in [0, 255]",
                self.value_shift_max.to_string(),
            );
        }
        Ok(())
    }
}

/// Normalisation constants (they travel with a checkpoint's config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// RGB mean after /255 (ImageNet, torchvision).
    pub rgb_mean: [f32; 3],
    /// RGB std after /255 (ImageNet, torchvision).
    pub rgb_std: [f32; 3],
    /// Depth mean in mm.
    pub depth_mean_mm: f32,
    /// Depth std in mm.
    pub depth_std_mm: f32,
    /// Raw-depth mode: pixels that were 0 (no measurement) are 0 after normalisation.
    pub raw_depth: bool,
}

impl Normalization {
    /// ESANet's NYUv2 constants: ImageNet RGB mean (0.485, 0.456, 0.406) / std (0.229, 0.224,
    /// 0.225), refined-depth train statistics 2841.94941272766 / 1417.2594281672277 mm
    /// (`src/datasets/nyuv2/nyuv2.py`), refined depth (ESANet default, `--raw_depth` off).
    pub fn nyuv2() -> Self {
        Self {
            rgb_mean: [0.485, 0.456, 0.406],
            rgb_std: [0.229, 0.224, 0.225],
            depth_mean_mm: 2841.9495,
            depth_std_mm: 1417.2594,
            raw_depth: false,
        }
    }

    /// Normalises a raw sample in place (RGB `[0, 255]` → ImageNet-normalised, depth mm →
    /// standardised). `(3, H, W)` and `(1, H, W)` keep their shapes.
    pub fn apply(&self, sample: &mut RgbdSample) {
        let plane = sample.height * sample.width;
        for (c, chunk) in sample.rgb.chunks_mut(plane.max(1)).enumerate().take(3) {
            let (m, s) = (self.rgb_mean[c], self.rgb_std[c]);
            for v in chunk {
                *v = (*v / 255.0 - m) / s;
            }
        }
        for d in &mut sample.depth {
            let missing = *d == 0.0;
            *d = (*d - self.depth_mean_mm) / self.depth_std_mm;
            if self.raw_depth && missing {
                *d = 0.0;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Index arithmetic (property-tested in tests/rgbd_augment.rs).

/// Size after random rescale by `scale`: `(round(scale·h), round(scale·w))` (ESANet
/// `int(round(target_scale * image.shape[0]))`; Python rounds half to even, which only matters
/// on exact halves).
pub fn scaled_size(height: usize, width: usize, scale: f64) -> (usize, usize) {
    let r = |n: usize| (scale * n as f64).round_ties_even().max(1.0) as usize;
    (r(height), r(width))
}

/// What `RandomCrop` does to an image of `h × w` for a crop of `crop_h × crop_w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CropPlan {
    /// The image is not larger than the crop in both sizes: resize it to the crop size.
    Resize,
    /// Crop at this origin; `top < h − crop_h` and `left < w − crop_w`.
    Crop {
        /// First row.
        top: usize,
        /// First column.
        left: usize,
    },
}

/// ESANet's `RandomCrop` decision, drawing `top` then `left` from `rng`.
pub fn crop_plan(h: usize, w: usize, crop_h: usize, crop_w: usize, rng: &mut impl Rng) -> CropPlan {
    if h <= crop_h || w <= crop_w {
        return CropPlan::Resize;
    }
    let top = rng.random_range(0..h - crop_h);
    let left = rng.random_range(0..w - crop_w);
    CropPlan::Crop { top, left }
}

/// The source index `cv2.INTER_NEAREST` reads for output index `dst`: `floor(dst · in / out)`,
/// clamped to `in − 1`.
pub fn nearest_source(dst: usize, in_len: usize, out_len: usize) -> usize {
    if out_len == 0 || in_len == 0 {
        return 0;
    }
    ((dst * in_len) / out_len).min(in_len - 1)
}

/// The two source indices and the weight of the second that `cv2.INTER_LINEAR` uses for
/// output index `dst` (half-pixel centres, clamped at the borders, no antialiasing).
pub fn linear_source(dst: usize, in_len: usize, out_len: usize) -> (usize, usize, f32) {
    if in_len <= 1 || out_len == 0 {
        return (0, 0, 0.0);
    }
    let f = (dst as f64 + 0.5) * in_len as f64 / out_len as f64 - 0.5;
    if f <= 0.0 {
        return (0, 0, 0.0);
    }
    let i0 = f.floor() as usize;
    if i0 >= in_len - 1 {
        return (in_len - 1, in_len - 1, 0.0);
    }
    (i0, i0 + 1, (f - i0 as f64) as f32)
}

/// Nearest-neighbour resize of `channels` planes. `(C, h, w)` → `(C, oh, ow)`. Output values
/// are always copies of input values (labels are never interpolated).
pub fn resize_nearest<T: Copy>(
    data: &[T],
    channels: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) -> Vec<T> {
    let cols: Vec<usize> = (0..ow).map(|x| nearest_source(x, w, ow)).collect();
    let mut out = Vec::with_capacity(channels * oh * ow);
    for c in 0..channels {
        let plane = &data[c * h * w..(c + 1) * h * w];
        for y in 0..oh {
            let row = &plane[nearest_source(y, h, oh) * w..][..w];
            out.extend(cols.iter().map(|&x| row[x]));
        }
    }
    out
}

/// Bilinear resize (`cv2.INTER_LINEAR`) of `channels` planes. `(C, h, w)` → `(C, oh, ow)`.
pub fn resize_bilinear(
    data: &[f32],
    channels: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    let cols: Vec<(usize, usize, f32)> = (0..ow).map(|x| linear_source(x, w, ow)).collect();
    let mut out = Vec::with_capacity(channels * oh * ow);
    for c in 0..channels {
        let plane = &data[c * h * w..(c + 1) * h * w];
        for y in 0..oh {
            let (y0, y1, fy) = linear_source(y, h, oh);
            let (r0, r1) = (&plane[y0 * w..][..w], &plane[y1 * w..][..w]);
            out.extend(cols.iter().map(|&(x0, x1, fx)| {
                let top = r0[x0] + (r0[x1] - r0[x0]) * fx;
                let bottom = r1[x0] + (r1[x1] - r1[x0]) * fx;
                top + (bottom - top) * fy
            }));
        }
    }
    out
}

/// Crops `channels` planes. `(C, h, w)` → `(C, ch, cw)`; the window must fit (`top + ch <= h`,
/// `left + cw <= w`).
#[allow(clippy::too_many_arguments)]
pub fn crop<T: Copy>(
    data: &[T],
    channels: usize,
    h: usize,
    w: usize,
    top: usize,
    left: usize,
    ch: usize,
    cw: usize,
) -> Vec<T> {
    let mut out = Vec::with_capacity(channels * ch * cw);
    for c in 0..channels {
        for y in top..top + ch {
            out.extend_from_slice(&data[(c * h + y) * w + left..][..cw]);
        }
    }
    out
}

/// Mirrors `channels` planes left-right in place. `(C, h, w)`
pub fn flip_horizontal<T>(data: &mut [T], w: usize) {
    if w == 0 {
        return;
    }
    for row in data.chunks_mut(w) {
        row.reverse();
    }
}

/// matplotlib's `rgb_to_hsv` for one pixel on any scale: returns (h in `[0, 1)`, s in
/// `[0, 1]`, v = max(r, g, b)). Ties resolve as matplotlib's (blue over green over red).
pub fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let v = r.max(g).max(b);
    let delta = v - r.min(g).min(b);
    let s = if v > 0.0 { delta / v } else { 0.0 };
    if delta <= 0.0 {
        return (0.0, s, v);
    }
    let h = if b == v {
        4.0 + (r - g) / delta
    } else if g == v {
        2.0 + (b - r) / delta
    } else {
        (g - b) / delta
    };
    ((h / 6.0).rem_euclid(1.0), s, v)
}

/// matplotlib's `hsv_to_rgb` for one pixel (h, s in `[0, 1]`, v on any scale).
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    if s == 0.0 {
        return (v, v, v);
    }
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match (i as i64).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// ESANet's `RandomHSV` with fixed factors on `(3, H, W)` RGB in `[0, 255]`, in place.
pub fn hsv_jitter(rgb: &mut [f32], plane: usize, hue: f32, sat: f32, value_shift: f32) {
    let (r, rest) = rgb.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let (h, s, v) = rgb_to_hsv(*r, *g, *b);
        let h = (h * hue).clamp(0.0, 1.0);
        let s = (s * sat).clamp(0.0, 1.0);
        let v = (v + value_shift).clamp(0.0, 255.0);
        (*r, *g, *b) = hsv_to_rgb(h, s, v);
    }
}

fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// Resizes a sample: RGB bilinear, depth and labels nearest (ESANet's `Rescale`).
fn resize_sample(s: &RgbdSample, oh: usize, ow: usize) -> RgbdSample {
    let (h, w) = (s.height, s.width);
    RgbdSample {
        rgb: resize_bilinear(&s.rgb, 3, h, w, oh, ow),
        depth: resize_nearest(&s.depth, 1, h, w, oh, ow),
        labels: resize_nearest(&s.labels, 1, h, w, oh, ow),
        height: oh,
        width: ow,
    }
}

/// ESANet's training augmentation of a raw sample (RGB `[0, 255]`, depth mm) to
/// `cfg.height × cfg.width`, deterministic from `seed`. `(3, H, W)`, `(1, H, W)`, `(H, W)` →
/// `(3, h, w)`, `(1, h, w)`, `(h, w)` with `(h, w) = (cfg.height, cfg.width)`.
pub fn augment_train(sample: &RgbdSample, cfg: &AugmentConfig, seed: u64) -> Result<RgbdSample> {
    cfg.validate()?;
    sample.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // 1. random rescale
    let scale = uniform(&mut rng, cfg.scale_min, cfg.scale_max);
    let (sh, sw) = scaled_size(sample.height, sample.width, scale);
    let scaled = resize_sample(sample, sh, sw); // (C, sh, sw)
                                                // 2. random crop (or resize when not larger)
    let (ch, cw) = (cfg.height, cfg.width);
    let mut out = match crop_plan(sh, sw, ch, cw, &mut rng) {
        CropPlan::Resize => resize_sample(&scaled, ch, cw),
        CropPlan::Crop { top, left } => RgbdSample {
            rgb: crop(&scaled.rgb, 3, sh, sw, top, left, ch, cw),
            depth: crop(&scaled.depth, 1, sh, sw, top, left, ch, cw),
            labels: crop(&scaled.labels, 1, sh, sw, top, left, ch, cw),
            height: ch,
            width: cw,
        },
    }; // (C, ch, cw)
       // 3. HSV jitter, RGB only
    let hue = uniform(&mut rng, cfg.hue_factor_min, cfg.hue_factor_max) as f32;
    let sat = uniform(
        &mut rng,
        cfg.saturation_factor_min,
        cfg.saturation_factor_max,
    ) as f32;
    let shift = uniform(&mut rng, -cfg.value_shift_max, cfg.value_shift_max) as f32;
    hsv_jitter(&mut out.rgb, ch * cw, hue, sat, shift);
    // 4. horizontal flip
    if cfg.horizontal_flip && rng.random::<f64>() > 0.5 {
        flip_horizontal(&mut out.rgb, cw);
        flip_horizontal(&mut out.depth, cw);
        flip_horizontal(&mut out.labels, cw);
    }
    Ok(out)
}

/// Validation preprocessing: resize to `height × width` (RGB bilinear, depth and labels
/// nearest). For the reference mIoU protocol keep the original labels and upsample the logits
/// instead (`docs/rgbd-data.md`).
pub fn resize_eval(sample: &RgbdSample, height: usize, width: usize) -> Result<RgbdSample> {
    sample.validate()?;
    if height == 0 || width == 0 {
        return Err(Error::InvalidConfig {
            field: "eval height/width",
            expected: "> 0".into(),
            found: format!("{height}x{width}"),
        });
    }
    if (sample.height, sample.width) == (height, width) {
        return Ok(sample.clone());
    }
    Ok(resize_sample(sample, height, width))
}
