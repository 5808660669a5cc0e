//! The convolution's backward skips the gradient of operands outside the autograd graph (a
//! stem convolution on images) and still gets the weight gradient right.

use candle_core::{Device, Tensor, Var};
use umt_nn::conv::{conv2d, Conv2dConfig};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Deterministic values in [-1, 1].
fn values(n: usize, seed: u64) -> Vec<f64> {
    (0..n)
        .map(|i| ((i as f64 + 0.5) * (0.37 + seed as f64 * 0.11)).sin())
        .collect()
}

/// A convolution whose input is a constant (a stem on images) still gets its weight gradient
/// right (against candle's builtin convolution), and no gradient is produced for the input.
#[test]
fn conv_backward_skips_constant_input() -> TestResult {
    let dev = Device::Cpu;
    let x = Tensor::from_vec(
        values(2 * 3 * 9 * 8, 11)
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        (2, 3, 9, 8),
        &dev,
    )?;
    let w = Var::from_vec(
        values(4 * 3 * 3 * 3, 12)
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        (4, 3, 3, 3),
        &dev,
    )?;
    let cfg = Conv2dConfig {
        padding: 1,
        stride: 1,
        ..Default::default()
    };
    let ours = conv2d(&x, w.as_tensor(), cfg)?
        .sqr()?
        .sum_all()?
        .backward()?;
    let reference = x
        .conv2d(w.as_tensor(), 1, 1, 1, 1)?
        .sqr()?
        .sum_all()?
        .backward()?;
    assert!(ours.get(&x).is_none(), "a constant input has no gradient");
    let (a, b) = match (ours.get(w.as_tensor()), reference.get(w.as_tensor())) {
        (Some(a), Some(b)) => (
            a.flatten_all()?.to_vec1::<f32>()?,
            b.flatten_all()?.to_vec1::<f32>()?,
        ),
        _ => return Err("missing weight gradient".into()),
    };
    let err = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-3, "weight gradient differs by {err}");
    Ok(())
}
