//! CPU kernels of the convolution: the three GEMM-based passes (forward, input gradient, weight
//! gradient) over NCHW buffers, in two families:
//!
//! - **im2col**: the sample's column matrix `(C_in·kH·kW, OH·OW)` is materialised and one GEMM
//!   per group does the pass (col2im scatters the input gradient back); for output planes of
//!   8×8 and smaller the whole batch goes into one "packed" GEMM. Every geometry can run it.
//! - **shifted GEMM** (implicit im2col, stride-1 convolutions): the sample is zero-padded once
//!   to `(C, H + 2pH, W + 2pW)` and each kernel tap `(i, j)` is ONE GEMM whose right operand is
//!   the padded sample viewed at offset `i·dH·Wp + j·dW` (row stride `Hp·Wp`, column stride 1);
//!   outputs live on the padded-width grid `(OH, Wp)` whose last `Wp − OW` columns are junk
//!   and are dropped when the tile is copied out. The input gradient is the same kernel on the
//!   gradient padded by `(k − 1)·d − p` with the flipped, transposed weights; the weight gradient
//!   is one GEMM per tap against the gradient laid on the same grid with its junk columns
//!   zeroed. Columns are processed in tiles so the accumulator stays in cache across the taps.
//!
//! [`uses_shifted`] picks the family per geometry and pass (measured on a 2-core AVX-512 Xeon:
//! see `docs/performance.md`); the environment variable `UMT_CONV_CPU_ALGO=im2col|shifted`
//! (read once) forces one family wherever it applies, for benchmarks.
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

/// A `len`-element vector that `fill` initialises completely through the pointer it receives
/// (GEMMs with `accumulate = false`, which never read their destination), without the zero
/// fill of `vec![0; len]` (the packed weight gradient zeroed 9 MiB per call for nothing).
///
/// # Safety
/// `fill` must write every one of the `len` elements (and nothing past them).
unsafe fn written_by<T: Element>(len: usize, fill: impl FnOnce(*mut T)) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    fill(v.as_mut_ptr());
    // SAFETY: `fill` initialised all `len` elements (the caller's contract); capacity ≥ len.
    unsafe { v.set_len(len) };
    v
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

/// Width of one column phase of a plane `W` wide at column stride `sw`: `⌈W / sw⌉`.
fn phase_width(g: &Geometry) -> usize {
    g.w.div_ceil(g.sw)
}

/// A phase buffer for one channel plane when the column stride is > 1 (empty otherwise: the
/// plane itself is the source).
fn phase_buffer<T: Element>(g: &Geometry) -> Vec<T> {
    if g.sw > 1 {
        vec![T::default(); g.sw * g.h * phase_width(g)]
    } else {
        Vec::new()
    }
}

/// Index of input pixel `(iy, ix)` in the phase layout `(sW, H, ⌈W/sW⌉)` of [`split_phases`]
/// (with a column stride of 1 simply `iy·W + ix`).
#[inline]
fn phase_index(g: &Geometry, iy: usize, ix: usize) -> usize {
    ((ix % g.sw) * g.h + iy) * phase_width(g) + ix / g.sw
}

/// Splits one channel plane `xc (H, W)` into its `sw` column phases, `ph (sw, H, ⌈W/sw⌉)`
/// with `ph[q, iy, m] = xc[iy, q + sw·m]` (a phase's entries past the plane's right edge are
/// left unspecified; they are never read). In this layout a strided row of the im2col matrix
/// (input columns `ix0, ix0 + sw, …`) is one contiguous slice of phase `ix0 mod sw`.
fn split_phases<T: Element>(xc: &[T], g: &Geometry, ph: &mut [T]) {
    let wp = phase_width(g);
    for (iy, row) in xc.chunks_exact(g.w).enumerate() {
        for q in 0..g.sw.min(g.w) {
            let dst = &mut ph[(q * g.h + iy) * wp..][..wp];
            for (d, &v) in dst.iter_mut().zip(row[q..].iter().step_by(g.sw)) {
                *d = v;
            }
        }
    }
}

/// The inverse direction of [`split_phases`]: `dxc[iy, q + sw·m] += ph[q, iy, m]`.
fn merge_phases_add<T: Element>(ph: &[T], g: &Geometry, dxc: &mut [T]) {
    let wp = phase_width(g);
    for (iy, row) in dxc.chunks_exact_mut(g.w).enumerate() {
        for q in 0..g.sw.min(g.w) {
            let src = &ph[(q * g.h + iy) * wp..][..wp];
            for (d, &v) in row[q..].iter_mut().step_by(g.sw).zip(src) {
                *d += v;
            }
        }
    }
}

/// `x (C_in, H, W)` → `cols (C_in·kH·kW, OH·OW)`. With a column stride > 1 each channel is
/// first split into its column phases ([`split_phases`]), so every row copy is contiguous.
fn im2col<T: Element>(x: &[T], cols: &mut [T], g: &Geometry) {
    let (hw_out, hw_in) = (g.oh * g.ow, g.h * g.w);
    let rows = g.kh * g.kw * hw_out;
    let mut ph = phase_buffer(g);
    for c in 0..g.c_in {
        let xc = &x[c * hw_in..(c + 1) * hw_in];
        let src = if g.sw > 1 {
            split_phases(xc, g, &mut ph);
            &ph[..]
        } else {
            xc
        };
        im2col_channel(src, &mut cols[c * rows..(c + 1) * rows], hw_out, g);
    }
}

/// One input channel → its `kH·kW` rows of columns, row `r` starting at `r·ld` (`ld ≥ OH·OW`;
/// only the first `OH·OW` entries of each row are written). `src` is the plane `(H, W)` when
/// the column stride is 1, else its phases `(sW, H, ⌈W/sW⌉)` ([`split_phases`]).
fn im2col_channel<T: Element>(src: &[T], rows: &mut [T], ld: usize, g: &Geometry) {
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
                    let start = phase_index(g, iy, lo * g.sw + j * g.dw - g.pw);
                    out[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
                }
            }
        }
    }
}

/// Scatter-adds `cols (C_in·kH·kW, OH·OW)` into `dx (C_in, H, W)` (which must start zeroed);
/// with a column stride > 1 through a zeroed phase buffer ([`merge_phases_add`]).
fn col2im<T: Element>(cols: &[T], dx: &mut [T], g: &Geometry) {
    let (hw_out, hw_in) = (g.oh * g.ow, g.h * g.w);
    let rows = g.kh * g.kw * hw_out;
    let mut ph = phase_buffer(g);
    for c in 0..g.c_in {
        let cc = &cols[c * rows..(c + 1) * rows];
        let dxc = &mut dx[c * hw_in..(c + 1) * hw_in];
        if g.sw > 1 {
            ph.fill(T::default());
            col2im_channel(cc, hw_out, &mut ph, g);
            merge_phases_add(&ph, g, dxc);
        } else {
            col2im_channel(cc, hw_out, dxc, g);
        }
    }
}

/// Scatter-adds one channel's `kH·kW` rows (row `r` at `r·ld`) into `dst`: the plane `(H, W)`
/// when the column stride is 1, else its phases `(sW, H, ⌈W/sW⌉)`.
fn col2im_channel<T: Element>(rows: &[T], ld: usize, dst: &mut [T], g: &Geometry) {
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
                let start = phase_index(g, iy, lo * g.sw + j * g.dw - g.pw);
                for (d, &s) in dst[start..start + (hi - lo)].iter_mut().zip(src) {
                    *d += s;
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

/// The input position read by each (kernel tap, output pixel) of a small plane, for the packed
/// im2col / col2im: `idx[t·OH·OW + p] = iy·W + ix`, or [`TapMap::PAD`] inside the padding.
/// Packed planes have at most [`PACK_MAX_PLANE`] pixels, so rows are a few elements long and the
/// row-wise [`im2col_channel`] spent most of its time on per-row bounds arithmetic (6 % of a
/// ResNet18 step at 3×64×64); this table is built once per call.
struct TapMap {
    idx: Vec<u32>,
}

impl TapMap {
    const PAD: u32 = u32::MAX;

    fn new(g: &Geometry) -> Self {
        let mut idx = Vec::with_capacity(g.kh * g.kw * g.oh * g.ow);
        for i in 0..g.kh {
            for j in 0..g.kw {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let iy = src_index(oy, i, g.sh, g.dh, g.ph, g.h);
                        let ix = src_index(ox, j, g.sw, g.dw, g.pw, g.w);
                        idx.push(match (iy, ix) {
                            (Some(iy), Some(ix)) => (iy * g.w + ix) as u32,
                            _ => Self::PAD,
                        });
                    }
                }
            }
        }
        Self { idx }
    }

    /// Tap `t`'s row of one channel plane `xc (H, W)` into `out (OH·OW)`.
    #[inline]
    fn gather<T: Element>(&self, t: usize, xc: &[T], out: &mut [T]) {
        let map = &self.idx[t * out.len()..][..out.len()];
        for (o, &k) in out.iter_mut().zip(map) {
            *o = if k == Self::PAD {
                T::default()
            } else {
                xc[k as usize]
            };
        }
    }

    /// Scatter-adds tap `t`'s row `src (OH·OW)` into one channel plane `dxc (H, W)`.
    #[inline]
    fn scatter_add<T: Element>(&self, t: usize, src: &[T], dxc: &mut [T]) {
        let map = &self.idx[t * src.len()..][..src.len()];
        for (&v, &k) in src.iter().zip(map) {
            if k != Self::PAD {
                dxc[k as usize] += v;
            }
        }
    }
}

/// The packed im2col of [`with_packed_cols`] into `cols` (all elements overwritten).
fn packed_cols_into<T: Element>(x: &[T], g: &Geometry, cols: &mut [T]) {
    let (hw_out, hw_in) = (g.oh * g.ow, g.h * g.w);
    let ld = g.b * hw_out;
    let taps = g.kh * g.kw;
    let map = TapMap::new(g);
    cols.par_chunks_mut(taps * ld)
        .enumerate()
        .for_each(|(c, rows)| {
            for (t, row) in rows.chunks_exact_mut(ld).enumerate() {
                for (b, out) in row.chunks_exact_mut(hw_out).enumerate() {
                    map.gather(t, &x[(b * g.c_in + c) * hw_in..][..hw_in], out);
                }
            }
        });
}

fn forward_packed<T: Element>(x: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let hw_out = g.oh * g.ow;
    let (kg, cog, n) = (g.k_group(), g.c_out / g.groups, g.b * hw_out);
    let fill = |y: *mut T| {
        with_packed_cols(x, g, |cols| {
            for gi in 0..g.groups {
                // SAFETY: (cog, n) ⊂ y, (cog, kg) ⊂ w, (kg, n) ⊂ cols.
                unsafe {
                    matmul(
                        cog,
                        n,
                        kg,
                        y.add(gi * cog * n),
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
        })
    };
    // SAFETY: the groups' GEMMs (accumulate = false, kg ≥ 1) write all C_out·n elements.
    let y = unsafe { written_by(g.c_out * n, fill) }; // (C_out, B·OH·OW)
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
        let taps = g.kh * g.kw;
        let map = TapMap::new(g);
        let dcols = &*dcols;
        dx.par_chunks_mut(hw_in)
            .enumerate()
            .for_each(|(plane, dxc)| {
                let (b, c) = (plane / g.c_in, plane % g.c_in);
                for t in 0..taps {
                    map.scatter_add(t, &dcols[(c * taps + t) * n + b * hw_out..][..hw_out], dxc);
                }
            });
        dx
    })
}

fn weight_grad_packed<T: Element>(x: &[T], dy: &[T], g: &Geometry) -> Vec<T> {
    let hw_out = g.oh * g.ow;
    let (kg, cog, n) = (g.k_group(), g.c_out / g.groups, g.b * hw_out);
    if n == 0 {
        return vec![T::default(); g.c_out * kg]; // an empty output plane: no gradient
    }
    let dyp = pack(dy, g.b, g.c_out, hw_out); // (C_out, B·OH·OW)
    let fill = |dw: *mut T| {
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
                        dw.add(gi * cog * kg),
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
        })
    };
    // SAFETY: the groups' GEMMs (accumulate = false, n = B·OH·OW ≥ 1) write all C_out·kg
    // elements.
    unsafe { written_by(g.c_out * kg, fill) }
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

// ------------------------------------------------------------------------------------------
// Shifted GEMM (implicit im2col) for stride-1 convolutions; see the module docs.

/// A pass of the convolution, for the per-pass choice of kernel family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    Forward,
    InputGrad,
    WeightGrad,
}

/// A requested kernel family (`Auto`: the measured heuristic of [`uses_shifted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algo {
    Auto,
    Im2col,
    Shifted,
}

#[cfg(test)]
thread_local! {
    /// Unit tests force a family on their own thread (the kernels are chosen on the thread that
    /// calls the op, before any rayon work starts).
    pub(crate) static TEST_ALGO: std::cell::Cell<Option<Algo>> = const { std::cell::Cell::new(None) };
}

/// The family requested through `UMT_CONV_CPU_ALGO` (read once), or by a unit test.
fn requested() -> Algo {
    #[cfg(test)]
    if let Some(a) = TEST_ALGO.with(std::cell::Cell::get) {
        return a;
    }
    static ENV: std::sync::OnceLock<Algo> = std::sync::OnceLock::new();
    *ENV.get_or_init(|| match std::env::var("UMT_CONV_CPU_ALGO").as_deref() {
        Ok("im2col") => Algo::Im2col,
        Ok("shifted") => Algo::Shifted,
        Ok("" | "auto") | Err(_) => Algo::Auto,
        Ok(other) => {
            eprintln!(
                "warning: UMT_CONV_CPU_ALGO={other:?} is not one of auto, im2col, shifted: \
                 choosing automatically"
            );
            Algo::Auto
        }
    })
}

/// Whether the shifted kernels can run `g`: stride 1, a non-empty input plane, and (for the
/// input gradient, which pads the output gradient by `(k − 1)·d − p`) padding no larger than
/// the dilated kernel's reach.
fn shifted_applies(g: &Geometry, pass: Pass) -> bool {
    let reach = g.ph <= (g.kh - 1) * g.dh && g.pw <= (g.kw - 1) * g.dw;
    g.sh == 1 && g.sw == 1 && g.h > 0 && g.w > 0 && (pass != Pass::InputGrad || reach)
}

/// Smallest channels per group (the inner dimension of the per-tap GEMMs) run shifted
/// automatically (8 is the smallest measured, where shifted was already 1.5–2.7× faster).
const SHIFT_MIN_CHANNELS: usize = 8;

/// Automatic choice: shifted while one tap's weights (`C_out/G × C_in/G` elements, re-read
/// for every sample) are at most this many times the sample's grid columns `(OH − 1)·Wp + OW`.
/// Measured (single thread, f32, 3×3 p1, all three passes): 64 channels at 16×16 and 4×4,
/// 128 at 8×8 and 256 at 33×20 run 10–25% faster shifted (ratios 14, 186, 210, 96); 256 at
/// 4×4 and 512 at 17×10 run 30–70% slower (ratios 2980, 1300).
const SHIFT_MAX_WEIGHTS_PER_COLUMN: usize = 256;

/// Whether pass `pass` of `g` runs the shifted kernels.
pub(crate) fn uses_shifted(g: &Geometry, pass: Pass) -> bool {
    if !shifted_applies(g, pass) {
        return false;
    }
    match requested() {
        Algo::Im2col => false,
        Algo::Shifted => true,
        Algo::Auto => {
            let (cig, cog) = (g.c_in / g.groups, g.c_out / g.groups);
            let cols = (g.oh - 1) * (g.w + 2 * g.pw) + g.ow;
            !g.is_pointwise()
                && cig.min(cog) >= SHIFT_MIN_CHANNELS
                && cig * cog <= SHIFT_MAX_WEIGHTS_PER_COLUMN * cols
        }
    }
}

/// Bytes of a column tile's accumulator (kept in the per-core L2 cache across the taps).
const SHIFT_TILE_BYTES: usize = 256 << 10;

/// Fewest columns per tile (narrower GEMMs lose more to packing the weights than the cache
/// saves).
const SHIFT_MIN_TILE_COLS: usize = 128;

/// Columns per tile for `rows` accumulator rows of `T`, at most `n`.
fn tile_cols<T>(rows: usize, n: usize) -> usize {
    let per_row = SHIFT_TILE_BYTES / std::mem::size_of::<T>() / rows.max(1);
    per_row.max(SHIFT_MIN_TILE_COLS).min(n).max(1)
}

/// Copies `src (C, H, W)` into the interior of `dst (C, H + 2pt, W + 2pl)` and zeroes the
/// border (every element of `dst` is written).
fn pad_into<T: Element>(
    src: &[T],
    (h, w): (usize, usize),
    (pt, pl): (usize, usize),
    dst: &mut [T],
) {
    let (hs, ws) = (h + 2 * pt, w + 2 * pl);
    for (sc, dc) in src.chunks_exact(h * w).zip(dst.chunks_exact_mut(hs * ws)) {
        dc[..pt * ws].fill(T::default());
        dc[(pt + h) * ws..].fill(T::default());
        for (r, srow) in sc.chunks_exact(w).enumerate() {
            let drow = &mut dc[(pt + r) * ws..][..ws];
            drow[..pl].fill(T::default());
            drow[pl..pl + w].copy_from_slice(srow);
            drow[pl + w..].fill(T::default());
        }
    }
}

/// The weights rearranged once per call into one contiguous row-major matrix per tap and
/// group, `(kH·kW, G, rows, cols)`: the left operands of the shifted GEMMs. (Read in place
/// from `(C_out, C_in/G, kH, kW)`, every tap's GEMM would pack the whole weight tensor at a
/// stride of `kH·kW` elements.)
struct TapWeights<T> {
    data: Vec<T>,
    rows: usize,
    cols: usize,
    groups: usize,
}

impl<T: Element> TapWeights<T> {
    /// Forward: tap `t`, group `gi` is `W[gi·cog + r, c, t]` (`rows = C_out/G`,
    /// `cols = C_in/G`); transposed and flipped (input gradient): `W[gi·cog + c, r, kH·kW − 1 −
    /// t]` (`rows = C_in/G`, `cols = C_out/G`).
    fn new(w: &[T], g: &Geometry, transposed_flipped: bool) -> Self {
        let (taps, cig, cog) = (g.kh * g.kw, g.c_in / g.groups, g.c_out / g.groups);
        let (rows, cols) = if transposed_flipped {
            (cig, cog)
        } else {
            (cog, cig)
        };
        // Written in order (each destination element once), read at a stride of kH·kW.
        let mut data = Vec::with_capacity(w.len());
        for tap in 0..taps {
            let t = if transposed_flipped {
                taps - 1 - tap
            } else {
                tap
            };
            for gi in 0..g.groups {
                for r in 0..rows {
                    data.extend((0..cols).map(|c| {
                        let (o, ci) = if transposed_flipped { (c, r) } else { (r, c) };
                        w[((gi * cog + o) * cig + ci) * taps + t]
                    }));
                }
            }
        }
        Self {
            data,
            rows,
            cols,
            groups: g.groups,
        }
    }

    fn mat(&self, tap: usize, gi: usize) -> Mat<T> {
        Mat {
            ptr: self.data[(tap * self.groups + gi) * self.rows * self.cols..].as_ptr(),
            rs: self.cols as isize,
            cs: 1,
        }
    }
}

/// A stride-1 correlation of one zero-padded sample `src (C_src, Hs, Ws)` with a `kH × kW`
/// kernel (dilation `(dH, dW)`, `groups` groups): `dst (C_dst, OH, OW)` with
/// `OH = Hs − (kH − 1)·dH`, `OW = Ws − (kW − 1)·dW`.
struct Shift {
    c_src: usize,
    c_dst: usize,
    hs: usize,
    ws: usize,
    kh: usize,
    kw: usize,
    dh: usize,
    dw: usize,
    groups: usize,
}

impl Shift {
    /// The forward (and weight-gradient) correlation: the input padded by `p`, `C_in → C_out`.
    fn over_input(g: &Geometry) -> Self {
        Self {
            c_src: g.c_in,
            c_dst: g.c_out,
            hs: g.h + 2 * g.ph,
            ws: g.w + 2 * g.pw,
            kh: g.kh,
            kw: g.kw,
            dh: g.dh,
            dw: g.dw,
            groups: g.groups,
        }
    }

    /// The input-gradient correlation: the output gradient padded by `(k − 1)·d − p` (which
    /// [`shifted_applies`] keeps non-negative), `C_out → C_in`, output `(H, W)`.
    fn over_output_grad(g: &Geometry) -> Self {
        let (qh, qw) = ((g.kh - 1) * g.dh - g.ph, (g.kw - 1) * g.dw - g.pw);
        Self {
            c_src: g.c_out,
            c_dst: g.c_in,
            hs: g.oh + 2 * qh,
            ws: g.ow + 2 * qw,
            ..Self::over_input(g)
        }
    }

    fn out(&self) -> (usize, usize) {
        (
            self.hs - (self.kh - 1) * self.dh,
            self.ws - (self.kw - 1) * self.dw,
        )
    }

    /// Grid columns computed: `(OH − 1)·Ws + OW` (the junk tail of the last row is skipped, so
    /// every shifted read stays inside `src`).
    fn cols(&self) -> usize {
        let (oh, ow) = self.out();
        (oh - 1) * self.ws + ow
    }

    /// The kernel taps in row-major order: `(t, offset)`, tap `t = i·kW + j` and its offset
    /// `i·dH·Ws + j·dW` in a padded plane.
    fn taps(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.kh).flat_map(move |i| {
            (0..self.kw).map(move |j| (i * self.kw + j, i * self.dh * self.ws + j * self.dw))
        })
    }

    /// Scratch elements of the tile accumulator.
    fn tile_len<T>(&self) -> usize {
        self.c_dst * tile_cols::<T>(self.c_dst, self.cols())
    }

    /// `dst (C_dst, OH, OW) := Σ_taps A_tap · src shifted`, one GEMM per group and tap on each
    /// column tile of `tile` (`tile_len` elements), then the tile's valid columns copied out.
    fn run<T: Element>(
        &self,
        src: &[T],
        a: &TapWeights<T>,
        tile: &mut [T],
        dst: &mut [T],
        par: Parallelism,
    ) {
        let (oh, ow) = self.out();
        let n = self.cols();
        let tl = tile.len() / self.c_dst;
        let (cig, cog) = (self.c_src / self.groups, self.c_dst / self.groups);
        let plane = self.hs * self.ws;
        for n0 in (0..n).step_by(tl) {
            let nt = tl.min(n - n0);
            for gi in 0..self.groups {
                for (t, off) in self.taps() {
                    // SAFETY: the tile block (cog, nt) with row stride tl lies in `tile`; the
                    // weights lie in `w`; the shifted source reads src[c·plane + off + p] for
                    // c < C_src, p < n, whose largest index is C_src·plane − 1.
                    unsafe {
                        matmul(
                            cog,
                            nt,
                            cig,
                            tile[gi * cog * tl..].as_mut_ptr(),
                            tl,
                            t > 0,
                            a.mat(t, gi),
                            Mat {
                                ptr: src[gi * cig * plane + off + n0..].as_ptr(),
                                rs: plane as isize,
                                cs: 1,
                            },
                            par,
                        )
                    }
                }
            }
            // Copy the valid columns of grid rows n0 / Ws ..= (n0 + nt − 1) / Ws.
            for c in 0..self.c_dst {
                let trow = &tile[c * tl..][..nt];
                let dplane = &mut dst[c * oh * ow..][..oh * ow];
                for oy in n0 / self.ws..=(n0 + nt - 1) / self.ws {
                    let lo = (oy * self.ws).max(n0);
                    let hi = (oy * self.ws + ow).min(n0 + nt);
                    if lo < hi {
                        dplane[oy * ow + lo - oy * self.ws..][..hi - lo]
                            .copy_from_slice(&trow[lo - n0..hi - n0]);
                    }
                }
            }
        }
    }
}

/// Shifted forward: pads each sample, then [`Shift::run`] with the weights `(C_out, C_in)`
/// per tap.
fn forward_shifted<T: Element>(x: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let (hw_out, hw_in) = (g.oh * g.ow, g.h * g.w);
    let mut y = vec![T::default(); g.b * g.c_out * hw_out];
    if y.is_empty() {
        return y;
    }
    let s = Shift::over_input(g);
    let a = TapWeights::new(w, g, false);
    let plan = plan(g.b);
    let src_len = g.c_in * s.hs * s.ws;
    y.par_chunks_mut(plan.chunk * g.c_out * hw_out)
        .enumerate()
        .for_each(|(ci, ychunk)| {
            T::with_scratch(src_len + s.tile_len::<T>(), |buf| {
                let (xpad, tile) = buf.split_at_mut(src_len);
                for (bi, yb) in ychunk.chunks_mut(g.c_out * hw_out).enumerate() {
                    let b = ci * plan.chunk + bi;
                    let xb = &x[b * g.c_in * hw_in..][..g.c_in * hw_in];
                    pad_into(xb, (g.h, g.w), (g.ph, g.pw), xpad);
                    s.run(xpad, &a, tile, yb, plan.gemm);
                }
            });
        });
    y
}

/// Shifted input gradient: the output gradient padded by `(k − 1)·d − p`, correlated with the
/// flipped weights `(C_in, C_out)` per tap.
fn input_grad_shifted<T: Element>(dy: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    let (hw_out, hw_in) = (g.oh * g.ow, g.h * g.w);
    let mut dx = vec![T::default(); g.b * g.c_in * hw_in];
    if dx.is_empty() || hw_out == 0 {
        return dx;
    }
    let s = Shift::over_output_grad(g);
    let (qh, qw) = ((s.hs - g.oh) / 2, (s.ws - g.ow) / 2);
    let a = TapWeights::new(w, g, true);
    let plan = plan(g.b);
    let src_len = g.c_out * s.hs * s.ws;
    dx.par_chunks_mut(plan.chunk * g.c_in * hw_in)
        .enumerate()
        .for_each(|(ci, dxchunk)| {
            T::with_scratch(src_len + s.tile_len::<T>(), |buf| {
                let (dypad, tile) = buf.split_at_mut(src_len);
                for (bi, dxb) in dxchunk.chunks_mut(g.c_in * hw_in).enumerate() {
                    let b = ci * plan.chunk + bi;
                    let dyb = &dy[b * g.c_out * hw_out..][..g.c_out * hw_out];
                    pad_into(dyb, (g.oh, g.ow), (qh, qw), dypad);
                    s.run(dypad, &a, tile, dxb, plan.gemm);
                }
            });
        });
    dx
}

/// Shifted weight gradient: per sample and tap, `dW_tap (C_out, C_in) += dy_grid (C_out, n) ·
/// x_pad shiftedᵀ (n, C_in)` with `dy` laid on the padded-width grid (junk columns zero),
/// accumulated per thread in `(kH·kW, C_out, C_in/G)` and permuted at the end.
fn weight_grad_shifted<T: Element>(x: &[T], dy: &[T], g: &Geometry) -> Vec<T> {
    let (hw_out, hw_in) = (g.oh * g.ow, g.h * g.w);
    let (taps, cig, cog) = (g.kh * g.kw, g.c_in / g.groups, g.c_out / g.groups);
    let len = g.c_out * cig * taps;
    if len == 0 || g.b == 0 || hw_out == 0 {
        return vec![T::default(); len];
    }
    let s = Shift::over_input(g);
    let (n, plane) = (s.cols(), s.hs * s.ws);
    let kt = tile_cols::<T>(cog + cig, n);
    let plan = plan(g.b);
    let src_len = g.c_in * plane;
    let chunks: Vec<usize> = (0..g.b.div_ceil(plan.chunk)).collect();
    let partials: Vec<Vec<T>> = chunks
        .par_iter()
        .map(|&ci| {
            let mut acc = vec![T::default(); len]; // (kH·kW, C_out, C_in/G)
            T::with_scratch(src_len + g.c_out * n, |buf| {
                let (xpad, dyg) = buf.split_at_mut(src_len);
                for b in ci * plan.chunk..((ci + 1) * plan.chunk).min(g.b) {
                    pad_into(
                        &x[b * g.c_in * hw_in..][..g.c_in * hw_in],
                        (g.h, g.w),
                        (g.ph, g.pw),
                        xpad,
                    );
                    let dyb = &dy[b * g.c_out * hw_out..][..g.c_out * hw_out];
                    for (src, row) in dyb.chunks_exact(hw_out).zip(dyg.chunks_exact_mut(n)) {
                        for (oy, srow) in src.chunks_exact(g.ow).enumerate() {
                            let start = oy * s.ws;
                            row[start..start + g.ow].copy_from_slice(srow);
                            row[start + g.ow..(start + s.ws).min(n)].fill(T::default());
                        }
                    }
                    for k0 in (0..n).step_by(kt) {
                        let k = kt.min(n - k0);
                        for gi in 0..g.groups {
                            for (t, off) in s.taps() {
                                // SAFETY: (cog, cig) ⊂ acc; dyg rows of n columns; the shifted
                                // xpad reads stay below C_in·plane (see Shift::run).
                                unsafe {
                                    matmul(
                                        cog,
                                        cig,
                                        k,
                                        acc[(t * g.c_out + gi * cog) * cig..].as_mut_ptr(),
                                        cig,
                                        true,
                                        Mat {
                                            ptr: dyg[gi * cog * n + k0..].as_ptr(),
                                            rs: n as isize,
                                            cs: 1,
                                        },
                                        Mat {
                                            ptr: xpad[gi * cig * plane + off + k0..].as_ptr(),
                                            rs: 1,
                                            cs: plane as isize,
                                        },
                                        plan.gemm,
                                    )
                                }
                            }
                        }
                    }
                }
            });
            acc
        })
        .collect();
    let mut iter = partials.into_iter();
    let mut total = iter.next().unwrap_or_else(|| vec![T::default(); len]);
    for p in iter {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    // (kH·kW, C_out, C_in/G) → (C_out, C_in/G, kH·kW)
    let mut dw = vec![T::default(); len];
    for (t, block) in total.chunks_exact(g.c_out * cig).enumerate() {
        for (oc, &v) in block.iter().enumerate() {
            dw[oc * taps + t] = v;
        }
    }
    dw
}

/// Forward: `x (B, C_in, H, W)`, `w (C_out, C_in/G, kH, kW)` → `y (B, C_out, OH, OW)`.
pub(crate) fn forward<T: Element>(x: &[T], w: &[T], g: &Geometry) -> Vec<T> {
    if uses_shifted(g, Pass::Forward) {
        forward_shifted(x, w, g)
    } else if packed(g) {
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
    if uses_shifted(g, Pass::InputGrad) {
        input_grad_shifted(dy, w, g)
    } else if packed(g) {
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
    if uses_shifted(g, Pass::WeightGrad) {
        weight_grad_shifted(x, dy, g)
    } else if packed(g) {
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

    /// Runs `f` with the kernel family forced to `algo` on this thread.
    fn forced<R>(algo: Algo, f: impl FnOnce() -> R) -> R {
        TEST_ALGO.with(|c| c.set(Some(algo)));
        let out = f();
        TEST_ALGO.with(|c| c.set(None));
        out
    }

    /// Seeded values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f64> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    type Dims = (usize, usize, usize, usize);

    /// A stride-1 geometry: `x (b, c_in, h, w)`, `w (c_out, c_in/groups, kh, kw)`.
    fn stride1(x: Dims, w: Dims, p: (usize, usize), d: (usize, usize), groups: usize) -> Geometry {
        Geometry::new(x, w, p, (1, 1), d, groups).expect("valid geometry")
    }

    /// The three shifted passes against the per-sample im2col passes in `T`, within `tol`
    /// relative to the largest reference magnitude.
    fn check_against_im2col<T: Element + Into<f64>>(
        g: &Geometry,
        seed: u64,
        cast: fn(f64) -> T,
        tol: f64,
    ) {
        let data = |n: usize, k: u64| -> Vec<T> {
            values(n, seed * 3 + k).into_iter().map(cast).collect()
        };
        let x = data(g.b * g.c_in * g.h * g.w, 0);
        let w = data(g.c_out * g.k_group(), 1);
        let dy = data(g.b * g.c_out * g.oh * g.ow, 2);
        let close = |ours: Vec<T>, reference: Vec<T>, what: &str| {
            assert_eq!(ours.len(), reference.len(), "{what} {g:?}");
            let scale = reference
                .iter()
                .fold(1.0f64, |m, &v| m.max(Into::<f64>::into(v).abs()));
            let err = ours
                .into_iter()
                .zip(reference)
                .map(|(a, b)| (a.into() - b.into()).abs())
                .fold(0.0, f64::max);
            assert!(
                err <= tol * scale,
                "{what} {g:?}: error {err} (scale {scale})"
            );
        };
        assert!(shifted_applies(g, Pass::Forward), "{g:?}");
        close(
            forward_shifted(&x, &w, g),
            forward_per_sample(&x, &w, g),
            "forward",
        );
        close(
            weight_grad_shifted(&x, &dy, g),
            weight_grad_per_sample(&x, &dy, g),
            "weight grad",
        );
        if shifted_applies(g, Pass::InputGrad) {
            close(
                input_grad_shifted(&dy, &w, g),
                input_grad_per_sample(&dy, &w, g),
                "input grad",
            );
        }
    }

    fn check_both_dtypes(g: &Geometry, seed: u64) {
        check_against_im2col::<f64>(g, seed, |v| v, 1e-12);
        check_against_im2col::<f32>(g, seed, |v| v as f32, 1e-5);
    }

    /// The targeted stride-1 geometries: 3×3 p1 and p0, 5×5 p2 dilation 2, 1×3 rectangular,
    /// odd sizes, groups, batch 1 and batch ≥ threads, planes wider than one column tile.
    #[test]
    fn shifted_matches_im2col_on_targeted_cases() {
        let cases = [
            ((1, 3, 5, 7), (4, 3, 3, 3), (1, 1), (1, 1), 1),
            ((4, 3, 7, 5), (2, 3, 3, 3), (0, 0), (1, 1), 1),
            ((3, 2, 9, 11), (3, 2, 5, 5), (2, 2), (2, 2), 1),
            ((2, 4, 6, 5), (4, 4, 1, 3), (0, 1), (1, 1), 1),
            ((5, 4, 13, 9), (6, 2, 3, 3), (1, 1), (1, 1), 2),
            ((2, 6, 5, 5), (6, 1, 3, 3), (1, 1), (1, 1), 6),
            ((3, 2, 8, 9), (3, 2, 3, 1), (1, 0), (2, 1), 1),
            ((1, 2, 1, 1), (2, 2, 3, 3), (1, 1), (1, 1), 1),
            ((2, 1, 4, 4), (1, 1, 2, 2), (1, 1), (1, 1), 1),
            // ESANet's factorised 3×1 / 1×3 blocks down to 1×2 planes.
            ((2, 8, 8, 16), (8, 8, 3, 1), (1, 0), (1, 1), 1),
            ((2, 32, 2, 4), (32, 32, 1, 3), (0, 1), (1, 1), 1),
            ((2, 16, 1, 2), (16, 16, 3, 1), (1, 0), (1, 1), 1),
            ((2, 16, 1, 2), (16, 16, 3, 3), (1, 1), (1, 1), 1),
            // 64 destination rows: the tile holds fewer columns than the plane's grid.
            ((2, 64, 30, 31), (64, 64, 3, 3), (1, 1), (1, 1), 1),
            ((1, 16, 40, 37), (96, 8, 3, 3), (1, 1), (1, 1), 2),
        ];
        for (i, &(x, w, p, d, groups)) in cases.iter().enumerate() {
            check_both_dtypes(&stride1(x, w, p, d, groups), i as u64);
        }
    }

    /// Random stride-1 geometries (kernels 1–5 of any aspect, paddings up to and beyond the
    /// kernel's reach, dilations 1–2, groups 1–3, sizes 1–10).
    #[test]
    fn shifted_matches_im2col_on_random_geometries() {
        let mut rng = values(4000, 77).into_iter().map(|v| (v + 1.0) / 2.0);
        let mut pick = |lo: usize, hi: usize| -> usize {
            lo + (rng.next().unwrap_or(0.5) * (hi - lo + 1) as f64) as usize % (hi - lo + 1)
        };
        let mut checked = 0;
        for seed in 0..400u64 {
            let groups = pick(1, 3);
            let (kh, kw) = (pick(1, 5), pick(1, 5));
            let x = (pick(1, 3), groups * pick(1, 3), pick(1, 10), pick(1, 10));
            let w = (groups * pick(1, 3), x.1 / groups, kh, kw);
            let (p, d) = ((pick(0, 3), pick(0, 3)), (pick(1, 2), pick(1, 2)));
            let Ok(g) = Geometry::new(x, w, p, (1, 1), d, groups) else {
                continue;
            };
            check_both_dtypes(&g, seed);
            checked += 1;
            if checked == 120 {
                break;
            }
        }
        assert_eq!(checked, 120);
    }

    /// Gradients (and gradients of the gradient ops) through the forced shifted path agree with
    /// finite differences.
    #[test]
    fn shifted_path_has_correct_gradients() {
        use crate::gradcheck::{check_gradients, GradCheck};
        use candle_core::{Device, Tensor};
        let dev = Device::Cpu;
        let t = |v: Vec<f64>, d: Dims| Tensor::from_vec(v, d, &dev).expect("tensor");
        for (i, &(x, w, p, d, groups)) in [
            ((2, 4, 5, 6), (4, 2, 3, 3), (1, 1), (1, 1), 2),
            ((1, 2, 7, 6), (3, 2, 5, 3), (2, 1), (2, 1), 1),
            ((2, 2, 4, 5), (2, 2, 1, 3), (0, 1), (1, 1), 1),
        ]
        .iter()
        .enumerate()
        {
            let g = stride1(x, w, p, d, groups);
            let xs = t(values(x.0 * x.1 * x.2 * x.3, 10 + i as u64), x);
            let ws = t(values(w.0 * w.1 * w.2 * w.3, 20 + i as u64), w);
            let dy = t(
                values(g.b * g.c_out * g.oh * g.ow, 30 + i as u64),
                g.y_dims(),
            );
            forced(Algo::Shifted, || {
                assert!(uses_shifted(&g, Pass::Forward) && uses_shifted(&g, Pass::InputGrad));
                let cfg = GradCheck::default();
                check_gradients(
                    |v| super::super::op::ConvForward::apply(g, &v[0], &v[1]),
                    &[xs.clone(), ws.clone()],
                    cfg,
                )
                .expect("forward");
                check_gradients(
                    |v| super::super::op::ConvInputGrad::apply(g, &v[0], &v[1]),
                    &[dy.clone(), ws.clone()],
                    cfg,
                )
                .expect("input grad");
                check_gradients(
                    |v| super::super::op::ConvWeightGrad::apply(g, &v[0], &v[1]),
                    &[xs.clone(), dy.clone()],
                    cfg,
                )
                .expect("weight grad");
            });
        }
    }

    /// The automatic choice: stride-1 convolutions with ≥ 8 channels per group whose per-tap
    /// weights are small against the plane run shifted; strides > 1, 1×1, depthwise and
    /// weight-heavy small planes keep im2col; paddings beyond the kernel's reach keep im2col
    /// for the input gradient.
    #[test]
    fn automatic_choice() {
        let auto = |g: &Geometry, pass| forced(Algo::Auto, || uses_shifted(g, pass));
        let conv3 = |b, c, h, w| stride1((b, c, h, w), (c, c, 3, 3), (1, 1), (1, 1), 1);
        for g in [
            conv3(16, 64, 16, 16),
            conv3(16, 128, 8, 8),
            conv3(4, 64, 129, 79),
            conv3(4, 256, 33, 20),
            conv3(64, 8, 32, 32),
            conv3(64, 64, 4, 4),
        ] {
            for pass in [Pass::Forward, Pass::InputGrad, Pass::WeightGrad] {
                assert!(auto(&g, pass), "{g:?} {pass:?}");
            }
        }
        // The geometries of tests/conv_shifted.rs.
        for (x, w, p, d, groups) in [
            ((2, 16, 9, 11), (16, 16, 3, 3), (1, 1), (1, 1), 1),
            ((3, 8, 7, 9), (12, 8, 3, 3), (0, 0), (1, 1), 1),
            ((2, 16, 12, 13), (8, 16, 5, 5), (2, 2), (2, 2), 1),
            ((4, 16, 6, 10), (16, 16, 1, 3), (0, 1), (1, 1), 1),
            ((1, 8, 10, 5), (8, 8, 3, 1), (1, 0), (1, 1), 1),
            ((2, 32, 8, 7), (32, 16, 3, 3), (1, 1), (1, 1), 2),
            ((1, 8, 5, 6), (8, 8, 3, 3), (1, 1), (1, 1), 1),
            ((2, 64, 40, 37), (64, 64, 3, 3), (1, 1), (1, 1), 1),
        ] {
            let g = stride1(x, w, p, d, groups);
            for pass in [Pass::Forward, Pass::InputGrad, Pass::WeightGrad] {
                assert!(auto(&g, pass), "{g:?} {pass:?}");
            }
        }
        let pointwise = stride1((4, 64, 20, 20), (64, 64, 1, 1), (0, 0), (1, 1), 1);
        let depthwise = stride1((4, 64, 20, 20), (64, 1, 3, 3), (1, 1), (1, 1), 64);
        let strided = Geometry::new((4, 64, 20, 20), (64, 64, 3, 3), (1, 1), (2, 2), (1, 1), 1)
            .expect("valid geometry");
        for g in [
            conv3(16, 256, 4, 4),
            conv3(16, 512, 2, 2),
            conv3(4, 512, 17, 10),
            conv3(16, 4, 32, 32),
            pointwise,
            depthwise,
            strided,
        ] {
            assert!(!auto(&g, Pass::Forward), "{g:?}");
        }
        let wide_pad = stride1((4, 64, 20, 20), (64, 64, 3, 3), (3, 3), (1, 1), 1);
        assert!(auto(&wide_pad, Pass::Forward));
        assert!(!auto(&wide_pad, Pass::InputGrad));
        assert!(!forced(Algo::Shifted, || uses_shifted(
            &strided,
            Pass::Forward
        )));
        assert!(!forced(Algo::Im2col, || uses_shifted(
            &conv3(4, 64, 129, 79),
            Pass::Forward
        )));
    }
}
