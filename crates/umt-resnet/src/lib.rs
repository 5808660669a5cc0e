//! ResNet encoders for UMT: torchvision's ResNet18/34 and ESANet's NonBottleneck1D variant on
//! candle, trainable (explicit `train` flag, BatchNorm batch statistics), with every stage's
//! feature map, the pooled embedding and torchvision's weight names.
//!
//! - [`ResNet`] (built from a [`ResNetConfig`]): `forward_t(x, train)` returns
//!   [`ResNetFeatures`] — the stem output (before the max pool), `layer1`..`layer4`, the
//!   embedding `(B, D)` (global average pool of `layer4`, the input of `fc`, which is the feature
//!   UMT distils, paper §4.1) and the logits when the config has `num_classes`. The stages can
//!   also be run one at a time ([`ResNet::forward_stem`], [`ResNet::stem_pool`],
//!   [`ResNet::forward_layer`], [`ResNet::embed`], [`ResNet::head`]) for ESANet's fusion.
//! - Presets: [`ResNetConfig::resnet18`], [`ResNetConfig::resnet34`],
//!   [`ResNetConfig::resnet34_nbt1d`] (ESANet), [`ResNetConfig::resnet18_nbt1d`]; narrow CPU
//!   variants with [`ResNetConfig::with_width`] and [`StemKind::Small`].
//! - [`VideoEncoder`]: the 2D ResNet per frame with temporal average pooling, `(B, T, C, H, W)`.
//! - Checkpoints: [`load_resnet`] loads a safetensors file strictly (a torchvision
//!   `state_dict` saved with safetensors loads with no renaming; `num_batches_tracked` keys are
//!   ignored), [`save_resnet`] writes one atomically with the config and normalisation in its
//!   metadata, [`load_resnet_from_checkpoint`] rebuilds the model from that metadata.
//!
//! Equivalence with torchvision (eval mode, 1e-4) is tested against fixtures produced by
//! `data-prep/golden/resnet/make_golden.py`; gradients of both blocks are checked by finite
//! differences in f64.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use umt_resnet::{ResNet, ResNetConfig, StemKind};
//!
//! // A narrow ResNet18 for 1-channel spectrograms, with a 10-class head.
//! let config = ResNetConfig::resnet18(1)
//!     .with_width(8)
//!     .with_stem(StemKind::Small)
//!     .with_num_classes(Some(10));
//! let vars = VarMap::new();
//! let model = ResNet::new(&config, VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))?;
//! let x = Tensor::randn(0f32, 1.0, (2, 1, 32, 32), &Device::Cpu)?; // (B, C, H, W)
//! let out = model.forward_t(&x, true)?;
//! assert_eq!(out.stem.dims(), &[2, 8, 16, 16]); // Small stem: no max pool
//! assert_eq!(out.layer4.dims(), &[2, 64, 2, 2]);
//! assert_eq!(out.embedding.dims(), &[2, 64]); // (B, 8·width)
//! assert_eq!(out.logits.map(|l| l.dims().to_vec()), Some(vec![2, 10]));
//! # Ok::<(), umt_resnet::Error>(())
//! ```

pub mod error;
pub mod resnet;
pub mod video;

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use umt_nn::checkpoint::{self, CheckpointMeta, Normalization};

pub use error::{Error, Result};
pub use resnet::{
    BasicBlock, Block, BlockKind, Downsample, NonBottleneck1D, ResNet, ResNetConfig,
    ResNetFeatures, StemKind,
};
pub use video::VideoEncoder;

/// The `architecture` string [`save_resnet`] writes into the checkpoint metadata.
pub const ARCHITECTURE: &str = "umt-resnet";

/// ImageNet normalisation of torchvision's ResNets (RGB mean and std on [0, 1] inputs).
pub fn imagenet_normalization() -> Normalization {
    Normalization {
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
    }
}

/// Builds the model described by `config` in f32 on `device` and loads `path` into it strictly:
/// a key the model lacks or a missing one is an error naming every such key
/// (`umt_nn::Error::MissingKeys` / `UnexpectedKeys`), a shape difference names the tensor
/// (`ShapeMismatch`), a truncated file is `Corrupt`. Returns the model, its variables (to
/// fine-tune) and the file's metadata.
pub fn load_resnet(
    config: &ResNetConfig,
    path: &Path,
    device: &Device,
) -> Result<(ResNet, VarMap, CheckpointMeta)> {
    let vars = VarMap::new();
    let model = ResNet::new(config, VarBuilder::from_varmap(&vars, DType::F32, device))?;
    let meta = checkpoint::load_varmap_strict(&vars, path)?;
    Ok((model, vars, meta))
}

/// Saves the variables of a model built from `config` atomically to `path`, with `config` (as
/// JSON) and the input normalisation in the metadata.
pub fn save_resnet(
    vars: &VarMap,
    config: &ResNetConfig,
    normalization: Option<Normalization>,
    path: &Path,
) -> Result<()> {
    let config_json = serde_json::to_value(config).map_err(|e| Error::Config {
        field: "config",
        problem: format!("cannot be serialised: {e}"),
    })?;
    let mut meta = CheckpointMeta::new(ARCHITECTURE, config_json);
    meta.normalization = normalization;
    Ok(checkpoint::save_varmap(vars, path, &meta)?)
}

/// Rebuilds and loads a model saved by [`save_resnet`], reading its config from the metadata.
/// A file without a `umt-resnet` config (e.g. a torchvision state dict) is an
/// [`Error::Config`]: use [`load_resnet`] with an explicit config for those.
pub fn load_resnet_from_checkpoint(
    path: &Path,
    device: &Device,
) -> Result<(ResNet, VarMap, CheckpointMeta)> {
    let meta = checkpoint::read_meta(path)?;
    if meta.architecture != ARCHITECTURE {
        return Err(Error::Config {
            field: "architecture",
            problem: format!(
                "of {} must be `{ARCHITECTURE}`, found `{}`",
                path.display(),
                meta.architecture
            ),
        });
    }
    let config: ResNetConfig =
        serde_json::from_value(meta.config.clone()).map_err(|e| Error::Config {
            field: "config",
            problem: format!("of {} does not parse: {e}", path.display()),
        })?;
    load_resnet(&config, path, device)
}
