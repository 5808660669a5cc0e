//! Serde configuration of the video front end.

use serde::{Deserialize, Serialize};

use crate::error::{Result, VideoError};

/// Per-channel normalisation `(x / 255 - mean) / std`, applied after resizing and cropping
/// (torchvision's `ToTensor()` followed by `Normalize(mean, std)`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// Per-channel mean of `[0, 1]` RGB values. Default: ImageNet `[0.485, 0.456, 0.406]`
    /// (torchvision's ImageNet-pretrained ResNet weights).
    pub mean: [f32; 3],
    /// Per-channel standard deviation, each finite and > 0. Default: ImageNet
    /// `[0.229, 0.224, 0.225]` (torchvision).
    pub std: [f32; 3],
}

impl Normalization {
    /// ImageNet statistics as used by torchvision's pretrained models.
    pub const IMAGENET: Self = Self {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// No normalisation: values stay in `[0, 1]` (mean 0, std 1).
    pub const IDENTITY: Self = Self {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    /// Checks that every mean is finite and every std finite and positive.
    pub fn validate(&self) -> Result<()> {
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err(VideoError::InvalidConfig {
                field: "normalization.mean",
                expected: "three finite values".into(),
                found: format!("{:?}", self.mean),
            });
        }
        if self.std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(VideoError::InvalidConfig {
                field: "normalization.std",
                expected: "three finite values > 0".into(),
                found: format!("{:?}", self.std),
            });
        }
        Ok(())
    }
}

impl Default for Normalization {
    fn default() -> Self {
        Self::IMAGENET
    }
}

/// A crop taken from the resized frame: random in training, centred in evaluation (the
/// torchvision habit `RandomCrop` / `CenterCrop`). One offset is drawn per clip, so every
/// frame of a clip is cropped at the same place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropConfig {
    /// Crop height in pixels, `1..=resize_height`. Typical: 224 from 256 (torchvision
    /// ImageNet recipe; the paper stores 256×256 frames, §4.1).
    pub height: u32,
    /// Crop width in pixels, `1..=resize_width`. Typical: 224 from 256.
    pub width: u32,
}

/// How a clip becomes a `(T, 3, H, W)` tensor: how many frames, at what size, with which
/// normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// Frames sampled per clip, `T`. Default 32 (paper §4.1: "32 frames uniformly sampled
    /// from each clip").
    pub num_frames: usize,
    /// Height every frame is resized to (Pillow-style antialiased bilinear). Default 224
    /// (ResNet-18 input size; the paper stores 256, see [`VideoConfig::paper_256_crop_224`]).
    pub resize_height: u32,
    /// Width every frame is resized to. Default 224 (as `resize_height`).
    pub resize_width: u32,
    /// Optional crop after resizing. Default `None` (no crop: the output is
    /// `resize_height × resize_width`).
    pub crop: Option<CropConfig>,
    /// Normalisation. Default ImageNet mean/std (torchvision's pretrained ResNets).
    pub normalization: Normalization,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            num_frames: 32,
            resize_height: 224,
            resize_width: 224,
            crop: None,
            normalization: Normalization::IMAGENET,
        }
    }
}

impl VideoConfig {
    /// The paper's storage size with the usual training crop: resize to 256×256 (paper
    /// §4.1), then crop 224×224 (random in training, centre in evaluation), 32 frames,
    /// ImageNet normalisation.
    pub fn paper_256_crop_224() -> Self {
        Self {
            resize_height: 256,
            resize_width: 256,
            crop: Some(CropConfig {
                height: 224,
                width: 224,
            }),
            ..Self::default()
        }
    }

    /// Output frame size `(H, W)`: the crop if any, else the resize size.
    pub fn output_hw(&self) -> (u32, u32) {
        match self.crop {
            Some(c) => (c.height, c.width),
            None => (self.resize_height, self.resize_width),
        }
    }

    /// Checks every field; the pipeline calls this before touching any file.
    pub fn validate(&self) -> Result<()> {
        if self.num_frames == 0 {
            return Err(VideoError::InvalidConfig {
                field: "num_frames",
                expected: "at least 1".into(),
                found: "0".into(),
            });
        }
        for (field, v) in [
            ("resize_height", self.resize_height),
            ("resize_width", self.resize_width),
        ] {
            if v == 0 {
                return Err(VideoError::InvalidConfig {
                    field,
                    expected: "at least 1 pixel".into(),
                    found: "0".into(),
                });
            }
        }
        if let Some(c) = self.crop {
            for (field, v, max) in [
                ("crop.height", c.height, self.resize_height),
                ("crop.width", c.width, self.resize_width),
            ] {
                if v == 0 || v > max {
                    return Err(VideoError::InvalidConfig {
                        field,
                        expected: format!("1..={max} (the resized size)"),
                        found: v.to_string(),
                    });
                }
            }
        }
        self.normalization.validate()
    }
}
