//! cuDNN kernels for the three convolution ops (feature `cudnn`): `cudnnConvolutionForward`,
//! `cudnnConvolutionBackwardData` and `cudnnConvolutionBackwardFilter` through cudarc's safe
//! cuDNN API, on the candle device's own stream (so they are ordered with candle's kernels).
//!
//! - **Handles**: one cuDNN handle per thread and device (cuDNN handles are neither `Send` nor
//!   `Sync`), created on first use, like candle's own cuDNN forward.
//! - **Algorithms**: cuDNN's heuristic (`cudnnGet*Algorithm_v7`, its first — best ranked —
//!   answer), asked once per thread, device, geometry, dtype and math mode and then cached.
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
//! Operands arrive contiguous (the ops' `apply` helpers ensure it); a non-zero layout start
//! offset is honoured by slicing the device buffer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::thread::LocalKey;

use candle_core::backend::BackendStorage;
use candle_core::cuda::{CudaDType, CudaDevice, CudaStorage, DeviceId};
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
use cudarc::driver::{CudaSlice, CudaView, DeviceRepr, ValidAsZeroBits};

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

/// The contiguous data of one operand as a device view starting at the layout's offset.
fn view<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
    op: &str,
    what: &str,
) -> Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(s.as_cuda_slice::<T>()?.slice(start..end)),
        None => candle_core::bail!("{op}: operand `{what}` must be contiguous"),
    }
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
    let a = view::<T>(s1, l1, op, names.0)?;
    let b = view::<T>(s2, l2, op, names.1)?;
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
            let best = cached(&FWD_ALGOS, key, || Ok(conv2d.pick_algorithm()?))?;
            let (algo, mut ws) = algo_and_workspace(
                &dev,
                best,
                FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                |a| Ok(conv2d.get_workspace_size(a)?),
            )?;
            let mut out = dev.alloc_zeros::<T>(count(g.y_dims()))?;
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
            let best = cached(&DATA_ALGOS, key, || Ok(bwd.pick_algorithm()?))?;
            let (algo, mut ws) = algo_and_workspace(
                &dev,
                best,
                DataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
                |a| Ok(bwd.get_workspace_size(a)?),
            )?;
            let mut out = dev.alloc_zeros::<T>(count(g.x_dims()))?;
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
            let best = cached(&FILTER_ALGOS, key, || Ok(bwd.pick_algorithm()?))?;
            let (algo, mut ws) = algo_and_workspace(
                &dev,
                best,
                FilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
                |a| Ok(bwd.get_workspace_size(a)?),
            )?;
            let mut out = dev.alloc_zeros::<T>(count(g.w_dims()))?;
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
