//! Finite-difference gradient checks in f64.
//!
//! candle 0.11 has real gradient bugs, so every op or layer we train through is checked here:
//! the function's output is reduced to a scalar with a fixed pseudo-random projection
//! `L = Σ f(x) ⊙ r` (so every output element's gradient matters, not just their sum), the
//! analytic gradient `∂L/∂x` comes from candle's backprop and is compared element by element with
//! the central difference `(L(x + ε) − L(x − ε)) / 2ε`.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use umt_nn::gradcheck::{check_gradients, GradCheck};
//! let x = Tensor::new(&[[0.3f64, -1.2], [2.0, 0.5]], &Device::Cpu)?;
//! // d/dx of x² is 2x: the check passes.
//! let report = check_gradients(|xs| xs[0].sqr(), &[x], GradCheck::default())?;
//! assert!(report.max_abs_error < 1e-6);
//! # Ok::<(), umt_nn::Error>(())
//! ```

use candle_core::{DType, Tensor, Var};

use crate::{Error, Result};

/// Settings of a gradient check.
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// Step of the central difference.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (relative to the numeric gradient).
    pub rtol: f64,
    /// Seed of the projection `r`.
    pub seed: u64,
}

impl Default for GradCheck {
    /// ε = 1e-6 with tolerances 1e-6 + 1e-4·|g|: in f64 the truncation error of a central
    /// difference is O(ε²) and the rounding error O(1e-16/ε), both far below these.
    fn default() -> Self {
        Self {
            eps: 1e-6,
            atol: 1e-6,
            rtol: 1e-4,
            seed: 0x5eed,
        }
    }
}

/// What a passing check measured.
#[derive(Debug, Clone, Copy)]
pub struct GradCheckReport {
    /// Number of input elements checked.
    pub elements: usize,
    /// Largest `|analytic − numeric|` seen.
    pub max_abs_error: f64,
}

/// Deterministic values in [-1, 1) from a 64-bit LCG (no dependency on candle's RNG state).
fn projection(len: usize, seed: u64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

/// Checks the gradient of `f` with respect to every element of every input.
///
/// `inputs` are converted to f64; `f` receives them as tensors tracked for backprop and may
/// return a tensor of any shape. Returns [`Error::GradCheck`] naming the first element whose
/// analytic and numeric gradients differ by more than `atol + rtol·|numeric|`.
pub fn check_gradients<F>(f: F, inputs: &[Tensor], cfg: GradCheck) -> Result<GradCheckReport>
where
    F: Fn(&[Tensor]) -> candle_core::Result<Tensor>,
{
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(DType::F64)?))
        .collect::<candle_core::Result<_>>()?;
    let xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&xs)?;
    let r = Tensor::from_vec(
        projection(out.elem_count(), cfg.seed),
        out.shape(),
        out.device(),
    )?;
    let loss = (out.to_dtype(DType::F64)? * &r)?.sum_all()?;
    let grads = loss.backward()?;

    let eval = |values: &[Tensor]| -> candle_core::Result<f64> {
        let out = f(values)?;
        (out.to_dtype(DType::F64)? * &r)?
            .sum_all()?
            .to_scalar::<f64>()
    };

    let mut elements = 0;
    let mut max_abs_error = 0f64;
    for (i, x) in xs.iter().enumerate() {
        let analytic: Vec<f64> = match grads.get(x) {
            Some(g) => g.flatten_all()?.to_vec1()?,
            None => vec![0.0; x.elem_count()],
        };
        let base: Vec<f64> = x.flatten_all()?.to_vec1()?;
        for j in 0..base.len() {
            let shifted = |delta: f64| -> candle_core::Result<f64> {
                let mut v = base.clone();
                v[j] += delta;
                let mut values: Vec<Tensor> = xs.iter().map(|t| t.detach()).collect();
                values[i] = Tensor::from_vec(v, x.shape(), x.device())?;
                eval(&values)
            };
            let numeric = (shifted(cfg.eps)? - shifted(-cfg.eps)?) / (2.0 * cfg.eps);
            let err = (analytic[j] - numeric).abs();
            let tolerance = cfg.atol + cfg.rtol * numeric.abs();
            // A NaN on either side fails the check too.
            if err.is_nan() || err > tolerance {
                return Err(Error::GradCheck {
                    input: i,
                    index: j,
                    analytic: analytic[j],
                    numeric,
                    tolerance,
                });
            }
            max_abs_error = max_abs_error.max(err);
            elements += 1;
        }
    }
    Ok(GradCheckReport {
        elements,
        max_abs_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn passes_on_a_correct_gradient() {
        let x = Tensor::new(&[[0.3f64, -1.2, 0.7], [2.0, 0.5, -0.1]], &Device::Cpu).unwrap();
        let w = Tensor::new(&[[1.0f64], [-2.0], [0.5]], &Device::Cpu).unwrap();
        let report = check_gradients(
            |xs| xs[0].matmul(&xs[1])?.tanh(),
            &[x, w],
            GradCheck::default(),
        )
        .unwrap();
        assert_eq!(report.elements, 9);
    }

    /// An op whose backward is deliberately wrong (gradient detached) must be caught.
    #[test]
    fn catches_a_wrong_gradient() {
        let x = Tensor::new(&[0.3f64, -1.2, 0.7], &Device::Cpu).unwrap();
        let err = check_gradients(
            // Forward is x², backward only sees the detached factor: gradient x instead of 2x.
            |xs| xs[0].mul(&xs[0].detach()),
            &[x],
            GradCheck::default(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::GradCheck { input: 0, .. }), "{err}");
    }
}
