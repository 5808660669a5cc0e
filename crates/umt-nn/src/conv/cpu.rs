//! CPU kernels of the convolution: im2col / col2im and the three GEMM-based passes
//! (forward, input gradient, weight gradient) over NCHW buffers.
//!
//! Threading: when the batch has at least as many samples as rayon has threads, samples are
//! split into one contiguous chunk per thread and every thread runs single-threaded GEMMs on its
//! own scratch buffer (no synchronisation; the weight gradient is accumulated per thread and
//! summed at the end). Smaller batches run sample after sample with GEMMs parallelised by the
//! `gemm` crate itself.

use gemm::Parallelism;
use rayon::prelude::*;

use super::Geometry;

/// Element types the kernels run on (`f32` for training, `f64` for gradient checks).
pub(crate) trait Element:
    Copy + Default + Send + Sync + 'static + std::ops::AddAssign + PartialEq
{
    const ONE: Self;

    /// Runs `f` on a scratch buffer of `len` elements with unspecified contents (see
    /// [`with_scratch`]).
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

/// Largest scratch buffer kept per thread between calls, in elements (64 MiB of f32); larger
/// ones are freed after use.
const SCRATCH_KEEP_ELEMS: usize = 16 << 20;

/// Runs `f` on the first `len` elements of this thread's cached buffer (grown when too short;
/// its contents are whatever an earlier call left, so `f` must overwrite what it reads). The
/// buffer is taken out of the cell during `f`, so a nested call on the same thread (a rayon
/// worker that steals another kernel's job while it waits) simply gets a fresh one. Reusing
/// the buffer saves the zero-filling and page faults of a new im2col matrix per sample.
fn with_scratch<T: Copy + Default, R>(
    cell: &'static std::thread::LocalKey<std::cell::RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let mut buf = cell.with(|c| std::mem::take(&mut *c.borrow_mut()));
    if buf.len() < len {
        buf = vec![T::default(); len];
    }
    let out = f(&mut buf[..len]);
    if buf.len() <= SCRATCH_KEEP_ELEMS {
        cell.with(|c| {
            let mut cached = c.borrow_mut();
            if cached.len() < buf.len() {
                *cached = buf;
            }
        });
    }
    out
}

thread_local! {
    static SCRATCH_F32: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static SCRATCH_F64: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Element for f32 {
    const ONE: Self = 1.0;

    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        with_scratch(&SCRATCH_F32, len, f)
    }
}

impl Element for f64 {
    const ONE: Self = 1.0;

    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
        with_scratch(&SCRATCH_F64, len, f)
    }
}

/// Row-major matrix operand: pointer, row stride, column stride.
#[derive(Clone, Copy)]
struct Mat<T> {
    ptr: *const T,
    rs: isize,
    cs: isize,
}

/// `dst (m, n)` (row-major, row stride `dst_rs`) := `[dst +] lhs (m, k) · rhs (k, n)`.
///
/// # Safety
/// Every pointer must be valid for the extents described by `m`, `n`, `k` and the strides.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<T>,
    rhs: Mat<T>,
    par: Parallelism,
) {
    // SAFETY: forwarded from the caller; `gemm` computes dst = alpha·dst + beta·lhs·rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}

/// Input row `iy` for output row `oy` and kernel row `i`, or `None` inside the padding.
#[inline]
fn src_index(
    o: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    len: usize,
) -> Option<usize> {
    let pos = (o * stride + k * dilation).checked_sub(pad)?;
    (pos < len).then_some(pos)
}

/// Range of output columns `ox` whose input column `ox·s + j·d − p` lies inside `[0, w)`.
#[inline]
fn valid_range(j: usize, g: &Geometry) -> (usize, usize) {
    let off = j * g.dw; // input column = ox·s + off − p
    let lo = if off >= g.pw {
        0
    } else {
        (g.pw - off).div_ceil(g.sw)
    };
    // largest ox with ox·s + off − p ≤ w − 1  ⇔  ox·s ≤ w − 1 + p − off
    let hi = if g.w + g.pw > off {
        ((g.w - 1 + g.pw - off) / g.sw + 1).min(g.ow)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// `x (C_in, H, W)` → `cols (C_in·kH·kW, OH·OW)`.
fn im2col<T: Element>(x: &[T], cols: &mut [T], g: &Geometry) {
    let (hw_out, hw_in) = (g.oh * g.ow, g.h * g.w);
    let rows = g.kh * g.kw * hw_out;
    for c in 0..g.c_in {
        im2col_channel(
            &x[c * hw_in..(c + 1) * hw_in],
            &mut cols[c * rows..(c + 1) * rows],
            hw_out,
            g,
        );
    }
}

/// One input channel `xc (H, W)` → its `kH·kW` rows of columns, row `r` starting at `r·ld`
/// (`ld ≥ OH·OW`; only the first `OH·OW` entries of each row are written).
fn im2col_channel<T: Element>(xc: &[T], rows: &mut [T], ld: usize, g: &Geometry) {
    for i in 0..g.kh {
        for j in 0..g.kw {
            let r = i * g.kw + j;
            let row = &mut rows[r * ld..r * ld + g.oh * g.ow];
            let (lo, hi) = valid_range(j, g);
            for oy in 0..g.oh {
                let out = &mut row[oy * g.ow..(oy + 1) * g.ow];
                let Some(iy) = src_index(oy, i, g.sh, g.dh, g.ph, g.h) else {
                    out.fill(T::default());
                    continue;
                };
                out[..lo].fill(T::default());
                out[hi..].fill(T::default());
                if lo < hi {
                    let start = iy * g.w + lo * g.sw + j * g.dw - g.pw;
                    if g.sw == 1 {
                        out[lo..hi].copy_from_slice(&xc[start..start + (hi - lo)]);
                    } else {
                        for (k, o) in out[lo..hi].iter_mut().enumerate() {
                            *o = xc[start + k * g.sw];
                        }
                    }
                }
            }
        }
    }
}

/// Scatter-adds `cols (C_in·kH·kW, OH·OW)` into `dx (C_in, H, W)` (which must start zeroed).
fn col2im<T: Element>(cols: &[T], dx: &mut [T], g: &Geometry) {
    let (hw_out, hw_in) = (g.oh * g.ow, g.h * g.w);
    let rows = g.kh * g.kw * hw_out;
    for c in 0..g.c_in {
        col2im_channel(
            &cols[c * rows..(c + 1) * rows],
            hw_out,
            &mut dx[c * hw_in..(c + 1) * hw_in],
            g,
        );
    }
}

/// Scatter-adds one channel's `kH·kW` rows (row `r` at `r·ld`) into `dxc (H, W)`.
fn col2im_channel<T: Element>(rows: &[T], ld: usize, dxc: &mut [T], g: &Geometry) {
    for i in 0..g.kh {
        for j in 0..g.kw {
            let r = i * g.kw + j;
            let row = &rows[r * ld..r * ld + g.oh * g.ow];
            let (lo, hi) = valid_range(j, g);
            if lo >= hi {
                continue;
            }
            for oy in 0..g.oh {
                let Some(iy) = src_index(oy, i, g.sh, g.dh, g.ph, g.h) else {
                    continue;
                };
                let src = &row[oy * g.ow + lo..oy * g.ow + hi];
                let start = iy * g.w + lo * g.sw + j * g.dw - g.pw;
                if g.sw == 1 {
                    for (d, &s) in dxc[start..start + (hi - lo)].iter_mut().zip(src) {
                        *d += s;
                    }
                } else {
                    for (k, &s) in src.iter().enumerate() {
                        dxc[start + k * g.sw] += s;
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Packed mode: for small output planes (the deep ResNet stages: 8×8 and smaller), per-sample
// GEMMs are tiny (N = OH·OW columns) and re-read the whole weight matrix once per sample. There
// the whole batch goes into one matrix whose columns are `(sample, pixel)` pairs, so each pass is
// one GEMM per group with N (or K) = B·OH·OW, parallelised inside `gemm`.

/// Largest output plane (OH·OW) that runs packed.
const PACK_MAX_PLANE: usize = 64;
/// Largest packed column buffer, in elements (256 MiB of f32).
const PACK_MAX_ELEMS: usize = 64 << 20;

/// Whether `g` runs in packed mode.
fn packed(g: &Geometry) -> bool {
    let hw_out = g.oh * g.ow;
    g.b > 1 && hw_out <= PACK_MAX_PLANE && g.c_in * g.kh * g.kw * g.b * hw_out <= PACK_MAX_ELEMS
}

/// Parallelism for the packed GEMMs: every rayon thread.
fn all_threads() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `x (B, C, P)` → `(C, B·P)`, columns `(b, p)`.
fn pack<T: Element>(x: &[T], b: usize, c: usize, p: usize) -> Vec<T> {
    let mut out = vec![T::default(); x.len()];
    pack_into(x, b, c, p, &mut out);
    out
}

/// [`pack`] into `out` (`B·C·P` elements, all overwritten).
fn pack_into<T: Element>(x: &[T], b: usize, c: usize, p: usize, out: &mut [T]) {
    out.par_chunks_mut(b * p).enumerate().for_each(|(ci, row)| {
        for (bi, seg) in row.chunks_mut(p).enumerate() {
            seg.copy_from_slice(&x[(bi * c + ci) * p..][..p]);
        }
    });
}

/// `(C, B·P)` → `x (B, C, P)` (the inverse of [`pack`]).
fn unpack<T: Element>(packed: &[T], b: usize, c: usize, p: usize) -> Vec<T> {
    let mut out = vec![T::default(); packed.len()];
    out.par_chunks_mut(c * p)
        .enumerate()
        .for_each(|(bi, sample)| {
            for (ci, seg) in sample.chunks_mut(p).enumerate() {
                seg.copy_from_slice(&packed[ci * b * p + bi * p..][..p]);
            }
        });
    out
}

/// Runs `f` on the packed columns of the whole batch: `x (B, C_in, H, W)` →
/// `(C_in·kH·kW, B·OH·OW)` (for 1×1 stride-1 convolutions simply `x` packed), built in this
/// thread's scratch buffer.
fn with_packed_cols<T: Element, R>(x: &[T], g: &Geometry, f: impl FnOnce(&[T]) -> R) -> R {
    let (hw_out, hw_in) = (g.oh * g.ow, g.h * g.w);
    T::with_scratch(g.c_in * g.kh * g.kw * g.b * hw_out, |cols| {
        if g.is_pointwise() {
            pack_into(x, g.b, g.c_in, hw_in, cols);
        } else {
            packed_cols_into(x, g, cols);
        }
        f(cols)
    })
}

/// The packed im2col of [`with_packed_cols`] into `cols` (all elements overwritten).
fn packed_cols_into<T: Element>(x: &[T], g: &Geometry, cols: &mut [T]) {
    let (hw_out, hw_in) = (g.oh * g.ow, g.h * g.w);
    let ld = g.b * hw_out;
    let per_channel = g.kh * g.kw * ld;
    cols.par_chunks_mut(per_channel)
        .enumerate()
        .for_each(|(c, rows)| {
            for b in 0..g.b {
                let xc = &x[(b * g.c_in + c) * hw_in..][..hw_in];
                im2col_channel(xc, &mut rows[b * hw_out..], ld, g);
            }
        });
}

fn forward_packed<T: Element>(x: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let hw_out = g.oh * g.ow;
    let (kg, cog, n) = (g.k_group(), g.c_out / g.groups, g.b * hw_out);
    let mut y = vec![T::default(); g.c_out * n]; // (C_out, B·OH·OW)
    with_packed_cols(x, g, |cols| {
        for gi in 0..g.groups {
            // SAFETY: (cog, n) ⊂ y, (cog, kg) ⊂ w, (kg, n) ⊂ cols.
            unsafe {
                matmul(
                    cog,
                    n,
                    kg,
                    y[gi * cog * n..].as_mut_ptr(),
                    n,
                    false,
                    Mat {
                        ptr: w[gi * cog * kg..].as_ptr(),
                        rs: kg as isize,
                        cs: 1,
                    },
                    Mat {
                        ptr: cols[gi * kg * n..].as_ptr(),
                        rs: n as isize,
                        cs: 1,
                    },
                    all_threads(),
                )
            }
        }
    });
    unpack(&y, g.b, g.c_out, hw_out)
}

fn input_grad_packed<T: Element>(dy: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let (hw_out, hw_in) = (g.oh * g.ow, g.h * g.w);
    let (kg, cog, n) = (g.k_group(), g.c_out / g.groups, g.b * hw_out);
    let dyp = pack(dy, g.b, g.c_out, hw_out); // (C_out, B·OH·OW)
                                              // dcols (C_in·kH·kW, B·OH·OW): every element written by the GEMMs.
    T::with_scratch(g.groups * kg * n, |dcols| {
        for gi in 0..g.groups {
            // dcols_g (kg, n) = w_gᵀ (kg, cog) · dy_g (cog, n).
            // SAFETY: all three operands lie inside their buffers.
            unsafe {
                matmul(
                    kg,
                    n,
                    cog,
                    dcols[gi * kg * n..].as_mut_ptr(),
                    n,
                    false,
                    Mat {
                        ptr: w[gi * cog * kg..].as_ptr(),
                        rs: 1,
                        cs: kg as isize,
                    },
                    Mat {
                        ptr: dyp[gi * cog * n..].as_ptr(),
                        rs: n as isize,
                        cs: 1,
                    },
                    all_threads(),
                )
            }
        }
        if g.is_pointwise() {
            return unpack(dcols, g.b, g.c_in, hw_in);
        }
        let mut dx = vec![T::default(); g.b * g.c_in * hw_in];
        let per_channel = g.kh * g.kw * n;
        let dcols = &*dcols;
        dx.par_chunks_mut(hw_in)
            .enumerate()
            .for_each(|(plane, dxc)| {
                let (b, c) = (plane / g.c_in, plane % g.c_in);
                col2im_channel(&dcols[c * per_channel + b * hw_out..], n, dxc, g);
            });
        dx
    })
}

fn weight_grad_packed<T: Element>(x: &[T], dy: &[T], g: &Geometry) -> Vec<T> {
    let hw_out = g.oh * g.ow;
    let (kg, cog, n) = (g.k_group(), g.c_out / g.groups, g.b * hw_out);
    let dyp = pack(dy, g.b, g.c_out, hw_out); // (C_out, B·OH·OW)
    let mut dw = vec![T::default(); g.c_out * kg];
    // cols: (C_in·kH·kW, B·OH·OW)
    with_packed_cols(x, g, |cols| {
        for gi in 0..g.groups {
            // dw_g (cog, kg) = dy_g (cog, n) · cols_gᵀ (n, kg).
            // SAFETY: all three operands lie inside their buffers.
            unsafe {
                matmul(
                    cog,
                    kg,
                    n,
                    dw[gi * cog * kg..].as_mut_ptr(),
                    kg,
                    false,
                    Mat {
                        ptr: dyp[gi * cog * n..].as_ptr(),
                        rs: n as isize,
                        cs: 1,
                    },
                    Mat {
                        ptr: cols[gi * kg * n..].as_ptr(),
                        rs: 1,
                        cs: n as isize,
                    },
                    all_threads(),
                )
            }
        }
    });
    dw
}

/// How the batch is spread over threads.
struct Plan {
    /// Samples per chunk (one chunk per thread), or the whole batch when run serially.
    chunk: usize,
    /// Parallelism handed to each GEMM.
    gemm: Parallelism,
}

fn plan(batch: usize) -> Plan {
    let threads = rayon::current_num_threads().max(1);
    if threads > 1 && batch >= threads {
        Plan {
            chunk: batch.div_ceil(threads),
            gemm: Parallelism::None,
        }
    } else {
        Plan {
            chunk: batch.max(1),
            gemm: if threads > 1 {
                Parallelism::Rayon(threads)
            } else {
                Parallelism::None
            },
        }
    }
}

/// Forward: `x (B, C_in, H, W)`, `w (C_out, C_in/G, kH, kW)` → `y (B, C_out, OH, OW)`.
pub(crate) fn forward<T: Element>(x: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    if packed(g) {
        forward_packed(x, w, g)
    } else {
        forward_per_sample(x, w, g)
    }
}

fn forward_per_sample<T: Element>(x: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let (hw_out, hw_in) = (g.oh * g.ow, g.h * g.w);
    let (kg, cog) = (g.k_group(), g.c_out / g.groups);
    let mut y = vec![T::default(); g.b * g.c_out * hw_out];
    if y.is_empty() {
        return y;
    }
    let plan = plan(g.b);
    let direct = g.is_pointwise();
    y.par_chunks_mut(plan.chunk * g.c_out * hw_out)
        .enumerate()
        .for_each(|(ci, ychunk)| {
            let scratch = if direct { 0 } else { g.groups * kg * hw_out };
            T::with_scratch(scratch, |cols| {
                for (bi, yb) in ychunk.chunks_mut(g.c_out * hw_out).enumerate() {
                    let b = ci * plan.chunk + bi;
                    let xb = &x[b * g.c_in * hw_in..(b + 1) * g.c_in * hw_in];
                    let src: &[T] = if direct {
                        xb
                    } else {
                        im2col(xb, cols, g);
                        cols
                    };
                    for gi in 0..g.groups {
                        // SAFETY: (cog, hw_out) ⊂ yb, (cog, kg) ⊂ w, (kg, hw_out) ⊂ src.
                        unsafe {
                            matmul(
                                cog,
                                hw_out,
                                kg,
                                yb[gi * cog * hw_out..].as_mut_ptr(),
                                hw_out,
                                false,
                                Mat {
                                    ptr: w[gi * cog * kg..].as_ptr(),
                                    rs: kg as isize,
                                    cs: 1,
                                },
                                Mat {
                                    ptr: src[gi * kg * hw_out..].as_ptr(),
                                    rs: hw_out as isize,
                                    cs: 1,
                                },
                                plan.gemm,
                            )
                        }
                    }
                }
            });
        });
    y
}

/// Input gradient: `dy (B, C_out, OH, OW)`, `w (C_out, C_in/G, kH, kW)` → `dx (B, C_in, H, W)`.
pub(crate) fn input_grad<T: Element>(dy: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    if packed(g) {
        input_grad_packed(dy, w, g)
    } else {
        input_grad_per_sample(dy, w, g)
    }
}

fn input_grad_per_sample<T: Element>(dy: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let (hw_out, hw_in) = (g.oh * g.ow, g.h * g.w);
    let (kg, cog) = (g.k_group(), g.c_out / g.groups);
    let mut dx = vec![T::default(); g.b * g.c_in * hw_in];
    if dx.is_empty() {
        return dx;
    }
    let plan = plan(g.b);
    let direct = g.is_pointwise();
    dx.par_chunks_mut(plan.chunk * g.c_in * hw_in)
        .enumerate()
        .for_each(|(ci, dxchunk)| {
            let scratch = if direct { 0 } else { g.groups * kg * hw_out };
            T::with_scratch(scratch, |cols| {
                for (bi, dxb) in dxchunk.chunks_mut(g.c_in * hw_in).enumerate() {
                    let b = ci * plan.chunk + bi;
                    let dyb = &dy[b * g.c_out * hw_out..(b + 1) * g.c_out * hw_out];
                    let dst: &mut [T] = if direct { &mut *dxb } else { &mut *cols };
                    for gi in 0..g.groups {
                        // dcols_g (kg, hw_out) = w_gᵀ (kg, cog) · dy_g (cog, hw_out).
                        // SAFETY: all three operands lie inside their buffers.
                        unsafe {
                            matmul(
                                kg,
                                hw_out,
                                cog,
                                dst[gi * kg * hw_out..].as_mut_ptr(),
                                hw_out,
                                false,
                                Mat {
                                    ptr: w[gi * cog * kg..].as_ptr(),
                                    rs: 1,
                                    cs: kg as isize,
                                },
                                Mat {
                                    ptr: dyb[gi * cog * hw_out..].as_ptr(),
                                    rs: hw_out as isize,
                                    cs: 1,
                                },
                                plan.gemm,
                            )
                        }
                    }
                    if !direct {
                        col2im(cols, dxb, g);
                    }
                }
            });
        });
    dx
}

/// Weight gradient: `x (B, C_in, H, W)`, `dy (B, C_out, OH, OW)` → `dw (C_out, C_in/G, kH, kW)`,
/// summed over the batch one sample at a time (scratch: one sample's columns per thread).
pub(crate) fn weight_grad<T: Element>(x: &[T], dy: &[T], g: &Geometry) -> Vec<T> {
    if packed(g) {
        weight_grad_packed(x, dy, g)
    } else {
        weight_grad_per_sample(x, dy, g)
    }
}

fn weight_grad_per_sample<T: Element>(x: &[T], dy: &[T], g: &Geometry) -> Vec<T> {
    let (hw_out, hw_in) = (g.oh * g.ow, g.h * g.w);
    let (kg, cog) = (g.k_group(), g.c_out / g.groups);
    let len = g.c_out * kg;
    if len == 0 || g.b == 0 {
        return vec![T::default(); len];
    }
    let plan = plan(g.b);
    let direct = g.is_pointwise();
    let chunks: Vec<usize> = (0..g.b.div_ceil(plan.chunk)).collect();
    let partials: Vec<Vec<T>> = chunks
        .par_iter()
        .map(|&ci| {
            let mut dw = vec![T::default(); len];
            let scratch = if direct { 0 } else { g.groups * kg * hw_out };
            T::with_scratch(scratch, |cols| {
                let samples = ci * plan.chunk..((ci + 1) * plan.chunk).min(g.b);
                for (n, b) in samples.enumerate() {
                    let xb = &x[b * g.c_in * hw_in..(b + 1) * g.c_in * hw_in];
                    let dyb = &dy[b * g.c_out * hw_out..(b + 1) * g.c_out * hw_out];
                    let src: &[T] = if direct {
                        xb
                    } else {
                        im2col(xb, cols, g);
                        cols
                    };
                    for gi in 0..g.groups {
                        // dw_g (cog, kg) += dy_g (cog, hw_out) · cols_gᵀ (hw_out, kg).
                        // SAFETY: all three operands lie inside their buffers.
                        unsafe {
                            matmul(
                                cog,
                                kg,
                                hw_out,
                                dw[gi * cog * kg..].as_mut_ptr(),
                                kg,
                                n > 0,
                                Mat {
                                    ptr: dyb[gi * cog * hw_out..].as_ptr(),
                                    rs: hw_out as isize,
                                    cs: 1,
                                },
                                Mat {
                                    ptr: src[gi * kg * hw_out..].as_ptr(),
                                    rs: 1,
                                    cs: hw_out as isize,
                                },
                                plan.gemm,
                            )
                        }
                    }
                }
            });
            dw
        })
        .collect();
    let mut iter = partials.into_iter();
    let mut total = iter.next().unwrap_or_else(|| vec![T::default(); len]);
    for p in iter {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(h: usize, w: usize, k: usize, s: usize, p: usize, d: usize) -> Geometry {
        Geometry::new((1, 1, h, w), (1, 1, k, k), (p, p), (s, s), (d, d), 1)
            .expect("valid geometry")
    }

    /// col2im is the adjoint of im2col: ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        for &(h, w, k, s, p, d) in &[(5, 7, 3, 1, 1, 1), (6, 5, 3, 2, 2, 2), (4, 9, 1, 3, 0, 1)] {
            let g = geom(h, w, k, s, p, d);
            let x: Vec<f64> = (0..h * w).map(|i| (i as f64 * 0.37).sin()).collect();
            let c: Vec<f64> = (0..k * k * g.oh * g.ow)
                .map(|i| (i as f64 * 0.11).cos())
                .collect();
            let mut cols = vec![0.0; c.len()];
            im2col(&x, &mut cols, &g);
            let mut dx = vec![0.0; x.len()];
            col2im(&c, &mut dx, &g);
            let lhs: f64 = cols.iter().zip(&c).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-9, "{lhs} vs {rhs}");
        }
    }

    /// The packed (whole-batch) passes equal the per-sample ones.
    #[test]
    fn packed_mode_matches_per_sample() {
        let cases = [
            ((3, 4, 5, 4), (6, 4, 3, 3), (1, 1), (1, 1), (1, 1), 1),
            ((2, 4, 7, 6), (4, 2, 3, 3), (1, 2), (2, 1), (1, 2), 2),
            ((4, 3, 4, 4), (5, 3, 1, 1), (0, 0), (1, 1), (1, 1), 1),
            ((2, 6, 3, 5), (6, 1, 3, 3), (1, 1), (2, 2), (1, 1), 6),
            ((5, 2, 2, 2), (3, 2, 3, 3), (1, 1), (1, 1), (1, 1), 1),
        ];
        for (i, &(xd, wd, p, s, d, groups)) in cases.iter().enumerate() {
            let g = Geometry::new(xd, wd, p, s, d, groups).expect("valid geometry");
            assert!(packed(&g), "case {i} should run packed");
            let val =
                |n: usize, k: f64| -> Vec<f64> { (0..n).map(|j| (j as f64 * k).sin()).collect() };
            let x = val(xd.0 * xd.1 * xd.2 * xd.3, 0.37);
            let w = val(wd.0 * wd.1 * wd.2 * wd.3, 0.53);
            let dy = val(g.b * g.c_out * g.oh * g.ow, 0.29);
            let close = |a: Vec<f64>, b: Vec<f64>, what: &str| {
                assert_eq!(a.len(), b.len());
                let err = a
                    .iter()
                    .zip(&b)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0.0, f64::max);
                assert!(err < 1e-12, "case {i} {what}: {err}");
            };
            close(
                forward_packed(&x, &w, &g),
                forward_per_sample(&x, &w, &g),
                "forward",
            );
            close(
                input_grad_packed(&dy, &w, &g),
                input_grad_per_sample(&dy, &w, &g),
                "input grad",
            );
            close(
                weight_grad_packed(&x, &dy, &g),
                weight_grad_per_sample(&x, &dy, &g),
                "weight grad",
            );
        }
    }
}
