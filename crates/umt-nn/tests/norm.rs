//! The fused training BatchNorm (`umt_nn::norm`): finite-difference gradients (f64) with and
//! without the fused ReLU, and agreement with candle's own `BatchNorm::forward_t` (outputs,
//! gradients, running statistics); the same for `batch_norm_add_relu` (a ResNet block's
//! `relu(bn(x) + shortcut)`) against candle's BatchNorm, `+` and `relu`.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{BatchNorm, ModuleT};
use umt_nn::gradcheck::{check_gradients, GradCheck};
use umt_nn::norm::{batch_norm, batch_norm_add_relu, batch_norm_relu};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Deterministic values in [-1, 1) (an LCG), offset per channel so ReLU kinks are rare.
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

fn bn_from(c: usize, gamma: &Tensor, beta: &Tensor) -> candle_core::Result<BatchNorm> {
    let dev = gamma.device();
    BatchNorm::new(
        c,
        Tensor::zeros(c, gamma.dtype(), dev)?,
        Tensor::ones(c, gamma.dtype(), dev)?,
        gamma.clone(),
        beta.clone(),
        1e-5,
    )
}

#[test]
fn fused_batch_norm_gradients() -> TestResult {
    for (i, &(shape, relu)) in [
        ((2usize, 3usize, 4usize, 5usize), false),
        ((3, 2, 3, 3), true),
        ((4, 5, 1, 1), false),
        ((2, 4, 3, 2), true),
    ]
    .iter()
    .enumerate()
    {
        let (n, c, h, w) = shape;
        let x = Tensor::from_vec(values(n * c * h * w, i as u64), shape, &Device::Cpu)?;
        let g = Tensor::from_vec(values(c, 50 + i as u64), c, &Device::Cpu)?.affine(0.5, 1.0)?;
        let b = Tensor::from_vec(values(c, 90 + i as u64), c, &Device::Cpu)?;
        let f = |xs: &[Tensor]| {
            let bn = bn_from(c, &xs[1], &xs[2])?;
            if relu {
                batch_norm_relu(&bn, &xs[0], true)
            } else {
                batch_norm(&bn, &xs[0], true)
            }
        };
        check_gradients(f, &[x, g, b], GradCheck::default())
            .map_err(|e| format!("batch_norm {shape:?} relu {relu}: {e}"))?;
    }
    Ok(())
}

/// Output, gradients (x, γ, β), running mean and running variance of one BatchNorm step.
type Outcome = (Vec<f32>, Vec<Vec<f32>>, Vec<f32>, Vec<f32>);

/// Same outputs, gradients and running statistics as candle's unfused BatchNorm, in f32.
#[test]
fn matches_candle_batch_norm() -> TestResult {
    let (n, c, h, w) = (4, 6, 5, 7);
    let dev = Device::Cpu;
    let x = Var::from_vec(
        values(n * c * h * w, 7)
            .into_iter()
            .map(|v| v as f32 * 3.0 + 0.5)
            .collect(),
        (n, c, h, w),
        &dev,
    )?;
    let g = Var::from_vec(
        values(c, 8).iter().map(|v| *v as f32 + 1.5).collect(),
        c,
        &dev,
    )?;
    let b = Var::from_vec(values(c, 9).iter().map(|v| *v as f32).collect(), c, &dev)?;
    let weights = Tensor::from_vec(
        values(n * c * h * w, 10)
            .iter()
            .map(|v| *v as f32)
            .collect(),
        (n, c, h, w),
        &dev,
    )?;
    let run = |fused: bool| -> candle_core::Result<Outcome> {
        let bn = BatchNorm::new_with_momentum(
            c,
            Tensor::zeros(c, DType::F32, &dev)?.affine(1.0, 0.2)?,
            Tensor::ones(c, DType::F32, &dev)?,
            g.as_tensor().clone(),
            b.as_tensor().clone(),
            1e-5,
            0.1,
        )?;
        let y = if fused {
            batch_norm_relu(&bn, x.as_tensor(), true)?
        } else {
            bn.forward_t(x.as_tensor(), true)?.relu()?
        };
        let grads = (&y * &weights)?.sum_all()?.backward()?;
        let grad = |v: &Var| -> candle_core::Result<Vec<f32>> {
            match grads.get(v) {
                Some(t) => t.flatten_all()?.to_vec1(),
                None => candle_core::bail!("missing gradient"),
            }
        };
        Ok((
            y.flatten_all()?.to_vec1()?,
            vec![grad(&x)?, grad(&g)?, grad(&b)?],
            bn.running_mean().to_vec1()?,
            bn.running_var().to_vec1()?,
        ))
    };
    let (y0, g0, m0, v0) = run(false)?;
    let (y1, g1, m1, v1) = run(true)?;
    let close = |a: &[f32], b: &[f32], what: &str| {
        assert_eq!(a.len(), b.len());
        let err = a
            .iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(err < 2e-4, "{what}: max abs difference {err}");
    };
    close(&y0, &y1, "output");
    for (i, what) in ["dx", "dgamma", "dbeta"].iter().enumerate() {
        close(&g0[i], &g1[i], what);
    }
    close(&m0, &m1, "running_mean");
    close(&v0, &v1, "running_var");
    Ok(())
}

#[test]
fn wrong_channel_count_is_an_error() -> TestResult {
    let g = Tensor::ones(3, DType::F32, &Device::Cpu)?;
    let bn = bn_from(3, &g, &g.zeros_like()?)?;
    let x = Tensor::ones((2, 4, 2, 2), DType::F32, &Device::Cpu)?;
    let err = batch_norm(&bn, &x, true)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("expected 3 channels"), "{err}");
    let one = Tensor::ones((1, 3, 1, 1), DType::F32, &Device::Cpu)?;
    let err = batch_norm(&bn, &one, true)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("more than one value per channel"), "{err}");
    Ok(())
}

/// Finite differences of `relu(bn(x) + r)` with respect to x, γ, β and r (f64), odd sizes.
#[test]
fn batch_norm_add_relu_gradients() -> TestResult {
    for (i, &shape) in [(2usize, 3usize, 4usize, 5usize), (3, 2, 3, 3), (4, 5, 1, 1)]
        .iter()
        .enumerate()
    {
        let (n, c, h, w) = shape;
        let len = n * c * h * w;
        let x = Tensor::from_vec(values(len, i as u64), shape, &Device::Cpu)?;
        let r = Tensor::from_vec(values(len, 20 + i as u64), shape, &Device::Cpu)?;
        let g = Tensor::from_vec(values(c, 50 + i as u64), c, &Device::Cpu)?.affine(0.5, 1.0)?;
        let b = Tensor::from_vec(values(c, 90 + i as u64), c, &Device::Cpu)?;
        let f = |xs: &[Tensor]| {
            let bn = bn_from(c, &xs[1], &xs[2])?;
            batch_norm_add_relu(&bn, &xs[0], &xs[3], true)
        };
        check_gradients(f, &[x, g, b, r], GradCheck::default())
            .map_err(|e| format!("batch_norm_add_relu {shape:?}: {e}"))?;
    }
    Ok(())
}

/// Same outputs, gradients and running statistics as candle's BatchNorm, `+` and `relu`, f32.
#[test]
fn batch_norm_add_relu_matches_candle() -> TestResult {
    let (n, c, h, w) = (3, 5, 4, 7);
    let len = n * c * h * w;
    let dev = Device::Cpu;
    let f32s = |v: Vec<f64>, k: f64, off: f64| -> Vec<f32> {
        v.into_iter().map(|x| (x * k + off) as f32).collect()
    };
    let x = Var::from_vec(f32s(values(len, 1), 3.0, 0.5), (n, c, h, w), &dev)?;
    let r = Var::from_vec(f32s(values(len, 2), 1.0, 0.0), (n, c, h, w), &dev)?;
    let g = Var::from_vec(f32s(values(c, 3), 1.0, 1.5), c, &dev)?;
    let b = Var::from_vec(f32s(values(c, 4), 1.0, 0.0), c, &dev)?;
    let weights = Tensor::from_vec(f32s(values(len, 5), 1.0, 0.0), (n, c, h, w), &dev)?;
    let run = |fused: bool| -> candle_core::Result<Outcome> {
        let bn = BatchNorm::new_with_momentum(
            c,
            Tensor::zeros(c, DType::F32, &dev)?.affine(1.0, 0.2)?,
            Tensor::ones(c, DType::F32, &dev)?,
            g.as_tensor().clone(),
            b.as_tensor().clone(),
            1e-5,
            0.1,
        )?;
        let y = if fused {
            batch_norm_add_relu(&bn, x.as_tensor(), r.as_tensor(), true)?
        } else {
            (bn.forward_t(x.as_tensor(), true)? + r.as_tensor())?.relu()?
        };
        let grads = (&y * &weights)?.sum_all()?.backward()?;
        let grad = |v: &Var| -> candle_core::Result<Vec<f32>> {
            match grads.get(v) {
                Some(t) => t.flatten_all()?.to_vec1(),
                None => candle_core::bail!("missing gradient"),
            }
        };
        Ok((
            y.flatten_all()?.to_vec1()?,
            vec![grad(&x)?, grad(&g)?, grad(&b)?, grad(&r)?],
            bn.running_mean().to_vec1()?,
            bn.running_var().to_vec1()?,
        ))
    };
    let (y0, g0, m0, v0) = run(false)?;
    let (y1, g1, m1, v1) = run(true)?;
    let close = |a: &[f32], b: &[f32], what: &str| {
        assert_eq!(a.len(), b.len(), "{what}");
        let err = a
            .iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(err < 2e-4, "{what}: max abs difference {err}");
    };
    close(&y0, &y1, "output");
    for (i, what) in ["dx", "dgamma", "dbeta", "dresidual"].iter().enumerate() {
        close(&g0[i], &g1[i], what);
    }
    close(&m0, &m1, "running_mean");
    close(&v0, &v1, "running_var");
    Ok(())
}

#[test]
fn batch_norm_add_relu_shape_mismatch_is_an_error() -> TestResult {
    let g = Tensor::ones(3, DType::F32, &Device::Cpu)?;
    let bn = bn_from(3, &g, &g.zeros_like()?)?;
    let x = Tensor::ones((2, 3, 2, 2), DType::F32, &Device::Cpu)?;
    let r = Tensor::ones((2, 3, 2, 1), DType::F32, &Device::Cpu)?;
    let err = batch_norm_add_relu(&bn, &x, &r, true)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("residual") && err.contains("[2, 3, 2, 1]"),
        "{err}"
    );
    Ok(())
}

/// f32 statistics of data with a large mean and a small spread (mean 100, std 0.01) over planes
/// longer than one summation block and not a multiple of the lane count (41 × 37 = 1517): the
/// fused op's normalised output and its input gradient agree with an f64 reference computed
/// from the same f32 values. A one-pass `E[x²] − E[x]²` in f32, or f32 partial sums over whole
/// planes, fails this by orders of magnitude.
#[test]
fn statistics_hold_for_a_large_mean_and_small_spread() -> TestResult {
    let (n, c, h, w) = (3, 2, 41, 37);
    let plane = h * w;
    let dev = Device::Cpu;
    let xs: Vec<f32> = values(n * c * plane, 21)
        .iter()
        .map(|v| (100.0 + 0.01 * v) as f32)
        .collect();
    let x = Var::from_vec(xs.clone(), (n, c, h, w), &dev)?;
    let bn = bn_from(
        c,
        &Tensor::ones(c, DType::F32, &dev)?,
        &Tensor::zeros(c, DType::F32, &dev)?,
    )?;
    let y = batch_norm(&bn, x.as_tensor(), true)?;
    let got: Vec<f32> = y.flatten_all()?.to_vec1()?;
    // dL/dy = the values themselves (centred), so dx depends on both statistics.
    let wts: Vec<f32> = values(n * c * plane, 22)
        .iter()
        .map(|v| *v as f32)
        .collect();
    let grads = (&y * Tensor::from_vec(wts.clone(), (n, c, h, w), &dev)?)?
        .sum_all()?
        .backward()?;
    let dx: Vec<f32> = grads.get(&x).ok_or("no dx")?.flatten_all()?.to_vec1()?;
    for ch in 0..c {
        let idx: Vec<usize> = (0..n)
            .flat_map(|i| (0..plane).map(move |k| (i * c + ch) * plane + k))
            .collect();
        let cnt = idx.len() as f64;
        let mean = idx.iter().map(|&i| xs[i] as f64).sum::<f64>() / cnt;
        let var = idx
            .iter()
            .map(|&i| (xs[i] as f64 - mean).powi(2))
            .sum::<f64>()
            / cnt;
        let inv = 1.0 / (var + 1e-5).sqrt();
        let xhat = |i: usize| (xs[i] as f64 - mean) * inv;
        let (sg, sgx) = idx.iter().fold((0.0, 0.0), |(a, b), &i| {
            (a + wts[i] as f64, b + wts[i] as f64 * xhat(i))
        });
        for &i in &idx {
            let want_y = xhat(i);
            let want_dx = inv * (wts[i] as f64 - sg / cnt - xhat(i) * sgx / cnt);
            assert!(
                (got[i] as f64 - want_y).abs() < 2e-3,
                "channel {ch}, element {i}: y {} vs {want_y}",
                got[i]
            );
            assert!(
                (dx[i] as f64 - want_dx).abs() < 2e-3 * want_dx.abs().max(1.0),
                "channel {ch}, element {i}: dx {} vs {want_dx}",
                dx[i]
            );
        }
    }
    Ok(())
}
