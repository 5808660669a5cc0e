//! Fused in-place optimizer updates for CPU `f32`/`f64` variables, and with the `cuda` feature
//! and [`crate::gpu::custom_kernels`] on for CUDA `f32`/`f64` variables.
//!
//! One pass per parameter reads the gradient and updates the parameter storage and the
//! optimizer's moment buffers in place: on CPU plain `Vec`s owned by the optimizer, split into
//! chunks across rayon threads; on CUDA device buffers owned by the optimizer, one kernel launch
//! per parameter (`src/cuda/kernels.cu`, compiled without FMA contraction so that it rounds as
//! the CPU kernel does) instead of ~12 candle kernels each allocating a full-size tensor. The arithmetic is element-wise identical to the tensor-op path of
//! [`super::Sgd`]/[`super::Adam`]/[`super::AdamW`] (same operations in the same order), which
//! other devices and dtypes keep using.

use std::cell::RefCell;
use std::ops::{Add, Div, Mul, Sub};

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, InplaceOp2, Layout, Result, Tensor, Var};
use rayon::prelude::*;

/// Elements per rayon task (small tensors such as biases run in one task).
const CHUNK: usize = 1 << 15;

/// An optimizer state buffer of the fused path, in the variable's dtype: host memory for CPU
/// variables, device memory for CUDA variables.
#[derive(Debug, Clone)]
pub(super) enum StateBuf {
    F32(Vec<f32>),
    F64(Vec<f64>),
    #[cfg(feature = "cuda")]
    Cuda(crate::cuda::DeviceBuf),
}

impl StateBuf {
    /// A zero buffer for `var`'s elements.
    pub(super) fn zeros(var: &Var) -> Result<Self> {
        let n = var.elem_count();
        #[cfg(feature = "cuda")]
        if let candle_core::Device::Cuda(dev) = var.device() {
            return Ok(Self::Cuda(crate::cuda::DeviceBuf::zeros(
                dev,
                var.dtype(),
                n,
            )?));
        }
        match var.dtype() {
            DType::F32 => Ok(Self::F32(vec![0.0; n])),
            DType::F64 => Ok(Self::F64(vec![0.0; n])),
            dt => bail!("fused optimizer step: unsupported dtype {dt:?}"),
        }
    }
}

/// Whether `var` takes the fused path: a contiguous CPU (or, with the `cuda` feature, CUDA)
/// tensor of dtype `f32` or `f64`.
pub(super) fn eligible(var: &Var) -> bool {
    ((var.device().is_cpu() && matches!(var.dtype(), DType::F32 | DType::F64))
        || crate::gpu::use_kernels(var.as_tensor()))
        && var.as_tensor().is_contiguous()
}

/// The update rule with this step's scalars (group learning rate and weight decay applied).
#[derive(Debug, Clone, Copy)]
pub(super) enum Rule {
    /// `torch.optim.SGD`; `first` marks the step that initialises the momentum buffer with `d`.
    Sgd {
        lr: f64,
        wd: f64,
        momentum: f64,
        dampening: f64,
        nesterov: bool,
        first: bool,
    },
    /// `torch.optim.Adam`/`AdamW` at 1-based step `step` (moments start at zero).
    Adam {
        lr: f64,
        wd: f64,
        decoupled: bool,
        beta1: f64,
        beta2: f64,
        eps: f64,
        step: i32,
    },
}

impl Rule {
    /// How many state buffers the rule keeps per variable (SGD: 1 with momentum, else 0;
    /// Adam: `m` and `v`).
    fn state_buffers(&self) -> usize {
        match *self {
            Rule::Sgd { momentum, .. } => usize::from(momentum != 0.0),
            Rule::Adam { .. } => 2,
        }
    }
}

/// Applies `rule` in place to `var` with gradient `grad` (same dtype, any layout) and the state
/// buffers `bufs` (SGD: `[]` or `[momentum]`; Adam: `[m, v]`), each with `var`'s element count.
pub(super) fn step(var: &Var, grad: &Tensor, rule: Rule, bufs: &mut [StateBuf]) -> Result<()> {
    let grad = if grad.is_contiguous() {
        grad.clone()
    } else {
        grad.contiguous()?
    };
    let op = FusedStep {
        rule,
        bufs: RefCell::new(bufs),
    };
    var.as_tensor().inplace_op2(&grad, &op)
}

/// The in-place op: `dst` is the parameter storage, the source the gradient.
struct FusedStep<'a> {
    rule: Rule,
    bufs: RefCell<&'a mut [StateBuf]>,
}

/// The contiguous element range of `layout`.
fn range(layout: &Layout, what: &str) -> Result<std::ops::Range<usize>> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(a..b),
        None => bail!("fused optimizer step: the {what} is not contiguous"),
    }
}

impl InplaceOp2 for FusedStep<'_> {
    fn name(&self) -> &'static str {
        "umt-fused-optimizer-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (rp, rg) = (range(l1, "parameter")?, range(l2, "gradient")?);
        if rp.len() != rg.len() {
            bail!(
                "fused optimizer step: parameter has {} elements, gradient {}",
                rp.len(),
                rg.len()
            );
        }
        let mut bufs = self.bufs.borrow_mut();
        match (s1, s2) {
            (CpuStorage::F32(p), CpuStorage::F32(g)) => {
                let mut views = Vec::with_capacity(bufs.len());
                for b in bufs.iter_mut() {
                    match b {
                        StateBuf::F32(v) => views.push(v.as_mut_slice()),
                        _ => bail!("fused optimizer step: state of another dtype or device"),
                    }
                }
                apply(self.rule, &mut p[rp], &g[rg], views)
            }
            (CpuStorage::F64(p), CpuStorage::F64(g)) => {
                let mut views = Vec::with_capacity(bufs.len());
                for b in bufs.iter_mut() {
                    match b {
                        StateBuf::F64(v) => views.push(v.as_mut_slice()),
                        _ => bail!("fused optimizer step: state of another dtype or device"),
                    }
                }
                apply(self.rule, &mut p[rp], &g[rg], views)
            }
            (p, g) => bail!(
                "fused optimizer step: parameter {:?} and gradient {:?} must both be f32 or f64",
                p.dtype(),
                g.dtype()
            ),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::cuda::CudaStorage,
        l1: &Layout,
        s2: &candle_core::cuda::CudaStorage,
        l2: &Layout,
    ) -> Result<()> {
        if s1.dtype() != s2.dtype() {
            bail!(
                "fused optimizer step: parameter {:?} and gradient {:?} must have the same dtype",
                s1.dtype(),
                s2.dtype()
            );
        }
        let scalars = self.rule.scalars();
        let mut bufs = self.bufs.borrow_mut();
        let mut device = Vec::with_capacity(bufs.len());
        for b in bufs.iter_mut() {
            match b {
                StateBuf::Cuda(d) => device.push(d),
                _ => bail!("fused optimizer step: host state for a CUDA variable"),
            }
        }
        let wanted = self.rule.state_buffers();
        if device.len() != wanted {
            bail!(
                "fused optimizer step: expected {wanted} state buffers, found {}",
                device.len()
            );
        }
        crate::cuda::optimizer_step((s1, l1), (s2, l2), &mut device, scalars)
    }
}

/// The float types the fused kernels run on.
trait Real:
    Copy
    + Send
    + Sync
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
{
    /// `x` rounded to this type (as candle's `affine` converts its scalars).
    fn of(x: f64) -> Self;
    fn sqrt(self) -> Self;
}

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
}

/// `s` cut into `chunks` pieces of `CHUNK` elements, or `chunks` empty pieces when `s` is
/// unused (empty).
fn pieces<T>(s: &mut [T], chunks: usize) -> Vec<&mut [T]> {
    if s.is_empty() {
        (0..chunks).map(|_| <&mut [T]>::default()).collect()
    } else {
        s.chunks_mut(CHUNK).collect()
    }
}

/// Runs `rule` over `p`/`g` and the state buffers (`views`), chunk-parallel.
fn apply<T: Real>(rule: Rule, p: &mut [T], g: &[T], mut views: Vec<&mut [T]>) -> Result<()> {
    let n = p.len();
    let wanted = rule.state_buffers();
    if views.len() != wanted || views.iter().any(|v| v.len() != n) {
        bail!("fused optimizer step: state buffers do not match the parameter's {n} elements");
    }
    let (a, b) = match views.len() {
        0 => (<&mut [T]>::default(), <&mut [T]>::default()),
        1 => (views.remove(0), <&mut [T]>::default()),
        _ => {
            let b = views.remove(1);
            (views.remove(0), b)
        }
    };
    let chunks = n.div_ceil(CHUNK);
    let tasks: Vec<_> = p
        .chunks_mut(CHUNK)
        .zip(g.chunks(CHUNK))
        .zip(pieces(a, chunks))
        .zip(pieces(b, chunks))
        .collect();
    type Task<'a, T> = (((&'a mut [T], &'a [T]), &'a mut [T]), &'a mut [T]);
    // Each chunk's loop compiled with AVX2 + FMA where available (see `simd`).
    let scalars = rule.scalars();
    let run = |(((p, g), a), b): Task<'_, T>| {
        crate::simd::best(
            #[inline(always)]
            || match scalars {
                StepScalars::Sgd(lr, wd, mu, keep, nesterov, first) => {
                    sgd_chunk(p, g, a, (lr, wd, mu, keep, nesterov, first))
                }
                StepScalars::Adam(s, decoupled) => adam_chunk(p, g, a, b, s, decoupled),
            },
        )
    };
    if chunks > 1 {
        tasks.into_par_iter().for_each(run);
    } else {
        tasks.into_iter().for_each(run);
    }
    Ok(())
}

/// SGD on one chunk; `buf` is empty without momentum.
#[inline(always)]
fn sgd_chunk<T: Real>(
    p: &mut [T],
    g: &[T],
    buf: &mut [T],
    (lr, wd, momentum, keep, nesterov, first): (f64, f64, f64, f64, bool, bool),
) {
    let (lr_t, wd_t, mu, keep) = (T::of(lr), T::of(wd), T::of(momentum), T::of(keep));
    for i in 0..p.len() {
        let mut d = g[i];
        if wd != 0.0 {
            d = d + p[i] * wd_t;
        }
        if momentum != 0.0 {
            let b = if first { d } else { buf[i] * mu + d * keep };
            buf[i] = b;
            d = if nesterov { d + b * mu } else { b };
        }
        p[i] = p[i] - d * lr_t;
    }
}

/// The scalars of one optimizer step, as both kernels (CPU here, CUDA in `cuda.rs`) use them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StepScalars {
    /// `(lr, wd, momentum, 1 − dampening, nesterov, first)`.
    Sgd(f64, f64, f64, f64, bool, bool),
    /// `(β1, 1 − β1, β2, 1 − β2, wd, 1 − lr·wd, 1/√bc2, ε, lr/bc1, decoupled)`.
    Adam([f64; 9], bool),
}

impl Rule {
    /// This step's scalars for the kernels.
    fn scalars(self) -> StepScalars {
        match self {
            Rule::Sgd {
                lr,
                wd,
                momentum,
                dampening,
                nesterov,
                first,
            } => StepScalars::Sgd(lr, wd, momentum, 1.0 - dampening, nesterov, first),
            Rule::Adam {
                lr,
                wd,
                decoupled,
                beta1,
                beta2,
                eps,
                step,
            } => StepScalars::Adam(adam_scalars(lr, wd, beta1, beta2, eps, step), decoupled),
        }
    }
}

/// Adam's scalars at 1-based step `step`, as both kernels (CPU and CUDA) use them:
/// `[β1, 1 − β1, β2, 1 − β2, wd, 1 − lr·wd, 1/√bc2, ε, lr/bc1]` with `bc = 1 − β^step`.
fn adam_scalars(lr: f64, wd: f64, beta1: f64, beta2: f64, eps: f64, step: i32) -> [f64; 9] {
    let bc1 = 1.0 - beta1.powi(step);
    let bc2 = 1.0 - beta2.powi(step);
    [
        beta1,
        1.0 - beta1,
        beta2,
        1.0 - beta2,
        wd,
        1.0 - lr * wd,
        1.0 / bc2.sqrt(),
        eps,
        lr / bc1,
    ]
}

/// Adam/AdamW on one chunk with moments `m`, `v` (zero before the first step).
#[inline(always)]
fn adam_chunk<T: Real>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    scalars: [f64; 9],
    decoupled: bool,
) {
    let wd = scalars[4];
    let [b1, c1, b2, c2, wd_t, shrink, inv_bc2, eps_t, step_size] = scalars.map(T::of);
    // Zipped slices (no bounds checks), so the loop vectorises.
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let mut gi = g;
        let mut pi = *p;
        if wd != 0.0 {
            if decoupled {
                pi = pi * shrink;
            } else {
                gi = gi + *p * wd_t;
            }
        }
        let mi = *m * b1 + gi * c1;
        let vi = *v * b2 + gi * gi * c2;
        *m = mi;
        *v = vi;
        let denom = vi.sqrt() * inv_bc2 + eps_t;
        *p = pi - mi / denom * step_size;
    }
}
