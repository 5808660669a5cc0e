//! Trainable building blocks on candle 0.11 for the UMT encoders and ESANet.
//!
//! candle-nn 0.11 has the layers but several wrong or missing backward passes (see
//! `../shared/notes/candle-0.11.md`): this crate holds ops with correct gradients, a fast
//! convolution, the training utilities candle lacks (optimizers with momentum/Nesterov/weight
//! decay and parameter groups, learning-rate schedules, gradient clipping) and strict safetensors
//! checkpoints. Every differentiable op here is covered by a finite-difference test built on
//! [`gradcheck`].

pub mod checkpoint;
pub mod conv;
#[cfg(feature = "cuda")]
mod cuda;
pub mod error;
pub mod gpu;
pub mod gradcheck;
pub mod init;
pub mod malloc;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod schedule;
mod simd;
pub mod upsample;

pub use error::{Error, Result};
