//! cuDNN kernels for the three convolution ops (feature `cudnn`): `cudnnConvolutionForward`,
//! `cudnnConvolutionBackwardData` and `cudnnConvolutionBackwardFilter` through cudarc's safe
//! cuDNN API, on the candle device's own stream (so they are ordered with candle's kernels).
//!
//! - **Handles**: one cuDNN handle per thread and device (cuDNN handles are neither `Send` nor
//!   `Sync`), created on first use, like candle's own cuDNN forward.
//! - **Algorithms**: by default cuDNN's heuristic (`cudnnGet*Algorithm_v7`, its first — best
//!   ranked — answer), as PyTorch with `torch.backends.cudnn.benchmark = False`. In benchmark
//!   mode ([`super::set_cudnn_benchmark`], PyTorch's `benchmark = True`) every algorithm cuDNN
//!   supports for the geometry (workspace up to [`BENCHMARK_WORKSPACE_LIMIT`]) is run once to
//!   warm up and [`BENCHMARK_REPS`] times timed, and the fastest wins. Either way the choice
//!   is made once per thread, device, geometry, dtype, math mode and mode, then cached.
//! - **Workspace**: the size cuDNN reports for the chosen algorithm, allocated from the device
//!   for each call (none when it is 0). When that allocation fails the call falls back to the
//!   algorithm that needs the least workspace (`IMPLICIT_GEMM`, `BWD_DATA_ALGO_0`,
//!   `BWD_FILTER_ALGO_0`).
//! - **Precision**: f32 data computes in f32 with FMA math (no TF32) unless candle's
//!   `candle_core::cuda::set_gemm_reduced_precision_f32(true)` allows reduced precision, in
//!   which case cuDNN may use TF32 tensor cores (PyTorch's `allow_tf32`). f16 and bf16 data
//!   accumulate in f32 (`PSEUDO_HALF` / `PSEUDO_BFLOAT16` configurations) on tensor cores; f64
//!   computes in f64.
//!
//! Outputs are allocated uninitialised: every routine runs with `β = 0`, for which cuDNN never
//! reads the output.
//!
//! Operands arrive contiguous (the ops' `apply` helpers ensure it); a non-zero layout start
//! offset is honoured by slicing the device buffer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::thread::LocalKey;
use std::time::Instant;

use candle_core::backend::BackendStorage;
use candle_core::cuda::{CudaDType, CudaDevice, CudaStorage, DeviceId, WrapErr};
use candle_core::{DType, Layout, Result, WithDType};
use cudarc::cudnn::sys::{
    cudnnConvolutionBwdDataAlgo_t as DataAlgo, cudnnConvolutionBwdFilterAlgo_t as FilterAlgo,
    cudnnConvolutionFwdAlgo_t as FwdAlgo, cudnnConvolutionMode_t, cudnnMathType_t,
    cudnnTensorFormat_t,
};
use cudarc::cudnn::{
    ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, CudnnDataType,
    FilterDescriptor, TensorDescriptor,
};
use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};

use super::Geometry;

/// Which of the three cuDNN convolution routines an op runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// `y = conv(x, w)`; operands `(x, w)`.
    Forward,
    /// `dx` from `(dy, w)` (backward data).
    InputGrad,
    /// `dw` from `(x, dy)` (backward filter).
    WeightGrad,
}

/// What an algorithm choice depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AlgoKey {
    device: DeviceId,
    geometry: Geometry,
    dtype: DType,
    math: cudnnMathType_t,
    benchmark: bool,
}

/// Timed runs per candidate algorithm in benchmark mode (after one warm-up run).
pub(crate) const BENCHMARK_REPS: usize = 2;

/// Largest workspace a candidate may ask for in benchmark mode (1 GiB).
pub(crate) const BENCHMARK_WORKSPACE_LIMIT: usize = 1 << 30;

const FWD_CANDIDATES: [FwdAlgo; 8] = [
    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_FFT,
    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
];

const DATA_CANDIDATES: [DataAlgo; 6] = [
    DataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
    DataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
    DataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT,
    DataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING,
    DataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD,
    DataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED,
];

const FILTER_CANDIDATES: [FilterAlgo; 7] = [
    FilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
    FilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
    FilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT,
    FilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3,
    FilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD,
    FilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED,
    FilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING,
];

/// The fastest of `candidates` (benchmark mode): each one cuDNN accepts (`size` answers, the
/// workspace fits under the limit and can be allocated, the warm-up `run` succeeds) is timed
/// over [`BENCHMARK_REPS`] runs; `None` when none runs.
fn fastest<A: Copy>(
    dev: &CudaDevice,
    candidates: &[A],
    size: impl Fn(A) -> Result<usize>,
    mut run: impl FnMut(A, Option<&mut CudaSlice<u8>>) -> Result<()>,
) -> Result<Option<A>> {
    let stream = dev.cuda_stream();
    let mut best: Option<(f64, A)> = None;
    for &algo in candidates {
        let bytes = match size(algo) {
            Ok(b) if b <= BENCHMARK_WORKSPACE_LIMIT => b,
            _ => continue,
        };
        let Ok(mut ws) = workspace(dev, bytes) else {
            continue;
        };
        if run(algo, ws.as_mut()).is_err() {
            continue; // not supported for this geometry
        }
        stream.synchronize().w()?;
        let start = Instant::now();
        let mut ok = true;
        for _ in 0..BENCHMARK_REPS {
            ok &= run(algo, ws.as_mut()).is_ok();
        }
        stream.synchronize().w()?;
        let seconds = start.elapsed().as_secs_f64();
        if ok && best.is_none_or(|(b, _)| seconds < b) {
            best = Some((seconds, algo));
        }
    }
    Ok(best.map(|(_, a)| a))
}

type Cache<A> = RefCell<HashMap<AlgoKey, A>>;

thread_local! {
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
    static FWD_ALGOS: Cache<FwdAlgo> = RefCell::new(HashMap::new());
    static DATA_ALGOS: Cache<DataAlgo> = RefCell::new(HashMap::new());
    static FILTER_ALGOS: Cache<FilterAlgo> = RefCell::new(HashMap::new());
}

/// This thread's cuDNN handle for `dev`, bound to the device's stream.
fn handle(dev: &CudaDevice) -> Result<Arc<Cudnn>> {
    HANDLES.with(|handles| {
        if let Some(h) = handles.borrow().get(&dev.id()) {
            return Ok(h.clone());
        }
        let h = Cudnn::new(dev.cuda_stream())?;
        handles.borrow_mut().insert(dev.id(), h.clone());
        Ok(h)
    })
}

/// The cached algorithm for `key`, or `pick()`'s answer (then cached).
fn cached<A: Copy + 'static>(
    cache: &'static LocalKey<Cache<A>>,
    key: AlgoKey,
    pick: impl FnOnce() -> Result<A>,
) -> Result<A> {
    if let Some(a) = cache.with(|c| c.borrow().get(&key).copied()) {
        return Ok(a);
    }
    let a = pick()?;
    cache.with(|c| c.borrow_mut().insert(key, a));
    Ok(a)
}

/// The algorithm for `key` — the fastest of `candidates` in benchmark mode (timed with `run`),
/// else (or when none runs) the heuristic's — cached, then its workspace (or `fallback` and its
/// workspace when that allocation fails).
fn choose<A: Copy + 'static>(
    cache: &'static LocalKey<Cache<A>>,
    (dev, key): (&CudaDevice, AlgoKey),
    (candidates, fallback): (&[A], A),
    size: impl Fn(A) -> Result<usize> + Copy,
    run: impl FnMut(A, Option<&mut CudaSlice<u8>>) -> Result<()>,
    heuristic: impl FnOnce() -> Result<A>,
) -> Result<(A, Option<CudaSlice<u8>>)> {
    let best = cached(cache, key, || {
        if key.benchmark {
            if let Some(algo) = fastest(dev, candidates, size, run)? {
                return Ok(algo);
            }
        }
        heuristic()
    })?;
    algo_and_workspace(dev, best, fallback, size)
}

/// The math mode for data of `dtype` (see the module docs).
fn math_type(dtype: DType) -> cudnnMathType_t {
    match dtype {
        DType::F32 if !candle_core::cuda::gemm_reduced_precision_f32() => {
            cudnnMathType_t::CUDNN_FMA_MATH
        }
        DType::F16 | DType::BF16 => cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        _ => cudnnMathType_t::CUDNN_DEFAULT_MATH,
    }
}

/// A device allocation of `bytes` bytes of scratch space, or `None` for 0 bytes.
fn workspace(dev: &CudaDevice, bytes: usize) -> Result<Option<CudaSlice<u8>>> {
    if bytes == 0 {
        return Ok(None);
    }
    // SAFETY: cuDNN only writes scratch data to the workspace before reading it.
    Ok(Some(unsafe { dev.alloc::<u8>(bytes)? }))
}

/// `bytes` of workspace for the preferred algorithm, or (if that allocation fails) the
/// fallback algorithm and its workspace.
fn algo_and_workspace<A: Copy>(
    dev: &CudaDevice,
    preferred: A,
    fallback: A,
    size: impl Fn(A) -> Result<usize>,
) -> Result<(A, Option<CudaSlice<u8>>)> {
    match workspace(dev, size(preferred)?) {
        Ok(ws) => Ok((preferred, ws)),
        Err(_) => Ok((fallback, workspace(dev, size(fallback)?)?)),
    }
}

/// A geometry dimension as cuDNN's `int`.
fn int(op: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| candle_core::Error::Msg(format!("{op}: size {v} exceeds cuDNN's i32 range")))
}

fn int4(op: &str, (a, b, c, d): (usize, usize, usize, usize)) -> Result<[i32; 4]> {
    Ok([int(op, a)?, int(op, b)?, int(op, c)?, int(op, d)?])
}

/// Runs `pass` of the convolution `g` on two CUDA operands (in the op's operand order) and
/// returns the output storage. `T` is the data type, `C` the compute type.
fn launch<T, C>(
    pass: Pass,
    op: &str,
    names: (&str, &str),
    g: &Geometry,
    (s1, l1): (&CudaStorage, &Layout),
    (s2, l2): (&CudaStorage, &Layout),
) -> Result<CudaStorage>
where
    T: CudaDType + CudnnDataType + DeviceRepr + ValidAsZeroBits + WithDType,
    C: CudnnDataType,
{
    let dev = s1.device().clone();
    let a = crate::cuda::view::<T>(s1, l1, op, names.0)?;
    let b = crate::cuda::view::<T>(s2, l2, op, names.1)?;
    let cudnn = handle(&dev)?;
    let math = math_type(T::DTYPE);
    let mut conv: ConvDescriptor<C> = cudnn.create_conv2d::<C>(
        [int(op, g.ph)?, int(op, g.pw)?],
        [int(op, g.sh)?, int(op, g.sw)?],
        [int(op, g.dh)?, int(op, g.dw)?],
        cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
    )?;
    conv.set_group_count(int(op, g.groups)?)?;
    conv.set_math_type(math)?;
    let nchw = cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    let x: TensorDescriptor<T> = cudnn.create_4d_tensor::<T>(nchw, int4(op, g.x_dims())?)?;
    let w: FilterDescriptor<T> = cudnn.create_4d_filter::<T>(nchw, int4(op, g.w_dims())?)?;
    let y: TensorDescriptor<T> = cudnn.create_4d_tensor::<T>(nchw, int4(op, g.y_dims())?)?;
    let key = AlgoKey {
        device: dev.id(),
        geometry: *g,
        dtype: T::DTYPE,
        math,
        benchmark: super::cudnn_benchmark(),
    };
    let scale = (T::from_f64(1.0), T::from_f64(0.0)); // out = 1 · result + 0 · out
    let count = |(n, c, h, w): (usize, usize, usize, usize)| n * c * h * w;
    let out = match pass {
        Pass::Forward => {
            // a = x, b = w → y
            let conv2d = ConvForward {
                conv: &conv,
                x: &x,
                w: &w,
                y: &y,
            };
            // SAFETY: every algorithm writes the whole output (β = 0).
            let mut out = unsafe { dev.alloc::<T>(count(g.y_dims()))? };
            let (algo, mut ws) = choose(
                &FWD_ALGOS,
                (&dev, key),
                (
                    &FWD_CANDIDATES,
                    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                ),
                |a| Ok(conv2d.get_workspace_size(a)?),
                |algo, ws| {
                    // SAFETY: as the launch below.
                    unsafe { conv2d.launch(algo, ws, scale, &a, &b, &mut out)? };
                    Ok(())
                },
                || Ok(conv2d.pick_algorithm()?),
            )?;
            // SAFETY: the descriptors describe exactly these contiguous NCHW buffers of `T`.
            unsafe { conv2d.launch(algo, ws.as_mut(), scale, &a, &b, &mut out)? };
            out
        }
        Pass::InputGrad => {
            // a = dy, b = w → dx
            let bwd = ConvBackwardData {
                conv: &conv,
                dx: &x,
                w: &w,
                dy: &y,
            };
            // SAFETY: every algorithm writes the whole output (β = 0).
            let mut out = unsafe { dev.alloc::<T>(count(g.x_dims()))? };
            let (algo, mut ws) = choose(
                &DATA_ALGOS,
                (&dev, key),
                (
                    &DATA_CANDIDATES,
                    DataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
                ),
                |a| Ok(bwd.get_workspace_size(a)?),
                |algo, ws| {
                    // SAFETY: as the launch below.
                    unsafe { bwd.launch(algo, ws, scale, &mut out, &b, &a)? };
                    Ok(())
                },
                || Ok(bwd.pick_algorithm()?),
            )?;
            // SAFETY: as above.
            unsafe { bwd.launch(algo, ws.as_mut(), scale, &mut out, &b, &a)? };
            out
        }
        Pass::WeightGrad => {
            // a = x, b = dy → dw
            let bwd = ConvBackwardFilter {
                conv: &conv,
                x: &x,
                dw: &w,
                dy: &y,
            };
            // SAFETY: every algorithm writes the whole output (β = 0).
            let mut out = unsafe { dev.alloc::<T>(count(g.w_dims()))? };
            let (algo, mut ws) = choose(
                &FILTER_ALGOS,
                (&dev, key),
                (
                    &FILTER_CANDIDATES,
                    FilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
                ),
                |a| Ok(bwd.get_workspace_size(a)?),
                |algo, ws| {
                    // SAFETY: as the launch below.
                    unsafe { bwd.launch(algo, ws, scale, &a, &mut out, &b)? };
                    Ok(())
                },
                || Ok(bwd.pick_algorithm()?),
            )?;
            // SAFETY: as above.
            unsafe { bwd.launch(algo, ws.as_mut(), scale, &a, &mut out, &b)? };
            out
        }
    };
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// Runs `pass` on two CUDA storages of the same float dtype (f32, f64, f16 or bf16).
pub(crate) fn run(
    pass: Pass,
    op: &str,
    names: (&str, &str),
    g: &Geometry,
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    match (a.0.dtype(), b.0.dtype()) {
        (DType::F32, DType::F32) => launch::<f32, f32>(pass, op, names, g, a, b),
        (DType::F64, DType::F64) => launch::<f64, f64>(pass, op, names, g, a, b),
        (DType::F16, DType::F16) => launch::<half::f16, f32>(pass, op, names, g, a, b),
        (DType::BF16, DType::BF16) => launch::<half::bf16, f32>(pass, op, names, g, a, b),
        (da, db) => candle_core::bail!(
            "{op}: expected `{}` and `{}` of the same float dtype (f32, f64, f16 or bf16), \
             found {da:?} and {db:?}",
            names.0,
            names.1
        ),
    }
}
