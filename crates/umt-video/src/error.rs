//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while listing, sampling, decoding, resizing or normalising
/// frames. Each variant names the file, directory or config field involved and what was
/// expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    /// The clip directory does not exist or cannot be listed.
    #[error("clip directory {path}: cannot list it: {source}")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The clip directory holds no frame files.
    #[error(
        "clip directory {path}: no frames found (expected files ending in .jpg, .jpeg or .png, \
         any case; found {other_entries} other entries)"
    )]
    NoFrames {
        /// The directory.
        path: PathBuf,
        /// How many entries of other kinds (other extensions, subdirectories) it holds.
        other_entries: usize,
    },

    /// A frame file cannot be read.
    #[error("frame {path}: cannot read it: {source}")]
    ReadFile {
        /// The frame file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A frame file cannot be decoded as an image (corrupt, truncated, wrong format).
    #[error("frame {path}: cannot decode it as JPEG or PNG: {source}")]
    Decode {
        /// The frame file (or `<memory>` for in-memory data).
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },

    /// An image has a zero width or height.
    #[error("frame {path}: decoded to an empty image ({width}x{height}); expected at least 1x1")]
    EmptyImage {
        /// The frame file (or `<memory>` for in-memory data).
        path: PathBuf,
        /// Decoded width in pixels.
        width: u32,
        /// Decoded height in pixels.
        height: u32,
    },

    /// A configuration value is out of range.
    #[error("config field `{field}`: expected {expected}, found {found}")]
    InvalidConfig {
        /// The field, as named in the serde config (e.g. `num_frames`).
        field: &'static str,
        /// What would have been accepted.
        expected: String,
        /// The value given.
        found: String,
    },

    /// An in-memory pixel buffer does not match the size it claims.
    #[error("{what}: expected {expected} values ({shape}), found {found}")]
    BufferSize {
        /// Which buffer (e.g. `rgb8 input`).
        what: &'static str,
        /// The shape that was claimed, spelled out (e.g. `(H=24, W=32, 3)`).
        shape: String,
        /// Expected number of values.
        expected: usize,
        /// Actual number of values.
        found: usize,
    },

    /// A frame index is past the end of the clip.
    #[error("frame index {index} out of range for a clip of {len} frames")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// Number of frames in the clip.
        len: usize,
    },

    /// The resizer rejected the request (only on internal inconsistencies).
    #[error("frame {path}: resize failed: {message}")]
    Resize {
        /// The frame file (or `<memory>` for in-memory data).
        path: PathBuf,
        /// fast_image_resize's message.
        message: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = VideoError> = std::result::Result<T, E>;
