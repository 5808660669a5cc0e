//! The FFmpeg command-line tools as subprocesses: `ffprobe` lists a file's streams, `ffmpeg`
//! decodes frames (resampled in time, resized) and audio (mono, resampled) into pipes.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::report::{Failure, FailureReason};
use crate::Settings;

/// Checks that `ffmpeg` and `ffprobe` can be started; [`Error::ToolNotFound`] says how to
/// install them.
pub fn check_tools() -> Result<()> {
    for tool in ["ffmpeg", "ffprobe"] {
        Command::new(tool)
            .arg("-version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|source| Error::ToolNotFound { tool, source })?;
    }
    Ok(())
}

/// Whether `ffmpeg` and `ffprobe` are on PATH (for tests and tools that skip without them).
pub fn tools_available() -> bool {
    check_tools().is_ok()
}

/// Which streams a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Streams {
    pub video: bool,
    pub audio: bool,
}

/// The last part of a tool's diagnostics, on one line.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let n = text.chars().count();
    if n > 400 {
        format!("…{}", text.chars().skip(n - 400).collect::<String>())
    } else {
        text
    }
}

/// Lists the streams of `src` with `ffprobe`; a file it cannot open (truncated, not a media
/// file) is [`FailureReason::Unreadable`].
pub(crate) fn probe(src: &Path) -> std::result::Result<Streams, Failure> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type",
            "-of",
            "csv=p=0",
        ])
        .arg(src)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failure::new(FailureReason::Io, format!("cannot run ffprobe: {e}")))?;
    if !out.status.success() {
        return Err(Failure::new(
            FailureReason::Unreadable,
            format!("ffprobe cannot open it: {}", tail(&out.stderr)),
        ));
    }
    let kinds = String::from_utf8_lossy(&out.stdout);
    let has = |k: &str| kinds.lines().any(|l| l.trim().trim_end_matches(',') == k);
    Ok(Streams {
        video: has("video"),
        audio: has("audio"),
    })
}

fn base_command(src: &Path, threads: usize) -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(["-nostdin", "-hide_banner", "-v", "error", "-threads"])
        .arg(threads.to_string())
        .arg("-i")
        .arg(src);
    c
}

/// Decodes the first `clip_seconds` of the video of `src` at `frames_fps`, resized to
/// `frame_size_px²`, and writes one JPEG per frame (`000001.jpg`, …) into `frames_dir`.
/// Returns the number of frames written.
pub(crate) fn extract_frames(
    src: &Path,
    frames_dir: &Path,
    settings: &Settings,
    threads: usize,
) -> std::result::Result<usize, Failure> {
    let size = settings.frame_size_px;
    let mut child = base_command(src, threads)
        .arg("-t")
        .arg(settings.clip_seconds.to_string())
        .args(["-an", "-sn", "-vf"])
        .arg(format!(
            "fps={},scale={size}:{size}:flags=bilinear",
            settings.frames_fps
        ))
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(FailureReason::Io, format!("cannot run ffmpeg: {e}")))?;
    // Drain stderr on its own thread so that a chatty decoder cannot block the pipe.
    let stderr = child.stderr.take();
    let errs = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut s) = stderr {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let frame_len = (size as usize) * (size as usize) * 3;
    let mut buf = vec![0u8; frame_len];
    let mut count = 0usize;
    let mut write_err = None;
    if let Some(mut out) = child.stdout.take() {
        loop {
            match out.read_exact(&mut buf) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => {
                    write_err = Some(format!("reading ffmpeg's output: {e}"));
                    break;
                }
            }
            count += 1;
            let path = frames_dir.join(format!("{count:06}.jpg"));
            if let Err(e) = write_jpeg(&path, &buf, size, settings.jpeg_quality) {
                write_err = Some(format!("{}: {e}", path.display()));
                break;
            }
        }
    }
    if write_err.is_some() {
        let _ = child.kill();
    }
    let status = child.wait();
    let stderr = errs.join().unwrap_or_default();
    if let Some(e) = write_err {
        return Err(Failure::new(FailureReason::Io, e));
    }
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            return Err(Failure::new(
                FailureReason::VideoDecode,
                format!("ffmpeg failed on the video ({s}): {}", tail(&stderr)),
            ))
        }
        Err(e) => {
            return Err(Failure::new(
                FailureReason::Io,
                format!("waiting for ffmpeg: {e}"),
            ))
        }
    }
    if count == 0 {
        return Err(Failure::new(
            FailureReason::NoFrames,
            format!("the video stream decodes to no frames: {}", tail(&stderr)),
        ));
    }
    Ok(count)
}

fn write_jpeg(path: &Path, rgb: &[u8], size: u32, quality: u8) -> std::result::Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut w = std::io::BufWriter::new(file);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, quality)
        .encode(rgb, size, size, image::ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    std::io::Write::flush(&mut w).map_err(|e| e.to_string())
}

/// Decodes the first `clip_seconds` of the audio of `src`, mixed to mono and resampled to
/// `sample_rate_hz` by ffmpeg, as `f32` samples.
pub(crate) fn extract_audio(
    src: &Path,
    settings: &Settings,
    threads: usize,
) -> std::result::Result<Vec<f32>, Failure> {
    let out = base_command(src, threads)
        .arg("-t")
        .arg(settings.clip_seconds.to_string())
        .args(["-vn", "-sn", "-ac", "1", "-ar"])
        .arg(settings.sample_rate_hz.to_string())
        .args(["-acodec", "pcm_f32le", "-f", "f32le", "pipe:1"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failure::new(FailureReason::Io, format!("cannot run ffmpeg: {e}")))?;
    if !out.status.success() {
        return Err(Failure::new(
            FailureReason::AudioDecode,
            format!(
                "ffmpeg failed on the audio ({}): {}",
                out.status,
                tail(&out.stderr)
            ),
        ));
    }
    let samples: Vec<f32> = out
        .stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if samples.is_empty() {
        return Err(Failure::new(
            FailureReason::EmptyAudio,
            format!(
                "the audio stream decodes to no samples: {}",
                tail(&out.stderr)
            ),
        ));
    }
    Ok(samples)
}
