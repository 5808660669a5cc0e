//! Dataset preparation for Uni-Modal Teacher: VGGSound (paper §4.1) from downloaded videos
//! into the layout that [`umt_data::vggsound`] reads, with the FFmpeg command-line tools
//! (`ffmpeg`, `ffprobe`) as subprocesses. The user's front door is
//! `cargo xtask prepare-vggsound`; `docs/vggsound.md` walks from videos to `reproduce-table2`.
//!
//! What one run does:
//!
//! 1. reads the official `vggsound.csv` ([`manifest::read_csv`]: `youtube_id,start_seconds,
//!    label,split`, quoted labels with commas, an optional header) and writes the class list,
//!    every label sorted by name, so class ids are the same on every machine;
//! 2. finds each row's file in the videos folder by a [`NamePattern`]
//!    (`{youtube_id}_{start:06}.mp4` by default);
//! 3. prepares the clips on `jobs` threads, behind a progress bar with ETA: the first 10 s of
//!    frames at [`Settings::frames_fps`], resized to 256×256 JPEG; the audio mixed to mono,
//!    resampled to 16 kHz by ffmpeg, tiled or cut to 10 s and written as a 32-bit float WAV.
//!    Each clip is written into `clips/.tmp-<id>` and renamed to `clips/<id>` when complete,
//!    so a killed run leaves no half clip; a rerun skips the complete ones;
//! 4. rebuilds `index.jsonl` from every complete clip, and writes `report.jsonl`: one line per
//!    clip that failed (missing file, unreadable or truncated file, no audio track, no video
//!    stream, decode error) and per file that no CSV row names, with the reason. A bad clip
//!    never stops the run; the [`Summary`] counts prepared, skipped and failed clips.
//!
//! Only run-level problems are [`Error`]s: FFmpeg absent (with how to install it), an
//! unreadable CSV (naming the line and field), unreadable folders, a settings mismatch with
//! an earlier run in the same folder.
//!
//! ```no_run
//! use umt_data_prep::{prepare, PrepareOptions};
//!
//! let mut opts = PrepareOptions::new("vggsound.csv", "videos/", "data/vggsound");
//! opts.jobs = 8;
//! opts.progress = true;
//! let summary = prepare(&opts)?;
//! println!("{summary}"); // prepared 8, skipped 0 (already done), failed 1 (missing: 1), …
//! # Ok::<(), umt_data_prep::Error>(())
//! ```

mod error;
mod ffmpeg;
pub mod manifest;
pub mod pattern;
mod prepare;
pub mod report;

pub use error::{Error, Result};
pub use ffmpeg::{check_tools, tools_available};
pub use pattern::{NamePattern, DEFAULT_NAME_PATTERN};
pub use prepare::{prepare, PrepareOptions, Settings, Summary, TMP_PREFIX};
pub use report::{Failure, FailureReason};
