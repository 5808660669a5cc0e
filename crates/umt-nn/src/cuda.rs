//! umt-nn's own CUDA kernels (feature `cuda`): the fused training BatchNorm (+ residual +
//! ReLU) of [`crate::norm`] and the fused SGD / Adam / AdamW steps of [`crate::optim`], for
//! f32 and f64 data.
//!
//! The kernel source is `src/cuda/kernels.cu`, compiled once per process with NVRTC (the CUDA
//! runtime compiler that candle already links) with `--fmad=false`, so that every multiply-add
//! rounds as on the CPU (the CPU kernels are the reference; the device-parity tests in
//! `tests/cuda.rs` compare both). The module is loaded once per device through candle's
//! `CudaDevice::get_or_load_custom_func`, and every kernel runs on the device's stream, ordered
//! with candle's own kernels.
//!
//! BatchNorm reductions over `(N, H, W)` run as a grid of `(C, splits)` blocks writing partial
//! sums in f64 (deterministic: no atomics), then one thread per channel combines them. The
//! forward statistics use sums shifted by the channel's first element (`Σ(x − k)`,
//! `Σ(x − k)²`), which keeps the one-pass variance accurate when the mean is large against the
//! spread.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::{bail, DType, Layout, Result, Storage, Tensor, WithDType};

use crate::optim::StepScalars;
use cudarc::driver::{CudaFunction, CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg};

/// The kernel source (see the module docs).
const SOURCE: &str = include_str!("cuda/kernels.cu");
/// The module name under which candle caches the loaded kernels per device.
const MODULE: &str = "umt_nn_kernels";
/// Threads per block (the source's `THREADS`: its block reduction assumes exactly this).
const THREADS: u32 = 256;
/// Elements each block of a split reduction covers at least (fewer, larger blocks for small
/// channels; at most [`MAX_SPLITS`] blocks per channel).
const MIN_PER_SPLIT: usize = 4096;
/// Most blocks per channel in a split reduction.
const MAX_SPLITS: usize = 64;

static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();

/// The kernel `name` for `dtype` (`_f32` / `_f64`), compiling the source on first use.
fn kernel(dev: &CudaDevice, name: &str, dtype: DType) -> Result<CudaFunction> {
    let suffix = match dtype {
        DType::F32 => "f32",
        DType::F64 => "f64",
        dt => bail!("umt-nn CUDA kernel {name}: unsupported dtype {dt:?} (f32 or f64)"),
    };
    let ptx = PTX.get_or_init(|| {
        let opts = cudarc::nvrtc::CompileOptions {
            fmad: Some(false),
            ..Default::default()
        };
        cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts)
            .map(|p| p.to_src())
            .map_err(|e| format!("{e:?}"))
    });
    let ptx = match ptx {
        Ok(p) => p,
        Err(e) => {
            bail!("umt-nn CUDA kernels: NVRTC compilation of src/cuda/kernels.cu failed: {e}")
        }
    };
    Ok(dev
        .get_or_load_custom_func(&format!("{name}_{suffix}"), MODULE, ptx)?
        .into_cuda_function())
}

/// A size as the kernels' 32-bit `unsigned`.
fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        candle_core::Error::Msg(format!(
            "umt-nn CUDA kernels: {what} = {v} exceeds the kernels' 32-bit index range"
        ))
    })
}

/// One thread per element (grid-stride loops cover the rest).
fn elementwise(n: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(THREADS).clamp(1, 1 << 16), 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One thread per channel.
fn per_channel(c: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (c.div_ceil(THREADS).max(1), 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `(per, splits)`: elements per block and blocks per channel for `count` values a channel.
fn splits(count: usize) -> (usize, usize) {
    let wanted = count.div_ceil(MIN_PER_SPLIT).clamp(1, MAX_SPLITS);
    let per = count.div_ceil(wanted);
    (per, count.div_ceil(per))
}

/// Prefix of this module's error messages.
const OP: &str = "umt-nn CUDA kernels";

/// The contiguous data of one operand as a device view from the layout's offset (`op` and
/// `what` name the op and the operand in the error).
pub(crate) fn view<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
    op: &str,
    what: &str,
) -> Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(s.as_cuda_slice::<T>()?.slice(start..end)),
        None => bail!("{op}: operand `{what}` must be contiguous"),
    }
}

/// Runs `f` on the CUDA storage of `t`.
fn with_cuda<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&CudaStorage, &Layout) -> Result<R>,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cuda(s) => f(s, layout),
        _ => bail!("umt-nn CUDA kernels: `{what}` is not on a CUDA device"),
    }
}

/// Per-channel `[mean (C); biased variance (C)]` in f64 of a contiguous `x (N, C, plane)`.
pub(crate) fn bn_stats(s: &CudaStorage, l: &Layout, c: usize, plane: usize) -> Result<CudaStorage> {
    match s.dtype() {
        DType::F32 => bn_stats_t::<f32>(s, l, c, plane),
        DType::F64 => bn_stats_t::<f64>(s, l, c, plane),
        dt => bail!("umt-batch-norm-stats: unsupported dtype {dt:?}"),
    }
}

fn bn_stats_t<T: CudaDType + DeviceRepr + WithDType>(
    s: &CudaStorage,
    l: &Layout,
    c: usize,
    plane: usize,
) -> Result<CudaStorage> {
    let dev = s.device().clone();
    let stream = dev.cuda_stream();
    let x = view::<T>(s, l, OP, "x")?;
    let count = l.shape().elem_count() / c;
    let n = count / plane;
    let (per, nsplit) = splits(count);
    // SAFETY: every partial sum and every statistic is written by the kernels below.
    let mut part: CudaSlice<f64> = unsafe { dev.alloc::<f64>(2 * c * nsplit)? };
    let mut stats: CudaSlice<f64> = unsafe { dev.alloc::<f64>(2 * c)? };
    let (n32, c32, plane32) = (u32_of("N", n)?, u32_of("C", c)?, u32_of("plane", plane)?);
    let (per32, nsplit32) = (u32_of("per", per)?, u32_of("splits", nsplit)?);
    u32_of("N·plane", count)?;
    let f = kernel(&dev, "bn_partial_fwd", T::DTYPE)?;
    let mut b = stream.launch_builder(&f);
    b.arg(&x)
        .arg(&mut part)
        .arg(&n32)
        .arg(&c32)
        .arg(&plane32)
        .arg(&per32);
    let cfg = LaunchConfig {
        grid_dim: (c32, nsplit32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match the kernel's signature; indices stay within the buffers.
    unsafe { b.launch(cfg) }.w()?;
    let count_f = count as f64;
    let f = kernel(&dev, "bn_finalize_fwd", T::DTYPE)?;
    let mut b = stream.launch_builder(&f);
    b.arg(&part)
        .arg(&x)
        .arg(&mut stats)
        .arg(&c32)
        .arg(&plane32)
        .arg(&nsplit32)
        .arg(&count_f);
    // SAFETY: as above.
    unsafe { b.launch(per_channel(c32)) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(stats, dev))
}

/// What [`bn_apply`] and [`bn_backward`] need to know about the normalisation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BnShape {
    pub channels: usize,
    pub plane: usize,
    pub eps: f64,
    pub relu: bool,
}

/// `y = [relu](bn(x) [+ residual])` with the statistics `stats (2C) f64`; `gamma` and `beta`
/// are `(storage, layout, offset)`: `C` values from `offset` within the layout's data.
pub(crate) fn bn_apply(
    x: (&CudaStorage, &Layout),
    affine: [(&CudaStorage, &Layout, usize); 2],
    stats: &Tensor,
    residual: Option<(&CudaStorage, &Layout)>,
    shape: BnShape,
) -> Result<CudaStorage> {
    match x.0.dtype() {
        DType::F32 => bn_apply_t::<f32>(x, affine, stats, residual, shape),
        DType::F64 => bn_apply_t::<f64>(x, affine, stats, residual, shape),
        dt => bail!("umt-batch-norm-train: unsupported dtype {dt:?}"),
    }
}

fn bn_apply_t<T: CudaDType + DeviceRepr + WithDType>(
    (xs, xl): (&CudaStorage, &Layout),
    [(gs, gl, go), (bs, bl, bo)]: [(&CudaStorage, &Layout, usize); 2],
    stats: &Tensor,
    residual: Option<(&CudaStorage, &Layout)>,
    shape: BnShape,
) -> Result<CudaStorage> {
    let dev = xs.device().clone();
    let stream = dev.cuda_stream();
    let c = shape.channels;
    let x = view::<T>(xs, xl, OP, "x")?;
    let gamma = view::<T>(gs, gl, OP, "weight")?.slice(go..go + c);
    let beta = view::<T>(bs, bl, OP, "bias")?.slice(bo..bo + c);
    let total = xl.shape().elem_count();
    let res = match residual {
        Some((rs, rl)) => view::<T>(rs, rl, OP, "residual")?,
        None => x.slice(..),
    };
    // SAFETY: the kernel writes every element of `y`.
    let mut y: CudaSlice<T> = unsafe { dev.alloc::<T>(total)? };
    let (total32, c32, plane32) = (
        u32_of("elements", total)?,
        u32_of("C", c)?,
        u32_of("plane", shape.plane)?,
    );
    let (relu, has_res) = (i32::from(shape.relu), i32::from(residual.is_some()));
    with_cuda(stats, "batch statistics", |ss, sl| {
        let st = view::<f64>(ss, sl, OP, "batch statistics")?;
        let f = kernel(&dev, "bn_apply", T::DTYPE)?;
        let mut b = stream.launch_builder(&f);
        b.arg(&x)
            .arg(&gamma)
            .arg(&beta)
            .arg(&st)
            .arg(&res)
            .arg(&mut y);
        b.arg(&total32)
            .arg(&c32)
            .arg(&plane32)
            .arg(&shape.eps)
            .arg(&relu)
            .arg(&has_res);
        // SAFETY: the arguments match the kernel's signature; indices stay within the buffers.
        unsafe { b.launch(elementwise(total32)) }.w()?;
        Ok(())
    })?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev))
}

/// The packed gradients `[dx; dr (with a residual); dγ (C); dβ (C)]` of the fused BatchNorm
/// from `x`, `y`, `dy` (contiguous, the shape of `x`), `stats (2C) f64` and `gamma (C)`.
pub(crate) fn bn_backward(
    [x, y, dy]: [(&CudaStorage, &Layout); 3],
    stats: &Tensor,
    gamma: &Tensor,
    residual: bool,
    shape: BnShape,
) -> Result<CudaStorage> {
    match x.0.dtype() {
        DType::F32 => bn_backward_t::<f32>([x, y, dy], stats, gamma, residual, shape),
        DType::F64 => bn_backward_t::<f64>([x, y, dy], stats, gamma, residual, shape),
        dt => bail!("umt-batch-norm-train-backward: unsupported dtype {dt:?}"),
    }
}

fn bn_backward_t<T: CudaDType + DeviceRepr + WithDType>(
    [(xs, xl), (ys, yl), (gs, gl)]: [(&CudaStorage, &Layout); 3],
    stats: &Tensor,
    gamma: &Tensor,
    residual: bool,
    shape: BnShape,
) -> Result<CudaStorage> {
    let dev = xs.device().clone();
    let stream = dev.cuda_stream();
    let (c, plane) = (shape.channels, shape.plane);
    let x = view::<T>(xs, xl, OP, "x")?;
    let y = view::<T>(ys, yl, OP, "y")?;
    let dy = view::<T>(gs, gl, OP, "dy")?;
    let total = xl.shape().elem_count();
    let count = total / c;
    let n = count / plane;
    let (per, nsplit) = splits(count);
    let extra = if residual { total } else { 0 };
    let tail = (total + extra) as u64;
    // SAFETY: the kernels below write every partial sum, coefficient and output element.
    let mut part: CudaSlice<f64> = unsafe { dev.alloc::<f64>(2 * c * nsplit)? };
    let mut coef: CudaSlice<f64> = unsafe { dev.alloc::<f64>(3 * c)? };
    let mut out: CudaSlice<T> = unsafe { dev.alloc::<T>(total + extra + 2 * c)? };
    let (n32, c32, plane32) = (u32_of("N", n)?, u32_of("C", c)?, u32_of("plane", plane)?);
    let (per32, nsplit32) = (u32_of("per", per)?, u32_of("splits", nsplit)?);
    let total32 = u32_of("elements", total)?;
    let (relu, has_res) = (i32::from(shape.relu), i32::from(residual));
    let count_f = count as f64;
    with_cuda(stats, "batch statistics", |ss, sl| {
        let st = view::<f64>(ss, sl, OP, "batch statistics")?;
        with_cuda(gamma, "weight", |ws, wl| {
            let w = view::<T>(ws, wl, OP, "weight")?;
            let f = kernel(&dev, "bn_partial_bwd", T::DTYPE)?;
            let mut b = stream.launch_builder(&f);
            b.arg(&x).arg(&y).arg(&dy).arg(&st).arg(&mut part);
            b.arg(&n32).arg(&c32).arg(&plane32).arg(&per32).arg(&relu);
            let cfg = LaunchConfig {
                grid_dim: (c32, nsplit32, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match the kernel's signature; indices stay in bounds.
            unsafe { b.launch(cfg) }.w()?;
            let f = kernel(&dev, "bn_finalize_bwd", T::DTYPE)?;
            let mut b = stream.launch_builder(&f);
            b.arg(&part).arg(&st).arg(&w).arg(&mut coef).arg(&mut out);
            b.arg(&tail)
                .arg(&c32)
                .arg(&nsplit32)
                .arg(&count_f)
                .arg(&shape.eps);
            // SAFETY: as above.
            unsafe { b.launch(per_channel(c32)) }.w()?;
            let f = kernel(&dev, "bn_dx", T::DTYPE)?;
            let mut b = stream.launch_builder(&f);
            b.arg(&x).arg(&y).arg(&dy).arg(&st).arg(&coef).arg(&mut out);
            b.arg(&total32)
                .arg(&c32)
                .arg(&plane32)
                .arg(&relu)
                .arg(&has_res);
            // SAFETY: as above.
            unsafe { b.launch(elementwise(total32)) }.w()?;
            Ok(())
        })
    })?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// `run = run·(1 − momentum) + stats[which]·(momentum·factor)` in place on a running
/// statistic `run (C)` (f32/f64) from the f64 batch statistics `stats (2C)`.
pub(crate) fn bn_running(
    (rs, rl): (&mut CudaStorage, &Layout),
    (ss, sl): (&CudaStorage, &Layout),
    which: usize,
    momentum: f64,
    factor: f64,
) -> Result<()> {
    let (ra, rb) = match rl.contiguous_offsets() {
        Some(r) => r,
        None => bail!("batch-norm running statistics: not contiguous"),
    };
    let c = rb - ra;
    if sl.shape().elem_count() != 2 * c {
        bail!(
            "batch-norm running statistics: {c} channels, but {} batch statistics",
            sl.shape().elem_count()
        );
    }
    let scalars = (which, momentum, factor);
    match rs.dtype() {
        DType::F32 => bn_running_t::<f32>(rs, (ra, rb), (ss, sl), scalars),
        DType::F64 => bn_running_t::<f64>(rs, (ra, rb), (ss, sl), scalars),
        dt => bail!("batch-norm running statistics: unsupported dtype {dt:?}"),
    }
}

fn bn_running_t<T: CudaDType + DeviceRepr + WithDType>(
    rs: &mut CudaStorage,
    (ra, rb): (usize, usize),
    (ss, sl): (&CudaStorage, &Layout),
    (which, momentum, factor): (usize, f64, f64),
) -> Result<()> {
    let dev = rs.device().clone();
    let stream = dev.cuda_stream();
    let stats = view::<f64>(ss, sl, OP, "batch statistics")?;
    let (c32, which32) = (u32_of("C", rb - ra)?, u32_of("which", which)?);
    let f = kernel(&dev, "bn_running", T::DTYPE)?;
    let mut run = rs.as_cuda_slice_mut::<T>()?.slice_mut(ra..rb);
    let mut b = stream.launch_builder(&f);
    b.arg(&mut run)
        .arg(&stats)
        .arg(&c32)
        .arg(&which32)
        .arg(&momentum)
        .arg(&factor);
    // SAFETY: the arguments match the kernel's signature; `run` holds C values, `stats` 2C.
    unsafe { b.launch(per_channel(c32)) }.w()?;
    Ok(())
}

/// A max pool's sizes (see `pool.rs`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolShape {
    /// `B·C`.
    pub planes: usize,
    /// `(H, W)`.
    pub input: (usize, usize),
    /// `(H_out, W_out)`.
    pub output: (usize, usize),
    /// `(kernel, stride, padding)`.
    pub ksp: (usize, usize, usize),
}

/// Forward (`grad` = `None`: `y (planes, H_out, W_out)`) or backward (`grad` = the output
/// gradient: `dx (planes, H, W)`) of the max pool over a contiguous `x (planes, H, W)`.
pub(crate) fn max_pool(
    s: &CudaStorage,
    l: &Layout,
    grad: Option<(&CudaStorage, &Layout)>,
    shape: PoolShape,
) -> Result<CudaStorage> {
    match s.dtype() {
        DType::F32 => max_pool_t::<f32>(s, l, grad, shape),
        DType::F64 => max_pool_t::<f64>(s, l, grad, shape),
        dt => bail!("max_pool2d: unsupported dtype {dt:?}"),
    }
}

fn max_pool_t<T: CudaDType + DeviceRepr + WithDType>(
    s: &CudaStorage,
    l: &Layout,
    grad: Option<(&CudaStorage, &Layout)>,
    shape: PoolShape,
) -> Result<CudaStorage> {
    let dev = s.device().clone();
    let stream = dev.cuda_stream();
    let x = view::<T>(s, l, OP, "x")?;
    let ((h, w), (ho, wo), (k, st, p)) = (shape.input, shape.output, shape.ksp);
    let n_out = shape.planes * ho * wo;
    let n_in = shape.planes * h * w;
    let sizes = [
        u32_of("H", h)?,
        u32_of("W", w)?,
        u32_of("H_out", ho)?,
        u32_of("W_out", wo)?,
        u32_of("kernel", k)?,
        u32_of("stride", st)?,
        u32_of("padding", p)?,
    ];
    let (out32, in32) = (u32_of("outputs", n_out)?, u32_of("inputs", n_in)?);
    match grad {
        None => {
            // SAFETY: the kernel writes every output.
            let mut y: CudaSlice<T> = unsafe { dev.alloc::<T>(n_out)? };
            let fwd = kernel(&dev, "max_pool_fwd", T::DTYPE)?;
            let mut b = stream.launch_builder(&fwd);
            b.arg(&x).arg(&mut y).arg(&out32);
            for v in &sizes {
                b.arg(v);
            }
            // SAFETY: the arguments match the kernel's signature; indices stay in bounds.
            unsafe { b.launch(elementwise(out32)) }.w()?;
            Ok(CudaStorage::wrap_cuda_slice(y, dev))
        }
        Some((gs, gl)) => {
            let g = view::<T>(gs, gl, OP, "grad_out")?;
            // SAFETY: the first kernel writes every index, the second every input gradient.
            let mut idx: CudaSlice<u32> = unsafe { dev.alloc::<u32>(n_out)? };
            let argmax = kernel(&dev, "max_pool_argmax", T::DTYPE)?;
            let mut b = stream.launch_builder(&argmax);
            b.arg(&x).arg(&mut idx).arg(&out32);
            for v in &sizes {
                b.arg(v);
            }
            // SAFETY: as above.
            unsafe { b.launch(elementwise(out32)) }.w()?;
            let mut gx: CudaSlice<T> = unsafe { dev.alloc::<T>(n_in)? };
            let bwd = kernel(&dev, "max_pool_bwd", T::DTYPE)?;
            let mut b = stream.launch_builder(&bwd);
            b.arg(&idx).arg(&g).arg(&mut gx).arg(&in32);
            for v in &sizes {
                b.arg(v);
            }
            // SAFETY: as above.
            unsafe { b.launch(elementwise(in32)) }.w()?;
            Ok(CudaStorage::wrap_cuda_slice(gx, dev))
        }
    }
}

/// An optimizer state buffer on a CUDA device, in the variable's dtype.
#[derive(Debug, Clone)]
pub(crate) enum DeviceBuf {
    F32(CudaSlice<f32>),
    F64(CudaSlice<f64>),
}

impl DeviceBuf {
    /// A zero buffer of `n` elements of `dtype` on `dev`.
    pub(crate) fn zeros(dev: &CudaDevice, dtype: DType, n: usize) -> Result<Self> {
        match dtype {
            DType::F32 => Ok(Self::F32(dev.alloc_zeros::<f32>(n)?)),
            DType::F64 => Ok(Self::F64(dev.alloc_zeros::<f64>(n)?)),
            dt => bail!("fused optimizer step: unsupported dtype {dt:?}"),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::F32(s) => s.len(),
            Self::F64(s) => s.len(),
        }
    }
}

/// One fused optimizer step in place on the parameter storage `p`, with gradient `g` (same
/// dtype and element count, contiguous) and the state buffers `bufs` (SGD: none or the momentum
/// buffer; Adam: `[m, v]`).
pub(crate) fn optimizer_step(
    (ps, pl): (&mut CudaStorage, &Layout),
    (gs, gl): (&CudaStorage, &Layout),
    bufs: &mut [&mut DeviceBuf],
    scalars: StepScalars,
) -> Result<()> {
    let (pa, pb) = match pl.contiguous_offsets() {
        Some(r) => r,
        None => bail!("fused optimizer step: the parameter is not contiguous"),
    };
    let n = pb - pa;
    if gl.shape().elem_count() != n || bufs.iter().any(|b| b.len() != n) {
        bail!("fused optimizer step: the gradient or the state does not match the parameter's {n} elements");
    }
    let dev = ps.device().clone();
    match ps.dtype() {
        DType::F32 => step_t::<f32>(&dev, ps, (pa, pb), (gs, gl), bufs, scalars),
        DType::F64 => step_t::<f64>(&dev, ps, (pa, pb), (gs, gl), bufs, scalars),
        dt => bail!("fused optimizer step: unsupported dtype {dt:?}"),
    }
}

/// The `CudaSlice<T>` of a state buffer (its dtype checked).
trait StateSlice: Sized {
    fn of(b: &mut DeviceBuf) -> Result<&mut CudaSlice<Self>>;
}

impl StateSlice for f32 {
    fn of(b: &mut DeviceBuf) -> Result<&mut CudaSlice<f32>> {
        match b {
            DeviceBuf::F32(s) => Ok(s),
            DeviceBuf::F64(_) => bail!("fused optimizer step: f64 state for an f32 variable"),
        }
    }
}

impl StateSlice for f64 {
    fn of(b: &mut DeviceBuf) -> Result<&mut CudaSlice<f64>> {
        match b {
            DeviceBuf::F64(s) => Ok(s),
            DeviceBuf::F32(_) => bail!("fused optimizer step: f32 state for an f64 variable"),
        }
    }
}

fn step_t<T: CudaDType + DeviceRepr + WithDType + StateSlice>(
    dev: &CudaDevice,
    ps: &mut CudaStorage,
    (pa, pb): (usize, usize),
    (gs, gl): (&CudaStorage, &Layout),
    bufs: &mut [&mut DeviceBuf],
    scalars: StepScalars,
) -> Result<()> {
    let stream = dev.cuda_stream();
    let g = view::<T>(gs, gl, OP, "gradient")?;
    let n32 = u32_of("parameter elements", pb - pa)?;
    let t = |v: f64| T::from_f64(v);
    match scalars {
        StepScalars::Sgd(lr, wd, mu, keep, nesterov, first) => {
            let f = kernel(dev, "sgd", T::DTYPE)?;
            let (lr, wd_t, mu_t, keep) = (t(lr), t(wd), t(mu), t(keep));
            let flags = [
                i32::from(wd != 0.0),
                i32::from(!bufs.is_empty()),
                i32::from(nesterov),
                i32::from(first),
            ];
            let mut buf = match bufs.first_mut() {
                Some(buf) => Some(T::of(buf)?),
                None => None,
            };
            let mut p = ps.as_cuda_slice_mut::<T>()?.slice_mut(pa..pb);
            let mut b = stream.launch_builder(&f);
            b.arg(&mut p).arg(&g);
            // Without momentum the kernel never touches `buf`: pass the gradient's address.
            match buf.as_mut() {
                Some(buf) => b.arg(&mut **buf),
                None => b.arg(&g),
            };
            b.arg(&n32).arg(&lr).arg(&wd_t).arg(&mu_t).arg(&keep);
            b.arg(&flags[0])
                .arg(&flags[1])
                .arg(&flags[2])
                .arg(&flags[3]);
            // SAFETY: the arguments match the kernel's signature; all buffers hold n elements.
            unsafe { b.launch(elementwise(n32)) }.w()?;
        }
        StepScalars::Adam(s, decoupled) => {
            let [m, v] = bufs else {
                bail!("fused optimizer step: Adam needs two state buffers");
            };
            let (m, v) = (T::of(m)?, T::of(v)?);
            let f = kernel(dev, "adam", T::DTYPE)?;
            let sc: Vec<T> = s.iter().map(|&x| t(x)).collect();
            let flags = [i32::from(s[4] != 0.0), i32::from(decoupled)];
            let mut p = ps.as_cuda_slice_mut::<T>()?.slice_mut(pa..pb);
            let mut b = stream.launch_builder(&f);
            b.arg(&mut p).arg(&g).arg(m).arg(v).arg(&n32);
            for x in &sc {
                b.arg(x);
            }
            b.arg(&flags[0]).arg(&flags[1]);
            // SAFETY: as above.
            unsafe { b.launch(elementwise(n32)) }.w()?;
        }
    }
    Ok(())
}
