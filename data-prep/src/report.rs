//! The failure report: one JSON line per clip that could not be prepared, with the reason.

use serde::{Deserialize, Serialize};

/// Why a clip could not be prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The CSV lists the clip but no file of that name is in the videos folder.
    Missing,
    /// A file in the videos folder matches no CSV row.
    NotInCsv,
    /// `ffprobe` cannot open the file (truncated, not a media file).
    Unreadable,
    /// The file has no video stream.
    NoVideoStream,
    /// The file has no audio stream.
    NoAudioStream,
    /// `ffmpeg` failed while decoding the video stream.
    VideoDecode,
    /// `ffmpeg` failed while decoding the audio stream.
    AudioDecode,
    /// The video stream decodes to no frames.
    NoFrames,
    /// The audio stream decodes to no samples.
    EmptyAudio,
    /// Writing the output (or starting ffmpeg) failed.
    Io,
}

/// One line of `report.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// The clip (`{youtube_id}_{start:06}`), absent for files that match no CSV row.
    pub clip_id: Option<String>,
    /// The video file involved (absent when it is missing).
    pub source: Option<String>,
    /// Why.
    pub reason: FailureReason,
    /// Details (ffmpeg's last messages, the expected file name, ...).
    pub detail: String,
}

impl Failure {
    /// A failure with no clip or source attached yet.
    pub fn new(reason: FailureReason, detail: impl Into<String>) -> Self {
        Self {
            clip_id: None,
            source: None,
            reason,
            detail: detail.into(),
        }
    }

    /// Attaches the clip id and source file.
    pub fn with_clip(mut self, clip_id: Option<String>, source: Option<String>) -> Self {
        self.clip_id = clip_id;
        self.source = source;
        self
    }
}
