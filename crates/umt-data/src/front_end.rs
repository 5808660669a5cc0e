//! The bridge to the signal front ends: `umt-audio`'s STFT for the synthesised waveforms and
//! the ImageNet normalisation of frames.

use crate::synthetic::AudioSynthConfig;
use crate::{Error, Result};

/// Log-magnitude spectrograms of `clips` (each `clip_len_samples` long) with the STFT of
/// `umt-audio` (periodic Hann, centred, reflect padding: nnAudio's semantics), `ln(1e-6 + |X|)`,
/// the Nyquist bin dropped so that F = n_fft/2 stays even for stride-2 convolutions.
/// Returns flat `(N, 1, n_fft/2, T_a)`.
pub fn log_spectrograms<'a>(
    cfg: &AudioSynthConfig,
    clips: impl Iterator<Item = &'a [f32]>,
) -> Result<Vec<f32>> {
    let stft = umt_audio::Stft::new(umt_audio::StftConfig {
        n_fft: cfg.n_fft,
        win_length: cfg.n_fft,
        hop_length: cfg.hop_len_samples,
        window: umt_audio::Window::HannPeriodic,
        center: true,
        pad_mode: umt_audio::PadMode::Reflect,
        log: Some(umt_audio::LogCompression::default()),
    })
    .map_err(|e| Error::Audio(e.to_string()))?;
    let clips: Vec<&[f32]> = clips.collect();
    let specs = stft
        .magnitude_batch(&clips)
        .map_err(|e| Error::Audio(e.to_string()))?;
    let keep = cfg.n_fft / 2;
    let mut out =
        Vec::with_capacity(specs.len() * keep * specs.first().map_or(0, |s| s.n_frames()));
    for s in &specs {
        // Row-major [freq][frame]: the first n_fft/2 rows are every bin below Nyquist.
        out.extend_from_slice(&s.as_slice()[..keep * s.n_frames()]);
    }
    Ok(out)
}

/// ImageNet normalisation (`umt-video`'s, the same as the clip pipeline) in place of flat
/// `(N, T, 3, H, W)` frames with values on the [0, 1] scale: `(x − mean_c) / std_c`.
pub fn normalize_frames(frames: &mut [f32], size_px: usize) -> Result<()> {
    umt_video::normalize_unit_chw_in_place(
        frames,
        size_px * size_px,
        &umt_video::Normalization::IMAGENET,
    )
    .map_err(|e| Error::Video(e.to_string()))
}
