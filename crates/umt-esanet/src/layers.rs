//! ESANet's own layers (Seichter et al., ICRA 2021, §III and Fig. 2), with the reference
//! implementation's module names (`src/models/model_utils.py`, `rgb_depth_fusion.py`,
//! `context_modules.py`, `model.py`): `ConvBNAct`, `SqueezeAndExcitation`,
//! `SqueezeAndExciteFusionAdd`, the learned ×2 `Upsample` and the `PyramidPoolingModule`.
//!
//! Every convolution goes through `umt_nn::conv` and every training BatchNorm through
//! `umt_nn::norm` (correct gradients, fast CPU kernels); resizing uses `umt_nn::upsample`.
//! Initialisation is PyTorch's default (`--he_init` is off for NYUv2), except the learned
//! upsampling kernel (binomial, bias 0) as the reference sets it.

use candle_core::{Module, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, Init, VarBuilder};
use umt_nn::conv::{conv2d_layer, Conv2d, Conv2dConfig};
use umt_nn::norm;
use umt_nn::upsample::{upsample_bilinear2d, upsample_nearest2d};

use crate::config::{UpsamplingMode, SE_REDUCTION};

/// BatchNorm ε of `ConvBNAct` (`nn.BatchNorm2d` default).
pub const BN_EPS: f64 = 1e-5;
/// BatchNorm momentum (`nn.BatchNorm2d` default).
pub const BN_MOMENTUM: f64 = 0.1;

/// Parameters of a convolution (weight and bias).
pub(crate) fn conv_params(c: &Conv2d) -> usize {
    c.weight().elem_count() + c.bias().map_or(0, Tensor::elem_count)
}

/// Trainable parameters of a BatchNorm (weight and bias; running statistics are buffers).
fn bn_params(bn: &BatchNorm) -> usize {
    bn.weight_and_bias()
        .map_or(0, |(w, b)| w.elem_count() + b.elem_count())
}

/// A `k × k` convolution with "same" padding `k/2` and PyTorch's default initialisation.
pub(crate) fn conv(
    c_in: usize,
    c_out: usize,
    k: usize,
    bias: bool,
    vb: VarBuilder<'_>,
) -> candle_core::Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        ..Default::default()
    };
    conv2d_layer(c_in, c_out, k, cfg, bias, vb)
}

/// The reference `ConvBNAct` (an `nn.Sequential` of `conv`, `bn`, `act`): `k × k` convolution
/// without bias, padding `k/2`, BatchNorm (ε 1e-5), ReLU.
#[derive(Debug, Clone)]
pub struct ConvBnAct {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBnAct {
    /// Builds `conv.weight` and `bn.{weight,bias,running_mean,running_var}` under `vb`.
    pub fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        vb: VarBuilder<'_>,
    ) -> candle_core::Result<Self> {
        let cfg = BatchNormConfig {
            eps: BN_EPS,
            momentum: BN_MOMENTUM,
            ..Default::default()
        };
        Ok(Self {
            conv: conv(c_in, c_out, k, false, vb.pp("conv"))?,
            bn: candle_nn::batch_norm(c_out, cfg, vb.pp("bn"))?,
        })
    }

    /// Number of trainable parameters.
    pub fn num_parameters(&self) -> usize {
        conv_params(&self.conv) + bn_params(&self.bn)
    }

    /// `(B, C_in, H, W)` → `(B, C_out, H, W)`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self.conv.forward(x)?; // (B, C_out, H, W)
        norm::batch_norm_relu(&self.bn, &y, train)
    }
}

/// The reference `SqueezeAndExcitation` (Hu et al., CVPR 2018): global average pool →
/// `fc.0` 1×1 conv `C → C/16` (bias) → ReLU → `fc.2` 1×1 conv `C/16 → C` (bias) → sigmoid →
/// channel-wise product with the input. The hidden width is `max(C/16, 1)` so narrow CPU
/// presets stay valid (identical to the reference for `C ≥ 16`).
#[derive(Debug, Clone)]
pub struct SqueezeAndExcitation {
    fc0: Conv2d,
    fc2: Conv2d,
}

impl SqueezeAndExcitation {
    /// Builds `fc.0.{weight,bias}` and `fc.2.{weight,bias}` under `vb` for `c` channels.
    pub fn new(c: usize, vb: VarBuilder<'_>) -> candle_core::Result<Self> {
        let hidden = (c / SE_REDUCTION).max(1);
        let vb = vb.pp("fc");
        Ok(Self {
            fc0: conv(c, hidden, 1, true, vb.pp("0"))?,
            fc2: conv(hidden, c, 1, true, vb.pp("2"))?,
        })
    }

    /// Number of trainable parameters.
    pub fn num_parameters(&self) -> usize {
        conv_params(&self.fc0) + conv_params(&self.fc2)
    }

    /// `(B, C, H, W)` → `(B, C, H, W)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let s = x.mean_keepdim(3)?.mean_keepdim(2)?; // (B, C, 1, 1)
        let s = self.fc0.forward(&s)?.relu()?; // (B, C/16, 1, 1)
        let s = candle_nn::ops::sigmoid(&self.fc2.forward(&s)?)?; // (B, C, 1, 1)
        x.broadcast_mul(&s) // (B, C, H, W)
    }
}

/// The reference `SqueezeAndExciteFusionAdd`: `se_rgb(rgb) + se_depth(depth)`.
#[derive(Debug, Clone)]
pub struct SeFusionAdd {
    se_rgb: SqueezeAndExcitation,
    se_depth: SqueezeAndExcitation,
}

impl SeFusionAdd {
    /// Builds `se_rgb.*` and `se_depth.*` under `vb` for `c` channels.
    pub fn new(c: usize, vb: VarBuilder<'_>) -> candle_core::Result<Self> {
        Ok(Self {
            se_rgb: SqueezeAndExcitation::new(c, vb.pp("se_rgb"))?,
            se_depth: SqueezeAndExcitation::new(c, vb.pp("se_depth"))?,
        })
    }

    /// Number of trainable parameters.
    pub fn num_parameters(&self) -> usize {
        self.se_rgb.num_parameters() + self.se_depth.num_parameters()
    }

    /// `rgb (B, C, H, W)`, `depth (B, C, H, W)` → fused `(B, C, H, W)`.
    pub fn forward(&self, rgb: &Tensor, depth: &Tensor) -> candle_core::Result<Tensor> {
        self.se_rgb.forward(rgb)? + self.se_depth.forward(depth)?
    }
}

/// The separable binomial kernel `[1, 2, 1]ᵀ[1, 2, 1] / 16` the reference initialises the
/// learned upsampling with (it approximates bilinear interpolation after a nearest ×2).
pub const BILINEAR_LIKE_KERNEL: [f64; 9] = [
    0.0625, 0.125, 0.0625, //
    0.125, 0.25, 0.125, //
    0.0625, 0.125, 0.0625,
];

/// The reference `Upsample`: exactly ×2. For the learned modes, nearest ×2 then a depthwise
/// 3×3 convolution `conv` (`C` groups, bias) with zero or replicate padding, initialised to
/// [`BILINEAR_LIKE_KERNEL`] and bias 0; otherwise plain bilinear (`align_corners = false`) or
/// nearest resizing without parameters.
#[derive(Debug, Clone)]
pub struct Upsample {
    mode: UpsamplingMode,
    conv: Option<Conv2d>,
}

impl Upsample {
    /// Builds `conv.{weight,bias}` under `vb` for the learned modes. On a fresh `VarMap` the
    /// weight is set to [`BILINEAR_LIKE_KERNEL`] and the bias to 0; existing (loaded) values
    /// are kept.
    pub fn new(mode: UpsamplingMode, c: usize, vb: VarBuilder<'_>) -> candle_core::Result<Self> {
        if !mode.is_learned() {
            return Ok(Self { mode, conv: None });
        }
        let vb = vb.pp("conv");
        let fresh = !vb.contains_tensor("weight");
        let weight = vb.get_with_hints((c, 1, 3, 3), "weight", Init::Const(0.0))?;
        let bias = vb.get_with_hints(c, "bias", Init::Const(0.0))?;
        if fresh {
            let kernel = Tensor::new(&BILINEAR_LIKE_KERNEL, weight.device())?
                .to_dtype(weight.dtype())?
                .reshape((1, 1, 3, 3))?
                .repeat((c, 1, 1, 1))?; // (C, 1, 3, 3)
            weight.slice_set(&kernel, 0, 0)?;
        }
        let padding = match mode {
            UpsamplingMode::Learned3x3ZeroPad => 1,
            _ => 0, // replicate padding is applied explicitly before the convolution
        };
        let cfg = Conv2dConfig {
            padding,
            groups: c,
            ..Default::default()
        };
        Ok(Self {
            mode,
            conv: Some(Conv2d::new(weight, Some(bias), cfg)),
        })
    }

    /// Number of trainable parameters (0 for bilinear and nearest).
    pub fn num_parameters(&self) -> usize {
        self.conv.as_ref().map_or(0, conv_params)
    }

    /// `(B, C, H, W)` → `(B, C, 2H, 2W)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let y = match self.mode {
            UpsamplingMode::Bilinear => return upsample_bilinear2d(x, 2 * h, 2 * w, false),
            _ => upsample_nearest2d(x, 2 * h, 2 * w)?, // (B, C, 2H, 2W)
        };
        match (&self.conv, self.mode) {
            (Some(conv), UpsamplingMode::Learned3x3) => {
                let y = y.pad_with_same(2, 1, 1)?.pad_with_same(3, 1, 1)?; // (B, C, 2H+2, 2W+2)
                conv.forward(&y) // (B, C, 2H, 2W)
            }
            (Some(conv), _) => conv.forward(&y), // (B, C, 2H, 2W), zero padding 1
            (None, _) => Ok(y),
        }
    }
}

/// The reference `PyramidPoolingModule` (PSPNet, Zhao et al., CVPR 2017): for each bin `b`
/// an adaptive average pool to `b × b` and a 1×1 `ConvBNAct` `C → C/len(bins)`
/// (`features.{i}.1`), resized back to the input size (nearest when the decoder upsampling is
/// learned, bilinear for `bilinear`), concatenated with the input and mapped to `C_out` by a
/// 1×1 `ConvBNAct` (`final_conv`).
#[derive(Debug, Clone)]
pub struct PyramidPoolingModule {
    bins: Vec<usize>,
    features: Vec<ConvBnAct>,
    final_conv: ConvBnAct,
    bilinear: bool,
}

impl PyramidPoolingModule {
    /// Builds the module under `vb` (`features.{i}.1.*`, `final_conv.*`).
    pub fn new(
        c_in: usize,
        c_out: usize,
        bins: &[usize],
        upsampling: UpsamplingMode,
        vb: VarBuilder<'_>,
    ) -> candle_core::Result<Self> {
        let reduction = c_in / bins.len().max(1);
        let features = (0..bins.len())
            .map(|i| ConvBnAct::new(c_in, reduction, 1, vb.pp(format!("features.{i}.1"))))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let final_conv =
            ConvBnAct::new(c_in + reduction * bins.len(), c_out, 1, vb.pp("final_conv"))?;
        Ok(Self {
            bins: bins.to_vec(),
            features,
            final_conv,
            bilinear: upsampling == UpsamplingMode::Bilinear,
        })
    }

    /// Number of trainable parameters.
    pub fn num_parameters(&self) -> usize {
        self.features
            .iter()
            .map(ConvBnAct::num_parameters)
            .sum::<usize>()
            + self.final_conv.num_parameters()
    }

    /// `(B, C_in, h, w)` → `(B, C_out, h, w)`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let mut branches = vec![x.clone()];
        for (&bin, f) in self.bins.iter().zip(&self.features) {
            let y = umt_nn::pool::adaptive_avg_pool2d(x, (bin, bin))?; // (B, C_in, b, b)
            let y = f.forward_t(&y, train)?; // (B, C_in/n, b, b)
            let y = if self.bilinear {
                upsample_bilinear2d(&y, h, w, false)?
            } else {
                upsample_nearest2d(&y, h, w)?
            }; // (B, C_in/n, h, w)
            branches.push(y);
        }
        let y = Tensor::cat(&branches, 1)?; // (B, C_in + n·C_in/n, h, w)
        self.final_conv.forward_t(&y, train) // (B, C_out, h, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;
    use umt_nn::gradcheck::{check_gradients, GradCheck};

    fn data(shape: (usize, usize, usize, usize), seed: usize) -> candle_core::Result<Tensor> {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f64> = (0..n)
            .map(|i| ((i * 13 + seed * 7) as f64 * 0.377).sin())
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
    }

    fn vb(vars: &VarMap) -> VarBuilder<'_> {
        VarBuilder::from_varmap(vars, DType::F64, &Device::Cpu)
    }

    /// Gradients of the SE-add fusion with respect to both inputs, by finite differences.
    #[test]
    fn se_fusion_gradients() -> anyhow::Result<()> {
        let vars = VarMap::new();
        let fusion = SeFusionAdd::new(32, vb(&vars))?;
        assert_eq!(fusion.num_parameters(), 2 * (32 * 2 + 2 + 2 * 32 + 32));
        let rgb = data((2, 32, 3, 2), 1)?;
        let depth = data((2, 32, 3, 2), 2)?;
        let report = check_gradients(
            |t| fusion.forward(&t[0], &t[1]),
            &[rgb, depth],
            GradCheck::default(),
        )?;
        assert_eq!(report.elements, 2 * 2 * 32 * 3 * 2);
        Ok(())
    }

    /// Gradients of the PPM (train-mode BatchNorm, adaptive pools that overlap, nearest and
    /// bilinear resizing) with respect to its input.
    #[test]
    fn ppm_gradients() -> anyhow::Result<()> {
        for mode in [UpsamplingMode::Learned3x3ZeroPad, UpsamplingMode::Bilinear] {
            let vars = VarMap::new();
            let ppm = PyramidPoolingModule::new(4, 3, &[1, 2], mode, vb(&vars))?;
            let x = data((2, 4, 3, 5), 3)?;
            for train in [true, false] {
                check_gradients(
                    |t| ppm.forward_t(&t[0], train),
                    std::slice::from_ref(&x),
                    GradCheck::default(),
                )?;
            }
            // 2·(4·2 + 2·2) + (8·3 + 2·3)
            assert_eq!(ppm.num_parameters(), 2 * (4 * 2 + 4) + (8 * 3 + 6));
        }
        Ok(())
    }

    /// Gradients of the learned upsampling (input and parameters) for both paddings.
    #[test]
    fn learned_upsampling_gradients() -> anyhow::Result<()> {
        for mode in [
            UpsamplingMode::Learned3x3ZeroPad,
            UpsamplingMode::Learned3x3,
        ] {
            let x = data((2, 3, 2, 3), 4)?;
            let w = data((3, 1, 3, 3), 5)?;
            let b = data((1, 3, 1, 1), 6)?.flatten_all()?;
            check_gradients(
                |t| {
                    let vars = VarMap::new();
                    let mut up = Upsample::new(mode, 3, vb(&vars))?;
                    let padding = usize::from(mode == UpsamplingMode::Learned3x3ZeroPad);
                    let cfg = Conv2dConfig {
                        padding,
                        groups: 3,
                        ..Default::default()
                    };
                    up.conv = Some(Conv2d::new(t[1].clone(), Some(t[2].clone()), cfg));
                    up.forward(&t[0])
                },
                &[x, w, b],
                GradCheck::default(),
            )?;
        }
        Ok(())
    }

    /// Freshly built, the learned upsampling is the binomial filter after nearest ×2: a
    /// constant map stays constant away from the zero-padded border, and the replicate-padded
    /// version keeps it everywhere.
    #[test]
    fn learned_upsampling_starts_bilinear_like() -> anyhow::Result<()> {
        let vars = VarMap::new();
        let x = Tensor::full(2.0f64, (1, 2, 2, 3), &Device::Cpu)?;
        let up = Upsample::new(UpsamplingMode::Learned3x3ZeroPad, 2, vb(&vars))?;
        let y = up.forward(&x)?;
        assert_eq!(y.dims(), &[1, 2, 4, 6]);
        let interior = y
            .narrow(2, 1, 2)?
            .narrow(3, 1, 4)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        assert!(
            interior.iter().all(|v| (v - 2.0).abs() < 1e-12),
            "{interior:?}"
        );
        let corner = y.flatten_all()?.to_vec1::<f64>()?[0];
        assert!((corner - 2.0 * 9.0 / 16.0).abs() < 1e-12, "{corner}");
        let vars = VarMap::new();
        let up = Upsample::new(UpsamplingMode::Learned3x3, 2, vb(&vars))?;
        let all = up.forward(&x)?.flatten_all()?.to_vec1::<f64>()?;
        assert!(all.iter().all(|v| (v - 2.0).abs() < 1e-12));
        assert_eq!(up.num_parameters(), 2 * 9 + 2);
        // A second build over the same VarMap keeps the (possibly trained) values.
        vars.data()
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .get("conv.bias")
            .ok_or_else(|| anyhow::anyhow!("no conv.bias"))?
            .set(&Tensor::new(&[1.0f64, 1.0], &Device::Cpu)?)?;
        let again = Upsample::new(UpsamplingMode::Learned3x3, 2, vb(&vars))?;
        let all = again.forward(&x)?.flatten_all()?.to_vec1::<f64>()?;
        assert!(all.iter().all(|v| (v - 3.0).abs() < 1e-12));
        Ok(())
    }
}
