//! The whole audio front end of the paper (§4.1): decode → resample → crop/tile → STFT.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::crop::{crop_or_tile, Crop};
use crate::error::{Error, Result};
use crate::resample::Resampler;
use crate::stft::{Spectrogram, Stft, StftConfig};
use crate::wav::{read_wav, Audio};

/// Configuration of the whole front end. [`FrontEndConfig::default`] is the paper's (§4.1).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrontEndConfig {
    /// Rate every clip is resampled to. Paper §4.1: "16 kHz 32-bit float mono PCM".
    pub sample_rate_hz: u32,
    /// Fixed clip duration after crop/tile. Paper §4.1: "randomly cropped or tiled to 10 s".
    pub clip_seconds: f64,
    /// The STFT. Paper §4.1: 1024-point, 64 ms frames, 32 ms shift, magnitude.
    pub stft: StftConfig,
}

impl Default for FrontEndConfig {
    fn default() -> Self {
        Self::paper()
    }
}

impl FrontEndConfig {
    /// The paper's front end: 16 kHz, 10 s, [`StftConfig::paper`]; spectrograms `(513, 313)`.
    pub fn paper() -> Self {
        Self {
            sample_rate_hz: 16_000,
            clip_seconds: 10.0,
            stft: StftConfig::paper(),
        }
    }

    /// Samples per clip, `round(clip_seconds * sample_rate_hz)`.
    pub fn clip_len_samples(&self) -> usize {
        (self.clip_seconds * f64::from(self.sample_rate_hz)).round() as usize
    }

    /// Checks every field (including the STFT's); [`FrontEnd::new`] calls it.
    pub fn validate(&self) -> Result<()> {
        if self.sample_rate_hz == 0 {
            return Err(Error::InvalidConfig {
                field: "sample_rate_hz",
                expected: "> 0".to_owned(),
                found: "0".to_owned(),
            });
        }
        if !(self.clip_seconds.is_finite() && self.clip_seconds > 0.0) {
            return Err(Error::InvalidConfig {
                field: "clip_seconds",
                expected: "a finite duration > 0".to_owned(),
                found: self.clip_seconds.to_string(),
            });
        }
        self.stft.validate()?;
        let min = self.stft.min_signal_len();
        if self.clip_len_samples() < min {
            return Err(Error::InvalidConfig {
                field: "clip_seconds",
                expected: format!("at least {min} samples at {} Hz", self.sample_rate_hz),
                found: format!(
                    "{} s = {} samples",
                    self.clip_seconds,
                    self.clip_len_samples()
                ),
            });
        }
        Ok(())
    }
}

/// The planned front end: STFT planned once, one resampler planned per input rate met (cached).
/// Shareable across threads (`&FrontEnd` is `Sync`).
#[derive(Debug)]
pub struct FrontEnd {
    config: FrontEndConfig,
    stft: Stft,
    clip_len: usize,
    resamplers: Mutex<HashMap<u32, Arc<Resampler>>>,
}

impl FrontEnd {
    /// Validates `config` and plans the STFT.
    pub fn new(config: FrontEndConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            stft: Stft::new(config.stft.clone())?,
            clip_len: config.clip_len_samples(),
            config,
            resamplers: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &FrontEndConfig {
        &self.config
    }

    /// The planned STFT.
    pub fn stft(&self) -> &Stft {
        &self.stft
    }

    /// Samples per clip after crop/tile.
    pub fn clip_len_samples(&self) -> usize {
        self.clip_len
    }

    /// Shape of every spectrogram produced, `(n_fft/2 + 1, frames)`: `(513, 313)` for the paper.
    pub fn output_shape(&self) -> (usize, usize) {
        let frames = num_frames_unchecked(&self.config.stft, self.clip_len);
        (self.stft.n_freqs(), frames)
    }

    /// The resampler for `from_hz -> sample_rate_hz`, planned on first use and cached.
    pub fn resampler(&self, from_hz: u32) -> Result<Arc<Resampler>> {
        let mut cache = self.resamplers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = cache.get(&from_hz) {
            return Ok(Arc::clone(r));
        }
        let r = Arc::new(Resampler::new(from_hz, self.config.sample_rate_hz)?);
        cache.insert(from_hz, Arc::clone(&r));
        Ok(r)
    }

    /// The fixed-length waveform (resampled, then tiled/cropped), `clip_len_samples()` long.
    pub fn waveform(&self, samples: &[f32], sample_rate_hz: u32, crop: Crop) -> Result<Vec<f32>> {
        if samples.is_empty() {
            return Err(Error::EmptyClip {
                path: None,
                target_len: self.clip_len,
            });
        }
        let resampled;
        let at_rate = if sample_rate_hz == self.config.sample_rate_hz {
            samples
        } else {
            resampled = self.resampler(sample_rate_hz)?.process(samples);
            &resampled
        };
        crop_or_tile(at_rate, self.clip_len, crop)
    }

    /// Spectrogram of in-memory mono samples at `sample_rate_hz`.
    pub fn process_samples(
        &self,
        samples: &[f32],
        sample_rate_hz: u32,
        crop: Crop,
    ) -> Result<Spectrogram> {
        self.stft
            .magnitude(&self.waveform(samples, sample_rate_hz, crop)?)
    }

    /// Spectrogram of decoded audio.
    pub fn process_audio(&self, audio: &Audio, crop: Crop) -> Result<Spectrogram> {
        self.process_samples(&audio.samples, audio.sample_rate_hz, crop)
    }

    /// Reads a WAV file and returns its spectrogram. Errors name `path`.
    pub fn process_file(&self, path: impl AsRef<Path>, crop: Crop) -> Result<Spectrogram> {
        let path = path.as_ref();
        let audio = read_wav(path)?;
        self.process_audio(&audio, crop)
            .map_err(|e| with_path(e, path))
    }

    /// [`FrontEnd::process_file`] over many files in parallel (all cores); one result per
    /// input, in order.
    pub fn process_files(&self, items: &[(PathBuf, Crop)]) -> Vec<Result<Spectrogram>> {
        items
            .par_iter()
            .map(|(path, crop)| self.process_file(path, *crop))
            .collect()
    }
}

fn num_frames_unchecked(stft: &StftConfig, len: usize) -> usize {
    crate::stft::num_frames(len, stft.n_fft, stft.hop_length, stft.center)
}

/// Attaches the file to path-less errors raised on its samples.
fn with_path(e: Error, path: &Path) -> Error {
    match e {
        Error::EmptyClip {
            path: None,
            target_len,
        } => Error::EmptyClip {
            path: Some(path.to_path_buf()),
            target_len,
        },
        other => other,
    }
}
