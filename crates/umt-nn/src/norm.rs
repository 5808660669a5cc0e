//! Fused BatchNorm for training: [`batch_norm`], [`batch_norm_relu`] and
//! [`batch_norm_add_relu`] (a residual block's `relu(bn(x) + shortcut)`) apply a
//! `candle_nn::BatchNorm` (PyTorch's `nn.BatchNorm2d`: names `weight`, `bias`, `running_mean`,
//! `running_var`) with the same results as its `forward_t`, but on CPU f32/f64 in training
//! mode as one custom op with a closed-form backward.
//!
//! candle's own training forward is about ten tensor ops (a transposed copy, two means, a
//! subtraction, a square, a division, the affine pair and a transposed result), each with its
//! own backward, so a BatchNorm costs many passes over the activations forward and more
//! backward. The fused op reads the input twice for the statistics (mean, then the centred
//! variance; computed once and kept for the backward), once more for the output, and writes
//! once; its backward reads the input, the output and the gradient once for the per-channel
//! sums and once more for the input gradient:
//!
//! `dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy · x̂))`, `dγ = Σ dy · x̂`, `dβ = Σ dy`,
//!
//! with `x̂ = (x − μ)/σ`, `σ = √(var + ε)` over `(N, H, W)` per channel, and `dy` masked by
//! `y > 0` first for the fused ReLU (with a residual, the shortcut's gradient is that masked
//! `dy`). Sums are accumulated in f64.
//!
//! The running statistics are updated as PyTorch does (`running = (1 − m)·running + m·batch`,
//! the unbiased batch variance), in place in the BatchNorm's variables, so checkpoints see them.
//! Evaluation mode, other devices and dtypes, and BatchNorms without affine parameters use
//! candle's `forward_t` (then `relu`).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! let vars = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
//! let bn = candle_nn::batch_norm(4, 1e-5, vb)?;
//! let x = Tensor::randn(0f32, 1.0, (2, 4, 3, 3), &Device::Cpu)?; // (N, C, H, W)
//! let y = umt_nn::norm::batch_norm_relu(&bn, &x, true)?;
//! assert_eq!(y.dims(), &[2, 4, 3, 3]);
//! assert!(y.flatten_all()?.min(0)?.to_scalar::<f32>()? >= 0.0);
//! # Ok::<(), candle_core::Error>(())
//! ```

use std::sync::Arc;

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor, Var, WithDType,
};
use candle_nn::{BatchNorm, ModuleT};
use rayon::prelude::*;

use crate::pool::{run1, run3, Kernel1, Kernel3};

/// `bn(x)` (see the module docs): `x (N, C, H, W)` or any `(N, C, ...)` → same shape.
pub fn batch_norm(bn: &BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    forward(bn, x, train, Tail::Plain)
}

/// `relu(bn(x))` with the ReLU fused into the same op (see the module docs).
pub fn batch_norm_relu(bn: &BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    forward(bn, x, train, Tail::Relu)
}

/// `relu(bn(x) + residual)` in one op (the end of a ResNet block): `x (N, C, …)` and
/// `residual` of the same shape → same shape.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// let vars = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
/// let bn = candle_nn::batch_norm(4, 1e-5, vb)?;
/// let x = Tensor::randn(0f32, 1.0, (2, 4, 3, 3), &Device::Cpu)?; // (N, C, H, W)
/// let shortcut = Tensor::ones((2, 4, 3, 3), DType::F32, &Device::Cpu)?;
/// let y = umt_nn::norm::batch_norm_add_relu(&bn, &x, &shortcut, true)?;
/// assert_eq!(y.dims(), &[2, 4, 3, 3]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn batch_norm_add_relu(
    bn: &BatchNorm,
    x: &Tensor,
    residual: &Tensor,
    train: bool,
) -> Result<Tensor> {
    if residual.dims() != x.dims() {
        bail!(
            "batch_norm_add_relu: expected `residual` of the input's shape {:?}, found {:?}",
            x.dims(),
            residual.dims()
        );
    }
    forward(bn, x, train, Tail::AddRelu(residual))
}

/// What follows the normalisation inside the fused op.
#[derive(Clone, Copy)]
enum Tail<'a> {
    /// Nothing: `bn(x)`.
    Plain,
    /// `relu(bn(x))`.
    Relu,
    /// `relu(bn(x) + residual)`.
    AddRelu(&'a Tensor),
}

fn forward(bn: &BatchNorm, x: &Tensor, train: bool, tail: Tail<'_>) -> Result<Tensor> {
    let fused = train
        && x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.rank() >= 2
        && x.elem_count() > 0;
    let Some((weight, bias)) = bn.weight_and_bias().filter(|_| fused) else {
        let y = bn.forward_t(x, train)?;
        return match tail {
            Tail::Plain => Ok(y),
            Tail::Relu => y.relu(),
            Tail::AddRelu(r) => (y + r)?.relu(),
        };
    };
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    if bn.running_mean().dim(0)? != c {
        bail!(
            "batch_norm: expected {} channels, found input of shape {:?}",
            bn.running_mean().dim(0)?,
            x.dims()
        );
    }
    let count = x.elem_count() / c;
    if count < 2 {
        bail!(
            "batch_norm: training needs more than one value per channel, found input of shape {:?}",
            x.dims()
        );
    }
    let x = x.contiguous()?;
    let plane = count / n;
    // Batch statistics, computed once: the forward and the backward kernels reuse them.
    let stats = x.apply_op1_no_bwd(&BnStats { channels: c, plane })?; // (2, C)
    let host: Vec<Vec<f64>> = stats.to_dtype(DType::F64)?.to_vec2()?;
    let (mean, var) = (stats.get(0)?, stats.get(1)?);
    // Running statistics, as PyTorch: unbiased batch variance, momentum m.
    let m = bn.momentum();
    let unbias = count as f64 / (count as f64 - 1.0);
    let rm = Var::from_tensor(bn.running_mean())?;
    let rv = Var::from_tensor(bn.running_var())?;
    rm.set(&((rm.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
    rv.set(&((rv.as_tensor() * (1.0 - m))? + (var * (m * unbias))?)?)?;
    let op = BnTrain {
        eps: bn.eps(),
        relu: !matches!(tail, Tail::Plain),
        channels: c,
        plane,
        stats: Arc::new(
            host[0]
                .iter()
                .copied()
                .zip(host[1].iter().copied())
                .collect(),
        ),
    };
    match tail {
        Tail::AddRelu(r) => {
            let affine = Tensor::cat(&[weight, bias], 0)?; // (2C): γ then β
            x.apply_op3(&affine, &r.contiguous()?, BnAddRelu(op))
        }
        Tail::Plain | Tail::Relu => x.apply_op3(weight, bias, op),
    }
}

/// The fused training-mode BatchNorm (+ ReLU): inputs `x (N, C, …)`, `γ (C)`, `β (C)`.
#[derive(Debug, Clone)]
struct BnTrain {
    eps: f64,
    relu: bool,
    channels: usize,
    /// Elements per (sample, channel) plane.
    plane: usize,
    /// Batch `(mean, biased variance)` per channel.
    stats: Arc<Vec<(f64, f64)>>,
}

/// Lanes of the f64 accumulators (independent sums the compiler can vectorise).
const LANES: usize = 8;

/// `Σ f(i)` over `0..len` with [`LANES`] independent f64 accumulators.
#[inline(always)]
fn lane_sum(len: usize, f: impl Fn(usize) -> f64) -> f64 {
    let mut acc = [0f64; LANES];
    let full = len / LANES * LANES;
    for base in (0..full).step_by(LANES) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(base + l);
        }
    }
    let tail: f64 = (full..len).map(&f).sum();
    acc.iter().sum::<f64>() + tail
}

/// Per-channel mean and biased variance of a contiguous `(N, C, plane)` buffer, in f64
/// (two passes: the mean, then the centred squares).
fn channel_stats<T: WithDType>(x: &[T], c: usize, plane: usize) -> Vec<(f64, f64)> {
    let n = x.len() / (c * plane);
    let count = (n * plane) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let plane_of = |i: usize| &x[(i * c + ch) * plane..][..plane];
            let sum: f64 = (0..n)
                .map(|i| {
                    let p = plane_of(i);
                    lane_sum(plane, |k| p[k].to_f64())
                })
                .sum();
            let mean = sum / count;
            let sq: f64 = (0..n)
                .map(|i| {
                    let p = plane_of(i);
                    lane_sum(plane, |k| (p[k].to_f64() - mean).powi(2))
                })
                .sum();
            (mean, sq / count)
        })
        .collect()
}

impl BnTrain {
    /// `y = [relu](x·scale + shift [+ r])` per channel, `scale = γ/σ`, `shift = β − μ·scale`.
    fn forward_kernel<T: WithDType>(
        &self,
        x: &[T],
        gamma: &[T],
        beta: &[T],
        residual: Option<&[T]>,
    ) -> Vec<T> {
        let (c, plane) = (self.channels, self.plane);
        let affine: Vec<(T, T)> = self
            .stats
            .iter()
            .enumerate()
            .map(|(ch, &(mean, var))| {
                let scale = gamma[ch].to_f64() / (var + self.eps).sqrt();
                let shift = beta[ch].to_f64() - mean * scale;
                (T::from_f64(scale), T::from_f64(shift))
            })
            .collect();
        let relu = self.relu;
        let mut y = vec![T::zero(); x.len()];
        y.par_chunks_mut(plane)
            .zip(x.par_chunks(plane))
            .enumerate()
            .for_each(|(i, (yp, xp))| {
                let (scale, shift) = affine[i % c];
                let act = |r: T| if relu && r < T::zero() { T::zero() } else { r };
                match residual {
                    Some(res) => {
                        let rp = &res[i * plane..][..plane];
                        for ((o, &v), &r) in yp.iter_mut().zip(xp).zip(rp) {
                            *o = act(v * scale + shift + r);
                        }
                    }
                    None => {
                        for (o, &v) in yp.iter_mut().zip(xp) {
                            *o = act(v * scale + shift);
                        }
                    }
                }
            });
        y
    }

    /// The packed gradients (see [`BnTrainBackward`]); `gamma (C)`.
    fn backward(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        (y, dy): (&Tensor, &Tensor),
        residual: bool,
    ) -> Result<Tensor> {
        let back = BnTrainBackward {
            fwd: self.clone(),
            gamma: gamma.to_dtype(DType::F64)?.to_vec1()?,
            residual,
        };
        x.apply_op3_no_bwd(&y.contiguous()?, &dy.contiguous()?, &back)
    }

    /// Checks that `name`'s layout has the dims `expected`.
    fn check_dims(&self, op: &str, name: &str, l: &Layout, expected: &[usize]) -> Result<()> {
        if l.dims() != expected {
            bail!(
                "{op}: expected `{name}` of shape {expected:?}, found {:?}",
                l.dims()
            );
        }
        Ok(())
    }
}

impl Kernel3 for BnTrain {
    fn op(&self) -> &'static str {
        "umt-batch-norm-train"
    }

    fn apply<T: WithDType>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
        self.forward_kernel(x, gamma, beta, None)
    }
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        Kernel3::op(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        self.check_dims(name, "weight", l2, &[self.channels])?;
        self.check_dims(name, "bias", l3, &[self.channels])?;
        let out = run3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = self.backward(x, gamma, (y, dy), false)?;
        let n = x.elem_count();
        let c = self.channels;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, n, c)?;
        let dbeta = packed.narrow(0, n + c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// `relu(bn(x) + r)`: inputs `x (N, C, …)`, `[γ; β] (2C)`, `r` (the shape of `x`).
struct BnAddRelu(BnTrain);

impl Kernel3 for BnAddRelu {
    fn op(&self) -> &'static str {
        "umt-batch-norm-add-relu-train"
    }

    fn apply<T: WithDType>(&self, x: &[T], affine: &[T], residual: &[T]) -> Vec<T> {
        let (gamma, beta) = affine.split_at(self.0.channels);
        self.0.forward_kernel(x, gamma, beta, Some(residual))
    }
}

impl CustomOp3 for BnAddRelu {
    fn name(&self) -> &'static str {
        Kernel3::op(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        self.0
            .check_dims(name, "weight and bias", l2, &[2 * self.0.channels])?;
        self.0.check_dims(name, "residual", l3, l1.dims())?;
        let out = run3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        affine: &Tensor,
        _residual: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = x.elem_count();
        let c = self.0.channels;
        let gamma = affine.narrow(0, 0, c)?;
        let packed = self.0.backward(x, &gamma, (y, dy), true)?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dr = packed.narrow(0, n, n)?.reshape(x.shape())?;
        let daffine = packed.narrow(0, 2 * n, 2 * c)?; // [dγ; dβ]
        Ok((Some(dx), Some(daffine), Some(dr)))
    }
}

/// Per-channel `[mean; biased variance]` `(2, C)` of `x (N, C, …)` (no gradient).
struct BnStats {
    channels: usize,
    plane: usize,
}

impl Kernel1 for BnStats {
    fn op(&self) -> &'static str {
        "umt-batch-norm-stats"
    }

    fn apply<T: WithDType>(&self, x: &[T]) -> Result<Vec<T>> {
        let stats = channel_stats(x, self.channels, self.plane);
        let mean = stats.iter().map(|s| T::from_f64(s.0));
        Ok(mean.chain(stats.iter().map(|s| T::from_f64(s.1))).collect())
    }
}

impl CustomOp1 for BnStats {
    fn name(&self) -> &'static str {
        Kernel1::op(self)
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((run1(self, s, l)?, Shape::from((2, self.channels))))
    }
}

/// The backward of [`BnTrain`] / [`BnAddRelu`]: inputs `x`, `y`, `dy` → `[dx; dγ (C); dβ (C)]`,
/// or `[dx; dr; dγ (C); dβ (C)]` with a residual, packed in one flat tensor (a custom op
/// returns one tensor).
struct BnTrainBackward {
    fwd: BnTrain,
    /// `γ (C)` on the host.
    gamma: Vec<f64>,
    residual: bool,
}

impl BnTrainBackward {
    fn backward_kernel<T: WithDType>(&self, x: &[T], y: &[T], dy: &[T]) -> Vec<T> {
        let BnTrain {
            eps,
            relu,
            channels: c,
            plane,
            ref stats,
        } = self.fwd;
        let len = x.len();
        let n = len / (c * plane);
        let count = (n * plane) as f64;
        // g = dy, masked by y > 0 after a ReLU.
        let g = |i: usize| -> T {
            if relu && y[i] <= T::zero() {
                T::zero()
            } else {
                dy[i]
            }
        };
        // Per channel: Σ g and Σ g·x̂.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mean, var) = stats[ch];
                let inv = 1.0 / (var + eps).sqrt();
                let (mut s, mut sx) = (0.0, 0.0);
                for i in 0..n {
                    let start = (i * c + ch) * plane;
                    s += lane_sum(plane, |k| g(start + k).to_f64());
                    sx += lane_sum(plane, |k| {
                        g(start + k).to_f64() * (x[start + k].to_f64() - mean)
                    });
                }
                (s, sx * inv)
            })
            .collect();
        // dx = γ/σ·(g − Σg/n − x̂·Σg·x̂/n) = a·g + b·(x − μ) + k per channel.
        let coef: Vec<(T, T, T, T)> = (0..c)
            .map(|ch| {
                let (mean, var) = stats[ch];
                let inv = 1.0 / (var + eps).sqrt();
                let (s, sx) = sums[ch];
                let a = self.gamma[ch] * inv;
                let (ms, msx) = (s / count, sx / count);
                let (b, k) = (-a * inv * msx, -a * ms);
                (
                    T::from_f64(a),
                    T::from_f64(b),
                    T::from_f64(mean),
                    T::from_f64(k),
                )
            })
            .collect();
        let extra = if self.residual { len } else { 0 };
        let mut out = vec![T::zero(); len + extra + 2 * c];
        let (dx, rest) = out.split_at_mut(len);
        let (dr, tail) = rest.split_at_mut(extra);
        let dx_planes = dx.par_chunks_mut(plane).enumerate();
        if self.residual {
            dx_planes
                .zip(dr.par_chunks_mut(plane))
                .for_each(|((p, dxp), drp)| {
                    let (a, b, m, k) = coef[p % c];
                    let start = p * plane;
                    for (j, (o, r)) in dxp.iter_mut().zip(drp).enumerate() {
                        let gi = g(start + j);
                        *r = gi;
                        *o = a * gi + b * (x[start + j] - m) + k;
                    }
                });
        } else {
            dx_planes.for_each(|(p, dxp)| {
                let (a, b, m, k) = coef[p % c];
                let start = p * plane;
                for (j, o) in dxp.iter_mut().enumerate() {
                    *o = a * g(start + j) + b * (x[start + j] - m) + k;
                }
            });
        }
        for ch in 0..c {
            tail[ch] = T::from_f64(sums[ch].1);
            tail[c + ch] = T::from_f64(sums[ch].0);
        }
        out
    }
}

impl Kernel3 for BnTrainBackward {
    fn op(&self) -> &'static str {
        "umt-batch-norm-train-backward"
    }

    fn apply<T: WithDType>(&self, x: &[T], y: &[T], dy: &[T]) -> Vec<T> {
        self.backward_kernel(x, y, dy)
    }
}

impl CustomOp3 for BnTrainBackward {
    fn name(&self) -> &'static str {
        Kernel3::op(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let len = l1.shape().elem_count();
        if l2.shape().elem_count() != len || l3.shape().elem_count() != len {
            bail!("{name}: x, y and dy must have the same shape");
        }
        let out = run3(self, (s1, l1), (s2, l2), (s3, l3))?;
        let extra = if self.residual { len } else { 0 };
        Ok((out, Shape::from(len + extra + 2 * self.fwd.channels)))
    }
}
