//! Listing a clip directory: frame files in natural order.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use crate::error::{Result, VideoError};

/// File extensions read as frames (compared case-insensitively).
pub const FRAME_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// `true` if `path` ends in `.jpg`, `.jpeg` or `.png`, in any case.
pub fn is_frame_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| FRAME_EXTENSIONS.iter().any(|f| e.eq_ignore_ascii_case(f)))
}

/// Natural ("human") order of two file names: `frame_2 < frame_10`.
///
/// Names are split into runs of ASCII digits and runs of other characters and compared run by
/// run: two digit runs by numeric value (any length, no overflow), two text runs bytewise, and
/// a digit run sorts before a text run. When all runs tie (`img_01` vs `img_1`), the name with
/// fewer leading zeros comes first and, last, the plain bytewise order of the whole names
/// decides, so the order is total and deterministic. Names without any number therefore sort
/// bytewise among themselves (`a.png < b.png`, `B.png < a.png`).
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    let mut zeros_tiebreak = Ordering::Equal;
    loop {
        match (x.first(), y.first()) {
            (None, None) => break,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(cx), Some(cy)) => {
                let (dx, dy) = (cx.is_ascii_digit(), cy.is_ascii_digit());
                let run_x = run_len(x, dx);
                let run_y = run_len(y, dy);
                let (rx, ry) = (&x[..run_x], &y[..run_y]);
                let ord = match (dx, dy) {
                    (true, true) => {
                        let tx = trim_zeros(rx);
                        let ty = trim_zeros(ry);
                        if zeros_tiebreak == Ordering::Equal {
                            // More leading zeros (same value) sorts later.
                            zeros_tiebreak = rx.len().cmp(&ry.len());
                        }
                        tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty))
                    }
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (false, false) => rx.cmp(ry),
                };
                if ord != Ordering::Equal {
                    return ord;
                }
                x = &x[run_x..];
                y = &y[run_y..];
            }
        }
    }
    zeros_tiebreak.then_with(|| a.cmp(b))
}

fn run_len(s: &[u8], digits: bool) -> usize {
    s.iter()
        .position(|c| c.is_ascii_digit() != digits)
        .unwrap_or(s.len())
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&c| c != b'0').unwrap_or(s.len());
    &s[start..]
}

/// The frame files of a clip directory (extensions in [`FRAME_EXTENSIONS`], any case), sorted
/// by [`natural_cmp`] on the file name. Subdirectories and other files are ignored; hidden
/// files are not special. Errors if the directory cannot be listed or holds no frames.
pub fn list_frames(dir: &Path) -> Result<Vec<PathBuf>> {
    let read_dir = |source| VideoError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut frames = Vec::new();
    let mut other_entries = 0;
    for entry in std::fs::read_dir(dir).map_err(read_dir)? {
        let entry = entry.map_err(read_dir)?;
        let path = entry.path();
        // `metadata` follows symlinks, so a link to a frame counts as a frame.
        let is_file = std::fs::metadata(&path).is_ok_and(|m| m.is_file());
        if is_file && is_frame_file(&path) {
            frames.push(path);
        } else {
            other_entries += 1;
        }
    }
    if frames.is_empty() {
        return Err(VideoError::NoFrames {
            path: dir.to_path_buf(),
            other_entries,
        });
    }
    frames.sort_by(|a, b| natural_cmp(&file_name(a), &file_name(b)));
    Ok(frames)
}

/// The file name of `path` as text (lossy for non-UTF-8 names).
pub(crate) fn file_name(path: &Path) -> std::borrow::Cow<'_, str> {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default()
}
