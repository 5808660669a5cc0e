//! The crate's error type.

/// Errors of `umt-resnet`. Variants carry what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error raised by candle itself (a shape mismatch deep inside an op, a device error).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An error of `umt-nn` (checkpoint loading names the file and the tensors involved).
    #[error(transparent)]
    Nn(#[from] umt_nn::Error),
    /// The input tensor of an encoder does not have the expected shape.
    #[error("{what}: expected input of shape {expected}, found {found:?}")]
    InputShape {
        /// Which encoder or entry point received the tensor.
        what: &'static str,
        /// The expected layout, e.g. `(B, 3, H, W)`.
        expected: String,
        /// The dimensions of the tensor that was passed.
        found: Vec<usize>,
    },
    /// A configuration field has a value the model cannot be built with.
    #[error("invalid ResNet config: field `{field}` {problem}")]
    Config {
        /// The name of the field.
        field: &'static str,
        /// What is wrong with its value.
        problem: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
