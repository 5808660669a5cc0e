//! ImageNet-pretrained encoder weights for ESANet (the paper's "ImageNet pre-train" rows of
//! Tables 3 and 4; `--imagenet-weights FILE`).
//!
//! The file is a safetensors checkpoint of one ResNet encoder with **torchvision names and a
//! 3-channel stem** (`conv1.weight (64, 3, 7, 7)`, `bn1.*`, `layer1.0.*`, ...):
//! - BasicBlock ResNet18/34 encoders: torchvision's ImageNet checkpoint as it is (its `fc.*`
//!   head is ignored);
//! - NonBottleneck1D encoders (ESANet's default R34-NBt1D): ESANet's own ImageNet checkpoint
//!   `r34_NBt1D.pth`, converted by `data-prep/golden/esanet/convert_imagenet_encoder.py`
//!   (every key holding `encoder.` is kept with everything up to `encoder.` removed, as
//!   ESANet's `load_pretrained_with_different_encoder_block` does; block names such as
//!   `layer1.0.conv3x1_1.weight` are the reference's and ours alike).
//!
//! Both encoders of an RGB-D model start from the same weights, as in the reference. The
//! depth encoder's stem takes 1 channel: its `conv1.weight` is the file's **summed** over the
//! three RGB input channels (ESANet `resnet.py`: `torch.sum(weights['conv1.weight'], axis=1,
//! keepdim=True)`), so depth `d` gives what the RGB stem gives for the grey image `(d, d, d)`.
//! BatchNorm running statistics are loaded with the weights. Loading is strict: an encoder
//! tensor the file lacks, a tensor of another shape, or a file tensor the encoder does not
//! have (other than `fc.*`) is an error naming the key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use umt_nn::checkpoint;

use crate::{Error, Result};

/// The encoder prefixes of ESANet's variables (`encoder_rgb.`, `encoder_depth.`, `encoder.`).
const ENCODER_PREFIXES: [&str; 3] = ["encoder_rgb.", "encoder_depth.", "encoder."];

/// The first convolution of a torchvision-named ResNet.
const FIRST_CONV: &str = "conv1.weight";

/// What identifies a weights file in `pretrained.json` (a folder of other weights is refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainedRecord {
    /// The file as given (absolute when it could be resolved).
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// FNV-1a 64 of its contents, hex.
    pub fnv1a64: String,
}

/// ImageNet encoder weights read from a safetensors file.
#[derive(Debug, Clone)]
pub struct PretrainedEncoder {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    record: PretrainedRecord,
}

impl PretrainedEncoder {
    /// Reads `path` onto `device` (tensors in the file's dtypes; converted when applied).
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(crate::error::io_err(path))?;
        let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let tensors = checkpoint::load_tensors(path, device)?;
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            record: PretrainedRecord {
                path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
                bytes: bytes.len() as u64,
                fnv1a64: format!("{hash:016x}"),
            },
        })
    }

    /// What identifies the file.
    pub fn record(&self) -> &PretrainedRecord {
        &self.record
    }

    /// Sets every encoder variable of `vars` (names `encoder_rgb.X`, `encoder_depth.X` or
    /// `encoder.X`) from the file's `X`; a 1-channel `conv1.weight` gets the file's summed
    /// over its input channels. Returns the number of variables set. Strict (see the module
    /// docs); nothing is set when a check fails.
    pub fn apply(&self, vars: &VarMap) -> Result<usize> {
        let data = vars
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the VarMap's lock is poisoned".into()))?;
        let mut updates = Vec::new();
        let mut prefixes_seen = Vec::new();
        for (name, var) in data.iter() {
            let Some((prefix, key)) = ENCODER_PREFIXES
                .iter()
                .find_map(|p| name.strip_prefix(p).map(|k| (*p, k)))
            else {
                continue;
            };
            if !prefixes_seen.contains(&prefix) {
                prefixes_seen.push(prefix);
            }
            let src = self.tensors.get(key).ok_or_else(|| Error::MissingTensor {
                path: self.path.clone(),
                key: key.to_string(),
            })?;
            let want = var.dims();
            let value =
                if key == FIRST_CONV && want.get(1) == Some(&1) && src.dims().get(1) == Some(&3) {
                    src.sum_keepdim(1)? // (O, 3, k, k) → (O, 1, k, k): ESANet's depth stem
                } else {
                    src.clone()
                };
            if value.dims() != want {
                return Err(Error::TensorShape {
                    path: self.path.clone(),
                    key: key.to_string(),
                    expected: want.to_vec(),
                    found: src.dims().to_vec(),
                });
            }
            updates.push((var.clone(), value));
        }
        if prefixes_seen.is_empty() {
            return Err(Error::InvalidConfig {
                field: "imagenet_weights",
                expected: "a model with an encoder (`encoder*.` variables)".into(),
                found: "none".into(),
            });
        }
        // Every file tensor (but the classifier) must belong to the encoder.
        let mut keys: Vec<&String> = self.tensors.keys().collect();
        keys.sort();
        for key in keys {
            if key.starts_with("fc.") {
                continue;
            }
            let known = prefixes_seen
                .iter()
                .all(|p| data.contains_key(&format!("{p}{key}")));
            if !known {
                return Err(Error::UnexpectedTensor {
                    path: self.path.clone(),
                    key: key.clone(),
                });
            }
        }
        let n = updates.len();
        for (var, value) in updates {
            var.set(&value.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(n)
    }
}
