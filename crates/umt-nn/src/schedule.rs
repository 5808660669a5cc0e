//! Learning-rate schedules as pure functions of the step (or epoch) index, matching
//! `torch.optim.lr_scheduler`'s values, and the serde config [`LrSchedule`] that selects one.
//!
//! - [`step_decay`]: `StepLR`, `lr = base·γ^⌊epoch/step_size⌋` (the UMT paper: ×0.1 every 5 or
//!   10 epochs);
//! - [`one_cycle`] / [`one_cycle_momentum`]: `OneCycleLR` with cosine annealing and
//!   `three_phase = false` (ESANet on NYUv2: `max_lr = 0.01`, `total_steps = 500` epochs,
//!   `pct_start = 0.1`, `div_factor = 25`, `final_div_factor = 1e4`, stepped once per epoch,
//!   momentum cycled 0.95 → 0.85 → 0.95);
//! - [`cosine`]: `CosineAnnealingLR`'s closed form over `total_steps`;
//! - [`linear_warmup`]: `LinearLR(start_factor, end_factor = 1)`.
//!
//! The index is whatever the caller steps the schedule by (ESANet: epochs). Past the end a
//! schedule stays at its final value (PyTorch raises for OneCycle and keeps oscillating for
//! CosineAnnealing).
//!
//! ```
//! use umt_nn::schedule::LrSchedule;
//! let s: LrSchedule = serde_json::from_str(
//!     r#"{"kind": "one_cycle", "max_lr": 0.01, "total_steps": 500, "pct_start": 0.1}"#,
//! )?;
//! s.validate()?;
//! assert!((s.lr_at(0) - 0.01 / 25.0).abs() < 1e-15);
//! assert!((s.lr_at(49) - 0.01).abs() < 1e-15);
//! assert_eq!(s.momentum_at(49), Some(0.85));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `torch.optim.lr_scheduler.StepLR`: `base_lr · gamma^⌊epoch / step_size⌋`
/// (`step_size = 0` is treated as 1).
pub fn step_decay(base_lr: f64, epoch: usize, step_size: usize, gamma: f64) -> f64 {
    let k = epoch / step_size.max(1);
    base_lr * gamma.powi(i32::try_from(k).unwrap_or(i32::MAX))
}

/// Cosine interpolation from `start` (pct = 0) to `end` (pct = 1), torch's `_annealing_cos`.
fn anneal_cos(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
}

/// The two OneCycle phases: which phase `step` is in and its progress `pct ∈ [0, 1]`.
/// Phase 1 ends at step `pct_start·total − 1`, phase 2 at `total − 1` (torch's `end_step`s).
fn one_cycle_phase(step: usize, total_steps: usize, pct_start: f64) -> (bool, f64) {
    let step = step.min(total_steps.saturating_sub(1)) as f64;
    let end1 = pct_start * total_steps as f64 - 1.0;
    let end2 = total_steps as f64 - 1.0;
    if step <= end1 {
        (true, step / end1)
    } else {
        (false, (step - end1) / (end2 - end1))
    }
}

/// `torch.optim.lr_scheduler.OneCycleLR` (`anneal_strategy = 'cos'`, `three_phase = false`):
/// cosine from `max_lr/div_factor` up to `max_lr` over the first `pct_start` of the steps, then
/// cosine down to `max_lr/(div_factor·final_div_factor)`. Steps past the end give the final lr.
/// See [`LrSchedule::validate`] for the valid ranges.
pub fn one_cycle(
    step: usize,
    max_lr: f64,
    total_steps: usize,
    pct_start: f64,
    div_factor: f64,
    final_div_factor: f64,
) -> f64 {
    let initial = max_lr / div_factor;
    let min = initial / final_div_factor;
    match one_cycle_phase(step, total_steps, pct_start) {
        (true, pct) => anneal_cos(initial, max_lr, pct),
        (false, pct) => anneal_cos(max_lr, min, pct),
    }
}

/// OneCycle's `cycle_momentum`: momentum (or Adam's `beta1`) goes `max → base` while the lr
/// rises, then `base → max` (torch defaults `base_momentum = 0.85`, `max_momentum = 0.95`).
pub fn one_cycle_momentum(
    step: usize,
    total_steps: usize,
    pct_start: f64,
    base_momentum: f64,
    max_momentum: f64,
) -> f64 {
    match one_cycle_phase(step, total_steps, pct_start) {
        (true, pct) => anneal_cos(max_momentum, base_momentum, pct),
        (false, pct) => anneal_cos(base_momentum, max_momentum, pct),
    }
}

/// `CosineAnnealingLR(T_max = total_steps, eta_min = min_lr)` in closed form:
/// `min + (base − min)·(1 + cos(π·t/T))/2`, constant at `min_lr` for `t ≥ T`.
pub fn cosine(base_lr: f64, step: usize, total_steps: usize, min_lr: f64) -> f64 {
    if step >= total_steps {
        return min_lr;
    }
    anneal_cos(base_lr, min_lr, step as f64 / total_steps as f64)
}

/// `LinearLR(start_factor, end_factor = 1, total_iters = warmup_steps)`: the lr grows linearly
/// from `base·start_factor` to `base` over `warmup_steps`, then stays at `base`.
pub fn linear_warmup(base_lr: f64, step: usize, warmup_steps: usize, start_factor: f64) -> f64 {
    if step >= warmup_steps {
        return base_lr;
    }
    base_lr * (start_factor + (1.0 - start_factor) * step as f64 / warmup_steps as f64)
}

/// A learning-rate schedule as configuration (`"kind"` selects the variant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// A fixed learning rate.
    Constant {
        /// The learning rate.
        lr: f64,
    },
    /// [`step_decay`] (`StepLR`).
    StepDecay {
        /// Initial learning rate.
        base_lr: f64,
        /// Decay every this many steps/epochs (UMT paper: 5 or 10 epochs).
        step_size: usize,
        /// Factor per decay (torch default and the paper's: 0.1).
        #[serde(default = "default_gamma")]
        gamma: f64,
    },
    /// [`one_cycle`] (`OneCycleLR`, cosine, two phases).
    OneCycle {
        /// Peak learning rate (ESANet NYUv2: 0.01).
        max_lr: f64,
        /// Number of steps in the cycle (ESANet: 500, stepped per epoch).
        total_steps: usize,
        /// Fraction of the cycle spent increasing (torch default 0.3; ESANet 0.1).
        #[serde(default = "default_pct_start")]
        pct_start: f64,
        /// `initial_lr = max_lr / div_factor` (torch default and ESANet: 25).
        #[serde(default = "default_div_factor")]
        div_factor: f64,
        /// `min_lr = initial_lr / final_div_factor` (torch default and ESANet: 1e4).
        #[serde(default = "default_final_div_factor")]
        final_div_factor: f64,
        /// Cycle momentum inversely to the lr (torch default true, kept by ESANet).
        #[serde(default = "default_true")]
        cycle_momentum: bool,
        /// Lowest momentum, at the lr peak (torch default 0.85).
        #[serde(default = "default_base_momentum")]
        base_momentum: f64,
        /// Highest momentum, at both ends (torch default 0.95).
        #[serde(default = "default_max_momentum")]
        max_momentum: f64,
    },
    /// Optional [`linear_warmup`] then [`cosine`] annealing over the remaining steps.
    Cosine {
        /// Learning rate after warm-up.
        base_lr: f64,
        /// Total steps, warm-up included.
        total_steps: usize,
        /// Final learning rate (torch `eta_min` default: 0).
        #[serde(default)]
        min_lr: f64,
        /// Warm-up steps (default 0: none).
        #[serde(default)]
        warmup_steps: usize,
        /// Warm-up starts at `base_lr · warmup_start_factor` (torch `LinearLR` default 1/3).
        #[serde(default = "default_start_factor")]
        warmup_start_factor: f64,
    },
}

/// torch `StepLR` default `gamma`; also the UMT paper's ×0.1 decay.
fn default_gamma() -> f64 {
    0.1
}
/// torch `OneCycleLR` default `pct_start`.
fn default_pct_start() -> f64 {
    0.3
}
/// torch `OneCycleLR` default `div_factor`.
fn default_div_factor() -> f64 {
    25.0
}
/// torch `OneCycleLR` default `final_div_factor`.
fn default_final_div_factor() -> f64 {
    1e4
}
/// torch `OneCycleLR` default `cycle_momentum`.
fn default_true() -> bool {
    true
}
/// torch `OneCycleLR` default `base_momentum`.
fn default_base_momentum() -> f64 {
    0.85
}
/// torch `OneCycleLR` default `max_momentum`.
fn default_max_momentum() -> f64 {
    0.95
}
/// torch `LinearLR` default `start_factor`.
fn default_start_factor() -> f64 {
    1.0 / 3.0
}

fn invalid(field: &str, reason: String) -> Error {
    Error::Config {
        field: format!("LrSchedule.{field}"),
        reason,
    }
}

fn positive(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(invalid(field, format!("must be finite and > 0, got {v}")))
    }
}

impl LrSchedule {
    /// Checks the ranges (positive rates and factors, a OneCycle whose two phases each last at
    /// least one step, warm-up shorter than the schedule).
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Constant { lr } => positive("lr", lr),
            Self::StepDecay {
                base_lr,
                step_size,
                gamma,
            } => {
                positive("base_lr", base_lr)?;
                positive("gamma", gamma)?;
                if step_size == 0 {
                    return Err(invalid("step_size", "must be ≥ 1, got 0".into()));
                }
                Ok(())
            }
            Self::OneCycle {
                max_lr,
                total_steps,
                pct_start,
                div_factor,
                final_div_factor,
                base_momentum,
                max_momentum,
                ..
            } => {
                positive("max_lr", max_lr)?;
                positive("div_factor", div_factor)?;
                positive("final_div_factor", final_div_factor)?;
                let end1 = pct_start * total_steps as f64 - 1.0;
                if !(end1 > 0.0 && end1 < total_steps as f64 - 1.0) {
                    return Err(invalid(
                        "pct_start",
                        format!(
                            "pct_start·total_steps − 1 must lie in (0, total_steps − 1), got {pct_start}·{total_steps} − 1 = {end1}"
                        ),
                    ));
                }
                if !(0.0..=1.0).contains(&base_momentum) || !(0.0..=1.0).contains(&max_momentum) {
                    return Err(invalid(
                        "base_momentum",
                        format!(
                            "momenta must be in [0, 1], got {base_momentum} and {max_momentum}"
                        ),
                    ));
                }
                Ok(())
            }
            Self::Cosine {
                base_lr,
                total_steps,
                min_lr,
                warmup_steps,
                warmup_start_factor,
            } => {
                positive("base_lr", base_lr)?;
                if !(min_lr.is_finite() && min_lr >= 0.0) {
                    return Err(invalid(
                        "min_lr",
                        format!("must be finite and ≥ 0, got {min_lr}"),
                    ));
                }
                if warmup_steps >= total_steps {
                    return Err(invalid(
                        "warmup_steps",
                        format!("must be below total_steps {total_steps}, got {warmup_steps}"),
                    ));
                }
                positive("warmup_start_factor", warmup_start_factor)
            }
        }
    }

    /// The learning rate at step (or epoch) `step`, counting from 0.
    pub fn lr_at(&self, step: usize) -> f64 {
        match *self {
            Self::Constant { lr } => lr,
            Self::StepDecay {
                base_lr,
                step_size,
                gamma,
            } => step_decay(base_lr, step, step_size, gamma),
            Self::OneCycle {
                max_lr,
                total_steps,
                pct_start,
                div_factor,
                final_div_factor,
                ..
            } => one_cycle(
                step,
                max_lr,
                total_steps,
                pct_start,
                div_factor,
                final_div_factor,
            ),
            Self::Cosine {
                base_lr,
                total_steps,
                min_lr,
                warmup_steps,
                warmup_start_factor,
            } => {
                if step < warmup_steps {
                    linear_warmup(base_lr, step, warmup_steps, warmup_start_factor)
                } else {
                    cosine(
                        base_lr,
                        step - warmup_steps,
                        total_steps - warmup_steps,
                        min_lr,
                    )
                }
            }
        }
    }

    /// The momentum (SGD) or `beta1` (Adam) this schedule prescribes at `step`: `Some` only for
    /// a OneCycle with `cycle_momentum`.
    pub fn momentum_at(&self, step: usize) -> Option<f64> {
        match *self {
            Self::OneCycle {
                total_steps,
                pct_start,
                cycle_momentum: true,
                base_momentum,
                max_momentum,
                ..
            } => Some(one_cycle_momentum(
                step,
                total_steps,
                pct_start,
                base_momentum,
                max_momentum,
            )),
            _ => None,
        }
    }
}
