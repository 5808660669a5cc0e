//! Stride-1 convolutions with at least 8 channels per group run the shifted-GEMM kernels
//! (implicit im2col, `conv/cpu.rs`) under the automatic choice; these geometries all do (the
//! unit test `conv::cpu::tests::automatic_choice` asserts it for the same shapes). Forward and
//! both gradients are compared with candle's builtin convolution (whose stride-1 backward is
//! right) in f32 and f64, and with finite differences in f64.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use umt_nn::conv::{conv2d_with_params, Conv2dParams};
use umt_nn::gradcheck::{check_gradients, GradCheck};

/// `x (b, c_in, h, w)`, `w (c_out, c_in/groups, kh, kw)`, stride 1.
#[derive(Debug, Clone, Copy)]
struct Case {
    x: Dims,
    w: Dims,
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
}

impl Case {
    fn params(&self) -> Conv2dParams {
        Conv2dParams {
            padding: self.padding,
            stride: (1, 1),
            dilation: self.dilation,
            groups: self.groups,
        }
    }

    fn tensors(&self, dtype: DType, seed: u64) -> (Tensor, Tensor) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut rand =
            |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let (x, w) = (self.x, self.w);
        let xt = Tensor::from_vec(rand(x.0 * x.1 * x.2 * x.3), x, &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(rand(w.0 * w.1 * w.2 * w.3), w, &Device::Cpu).unwrap();
        (xt.to_dtype(dtype).unwrap(), wt.to_dtype(dtype).unwrap())
    }

    /// candle's builtin convolution: explicit zero padding (rectangular paddings), square
    /// dilation only.
    fn builtin(&self, x: &Tensor, w: &Tensor) -> Tensor {
        assert_eq!(
            self.dilation.0, self.dilation.1,
            "builtin needs square dilation"
        );
        let (ph, pw) = self.padding;
        let xp = x
            .pad_with_zeros(2, ph, ph)
            .unwrap()
            .pad_with_zeros(3, pw, pw)
            .unwrap();
        xp.conv2d(w, 0, 1, self.dilation.0, self.groups).unwrap()
    }
}

type Dims = (usize, usize, usize, usize);

const fn case(x: Dims, w: Dims, padding: (usize, usize), dilation: usize, groups: usize) -> Case {
    Case {
        x,
        w,
        padding,
        dilation: (dilation, dilation),
        groups,
    }
}

/// 3×3 p1, 3×3 p0 on odd sizes, 5×5 p2 dilation 2, 1×3 and 3×1 rectangular, groups, batch 1
/// and batch ≥ 2 threads, a plane wider than one column tile.
const CASES: [Case; 8] = [
    case((2, 16, 9, 11), (16, 16, 3, 3), (1, 1), 1, 1),
    case((3, 8, 7, 9), (12, 8, 3, 3), (0, 0), 1, 1),
    case((2, 16, 12, 13), (8, 16, 5, 5), (2, 2), 2, 1),
    case((4, 16, 6, 10), (16, 16, 1, 3), (0, 1), 1, 1),
    case((1, 8, 10, 5), (8, 8, 3, 1), (1, 0), 1, 1),
    case((2, 32, 8, 7), (32, 16, 3, 3), (1, 1), 1, 2),
    case((1, 8, 5, 6), (8, 8, 3, 3), (1, 1), 1, 1),
    case((2, 64, 40, 37), (64, 64, 3, 3), (1, 1), 1, 1),
];

fn max_abs(t: &Tensor) -> f64 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Largest difference relative to the reference's largest magnitude.
fn rel_err(ours: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(ours.dims(), reference.dims());
    max_abs(&(ours - reference).unwrap()) / max_abs(reference).max(1.0)
}

/// `y = conv(x, w)` and the gradients of `Σ y ⊙ sin(cumsum(1))` with respect to `x` and `w`,
/// through ours or candle's builtin convolution.
fn output_and_gradients(case: &Case, x: &Tensor, w: &Tensor, builtin: bool) -> [Tensor; 3] {
    let (xv, wv) = (Var::from_tensor(x).unwrap(), Var::from_tensor(w).unwrap());
    let y = if builtin {
        case.builtin(xv.as_tensor(), wv.as_tensor())
    } else {
        conv2d_with_params(xv.as_tensor(), wv.as_tensor(), case.params()).unwrap()
    };
    let r = y.ones_like().unwrap().cumsum(3).unwrap().sin().unwrap();
    let g = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
    let dx = g.get(xv.as_tensor()).unwrap().clone();
    let dw = g.get(wv.as_tensor()).unwrap().clone();
    [y, dx, dw]
}

/// Ours agrees with candle's builtin convolution on `case` (forward and both gradients).
fn assert_matches_candle(case: &Case, dtype: DType, seed: u64) {
    let (x, w) = case.tensors(dtype, seed);
    let ours = output_and_gradients(case, &x, &w, false);
    let theirs = output_and_gradients(case, &x, &w, true);
    let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
    for ((what, a), b) in ["y", "dx", "dw"].iter().zip(&ours).zip(&theirs) {
        let err = rel_err(a, b);
        assert!(err < tol, "{what} {case:?} {dtype:?}: relative error {err}");
    }
}

#[test]
fn forward_and_gradients_match_candle() {
    for (i, case) in CASES.iter().enumerate() {
        for dtype in [DType::F32, DType::F64] {
            assert_matches_candle(case, dtype, i as u64);
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    for (i, case) in CASES.iter().enumerate() {
        // Two evaluations per element: keep the sweep to the smaller cases.
        let (x, w) = (case.x, case.w);
        if x.0 * x.1 * x.2 * x.3 + w.0 * w.1 * w.2 * w.3 > 6000 {
            continue;
        }
        let (x, w) = case.tensors(DType::F64, 50 + i as u64);
        check_gradients(
            |t| conv2d_with_params(&t[0], &t[1], case.params()),
            &[x, w],
            GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("{case:?}: {e}"));
    }
}

/// Random stride-1 geometries with 8–10 channels per group (all shifted under the automatic
/// choice except 1×1 unpadded ones): kernels 1–5 of any aspect, paddings 0–2, dilations 1–2,
/// groups 1–2, sizes 1–10, batch 1–3; forward and both gradients against candle in f64.
#[test]
fn random_stride_one_geometries_match_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut checked = 0;
    while checked < 30 {
        let groups = rng.random_range(1..=2);
        let d = rng.random_range(1..=2);
        let (b, cig, cog) = (
            rng.random_range(1..=3),
            rng.random_range(8..=10),
            rng.random_range(8..=10),
        );
        let (h, w) = (rng.random_range(1..=10), rng.random_range(1..=10));
        let (kh, kw) = (rng.random_range(1..=5), rng.random_range(1..=5));
        let padding = (rng.random_range(0..=2), rng.random_range(0..=2));
        let fits = |len: usize, p: usize, k: usize| len + 2 * p > d * (k - 1);
        if !fits(h, padding.0, kh) || !fits(w, padding.1, kw) {
            continue;
        }
        let x = (b, groups * cig, h, w);
        let case = case(x, (groups * cog, cig, kh, kw), padding, d, groups);
        assert_matches_candle(&case, DType::F64, 100 + checked);
        checked += 1;
    }
}
