//! The fast convolution against candle's builtin convolution (forward everywhere, backward where
//! candle's is right) and against finite differences (everywhere, including H and W of different
//! parity at stride > 1, where candle's backward is wrong).

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use candle_core::{DType, Device, Tensor, Var};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use umt_nn::conv::{conv2d, conv2d_with_params, Conv2dConfig, Conv2dParams};
use umt_nn::gradcheck::{check_gradients, GradCheck};

/// One convolution problem: `x (b, c_in, h, w)`, `w (c_out, c_in/groups, kh, kw)`.
#[derive(Debug, Clone, Copy)]
struct Case {
    b: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    k: usize,
    cfg: Conv2dConfig,
}

impl Case {
    fn tensors(&self, dtype: DType, seed: u64) -> (Tensor, Tensor) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut rand =
            |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let xs = (self.b, self.c_in, self.h, self.w);
        let ws = (self.c_out, self.c_in / self.cfg.groups, self.k, self.k);
        let x = Tensor::from_vec(rand(xs.0 * xs.1 * xs.2 * xs.3), xs, &Device::Cpu).unwrap();
        let w = Tensor::from_vec(rand(ws.0 * ws.1 * ws.2 * ws.3), ws, &Device::Cpu).unwrap();
        (x.to_dtype(dtype).unwrap(), w.to_dtype(dtype).unwrap())
    }

    fn builtin(&self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        let c = self.cfg;
        x.conv2d(w, c.padding, c.stride, c.dilation, c.groups)
    }

    fn valid(&self) -> bool {
        let ext = self.cfg.dilation * (self.k - 1) + 1;
        self.h + 2 * self.cfg.padding >= ext && self.w + 2 * self.cfg.padding >= ext
    }
}

/// A seeded stream of small valid cases covering strides 1–3, paddings 0–2, dilations 1–2,
/// groups 1/2/4, kernels 1/3/7, odd sizes and H ≠ W of both parities.
fn random_cases(seed: u64, n: usize, max_hw: usize) -> Vec<Case> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    while out.len() < n {
        let groups = [1, 2, 4][rng.random_range(0..3)];
        let case = Case {
            b: rng.random_range(1..=3),
            c_in: groups * rng.random_range(1..=2),
            c_out: groups * rng.random_range(1..=2),
            h: rng.random_range(1..=max_hw),
            w: rng.random_range(1..=max_hw),
            k: [1, 3, 3, 7][rng.random_range(0..4)],
            cfg: Conv2dConfig {
                padding: rng.random_range(0..=2),
                stride: rng.random_range(1..=3),
                dilation: rng.random_range(1..=2),
                groups,
            },
        };
        if case.valid() {
            out.push(case);
        }
    }
    out
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b)
        .unwrap()
        .abs()
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

#[test]
fn forward_matches_candle_f32_and_f64() {
    for (i, case) in random_cases(1, 60, 12).into_iter().enumerate() {
        for dtype in [DType::F32, DType::F64] {
            let (x, w) = case.tensors(dtype, i as u64);
            let ours = conv2d(&x, &w, case.cfg).unwrap();
            let reference = case.builtin(&x, &w).unwrap();
            assert_eq!(ours.dims(), reference.dims(), "{case:?}");
            let tol = if dtype == DType::F32 { 1e-4 } else { 1e-12 };
            let err = max_abs_diff(&ours, &reference);
            assert!(err < tol, "{case:?} {dtype:?}: max error {err}");
        }
    }
}

/// Where candle's backward is right (stride 1, or H and W of the same parity) both gradients
/// must agree with it.
#[test]
fn gradients_match_candle_where_candle_is_right() {
    let cases = random_cases(2, 60, 10)
        .into_iter()
        .filter(|c| c.cfg.stride == 1 || (c.h % 2 == c.w % 2 && c.cfg.stride == 2));
    let mut checked = 0;
    for (i, case) in cases.enumerate() {
        let (x, w) = case.tensors(DType::F64, 100 + i as u64);
        let grads = |builtin: bool| {
            let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
            let y = if builtin {
                case.builtin(xv.as_tensor(), wv.as_tensor()).unwrap()
            } else {
                conv2d(xv.as_tensor(), wv.as_tensor(), case.cfg).unwrap()
            };
            let r = y.ones_like().unwrap().cumsum(3).unwrap().sin().unwrap();
            let g = (y * r).unwrap().sum_all().unwrap().backward().unwrap();
            (
                g.get(xv.as_tensor()).unwrap().clone(),
                g.get(wv.as_tensor()).unwrap().clone(),
            )
        };
        let (ours, theirs) = (grads(false), grads(true));
        if ours.0.dims() != theirs.0.dims() {
            continue; // candle's stride-2 output padding can still be wrong for odd sizes
        }
        assert!(max_abs_diff(&ours.0, &theirs.0) < 1e-10, "dx {case:?}");
        assert!(max_abs_diff(&ours.1, &theirs.1) < 1e-10, "dw {case:?}");
        checked += 1;
    }
    assert!(checked > 20, "only {checked} cases compared");
}

#[test]
fn gradients_match_finite_differences() {
    let cfg = GradCheck {
        eps: 1e-6,
        atol: 1e-7,
        rtol: 1e-6,
        ..GradCheck::default()
    };
    for (i, case) in random_cases(3, 24, 7).into_iter().enumerate() {
        let (x, w) = case.tensors(DType::F64, 200 + i as u64);
        check_gradients(|t| conv2d(&t[0], &t[1], case.cfg), &[x, w], cfg)
            .unwrap_or_else(|e| panic!("{case:?}: {e}"));
    }
}

/// The case candle gets wrong (notes: stride-2 backward with H and W of different parity).
#[test]
fn stride_two_with_mixed_parity_has_correct_gradients() {
    let case = Case {
        b: 2,
        c_in: 2,
        c_out: 3,
        h: 6,
        w: 7,
        k: 3,
        cfg: Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        },
    };
    let (x, w) = case.tensors(DType::F64, 7);
    let report = check_gradients(
        |t| conv2d(&t[0], &t[1], case.cfg),
        &[x, w],
        GradCheck::default(),
    )
    .unwrap();
    assert_eq!(report.elements, 2 * 2 * 6 * 7 + 3 * 2 * 3 * 3);
}

/// Rectangular kernels, paddings, strides and dilations (ESANet's 3×1 and 1×3 convolutions).
#[test]
fn rectangular_parameters_forward_and_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut data = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let x = Tensor::from_vec(data(2 * 4 * 7 * 6), (2, 4, 7, 6), &Device::Cpu).unwrap();
    for ((kh, kw), p) in [
        (
            (3, 1),
            Conv2dParams {
                padding: (1, 0),
                ..Default::default()
            },
        ),
        (
            (1, 3),
            Conv2dParams {
                padding: (0, 2),
                stride: (1, 2),
                dilation: (1, 2),
                groups: 2,
            },
        ),
        (
            (3, 2),
            Conv2dParams {
                padding: (2, 1),
                stride: (3, 1),
                dilation: (2, 1),
                groups: 1,
            },
        ),
    ] {
        let w = Tensor::from_vec(
            data(4 * 4 / p.groups * kh * kw),
            (4, 4 / p.groups, kh, kw),
            &Device::Cpu,
        )
        .unwrap();
        // Reference: explicit zero padding, then candle's unpadded convolution of each output
        // position computed through the square-parameter case (stride/dilation 1) and sliced.
        let xp = x
            .pad_with_zeros(2, p.padding.0, p.padding.0)
            .unwrap()
            .pad_with_zeros(3, p.padding.1, p.padding.1)
            .unwrap();
        let ours = conv2d_with_params(&x, &w, p).unwrap();
        let (_, _, oh, ow) = ours.dims4().unwrap();
        // Dilate the kernel explicitly so stride 1 / dilation 1 suffices, then subsample.
        let (dh, dw) = p.dilation;
        let (ekh, ekw) = (dh * (kh - 1) + 1, dw * (kw - 1) + 1);
        let mut wd = vec![0f64; 4 * 4 / p.groups * ekh * ekw];
        let wv: Vec<f64> = w.flatten_all().unwrap().to_vec1().unwrap();
        for o in 0..4 * 4 / p.groups {
            for i in 0..kh {
                for j in 0..kw {
                    wd[(o * ekh + i * dh) * ekw + j * dw] = wv[(o * kh + i) * kw + j];
                }
            }
        }
        let wd = Tensor::from_vec(wd, (4, 4 / p.groups, ekh, ekw), &Device::Cpu).unwrap();
        let full = xp.conv2d(&wd, 0, 1, 1, p.groups).unwrap();
        let rows: Vec<u32> = (0..oh).map(|r| (r * p.stride.0) as u32).collect();
        let cols: Vec<u32> = (0..ow).map(|c| (c * p.stride.1) as u32).collect();
        let reference = full
            .index_select(&Tensor::new(rows, &Device::Cpu).unwrap(), 2)
            .unwrap()
            .index_select(&Tensor::new(cols, &Device::Cpu).unwrap(), 3)
            .unwrap();
        assert!(max_abs_diff(&ours, &reference) < 1e-12, "{p:?}");
        check_gradients(
            |t| conv2d_with_params(&t[0], &t[1], p),
            &[x.clone(), w],
            GradCheck::default(),
        )
        .unwrap_or_else(|e| panic!("{p:?}: {e}"));
    }
}

#[test]
fn bad_inputs_are_errors() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 4, 5, 5), DType::F32, &dev).unwrap();
    let w = Tensor::zeros((2, 3, 3, 3), DType::F32, &dev).unwrap();
    let err = conv2d(&x, &w, Conv2dConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected w"), "{err}");

    let w = Tensor::zeros((2, 4, 7, 7), DType::F32, &dev).unwrap();
    let err = conv2d(&x, &w, Conv2dConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("smaller than the dilated kernel"), "{err}");

    let w = Tensor::zeros((3, 2, 3, 3), DType::F32, &dev).unwrap();
    let groups = Conv2dConfig {
        groups: 2,
        ..Default::default()
    };
    let err = conv2d(&x, &w, groups).unwrap_err().to_string();
    assert!(err.contains("divisible"), "{err}");

    let w = Tensor::zeros((2, 4, 3, 3), DType::F64, &dev).unwrap();
    let err = conv2d(&x, &w, Conv2dConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("same dtype"), "{err}");

    let w = Tensor::zeros((2, 4, 3, 3), DType::F32, &dev).unwrap();
    let zero_stride = Conv2dConfig {
        stride: 0,
        ..Default::default()
    };
    let err = conv2d(&x, &w, zero_stride).unwrap_err().to_string();
    assert!(err.contains("must be ≥ 1"), "{err}");
}

/// Other dtypes fall back to candle's builtin convolution with the same result.
#[test]
fn f16_falls_back_to_candle() {
    let case = Case {
        b: 2,
        c_in: 2,
        c_out: 3,
        h: 6,
        w: 5,
        k: 3,
        cfg: Conv2dConfig {
            padding: 1,
            ..Default::default()
        },
    };
    let (x, w) = case.tensors(DType::F16, 9);
    let ours = conv2d(&x, &w, case.cfg).unwrap_or_else(|e| panic!("ours: {e}"));
    let reference = case
        .builtin(&x, &w)
        .unwrap_or_else(|e| panic!("candle: {e}"));
    assert_eq!(max_abs_diff(&ours, &reference), 0.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// im2col/col2im index arithmetic: output size and values agree with candle for any small
    /// geometry (including outputs of size 1 and kernels larger than the unpadded input).
    #[test]
    fn forward_index_arithmetic(
        h in 1usize..9, w in 1usize..9, k in prop::sample::select(vec![1usize, 2, 3, 5]),
        padding in 0usize..3, stride in 1usize..4, dilation in 1usize..3, groups in prop::sample::select(vec![1usize, 2]),
    ) {
        let case = Case { b: 2, c_in: 2, c_out: 2, h, w, k, cfg: Conv2dConfig { padding, stride, dilation, groups } };
        prop_assume!(case.valid());
        let (x, wt) = case.tensors(DType::F64, (h * 31 + w) as u64);
        let ours = conv2d(&x, &wt, case.cfg).unwrap();
        let reference = case.builtin(&x, &wt).unwrap();
        prop_assert_eq!(ours.dims(), reference.dims());
        prop_assert!(max_abs_diff(&ours, &reference) < 1e-12);
    }
}
