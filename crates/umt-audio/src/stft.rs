//! Short-time Fourier transform magnitude with `torch.stft` / nnAudio semantics.
//!
//! For a signal `x` of `len` samples and a [`StftConfig`]:
//!
//! 1. when `center`, `x` is padded with `pad = n_fft / 2` samples on each side (`reflect`:
//!    `x[pad], ..., x[1] | x | x[len-2], ..., x[len-pad-1]`, as `torch.nn.functional.pad`);
//! 2. frame `t` is `padded[t * hop_length .. t * hop_length + n_fft]`; there are
//!    `1 + (padded_len - n_fft) / hop_length` frames (`1 + len / hop_length` for an even
//!    `n_fft` with `center`), see [`num_frames`];
//! 3. each frame is multiplied by the window (`win_length` samples, zero-padded on both sides
//!    to `n_fft`, centred, as `torch.stft`), transformed by a real FFT of size `n_fft`, and the
//!    magnitude `sqrt(re^2 + im^2)` of bins `0..=n_fft/2` is kept (no normalisation);
//! 4. optionally `ln(eps + magnitude)` ([`LogCompression`]).
//!
//! The result is a [`Spectrogram`] of shape `(n_fft/2 + 1, frames)`, row-major `[freq][frame]`:
//! `(513, 313)` for the paper's 10 s at 16 kHz.
//!
//! **Short signals.** Reflect padding needs `len > pad` (`torch.stft` raises "Padding size
//! should be less than the corresponding input dimension"); we return
//! [`Error::SignalTooShort`] for `len < n_fft/2 + 1` with `center` and `reflect`, for `len == 0`
//! with `constant` padding and for `len < n_fft` without `center`. The front end never hits this
//! because it tiles every clip to the fixed duration first.
//!
//! **Performance.** The FFT is planned once in [`Stft::new`] (`realfft`); per-frame work reuses
//! the buffers of a [`StftScratch`] (no allocation per frame), the window multiplication is
//! fused with the copy out of the signal, and [`Stft::magnitude_batch`] spreads clips over all
//! cores with rayon.

use std::sync::Arc;

use rayon::prelude::*;
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::error::{Error, Result};

/// Analysis window (before zero-padding to `n_fft`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Periodic Hann, `0.5 - 0.5 cos(2 pi n / N)`: `torch.hann_window(N, periodic=True)` and
    /// scipy's `get_window('hann', N)` (nnAudio's default).
    HannPeriodic,
    /// Symmetric Hann, `0.5 - 0.5 cos(2 pi n / (N - 1))`: `torch.hann_window(N, periodic=False)`.
    HannSymmetric,
    /// All ones.
    Rectangular,
}

/// How the signal is extended by `n_fft / 2` samples on each side when `center` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadMode {
    /// Mirror without repeating the edge sample (`torch` `pad_mode='reflect'`).
    Reflect,
    /// Zeros (`torch` `pad_mode='constant'`).
    Constant,
}

/// Optional log compression `ln(eps + magnitude)`, applied after the magnitude.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogCompression {
    /// Added before the natural log so silence maps to `ln(eps)` instead of `-inf`. Our choice
    /// (the paper uses no log): `1e-6`, below the magnitude of 16-bit quantisation noise summed
    /// over a 1024-sample Hann frame (about 1e-3), so it only matters for digital silence.
    pub eps: f32,
}

impl Default for LogCompression {
    fn default() -> Self {
        Self { eps: 1e-6 }
    }
}

/// STFT parameters. [`StftConfig::default`] is the paper's front end (§4.1) computed the way
/// nnAudio (`STFT(n_fft=1024, hop_length=512, output_format='Magnitude')`) and
/// `torch.stft(..., center=True, pad_mode='reflect')` compute it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StftConfig {
    /// FFT size. Paper §4.1: "1024-point STFT".
    pub n_fft: usize,
    /// Window length in samples (`<= n_fft`). Paper §4.1: 64 ms frames at 16 kHz = 1024.
    pub win_length: usize,
    /// Frame shift in samples. Paper §4.1: 32 ms shift at 16 kHz = 512.
    pub hop_length: usize,
    /// Analysis window. nnAudio's default `window='hann'` (scipy, `fftbins=True`: periodic),
    /// the same as `torch.hann_window(win_length, periodic=True)`.
    pub window: Window,
    /// Centre frame `t` on sample `t * hop_length` by padding `n_fft / 2` each side. nnAudio
    /// and `torch.stft` default: `center=True`.
    pub center: bool,
    /// Padding used when `center`. nnAudio and `torch.stft` (>= 2.0) default: `'reflect'`.
    pub pad_mode: PadMode,
    /// Log compression, off by default: the paper feeds the magnitude spectrogram itself.
    pub log: Option<LogCompression>,
}

impl Default for StftConfig {
    fn default() -> Self {
        Self::paper()
    }
}

impl StftConfig {
    /// The paper's STFT (§4.1): n_fft 1024, 64 ms periodic Hann window, 32 ms hop at 16 kHz,
    /// centred with reflect padding, magnitude, no log.
    pub fn paper() -> Self {
        Self {
            n_fft: 1024,
            win_length: 1024,
            hop_length: 512,
            window: Window::HannPeriodic,
            center: true,
            pad_mode: PadMode::Reflect,
            log: None,
        }
    }

    /// Number of frequency bins, `n_fft / 2 + 1`.
    pub fn n_freqs(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Checks every field; [`Stft::new`] calls it.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, expected: &str, found: String| {
            Err(Error::InvalidConfig {
                field,
                expected: expected.to_owned(),
                found,
            })
        };
        if self.n_fft == 0 {
            return invalid("n_fft", ">= 1", "0".into());
        }
        if self.win_length == 0 || self.win_length > self.n_fft {
            return invalid(
                "win_length",
                &format!("1..={} (n_fft)", self.n_fft),
                self.win_length.to_string(),
            );
        }
        if self.hop_length == 0 {
            return invalid("hop_length", ">= 1", "0".into());
        }
        if let Some(LogCompression { eps }) = self.log {
            if !(eps.is_finite() && eps > 0.0) {
                return invalid("log.eps", "a finite value > 0", eps.to_string());
            }
        }
        Ok(())
    }

    /// Smallest signal length accepted (see the module docs on short signals).
    pub fn min_signal_len(&self) -> usize {
        match (self.center, self.pad_mode) {
            (true, PadMode::Reflect) => self.n_fft / 2 + 1,
            (true, PadMode::Constant) => 1,
            (false, _) => self.n_fft,
        }
    }

    /// Number of frames for a signal of `signal_len` samples, or [`Error::SignalTooShort`].
    pub fn num_frames(&self, signal_len: usize) -> Result<usize> {
        let min = self.min_signal_len();
        if signal_len < min {
            return Err(Error::SignalTooShort {
                expected: min,
                found: signal_len,
                reason: match (self.center, self.pad_mode) {
                    (true, PadMode::Reflect) => "reflect padding by n_fft/2 (pad < length)",
                    (true, PadMode::Constant) => "an STFT frame",
                    (false, _) => "one full n_fft frame without centring",
                },
            });
        }
        Ok(num_frames(
            signal_len,
            self.n_fft,
            self.hop_length,
            self.center,
        ))
    }
}

/// Frame count of an STFT: `1 + (len + 2 * (n_fft / 2) - n_fft) / hop` with `center`,
/// `1 + (len - n_fft) / hop` without. Assumes the signal is long enough (see
/// [`StftConfig::num_frames`] for the checked version) and `hop > 0`.
pub fn num_frames(signal_len: usize, n_fft: usize, hop_length: usize, center: bool) -> usize {
    let padded = if center {
        signal_len + 2 * (n_fft / 2)
    } else {
        signal_len
    };
    1 + padded.saturating_sub(n_fft) / hop_length
}

/// A magnitude (or log-magnitude) spectrogram, row-major `(n_freqs, n_frames)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrogram {
    n_freqs: usize,
    n_frames: usize,
    data: Vec<f32>,
}

impl Spectrogram {
    /// Builds a spectrogram from row-major `[freq][frame]` data.
    pub fn from_vec(n_freqs: usize, n_frames: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != n_freqs * n_frames {
            return Err(Error::LengthMismatch {
                what: "spectrogram data (n_freqs * n_frames)",
                expected: n_freqs * n_frames,
                found: data.len(),
            });
        }
        Ok(Self {
            n_freqs,
            n_frames,
            data,
        })
    }

    /// Number of frequency bins (rows).
    pub fn n_freqs(&self) -> usize {
        self.n_freqs
    }

    /// Number of frames (columns).
    pub fn n_frames(&self) -> usize {
        self.n_frames
    }

    /// `(n_freqs, n_frames)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.n_freqs, self.n_frames)
    }

    /// Value at `(freq, frame)`, or `None` out of range.
    pub fn get(&self, freq: usize, frame: usize) -> Option<f32> {
        (freq < self.n_freqs && frame < self.n_frames)
            .then(|| self.data[freq * self.n_frames + frame])
    }

    /// Row-major `[freq][frame]` data.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The row-major data, consuming the spectrogram.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
}

/// Per-thread working buffers of an [`Stft`] (create with [`Stft::make_scratch`]).
pub struct StftScratch {
    frame: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    magnitude: Vec<f32>,
    fft: Vec<Complex<f32>>,
}

/// A planned STFT: FFT plan and window built once, shareable across threads.
#[derive(Clone)]
pub struct Stft {
    config: StftConfig,
    fft: Arc<dyn RealToComplex<f32>>,
    /// The window zero-padded to `n_fft`; only `win_start..win_end` is non-zero.
    window: Vec<f32>,
    win_start: usize,
    win_end: usize,
}

impl std::fmt::Debug for Stft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stft")
            .field("config", &self.config)
            .finish()
    }
}

impl Stft {
    /// Validates `config`, plans the FFT and builds the window.
    pub fn new(config: StftConfig) -> Result<Self> {
        config.validate()?;
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(config.n_fft);
        let win_start = (config.n_fft - config.win_length) / 2;
        let win_end = win_start + config.win_length;
        let mut window = vec![0.0f32; config.n_fft];
        for (w, v) in window[win_start..win_end]
            .iter_mut()
            .zip(window_values(config.window, config.win_length))
        {
            *w = v;
        }
        Ok(Self {
            config,
            fft,
            window,
            win_start,
            win_end,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &StftConfig {
        &self.config
    }

    /// Number of frequency bins, `n_fft / 2 + 1`.
    pub fn n_freqs(&self) -> usize {
        self.config.n_freqs()
    }

    /// Number of frames for `signal_len` samples (errors when too short).
    pub fn num_frames(&self, signal_len: usize) -> Result<usize> {
        self.config.num_frames(signal_len)
    }

    /// The window as applied, zero-padded to `n_fft` samples.
    pub fn window(&self) -> &[f32] {
        &self.window
    }

    /// Fresh working buffers for [`Stft::magnitude_into`].
    pub fn make_scratch(&self) -> StftScratch {
        StftScratch {
            frame: self.fft.make_input_vec(),
            spectrum: self.fft.make_output_vec(),
            magnitude: vec![0.0; self.n_freqs()],
            fft: self.fft.make_scratch_vec(),
        }
    }

    /// Magnitude spectrogram of one signal, `(n_fft/2 + 1, frames)`.
    pub fn magnitude(&self, x: &[f32]) -> Result<Spectrogram> {
        let n_frames = self.num_frames(x.len())?;
        let mut data = vec![0.0; self.n_freqs() * n_frames];
        self.magnitude_into(x, &mut data, &mut self.make_scratch())?;
        Spectrogram::from_vec(self.n_freqs(), n_frames, data)
    }

    /// Writes the spectrogram of `x` into `out` (row-major `(n_freqs, frames)`, exactly
    /// `n_freqs * frames` values) using `scratch`; allocates nothing.
    pub fn magnitude_into(
        &self,
        x: &[f32],
        out: &mut [f32],
        scratch: &mut StftScratch,
    ) -> Result<()> {
        let n_frames = self.num_frames(x.len())?;
        let n_freqs = self.n_freqs();
        if out.len() != n_freqs * n_frames {
            return Err(Error::LengthMismatch {
                what: "STFT output buffer (n_freqs * frames)",
                expected: n_freqs * n_frames,
                found: out.len(),
            });
        }
        let pad = if self.config.center {
            self.config.n_fft / 2
        } else {
            0
        };
        let log_eps = self.config.log.map(|l| l.eps);
        for t in 0..n_frames {
            // Frame t covers padded[t * hop .. t * hop + n_fft] = x[start ..] with
            // start = t * hop - pad (may be negative near the edges).
            let start = (t * self.config.hop_length) as isize - pad as isize;
            self.fill_frame(x, start, &mut scratch.frame);
            self.fft
                .process_with_scratch(&mut scratch.frame, &mut scratch.spectrum, &mut scratch.fft)
                .map_err(|e| Error::Fft {
                    message: e.to_string(),
                })?;
            for (m, c) in scratch.magnitude.iter_mut().zip(&scratch.spectrum) {
                *m = (c.re * c.re + c.im * c.im).sqrt();
            }
            if let Some(eps) = log_eps {
                for m in &mut scratch.magnitude {
                    *m = (eps + *m).ln();
                }
            }
            // (n_freqs,) column t of the row-major (n_freqs, n_frames) output.
            for (k, &m) in scratch.magnitude.iter().enumerate() {
                out[k * n_frames + t] = m;
            }
        }
        Ok(())
    }

    /// Spectrograms of many signals (any lengths), computed in parallel over all cores.
    pub fn magnitude_batch(&self, clips: &[&[f32]]) -> Result<Vec<Spectrogram>> {
        clips
            .par_iter()
            .map_init(
                || self.make_scratch(),
                |scratch, x| {
                    let n_frames = self.num_frames(x.len())?;
                    let mut data = vec![0.0; self.n_freqs() * n_frames];
                    self.magnitude_into(x, &mut data, scratch)?;
                    Spectrogram::from_vec(self.n_freqs(), n_frames, data)
                },
            )
            .collect()
    }

    /// Spectrograms of `B` signals of equal length into one contiguous row-major buffer of
    /// shape `(B, n_freqs, frames)`, computed in parallel over all cores.
    pub fn magnitude_batch_into(&self, clips: &[&[f32]], out: &mut [f32]) -> Result<()> {
        let Some(first) = clips.first() else {
            return Ok(());
        };
        let len = first.len();
        if let Some(bad) = clips.iter().find(|c| c.len() != len) {
            return Err(Error::LengthMismatch {
                what: "clip in an equal-length batch",
                expected: len,
                found: bad.len(),
            });
        }
        let per_clip = self.n_freqs() * self.num_frames(len)?;
        if out.len() != per_clip * clips.len() {
            return Err(Error::LengthMismatch {
                what: "batch output buffer (B * n_freqs * frames)",
                expected: per_clip * clips.len(),
                found: out.len(),
            });
        }
        clips
            .par_iter()
            .zip(out.par_chunks_mut(per_clip))
            .try_for_each_init(
                || self.make_scratch(),
                |scratch, (x, o)| self.magnitude_into(x, o, scratch),
            )
    }

    /// Fills `frame` (n_fft) with `window * padded_signal[start..start + n_fft]`, where
    /// `start` is relative to `x[0]` (negative inside the left padding).
    fn fill_frame(&self, x: &[f32], start: isize, frame: &mut [f32]) {
        let (ws, we) = (self.win_start, self.win_end);
        frame[..ws].fill(0.0);
        frame[we..].fill(0.0);
        let lo = start + ws as isize;
        let hi = start + we as isize;
        if lo >= 0 && hi as usize <= x.len() {
            // Interior frame: fused copy and window multiplication.
            let src = &x[lo as usize..hi as usize];
            for ((f, &s), &w) in frame[ws..we].iter_mut().zip(src).zip(&self.window[ws..we]) {
                *f = s * w;
            }
            return;
        }
        let len = x.len() as isize;
        let reflect = self.config.pad_mode == PadMode::Reflect;
        let edge = frame[ws..we].iter_mut().zip(&self.window[ws..we]);
        for (j, (f, &w)) in (ws..we).zip(edge) {
            let i = start + j as isize;
            let v = if (0..len).contains(&i) {
                x[i as usize]
            } else if reflect {
                // Mirror about the first/last sample; valid because len > n_fft / 2 >= |i|.
                let r = if i < 0 { -i } else { 2 * (len - 1) - i };
                x.get(r as usize).copied().unwrap_or(0.0)
            } else {
                0.0
            };
            *f = v * w;
        }
    }
}

/// The `n` window values (f64 arithmetic, rounded to f32 like `torch.hann_window`).
fn window_values(kind: Window, n: usize) -> Vec<f32> {
    if n == 1 {
        // torch.hann_window(1) is [1.0] for either periodicity.
        return vec![1.0];
    }
    let denom = match kind {
        Window::HannPeriodic => n as f64,
        Window::HannSymmetric => (n - 1) as f64,
        Window::Rectangular => return vec![1.0; n],
    };
    (0..n)
        .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / denom).cos()) as f32)
        .collect()
}
