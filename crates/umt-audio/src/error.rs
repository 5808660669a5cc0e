//! The crate's error type.

use std::path::{Path, PathBuf};

/// Errors of `umt-audio`. Variants carry what was expected, what was found and, when a file is
/// involved, its path. Nothing in this crate panics on user data: every problem ends up here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read (missing, permission denied, ...).
    #[error("{path}: cannot read file: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file does not start with a `RIFF....WAVE` header.
    #[error("{path}: not a WAV file: expected a `RIFF....WAVE` header, found {found}")]
    NotWav {
        /// The file involved.
        path: PathBuf,
        /// What the first bytes look like.
        found: String,
    },
    /// The file ends before a header or chunk it announces is complete.
    #[error("{path}: truncated WAV file: {what} needs {expected_bytes} bytes, only {found_bytes} present")]
    Truncated {
        /// The file involved.
        path: PathBuf,
        /// Which part is cut short (`"fmt chunk"`, `"data chunk"`, ...).
        what: &'static str,
        /// Bytes the header announces.
        expected_bytes: u64,
        /// Bytes actually present.
        found_bytes: u64,
    },
    /// The WAV structure is inconsistent (missing chunk, bad block alignment, ...).
    #[error("{path}: malformed WAV file: {problem}")]
    Malformed {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The sample encoding is not linear PCM or IEEE float (A-law, µ-law, ADPCM, ...).
    #[error("{path}: unsupported WAV encoding {name} (format tag {format_tag:#06x}); expected integer PCM (1) or IEEE float (3)")]
    UnsupportedEncoding {
        /// The file involved.
        path: PathBuf,
        /// `wFormatTag` (or the sub-format of a `WAVE_FORMAT_EXTENSIBLE` file).
        format_tag: u16,
        /// A readable name of the encoding.
        name: &'static str,
    },
    /// The encoding is supported but not at this sample width (e.g. 12-bit PCM).
    #[error("{path}: unsupported sample width: {encoding} with {bits} bits per sample; expected {expected}")]
    UnsupportedBitDepth {
        /// The file involved.
        path: PathBuf,
        /// `"integer PCM"` or `"IEEE float"`.
        encoding: &'static str,
        /// Bits per sample found in the header.
        bits: u16,
        /// The widths that are supported.
        expected: &'static str,
    },
    /// A float WAV file holds NaN or infinity.
    #[error("{path}: sample {index} is not finite ({value})")]
    NonFiniteSample {
        /// The file involved.
        path: PathBuf,
        /// Index of the first bad sample (interleaved).
        index: usize,
        /// Its value.
        value: f32,
    },
    /// A clip has no samples, so it cannot be cropped or tiled to a fixed duration.
    #[error("{}: empty clip (zero samples): cannot crop or tile it to {target_len} samples", show(path.as_deref()))]
    EmptyClip {
        /// The file the clip came from, when known.
        path: Option<PathBuf>,
        /// The length it should have been brought to.
        target_len: usize,
    },
    /// A signal is too short for the STFT's padding or window.
    #[error("signal of {found} samples is too short: {reason} needs at least {expected} samples")]
    SignalTooShort {
        /// The minimum length.
        expected: usize,
        /// The length given.
        found: usize,
        /// Why the minimum exists.
        reason: &'static str,
    },
    /// A buffer or batch has the wrong length.
    #[error("{what}: expected length {expected}, found {found}")]
    LengthMismatch {
        /// Which buffer.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        found: usize,
    },
    /// A configuration field is out of range.
    #[error("invalid config field `{field}`: expected {expected}, found {found}")]
    InvalidConfig {
        /// The field, as spelled in the serde config.
        field: &'static str,
        /// The allowed values.
        expected: String,
        /// The value given.
        found: String,
    },
    /// The FFT library rejected a buffer (an internal error: please report it).
    #[error("FFT failed: {message}")]
    Fft {
        /// The message of `realfft`.
        message: String,
    },
}

fn show(path: Option<&Path>) -> String {
    path.map_or_else(
        || "<in-memory clip>".to_owned(),
        |p| p.display().to_string(),
    )
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;
