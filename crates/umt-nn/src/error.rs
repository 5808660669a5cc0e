//! The crate's error type.

use std::path::PathBuf;

/// Errors of `umt-nn`. Variants carry what was expected, what was found and the file involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error raised by candle itself.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An invalid hyper-parameter (optimizer, schedule, op argument).
    #[error("invalid {field}: {reason}")]
    Config {
        /// The field or argument, e.g. `Sgd.momentum`.
        field: String,
        /// What is wrong with it, with the value found.
        reason: String,
    },
    /// The file is not a readable safetensors file (truncated, bad header, bad dtype).
    #[error("{path}: not a valid safetensors checkpoint: {reason}")]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint's `__metadata__` is malformed (e.g. `config` is not JSON).
    #[error("{path}: bad checkpoint metadata `{key}`: {reason}")]
    Metadata {
        /// The file involved (empty when building metadata to save).
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Variables of the model are absent from the checkpoint. `unexpected` lists the file's
    /// keys the model does not have (a renamed tensor shows up in both lists).
    #[error("{path}: {n} missing key(s): {keys:?}; unexpected key(s) in the file: {unexpected:?}", n = keys.len())]
    MissingKeys {
        /// The file involved.
        path: PathBuf,
        /// Every missing key, sorted.
        keys: Vec<String>,
        /// Every unexpected key, sorted (may be empty).
        unexpected: Vec<String>,
    },
    /// The checkpoint holds tensors the model does not have.
    #[error("{path}: {n} unexpected key(s): {keys:?}", n = keys.len())]
    UnexpectedKeys {
        /// The file involved.
        path: PathBuf,
        /// Every unexpected key, sorted.
        keys: Vec<String>,
    },
    /// A tensor's shape in the checkpoint differs from the model's variable.
    #[error(
        "{path}: tensor `{key}` has shape {found:?} in the file, the model expects {expected:?}"
    )]
    ShapeMismatch {
        /// The file involved.
        path: PathBuf,
        /// The tensor name.
        key: String,
        /// The model variable's shape.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A finite-difference gradient check failed.
    #[error("gradient check failed for input {input}, element {index}: analytic {analytic:.6e}, numeric {numeric:.6e} (tolerance {tolerance:.1e})")]
    GradCheck {
        /// Which input tensor.
        input: usize,
        /// Flat index of the element inside that input.
        index: usize,
        /// Gradient from backprop.
        analytic: f64,
        /// Gradient from central differences.
        numeric: f64,
        /// The tolerance that was exceeded: `atol + rtol * |numeric|`.
        tolerance: f64,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
