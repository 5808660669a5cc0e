//! The crate's error type.

/// Errors of `umt-esanet`. Variants carry what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error raised by candle itself (a shape mismatch deep inside an op, a device error).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An error of `umt-nn` (checkpoints, gradient checks).
    #[error(transparent)]
    Nn(#[from] umt_nn::Error),
    /// An error of the ResNet encoders.
    #[error(transparent)]
    ResNet(#[from] umt_resnet::Error),
    /// A configuration field has a value the model cannot be built with.
    #[error("invalid ESANet config: field `{field}` {problem}")]
    Config {
        /// The name of the field (as in the serialised config).
        field: &'static str,
        /// What is wrong with its value.
        problem: String,
    },
    /// A tensor passed to the model, the loss or the metrics has the wrong shape or dtype.
    #[error("{what}: expected {expected}, found {found:?}")]
    InputShape {
        /// Which tensor or entry point.
        what: &'static str,
        /// The expected layout, e.g. `(B, 3, 480, 640)`.
        expected: String,
        /// The dimensions of the tensor that was passed.
        found: Vec<usize>,
    },
    /// An input the model's modality needs was not passed (e.g. no depth for an RGB-D model).
    #[error("{model} needs a {input} input, none was given")]
    MissingInput {
        /// The model variant.
        model: &'static str,
        /// The missing input (`rgb` or `depth`).
        input: &'static str,
    },
    /// A label value outside `0..=num_classes` (0 is void).
    #[error("{what}: label {found} is outside 0..={max} (0 = void, 1..={max} classes)")]
    LabelOutOfRange {
        /// Which label tensor or buffer.
        what: &'static str,
        /// The largest valid label (the number of classes).
        max: usize,
        /// The offending value.
        found: u64,
    },
    /// Class weights cannot be computed because a class never occurs in the labels.
    #[error("class {class} (label {label}) has no pixels in the label histogram: its median-frequency weight is undefined")]
    AbsentClass {
        /// The class index `0..K` (label − 1).
        class: usize,
        /// The label value `1..=K`.
        label: usize,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
