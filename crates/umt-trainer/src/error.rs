//! The crate's error type.

use std::path::PathBuf;

/// Errors of `umt-trainer`. Variants name what was expected, what was found and the file or
/// stage involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error raised by candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An error of `umt-nn` (checkpoints, optimisers).
    #[error(transparent)]
    Nn(#[from] umt_nn::Error),
    /// An error of `umt-data` (dataset generation, configs).
    #[error(transparent)]
    Data(#[from] umt_data::Error),
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file could not be read or written (unknown key, wrong type, ...).
    #[error("{path}: {source}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A method name that is not one of the nine.
    #[error("unknown method `{name}`: expected one of {expected}")]
    UnknownMethod {
        /// The name given.
        name: String,
        /// The accepted names.
        expected: String,
    },
    /// A dataset name that is unknown, or known but not provided by this build.
    #[error("dataset `{name}`: {problem}")]
    Dataset {
        /// The name given.
        name: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// The data directory does not exist.
    #[error("data directory {path} does not exist")]
    MissingDataDir {
        /// The directory given.
        path: PathBuf,
    },
    /// A configuration field has an invalid value.
    #[error("invalid config field `{field}`: expected {expected}, found {found}")]
    InvalidConfig {
        /// The field (dotted path).
        field: &'static str,
        /// What a valid value looks like.
        expected: String,
        /// The value found.
        found: String,
    },
    /// A checkpoint does not fit the model it is loaded into (e.g. a teacher trained with
    /// another architecture).
    #[error("checkpoint {path} does not fit the {what}: {source}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// Which model it was loaded into.
        what: String,
        /// The strict loader's error (names the missing/unexpected/mis-shaped keys).
        source: Box<umt_nn::Error>,
    },
    /// The output folder holds a run made with another configuration: resuming would mix them.
    #[error("{path} was written by a run with a different configuration; use another --out folder (or delete it) to start a new run")]
    ConfigChanged {
        /// The `config.json` of the existing run.
        path: PathBuf,
    },
    /// A teacher checkpoint's card (its `umt_teacher` metadata) is missing, malformed, or does
    /// not fit the run that wants to use it.
    #[error("teacher {path}: {problem}")]
    TeacherCard {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong (names the field).
        problem: String,
    },
    /// `export-teachers` cannot export a run folder.
    #[error("export: {path} {problem}")]
    Export {
        /// The file or folder involved.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
    /// The loss became NaN or infinite: the run stops; finished stages stay on disk.
    #[error("non-finite loss {loss} in `{stage}` at epoch {epoch}, step {step}; last finished checkpoint: {last_checkpoint}")]
    NonFiniteLoss {
        /// The stage (method or teacher) being trained.
        stage: String,
        /// Epoch (0-based).
        epoch: usize,
        /// Global optimisation step (0-based).
        step: usize,
        /// The loss value.
        loss: f32,
        /// The most recent checkpoint written by the run (or `none`).
        last_checkpoint: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Wraps an `std::io::Error` with its path.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
