//! RGB-D semantic segmentation data (paper §4.2, ESANet on NYUv2): the NYUv2 loader for the
//! layout ESANet's `prepare_dataset.py` writes, the embedded synthetic room generator that runs
//! on a CPU, ESANet's training augmentation and validation preprocessing, normalisation, and
//! batching into flat buffers. No tensor library: everything is plain `Vec`s with documented
//! shapes (row-major).
//!
//! **Labels.** A label map holds `u8` values: 0 = void (unlabelled), `1..=K` = classes. The
//! network predicts K channels, channel `c` = label `c + 1` (NYUv2: channel 0 = wall); void is
//! ignored by the loss and the metrics. [`label_to_class`] and [`targets_i64`] do the mapping
//! (void → [`IGNORE_INDEX`] = −1, as ESANet's `label − 1` with `ignore_index=-1`).
//!
//! **Values.** A raw [`RgbdSample`] (as loaded or generated) holds RGB in `[0, 255]` and depth
//! in millimetres; [`augment::Normalization`] turns it into network input.
//!
//! ```
//! use umt_data::rgbd::{synthetic::{SyntheticRgbd, SyntheticRgbdConfig}, RgbdBatch, RgbdDataset, Split};
//! use umt_data::rgbd::augment::{augment_train, AugmentConfig, Normalization};
//!
//! let cfg = SyntheticRgbdConfig { train_samples: 4, test_samples: 2, ..Default::default() };
//! let data = SyntheticRgbd::new(&cfg, Split::Train, 0)?;
//! let aug = AugmentConfig::for_size(data.height(), data.width());
//! let norm = Normalization::nyuv2();
//! let samples = (0..2)
//!     .map(|i| {
//!         let mut s = augment_train(&data.sample(i)?, &aug, 7 + i as u64)?;
//!         norm.apply(&mut s);
//!         Ok(s)
//!     })
//!     .collect::<umt_data::Result<Vec<_>>>()?;
//! let batch = RgbdBatch::from_samples(&samples)?;
//! assert_eq!(batch.rgb_shape(), [2, 3, cfg.height, cfg.width]); // (B, 3, H, W)
//! assert_eq!(batch.depth_shape(), [2, 1, cfg.height, cfg.width]); // (B, 1, H, W)
//! assert_eq!(batch.labels.len(), 2 * cfg.height * cfg.width); // (B, H, W)
//! # Ok::<(), umt_data::Error>(())
//! ```

pub mod augment;
pub mod io;
pub mod nyuv2;
pub mod synthetic;

use crate::{Error, Result};

/// The target value of void pixels in [`targets_i64`] (ESANet: `label − 1`, ignored by the CE).
pub const IGNORE_INDEX: i64 = -1;

/// Which split of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The training split (NYUv2: 795 images).
    Train,
    /// The test split (NYUv2: 654 images).
    Test,
}

impl Split {
    /// `"train"` or `"test"`: the folder and list-file name of the split.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// One RGB-D sample as plain buffers, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbdSample {
    /// RGB, channel-major: raw values in `[0, 255]`, or normalised after
    /// [`augment::Normalization::apply`]. `(3, H, W)`
    pub rgb: Vec<f32>,
    /// Depth: raw millimetres (0 = no measurement), or normalised. `(1, H, W)`
    pub depth: Vec<f32>,
    /// Labels, 0 = void, `1..=K` classes. `(H, W)`
    pub labels: Vec<u8>,
    /// Height H.
    pub height: usize,
    /// Width W.
    pub width: usize,
}

impl RgbdSample {
    /// Checks that the buffers have the lengths `height` and `width` imply.
    pub fn validate(&self) -> Result<()> {
        let plane = self.height * self.width;
        for (what, expected, found) in [
            ("rgb (3, H, W)", 3 * plane, self.rgb.len()),
            ("depth (1, H, W)", plane, self.depth.len()),
            ("labels (H, W)", plane, self.labels.len()),
        ] {
            if expected != found {
                return Err(Error::ShapeMismatch {
                    what,
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }
}

/// A source of RGB-D samples (NYUv2 on disk, the synthetic generator).
pub trait RgbdDataset: Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of classes K (labels `1..=K`, 0 = void).
    fn num_classes(&self) -> usize;
    /// Class names, index `c` = label `c + 1` = network channel `c`.
    fn class_names(&self) -> Vec<String>;
    /// Loads or renders sample `index`, unnormalised (RGB in `[0, 255]`, depth in mm).
    fn sample(&self, index: usize) -> Result<RgbdSample>;
}

/// `Err(InvalidConfig)` for `field`: what a valid value looks like and the value found.
pub(crate) fn invalid_config(field: &'static str, expected: &str, found: String) -> Result<()> {
    Err(Error::InvalidConfig {
        field,
        expected: expected.into(),
        found,
    })
}

/// The network's class index of a label: `label − 1`, `None` for void (0).
pub fn label_to_class(label: u8) -> Option<usize> {
    (label > 0).then(|| usize::from(label) - 1)
}

/// Targets for a cross-entropy with `ignore_index = -1`: `label − 1`, void → [`IGNORE_INDEX`].
/// `(H, W)` → `(H, W)`.
pub fn targets_i64(labels: &[u8]) -> Vec<i64> {
    labels.iter().map(|&l| i64::from(l) - 1).collect()
}

/// Nearest-neighbour downscaled labels for deep supervision (ESANet's `MultiScaleLabel`:
/// `cv2.resize(label, (w // rate, h // rate), INTER_NEAREST)`). `(H, W)` → `(H/rate, W/rate)`.
pub fn downsample_labels(labels: &[u8], height: usize, width: usize, rate: usize) -> Vec<u8> {
    let (oh, ow) = (height / rate.max(1), width / rate.max(1));
    augment::resize_nearest(labels, 1, height, width, oh, ow)
}

/// A batch of samples in flat buffers (row-major), ready to become tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbdBatch {
    /// `(B, 3, H, W)`
    pub rgb: Vec<f32>,
    /// `(B, 1, H, W)`
    pub depth: Vec<f32>,
    /// Labels, 0 = void. `(B, H, W)`
    pub labels: Vec<u8>,
    /// Batch size B.
    pub batch_size: usize,
    /// Height H.
    pub height: usize,
    /// Width W.
    pub width: usize,
}

impl RgbdBatch {
    /// Stacks samples of one size. An empty slice or a size mismatch is an error.
    pub fn from_samples(samples: &[RgbdSample]) -> Result<Self> {
        let first = samples.first().ok_or(Error::ShapeMismatch {
            what: "RGB-D batch (at least one sample)",
            expected: 1,
            found: 0,
        })?;
        let (h, w) = (first.height, first.width);
        let plane = h * w;
        let b = samples.len();
        let mut batch = RgbdBatch {
            rgb: Vec::with_capacity(b * 3 * plane),
            depth: Vec::with_capacity(b * plane),
            labels: Vec::with_capacity(b * plane),
            batch_size: b,
            height: h,
            width: w,
        };
        for s in samples {
            s.validate()?;
            if (s.height, s.width) != (h, w) {
                return Err(Error::ShapeMismatch {
                    what: "RGB-D batch sample H x W (all samples must have one size)",
                    expected: plane,
                    found: s.height * s.width,
                });
            }
            batch.rgb.extend_from_slice(&s.rgb);
            batch.depth.extend_from_slice(&s.depth);
            batch.labels.extend_from_slice(&s.labels);
        }
        Ok(batch)
    }

    /// `[B, 3, H, W]`
    pub fn rgb_shape(&self) -> [usize; 4] {
        [self.batch_size, 3, self.height, self.width]
    }

    /// `[B, 1, H, W]`
    pub fn depth_shape(&self) -> [usize; 4] {
        [self.batch_size, 1, self.height, self.width]
    }

    /// `[B, H, W]`
    pub fn labels_shape(&self) -> [usize; 3] {
        [self.batch_size, self.height, self.width]
    }
}
