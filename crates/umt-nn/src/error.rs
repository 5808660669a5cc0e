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
