//! 2D convolution: the `Conv2d` layer (PyTorch names `weight` `(C_out, C_in/groups, kH, kW)` and
//! `bias` `(C_out)`) and the [`conv2d`] function it calls.
//!
//! On CPU (f32 and f64) the convolution is a candle custom op with its own forward and backward
//! (stride-1 convolutions with ≥ 8 channels per group: one GEMM per kernel tap on the
//! zero-padded sample, i.e. implicit im2col; otherwise im2col + GEMM forward, GEMM + col2im
//! input gradient, per-sample GEMM weight gradient summed per thread; 1×1 stride-1 straight to
//! GEMM); see `conv/cpu.rs` (`UMT_CONV_CPU_ALGO=im2col|shifted` forces a family). The backward
//! skips the gradient of an operand outside the autograd graph (`Tensor::track_op`), e.g. the
//! input images of a stem convolution. It is several
//! times faster than candle 0.11's builtin backward (`conv_transpose2d` loop) and fixes its
//! stride > 1 gradient for H and W of different parity. Rectangular kernels, paddings, strides
//! and dilations are supported through [`Conv2dParams`] and [`conv2d_with_params`].
//!
//! On CUDA with the `cudnn` feature (f32, f64, f16 and bf16) the same three ops run on cuDNN:
//! `cudnnConvolutionForward` for the forward pass, `cudnnConvolutionBackwardData` for the input
//! gradient and `cudnnConvolutionBackwardFilter` for the weight gradient, with every
//! [`Conv2dParams`] geometry (rectangular padding, stride and dilation, groups) and no parity
//! bug; see `conv/cudnn.rs` for the algorithm, workspace and precision choices (f32 stays
//! full precision unless `candle_core::cuda::set_gemm_reduced_precision_f32(true)` allows TF32).
//!
//! Everywhere else — CUDA without the `cudnn` feature, Metal, f16/bf16 on CPU — [`conv2d`]
//! falls back to candle's builtin `Tensor::conv2d` (with its backward and its known stride-2
//! parity bug); rectangular strides or dilations then return an error, rectangular paddings are
//! applied with explicit zero padding.
//!
//! Subnormal floats slow every CPU kernel down by an order of magnitude late in training: call
//! [`enable_flush_to_zero`] once at start-up (it sets FTZ/DAZ on the calling thread and on every
//! thread of rayon's global pool; x86_64 only, a no-op elsewhere).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use umt_nn::conv::{conv2d, Conv2dConfig};
//! let x = Tensor::ones((2, 3, 8, 8), candle_core::DType::F32, &Device::Cpu)?; // (B, C_in, H, W)
//! let w = Tensor::ones((4, 3, 3, 3), candle_core::DType::F32, &Device::Cpu)?; // (C_out, C_in, kH, kW)
//! let cfg = Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
//! let y = conv2d(&x, &w, cfg)?; // (2, 4, 4, 4)
//! assert_eq!(y.dims(), &[2, 4, 4, 4]);
//! assert_eq!(y.get(0)?.get(0)?.get(1)?.get(1)?.to_scalar::<f32>()?, 27.0);
//! # Ok::<(), candle_core::Error>(())
//! ```

mod cpu;
#[cfg(feature = "cudnn")]
mod cudnn;
mod ftz;
mod op;

pub use ftz::enable_flush_to_zero;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// Hyper-parameters of a convolution (the same fields as `torch.nn.Conv2d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Zero padding on each side of H and W.
    pub padding: usize,
    /// Stride in H and W.
    pub stride: usize,
    /// Dilation in H and W.
    pub dilation: usize,
    /// Number of groups (`C_in` and `C_out` must both be divisible by it).
    pub groups: usize,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Self {
            padding: 0,
            stride: 1,
            dilation: 1,
            groups: 1,
        }
    }
}

/// Hyper-parameters with separate (height, width) values, for rectangular convolutions such as
/// ESANet's 3×1 / 1×3 factorised blocks. `Conv2dConfig` converts into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Zero padding `(top and bottom, left and right)`.
    pub padding: (usize, usize),
    /// Stride `(H, W)`.
    pub stride: (usize, usize),
    /// Dilation `(H, W)`.
    pub dilation: (usize, usize),
    /// Number of groups (`C_in` and `C_out` must both be divisible by it).
    pub groups: usize,
}

impl Default for Conv2dParams {
    /// PyTorch's defaults: no padding, stride 1, dilation 1, one group.
    fn default() -> Self {
        Conv2dConfig::default().into()
    }
}

impl From<Conv2dConfig> for Conv2dParams {
    fn from(c: Conv2dConfig) -> Self {
        Self {
            padding: (c.padding, c.padding),
            stride: (c.stride, c.stride),
            dilation: (c.dilation, c.dilation),
            groups: c.groups,
        }
    }
}

/// Sizes of one convolution, checked once (`OH = (H + 2p − d(kH − 1) − 1) / s + 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Geometry {
    pub(crate) b: usize,
    pub(crate) c_in: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) c_out: usize,
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) ph: usize,
    pub(crate) pw: usize,
    pub(crate) sh: usize,
    pub(crate) sw: usize,
    pub(crate) dh: usize,
    pub(crate) dw: usize,
    pub(crate) groups: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
}

impl Geometry {
    /// Validates `x (B, C_in, H, W)` against `w (C_out, C_in/G, kH, kW)` and the parameters.
    pub(crate) fn new(
        (b, c_in, h, w): (usize, usize, usize, usize),
        (c_out, cin_g, kh, kw): (usize, usize, usize, usize),
        (ph, pw): (usize, usize),
        (sh, sw): (usize, usize),
        (dh, dw): (usize, usize),
        groups: usize,
    ) -> Result<Self> {
        if groups == 0 || sh == 0 || sw == 0 || dh == 0 || dw == 0 {
            candle_core::bail!(
                "conv2d: groups, stride and dilation must be ≥ 1, found groups {groups}, \
                 stride ({sh}, {sw}), dilation ({dh}, {dw})"
            );
        }
        if c_in % groups != 0 || c_out % groups != 0 || cin_g * groups != c_in {
            candle_core::bail!(
                "conv2d: x has {c_in} channels and w has shape ({c_out}, {cin_g}, {kh}, {kw}) \
                 with {groups} groups; expected w (C_out, C_in/groups = {}, kH, kW) with C_out \
                 divisible by {groups}",
                c_in / groups
            );
        }
        if kh == 0 || kw == 0 {
            candle_core::bail!("conv2d: empty kernel ({kh}, {kw})");
        }
        let span = |len: usize, pad: usize, k: usize, d: usize, s: usize, dim: &str| {
            let extent = d * (k - 1) + 1;
            if len + 2 * pad < extent {
                candle_core::bail!(
                    "conv2d: input {dim} {len} with padding {pad} is smaller than the dilated \
                     kernel extent {extent}"
                );
            }
            Ok((len + 2 * pad - extent) / s + 1)
        };
        let oh = span(h, ph, kh, dh, sh, "height")?;
        let ow = span(w, pw, kw, dw, sw, "width")?;
        Ok(Self {
            b,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            ph,
            pw,
            sh,
            sw,
            dh,
            dw,
            groups,
            oh,
            ow,
        })
    }

    pub(crate) fn x_dims(&self) -> (usize, usize, usize, usize) {
        (self.b, self.c_in, self.h, self.w)
    }

    pub(crate) fn w_dims(&self) -> (usize, usize, usize, usize) {
        (self.c_out, self.c_in / self.groups, self.kh, self.kw)
    }

    pub(crate) fn y_dims(&self) -> (usize, usize, usize, usize) {
        (self.b, self.c_out, self.oh, self.ow)
    }

    /// Rows of one group's column matrix: `C_in/G · kH · kW`.
    pub(crate) fn k_group(&self) -> usize {
        self.c_in / self.groups * self.kh * self.kw
    }

    /// A 1×1, stride-1, unpadded convolution is a plain GEMM on the input (no im2col).
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }

    /// Checks that two operands have the dims this geometry was built for.
    pub(crate) fn check(
        &self,
        op: &str,
        a: (&str, &[usize], (usize, usize, usize, usize)),
        b: (&str, &[usize], (usize, usize, usize, usize)),
    ) -> Result<()> {
        for (name, found, (d0, d1, d2, d3)) in [a, b] {
            if found != [d0, d1, d2, d3] {
                candle_core::bail!(
                    "{op}: expected `{name}` of shape ({d0}, {d1}, {d2}, {d3}), found {found:?}"
                );
            }
        }
        Ok(())
    }
}

/// Chooses cuDNN's convolution algorithms by timing instead of by heuristic (PyTorch's
/// `torch.backends.cudnn.benchmark = True`): with `on`, the first convolution of each new
/// geometry (shapes, padding, stride, dilation, groups, dtype) runs every algorithm cuDNN
/// supports once to warm up and twice timed, and keeps the fastest for the rest of the
/// process (per thread). Worth it for training (a fixed set of shapes, thousands of steps);
/// the first step is slower and results may differ in the last bits from the heuristic's
/// choice. Off by default. Without the `cudnn` feature this only records the setting.
pub fn set_cudnn_benchmark(on: bool) {
    CUDNN_BENCHMARK.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`set_cudnn_benchmark`] turned benchmark mode on.
pub fn cudnn_benchmark() -> bool {
    CUDNN_BENCHMARK.load(std::sync::atomic::Ordering::Relaxed)
}

static CUDNN_BENCHMARK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `x (B, C_in, H, W)`, `w (C_out, C_in/groups, kH, kW)` → `(B, C_out, H_out, W_out)` with
/// `H_out = (H + 2p − d(kH − 1) − 1) / s + 1`.
pub fn conv2d(x: &Tensor, w: &Tensor, cfg: Conv2dConfig) -> Result<Tensor> {
    conv2d_with_params(x, w, cfg.into())
}

/// [`conv2d`] with separate height and width parameters (rectangular paddings, strides and
/// dilations; the kernel's `kH × kW` comes from `w`).
pub fn conv2d_with_params(x: &Tensor, w: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    let (b, c_in, h, wd) = x.dims4()?; // (B, C_in, H, W)
    let wdims = w.dims4()?; // (C_out, C_in/G, kH, kW)
    if x.dtype() != w.dtype() {
        candle_core::bail!(
            "conv2d: expected x and w of the same dtype, found {:?} and {:?}",
            x.dtype(),
            w.dtype()
        );
    }
    let g = Geometry::new(
        (b, c_in, h, wd),
        wdims,
        p.padding,
        p.stride,
        p.dilation,
        p.groups,
    )?;
    let cpu = x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64);
    let cudnn = cfg!(feature = "cudnn")
        && x.device().is_cuda()
        && matches!(
            x.dtype(),
            DType::F32 | DType::F64 | DType::F16 | DType::BF16
        );
    if cpu || cudnn {
        return op::ConvForward::apply(g, x, w);
    }
    // Fallback: candle's builtin convolution (square stride and dilation only).
    if p.stride.0 != p.stride.1 || p.dilation.0 != p.dilation.1 {
        candle_core::bail!(
            "conv2d: rectangular stride {:?} / dilation {:?} needs f32/f64 on CPU or the \
             `cudnn` feature on CUDA, found {:?} on {:?}",
            p.stride,
            p.dilation,
            x.dtype(),
            x.device().location()
        );
    }
    let (ph, pw) = p.padding;
    let (x, pad) = if ph == pw {
        (x.clone(), ph)
    } else {
        (x.pad_with_zeros(2, ph, ph)?.pad_with_zeros(3, pw, pw)?, 0) // (B, C_in, H+2ph, W+2pw)
    };
    x.conv2d(w, pad, p.stride.0, p.dilation.0, p.groups)
}

/// A 2D convolution layer with PyTorch's weight names and default initialisation.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    params: Conv2dParams,
}

impl Conv2d {
    /// A layer from existing tensors.
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv2dConfig) -> Self {
        Self::with_params(weight, bias, config.into())
    }

    /// A layer from existing tensors with separate (height, width) parameters.
    pub fn with_params(weight: Tensor, bias: Option<Tensor>, params: Conv2dParams) -> Self {
        Self {
            weight,
            bias,
            params,
        }
    }

    /// The weight `(C_out, C_in/groups, kH, kW)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `(C_out)`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The hyper-parameters. For a layer built with rectangular [`Conv2dParams`] this reports
    /// the height components; use [`Conv2d::params`] for both.
    pub fn config(&self) -> Conv2dConfig {
        Conv2dConfig {
            padding: self.params.padding.0,
            stride: self.params.stride.0,
            dilation: self.params.dilation.0,
            groups: self.params.groups,
        }
    }

    /// The hyper-parameters with separate height and width values.
    pub fn params(&self) -> Conv2dParams {
        self.params
    }
}

impl Module for Conv2d {
    /// `(B, C_in, H, W)` → `(B, C_out, H_out, W_out)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = conv2d_with_params(x, &self.weight, self.params)?;
        match &self.bias {
            None => Ok(y),
            Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
        }
    }
}

/// Builds a square-kernel `Conv2d` under `vb` (`{prefix}.weight`, `{prefix}.bias`) with
/// PyTorch's default initialisation: weight and bias uniform in ±1/√fan_in (what
/// `kaiming_uniform_(a=√5)` reduces to), `fan_in = C_in/groups · k²`.
pub fn conv2d_layer(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    config: Conv2dConfig,
    bias: bool,
    vb: VarBuilder<'_>,
) -> Result<Conv2d> {
    conv2d_layer_rect(
        in_channels,
        out_channels,
        (kernel, kernel),
        config.into(),
        bias,
        vb,
    )
}

/// [`conv2d_layer`] for a `kH × kW` kernel with separate (height, width) parameters (ESANet's
/// 3×1 and 1×3 convolutions), `fan_in = C_in/groups · kH · kW`.
pub fn conv2d_layer_rect(
    in_channels: usize,
    out_channels: usize,
    (kh, kw): (usize, usize),
    params: Conv2dParams,
    bias: bool,
    vb: VarBuilder<'_>,
) -> Result<Conv2d> {
    if params.groups == 0 || in_channels % params.groups != 0 {
        candle_core::bail!(
            "conv2d_layer: in_channels {in_channels} must be divisible by groups {}",
            params.groups
        );
    }
    let fan_in = (in_channels / params.groups * kh * kw) as f64;
    let bound = 1.0 / fan_in.sqrt();
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let weight = vb.get_with_hints(
        (out_channels, in_channels / params.groups, kh, kw),
        "weight",
        init,
    )?;
    let bias = if bias {
        Some(vb.get_with_hints(out_channels, "bias", init)?)
    } else {
        None
    };
    Ok(Conv2d::with_params(weight, bias, params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradients, GradCheck};
    use candle_core::Device;

    fn data(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| ((i * 7 + seed) as f64 * 0.731).sin())
            .collect()
    }

    /// The gradient ops are themselves differentiable (double backward) with correct gradients.
    #[test]
    fn gradient_ops_have_correct_gradients() {
        let dev = Device::Cpu;
        let g = Geometry::new((2, 4, 5, 6), (4, 2, 3, 3), (1, 2), (2, 1), (1, 2), 2)
            .expect("valid geometry");
        let x = Tensor::from_vec(data(2 * 4 * 5 * 6, 1), g.x_dims(), &dev).expect("x");
        let w = Tensor::from_vec(data(4 * 2 * 3 * 3, 2), g.w_dims(), &dev).expect("w");
        let (b, c, oh, ow) = g.y_dims();
        let dy = Tensor::from_vec(data(b * c * oh * ow, 3), g.y_dims(), &dev).expect("dy");
        let cfg = GradCheck::default();
        check_gradients(
            |t| op::ConvInputGrad::apply(g, &t[0], &t[1]),
            &[dy.clone(), w],
            cfg,
        )
        .expect("input-grad op");
        check_gradients(
            |t| op::ConvWeightGrad::apply(g, &t[0], &t[1]),
            &[x, dy],
            cfg,
        )
        .expect("weight-grad op");
    }
}
