//! Fused in-place optimizer updates for CPU `f32`/`f64` variables.
//!
//! One pass per parameter reads the gradient and updates the parameter storage and the
//! optimizer's moment buffers (plain `Vec`s owned by the optimizer) in place, split into chunks
//! across rayon threads. The arithmetic is element-wise identical to the tensor-op path of
//! [`super::Sgd`]/[`super::Adam`]/[`super::AdamW`] (same operations in the same order), which
//! other devices and dtypes keep using.

use std::cell::RefCell;
use std::ops::{Add, Div, Mul, Sub};

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, DType, InplaceOp2, Layout, Result, Tensor, Var};
use rayon::prelude::*;

/// Elements per rayon task (small tensors such as biases run in one task).
const CHUNK: usize = 1 << 15;

/// An optimizer state buffer in host memory, in the variable's dtype.
#[derive(Debug, Clone)]
pub(super) enum HostBuf {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl HostBuf {
    /// A zero buffer for `var`'s elements.
    pub(super) fn zeros(var: &Var) -> Result<Self> {
        let n = var.elem_count();
        match var.dtype() {
            DType::F32 => Ok(Self::F32(vec![0.0; n])),
            DType::F64 => Ok(Self::F64(vec![0.0; n])),
            dt => bail!("fused optimizer step: unsupported dtype {dt:?}"),
        }
    }
}

/// Whether `var` takes the fused host path: a contiguous CPU tensor of dtype `f32` or `f64`.
pub(super) fn eligible(var: &Var) -> bool {
    var.device().is_cpu()
        && matches!(var.dtype(), DType::F32 | DType::F64)
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

/// Applies `rule` in place to `var` with gradient `grad` (same dtype, any layout) and the state
/// buffers `bufs` (SGD: `[]` or `[momentum]`; Adam: `[m, v]`), each with `var`'s element count.
pub(super) fn step(var: &Var, grad: &Tensor, rule: Rule, bufs: &mut [HostBuf]) -> Result<()> {
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
    bufs: RefCell<&'a mut [HostBuf]>,
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
                        HostBuf::F32(v) => views.push(v.as_mut_slice()),
                        HostBuf::F64(_) => bail!("fused optimizer step: f64 state for f32 var"),
                    }
                }
                apply(self.rule, &mut p[rp], &g[rg], views)
            }
            (CpuStorage::F64(p), CpuStorage::F64(g)) => {
                let mut views = Vec::with_capacity(bufs.len());
                for b in bufs.iter_mut() {
                    match b {
                        HostBuf::F64(v) => views.push(v.as_mut_slice()),
                        HostBuf::F32(_) => bail!("fused optimizer step: f32 state for f64 var"),
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
    let wanted = match rule {
        Rule::Sgd { momentum, .. } => usize::from(momentum != 0.0),
        Rule::Adam { .. } => 2,
    };
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
    let run = |(((p, g), a), b): Task<'_, T>| match rule {
        Rule::Sgd {
            lr,
            wd,
            momentum,
            dampening,
            nesterov,
            first,
        } => sgd_chunk(p, g, a, (lr, wd, momentum, dampening, nesterov, first)),
        Rule::Adam {
            lr,
            wd,
            decoupled,
            beta1,
            beta2,
            eps,
            step,
        } => adam_chunk(p, g, a, b, (lr, wd, decoupled, beta1, beta2, eps, step)),
    };
    if chunks > 1 {
        tasks.into_par_iter().for_each(run);
    } else {
        tasks.into_iter().for_each(run);
    }
    Ok(())
}

/// SGD on one chunk; `buf` is empty without momentum.
fn sgd_chunk<T: Real>(
    p: &mut [T],
    g: &[T],
    buf: &mut [T],
    (lr, wd, momentum, dampening, nesterov, first): (f64, f64, f64, f64, bool, bool),
) {
    let (lr_t, wd_t, mu, keep) = (
        T::of(lr),
        T::of(wd),
        T::of(momentum),
        T::of(1.0 - dampening),
    );
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

/// Adam/AdamW on one chunk with moments `m`, `v` (zero before the first step).
fn adam_chunk<T: Real>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    (lr, wd, decoupled, beta1, beta2, eps, step): (f64, f64, bool, f64, f64, f64, i32),
) {
    let bc1 = 1.0 - beta1.powi(step);
    let bc2 = 1.0 - beta2.powi(step);
    let (b1, c1, b2, c2) = (
        T::of(beta1),
        T::of(1.0 - beta1),
        T::of(beta2),
        T::of(1.0 - beta2),
    );
    let (wd_t, shrink) = (T::of(wd), T::of(1.0 - lr * wd));
    let (inv_bc2, eps_t, step_size) = (T::of(1.0 / bc2.sqrt()), T::of(eps), T::of(lr / bc1));
    for i in 0..p.len() {
        let mut gi = g[i];
        let mut pi = p[i];
        if wd != 0.0 {
            if decoupled {
                pi = pi * shrink;
            } else {
                gi = gi + p[i] * wd_t;
            }
        }
        let mi = m[i] * b1 + gi * c1;
        let vi = v[i] * b2 + gi * gi * c2;
        m[i] = mi;
        v[i] = vi;
        let denom = vi.sqrt() * inv_bc2 + eps_t;
        p[i] = pi - mi / denom * step_size;
    }
}
