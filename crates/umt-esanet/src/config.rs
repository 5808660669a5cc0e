//! The ESANet configuration: every hyper-parameter of the model as a serde struct, with the
//! NYUv2 default of the reference implementation (github.com/TUI-NICR/ESANet, `args.py` and the
//! README command; `shared/notes/esanet.md`) and a CPU preset of the same topology.

use serde::{Deserialize, Serialize};
use umt_resnet::{BlockKind, ResNetConfig};

use crate::{Error, Result};

/// Which inputs the model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Modality {
    /// RGB and depth, two encoders with depth fused into RGB (`ESANet`, `--modality rgbd`).
    #[serde(rename = "rgbd")]
    RgbD,
    /// RGB only, one encoder (`ESANetOneModality`, `--modality rgb`): a uni-modal teacher.
    #[serde(rename = "rgb")]
    Rgb,
    /// Depth only, one 1-channel encoder (`ESANetOneModality`, `--modality depth`).
    #[serde(rename = "depth")]
    Depth,
}

impl Modality {
    /// The name used in summaries and errors (`esanet`, `esanet-rgb`, `esanet-depth`).
    pub fn model_name(self) -> &'static str {
        match self {
            Self::RgbD => "esanet",
            Self::Rgb => "esanet-rgb",
            Self::Depth => "esanet-depth",
        }
    }
}

/// Encoder depth (`--encoder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncoderKind {
    /// ResNet18 layout, blocks [2, 2, 2, 2].
    #[serde(rename = "resnet18")]
    ResNet18,
    /// ResNet34 layout, blocks [3, 4, 6, 3] (the NYUv2 default).
    #[serde(rename = "resnet34")]
    ResNet34,
}

/// How depth is fused into the RGB encoder (`--fuse_depth_in_rgb_encoder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FusionKind {
    /// `SE_rgb(rgb) + SE_depth(depth)` with a squeeze-and-excitation module per modality and
    /// fusion point (the default).
    #[serde(rename = "se-add")]
    SeAdd,
    /// Plain `rgb + depth` (no parameters).
    #[serde(rename = "add")]
    Add,
}

/// The context module on the 1/32 features (`--context_module`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContextModuleKind {
    /// PSPNet's pyramid pooling module with [`EsaNetConfig::context_bins`].
    #[serde(rename = "ppm")]
    Ppm,
    /// No context module: the fused 1/32 features go straight into the decoder.
    #[serde(rename = "none")]
    None,
}

/// The ×2 upsampling of the decoder (`--upsampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpsamplingMode {
    /// Nearest ×2, then a depthwise 3×3 convolution with zero padding, initialised to the
    /// bilinear-like binomial kernel (the NYUv2 default).
    #[serde(rename = "learned-3x3-zeropad")]
    Learned3x3ZeroPad,
    /// The same with replicate padding.
    #[serde(rename = "learned-3x3")]
    Learned3x3,
    /// Bilinear ×2 (`align_corners = false`), no parameters.
    #[serde(rename = "bilinear")]
    Bilinear,
    /// Nearest ×2, no parameters.
    #[serde(rename = "nearest")]
    Nearest,
}

impl UpsamplingMode {
    /// Whether the mode has a learned depthwise convolution.
    pub fn is_learned(self) -> bool {
        matches!(self, Self::Learned3x3ZeroPad | Self::Learned3x3)
    }
}

/// Every hyper-parameter of an ESANet. Missing fields take the value of
/// [`EsaNetConfig::paper`] (the reference NYUv2 default); unknown fields are an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EsaNetConfig {
    /// Inputs: `rgbd` (ESANet), `rgb` or `depth` (uni-modal teachers). Default `rgbd`
    /// (README command: `--modality rgbd`).
    pub modality: Modality,
    /// Encoder depth. Default `resnet34` (README: `--encoder resnet34`).
    pub encoder: EncoderKind,
    /// Residual block of the encoders. Default `non_bottleneck_1d` (README:
    /// `--encoder_block NonBottleneck1D`).
    pub encoder_block: BlockKind,
    /// Width of the stem and `layer1`; the stages are `base_width · [1, 2, 4, 8]`. Default 64
    /// (ResNet, He et al. Table 1); CPU presets narrow it, keeping the topology.
    pub base_width: usize,
    /// Number of output classes, void excluded. Default 40 (NYUv2 `labels_40`, notes §4).
    pub num_classes: usize,
    /// Input height in pixels, a multiple of 32. Default 480 (README: `--height 480`).
    pub height: usize,
    /// Input width in pixels, a multiple of 32. Default 640 (README: `--width 640`).
    pub width: usize,
    /// Fusion of depth into RGB (RGB-D only). Default `se-add` (README:
    /// `--fuse_depth_in_rgb_encoder SE-add`).
    pub fusion: FusionKind,
    /// Uni-modal models only: an SE module after each encoder stage, as `ESANetOneModality`'s
    /// `weighting_in_encoder='SE-add'`. Default `false` ("option A" of notes §7: the teacher
    /// encoder is then structurally the student's depth branch; our choice, the paper is silent).
    pub unimodal_se: bool,
    /// Context module. Default `ppm` (README: `--context_module ppm`).
    pub context_module: ContextModuleKind,
    /// Pyramid bins of the context module (square pools `b×b`). Default `[1, 5]` (reference
    /// `get_context_module`: `ppm` means bins (1, 5); `ppm-1-2-4-8` is `[1, 2, 4, 8]`).
    pub context_bins: Vec<usize>,
    /// Widths of decoder modules 1, 2, 3 (at 1/32, 1/16, 1/8). Default `[512, 256, 128]`
    /// (README: `--decoder_channels_mode decreasing`).
    pub decoder_channels: [usize; 3],
    /// NonBottleneck1D blocks per decoder module. Default `[3, 3, 3]` (README:
    /// `--nr_decoder_blocks 3`).
    pub decoder_blocks: [usize; 3],
    /// Decoder ×2 upsampling. Default `learned-3x3-zeropad` (README: `--upsampling
    /// learned-3x3-zeropad`).
    pub upsampling: UpsamplingMode,
}

impl Default for EsaNetConfig {
    /// [`EsaNetConfig::paper`].
    fn default() -> Self {
        Self::paper()
    }
}

/// Input channels of the RGB encoder.
pub const RGB_CHANNELS: usize = 3;
/// Input channels of the depth encoder.
pub const DEPTH_CHANNELS: usize = 1;
/// Total stride of the encoder (`layer4` runs at 1/32).
pub const OUTPUT_STRIDE: usize = 32;
/// Reduction of the squeeze-and-excitation modules (reference `SqueezeAndExcitation`).
pub const SE_REDUCTION: usize = 16;

impl EsaNetConfig {
    /// The reference NYUv2 model: ESANet-R34-NBt1D at 480×640, 40 classes, SE-add fusion, PPM
    /// (1, 5), decoder [512, 256, 128] × 3 NBt1D, learned-3x3-zeropad upsampling (notes §2).
    /// 46 955 840 parameters.
    pub fn paper() -> Self {
        Self {
            modality: Modality::RgbD,
            encoder: EncoderKind::ResNet34,
            encoder_block: BlockKind::NonBottleneck1D,
            base_width: 64,
            num_classes: 40,
            height: 480,
            width: 640,
            fusion: FusionKind::SeAdd,
            unimodal_se: false,
            context_module: ContextModuleKind::Ppm,
            context_bins: vec![1, 5],
            decoder_channels: [512, 256, 128],
            decoder_blocks: [3, 3, 3],
            upsampling: UpsamplingMode::Learned3x3ZeroPad,
        }
    }

    /// A CPU-sized model with ESANet's whole topology (notes §6, "scale down only"): ResNet18
    /// NBt1D encoders of width 16 (stages 16, 32, 64, 128), decoder `[128, 64, 32]` (the paper's
    /// `[8w, 4w, 2w]` ratio) with one NBt1D per module, 96×128 input, 40 classes. Two encoders,
    /// SE-add at all five points, skips, PPM (1, 5), learned upsampling and deep supervision are
    /// all kept.
    pub fn cpu() -> Self {
        Self {
            encoder: EncoderKind::ResNet18,
            base_width: 16,
            height: 96,
            width: 128,
            decoder_channels: [128, 64, 32],
            decoder_blocks: [1, 1, 1],
            ..Self::paper()
        }
    }

    /// A preset by name: `paper` or `cpu`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "paper" => Ok(Self::paper()),
            "cpu" => Ok(Self::cpu()),
            other => Err(Error::Config {
                field: "preset",
                problem: format!("must be `paper` or `cpu`, found `{other}`"),
            }),
        }
    }

    /// The same model with another modality (the uni-modal teachers of a student config).
    pub fn with_modality(mut self, modality: Modality) -> Self {
        self.modality = modality;
        self
    }

    /// The same model for another input size (both multiples of 32).
    pub fn with_input_size(mut self, height: usize, width: usize) -> Self {
        self.height = height;
        self.width = width;
        self
    }

    /// The same model with another number of classes.
    pub fn with_num_classes(mut self, num_classes: usize) -> Self {
        self.num_classes = num_classes;
        self
    }

    /// Checks every field; called by [`crate::EsaNet::new`].
    pub fn validate(&self) -> Result<()> {
        let bad = |field, problem: String| Err(Error::Config { field, problem });
        for (field, v) in [("height", self.height), ("width", self.width)] {
            if v == 0 || v % OUTPUT_STRIDE != 0 {
                return bad(
                    field,
                    format!(
                        "must be a positive multiple of {OUTPUT_STRIDE} (the decoder upsamples \
                         exactly ×2 five times and adds skips at 1/16, 1/8, 1/4), found {v}"
                    ),
                );
            }
        }
        if self.base_width == 0 {
            return bad("base_width", "must be at least 1, found 0".into());
        }
        if self.num_classes == 0 {
            return bad("num_classes", "must be at least 1, found 0".into());
        }
        if self.decoder_channels.contains(&0) {
            return bad(
                "decoder_channels",
                format!("must all be positive, found {:?}", self.decoder_channels),
            );
        }
        if self.context_module == ContextModuleKind::Ppm {
            if self.context_bins.is_empty() || self.context_bins.contains(&0) {
                return bad(
                    "context_bins",
                    format!(
                        "must be non-empty and positive for `ppm`, found {:?}",
                        self.context_bins
                    ),
                );
            }
            if self.context_bins.len() > self.stage_channels()[4] {
                return bad(
                    "context_bins",
                    format!(
                        "has {} bins, more than the {} channels of layer4",
                        self.context_bins.len(),
                        self.stage_channels()[4]
                    ),
                );
            }
        }
        self.encoder_config(RGB_CHANNELS).validate()?;
        Ok(())
    }

    /// The configuration of one encoder with `in_channels` input channels (3 for RGB, 1 for
    /// depth): torchvision stem, no `fc` head.
    pub fn encoder_config(&self, in_channels: usize) -> ResNetConfig {
        let base = match self.encoder {
            EncoderKind::ResNet18 => ResNetConfig::resnet18(in_channels),
            EncoderKind::ResNet34 => ResNetConfig::resnet34(in_channels),
        };
        ResNetConfig {
            block: self.encoder_block,
            ..base
        }
        .with_width(self.base_width)
    }

    /// Channels of the five encoder feature maps `[stem, layer1, layer2, layer3, layer4]`.
    pub fn stage_channels(&self) -> [usize; 5] {
        let w = self.base_width;
        [w, w, 2 * w, 4 * w, 8 * w]
    }

    /// Spatial size `(h, w)` of the feature maps at `1/stride` of the input.
    pub fn size_at(&self, stride: usize) -> (usize, usize) {
        (self.height / stride, self.width / stride)
    }

    /// Channels entering the decoder (the context module's output, or layer4's without one).
    pub fn decoder_in_channels(&self) -> usize {
        match self.context_module {
            ContextModuleKind::Ppm => self.decoder_channels[0],
            ContextModuleKind::None => self.stage_channels()[4],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_multiples_of_32() {
        for (h, w, field) in [(120, 160, "height"), (96, 100, "width"), (0, 64, "height")] {
            let err = EsaNetConfig::cpu().with_input_size(h, w).validate();
            match err {
                Err(Error::Config { field: f, problem }) => {
                    assert_eq!(f, field);
                    assert!(problem.contains("multiple of 32"), "{problem}");
                }
                other => panic!("{h}x{w}: expected a config error, got {other:?}"),
            }
        }
        assert!(EsaNetConfig::paper().validate().is_ok());
        assert!(EsaNetConfig::cpu()
            .with_input_size(64, 96)
            .validate()
            .is_ok());
    }

    #[test]
    fn bad_fields_are_named() {
        let mut c = EsaNetConfig::cpu();
        c.context_bins = vec![];
        assert!(matches!(
            c.validate(),
            Err(Error::Config {
                field: "context_bins",
                ..
            })
        ));
        let c = EsaNetConfig::cpu().with_num_classes(0);
        assert!(matches!(
            c.validate(),
            Err(Error::Config {
                field: "num_classes",
                ..
            })
        ));
        let mut c = EsaNetConfig::cpu();
        c.decoder_channels = [8, 0, 8];
        assert!(matches!(
            c.validate(),
            Err(Error::Config {
                field: "decoder_channels",
                ..
            })
        ));
        assert!(matches!(
            EsaNetConfig::preset("huge"),
            Err(Error::Config {
                field: "preset",
                ..
            })
        ));
    }

    #[test]
    fn serde_round_trip_defaults_and_unknown_fields() {
        let c = EsaNetConfig::cpu();
        let json = serde_json::to_string(&c).expect("serialises");
        let back: EsaNetConfig = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, c);
        // Missing fields take the paper's values.
        let partial: EsaNetConfig =
            serde_json::from_str(r#"{"modality": "depth", "height": 96}"#).expect("parses");
        assert_eq!(partial.modality, Modality::Depth);
        assert_eq!(partial.height, 96);
        assert_eq!(partial.width, 640);
        assert_eq!(partial.upsampling, UpsamplingMode::Learned3x3ZeroPad);
        let err = serde_json::from_str::<EsaNetConfig>(r#"{"hieght": 96}"#);
        assert!(err.is_err_and(|e| e.to_string().contains("hieght")));
    }
}
