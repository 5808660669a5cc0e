//! 2D resizing with correct gradients: [`upsample_nearest2d`] and [`upsample_bilinear2d`], with
//! the semantics of PyTorch's `F.interpolate(x, size=(out_h, out_w), mode=...)`.
//!
//! candle 0.11's `upsample_nearest2d` backward overwrites the accumulated gradient instead of
//! adding to it, and its bilinear resize has no backward at all (`shared/notes/candle-0.11.md`,
//! bug 3). Both ops here are candle `CustomOp1`s whose backward scatters-and-adds into a fresh
//! gradient that candle then accumulates as usual.
//!
//! - nearest: source index `min(⌊dst · (in/out)⌋, in − 1)` with the scale computed in `f32`, as
//!   PyTorch does (so the rare rounding cases match it too);
//! - bilinear, `align_corners = false` (ESANet's choice): `src = max((dst + ½)·in/out − ½, 0)`;
//!   `align_corners = true`: `src = dst·(in − 1)/(out − 1)`; the two neighbours `⌊src⌋` and
//!   `min(⌊src⌋ + 1, in − 1)` are blended linearly, separably in H and W. Downsampling works
//!   too (no antialiasing, as PyTorch's default).
//!
//! Devices: the custom kernels run for CPU f32/f64 tensors. Every other device and dtype (CUDA,
//! f16, bf16) uses two interpolation-matrix products (`R_h · x · R_wᵀ`, the matrices built on the
//! host from the same taps), with the same forward and exact gradients through candle's matmul.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use umt_nn::upsample::{upsample_bilinear2d, upsample_nearest2d};
//! let x = Tensor::new(&[[[[1f32, 2.0], [3.0, 4.0]]]], &Device::Cpu)?; // (1, 1, 2, 2)
//! let n = upsample_nearest2d(&x, 4, 4)?;
//! assert_eq!(n.dims(), &[1, 1, 4, 4]);
//! let b = upsample_bilinear2d(&x, 3, 3, true)?;
//! // align_corners = true keeps the corners and puts the mean in the centre.
//! assert_eq!(b.flatten_all()?.to_vec1::<f32>()?[4], 2.5);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::pool::{dims4, has_cpu_kernel, run1, separable_matmul, Kernel1};

/// One output index's two source taps along an axis: `(i0, i1, w0, w1)`.
type Taps = (usize, usize, f64, f64);

/// PyTorch's nearest source index (`nearest_idx` in `UpSample.h`), scale in `f32`.
fn nearest_taps(input: usize, output: usize) -> Vec<Taps> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|d| {
            let s = if input == output {
                d
            } else if output == 2 * input {
                d >> 1
            } else {
                ((d as f32 * scale).floor() as usize).min(input - 1)
            };
            (s, s, 1.0, 0.0)
        })
        .collect()
}

/// PyTorch's linear source taps (`area_pixel_compute_source_index` and
/// `guard_index_and_lambda` in `UpSample.h`).
fn linear_taps(input: usize, output: usize, align_corners: bool) -> Vec<Taps> {
    let scale = if align_corners {
        if output > 1 {
            (input - 1) as f64 / (output - 1) as f64
        } else {
            0.0
        }
    } else {
        input as f64 / output as f64
    };
    (0..output)
        .map(|d| {
            let src = if align_corners {
                scale * d as f64
            } else {
                (scale * (d as f64 + 0.5) - 0.5).max(0.0)
            };
            let i0 = (src.floor() as usize).min(input - 1);
            let lambda = (src - i0 as f64).clamp(0.0, 1.0);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - lambda, lambda)
        })
        .collect()
}

/// A separable two-tap resampling `(B, C, in_h, in_w) → (B, C, rows, cols)`, or its transpose.
#[derive(Debug, Clone)]
struct Resample {
    name: &'static str,
    in_h: usize,
    in_w: usize,
    rows: Vec<Taps>,
    cols: Vec<Taps>,
    /// One tap per axis (nearest): the forward is a gather.
    nearest: bool,
    backward: bool,
}

impl Resample {
    fn in_plane(&self) -> usize {
        self.in_h * self.in_w
    }
    fn out_plane(&self) -> usize {
        self.rows.len() * self.cols.len()
    }
}

impl Kernel1 for Resample {
    fn op(&self) -> &'static str {
        self.name
    }
    fn apply<T: WithDType>(&self, x: &[T]) -> Result<Vec<T>> {
        let (in_plane, out_plane, w) = (self.in_plane(), self.out_plane(), self.in_w);
        let cols: Vec<(usize, usize, T, T)> = self
            .cols
            .iter()
            .map(|&(a, b, wa, wb)| (a, b, T::from_f64(wa), T::from_f64(wb)))
            .collect();
        if self.backward {
            // x is grad_out (B, C, rows, cols) → grad_in (B, C, in_h, in_w), scatter-add.
            let mut gx = vec![T::zero(); x.len() / out_plane * in_plane];
            gx.par_chunks_mut(in_plane)
                .zip(x.par_chunks(out_plane))
                .for_each(|(gp, go)| {
                    for (orow, &(r0, r1, h0, h1)) in go.chunks(cols.len()).zip(&self.rows) {
                        if self.nearest {
                            let row = &mut gp[r0 * w..(r0 + 1) * w];
                            for (&g, &(c0, ..)) in orow.iter().zip(&cols) {
                                row[c0] += g;
                            }
                            continue;
                        }
                        let (h0, h1) = (T::from_f64(h0), T::from_f64(h1));
                        for (&g, &(c0, c1, w0, w1)) in orow.iter().zip(&cols) {
                            let (g0, g1) = (g * h0, g * h1);
                            gp[r0 * w + c0] += g0 * w0;
                            gp[r0 * w + c1] += g0 * w1;
                            gp[r1 * w + c0] += g1 * w0;
                            gp[r1 * w + c1] += g1 * w1;
                        }
                    }
                });
            Ok(gx)
        } else {
            let mut out = vec![T::zero(); x.len() / in_plane * out_plane];
            out.par_chunks_mut(out_plane)
                .zip(x.par_chunks(in_plane))
                .for_each(|(o, plane)| {
                    for (orow, &(r0, r1, h0, h1)) in o.chunks_mut(cols.len()).zip(&self.rows) {
                        let (row0, row1) =
                            (&plane[r0 * w..(r0 + 1) * w], &plane[r1 * w..(r1 + 1) * w]);
                        if self.nearest {
                            for (v, &(c0, ..)) in orow.iter_mut().zip(&cols) {
                                *v = row0[c0];
                            }
                            continue;
                        }
                        let (h0, h1) = (T::from_f64(h0), T::from_f64(h1));
                        for (v, &(c0, c1, w0, w1)) in orow.iter_mut().zip(&cols) {
                            *v = h0 * (w0 * row0[c0] + w1 * row0[c1])
                                + h1 * (w0 * row1[c0] + w1 * row1[c1]);
                        }
                    }
                });
            Ok(out)
        }
    }
}

impl CustomOp1 for Resample {
    fn name(&self) -> &'static str {
        self.name
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = dims4(self.name, l.shape())?;
        let (expect, out) = if self.backward {
            ((self.rows.len(), self.cols.len()), (self.in_h, self.in_w))
        } else {
            ((self.in_h, self.in_w), (self.rows.len(), self.cols.len()))
        };
        if (h, w) != expect {
            bail!(
                "{}: input is {h}×{w}, expected {}×{}",
                self.name,
                expect.0,
                expect.1
            );
        }
        Ok((run1(self, s, l)?, Shape::from((b, c, out.0, out.1))))
    }
    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let back = Resample {
            backward: true,
            ..self.clone()
        };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&back)?))
    }
}

/// The device-generic resampling: `x (B, C, H, W)` times the interpolation matrices built from
/// the taps → `(B, C, rows.len(), cols.len())`.
fn resample_matmul(x: &Tensor, rows: Vec<Taps>, cols: Vec<Taps>) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let matrix = |t: Vec<Taps>, input: usize| {
        let mut m = vec![0f64; t.len() * input];
        for (d, &(i0, i1, w0, w1)) in t.iter().enumerate() {
            m[d * input + i0] += w0;
            m[d * input + i1] += w1;
        }
        (m, t.len(), input)
    };
    separable_matmul(x, matrix(rows, h), matrix(cols, w))
}

/// Builds and applies a forward [`Resample`] on `x (B, C, H, W)`.
fn resample(
    name: &'static str,
    x: &Tensor,
    out: (usize, usize),
    taps: impl Fn(usize, usize) -> Vec<Taps>,
    nearest: bool,
) -> Result<Tensor> {
    let (_, _, h, w) = dims4(name, x.shape())?;
    if h == 0 || w == 0 || out.0 == 0 || out.1 == 0 {
        bail!("{name}: input ({h}, {w}) and output {out:?} sizes must be positive");
    }
    if !has_cpu_kernel(x) {
        return resample_matmul(x, taps(h, out.0), taps(w, out.1));
    }
    x.contiguous()?.apply_op1(Resample {
        name,
        in_h: h,
        in_w: w,
        rows: taps(h, out.0),
        cols: taps(w, out.1),
        nearest,
        backward: false,
    })
}

/// Nearest-neighbour resize, PyTorch's `F.interpolate(x, size=(out_h, out_w), mode='nearest')`.
///
/// `x (B, C, H, W)` → `(B, C, out_h, out_w)`; output pixel `d` copies input
/// `min(⌊d·in/out⌋, in − 1)` on each axis. The backward adds each output gradient into its
/// source pixel. Any device and float dtype.
pub fn upsample_nearest2d(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    resample("upsample_nearest2d", x, (out_h, out_w), nearest_taps, true)
}

/// Bilinear resize, PyTorch's `F.interpolate(x, size=(out_h, out_w), mode='bilinear',
/// align_corners=align_corners)` (see the module docs for both conventions).
///
/// `x (B, C, H, W)` → `(B, C, out_h, out_w)`. Differentiable (candle's own bilinear is not).
/// Any device and float dtype.
pub fn upsample_bilinear2d(
    x: &Tensor,
    out_h: usize,
    out_w: usize,
    align_corners: bool,
) -> Result<Tensor> {
    let taps = |input, output| linear_taps(input, output, align_corners);
    resample("upsample_bilinear2d", x, (out_h, out_w), taps, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use proptest::prelude::*;

    /// The device-generic path (run here on CPU f64) equals the CPU kernel, forward and gradient.
    #[test]
    fn generic_path_matches_kernel() -> Result<()> {
        for &(h, w, oh, ow) in &[(5, 7, 10, 14), (6, 4, 3, 9), (1, 3, 4, 1), (7, 7, 7, 7)] {
            for mode in 0..3 {
                let n = 2 * 3 * h * w;
                let data: Vec<f64> = (0..n).map(|i| ((i * 37 % 101) as f64).sin()).collect();
                let x = candle_core::Var::from_vec(data, (2, 3, h, w), &Device::Cpu)?;
                let (rows, cols) = match mode {
                    0 => (nearest_taps(h, oh), nearest_taps(w, ow)),
                    m => (linear_taps(h, oh, m == 1), linear_taps(w, ow, m == 1)),
                };
                let kernel = match mode {
                    0 => upsample_nearest2d(&x, oh, ow)?,
                    m => upsample_bilinear2d(&x, oh, ow, m == 1)?,
                };
                let generic = resample_matmul(&x, rows, cols)?;
                let weights = Tensor::arange(0f64, (2 * 3 * oh * ow) as f64, &Device::Cpu)?
                    .reshape((2, 3, oh, ow))?
                    .cos()?;
                let gk = (kernel.clone() * &weights)?.sum_all()?.backward()?;
                let gg = (generic.clone() * &weights)?.sum_all()?.backward()?;
                let diff = |a: &Tensor, b: &Tensor| -> Result<f64> {
                    (a - b)?.abs()?.max_all()?.to_scalar::<f64>()
                };
                assert!(
                    diff(&kernel, &generic)? < 1e-12,
                    "forward, mode {mode}, {h}x{w}"
                );
                let (Some(a), Some(b)) = (gk.get(&x), gg.get(&x)) else {
                    panic!("missing gradient")
                };
                assert!(diff(a, b)? < 1e-12, "gradient, mode {mode}, {h}x{w}");
            }
        }
        Ok(())
    }

    proptest! {
        /// Taps stay inside the input, weights are a convex pair, and the nearest index is the
        /// exact `⌊d·in/out⌋` except where `d·in/out` is an integer that the f32 product rounds
        /// just below (PyTorch's 'nearest' quirk, e.g. 7·62/14, which we reproduce).
        #[test]
        fn taps_in_range(input in 1usize..64, output in 1usize..64, ac: bool) {
            for (i0, i1, w0, w1) in linear_taps(input, output, ac) {
                prop_assert!(i0 < input && i1 < input && i0 <= i1);
                prop_assert!((w0 + w1 - 1.0).abs() < 1e-12 && (0.0..=1.0).contains(&w1));
            }
            for (d, (s, ..)) in nearest_taps(input, output).into_iter().enumerate() {
                prop_assert!(s < input);
                let exact = d * input / output;
                prop_assert!(s == exact || (s + 1 == exact && (d * input) % output == 0));
            }
        }
    }
}
