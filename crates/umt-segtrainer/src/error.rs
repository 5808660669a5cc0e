//! The crate's error type.

use std::path::PathBuf;

/// Errors of `umt-segtrainer`. Variants carry what was expected and what was found, and the
/// path of the file involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the model crate (shapes, labels, class weights).
    #[error(transparent)]
    EsaNet(#[from] umt_esanet::Error),
    /// An error of the data crate (generator config, augmentation, batching).
    #[error(transparent)]
    Data(#[from] umt_data::Error),
    /// An error of `umt-nn` (optimisers, checkpoints).
    #[error(transparent)]
    Nn(#[from] umt_nn::Error),
    /// An error raised by candle itself.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or written (unknown keys included).
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A configuration field has an invalid value.
    #[error("invalid segmentation config: field `{field}` expected {expected}, found {found}")]
    InvalidConfig {
        /// The field, as in the serialised config.
        field: &'static str,
        /// What a valid value looks like.
        expected: String,
        /// The value found.
        found: String,
    },
    /// The output folder holds results of another configuration.
    #[error("{path} holds a different configuration: use another --out folder or delete it")]
    ConfigChanged {
        /// The `config.json` of the output folder.
        path: PathBuf,
    },
    /// The training loss became NaN or infinite; finished stages are kept.
    #[error("stage `{stage}`: non-finite loss {loss} at epoch {epoch}, step {step}")]
    NonFiniteLoss {
        /// The stage folder (relative to the output folder).
        stage: String,
        /// The epoch (0-based).
        epoch: usize,
        /// The step within the epoch (0-based).
        step: usize,
        /// The loss value.
        loss: f64,
    },
    /// The NYUv2 folder, a split list or an image is missing.
    #[error(
        "{what} not found: {path}; write the NYUv2 folder with `cargo xtask prepare-nyuv2 \
         --mat nyu_depth_v2_labeled.mat --splits splits.mat --out DIR` and pass `--data-dir DIR`"
    )]
    Nyuv2Missing {
        /// The missing file or folder.
        path: PathBuf,
        /// What it should have been.
        what: &'static str,
    },
    /// A checkpoint tensor has another shape than the model's variable.
    #[error("{path}: tensor `{key}` has shape {found:?}, the model expects {expected:?}")]
    TensorShape {
        /// The checkpoint.
        path: PathBuf,
        /// The key in the checkpoint.
        key: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A checkpoint holds a tensor the model does not have.
    #[error("{path}: unexpected tensor `{key}` (the model has no such variable)")]
    UnexpectedTensor {
        /// The checkpoint.
        path: PathBuf,
        /// The key in the checkpoint.
        key: String,
    },
    /// A checkpoint lacks a tensor a model needs.
    #[error("{path}: missing tensor `{key}`")]
    MissingTensor {
        /// The checkpoint.
        path: PathBuf,
        /// The missing key.
        key: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A closure turning an I/O error into [`Error::Io`] for `path`.
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
