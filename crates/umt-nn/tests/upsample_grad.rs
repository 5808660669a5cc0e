//! Finite-difference gradient checks (f64) and error cases of `umt_nn::upsample`.

use candle_core::{DType, Device, Tensor};
use umt_nn::gradcheck::{check_gradients, GradCheck};
use umt_nn::upsample::{upsample_bilinear2d, upsample_nearest2d};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn input(shape: (usize, usize, usize, usize), seed: u64) -> candle_core::Result<Tensor> {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let mut s = seed.wrapping_add(1);
    let vals: Vec<f64> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
        .collect();
    Tensor::from_vec(vals, shape, &Device::Cpu)
}

/// An input shape `(B, C, H, W)` and the output size.
type Case = ((usize, usize, usize, usize), (usize, usize));

/// Up, down and mixed resizes, odd sizes, H ≠ W.
const SIZES: [Case; 5] = [
    ((1, 2, 7, 9), (14, 18)),
    ((2, 1, 5, 6), (11, 8)),
    ((1, 2, 7, 9), (4, 5)),
    ((1, 1, 3, 4), (3, 4)),
    ((1, 1, 1, 2), (3, 5)),
];

#[test]
fn nearest_gradients() -> TestResult {
    for (i, (shape, (oh, ow))) in SIZES.into_iter().enumerate() {
        check_gradients(
            |xs| upsample_nearest2d(&xs[0], oh, ow),
            &[input(shape, i as u64)?],
            GradCheck::default(),
        )
        .map_err(|e| format!("nearest {shape:?} → {oh}×{ow}: {e}"))?;
    }
    Ok(())
}

#[test]
fn bilinear_gradients() -> TestResult {
    for align_corners in [false, true] {
        for (i, (shape, (oh, ow))) in SIZES.into_iter().enumerate() {
            check_gradients(
                |xs| upsample_bilinear2d(&xs[0], oh, ow, align_corners),
                &[input(shape, 10 + i as u64)?],
                GradCheck::default(),
            )
            .map_err(|e| format!("bilinear ac={align_corners} {shape:?} → {oh}×{ow}: {e}"))?;
        }
    }
    Ok(())
}

/// candle's nearest backward overwrites the gradient of an input that is used elsewhere too:
/// here `x` feeds both resizes and a direct path, and every contribution must add up.
#[test]
fn gradients_accumulate_with_other_uses() -> TestResult {
    check_gradients(
        |xs| {
            let x = &xs[0];
            let a = upsample_nearest2d(x, 14, 18)?.flatten_all()?;
            let b = upsample_bilinear2d(x, 10, 11, false)?.flatten_all()?;
            let c = (x * 3.0)?.flatten_all()?;
            Tensor::cat(&[c, a, b], 0)
        },
        &[input((1, 2, 7, 9), 99)?],
        GradCheck::default(),
    )?;
    Ok(())
}

#[test]
fn f32_matches_f64() -> TestResult {
    let x = input((2, 3, 7, 9), 5)?;
    let x32 = x.to_dtype(DType::F32)?;
    for (a, b) in [
        (
            upsample_nearest2d(&x, 10, 13)?,
            upsample_nearest2d(&x32, 10, 13)?,
        ),
        (
            upsample_bilinear2d(&x, 10, 13, false)?,
            upsample_bilinear2d(&x32, 10, 13, false)?,
        ),
    ] {
        let diff = (a - b.to_dtype(DType::F64)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert!(diff < 1e-6, "{diff}");
    }
    Ok(())
}

#[test]
fn bad_arguments_are_errors() -> TestResult {
    let x = input((1, 1, 4, 4), 0)?;
    let msg = |r: candle_core::Result<Tensor>| match r {
        Ok(t) => format!("unexpected Ok {:?}", t.dims()),
        Err(e) => e.to_string(),
    };
    assert!(msg(upsample_nearest2d(&x, 0, 4)).contains("must be positive"));
    assert!(msg(upsample_bilinear2d(&x.flatten_to(1)?, 8, 8, false)).contains("(B, C, H, W)"));
    let ints = x.to_dtype(DType::U32)?;
    assert!(msg(upsample_bilinear2d(&ints, 8, 8, true)).contains("expected a float tensor"));
    Ok(())
}
