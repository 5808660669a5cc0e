//! The crate's error type: failures of the whole run. A single bad clip is never an error of
//! the run; it becomes a [`crate::Failure`] line in the report.

use std::path::PathBuf;

/// Run-level errors of `umt-data-prep`. Variants name the file, line or field involved and
/// what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `ffmpeg` or `ffprobe` cannot be started.
    #[error(
        "`{tool}` is not on PATH ({source}); install FFmpeg: `apt-get install ffmpeg` \
         (Debian/Ubuntu), `dnf install ffmpeg` (Fedora), `brew install ffmpeg` (macOS), \
         or a static build from https://ffmpeg.org/download.html"
    )]
    ToolNotFound {
        /// The program looked for.
        tool: &'static str,
        /// The error of the attempt to start it.
        source: std::io::Error,
    },
    /// The CSV cannot be parsed at a line (bad quoting, invalid UTF-8, ...).
    #[error("{path}:{line}: cannot parse the CSV: {message}")]
    CsvSyntax {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The parser's message.
        message: String,
    },
    /// A CSV field has an unexpected value.
    #[error("{path}:{line}: field `{field}`: expected {expected}, found {found:?}")]
    CsvField {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The field (`youtube_id`, `start_seconds`, `label`, `split` or `record`).
        field: &'static str,
        /// What a valid value looks like.
        expected: String,
        /// The value found.
        found: String,
    },
    /// A setting has a value outside its valid range.
    #[error("invalid setting `{field}`: expected {expected}, found {found}")]
    InvalidConfig {
        /// The setting (flag or field name).
        field: &'static str,
        /// What a valid value looks like.
        expected: String,
        /// The value found.
        found: String,
    },
    /// The output folder was prepared with other settings; mixing them would give clips of
    /// different frame rates or sizes in one dataset.
    #[error(
        "{path}: the output was prepared with other settings (found {found}, this run uses \
         {expected}); use another --out or the same settings"
    )]
    SettingsMismatch {
        /// The `prepare.json` of the output folder.
        path: PathBuf,
        /// This run's settings (JSON).
        expected: String,
        /// The stored settings (JSON).
        found: String,
    },
    /// A file or folder of the run cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file of the run cannot be parsed.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Wraps an I/O error with the path involved.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
