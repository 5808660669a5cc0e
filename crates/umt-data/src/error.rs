//! The crate's error type.

use std::path::PathBuf;

/// Errors of `umt-data`. Variants carry what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration field has a value outside its valid range.
    #[error("invalid config field `{field}`: expected {expected}, found {found}")]
    InvalidConfig {
        /// The field (dotted path, e.g. `audio.n_fft`).
        field: &'static str,
        /// What a valid value looks like.
        expected: String,
        /// The value found.
        found: String,
    },
    /// A configuration file could not be parsed (unknown key, wrong type, ...).
    #[error("{path}: invalid dataset config: {source}")]
    ConfigParse {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// An index does not fit the dataset.
    #[error("sample index {index} out of range for a dataset of {len} samples")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The dataset length.
        len: usize,
    },
    /// A dataset name that this crate does not know (or does not implement yet).
    #[error("unknown dataset `{name}`: expected one of {expected}")]
    UnknownDataset {
        /// The name given.
        name: String,
        /// The names that are accepted.
        expected: &'static str,
    },
    /// Tensor data and its declared shape disagree.
    #[error("{what}: expected {expected} values, found {found}")]
    ShapeMismatch {
        /// Which buffer.
        what: &'static str,
        /// Values the shape implies.
        expected: usize,
        /// Values present.
        found: usize,
    },
    /// The audio front end (`umt-audio`) rejected its input.
    #[error("audio front end: {0}")]
    Audio(String),
    /// The video front end (`umt-video`) rejected its input.
    #[error("video front end: {0}")]
    Video(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
