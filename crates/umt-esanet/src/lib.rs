//! ESANet (Seichter et al., "Efficient RGB-D Semantic Segmentation for Indoor Scene Analysis",
//! ICRA 2021) on candle, for the RGB-D segmentation experiment of Uni-Modal Teacher (Du et al.,
//! §4.2, Tables 3 and 4): the two-encoder model with SE-add fusion of depth into RGB, its
//! uni-modal variants (the teachers), ESANet's deep-supervision loss, median-frequency class
//! weighting and dataset-wide confusion-matrix mIoU.
//!
//! - [`EsaNetConfig`]: every hyper-parameter (serde, unknown fields rejected); presets
//!   [`EsaNetConfig::paper`] (the reference NYUv2 model: R34-NBt1D, 480×640, 40 classes,
//!   46 955 840 parameters) and [`EsaNetConfig::cpu`] (same topology, ResNet18-NBt1D of width
//!   16, 96×128).
//! - [`EsaNet`]: `forward_t(rgb, depth, train)` → [`EsaNetOutput`] with the full-resolution
//!   logits, the 1/8, 1/16, 1/32 side outputs (training only) and the five per-stage features
//!   of each branch (the taps UMT distils). Weight names are the reference's
//!   (`encoder_rgb.layer1.0.conv3x1_1.weight`, `se_layer0.se_rgb.fc.0.weight`,
//!   `decoder.decoder_module_1.side_output.weight`, ...).
//! - [`loss`]: class-weighted cross-entropy with void ignored, summed over the four scales.
//! - [`metrics`]: [`ConfusionMatrix`] (IoU, mIoU, pixel accuracy) and [`ClassHistogram`]
//!   (median-frequency weights).
//! - [`summary`]: torchinfo-like tables (`cargo xtask model-summary`).
//!
//! Labels are NYUv2 `labels_40` values: 0 = void (ignored everywhere), `1..=K` = classes;
//! logit channel `c` predicts label `c + 1`. Input sizes must be multiples of 32.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use umt_esanet::{loss, EsaNet, EsaNetConfig};
//!
//! // The CPU preset at 64×64 with 5 classes.
//! let config = EsaNetConfig::cpu().with_input_size(64, 64).with_num_classes(5);
//! let vars = VarMap::new();
//! let model = EsaNet::new(&config, VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))?;
//! let rgb = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu)?; // (B, 3, H, W)
//! let depth = Tensor::randn(0f32, 1.0, (2, 1, 64, 64), &Device::Cpu)?; // (B, 1, H, W)
//! let out = model.forward_rgbd(&rgb, &depth, true)?;
//! assert_eq!(out.logits.dims(), &[2, 5, 64, 64]);
//! assert_eq!(out.side_outputs[0].dims(), &[2, 5, 8, 8]); // 1/8, 1/16, 1/32
//! assert_eq!(out.depth_features[4].dims(), &[2, 128, 2, 2]); // layer4 of the depth branch
//! let labels = Tensor::zeros((2, 64, 64), DType::U32, &Device::Cpu)?; // (B, H, W), 0 = void
//! let l = loss::deep_supervision_loss(&out, &labels, None)?; // all void: 0
//! assert_eq!(l.to_scalar::<f32>()?, 0.0);
//! # Ok::<(), umt_esanet::Error>(())
//! ```

pub mod config;
pub mod error;
pub mod layers;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod summary;

pub use config::{
    ContextModuleKind, EncoderKind, EsaNetConfig, FusionKind, Modality, UpsamplingMode,
};
pub use error::{Error, Result};
pub use metrics::{ClassHistogram, ConfusionMatrix};
pub use model::{Decoder, DecoderModule, EsaNet, EsaNetOutput};
pub use summary::{esanet_summary, resnet_summary, ModelSummary, SummaryRow};
