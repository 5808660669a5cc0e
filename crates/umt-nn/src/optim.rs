//! Optimizers with PyTorch's exact update rules, parameter groups and gradient clipping.
//!
//! - [`Sgd`]: `torch.optim.SGD` with momentum, dampening, Nesterov and coupled (L2) weight decay;
//!   the momentum buffer starts as the first gradient.
//! - [`Adam`] (L2 weight decay added to the gradient) and [`AdamW`] (decoupled
//!   `p ← p − lr·wd·p`), both with bias correction and `eps` outside the square root, as
//!   `torch.optim.Adam`/`AdamW` (`amsgrad = false`).
//! - [`ParamGroup`]: variables with their own weight decay and learning-rate scale.
//!   [`decay_groups`] splits named variables the timm way (biases and rank-≤1 tensors such as
//!   BatchNorm weights get no decay); BatchNorm running statistics (`running_mean`,
//!   `running_var`, `num_batches_tracked`) live in the `VarMap` but are not trainable, and
//!   [`trainable_vars`] leaves them out by name.
//! - [`clip_grad_norm`]: `torch.nn.utils.clip_grad_norm_` on a candle `GradStore`.
//!
//! Freezing: give the optimizer only the variables that train (and `.detach()` frozen outputs
//! so their backward is skipped). A variable without a gradient in the `GradStore` is skipped by
//! `step`, its state untouched, as PyTorch does for `p.grad is None`.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use umt_nn::optim::{decay_groups, trainable_vars, Optimizer, Sgd, SgdConfig};
//! let vars = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vars, DType::F64, &Device::Cpu);
//! let w = vb.get_with_hints((1, 2), "fc.weight", candle_nn::init::ONE)?;
//! vb.get_with_hints(1, "fc.bias", candle_nn::init::ZERO)?;
//! // Weight decay on `fc.weight` only; `fc.bias` goes to the no-decay group.
//! let groups = decay_groups(&trainable_vars(&vars)?, 1e-4);
//! let cfg = SgdConfig { lr: 0.1, momentum: 0.9, nesterov: true, ..SgdConfig::default() };
//! let mut opt = Sgd::new(groups, cfg)?;
//! let loss = w.sqr()?.sum_all()?;
//! opt.backward_step(&loss)?;
//! let w1 = w.flatten_all()?.to_vec1::<f64>()?;
//! // d = 2·1 + 1e-4·1; Nesterov's first step moves by lr·(1 + momentum)·d.
//! assert!((w1[0] - (1.0 - 0.1 * 1.9 * 2.0001)).abs() < 1e-12);
//! # Ok::<(), umt_nn::Error>(())
//! ```

use std::collections::HashSet;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

mod host;
use host::StateBuf;
#[cfg(feature = "cuda")]
pub(crate) use host::StepScalars;

/// A training optimizer over a fixed set of variables.
pub trait Optimizer {
    /// Applies one update from `grads`; variables absent from `grads` are skipped.
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()>;
    /// The base learning rate (each group uses `lr · lr_scale`).
    fn learning_rate(&self) -> f64;
    /// Sets the base learning rate (e.g. from a schedule, before each step).
    fn set_learning_rate(&mut self, lr: f64);
    /// `loss.backward()` then [`Optimizer::step`].
    fn backward_step(&mut self, loss: &Tensor) -> candle_core::Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }
}

/// Variables sharing a weight decay and a learning-rate scale (PyTorch's `param_groups`).
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// The variables (each may appear in only one group).
    pub vars: Vec<Var>,
    /// Weight decay of this group (coupled L2 for SGD/Adam, decoupled for AdamW).
    pub weight_decay: f64,
    /// This group's learning rate is `lr · lr_scale` (1 for the usual case).
    pub lr_scale: f64,
}

impl ParamGroup {
    /// A group with learning-rate scale 1.
    pub fn new(vars: Vec<Var>, weight_decay: f64) -> Self {
        Self {
            vars,
            weight_decay,
            lr_scale: 1.0,
        }
    }

    /// The same group with another learning-rate scale.
    pub fn with_lr_scale(mut self, lr_scale: f64) -> Self {
        self.lr_scale = lr_scale;
        self
    }
}

/// Whether a `VarMap` name is a BatchNorm buffer (running statistics or the batch counter):
/// stored with the weights but updated by the forward pass, never by an optimizer.
pub fn is_buffer(name: &str) -> bool {
    ["running_mean", "running_var", "num_batches_tracked"]
        .iter()
        .any(|b| name == *b || name.ends_with(&format!(".{b}")))
}

/// Whether a parameter gets no weight decay under the timm rule: biases (`*.bias`) and tensors
/// of rank ≤ 1 (BatchNorm/LayerNorm weights).
pub fn is_no_decay(name: &str, var: &Var) -> bool {
    name == "bias" || name.ends_with(".bias") || var.rank() <= 1
}

/// The trainable variables of a `VarMap` (BatchNorm buffers left out), sorted by name.
pub fn trainable_vars(vars: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("the VarMap's lock is poisoned".into()))?;
    let mut named: Vec<(String, Var)> = data
        .iter()
        .filter(|(k, _)| !is_buffer(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(named)
}

/// Splits named variables into `[decay (weight_decay), no_decay (0)]` groups with the timm
/// rule of [`is_no_decay`]; BatchNorm buffers ([`is_buffer`]) are left out. Empty groups are
/// kept (an optimizer ignores them), so the result always has two entries in this order.
pub fn decay_groups(named: &[(String, Var)], weight_decay: f64) -> Vec<ParamGroup> {
    let (mut decay, mut no_decay) = (Vec::new(), Vec::new());
    for (name, var) in named.iter().filter(|(n, _)| !is_buffer(n)) {
        if is_no_decay(name, var) {
            no_decay.push(var.clone());
        } else {
            decay.push(var.clone());
        }
    }
    vec![
        ParamGroup::new(decay, weight_decay),
        ParamGroup::new(no_decay, 0.0),
    ]
}

/// Clips gradients by their global L2 norm, `torch.nn.utils.clip_grad_norm_` semantics: with
/// `total = ‖(‖g_1‖, …, ‖g_n‖)‖₂` over the gradients of `vars` present in `grads`, every such
/// gradient is multiplied by `max_norm / (total + 1e-6)` when that is below 1. Returns the
/// pre-clip `total` (non-finite when a gradient is: then nothing is scaled and the caller should
/// skip the step). Duplicate variables count once.
pub fn clip_grad_norm(
    grads: &mut GradStore,
    vars: &[Var],
    max_norm: f64,
) -> candle_core::Result<f64> {
    let mut seen = HashSet::new();
    let mut present = Vec::new();
    let mut sum_sq = 0f64;
    for var in vars {
        if !seen.insert(var.id()) {
            continue;
        }
        if let Some(g) = grads.get(var) {
            sum_sq += g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
            present.push(var);
        }
    }
    let total = sum_sq.sqrt();
    let coef = max_norm / (total + 1e-6);
    if coef < 1.0 {
        for var in present {
            if let Some(g) = grads.get(var) {
                let scaled = g.affine(coef, 0.0)?;
                grads.insert(var, scaled);
            }
        }
    }
    Ok(total)
}

fn config_error(field: &str, reason: String) -> Error {
    Error::Config {
        field: field.into(),
        reason,
    }
}

fn check_finite_nonneg(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(config_error(
            field,
            format!("must be finite and ≥ 0, got {v}"),
        ))
    }
}

/// Validates groups (non-negative decay and scale, no variable twice).
fn check_groups(groups: &[ParamGroup]) -> Result<()> {
    let mut seen = HashSet::new();
    for (i, g) in groups.iter().enumerate() {
        check_finite_nonneg(&format!("param_groups[{i}].weight_decay"), g.weight_decay)?;
        check_finite_nonneg(&format!("param_groups[{i}].lr_scale"), g.lr_scale)?;
        for v in &g.vars {
            if !seen.insert(v.id()) {
                return Err(config_error(
                    &format!("param_groups[{i}]"),
                    format!("a variable of shape {:?} appears twice", v.dims()),
                ));
            }
        }
    }
    Ok(())
}

/// The gradient of `var` in `grads`, detached (so optimizer state never holds a graph), in the
/// variable's dtype.
fn grad_of(grads: &GradStore, var: &Var) -> candle_core::Result<Option<Tensor>> {
    grads
        .get(var)
        .map(|g| g.detach().to_dtype(var.dtype()))
        .transpose()
}

// ------------------------------------------------------------------------------------------
// SGD.

/// Hyper-parameters of [`Sgd`] (weight decay lives in the [`ParamGroup`]s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    /// Learning rate (`torch.optim.SGD` default: 1e-3).
    #[serde(default = "default_sgd_lr")]
    pub lr: f64,
    /// Momentum factor (torch default: 0 = plain SGD).
    #[serde(default)]
    pub momentum: f64,
    /// Dampening of the gradient in the momentum buffer (torch default: 0).
    #[serde(default)]
    pub dampening: f64,
    /// Nesterov momentum (torch default: false; needs momentum > 0 and dampening 0).
    #[serde(default)]
    pub nesterov: bool,
}

/// `torch.optim.SGD`'s default learning rate (PyTorch ≥ 2.1).
fn default_sgd_lr() -> f64 {
    1e-3
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self {
            lr: default_sgd_lr(),
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
        }
    }
}

/// `torch.optim.SGD`: per variable, `d = g + wd·p`; with momentum `b = d` on the first step and
/// `b = μ·b + (1 − τ)·d` after; `d = d + μ·b` (Nesterov) or `d = b`; then `p ← p − lr·d`.
#[derive(Debug)]
pub struct Sgd {
    groups: Vec<ParamGroup>,
    cfg: SgdConfig,
    /// Momentum buffers, `[group][var]`.
    buffers: Vec<Vec<Option<Buffer>>>,
}

impl Sgd {
    /// An optimizer over `groups`; errors on invalid hyper-parameters (as PyTorch does).
    pub fn new(groups: Vec<ParamGroup>, cfg: SgdConfig) -> Result<Self> {
        check_finite_nonneg("Sgd.lr", cfg.lr)?;
        check_finite_nonneg("Sgd.momentum", cfg.momentum)?;
        check_finite_nonneg("Sgd.dampening", cfg.dampening)?;
        if cfg.nesterov && (cfg.momentum <= 0.0 || cfg.dampening != 0.0) {
            return Err(config_error(
                "Sgd.nesterov",
                format!(
                    "Nesterov momentum requires momentum > 0 and dampening = 0, got momentum {} and dampening {}",
                    cfg.momentum, cfg.dampening
                ),
            ));
        }
        check_groups(&groups)?;
        let buffers = groups.iter().map(|g| vec![None; g.vars.len()]).collect();
        Ok(Self {
            groups,
            cfg,
            buffers,
        })
    }

    /// The current momentum factor.
    pub fn momentum(&self) -> f64 {
        self.cfg.momentum
    }

    /// Sets the momentum factor (for schedules that cycle it, like OneCycle's
    /// `cycle_momentum`). Buffers are kept.
    pub fn set_momentum(&mut self, momentum: f64) {
        self.cfg.momentum = momentum;
    }

    /// The parameter groups.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        let SgdConfig {
            lr,
            momentum,
            dampening,
            nesterov,
        } = self.cfg;
        for (group, bufs) in self.groups.iter().zip(&mut self.buffers) {
            let lr = lr * group.lr_scale;
            for (var, buf) in group.vars.iter().zip(bufs.iter_mut()) {
                let Some(mut d) = grad_of(grads, var)? else {
                    continue;
                };
                if host::eligible(var) {
                    let first = buf.is_none();
                    let mut state = Vec::new();
                    if momentum != 0.0 {
                        state.push(match buf.take() {
                            Some(Buffer::Host(b)) => b,
                            _ => StateBuf::zeros(var)?,
                        });
                    }
                    let rule = host::Rule::Sgd {
                        lr,
                        wd: group.weight_decay,
                        momentum,
                        dampening,
                        nesterov,
                        first,
                    };
                    host::step(var, &d, rule, &mut state)?;
                    *buf = state.pop().map(Buffer::Host);
                    continue;
                }
                let p = var.as_tensor().detach();
                if group.weight_decay != 0.0 {
                    d = (d + p.affine(group.weight_decay, 0.0)?)?;
                }
                if momentum != 0.0 {
                    let b = match buf.take() {
                        Some(Buffer::Tensor(b)) => {
                            (b.affine(momentum, 0.0)? + d.affine(1.0 - dampening, 0.0)?)?
                        }
                        _ => d.clone(),
                    };
                    d = if nesterov {
                        (d + b.affine(momentum, 0.0)?)?
                    } else {
                        b.clone()
                    };
                    *buf = Some(Buffer::Tensor(b));
                }
                var.set(&(p - d.affine(lr, 0.0)?)?)?;
            }
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.cfg.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }
}

// ------------------------------------------------------------------------------------------
// Adam / AdamW.

/// Hyper-parameters of [`Adam`] and [`AdamW`] (weight decay lives in the [`ParamGroup`]s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate (torch default: 1e-3).
    #[serde(default = "default_adam_lr")]
    pub lr: f64,
    /// Decay of the first moment (torch default `betas[0]` = 0.9).
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Decay of the second moment (torch default `betas[1]` = 0.999).
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Added to `√v̂` in the denominator (torch default: 1e-8).
    #[serde(default = "default_eps")]
    pub eps: f64,
}

/// torch.optim.Adam/AdamW default learning rate.
fn default_adam_lr() -> f64 {
    1e-3
}
/// torch default `betas[0]`.
fn default_beta1() -> f64 {
    0.9
}
/// torch default `betas[1]`.
fn default_beta2() -> f64 {
    0.999
}
/// torch default `eps`.
fn default_eps() -> f64 {
    1e-8
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: default_adam_lr(),
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
        }
    }
}

/// An optimizer state buffer: a tensor (generic path) or host memory (fused CPU path).
#[derive(Debug, Clone)]
enum Buffer {
    Tensor(Tensor),
    Host(StateBuf),
}

/// Per-variable Adam state: step count and the two moments.
#[derive(Debug, Clone)]
struct Moments {
    step: i32,
    m: Tensor,
    v: Tensor,
}

/// Adam state of one variable: tensors on the generic path, `[m, v]` in host memory on the
/// fused CPU path.
#[derive(Debug, Clone)]
enum AdamState {
    Tensor(Moments),
    Host { step: i32, mv: [StateBuf; 2] },
}

/// The shared implementation; `decoupled` selects AdamW's weight decay.
#[derive(Debug)]
struct AdamCore {
    groups: Vec<ParamGroup>,
    cfg: AdamConfig,
    decoupled: bool,
    state: Vec<Vec<Option<AdamState>>>,
}

impl AdamCore {
    fn new(groups: Vec<ParamGroup>, cfg: AdamConfig, decoupled: bool) -> Result<Self> {
        let name = if decoupled { "AdamW" } else { "Adam" };
        check_finite_nonneg(&format!("{name}.lr"), cfg.lr)?;
        check_finite_nonneg(&format!("{name}.eps"), cfg.eps)?;
        for (field, b) in [("beta1", cfg.beta1), ("beta2", cfg.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(config_error(
                    &format!("{name}.{field}"),
                    format!("must be in [0, 1), got {b}"),
                ));
            }
        }
        check_groups(&groups)?;
        let state = groups.iter().map(|g| vec![None; g.vars.len()]).collect();
        Ok(Self {
            groups,
            cfg,
            decoupled,
            state,
        })
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        let AdamConfig {
            lr,
            beta1,
            beta2,
            eps,
        } = self.cfg;
        for (group, states) in self.groups.iter().zip(&mut self.state) {
            let lr = lr * group.lr_scale;
            let wd = group.weight_decay;
            for (var, state) in group.vars.iter().zip(states.iter_mut()) {
                let Some(mut g) = grad_of(grads, var)? else {
                    continue;
                };
                if host::eligible(var) {
                    let (step, mut mv) = match state.take() {
                        Some(AdamState::Host { step, mv }) => (step.saturating_add(1), mv),
                        _ => (1, [StateBuf::zeros(var)?, StateBuf::zeros(var)?]),
                    };
                    let rule = host::Rule::Adam {
                        lr,
                        wd,
                        decoupled: self.decoupled,
                        beta1,
                        beta2,
                        eps,
                        step,
                    };
                    host::step(var, &g, rule, &mut mv)?;
                    *state = Some(AdamState::Host { step, mv });
                    continue;
                }
                let mut p = var.as_tensor().detach();
                if wd != 0.0 {
                    if self.decoupled {
                        p = p.affine(1.0 - lr * wd, 0.0)?;
                    } else {
                        g = (g + p.affine(wd, 0.0)?)?;
                    }
                }
                let s = match state.take() {
                    None | Some(AdamState::Host { .. }) => Moments {
                        step: 1,
                        m: g.affine(1.0 - beta1, 0.0)?,
                        v: g.sqr()?.affine(1.0 - beta2, 0.0)?,
                    },
                    Some(AdamState::Tensor(s)) => Moments {
                        step: s.step.saturating_add(1),
                        m: (s.m.affine(beta1, 0.0)? + g.affine(1.0 - beta1, 0.0)?)?,
                        v: (s.v.affine(beta2, 0.0)? + g.sqr()?.affine(1.0 - beta2, 0.0)?)?,
                    },
                };
                let bc1 = 1.0 - beta1.powi(s.step);
                let bc2 = 1.0 - beta2.powi(s.step);
                let denom = s.v.sqrt()?.affine(1.0 / bc2.sqrt(), eps)?;
                let update = (&s.m / denom)?.affine(lr / bc1, 0.0)?;
                var.set(&(p - update)?)?;
                *state = Some(AdamState::Tensor(s));
            }
        }
        Ok(())
    }
}

/// Defines a public Adam variant over [`AdamCore`] (`decoupled` selects AdamW's decay).
macro_rules! adam_variant {
    ($(#[$doc:meta])* $name:ident, decoupled = $decoupled:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(AdamCore);

        impl $name {
            /// An optimizer over `groups`; errors on invalid hyper-parameters.
            pub fn new(groups: Vec<ParamGroup>, cfg: AdamConfig) -> Result<Self> {
                AdamCore::new(groups, cfg, $decoupled).map(Self)
            }

            /// Sets `beta1` (for schedules that cycle momentum).
            pub fn set_beta1(&mut self, beta1: f64) {
                self.0.cfg.beta1 = beta1;
            }

            /// The parameter groups.
            pub fn groups(&self) -> &[ParamGroup] {
                &self.0.groups
            }
        }

        impl Optimizer for $name {
            fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
                self.0.step(grads)
            }
            fn learning_rate(&self) -> f64 {
                self.0.cfg.lr
            }
            fn set_learning_rate(&mut self, lr: f64) {
                self.0.cfg.lr = lr;
            }
        }
    };
}

adam_variant!(
    /// `torch.optim.Adam` (`amsgrad = false`): the group's weight decay is L2, added to the
    /// gradient (`g ← g + wd·p`); `m̂/(√v̂ + eps)` with bias-corrected moments.
    Adam,
    decoupled = false
);

adam_variant!(
    /// `torch.optim.AdamW`: Adam with decoupled weight decay `p ← p·(1 − lr·wd)` before the Adam
    /// update (torch's default `weight_decay = 0.01` must be set on the groups explicitly).
    AdamW,
    decoupled = true
);
