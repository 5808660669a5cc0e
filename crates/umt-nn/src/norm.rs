//! Fused BatchNorm for training: [`batch_norm`] and [`batch_norm_relu`] apply a
//! `candle_nn::BatchNorm` (PyTorch's `nn.BatchNorm2d`: names `weight`, `bias`, `running_mean`,
//! `running_var`) with the same results as its `forward_t`, but on CPU f32/f64 in training
//! mode as one custom op with a closed-form backward.
//!
//! candle's own training forward is about ten tensor ops (a transposed copy, two means, a
//! subtraction, a square, a division, the affine pair and a transposed result), each with its
//! own backward, so a BatchNorm costs many passes over the activations forward and more
//! backward. The fused op reads the input twice (statistics, then the output) and writes once;
//! its backward reads the input, the output and the gradient once for the per-channel sums and
//! once more for the input gradient:
//!
//! `dx = γ/σ · (dy − mean(dy) − x̂ · mean(dy · x̂))`, `dγ = Σ dy · x̂`, `dβ = Σ dy`,
//!
//! with `x̂ = (x − μ)/σ`, `σ = √(var + ε)` over `(N, H, W)` per channel, and `dy` masked by
//! `y > 0` first for the fused ReLU. Sums are accumulated in f64.
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

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor, Var, WithDType,
};
use candle_nn::{BatchNorm, ModuleT};
use rayon::prelude::*;

use crate::pool::{run1, run3, Kernel1, Kernel3};

/// `bn(x)` (see the module docs): `x (N, C, H, W)` or any `(N, C, ...)` → same shape.
pub fn batch_norm(bn: &BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    forward(bn, x, train, false)
}

/// `relu(bn(x))` with the ReLU fused into the same op (see the module docs).
pub fn batch_norm_relu(bn: &BatchNorm, x: &Tensor, train: bool) -> Result<Tensor> {
    forward(bn, x, train, true)
}

fn forward(bn: &BatchNorm, x: &Tensor, train: bool, relu: bool) -> Result<Tensor> {
    let fused = train
        && x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && x.rank() >= 2
        && x.elem_count() > 0;
    let Some((weight, bias)) = bn.weight_and_bias().filter(|_| fused) else {
        let y = bn.forward_t(x, train)?;
        return if relu { y.relu() } else { Ok(y) };
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
    let op = BnTrain {
        eps: bn.eps(),
        relu,
        channels: c,
        plane: count / n,
    };
    // Running statistics, as PyTorch: unbiased batch variance, momentum m.
    let (mean, var) = op.stats_tensor(&x)?;
    let m = bn.momentum();
    let unbias = count as f64 / (count as f64 - 1.0);
    let rm = Var::from_tensor(bn.running_mean())?;
    let rv = Var::from_tensor(bn.running_var())?;
    rm.set(&((rm.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
    rv.set(&((rv.as_tensor() * (1.0 - m))? + (var * (m * unbias))?)?)?;
    x.apply_op3(weight, bias, op)
}

/// The fused training-mode BatchNorm (+ ReLU): inputs `x (N, C, …)`, `γ (C)`, `β (C)`.
#[derive(Debug, Clone, Copy)]
struct BnTrain {
    eps: f64,
    relu: bool,
    channels: usize,
    /// Elements per (sample, channel) plane.
    plane: usize,
}

/// Per-channel mean and biased variance of a contiguous `(N, C, plane)` buffer, in f64.
fn channel_stats<T: WithDType>(x: &[T], c: usize, plane: usize) -> Vec<(f64, f64)> {
    let n = x.len() / (c * plane);
    let count = (n * plane) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..n).map(move |i| &x[(i * c + ch) * plane..][..plane]);
            let sum: f64 = planes().flatten().map(|v| v.to_f64()).sum();
            let mean = sum / count;
            let sq: f64 = planes()
                .flatten()
                .map(|v| (v.to_f64() - mean).powi(2))
                .sum();
            (mean, sq / count)
        })
        .collect()
}

impl BnTrain {
    /// `(mean (C), biased var (C))` of a contiguous CPU `x`, as tensors of `x`'s dtype.
    fn stats_tensor(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let stats = x.apply_op1_no_bwd(&BnStats(*self))?; // (2, C)
        Ok((stats.get(0)?, stats.get(1)?))
    }

    fn forward_kernel<T: WithDType>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
        let (c, plane) = (self.channels, self.plane);
        let stats = channel_stats(x, c, plane);
        let affine: Vec<(f64, f64)> = stats
            .iter()
            .enumerate()
            .map(|(ch, &(mean, var))| {
                let scale = gamma[ch].to_f64() / (var + self.eps).sqrt();
                (scale, beta[ch].to_f64() - mean * scale)
            })
            .collect();
        let mut y = vec![T::zero(); x.len()];
        y.par_chunks_mut(plane)
            .zip(x.par_chunks(plane))
            .enumerate()
            .for_each(|(i, (yp, xp))| {
                let (scale, shift) = affine[i % c];
                let (scale, shift) = (T::from_f64(scale), T::from_f64(shift));
                for (o, &v) in yp.iter_mut().zip(xp) {
                    let r = v * scale + shift;
                    *o = if self.relu && r < T::zero() {
                        T::zero()
                    } else {
                        r
                    };
                }
            });
        y
    }
}

impl Kernel3 for BnTrain {
    fn op(&self) -> &'static str {
        "umt-batch-norm-train"
    }

    fn apply<T: WithDType>(&self, x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
        self.forward_kernel(x, gamma, beta)
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
        for (what, l) in [("weight", l2), ("bias", l3)] {
            if l.dims() != [self.channels] {
                bail!(
                    "{name}: expected `{what}` of shape ({},), found {:?}",
                    self.channels,
                    l.dims()
                );
            }
        }
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
        let gamma_host: Vec<f64> = gamma.to_dtype(DType::F64)?.to_vec1()?;
        let back = BnTrainBackward {
            fwd: *self,
            gamma: gamma_host,
        };
        let packed = x.apply_op3_no_bwd(&y.contiguous()?, &dy.contiguous()?, &back)?;
        let n = x.elem_count();
        let c = self.channels;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, n, c)?;
        let dbeta = packed.narrow(0, n + c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Per-channel `[mean; biased variance]` `(2, C)` of `x (N, C, …)` (no gradient).
struct BnStats(BnTrain);

impl Kernel1 for BnStats {
    fn op(&self) -> &'static str {
        "umt-batch-norm-stats"
    }

    fn apply<T: WithDType>(&self, x: &[T]) -> Result<Vec<T>> {
        let stats = channel_stats(x, self.0.channels, self.0.plane);
        let mean = stats.iter().map(|s| T::from_f64(s.0));
        Ok(mean.chain(stats.iter().map(|s| T::from_f64(s.1))).collect())
    }
}

impl CustomOp1 for BnStats {
    fn name(&self) -> &'static str {
        Kernel1::op(self)
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((run1(self, s, l)?, Shape::from((2, self.0.channels))))
    }
}

/// The backward of [`BnTrain`]: inputs `x`, `y`, `dy` → `[dx (flat), dγ (C), dβ (C)]` packed in
/// one flat tensor (a custom op returns one tensor).
struct BnTrainBackward {
    fwd: BnTrain,
    gamma: Vec<f64>,
}

impl BnTrainBackward {
    fn backward_kernel<T: WithDType>(&self, x: &[T], y: &[T], dy: &[T]) -> Vec<T> {
        let BnTrain {
            eps,
            relu,
            channels: c,
            plane,
        } = self.fwd;
        let len = x.len();
        let n = len / (c * plane);
        let count = (n * plane) as f64;
        let stats = channel_stats(x, c, plane);
        let g = |i: usize| -> f64 {
            if relu && y[i] <= T::zero() {
                0.0
            } else {
                dy[i].to_f64()
            }
        };
        // Per channel: Σ dy and Σ dy·x̂.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mean, var) = stats[ch];
                let inv = 1.0 / (var + eps).sqrt();
                let (mut s, mut sx) = (0.0, 0.0);
                for i in 0..n {
                    let start = (i * c + ch) * plane;
                    for (k, xv) in x[start..start + plane].iter().enumerate() {
                        let d = g(start + k);
                        s += d;
                        sx += d * (xv.to_f64() - mean) * inv;
                    }
                }
                (s, sx)
            })
            .collect();
        let mut out = vec![T::zero(); len + 2 * c];
        let (dx, tail) = out.split_at_mut(len);
        dx.par_chunks_mut(plane).enumerate().for_each(|(p, dxp)| {
            let ch = p % c;
            let (mean, var) = stats[ch];
            let inv = 1.0 / (var + eps).sqrt();
            let (s, sx) = sums[ch];
            let k = self.gamma[ch] * inv;
            let (ms, msx) = (s / count, sx / count);
            for (j, o) in dxp.iter_mut().enumerate() {
                let i = p * plane + j;
                let xhat = (x[i].to_f64() - mean) * inv;
                *o = T::from_f64(k * (g(i) - ms - xhat * msx));
            }
        });
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
        Ok((out, Shape::from(len + 2 * self.fwd.channels)))
    }
}
