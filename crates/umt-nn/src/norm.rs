//! Fused BatchNorm for training: [`batch_norm`], [`batch_norm_relu`] and
//! [`batch_norm_add_relu`] (a residual block's `relu(bn(x) + shortcut)`) apply a
//! `candle_nn::BatchNorm` (PyTorch's `nn.BatchNorm2d`: names `weight`, `bias`, `running_mean`,
//! `running_var`) with the same results as its `forward_t`, but on CPU f32/f64 in training
//! mode as one custom op with a closed-form backward. With the `cuda` feature and
//! [`crate::gpu::custom_kernels`] on, the same op runs on CUDA f32/f64 through umt-nn's own kernels (`src/cuda.rs`: split per-channel reductions in
//! f64, one element-wise pass forward and one backward), instead of candle's ~10 forward and ~20
//! backward kernels per BatchNorm.
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
//! Evaluation mode, other devices and dtypes (f16/bf16, Metal, CUDA without the `cuda` feature),
//! and BatchNorms without affine parameters use candle's `forward_t` (then `relu`).
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

use candle_core::backend::BackendStorage;
#[cfg(feature = "cuda")]
use candle_core::cuda::CudaStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp3, DType, InplaceOp2, Layout, Result, Shape, Tensor,
    WithDType,
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
    let on_cpu = x.device().is_cpu();
    let fused = train
        && ((on_cpu && matches!(x.dtype(), DType::F32 | DType::F64)) || crate::gpu::use_kernels(x))
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
    // (2, C): x's dtype on CPU (copied to the host below), f64 on CUDA (kept on the device).
    let stats = x.apply_op1_no_bwd(&BnStats { channels: c, plane })?;
    let host: Vec<Vec<f64>> = if on_cpu {
        stats.to_dtype(DType::F64)?.to_vec2()?
    } else {
        vec![Vec::new(), Vec::new()]
    };
    // Running statistics, as PyTorch: unbiased batch variance, momentum m.
    let m = bn.momentum();
    let unbias = count as f64 / (count as f64 - 1.0);
    // In place in the BatchNorm's variables (a BatchNorm built from plain tensors keeps them).
    for (which, running, factor) in [(0, bn.running_mean(), 1.0), (1, bn.running_var(), unbias)] {
        if running.is_variable() {
            let update = RunningUpdate {
                which,
                momentum: m,
                factor,
            };
            running.inplace_op2(&stats, &update)?;
        }
    }
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
        stats_dev: (!on_cpu).then_some(stats),
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
    /// Batch `(mean, biased variance)` per channel (CPU; empty on CUDA).
    stats: Arc<Vec<(f64, f64)>>,
    /// The same `[mean (C); variance (C)]` as an f64 device tensor (CUDA; `None` on CPU).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    stats_dev: Option<Tensor>,
}

/// Lanes of the partial sums (independent accumulators the compiler vectorises).
const LANES: usize = 16;

/// Elements per lane summed in the tensor's dtype before the lanes are added into the f64
/// total: f32 partial sums over at most 64 values (relative error ≲ 64 · 2⁻²⁴ ≈ 4e-6 in the
/// worst case, far less on average) keep the loop in 16 f32 lanes without an f64 conversion
/// per element, which made the statistics compute-bound (~110 ms of a 1.7 s step at the audio
/// shape, docs/performance.md).
const BLOCK_PER_LANE: usize = 64;

/// `Σ f(v)` over `xs`, in [`LANES`] partial sums of the dtype per block, blocks added in f64.
#[inline(always)]
fn block_sum<T: WithDType>(xs: &[T], f: impl Fn(T) -> T) -> f64 {
    let mut total = 0f64;
    for blk in xs.chunks(LANES * BLOCK_PER_LANE) {
        let mut acc = [T::zero(); LANES];
        let mut it = blk.chunks_exact(LANES);
        for ch in &mut it {
            for (a, &v) in acc.iter_mut().zip(ch) {
                *a += f(v);
            }
        }
        total += acc.iter().map(|a| a.to_f64()).sum::<f64>();
        total += it.remainder().iter().map(|&v| f(v).to_f64()).sum::<f64>();
    }
    total
}

/// `(Σ u, Σ v)` with `(u, v) = f(a_k, b_k, c_k)` over three equally long slices, blocked as in
/// [`block_sum`].
#[inline(always)]
fn block_sum2<T: WithDType>(
    (xs, ys, zs): (&[T], &[T], &[T]),
    f: impl Fn(T, T, T) -> (T, T),
) -> (f64, f64) {
    let (mut tu, mut tv) = (0f64, 0f64);
    let span = LANES * BLOCK_PER_LANE;
    for ((bx, by), bz) in xs.chunks(span).zip(ys.chunks(span)).zip(zs.chunks(span)) {
        let (mut au, mut av) = ([T::zero(); LANES], [T::zero(); LANES]);
        let (mut ix, mut iy, mut iz) = (
            bx.chunks_exact(LANES),
            by.chunks_exact(LANES),
            bz.chunks_exact(LANES),
        );
        for ((cx, cy), cz) in (&mut ix).zip(&mut iy).zip(&mut iz) {
            for l in 0..LANES {
                let (u, v) = f(cx[l], cy[l], cz[l]);
                au[l] += u;
                av[l] += v;
            }
        }
        tu += au.iter().map(|a| a.to_f64()).sum::<f64>();
        tv += av.iter().map(|a| a.to_f64()).sum::<f64>();
        let rest = ix
            .remainder()
            .iter()
            .zip(iy.remainder())
            .zip(iz.remainder());
        for ((&a, &b), &c) in rest {
            let (u, v) = f(a, b, c);
            tu += u.to_f64();
            tv += v.to_f64();
        }
    }
    (tu, tv)
}

/// Per-channel mean and biased variance of a contiguous `(N, C, plane)` buffer, in f64
/// (two passes: the mean, then the centred squares).
fn channel_stats<T: WithDType>(x: &[T], c: usize, plane: usize) -> Vec<(f64, f64)> {
    let n = x.len() / (c * plane);
    let count = (n * plane) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            crate::simd::best(
                #[inline(always)]
                || {
                    let plane_of = |i: usize| &x[(i * c + ch) * plane..][..plane];
                    let sum: f64 = (0..n).map(|i| block_sum(plane_of(i), |v| v)).sum();
                    let mean = sum / count;
                    let m = T::from_f64(mean);
                    // Centred on the mean rounded to the dtype, m; since Σ(x − m) = N·(μ − m),
                    // Σ(x − μ)² = Σ(x − m)² − N·(μ − m)².
                    let sq: f64 = (0..n)
                        .map(|i| block_sum(plane_of(i), move |v| (v - m) * (v - m)))
                        .sum();
                    let shift = mean - m.to_f64();
                    (mean, (sq / count - shift * shift).max(0.0))
                },
            )
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
                let act = move |r: T| if relu && r < T::zero() { T::zero() } else { r };
                crate::simd::best(
                    #[inline(always)]
                    || match residual {
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
                    },
                )
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
        let on_cpu = x.device().is_cpu();
        let back = BnTrainBackward {
            fwd: self.clone(),
            gamma: if on_cpu {
                gamma.to_dtype(DType::F64)?.to_vec1()?
            } else {
                Vec::new()
            },
            gamma_dev: (!on_cpu).then(|| gamma.clone()),
            residual,
        };
        x.apply_op3_no_bwd(&y.contiguous()?, &dy.contiguous()?, &back)
    }

    /// Checks that the host statistics are there (the op was built for a CPU input).
    fn check_host_stats(&self, op: &str) -> Result<()> {
        if self.stats.len() != self.channels {
            bail!("{op}: batch statistics were computed on another device");
        }
        Ok(())
    }

    /// The device statistics and the shape parameters of the CUDA kernels.
    #[cfg(feature = "cuda")]
    fn cuda_parts(&self, op: &str) -> Result<(&Tensor, crate::cuda::BnShape)> {
        let Some(stats) = self.stats_dev.as_ref() else {
            bail!("{op}: batch statistics were computed on another device");
        };
        let shape = crate::cuda::BnShape {
            channels: self.channels,
            plane: self.plane,
            eps: self.eps,
            relu: self.relu,
        };
        Ok((stats, shape))
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
        self.check_host_stats(name)?;
        let out = run3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let name = self.name();
        self.check_dims(name, "weight", l2, &[self.channels])?;
        self.check_dims(name, "bias", l3, &[self.channels])?;
        let (stats, shape) = self.cuda_parts(name)?;
        let affine = [(s2, l2, 0), (s3, l3, 0)];
        let out = crate::cuda::bn_apply((s1, l1), affine, stats, None, shape)?;
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
        self.0.check_host_stats(name)?;
        let out = run3(self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let name = self.name();
        let c = self.0.channels;
        self.0.check_dims(name, "weight and bias", l2, &[2 * c])?;
        self.0.check_dims(name, "residual", l3, l1.dims())?;
        let (stats, shape) = self.0.cuda_parts(name)?;
        let affine = [(s2, l2, 0), (s2, l2, c)];
        let out = crate::cuda::bn_apply((s1, l1), affine, stats, Some((s3, l3)), shape)?;
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

/// `running = running·(1 − m) + stats[which]·(m·factor)` in place on a running statistic
/// `(C)` from the batch statistics `stats (2, C)` (PyTorch's update; `factor` turns the biased
/// batch variance into the unbiased one).
struct RunningUpdate {
    which: usize,
    momentum: f64,
    factor: f64,
}

impl RunningUpdate {
    fn apply<T: WithDType>(&self, run: &mut [T], stats: &[T]) -> Result<()> {
        let c = run.len();
        if stats.len() != 2 * c {
            bail!(
                "batch_norm: {c} running statistics, but {} batch statistics",
                stats.len()
            );
        }
        let keep = T::from_f64(1.0 - self.momentum);
        let take = T::from_f64(self.momentum * self.factor);
        for (r, &s) in run.iter_mut().zip(&stats[self.which * c..][..c]) {
            *r = *r * keep + s * take;
        }
        Ok(())
    }
}

impl InplaceOp2 for RunningUpdate {
    fn name(&self) -> &'static str {
        "umt-batch-norm-running-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (Some((ra, rb)), Some((sa, sb))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            bail!("batch_norm: running and batch statistics must be contiguous");
        };
        match (s1, s2) {
            (CpuStorage::F32(r), CpuStorage::F32(s)) => self.apply(&mut r[ra..rb], &s[sa..sb]),
            (CpuStorage::F64(r), CpuStorage::F64(s)) => self.apply(&mut r[ra..rb], &s[sa..sb]),
            (r, s) => bail!(
                "batch_norm: running statistics {:?} and batch statistics {:?} must both be f32 or f64",
                r.dtype(),
                s.dtype()
            ),
        }
    }

    /// On CUDA the batch statistics are f64 whatever the running statistics' dtype.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<()> {
        crate::cuda::bn_running((s1, l1), (s2, l2), self.which, self.momentum, self.factor)
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

    /// On CUDA the statistics come out in f64 whatever the input dtype.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let out = crate::cuda::bn_stats(s, l, self.channels, self.plane)?;
        Ok((out, Shape::from((2, self.channels))))
    }
}

/// The backward of [`BnTrain`] / [`BnAddRelu`]: inputs `x`, `y`, `dy` → `[dx; dγ (C); dβ (C)]`,
/// or `[dx; dr; dγ (C); dβ (C)]` with a residual, packed in one flat tensor (a custom op
/// returns one tensor).
struct BnTrainBackward {
    fwd: BnTrain,
    /// `γ (C)` on the host (CPU; empty on CUDA).
    gamma: Vec<f64>,
    /// `γ (C)` on the device (CUDA; `None` on CPU).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    gamma_dev: Option<Tensor>,
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
            ..
        } = self.fwd;
        let len = x.len();
        let n = len / (c * plane);
        let count = (n * plane) as f64;
        // Per channel: Σ g and Σ g·x̂.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                crate::simd::best(
                    #[inline(always)]
                    || {
                        let (mean, var) = stats[ch];
                        let inv = 1.0 / (var + eps).sqrt();
                        let (mut s, mut sx) = (0.0, 0.0);
                        for i in 0..n {
                            let start = (i * c + ch) * plane;
                            let (xs, ys, ds) = (
                                &x[start..][..plane],
                                &y[start..][..plane],
                                &dy[start..][..plane],
                            );
                            // One pass for both sums: g = dy masked by y > 0 after a ReLU.
                            let m = T::from_f64(mean);
                            let (a, b) = block_sum2((xs, ys, ds), move |xv, yv, dv| {
                                let gk = if relu && yv <= T::zero() {
                                    T::zero()
                                } else {
                                    dv
                                };
                                (gk, gk * (xv - m))
                            });
                            s += a;
                            sx += b;
                        }
                        (s, sx * inv)
                    },
                )
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
        // Per plane: zipped slices (no bounds checks), compiled wide (see `simd`).
        let planes = |p: usize| {
            let start = p * plane;
            (
                &x[start..][..plane],
                &y[start..][..plane],
                &dy[start..][..plane],
            )
        };
        // g = dy, masked by y > 0 after a ReLU.
        // `move`: the flag is copied into the closure (a reference to it would be re-read
        // after every store, which keeps the loop from vectorising).
        let mask = move |yv: T, dv: T| {
            if relu && yv <= T::zero() {
                T::zero()
            } else {
                dv
            }
        };
        if self.residual {
            dx_planes
                .zip(dr.par_chunks_mut(plane))
                .for_each(|((p, dxp), drp)| {
                    let (a, b, m, k) = coef[p % c];
                    let (xs, ys, ds) = planes(p);
                    crate::simd::best(
                        #[inline(always)]
                        || {
                            let src = xs.iter().zip(ys).zip(ds);
                            for ((o, r), ((&xv, &yv), &dv)) in dxp.iter_mut().zip(drp).zip(src) {
                                let gi = mask(yv, dv);
                                *r = gi;
                                *o = a * gi + b * (xv - m) + k;
                            }
                        },
                    )
                });
        } else {
            dx_planes.for_each(|(p, dxp)| {
                let (a, b, m, k) = coef[p % c];
                let (xs, ys, ds) = planes(p);
                crate::simd::best(
                    #[inline(always)]
                    || {
                        for (o, ((&xv, &yv), &dv)) in dxp.iter_mut().zip(xs.iter().zip(ys).zip(ds))
                        {
                            *o = a * mask(yv, dv) + b * (xv - m) + k;
                        }
                    },
                )
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

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let name = self.name();
        let len = l1.shape().elem_count();
        if l2.shape().elem_count() != len || l3.shape().elem_count() != len {
            bail!("{name}: x, y and dy must have the same shape");
        }
        let (stats, shape) = self.fwd.cuda_parts(name)?;
        let Some(gamma) = self.gamma_dev.as_ref() else {
            bail!("{name}: the weight was not kept on the device");
        };
        let inputs = [(s1, l1), (s2, l2), (s3, l3)];
        let out = crate::cuda::bn_backward(inputs, stats, gamma, self.residual, shape)?;
        let extra = if self.residual { len } else { 0 };
        Ok((out, Shape::from(len + extra + 2 * self.fwd.channels)))
    }
}
