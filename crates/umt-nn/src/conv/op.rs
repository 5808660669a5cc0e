//! The convolution as three candle custom ops, each with its own backward so that gradients
//! (and gradients of gradients) stay on the fast kernels:
//!
//! | op | inputs | output | backward |
//! |---|---|---|---|
//! | [`ConvForward`] | `x`, `w` | `y` | [`ConvInputGrad`], [`ConvWeightGrad`] |
//! | [`ConvInputGrad`] | `dy`, `w` | `dx` | [`ConvForward`], [`ConvWeightGrad`] |
//! | [`ConvWeightGrad`] | `x`, `dy` | `dw` | [`ConvInputGrad`], [`ConvForward`] |
//!
//! All three are bilinear, so each backward is made of the other two.
//!
//! Each op runs on CPU (`cpu_fwd`: f32 and f64, `conv/cpu.rs`) and, with the `cudnn` feature,
//! on CUDA (`cuda_fwd`: f32, f64, f16 and bf16 through cuDNN, `conv/cudnn.rs`).

use candle_core::backend::BackendStorage;
#[cfg(feature = "cudnn")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

#[cfg(feature = "cudnn")]
use super::cudnn;
use super::{cpu, Geometry};

type Dims = (usize, usize, usize, usize);

/// Operand names and shapes of one op for a geometry: `(name, dims)` of both inputs and the
/// output dims.
struct Spec {
    names: (&'static str, &'static str),
    dims: (Dims, Dims),
    out: Dims,
}

impl Spec {
    /// Checks both operand layouts against the geometry.
    fn check(&self, g: &Geometry, op: &str, l1: &Layout, l2: &Layout) -> Result<()> {
        g.check(
            op,
            (self.names.0, l1.dims(), self.dims.0),
            (self.names.1, l2.dims(), self.dims.1),
        )
    }
}

/// The CUDA forward of an op: checks the operands, then runs its cuDNN routine.
#[cfg(feature = "cudnn")]
fn cuda_pass(
    pass: cudnn::Pass,
    op: &str,
    g: &Geometry,
    spec: Spec,
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    spec.check(g, op, a.1, b.1)?;
    let out = cudnn::run(pass, op, spec.names, g, a, b)?;
    Ok((out, Shape::from(spec.out)))
}

/// Borrows the contiguous data of a storage as `&[T]`, or fails naming the operand.
fn slice<'a, T>(data: &'a [T], layout: &Layout, op: &str, what: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: operand `{what}` must be contiguous"),
    }
}

/// Runs `f` on two CPU storages of the same float dtype (f32 or f64).
#[allow(clippy::too_many_arguments)]
fn dispatch(
    op: &str,
    names: (&str, &str),
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    shape: Shape,
    f32_kernel: fn(&[f32], &[f32], &Geometry) -> Vec<f32>,
    f64_kernel: fn(&[f64], &[f64], &Geometry) -> Vec<f64>,
    geometry: &Geometry,
) -> Result<(CpuStorage, Shape)> {
    match (s1, s2) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => {
            let out = f32_kernel(
                slice(a, l1, op, names.0)?,
                slice(b, l2, op, names.1)?,
                geometry,
            );
            Ok((CpuStorage::F32(out), shape))
        }
        (CpuStorage::F64(a), CpuStorage::F64(b)) => {
            let out = f64_kernel(
                slice(a, l1, op, names.0)?,
                slice(b, l2, op, names.1)?,
                geometry,
            );
            Ok((CpuStorage::F64(out), shape))
        }
        _ => candle_core::bail!(
            "{op}: expected `{}` and `{}` both f32 or both f64, found {:?} and {:?}",
            names.0,
            names.1,
            s1.dtype(),
            s2.dtype()
        ),
    }
}

/// The gradient of `operand` computed by `grad`, or `None` (skipping the pass) when the
/// operand is not part of the autograd graph (e.g. the input images of a stem convolution,
/// or a frozen, detached weight): candle then drops the gradient anyway.
fn needed(operand: &Tensor, grad: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    if operand.track_op() {
        grad().map(Some)
    } else {
        Ok(None)
    }
}

/// `y = conv(x, w)`: `x (B, C_in, H, W)`, `w (C_out, C_in/G, kH, kW)` → `(B, C_out, OH, OW)`.
pub(crate) struct ConvForward(pub(crate) Geometry);

/// `dx = ∂⟨y, dy⟩/∂x`: `dy (B, C_out, OH, OW)`, `w` → `(B, C_in, H, W)`.
pub(crate) struct ConvInputGrad(pub(crate) Geometry);

/// `dw = ∂⟨y, dy⟩/∂w`: `x (B, C_in, H, W)`, `dy (B, C_out, OH, OW)` → `(C_out, C_in/G, kH, kW)`.
pub(crate) struct ConvWeightGrad(pub(crate) Geometry);

impl ConvForward {
    fn spec(&self) -> Spec {
        let g = &self.0;
        Spec {
            names: ("x", "w"),
            dims: (g.x_dims(), g.w_dims()),
            out: g.y_dims(),
        }
    }

    pub(crate) fn apply(g: Geometry, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op2(&w.contiguous()?, ConvForward(g))
    }
}

impl ConvInputGrad {
    fn spec(&self) -> Spec {
        let g = &self.0;
        Spec {
            names: ("dy", "w"),
            dims: (g.y_dims(), g.w_dims()),
            out: g.x_dims(),
        }
    }

    pub(crate) fn apply(g: Geometry, dy: &Tensor, w: &Tensor) -> Result<Tensor> {
        dy.contiguous()?
            .apply_op2(&w.contiguous()?, ConvInputGrad(g))
    }
}

impl ConvWeightGrad {
    fn spec(&self) -> Spec {
        let g = &self.0;
        Spec {
            names: ("x", "dy"),
            dims: (g.x_dims(), g.y_dims()),
            out: g.w_dims(),
        }
    }

    pub(crate) fn apply(g: Geometry, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
        x.contiguous()?
            .apply_op2(&dy.contiguous()?, ConvWeightGrad(g))
    }
}

impl CustomOp2 for ConvForward {
    fn name(&self) -> &'static str {
        "umt-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let spec = self.spec();
        spec.check(&self.0, self.name(), l1, l2)?;
        dispatch(
            self.name(),
            spec.names,
            (s1, l1),
            (s2, l2),
            Shape::from(spec.out),
            cpu::forward::<f32>,
            cpu::forward::<f64>,
            &self.0,
        )
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let pass = cudnn::Pass::Forward;
        cuda_pass(pass, self.name(), &self.0, self.spec(), (s1, l1), (s2, l2))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = needed(x, || ConvInputGrad::apply(self.0, dy, w))?;
        let dw = needed(w, || ConvWeightGrad::apply(self.0, x, dy))?;
        Ok((dx, dw))
    }
}

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "umt-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let spec = self.spec();
        spec.check(&self.0, self.name(), l1, l2)?;
        dispatch(
            self.name(),
            spec.names,
            (s1, l1),
            (s2, l2),
            Shape::from(spec.out),
            cpu::input_grad::<f32>,
            cpu::input_grad::<f64>,
            &self.0,
        )
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let pass = cudnn::Pass::InputGrad;
        cuda_pass(pass, self.name(), &self.0, self.spec(), (s1, l1), (s2, l2))
    }

    /// `dx` is bilinear in `(dy, w)`: with `gx = ∂L/∂dx`, `∂L/∂dy = conv(gx, w)` and
    /// `∂L/∂w = weight_grad(gx, dy)`.
    fn bwd(
        &self,
        dy: &Tensor,
        w: &Tensor,
        _dx: &Tensor,
        gx: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g_dy = needed(dy, || ConvForward::apply(self.0, gx, w))?;
        let g_w = needed(w, || ConvWeightGrad::apply(self.0, gx, dy))?;
        Ok((g_dy, g_w))
    }
}

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "umt-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let spec = self.spec();
        spec.check(&self.0, self.name(), l1, l2)?;
        dispatch(
            self.name(),
            spec.names,
            (s1, l1),
            (s2, l2),
            Shape::from(spec.out),
            cpu::weight_grad::<f32>,
            cpu::weight_grad::<f64>,
            &self.0,
        )
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let pass = cudnn::Pass::WeightGrad;
        cuda_pass(pass, self.name(), &self.0, self.spec(), (s1, l1), (s2, l2))
    }

    /// `dw` is bilinear in `(x, dy)`: with `gw = ∂L/∂dw`, `∂L/∂x = input_grad(dy, gw)` and
    /// `∂L/∂dy = conv(x, gw)`.
    fn bwd(
        &self,
        x: &Tensor,
        dy: &Tensor,
        _dw: &Tensor,
        gw: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g_x = needed(x, || ConvInputGrad::apply(self.0, dy, gw))?;
        let g_dy = needed(dy, || ConvForward::apply(self.0, x, gw))?;
        Ok((g_x, g_dy))
    }
}
