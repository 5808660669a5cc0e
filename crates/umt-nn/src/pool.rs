//! 2D pooling with correct gradients: [`max_pool2d`], [`avg_pool2d`] and
//! [`adaptive_avg_pool2d`], all with PyTorch's semantics (`ceil_mode = false`,
//! `count_include_pad = true`, `dilation = 1`).
//!
//! candle 0.11's builtin pools have wrong or missing backward passes whenever the kernel differs
//! from the stride or the size is not a multiple of the stride (see
//! `shared/notes/candle-0.11.md`, bug 1), which rules out the ResNet stem pool (3×3, stride 2,
//! padding 1). These ops are candle `CustomOp`s with their own CPU kernels for f32 and f64
//! (parallel over the `B·C` planes with rayon). The backward of the max pool recomputes each
//! window's argmax (candle cannot carry state from forward to backward) and routes the gradient
//! there; ties go to the first maximum in row-major order and NaN counts as the maximum, as in
//! PyTorch.
//!
//! Devices: the custom CPU kernels run for CPU f32/f64 tensors; with the `cuda` feature and
//! [`crate::gpu::custom_kernels`] on, the max pool also runs on CUDA f32/f64 through umt-nn's
//! own kernels (`src/cuda.rs`: one pass
//! forward; backward, one argmax pass over the windows and one deterministic gather per input
//! pixel, summing in the CPU kernel's order). Every other device and dtype takes a
//! device-generic path made of candle's own differentiable ops, with
//! the same forward and correct gradients: the average pools are two small matrix products
//! (`P_h · x · P_wᵀ`, the pooling matrices built on the host), the max pool is a separable
//! maximum over strided slices of the −∞-padded input. That path splits the gradient between
//! tied maxima (candle's `maximum` backward) where PyTorch gives it to the first one; after a
//! ReLU, ties are almost only zeros, whose gradient the ReLU discards anyway.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use umt_nn::pool::{adaptive_avg_pool2d, max_pool2d};
//! let x = Tensor::arange(0f32, 2.0 * 7.0 * 9.0, &Device::Cpu)?.reshape((1, 2, 7, 9))?;
//! let y = max_pool2d(&x, 3, 2, 1)?; // the ResNet stem pool
//! assert_eq!(y.dims(), &[1, 2, 4, 5]); // (7 + 2 − 3)/2 + 1 = 4, (9 + 2 − 3)/2 + 1 = 5
//! let g = adaptive_avg_pool2d(&x, (1, 1))?;
//! assert_eq!(g.dims(), &[1, 2, 1, 1]);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType,
};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

/// One output index's input window `[start, end)` along an axis, already clipped to the input.
type Span = (usize, usize);

/// The pooling windows of a 2D pool: per output row and per output column, the input range it
/// covers (clipped to the unpadded input), plus the input plane size.
#[derive(Debug, Clone)]
struct Windows {
    h: usize,
    w: usize,
    rows: Vec<Span>,
    cols: Vec<Span>,
}

impl Windows {
    /// Windows of a fixed-size pool: output `i` covers `[i·s − p, i·s − p + k)`.
    fn fixed(
        op: &str,
        h: usize,
        w: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        if kernel == 0 || stride == 0 {
            bail!("{op}: kernel ({kernel}) and stride ({stride}) must be positive");
        }
        // PyTorch: "pad should be at most half of effective kernel size"; it also guarantees
        // that every window holds at least one real pixel.
        if 2 * pad > kernel {
            bail!("{op}: padding {pad} must be at most half of the kernel size {kernel}");
        }
        let axis = |len: usize, name: &str| -> Result<Vec<Span>> {
            if len + 2 * pad < kernel {
                bail!("{op}: input {name} {len} with padding {pad} is smaller than the kernel {kernel}");
            }
            let out = (len + 2 * pad - kernel) / stride + 1;
            Ok((0..out)
                .map(|i| {
                    let start = (i * stride).saturating_sub(pad);
                    let end = (i * stride + kernel - pad).min(len);
                    (start, end)
                })
                .collect())
        };
        Ok(Self {
            h,
            w,
            rows: axis(h, "height")?,
            cols: axis(w, "width")?,
        })
    }

    /// PyTorch's adaptive bins: output `i` of `o` covers `[⌊i·L/o⌋, ⌈(i+1)·L/o⌉)`.
    fn adaptive(op: &str, h: usize, w: usize, out_h: usize, out_w: usize) -> Result<Self> {
        if out_h == 0 || out_w == 0 || h == 0 || w == 0 {
            bail!("{op}: input ({h}, {w}) and output ({out_h}, {out_w}) sizes must be positive");
        }
        let axis = |len: usize, out: usize| -> Vec<Span> {
            (0..out)
                .map(|i| (i * len / out, ((i + 1) * len).div_ceil(out)))
                .collect()
        };
        Ok(Self {
            h,
            w,
            rows: axis(h, out_h),
            cols: axis(w, out_w),
        })
    }

    fn in_plane(&self) -> usize {
        self.h * self.w
    }

    fn out_plane(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    fn out_shape(&self, b: usize, c: usize) -> Shape {
        Shape::from((b, c, self.rows.len(), self.cols.len()))
    }
}

/// The contiguous slice of a CPU tensor's storage, or an error naming the op.
pub(crate) fn contiguous_slice<'a, T>(op: &str, data: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op}: the input must be contiguous"),
    }
}

/// A CPU kernel over f32 or f64 data; [`run1`]/[`run2`] dispatch on the dtype.
pub(crate) trait Kernel1 {
    /// The op's name in error messages.
    fn op(&self) -> &'static str;
    /// Computes the output from the contiguous input.
    fn apply<T: WithDType>(&self, x: &[T]) -> Result<Vec<T>>;
}

/// Dispatches a [`Kernel1`] on a CPU storage (f32 or f64 only).
pub(crate) fn run1<K: Kernel1>(k: &K, s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
    Ok(match s {
        CpuStorage::F32(v) => CpuStorage::F32(k.apply(contiguous_slice(k.op(), v, l)?)?),
        CpuStorage::F64(v) => CpuStorage::F64(k.apply(contiguous_slice(k.op(), v, l)?)?),
        other => bail!(
            "{}: only f32 and f64 are supported on the CPU, got {:?}",
            k.op(),
            other.dtype()
        ),
    })
}

/// A CPU kernel over two f32 or f64 inputs of the same dtype.
pub(crate) trait Kernel2 {
    /// The op's name in error messages.
    fn op(&self) -> &'static str;
    /// Computes the output from the two contiguous inputs.
    fn apply<T: WithDType>(&self, a: &[T], b: &[T]) -> Result<Vec<T>>;
}

/// Dispatches a [`Kernel2`] on two CPU storages of the same dtype (f32 or f64 only).
pub(crate) fn run2<K: Kernel2>(
    k: &K,
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<CpuStorage> {
    let op = k.op();
    Ok(match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(k.apply(
            contiguous_slice(op, a, l1)?,
            contiguous_slice(op, b, l2)?,
        )?),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(k.apply(
            contiguous_slice(op, a, l1)?,
            contiguous_slice(op, b, l2)?,
        )?),
        (a, b) => bail!(
            "{op}: only f32 and f64 inputs of one dtype are supported on the CPU, got {:?} and {:?}",
            a.dtype(),
            b.dtype()
        ),
    })
}

/// A CPU kernel over three f32 or f64 inputs of the same dtype.
pub(crate) trait Kernel3 {
    /// The op's name in error messages.
    fn op(&self) -> &'static str;
    /// Computes the output from the three contiguous inputs.
    fn apply<T: WithDType>(&self, a: &[T], b: &[T], c: &[T]) -> Vec<T>;
}

/// Dispatches a [`Kernel3`] on three CPU storages of the same dtype (f32 or f64 only).
pub(crate) fn run3<K: Kernel3>(
    k: &K,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (s3, l3): (&CpuStorage, &Layout),
) -> Result<CpuStorage> {
    let op = k.op();
    Ok(match (s1, s2, s3) {
        (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => CpuStorage::F32(k.apply(
            contiguous_slice(op, a, l1)?,
            contiguous_slice(op, b, l2)?,
            contiguous_slice(op, c, l3)?,
        )),
        (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => CpuStorage::F64(k.apply(
            contiguous_slice(op, a, l1)?,
            contiguous_slice(op, b, l2)?,
            contiguous_slice(op, c, l3)?,
        )),
        (a, b, c) => bail!(
            "{op}: only f32 and f64 inputs of one dtype are supported on the CPU, got {:?}, {:?} and {:?}",
            a.dtype(),
            b.dtype(),
            c.dtype()
        ),
    })
}

/// `(B, C, H, W)` dims of a rank-4 layout.
pub(crate) fn dims4(op: &str, shape: &Shape) -> Result<(usize, usize, usize, usize)> {
    match shape.dims() {
        &[b, c, h, w] => Ok((b, c, h, w)),
        d => bail!("{op}: expected a (B, C, H, W) tensor, got shape {d:?}"),
    }
}

// ------------------------------------------------------------------------------------------
// Max pool.

/// Flat index (inside the plane) of the first maximum of a window; NaN wins, as in PyTorch.
#[inline]
fn window_argmax<T: WithDType>(plane: &[T], w: usize, rows: Span, cols: Span) -> usize {
    let mut best = rows.0 * w + cols.0;
    let mut best_v = T::from_f64(f64::NEG_INFINITY);
    for r in rows.0..rows.1 {
        let start = r * w + cols.0;
        for (j, &v) in plane[start..r * w + cols.1].iter().enumerate() {
            // Greater, or unordered (v is NaN: best_v never is, we return on the first NaN).
            match v.partial_cmp(&best_v) {
                Some(std::cmp::Ordering::Greater) => {
                    best_v = v;
                    best = start + j;
                }
                None => return start + j,
                _ => {}
            }
        }
    }
    best
}

#[derive(Debug, Clone)]
struct MaxPool {
    win: Windows,
    /// `(kernel, stride, padding)` (the CUDA kernels recompute the windows from them).
    ksp: (usize, usize, usize),
    /// The CPU forward's argmax per output (flat index in its input plane), kept for the
    /// backward, which then needs no second search.
    argmax: Arc<OnceLock<Vec<u32>>>,
}

/// One plane of the CPU max pool: `out`/`arg` (Ho·Wo) get each window's first maximum (a NaN
/// wins, as in PyTorch) and its flat index in `plane (H, W)` — the same choice as
/// [`window_argmax`], visited tap by tap across a whole output row with branch-free updates
/// (the per-window search mispredicted on every new maximum: 64 ms for the paper's audio
/// stem, 4×64×257×157, before; docs/performance.md).
#[inline(always)]
fn max_pool_plane<T: WithDType>(
    plane: &[T],
    win: &Windows,
    (k, s, p): (usize, usize, usize),
    out: &mut [T],
    arg: &mut [u32],
) {
    let (w, wo) = (win.w, win.cols.len());
    // One input row split into its `s` column phases (phase q holds columns q, q + s, …), so
    // that a tap's candidates for consecutive outputs are contiguous.
    let wp = w.div_ceil(s);
    let mut phases = vec![T::zero(); s * wp];
    for (oy, &(r0, r1)) in win.rows.iter().enumerate() {
        let best = &mut out[oy * wo..][..wo];
        let idx = &mut arg[oy * wo..][..wo];
        best.fill(T::from_f64(f64::NEG_INFINITY));
        for (i, &(c0, _)) in idx.iter_mut().zip(&win.cols) {
            *i = (r0 * w + c0) as u32;
        }
        for r in r0..r1 {
            let row = &plane[r * w..][..w];
            for q in 0..s.min(w) {
                for (d, &v) in phases[q * wp..].iter_mut().zip(row[q..].iter().step_by(s)) {
                    *d = v;
                }
            }
            for j in 0..k {
                // Outputs whose column ox·s + j − p lies in [0, W).
                let lo = p.saturating_sub(j).div_ceil(s);
                let hi = if w + p > j {
                    ((w + p - j - 1) / s + 1).min(wo)
                } else {
                    0
                };
                if lo >= hi {
                    continue;
                }
                let c0 = lo * s + j - p;
                let src = &phases[(c0 % s) * wp + c0 / s..][..hi - lo];
                let first = (r * w + c0) as u32;
                let step = s as u32;
                let dst = best[lo..hi].iter_mut().zip(&mut idx[lo..hi]);
                for (((b, i), &v), n) in dst.zip(src).zip(0u32..) {
                    #[allow(clippy::eq_op)] // x != x: NaN
                    let take = v > *b || (v != v && *b == *b);
                    *b = if take { v } else { *b };
                    *i = if take { first + n * step } else { *i };
                }
            }
        }
    }
}

impl Kernel1 for MaxPool {
    fn op(&self) -> &'static str {
        "max_pool2d"
    }
    fn apply<T: WithDType>(&self, x: &[T]) -> Result<Vec<T>> {
        let win = &self.win;
        let (in_plane, out_plane) = (win.in_plane(), win.out_plane().max(1));
        if in_plane > u32::MAX as usize {
            bail!("max_pool2d: input planes above 2^32 elements are not supported");
        }
        let n = x.len() / in_plane * out_plane;
        let mut out = vec![T::zero(); n];
        let mut arg = vec![0u32; n];
        out.par_chunks_mut(out_plane)
            .zip(arg.par_chunks_mut(out_plane))
            .zip(x.par_chunks(in_plane))
            .for_each(|((o, a), plane)| {
                crate::simd::best(
                    #[inline(always)]
                    || max_pool_plane(plane, win, self.ksp, o, a),
                );
            });
        // Only the first forward of this op instance runs (one op per call of max_pool2d).
        let _ = self.argmax.set(arg);
        Ok(out)
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, _, _) = dims4(CustomOp1::name(self), l.shape())?;
        Ok((run1(self, s, l)?, self.win.out_shape(b, c)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::cuda::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::cuda::CudaStorage, Shape)> {
        let (b, c, _, _) = dims4(CustomOp1::name(self), l.shape())?;
        let out = self.win.out_shape(b, c);
        let y = crate::cuda::max_pool(s, l, None, self.cuda_shape(b * c))?;
        Ok((y, out))
    }
    /// Routes each output gradient to its window's (recomputed) argmax.
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?;
        Ok(Some(arg.apply_op2_no_bwd(&grad, self)?))
    }
}

/// The backward kernel: inputs `x (B, C, H, W)` and `grad_out (B, C, Ho, Wo)`.
impl Kernel2 for MaxPool {
    fn op(&self) -> &'static str {
        "max_pool2d_backward"
    }
    fn apply<T: WithDType>(&self, x: &[T], g: &[T]) -> Result<Vec<T>> {
        let win = &self.win;
        let mut gx = vec![T::zero(); x.len()];
        if let Some(arg) = self.argmax.get().filter(|a| a.len() == g.len()) {
            // The forward's argmax: the same routing, in the same (output) order.
            gx.par_chunks_mut(win.in_plane())
                .zip(arg.par_chunks(win.out_plane().max(1)))
                .zip(g.par_chunks(win.out_plane().max(1)))
                .for_each(|((gp, ap), go)| {
                    for (&i, &v) in ap.iter().zip(go) {
                        gp[i as usize] += v;
                    }
                });
            return Ok(gx);
        }
        gx.par_chunks_mut(win.in_plane())
            .zip(x.par_chunks(win.in_plane()))
            .zip(g.par_chunks(win.out_plane().max(1)))
            .for_each(|((gp, plane), go)| {
                let mut k = 0;
                for &rows in &win.rows {
                    for &cols in &win.cols {
                        gp[window_argmax(plane, win.w, rows, cols)] += go[k];
                        k += 1;
                    }
                }
            });
        Ok(gx)
    }
}

impl CustomOp2 for MaxPool {
    fn name(&self) -> &'static str {
        "max_pool2d_backward"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, c, _, _) = dims4(CustomOp2::name(self), l1.shape())?;
        if l2.shape() != &self.win.out_shape(b, c) {
            bail!(
                "max_pool2d_backward: gradient shape {:?}, expected {:?}",
                l2.shape(),
                self.win.out_shape(b, c)
            );
        }
        Ok((run2(self, s1, l1, s2, l2)?, l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::cuda::CudaStorage,
        l1: &Layout,
        s2: &candle_core::cuda::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::cuda::CudaStorage, Shape)> {
        let (b, c, _, _) = dims4(CustomOp2::name(self), l1.shape())?;
        if l2.shape() != &self.win.out_shape(b, c) {
            bail!(
                "max_pool2d_backward: gradient shape {:?}, expected {:?}",
                l2.shape(),
                self.win.out_shape(b, c)
            );
        }
        let gx = crate::cuda::max_pool(s1, l1, Some((s2, l2)), self.cuda_shape(b * c))?;
        Ok((gx, l1.shape().clone()))
    }
}

#[cfg(feature = "cuda")]
impl MaxPool {
    /// The pool's sizes for the CUDA kernels over `planes` planes.
    fn cuda_shape(&self, planes: usize) -> crate::cuda::PoolShape {
        crate::cuda::PoolShape {
            planes,
            input: (self.win.h, self.win.w),
            output: (self.win.rows.len(), self.win.cols.len()),
            ksp: self.ksp,
        }
    }
}

/// Max pooling over square windows, PyTorch's `F.max_pool2d(x, kernel, stride, padding)`.
///
/// `x (B, C, H, W)` → `(B, C, Ho, Wo)` with `Ho = (H + 2p − k)/s + 1` (floor, `ceil_mode =
/// false`); padding acts as −∞. Requires `2·padding ≤ kernel` (as PyTorch). The gradient goes to
/// the first maximum of each window (summed where windows overlap). Any device and float dtype
/// (see the module docs).
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, _, h, w) = dims4("max_pool2d", x.shape())?;
    let win = Windows::fixed("max_pool2d", h, w, kernel, stride, padding)?;
    if !has_cpu_kernel(x) && !crate::gpu::use_kernels(x) {
        return generic_max_pool2d(x, &win, kernel, stride, padding);
    }
    let ksp = (kernel, stride, padding);
    x.contiguous()?.apply_op1(MaxPool {
        win,
        ksp,
        argmax: Arc::default(),
    })
}

/// Whether `x` runs on the custom CPU kernels (CPU f32/f64) rather than the generic path.
pub(crate) fn has_cpu_kernel(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// The generic paths need a float dtype (−∞ padding, fractional weights).
fn require_float(op: &str, x: &Tensor) -> Result<()> {
    if !x.dtype().is_float() {
        bail!(
            "{op}: expected a float tensor (f16, bf16, f32 or f64), found {:?}",
            x.dtype()
        );
    }
    Ok(())
}

/// Along `dim`: the `n` elements `start, start + stride, …` of `x` (a strided slice built from
/// `narrow` and `reshape`, all differentiable). `x` must hold `start + n·stride` elements there.
fn strided_slice(x: &Tensor, dim: usize, start: usize, n: usize, stride: usize) -> Result<Tensor> {
    let part = x.narrow(dim, start, n * stride)?;
    if stride == 1 {
        return Ok(part);
    }
    let mut dims = part.dims().to_vec();
    dims[dim] = n;
    dims.insert(dim + 1, stride);
    part.reshape(dims)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// The max pool from candle ops: pad with −∞, take the maximum of the `k` strided row slices,
/// then of the `k` strided column slices of that (max is separable).
fn generic_max_pool2d(
    x: &Tensor,
    win: &Windows,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    require_float("max_pool2d", x)?;
    let (ho, wo) = (win.rows.len(), win.cols.len());
    // Pad by `padding` before and enough after that every slice `k0 + [0, ho·stride)` fits.
    let pad_axis = |x: &Tensor, dim: usize, len: usize, out: usize| -> Result<Tensor> {
        let after = (kernel - 1 + out * stride).saturating_sub(len + padding);
        let mut dims = x.dims().to_vec();
        let mut parts = Vec::with_capacity(3);
        if padding > 0 {
            dims[dim] = padding;
            parts.push(
                Tensor::full(f32::NEG_INFINITY, dims.clone(), x.device())?.to_dtype(x.dtype())?,
            );
        }
        parts.push(x.clone());
        if after > 0 {
            dims[dim] = after;
            parts.push(Tensor::full(f32::NEG_INFINITY, dims, x.device())?.to_dtype(x.dtype())?);
        }
        Tensor::cat(&parts, dim)
    };
    let reduce = |x: &Tensor, dim: usize, out: usize| -> Result<Tensor> {
        let mut acc = strided_slice(x, dim, 0, out, stride)?;
        for k0 in 1..kernel {
            acc = acc.maximum(&strided_slice(x, dim, k0, out, stride)?)?;
        }
        Ok(acc)
    };
    let rows = reduce(&pad_axis(x, 2, win.h, ho)?, 2, ho)?; // (B, C, Ho, W)
    reduce(&pad_axis(&rows, 3, win.w, wo)?, 3, wo) // (B, C, Ho, Wo)
}

/// A row-major matrix on the host: `(values, rows, cols)`.
pub(crate) type HostMatrix = (Vec<f64>, usize, usize);

/// `left (oh, h) · x (B, C, h, w) · right (ow, w)ᵀ → (B, C, oh, ow)`, with the two matrices given
/// row-major on the host and built in `x`'s dtype on `x`'s device: any linear separable resampling
/// (average pools, resizes) on any device, differentiable through candle's matmul.
pub(crate) fn separable_matmul(x: &Tensor, left: HostMatrix, right: HostMatrix) -> Result<Tensor> {
    require_float("pooling/resize", x)?;
    let (l, oh, h) = left;
    let (r, ow, w) = right;
    let l = Tensor::from_vec(l, (oh, h), x.device())?.to_dtype(x.dtype())?;
    let rt = Tensor::from_vec(r, (ow, w), x.device())?
        .to_dtype(x.dtype())?
        .t()?
        .contiguous()?; // (w, ow)
    let y = x.contiguous()?.broadcast_matmul(&rt)?; // (B, C, h, ow)
    l.broadcast_matmul(&y) // (B, C, oh, ow)
}

impl Windows {
    /// The pooling matrices of an average pool: row `i` of the height matrix holds `1/d_i` over
    /// the window's rows (`d_i = k` for fixed pools, the window length for adaptive bins), and
    /// likewise for the width: their product divides each window by `k²` or by its area.
    fn matrices(&self, fixed_kernel: Option<usize>) -> (HostMatrix, HostMatrix) {
        let axis = |spans: &[Span], len: usize| {
            let mut m = vec![0f64; spans.len() * len];
            for (i, &(a, b)) in spans.iter().enumerate() {
                let d = fixed_kernel.unwrap_or(b - a) as f64;
                for v in &mut m[i * len + a..i * len + b] {
                    *v = 1.0 / d;
                }
            }
            (m, spans.len(), len)
        };
        (axis(&self.rows, self.h), axis(&self.cols, self.w))
    }
}

// ------------------------------------------------------------------------------------------
// Average pools (fixed and adaptive share one kernel: only the windows and divisor differ).

#[derive(Debug, Clone)]
struct AvgPool {
    win: Windows,
    /// `Some(k²)` for a fixed pool with `count_include_pad = true`; `None` divides by the
    /// window's area (adaptive bins).
    divisor: Option<usize>,
    /// Forward (`false`) or backward (`true`) direction of the same op.
    backward: bool,
}

impl AvgPool {
    #[inline]
    fn divisor(&self, rows: Span, cols: Span) -> f64 {
        match self.divisor {
            Some(d) => d as f64,
            None => ((rows.1 - rows.0) * (cols.1 - cols.0)) as f64,
        }
    }
}

impl Kernel1 for AvgPool {
    fn op(&self) -> &'static str {
        if self.backward {
            "avg_pool2d_backward"
        } else {
            "avg_pool2d"
        }
    }
    fn apply<T: WithDType>(&self, x: &[T]) -> Result<Vec<T>> {
        let win = &self.win;
        let (in_plane, out_plane) = (win.in_plane(), win.out_plane().max(1));
        if self.backward {
            // x is grad_out (B, C, Ho, Wo) → grad_in (B, C, H, W).
            let mut gx = vec![T::zero(); x.len() / out_plane * in_plane];
            gx.par_chunks_mut(in_plane)
                .zip(x.par_chunks(out_plane))
                .for_each(|(gp, go)| {
                    let mut k = 0;
                    for &rows in &win.rows {
                        for &cols in &win.cols {
                            let g = T::from_f64(go[k].to_f64() / self.divisor(rows, cols));
                            for r in rows.0..rows.1 {
                                for v in &mut gp[r * win.w + cols.0..r * win.w + cols.1] {
                                    *v += g;
                                }
                            }
                            k += 1;
                        }
                    }
                });
            Ok(gx)
        } else {
            let mut out = vec![T::zero(); x.len() / in_plane * out_plane];
            out.par_chunks_mut(out_plane)
                .zip(x.par_chunks(in_plane))
                .for_each(|(o, plane)| {
                    let mut k = 0;
                    for &rows in &win.rows {
                        for &cols in &win.cols {
                            let mut acc = T::zero();
                            for r in rows.0..rows.1 {
                                for &v in &plane[r * win.w + cols.0..r * win.w + cols.1] {
                                    acc += v;
                                }
                            }
                            o[k] = T::from_f64(acc.to_f64() / self.divisor(rows, cols));
                            k += 1;
                        }
                    }
                });
            Ok(out)
        }
    }
}

impl CustomOp1 for AvgPool {
    fn name(&self) -> &'static str {
        Kernel1::op(self)
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, _, _) = dims4(CustomOp1::name(self), l.shape())?;
        let shape = if self.backward {
            Shape::from((b, c, self.win.h, self.win.w))
        } else {
            self.win.out_shape(b, c)
        };
        Ok((run1(self, s, l)?, shape))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let back = AvgPool {
            backward: true,
            ..self.clone()
        };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&back)?))
    }
}

/// Average pooling over square windows, PyTorch's `F.avg_pool2d(x, kernel, stride, padding)`
/// with its defaults `ceil_mode = false`, `count_include_pad = true` (every window is divided by
/// `k²`, padding counts as zeros).
///
/// `x (B, C, H, W)` → `(B, C, Ho, Wo)`, `Ho = (H + 2p − k)/s + 1`. Requires `2·padding ≤
/// kernel`. Any device and float dtype.
pub fn avg_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, _, h, w) = dims4("avg_pool2d", x.shape())?;
    let win = Windows::fixed("avg_pool2d", h, w, kernel, stride, padding)?;
    if !has_cpu_kernel(x) {
        let (left, right) = win.matrices(Some(kernel));
        return separable_matmul(x, left, right);
    }
    x.contiguous()?.apply_op1(AvgPool {
        win,
        divisor: Some(kernel * kernel),
        backward: false,
    })
}

/// Adaptive average pooling, PyTorch's `F.adaptive_avg_pool2d(x, output)`: output bin `i` of `o`
/// averages input rows `⌊i·H/o⌋ .. ⌈(i+1)·H/o⌉` (bins may overlap when `o` does not divide `H`).
///
/// `x (B, C, H, W)` → `(B, C, oh, ow)`. The global case `(1, 1)` is a plain mean over H and W
/// (candle's own differentiable ops); other sizes use the CPU kernel or, on other devices and
/// dtypes, two pooling-matrix products.
pub fn adaptive_avg_pool2d(x: &Tensor, output: (usize, usize)) -> Result<Tensor> {
    let (_, _, h, w) = dims4("adaptive_avg_pool2d", x.shape())?;
    if output == (1, 1) && h > 0 && w > 0 {
        return x.mean_keepdim(3)?.mean_keepdim(2); // (B, C, 1, 1)
    }
    if output == (h, w) {
        return Ok(x.clone());
    }
    let win = Windows::adaptive("adaptive_avg_pool2d", h, w, output.0, output.1)?;
    if !has_cpu_kernel(x) {
        let (left, right) = win.matrices(None);
        return separable_matmul(x, left, right);
    }
    x.contiguous()?.apply_op1(AvgPool {
        win,
        divisor: None,
        backward: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use proptest::prelude::*;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .and_then(|d| d.abs()?.max_all()?.to_scalar::<f64>())
            .unwrap_or(f64::INFINITY)
    }

    /// Forward and gradient of `f` at a tie-free input, against the CPU kernel `g`.
    fn compare(
        shape: (usize, usize, usize, usize),
        seed: usize,
        kernel_path: impl Fn(&Tensor) -> Result<Tensor>,
        generic_path: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<(f64, f64)> {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        // A permutation of distinct values: no tied maxima.
        let data: Vec<f64> = (0..n)
            .map(|i| ((i * 7919 + seed * 31) % n) as f64 / n as f64)
            .collect();
        let x = Var::from_vec(data, shape, &Device::Cpu)?;
        let a = kernel_path(&x)?;
        let b = generic_path(&x)?;
        let weights = Tensor::arange(0f64, a.elem_count() as f64, &Device::Cpu)?
            .reshape(a.shape())?
            .sin()?;
        let ga = (&a * &weights)?.sum_all()?.backward()?;
        let gb = (&b * &weights)?.sum_all()?.backward()?;
        let grad = match (ga.get(&x), gb.get(&x)) {
            (Some(p), Some(q)) => max_abs_diff(p, q),
            _ => f64::INFINITY,
        };
        Ok((max_abs_diff(&a, &b), grad))
    }

    proptest! {
        /// The row-wise CPU max pool picks the same element as the per-window search
        /// [`window_argmax`] (first maximum in row-major window order, the first NaN wins),
        /// on data full of ties, NaNs and −∞, for every valid geometry.
        #[test]
        fn max_pool_plane_matches_window_search(h in 1usize..12, w in 1usize..12,
                                                k in 1usize..5, s in 1usize..4, p in 0usize..3,
                                                seed in 0u64..1000) {
            prop_assume!(2 * p <= k && h + 2 * p >= k && w + 2 * p >= k);
            let win = Windows::fixed("t", h, w, k, s, p).unwrap();
            let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let plane: Vec<f32> = (0..h * w)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    match (state >> 33) % 11 {
                        0 => f32::NAN,
                        1 => f32::NEG_INFINITY,
                        v => (v % 4) as f32, // few distinct values: many ties
                    }
                })
                .collect();
            let n = win.rows.len() * win.cols.len();
            let (mut out, mut arg) = (vec![0f32; n], vec![0u32; n]);
            max_pool_plane(&plane, &win, (k, s, p), &mut out, &mut arg);
            let mut o = 0;
            for &rows in &win.rows {
                for &cols in &win.cols {
                    let want = window_argmax(&plane, w, rows, cols);
                    prop_assert_eq!(arg[o] as usize, want, "output {}", o);
                    prop_assert_eq!(out[o].to_bits(), plane[want].to_bits());
                    o += 1;
                }
            }
        }

        /// The device-generic paths (candle ops; run here on CPU f64) equal the CPU kernels,
        /// forward and gradient, for every valid pool geometry.
        #[test]
        fn generic_paths_match_kernels(h in 1usize..12, w in 1usize..12, k in 1usize..5,
                                       s in 1usize..4, p in 0usize..3, seed in 0usize..100) {
            prop_assume!(2 * p <= k && h + 2 * p >= k && w + 2 * p >= k);
            let shape = (2, 3, h, w);
            let win = Windows::fixed("t", h, w, k, s, p).unwrap();
            let (f, g) = compare(shape, seed, |x| max_pool2d(x, k, s, p),
                |x| generic_max_pool2d(x, &win, k, s, p)).unwrap();
            prop_assert!(f < 1e-12 && g < 1e-12, "max pool: forward {f}, gradient {g}");
            let (left, right) = win.matrices(Some(k));
            let (f, g) = compare(shape, seed, |x| avg_pool2d(x, k, s, p),
                |x| separable_matmul(x, left.clone(), right.clone())).unwrap();
            prop_assert!(f < 1e-12 && g < 1e-12, "avg pool: forward {f}, gradient {g}");
            let (oh, ow) = (1 + seed % 5, 1 + seed % 3);
            let ad = Windows::adaptive("t", h, w, oh, ow).unwrap();
            let (left, right) = ad.matrices(None);
            let (f, g) = compare(shape, seed, |x| adaptive_avg_pool2d(x, (oh, ow)),
                |x| separable_matmul(x, left.clone(), right.clone())).unwrap();
            prop_assert!(f < 1e-12 && g < 1e-12, "adaptive pool: forward {f}, gradient {g}");
        }
    }

    proptest! {
        /// Fixed windows: count matches PyTorch's formula, every window is non-empty and inside
        /// the input, and consecutive windows start `stride` apart in the padded frame.
        #[test]
        fn fixed_windows(len in 1usize..40, k in 1usize..6, s in 1usize..4, p in 0usize..3) {
            prop_assume!(2 * p <= k && len + 2 * p >= k);
            let win = Windows::fixed("t", len, len, k, s, p).unwrap();
            prop_assert_eq!(win.rows.len(), (len + 2 * p - k) / s + 1);
            for (i, &(a, b)) in win.rows.iter().enumerate() {
                prop_assert!(a < b && b <= len);
                let start = (i * s) as i64 - p as i64;
                prop_assert_eq!(a as i64, start.max(0));
                prop_assert_eq!(b as i64, (start + k as i64).min(len as i64));
            }
        }

        /// Adaptive bins cover the whole input, in order, and are non-empty.
        #[test]
        fn adaptive_bins(len in 1usize..50, out in 1usize..50) {
            let win = Windows::adaptive("t", len, len, out, out).unwrap();
            prop_assert_eq!(win.rows.first().map(|r| r.0), Some(0));
            prop_assert_eq!(win.rows.last().map(|r| r.1), Some(len));
            for pair in win.rows.windows(2) {
                prop_assert!(pair[0].0 <= pair[1].0);
                prop_assert!(pair[1].0 <= pair[0].1, "gap between bins");
            }
            for &(a, b) in &win.rows {
                prop_assert!(a < b);
            }
        }
    }
}
