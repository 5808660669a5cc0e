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
    /// A file or directory of a prepared dataset is missing (VGGSound layout: a clip's frame
    /// folder or WAV, the index, the class list).
    #[error("{path}: missing {what}")]
    MissingFile {
        /// The file or directory expected.
        path: PathBuf,
        /// What it should hold (`"frame folder"`, `"audio WAV"`, `"index"`, ...).
        what: &'static str,
    },
    /// A file of a prepared dataset cannot be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line of a prepared dataset's index or class list does not parse or does not agree with
    /// the rest of the dataset.
    #[error("{path}:{line}: {problem}")]
    IndexLine {
        /// The file involved.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong (expected vs found).
        problem: String,
    },
    /// A prefetching worker thread stopped without delivering its batch (it panicked).
    #[error("prefetch worker {worker} stopped before delivering batch {batch}")]
    WorkerStopped {
        /// The worker's number.
        worker: usize,
        /// The batch it owed.
        batch: usize,
    },
    /// An IDX file (MNIST) is corrupt: bad magic, unsupported element type, or a size that
    /// does not match its header.
    #[error("{path}: corrupt IDX file: expected {expected}, found {found}")]
    Idx {
        /// The file involved.
        path: PathBuf,
        /// What a valid file has there.
        expected: String,
        /// What this one has.
        found: String,
    },
    /// A recording could not be decoded or processed by the audio front end.
    #[error("{path}: {source}")]
    Recording {
        /// The recording.
        path: PathBuf,
        /// What `umt-audio` reported.
        source: umt_audio::Error,
    },
    /// A source or prepared file does not hold what it should: an FSDD file name that is not
    /// `{digit}_{speaker}_{take}.wav`, a missing or mis-shaped tensor of a prepared dataset.
    #[error("{path}: expected {expected}, found {found}")]
    FileContent {
        /// The file involved.
        path: PathBuf,
        /// What was expected.
        expected: String,
        /// What was found.
        found: String,
    },
    /// The audio front end (`umt-audio`) rejected its input.
    #[error("audio front end: {0}")]
    Audio(String),
    /// The video front end (`umt-video`) rejected its input.
    #[error("video front end: {0}")]
    Video(String),
    /// An image file cannot be opened or decoded (not a PNG, truncated, ...).
    #[error("{path}: cannot decode image: {problem}")]
    ImageDecode {
        /// The file involved.
        path: PathBuf,
        /// The decoder's message.
        problem: String,
    },
    /// An image has the wrong pixel format (e.g. 8-bit depth where 16-bit is required).
    #[error("{path}: expected {expected} image, found {found}")]
    ImageFormat {
        /// The file involved.
        path: PathBuf,
        /// The required format (`"16-bit grayscale"`, ...).
        expected: &'static str,
        /// The format found.
        found: String,
    },
    /// Two images of one sample (RGB, depth, labels) differ in size.
    #[error("{path}: expected {expected_height}x{expected_width} (size of {reference}), found {found_height}x{found_width}")]
    ImageSizeMismatch {
        /// The file whose size disagrees.
        path: PathBuf,
        /// The file that fixes the expected size.
        reference: PathBuf,
        /// Expected height.
        expected_height: usize,
        /// Expected width.
        expected_width: usize,
        /// Height found.
        found_height: usize,
        /// Width found.
        found_width: usize,
    },
    /// A label image holds a value that is neither void (0) nor a class id.
    #[error("{path}: label {value} at (row {row}, col {col}) outside 0..={max} (0 = void)")]
    LabelOutOfRange {
        /// The label file.
        path: PathBuf,
        /// The offending value.
        value: u32,
        /// Largest valid label (the class count).
        max: u32,
        /// Row of the first offending pixel.
        row: usize,
        /// Column of the first offending pixel.
        col: usize,
    },
    /// An image file cannot be written.
    #[error("{path}: cannot write image: {problem}")]
    ImageWrite {
        /// The file involved.
        path: PathBuf,
        /// The encoder's or file system's message.
        problem: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
