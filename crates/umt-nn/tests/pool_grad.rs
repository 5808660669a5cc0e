//! Finite-difference gradient checks (f64) and error cases of `umt_nn::pool`.

use candle_core::{DType, Device, Tensor};
use umt_nn::gradcheck::{check_gradients, GradCheck};
use umt_nn::pool::{adaptive_avg_pool2d, avg_pool2d, max_pool2d};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Distinct values (a shuffled ramp plus noise) so no max-pool window holds a near tie that a
/// ±1e-6 perturbation could flip.
fn input(shape: (usize, usize, usize, usize), seed: u64) -> candle_core::Result<Tensor> {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let mut s = seed;
    let mut vals: Vec<f64> = (0..n).map(|i| i as f64 * 0.01).collect();
    for i in (1..n).rev() {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        vals.swap(i, (s >> 33) as usize % (i + 1));
    }
    Tensor::from_vec(vals, shape, &Device::Cpu)
}

#[test]
fn max_pool_gradients() -> TestResult {
    // (shape, kernel, stride, padding): the ResNet stem pool on odd and H≠W-parity sizes,
    // kernel = stride, kernel < stride, stride 1.
    let cases = [
        ((2, 3, 7, 9), 3, 2, 1),
        ((1, 2, 5, 6), 3, 2, 1),
        ((1, 2, 8, 8), 3, 2, 1),
        ((1, 2, 7, 9), 2, 2, 0),
        ((1, 1, 6, 7), 2, 3, 1),
        ((1, 2, 5, 6), 3, 1, 1),
    ];
    for (i, (shape, k, s, p)) in cases.into_iter().enumerate() {
        let x = input(shape, i as u64)?;
        let report = check_gradients(|xs| max_pool2d(&xs[0], k, s, p), &[x], GradCheck::default())
            .map_err(|e| format!("max_pool2d {shape:?} k{k} s{s} p{p}: {e}"))?;
        assert_eq!(report.elements, shape.0 * shape.1 * shape.2 * shape.3);
    }
    Ok(())
}

#[test]
fn avg_pool_gradients() -> TestResult {
    for (i, (shape, k, s, p)) in [
        ((2, 3, 7, 9), 3, 2, 1),
        ((1, 2, 5, 6), 2, 2, 0),
        ((1, 1, 6, 7), 3, 1, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let x = input(shape, 10 + i as u64)?;
        check_gradients(|xs| avg_pool2d(&xs[0], k, s, p), &[x], GradCheck::default())
            .map_err(|e| format!("avg_pool2d {shape:?} k{k} s{s} p{p}: {e}"))?;
    }
    Ok(())
}

#[test]
fn adaptive_avg_pool_gradients() -> TestResult {
    for (i, (shape, out)) in [
        ((2, 2, 7, 9), (3, 5)),
        ((1, 2, 5, 6), (1, 1)),
        ((1, 1, 7, 9), (4, 4)),
        ((1, 1, 5, 6), (5, 6)),
    ]
    .into_iter()
    .enumerate()
    {
        let x = input(shape, 20 + i as u64)?;
        check_gradients(
            |xs| adaptive_avg_pool2d(&xs[0], out),
            &[x],
            GradCheck::default(),
        )
        .map_err(|e| format!("adaptive_avg_pool2d {shape:?} → {out:?}: {e}"))?;
    }
    Ok(())
}

/// The pooled input is also used elsewhere: gradients from both paths must add.
#[test]
fn gradients_accumulate_with_other_uses() -> TestResult {
    let x = input((1, 2, 7, 9), 30)?;
    check_gradients(
        |xs| {
            let a = max_pool2d(&xs[0], 3, 2, 1)?.flatten_all()?;
            let b = avg_pool2d(&xs[0], 3, 2, 1)?.flatten_all()?;
            let c = xs[0].sqr()?.flatten_all()?;
            Tensor::cat(&[a, b, c], 0)
        },
        &[x],
        GradCheck::default(),
    )?;
    Ok(())
}

/// A unique maximum gets the whole gradient (candle's builtin gives 0.25 in 2×2 windows), and
/// overlapping windows sum.
#[test]
fn max_pool_routes_the_whole_gradient() -> TestResult {
    let x = Tensor::new(
        &[[[[1f32, 2.0, 0.0], [0.0, 9.0, 0.0], [3.0, 0.0, 4.0]]]],
        &Device::Cpu,
    )?;
    let v = candle_core::Var::from_tensor(&x)?;
    let y = max_pool2d(v.as_tensor(), 2, 1, 0)?; // every 2×2 window contains the 9
    assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![9.0; 4]);
    let g = y.sum_all()?.backward()?;
    let gx = g.get(v.as_tensor()).ok_or("no gradient")?;
    let gx = gx.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(gx, vec![0.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 0.0]);
    Ok(())
}

#[test]
fn f32_matches_f64() -> TestResult {
    let x = input((2, 3, 7, 9), 40)?;
    let x32 = x.to_dtype(DType::F32)?;
    for (a, b) in [
        (max_pool2d(&x, 3, 2, 1)?, max_pool2d(&x32, 3, 2, 1)?),
        (avg_pool2d(&x, 3, 2, 1)?, avg_pool2d(&x32, 3, 2, 1)?),
        (
            adaptive_avg_pool2d(&x, (3, 5))?,
            adaptive_avg_pool2d(&x32, (3, 5))?,
        ),
    ] {
        let diff = (a - b.to_dtype(DType::F64)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert!(diff < 1e-5, "{diff}");
    }
    Ok(())
}

/// Non-contiguous inputs (a transposed view) give the same result as their contiguous copy.
#[test]
fn strided_input() -> TestResult {
    let x = input((1, 2, 9, 7), 50)?.transpose(2, 3)?; // (1, 2, 7, 9), not contiguous
    let a = max_pool2d(&x, 3, 2, 1)?;
    let b = max_pool2d(&x.contiguous()?, 3, 2, 1)?;
    assert_eq!(
        a.flatten_all()?.to_vec1::<f64>()?,
        b.flatten_all()?.to_vec1::<f64>()?
    );
    Ok(())
}

#[test]
fn bad_arguments_are_errors() -> TestResult {
    let x = input((1, 1, 4, 4), 0)?;
    let msg = |r: candle_core::Result<Tensor>| match r {
        Ok(t) => format!("unexpected Ok {:?}", t.dims()),
        Err(e) => e.to_string(),
    };
    assert!(msg(max_pool2d(&x, 3, 2, 2)).contains("padding 2"));
    assert!(msg(max_pool2d(&x, 0, 1, 0)).contains("must be positive"));
    assert!(msg(avg_pool2d(&x, 5, 1, 0)).contains("smaller than the kernel"));
    assert!(msg(max_pool2d(&x.flatten_to(1)?, 2, 2, 0)).contains("(B, C, H, W)"));
    assert!(msg(adaptive_avg_pool2d(&x, (0, 2))).contains("must be positive"));
    let ints = x.to_dtype(DType::U32)?;
    assert!(msg(max_pool2d(&ints, 2, 2, 0)).contains("expected a float tensor"));
    assert!(msg(avg_pool2d(&ints, 2, 2, 0)).contains("expected a float tensor"));
    // f16 has no CPU kernel: it runs the device-generic path, with the same result.
    let half = max_pool2d(&x.to_dtype(DType::F16)?, 3, 2, 1)?.to_dtype(DType::F64)?;
    let full = max_pool2d(&x, 3, 2, 1)?;
    let err = (half - full)?.abs()?.max_all()?.to_scalar::<f64>()?;
    assert!(err < 1e-2, "f16 max pool differs by {err}");
    Ok(())
}
