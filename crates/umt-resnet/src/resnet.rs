//! ResNet-18/34: He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), §3.3 and
//! Table 1, exactly as torchvision implements it (`torchvision/models/resnet.py`: same layers,
//! same weight names, same initialisation), plus the NonBottleneck1D block of ERFNet (Romera et
//! al., T-ITS 2018, §III-B) that ESANet (Seichter et al., ICRA 2021, §III-A) puts in its
//! "ResNet34-NBt1D" encoders. UMT (paper §4.1) uses a ResNet18 per modality; its segmentation
//! experiment (§4.2) uses ESANet's encoders.
//!
//! Reading order: constants, config, blocks (`BasicBlock`, `NonBottleneck1D`, the downsample
//! shortcut), the model (`ResNet`), then the preset builders on [`ResNetConfig`].

use candle_core::{DType, Module, ModuleT, Tensor, D};
use candle_nn::{BatchNorm, BatchNormConfig, Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};
use umt_nn::conv::{Conv2d, Conv2dParams};
use umt_nn::norm;

use crate::{Error, Result};

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

/// BatchNorm ε of torchvision's ResNet (`nn.BatchNorm2d` default).
pub const BN_EPS: f64 = 1e-5;
/// BatchNorm ε inside ESANet's NonBottleneck1D (`nn.BatchNorm2d(planes, eps=1e-03)`; the
/// downsample shortcut keeps the default [`BN_EPS`]).
pub const NBT1D_BN_EPS: f64 = 1e-3;
/// BatchNorm momentum (`nn.BatchNorm2d` default: running = 0.9·running + 0.1·batch).
pub const BN_MOMENTUM: f64 = 0.1;

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// The residual block of every stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockKind {
    /// torchvision's `BasicBlock`: two 3×3 convolutions (no bias) with BN (He et al. Fig. 2).
    #[serde(rename = "basic")]
    Basic,
    /// ESANet's `NonBottleneck1D` (ERFNet): each 3×3 convolution factorised into 3×1 then 1×3
    /// (with biases), BN ε 1e-3, dropout 0, dilation 1.
    #[serde(rename = "non_bottleneck_1d")]
    NonBottleneck1D,
}

/// The stem in front of `layer1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StemKind {
    /// torchvision's stem: 7×7/s2/p3 conv (no bias), BN, ReLU, then a 3×3/s2/p1 max pool, so
    /// `layer1` runs at 1/4 of the input size.
    #[default]
    #[serde(rename = "torchvision")]
    Torchvision,
    /// A CPU-preset stem for tiny inputs (e.g. 32×32): 3×3/s2/p1 conv (no bias), BN, ReLU and
    /// **no** max pool, so `layer1` runs at 1/2 of the input size and `layer4` at 1/16. Same
    /// weight names (`conv1`, `bn1`), different `conv1` shape; not torchvision-compatible.
    #[serde(rename = "small")]
    Small,
}

/// Hyper-parameters of a [`ResNet`]. Use the presets ([`ResNetConfig::resnet18`],
/// [`ResNetConfig::resnet34`], [`ResNetConfig::resnet34_nbt1d`], ...) and the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetConfig {
    /// Residual block type (torchvision ResNet18/34: `basic`; ESANet R34-NBt1D:
    /// `non_bottleneck_1d`).
    pub block: BlockKind,
    /// Blocks per stage (He et al. Table 1: [2, 2, 2, 2] for 18 layers, [3, 4, 6, 3] for 34).
    pub layers: [usize; 4],
    /// Input channels: 3 for RGB frames, 1 for spectrograms and depth (ESANet's depth encoder).
    pub in_channels: usize,
    /// Width of the stem and `layer1`; the stages are `base_width · [1, 2, 4, 8]` and the
    /// embedding has `8 · base_width` dimensions (torchvision: 64; CPU presets narrow it).
    pub base_width: usize,
    /// Stem variant (default: torchvision's 7×7/s2 conv + 3×3/s2 max pool).
    #[serde(default)]
    pub stem: StemKind,
    /// Classes of the `fc` head on the embedding; `None` builds no head (torchvision: 1000;
    /// ESANet's encoders have none).
    #[serde(default)]
    pub num_classes: Option<usize>,
}

impl ResNetConfig {
    /// torchvision's `resnet18` (BasicBlock, [2, 2, 2, 2], width 64, no fc head).
    pub fn resnet18(in_channels: usize) -> Self {
        Self {
            block: BlockKind::Basic,
            layers: [2, 2, 2, 2],
            in_channels,
            base_width: 64,
            stem: StemKind::Torchvision,
            num_classes: None,
        }
    }

    /// torchvision's `resnet34` (BasicBlock, [3, 4, 6, 3], width 64, no fc head).
    pub fn resnet34(in_channels: usize) -> Self {
        Self {
            layers: [3, 4, 6, 3],
            ..Self::resnet18(in_channels)
        }
    }

    /// ESANet's ResNet34-NBt1D encoder (its NYUv2 default; notes/esanet.md §1): the ResNet34
    /// layout with every BasicBlock replaced by NonBottleneck1D.
    pub fn resnet34_nbt1d(in_channels: usize) -> Self {
        Self {
            block: BlockKind::NonBottleneck1D,
            ..Self::resnet34(in_channels)
        }
    }

    /// ResNet18 layout with NonBottleneck1D blocks (ESANet's `--encoder resnet18
    /// --encoder_block NonBottleneck1D`, its cheaper CPU-scale option).
    pub fn resnet18_nbt1d(in_channels: usize) -> Self {
        Self {
            block: BlockKind::NonBottleneck1D,
            ..Self::resnet18(in_channels)
        }
    }

    /// The same topology with stage widths `base_width · [1, 2, 4, 8]`.
    pub fn with_width(mut self, base_width: usize) -> Self {
        self.base_width = base_width;
        self
    }

    /// The same model with another stem.
    pub fn with_stem(mut self, stem: StemKind) -> Self {
        self.stem = stem;
        self
    }

    /// The same model with (`Some(k)`) or without (`None`) a `k`-class `fc` head.
    pub fn with_num_classes(mut self, num_classes: Option<usize>) -> Self {
        self.num_classes = num_classes;
        self
    }

    /// Checks every field; called by [`ResNet::new`].
    pub fn validate(&self) -> Result<()> {
        let bad = |field, problem: &str| {
            Err(Error::Config {
                field,
                problem: problem.to_string(),
            })
        };
        if self.in_channels == 0 {
            return bad("in_channels", "must be at least 1, found 0");
        }
        if self.base_width == 0 {
            return bad("base_width", "must be at least 1, found 0");
        }
        if self.layers.contains(&0) {
            return bad(
                "layers",
                &format!(
                    "needs at least one block per stage, found {:?}",
                    self.layers
                ),
            );
        }
        if self.num_classes == Some(0) {
            return bad("num_classes", "must be None or at least 1, found Some(0)");
        }
        Ok(())
    }

    /// Channels of the five feature maps `[stem, layer1, layer2, layer3, layer4]`.
    pub fn stage_channels(&self) -> [usize; 5] {
        let w = self.base_width;
        [w, w, 2 * w, 4 * w, 8 * w]
    }

    /// Dimension `D` of the pooled embedding (the input of `fc`): `8 · base_width`.
    pub fn embedding_dim(&self) -> usize {
        8 * self.base_width
    }
}

// ---------------------------------------------------------------------------------------------
// Layers with torchvision's initialisation
// ---------------------------------------------------------------------------------------------

/// A convolution initialised as torchvision's ResNet does: weight
/// `kaiming_normal_(mode='fan_out', nonlinearity='relu')`, i.e. N(0, 2/fan_out) with
/// `fan_out = C_out·kH·kW`; bias (NBt1D only) PyTorch's default U(±1/√fan_in).
fn conv(
    c_in: usize,
    c_out: usize,
    (kh, kw): (usize, usize),
    params: Conv2dParams,
    bias: bool,
    vb: VarBuilder<'_>,
) -> candle_core::Result<Conv2d> {
    let stdev = (2.0 / (c_out * kh * kw) as f64).sqrt();
    let weight = vb.get_with_hints(
        (c_out, c_in, kh, kw),
        "weight",
        Init::Randn { mean: 0.0, stdev },
    )?;
    let bias = if bias {
        let bound = 1.0 / ((c_in * kh * kw) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Some(vb.get_with_hints(c_out, "bias", init)?)
    } else {
        None
    };
    Ok(Conv2d::with_params(weight, bias, params))
}

/// Square-kernel convolution parameters (padding, stride).
fn square(padding: usize, stride: usize) -> Conv2dParams {
    Conv2dParams {
        padding: (padding, padding),
        stride: (stride, stride),
        ..Default::default()
    }
}

/// `nn.BatchNorm2d(c, eps)`: weight 1, bias 0, running mean 0, running variance 1.
fn batch_norm(c: usize, eps: f64, vb: VarBuilder<'_>) -> candle_core::Result<BatchNorm> {
    let cfg = BatchNormConfig {
        eps,
        momentum: BN_MOMENTUM,
        ..Default::default()
    };
    candle_nn::batch_norm(c, cfg, vb)
}

/// Number of trainable parameters of a BatchNorm (weight and bias; running stats are buffers).
fn bn_params(bn: &BatchNorm) -> usize {
    bn.weight_and_bias()
        .map_or(0, |(w, b)| w.elem_count() + b.elem_count())
}

/// Number of parameters of a convolution (weight and bias).
fn conv_params(c: &Conv2d) -> usize {
    c.weight().elem_count() + c.bias().map_or(0, Tensor::elem_count)
}

/// A convolution with a rectangular stride (`(s, 1)` or `(1, s)`). umt-nn's fast CPU kernel
/// (f32/f64) strides natively; candle's builtin convolution (CUDA, f16/bf16) only has square
/// strides, so there the convolution runs at stride 1 and every s-th row/column is kept, which
/// is the same function (same output, same gradients).
#[derive(Debug, Clone)]
struct StridedConv(Conv2d);

impl StridedConv {
    /// `(B, C_in, H, W)` → `(B, C_out, ⌊(H−1)/s_h⌋+1, ⌊(W−1)/s_w⌋+1)` for the "same" paddings
    /// used here.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let p = self.0.params();
        let fast = x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64);
        if p.stride.0 == p.stride.1 || fast {
            return self.0.forward(x);
        }
        forward_by_subsampling(&self.0, x)
    }
}

/// `conv` at stride 1 followed by keeping every `stride`-th row and column.
fn forward_by_subsampling(conv: &Conv2d, x: &Tensor) -> candle_core::Result<Tensor> {
    let p = conv.params();
    let unit = Conv2d::with_params(
        conv.weight().clone(),
        conv.bias().cloned(),
        Conv2dParams {
            stride: (1, 1),
            ..p
        },
    );
    let y = unit.forward(x)?; // (B, C_out, H', W') at stride 1
    let y = keep_every(&y, 2, p.stride.0)?; // (B, C_out, ⌈H'/s_h⌉, W')
    keep_every(&y, 3, p.stride.1) // (B, C_out, ⌈H'/s_h⌉, ⌈W'/s_w⌉)
}

/// Keeps indices 0, s, 2s, ... of dimension `dim` (2 or 3) of a rank-4 tensor: `L → ⌈L/s⌉`.
fn keep_every(x: &Tensor, dim: usize, s: usize) -> candle_core::Result<Tensor> {
    if s == 1 {
        return Ok(x.clone());
    }
    let len = x.dim(dim)?;
    let padded_len = len.div_ceil(s) * s;
    let x = x.pad_with_zeros(dim, 0, padded_len - len)?; // L → multiple of s
    let mut dims = x.dims().to_vec();
    dims[dim] = padded_len / s;
    dims.insert(dim + 1, s);
    x.reshape(dims)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1) // (…, L/s, s, …) → (…, L/s, …)
}

// ---------------------------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------------------------

/// The projection shortcut of the first block of a stage that changes width or resolution:
/// 1×1/s conv (no bias) + BN, named `downsample.0` and `downsample.1` (torchvision's
/// `nn.Sequential`). ESANet uses the same shortcut in front of NonBottleneck1D.
#[derive(Debug, Clone)]
pub struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
}

impl Downsample {
    /// Builds `downsample.0` / `downsample.1` under `vb` (pass `vb.pp("downsample")`).
    pub fn new(
        c_in: usize,
        c_out: usize,
        stride: usize,
        vb: VarBuilder<'_>,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            conv: conv(c_in, c_out, (1, 1), square(0, stride), false, vb.pp("0"))?,
            bn: batch_norm(c_out, BN_EPS, vb.pp("1"))?,
        })
    }

    fn num_parameters(&self) -> usize {
        conv_params(&self.conv) + bn_params(&self.bn)
    }
}

impl ModuleT for Downsample {
    /// `(B, C_in, H, W)` → `(B, C_out, ⌈H/s⌉, ⌈W/s⌉)`.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        norm::batch_norm(&self.bn, &self.conv.forward(x)?, train)
    }
}

/// The shortcut a block needs: a projection when width or resolution changes, else identity.
fn shortcut(
    c_in: usize,
    c_out: usize,
    stride: usize,
    vb: VarBuilder<'_>,
) -> candle_core::Result<Option<Downsample>> {
    if stride != 1 || c_in != c_out {
        Ok(Some(Downsample::new(
            c_in,
            c_out,
            stride,
            vb.pp("downsample"),
        )?))
    } else {
        Ok(None)
    }
}

/// `relu(bn(y) + shortcut(x))` (BatchNorm, residual add and ReLU fused in one op):
/// `y (B, C_out, H/s, W/s)`, `x (B, C_in, H, W)`.
fn bn_add_shortcut(
    bn: &BatchNorm,
    y: &Tensor,
    x: &Tensor,
    downsample: Option<&Downsample>,
    train: bool,
) -> candle_core::Result<Tensor> {
    let shortcut = match downsample {
        Some(d) => d.forward_t(x, train)?, // (B, C_out, H/s, W/s)
        None => x.clone(),
    };
    norm::batch_norm_add_relu(bn, y, &shortcut, train)
}

/// torchvision's `BasicBlock` (expansion 1): conv3x3/s → BN → ReLU → conv3x3 → BN → + shortcut
/// → ReLU. Weights `conv1`, `bn1`, `conv2`, `bn2`, `downsample.{0,1}`.
#[derive(Debug, Clone)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    downsample: Option<Downsample>,
}

impl BasicBlock {
    /// A block from `c_in` to `c_out` channels whose first convolution has stride `stride`.
    pub fn new(
        c_in: usize,
        c_out: usize,
        stride: usize,
        vb: VarBuilder<'_>,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            conv1: conv(
                c_in,
                c_out,
                (3, 3),
                square(1, stride),
                false,
                vb.pp("conv1"),
            )?,
            bn1: batch_norm(c_out, BN_EPS, vb.pp("bn1"))?,
            conv2: conv(c_out, c_out, (3, 3), square(1, 1), false, vb.pp("conv2"))?,
            bn2: batch_norm(c_out, BN_EPS, vb.pp("bn2"))?,
            downsample: shortcut(c_in, c_out, stride, vb)?,
        })
    }

    /// Number of trainable parameters (BN running statistics excluded).
    pub fn num_parameters(&self) -> usize {
        conv_params(&self.conv1)
            + bn_params(&self.bn1)
            + conv_params(&self.conv2)
            + bn_params(&self.bn2)
            + self
                .downsample
                .as_ref()
                .map_or(0, Downsample::num_parameters)
    }
}

impl ModuleT for BasicBlock {
    /// `(B, C_in, H, W)` → `(B, C_out, ⌈H/s⌉, ⌈W/s⌉)`.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self.conv1.forward(x)?; // (B, C_out, H/s, W/s)
        let y = norm::batch_norm_relu(&self.bn1, &y, train)?;
        let y = self.conv2.forward(&y)?;
        bn_add_shortcut(&self.bn2, &y, x, self.downsample.as_ref(), train)
    }
}

/// ESANet's `NonBottleneck1D` (the ERFNet block) in ResNet form: 3×1/(s,1) conv → ReLU → 1×3/(1,s)
/// conv → BN → ReLU → 3×1 conv → ReLU → 1×3 conv → BN → + shortcut → ReLU. All four convolutions
/// have biases; BN ε is 1e-3; dropout is 0 and dilation 1 in ESANet, so neither is modelled.
/// Weights `conv3x1_1`, `conv1x3_1`, `bn1`, `conv3x1_2`, `conv1x3_2`, `bn2`,
/// `downsample.{0,1}` (ESANet's names).
#[derive(Debug, Clone)]
pub struct NonBottleneck1D {
    conv3x1_1: StridedConv,
    conv1x3_1: StridedConv,
    bn1: BatchNorm,
    conv3x1_2: Conv2d,
    conv1x3_2: Conv2d,
    bn2: BatchNorm,
    downsample: Option<Downsample>,
}

impl NonBottleneck1D {
    /// A block from `c_in` to `c_out` channels that downsamples by `stride` (H in the first
    /// 3×1 convolution, W in the first 1×3 one, as ESANet does).
    pub fn new(
        c_in: usize,
        c_out: usize,
        stride: usize,
        vb: VarBuilder<'_>,
    ) -> candle_core::Result<Self> {
        let rect = |padding, stride| Conv2dParams {
            padding,
            stride,
            ..Default::default()
        };
        Ok(Self {
            conv3x1_1: StridedConv(conv(
                c_in,
                c_out,
                (3, 1),
                rect((1, 0), (stride, 1)),
                true,
                vb.pp("conv3x1_1"),
            )?),
            conv1x3_1: StridedConv(conv(
                c_out,
                c_out,
                (1, 3),
                rect((0, 1), (1, stride)),
                true,
                vb.pp("conv1x3_1"),
            )?),
            bn1: batch_norm(c_out, NBT1D_BN_EPS, vb.pp("bn1"))?,
            conv3x1_2: conv(
                c_out,
                c_out,
                (3, 1),
                rect((1, 0), (1, 1)),
                true,
                vb.pp("conv3x1_2"),
            )?,
            conv1x3_2: conv(
                c_out,
                c_out,
                (1, 3),
                rect((0, 1), (1, 1)),
                true,
                vb.pp("conv1x3_2"),
            )?,
            bn2: batch_norm(c_out, NBT1D_BN_EPS, vb.pp("bn2"))?,
            downsample: shortcut(c_in, c_out, stride, vb)?,
        })
    }

    /// Number of trainable parameters (BN running statistics excluded).
    pub fn num_parameters(&self) -> usize {
        conv_params(&self.conv3x1_1.0)
            + conv_params(&self.conv1x3_1.0)
            + bn_params(&self.bn1)
            + conv_params(&self.conv3x1_2)
            + conv_params(&self.conv1x3_2)
            + bn_params(&self.bn2)
            + self
                .downsample
                .as_ref()
                .map_or(0, Downsample::num_parameters)
    }
}

impl ModuleT for NonBottleneck1D {
    /// `(B, C_in, H, W)` → `(B, C_out, ⌈H/s⌉, ⌈W/s⌉)`.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self.conv3x1_1.forward(x)?.relu()?; // (B, C_out, H/s, W)
        let y = self.conv1x3_1.forward(&y)?; // (B, C_out, H/s, W/s)
        let y = norm::batch_norm_relu(&self.bn1, &y, train)?;
        let y = self.conv3x1_2.forward(&y)?.relu()?;
        let y = self.conv1x3_2.forward(&y)?;
        bn_add_shortcut(&self.bn2, &y, x, self.downsample.as_ref(), train)
    }
}

/// One residual block of either kind.
#[derive(Debug, Clone)]
pub enum Block {
    /// torchvision's BasicBlock.
    Basic(BasicBlock),
    /// ESANet's NonBottleneck1D.
    NonBottleneck1D(NonBottleneck1D),
}

impl Block {
    /// A block of `kind` (see [`BasicBlock::new`], [`NonBottleneck1D::new`]).
    pub fn new(
        kind: BlockKind,
        c_in: usize,
        c_out: usize,
        stride: usize,
        vb: VarBuilder<'_>,
    ) -> candle_core::Result<Self> {
        Ok(match kind {
            BlockKind::Basic => Self::Basic(BasicBlock::new(c_in, c_out, stride, vb)?),
            BlockKind::NonBottleneck1D => {
                Self::NonBottleneck1D(NonBottleneck1D::new(c_in, c_out, stride, vb)?)
            }
        })
    }

    /// Number of trainable parameters (BN running statistics excluded).
    pub fn num_parameters(&self) -> usize {
        match self {
            Self::Basic(b) => b.num_parameters(),
            Self::NonBottleneck1D(b) => b.num_parameters(),
        }
    }
}

impl ModuleT for Block {
    /// `(B, C_in, H, W)` → `(B, C_out, ⌈H/s⌉, ⌈W/s⌉)`.
    fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            Self::Basic(b) => b.forward_t(x, train),
            Self::NonBottleneck1D(b) => b.forward_t(x, train),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// Every feature map of one forward pass. Sizes are for the torchvision stem and an `H × W`
/// input; with [`StemKind::Small`] every map after the stem is twice as large.
#[derive(Debug, Clone)]
pub struct ResNetFeatures {
    /// Stem output after conv1 → bn1 → ReLU, **before** the max pool (ESANet's first fusion
    /// point): `(B, w, H/2, W/2)`.
    pub stem: Tensor,
    /// `layer1` output: `(B, w, H/4, W/4)`.
    pub layer1: Tensor,
    /// `layer2` output: `(B, 2w, H/8, W/8)`.
    pub layer2: Tensor,
    /// `layer3` output: `(B, 4w, H/16, W/16)`.
    pub layer3: Tensor,
    /// `layer4` output: `(B, 8w, H/32, W/32)`.
    pub layer4: Tensor,
    /// Global average pool of `layer4`, the input of `fc` (the feature UMT distils): `(B, 8w)`.
    pub embedding: Tensor,
    /// `fc(embedding)` when the model has a head: `(B, num_classes)`.
    pub logits: Option<Tensor>,
}

impl ResNetFeatures {
    /// The five feature maps `[stem, layer1, layer2, layer3, layer4]` (ESANet's fusion points).
    pub fn stages(&self) -> [&Tensor; 5] {
        [
            &self.stem,
            &self.layer1,
            &self.layer2,
            &self.layer3,
            &self.layer4,
        ]
    }
}

/// A ResNet encoder with torchvision's weight names (`conv1`, `bn1`, `layer{1..4}.{i}.…`, `fc`).
///
/// Build it under a `VarBuilder` (a `VarMap` for training, with torchvision's initialisation;
/// see [`crate::load_resnet`] for strict checkpoint loading). BatchNorm uses batch statistics
/// and updates its running statistics when `train` is true.
#[derive(Debug, Clone)]
pub struct ResNet {
    config: ResNetConfig,
    conv1: Conv2d,
    bn1: BatchNorm,
    layers: [Vec<Block>; 4],
    fc: Option<Linear>,
}

impl ResNet {
    /// Builds the model under `vb` after validating `config`.
    pub fn new(config: &ResNetConfig, vb: VarBuilder<'_>) -> Result<Self> {
        config.validate()?;
        let widths = config.stage_channels();
        let w = config.base_width;
        let (kernel, padding) = match config.stem {
            StemKind::Torchvision => (7, 3),
            StemKind::Small => (3, 1),
        };
        let conv1 = conv(
            config.in_channels,
            w,
            (kernel, kernel),
            square(padding, 2),
            false,
            vb.pp("conv1"),
        )?;
        let bn1 = batch_norm(w, BN_EPS, vb.pp("bn1"))?;
        let mut c_in = w;
        let mut layers: [Vec<Block>; 4] = Default::default();
        for (s, layer) in layers.iter_mut().enumerate() {
            let c_out = widths[s + 1];
            let vb_layer = vb.pp(format!("layer{}", s + 1));
            for i in 0..config.layers[s] {
                let stride = if s > 0 && i == 0 { 2 } else { 1 };
                layer.push(Block::new(
                    config.block,
                    c_in,
                    c_out,
                    stride,
                    vb_layer.pp(i),
                )?);
                c_in = c_out;
            }
        }
        let fc = match config.num_classes {
            None => None,
            Some(k) => {
                // PyTorch's nn.Linear default: weight and bias U(±1/√fan_in).
                let d = config.embedding_dim();
                let bound = 1.0 / (d as f64).sqrt();
                let init = Init::Uniform {
                    lo: -bound,
                    up: bound,
                };
                let vb = vb.pp("fc");
                let weight = vb.get_with_hints((k, d), "weight", init)?;
                let bias = vb.get_with_hints(k, "bias", init)?;
                Some(Linear::new(weight, Some(bias)))
            }
        };
        Ok(Self {
            config: config.clone(),
            conv1,
            bn1,
            layers,
            fc,
        })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ResNetConfig {
        &self.config
    }

    /// Dimension `D` of the embedding.
    pub fn embedding_dim(&self) -> usize {
        self.config.embedding_dim()
    }

    /// Number of trainable parameters (what `sum(p.numel() for p in model.parameters())` gives
    /// in PyTorch; BN running statistics are buffers and not counted).
    pub fn num_parameters(&self) -> usize {
        conv_params(&self.conv1)
            + bn_params(&self.bn1)
            + self
                .layers
                .iter()
                .flatten()
                .map(Block::num_parameters)
                .sum::<usize>()
            + self.fc.as_ref().map_or(0, |fc| {
                fc.weight().elem_count() + fc.bias().map_or(0, Tensor::elem_count)
            })
    }

    /// Checks that `x` is `(B, C, H, W)` with `C = in_channels`; returns its dims.
    pub fn check_input(&self, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
        let c = self.config.in_channels;
        let err = || Error::InputShape {
            what: "ResNet",
            expected: format!("(B, {c}, H, W)"),
            found: x.dims().to_vec(),
        };
        let dims = x.dims4().map_err(|_| err())?;
        if dims.1 != c || dims.0 == 0 || dims.2 == 0 || dims.3 == 0 {
            return Err(err());
        }
        Ok(dims)
    }

    /// The whole encoder: every stage's features, the embedding and (with a head) the logits.
    /// `x`: `(B, in_channels, H, W)`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<ResNetFeatures> {
        let stem = self.forward_stem(x, train)?; // (B, w, H/2, W/2)
        let y = self.stem_pool(&stem)?; // (B, w, H/4, W/4)
        let layer1 = self.forward_layer(1, &y, train)?; // (B, w, H/4, W/4)
        let layer2 = self.forward_layer(2, &layer1, train)?; // (B, 2w, H/8, W/8)
        let layer3 = self.forward_layer(3, &layer2, train)?; // (B, 4w, H/16, W/16)
        let layer4 = self.forward_layer(4, &layer3, train)?; // (B, 8w, H/32, W/32)
        let embedding = self.embed(&layer4)?; // (B, 8w)
        let logits = self.head(&embedding)?; // (B, num_classes)
        Ok(ResNetFeatures {
            stem,
            layer1,
            layer2,
            layer3,
            layer4,
            embedding,
            logits,
        })
    }

    /// The stem up to its ReLU (before the max pool): `(B, in_channels, H, W)` →
    /// `(B, w, H/2, W/2)`. Checks the input shape.
    pub fn forward_stem(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x)?;
        let y = self.conv1.forward(x)?; // (B, w, H/2, W/2)
        Ok(norm::batch_norm_relu(&self.bn1, &y, train)?)
    }

    /// What follows [`ResNet::forward_stem`] before `layer1`: the 3×3/s2/p1 max pool
    /// `(B, w, h, w') → (B, w, ⌈h/2⌉, ⌈w'/2⌉)` for the torchvision stem, the identity for
    /// [`StemKind::Small`]. (ESANet fuses depth into RGB between the two.)
    pub fn stem_pool(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.config.stem {
            StemKind::Torchvision => umt_nn::pool::max_pool2d(x, 3, 2, 1)?,
            StemKind::Small => x.clone(),
        })
    }

    /// Runs `layer{stage}` (`stage` in 1..=4, torchvision's numbering):
    /// `(B, C_in, h, w) → (B, C_out, h/s, w/s)` with `s = 2` for stages 2–4.
    pub fn forward_layer(&self, stage: usize, x: &Tensor, train: bool) -> Result<Tensor> {
        let blocks = stage
            .checked_sub(1)
            .and_then(|i| self.layers.get(i))
            .ok_or(Error::Config {
                field: "stage",
                problem: format!("must be 1, 2, 3 or 4, found {stage}"),
            })?;
        let mut y = x.clone();
        for block in blocks {
            y = block.forward_t(&y, train)?;
        }
        Ok(y)
    }

    /// Global average pool: `(B, C, h, w)` → `(B, C)` (torchvision's `avgpool` + `flatten`).
    pub fn embed(&self, layer4: &Tensor) -> Result<Tensor> {
        Ok(layer4.flatten_from(2)?.mean(D::Minus1)?)
    }

    /// The `fc` head: `(B, D)` → `(B, num_classes)`, `None` without a head.
    pub fn head(&self, embedding: &Tensor) -> Result<Option<Tensor>> {
        Ok(match &self.fc {
            Some(fc) => Some(fc.forward(embedding)?),
            None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The stride-1-then-subsample path (used off the fast CPU kernel) equals a strided conv.
    #[test]
    fn subsampling_matches_strided_convolution() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f64, 1.0, (3, 2, 3, 1), &dev)?;
        let b = Tensor::randn(0f64, 1.0, 3, &dev)?;
        for (h, wd) in [(6, 6), (7, 5), (5, 8)] {
            let x = Tensor::randn(0f64, 1.0, (2, 2, h, wd), &dev)?;
            for stride in [(2, 1), (1, 2), (2, 2)] {
                let c = Conv2d::with_params(
                    w.clone(),
                    Some(b.clone()),
                    Conv2dParams {
                        padding: (1, 0),
                        stride,
                        ..Default::default()
                    },
                );
                let direct = c.forward(&x)?;
                let sub = forward_by_subsampling(&c, &x)?;
                assert_eq!(direct.dims(), sub.dims());
                let diff = (direct - sub)?.abs()?.max_all()?.to_scalar::<f64>()?;
                assert!(diff < 1e-12, "{h}x{wd} stride {stride:?}: {diff}");
            }
        }
        Ok(())
    }
}
