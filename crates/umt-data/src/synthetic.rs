//! The embedded synthetic multi-view audio-visual dataset (paper §3.1, Hypothesis 1), with a
//! share of *paired* samples whose label only the combination of both modalities reveals.
//!
//! Every class `y` owns an audio pattern (a chord of `tones_per_pattern` sine tones from a
//! frequency grid, synthesised into a noisy waveform, then the STFT of `umt-audio`) and a visual
//! pattern (a ±1 binary code of `code_cells × code_cells` cells, pasted into noisy frames at a
//! random position and moving with a random velocity, bouncing at the borders, then the
//! ImageNet normalisation of `umt-video`). A sample is one of:
//! - **both views** (fraction `1 − μ − paired_fraction`): the audio and the visual pattern of
//!   its class;
//! - **single view** (fraction `μ`): of those, `video_only_share` carry only the visual
//!   pattern, the rest only the audio pattern (Hypothesis 1: single-view samples mostly carry
//!   the strong modality);
//! - **paired** (fraction `paired_fraction`): the classes form a `paired_rows × (k/paired_rows)`
//!   grid; the audio carries the pattern of the class's *row*, the frames the code of its
//!   *column*: audio alone narrows the label to one row, video alone to one column, and only the
//!   combination names the class. Row and column patterns are disjoint from the class patterns.
//!
//! Generation is deterministic from the seed: the pattern bank comes from the seed, and every
//! sample from its own stream keyed by (seed, split, index), so generation runs in parallel
//! (rayon) and still gives identical bits on any machine and thread count.
//! See `docs/synthetic-dataset.md` for why this data shows modality failure.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::{AvDataset, Views};
use crate::{Error, Result};

/// The whole generator configuration. Every field has a default; JSON files may set any subset
/// (unknown keys are rejected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Number of classes k. Default 10 (the prototype in `shared/notes/synthetic-multiview.md`).
    pub num_classes: usize,
    /// Training samples. Default 1,000 (sized for the 15-minute CPU budget of issue 4 on 2
    /// cores; the prototype used 2,000).
    pub train_samples: usize,
    /// Test samples. Default 800 (forward-only, cheap; enough that one sample is 0.125 points).
    pub test_samples: usize,
    /// μ: fraction of single-view samples. Default 0.3 (prototype: the value that showed
    /// modality failure; paper §3.1 asks for "a small constant"). 0.4 and 0.5 were tried on a
    /// validation split and did not give Table 2's ordering either (`docs/synthetic-dataset.md`,
    /// "Second tuning round").
    pub single_view_fraction: f64,
    /// Of the single-view samples, the share that keeps only the visual pattern. Default 0.15
    /// (prototype ρ; Hypothesis 1: "mostly from the stronger modality"). Larger shares
    /// (0.25–0.45, validation) made naive fusion's video learning a coin toss across seeds
    /// rather than a systematic failure.
    pub video_only_share: f64,
    /// Fraction of paired samples (label = combination of an audio row pattern and a visual
    /// column pattern). Default 0.2 (the prototype notes explain why some is needed for UMT to
    /// beat pre-train + fine-tune). Swept on a validation split (0.05, 0.1, 0.2): at 0.2 every
    /// jointly trained method learns the combination, at 0.1 UMT is no better on it than the
    /// baselines; no value gave Table 2's ordering (`docs/synthetic-dataset.md`).
    pub paired_fraction: f64,
    /// Rows of the paired grid; `num_classes` must be divisible by it. Default 2 (audio alone
    /// then leaves k/2 candidates, video alone 2).
    pub paired_rows: usize,
    /// Audio synthesis.
    pub audio: AudioSynthConfig,
    /// Video synthesis.
    pub video: VideoSynthConfig,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            num_classes: 10,
            train_samples: 1000,
            test_samples: 800,
            single_view_fraction: 0.3,
            video_only_share: 0.15,
            paired_fraction: 0.2,
            paired_rows: 2,
            audio: AudioSynthConfig::default(),
            video: VideoSynthConfig::default(),
        }
    }
}

/// Audio synthesis: noisy waveform with tone chords, then a log-magnitude STFT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioSynthConfig {
    /// Sample rate. Default 8 kHz (prototype).
    pub sample_rate_hz: u32,
    /// Clip length in samples. Default 1,920 = 0.24 s at 8 kHz (prototype: 4,000; shortened
    /// with `n_fft` so the spectrogram is 32 × 16 and the default fits the CPU budget).
    pub clip_len_samples: usize,
    /// STFT size (Hann window, centred frames, reflect padding as nnAudio). Default 64
    /// (prototype: 128; CPU budget); the Nyquist bin is dropped so F = n_fft/2 = 32.
    pub n_fft: usize,
    /// STFT hop. Default 128 (prototype; 1,920 samples → 16 frames).
    pub hop_len_samples: usize,
    /// Std of the white background noise. Default 0.1 (prototype: 1.5, which the width-8
    /// encoders of the CPU preset cannot learn through in the budget: tuned on a validation
    /// split, `docs/synthetic-dataset.md`).
    pub noise_std: f32,
    /// Tones per pattern (class chord or paired row chord). Default 2 (prototype).
    pub tones_per_pattern: usize,
    /// Length of each tone in samples. Default 1,600 = 0.2 s (prototype), random onset.
    pub tone_len_samples: usize,
    /// Tone amplitude is drawn from U(`tone_amp_min`, `tone_amp_max`). Default 0.2 (prototype).
    pub tone_amp_min: f32,
    /// Default 1.2 (prototype).
    pub tone_amp_max: f32,
    /// Lowest grid frequency. Default 300 Hz (prototype).
    pub min_freq_hz: f32,
    /// Highest grid frequency. Default 3,700 Hz (prototype).
    pub max_freq_hz: f32,
    /// Number of grid frequencies the patterns draw from (without replacement). Default 24
    /// (the minimum (k + rows)·tones; 148 Hz apart, about 1.2 STFT bins at n_fft 64).
    pub freq_grid_size: usize,
    /// Random-frequency distractor tones in every clip. Default 0 (prototype: 2; with them the
    /// CPU preset's audio encoder memorised instead of generalising: validation top-1 11–14 %
    /// vs 34 % without at width 4, `docs/synthetic-dataset.md`).
    pub distractor_tones: usize,
    /// Whether the tones of a chord sound together (one onset and one amplitude per chord) or
    /// each at its own random onset and amplitude. Default true (prototype: "two simultaneous
    /// class-specific tones").
    pub simultaneous_chord: bool,
}

impl Default for AudioSynthConfig {
    fn default() -> Self {
        Self {
            sample_rate_hz: 8000,
            clip_len_samples: 1920,
            n_fft: 64,
            hop_len_samples: 128,
            noise_std: 0.1,
            tones_per_pattern: 2,
            tone_len_samples: 1600,
            tone_amp_min: 0.2,
            tone_amp_max: 1.2,
            min_freq_hz: 300.0,
            max_freq_hz: 3700.0,
            freq_grid_size: 24,
            distractor_tones: 0,
            simultaneous_chord: true,
        }
    }
}

/// Video synthesis: noisy frames with a moving binary code, then ImageNet normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoSynthConfig {
    /// Frames per clip. Default 2 (prototype: 4; CPU budget).
    pub frames: usize,
    /// Frame height and width. Default 16 (prototype: 32; CPU budget).
    pub size_px: usize,
    /// Std of the per-pixel Gaussian noise (in pattern units). Default 0.4 (prototype).
    pub noise_std: f32,
    /// Code grid: `code_cells × code_cells` cells of ±1. Default 3 (prototype: 4; 512 codes,
    /// enough for 10 classes + 5 columns).
    pub code_cells: usize,
    /// Pixels per code cell side. Default 4 (prototype: 2; a 12×12-pixel code in 16×16 frames:
    /// with 2-pixel cells the video teacher stayed near chance, validation 15 % vs 41 %).
    pub cell_px: usize,
    /// Code amplitude (pattern units). Default 1.0 (prototype: ±1 code).
    pub pattern_amp: f32,
    /// Largest speed of the code in pixels per frame (per axis). Default 2 (prototype).
    pub max_speed_px: i32,
    /// Per-sample, per-channel colour gain U(`gain_min`, `gain_max`) (no colour shortcut).
    /// Default 0.5 (our choice; the prototype's range is not recorded).
    pub gain_min: f32,
    /// Default 1.5.
    pub gain_max: f32,
    /// Pixel value = `pixel_mean + pixel_scale · (noise + code)`, before ImageNet
    /// normalisation. Default 0.45 (close to the ImageNet mean, so normalised frames are
    /// centred).
    pub pixel_mean: f32,
    /// Default 0.1 (ImageNet std ≈ 0.225, so normalised pattern units are ≈ 0.44).
    pub pixel_scale: f32,
}

impl Default for VideoSynthConfig {
    fn default() -> Self {
        Self {
            frames: 2,
            size_px: 16,
            noise_std: 0.4,
            code_cells: 3,
            cell_px: 4,
            pattern_amp: 1.0,
            max_speed_px: 2,
            gain_min: 0.5,
            gain_max: 1.5,
            pixel_mean: 0.45,
            pixel_scale: 0.1,
        }
    }
}

fn invalid(field: &'static str, expected: &str, found: impl ToString) -> Error {
    Error::InvalidConfig {
        field,
        expected: expected.to_string(),
        found: found.to_string(),
    }
}

impl SyntheticConfig {
    /// A small configuration for tests and the `smoke` preset: 4 classes, 160/120 samples,
    /// 2 frames of 16×16, 0.25 s clips (spectrogram 32×16).
    pub fn smoke() -> Self {
        let d = Self::default();
        Self {
            num_classes: 4,
            train_samples: 160,
            test_samples: 120,
            audio: AudioSynthConfig {
                clip_len_samples: 2048,
                n_fft: 64,
                hop_len_samples: 128,
                freq_grid_size: 16,
                ..d.audio
            },
            video: VideoSynthConfig {
                frames: 2,
                size_px: 16,
                ..d.video
            },
            ..d
        }
    }

    /// Reads a JSON config (any subset of fields; unknown keys are an error naming the key).
    pub fn from_json_file(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigParse {
            path: path.to_path_buf(),
            source: serde_json::Error::io(e),
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|source| Error::ConfigParse {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field once; generation calls it.
    pub fn validate(&self) -> Result<()> {
        let a = &self.audio;
        let v = &self.video;
        if self.num_classes < 2 {
            return Err(invalid("num_classes", "at least 2", self.num_classes));
        }
        if self.train_samples < self.num_classes || self.test_samples < self.num_classes {
            return Err(invalid(
                "train_samples/test_samples",
                "at least num_classes each",
                format!("{}/{}", self.train_samples, self.test_samples),
            ));
        }
        for (field, x) in [
            ("single_view_fraction", self.single_view_fraction),
            ("video_only_share", self.video_only_share),
            ("paired_fraction", self.paired_fraction),
        ] {
            if !(0.0..=1.0).contains(&x) {
                return Err(invalid(field, "a fraction in [0, 1]", x));
            }
        }
        if self.single_view_fraction + self.paired_fraction > 1.0 {
            return Err(invalid(
                "single_view_fraction + paired_fraction",
                "at most 1",
                self.single_view_fraction + self.paired_fraction,
            ));
        }
        if self.paired_rows == 0 || self.num_classes % self.paired_rows != 0 {
            return Err(invalid(
                "paired_rows",
                &format!("a divisor of num_classes = {}", self.num_classes),
                self.paired_rows,
            ));
        }
        if a.n_fft < 4 || a.n_fft % 2 != 0 || a.hop_len_samples == 0 {
            return Err(invalid(
                "audio.n_fft/hop_len_samples",
                "even n_fft ≥ 4, hop ≥ 1",
                a.n_fft,
            ));
        }
        if a.clip_len_samples <= a.n_fft / 2 {
            return Err(invalid(
                "audio.clip_len_samples",
                "longer than n_fft/2",
                a.clip_len_samples,
            ));
        }
        if a.tone_len_samples == 0 || a.tone_len_samples > a.clip_len_samples {
            return Err(invalid(
                "audio.tone_len_samples",
                "in 1..=clip_len_samples",
                a.tone_len_samples,
            ));
        }
        let needed = (self.num_classes + self.paired_rows) * a.tones_per_pattern;
        if a.tones_per_pattern == 0 || a.freq_grid_size < needed {
            return Err(invalid(
                "audio.freq_grid_size",
                &format!("at least (num_classes + paired_rows) · tones_per_pattern = {needed}"),
                a.freq_grid_size,
            ));
        }
        let nyquist = a.sample_rate_hz as f32 / 2.0;
        if !(a.min_freq_hz > 0.0 && a.min_freq_hz < a.max_freq_hz && a.max_freq_hz < nyquist) {
            return Err(invalid(
                "audio.min_freq_hz/max_freq_hz",
                &format!("0 < min < max < Nyquist = {nyquist}"),
                format!("{}/{}", a.min_freq_hz, a.max_freq_hz),
            ));
        }
        if !(a.tone_amp_min >= 0.0 && a.tone_amp_min <= a.tone_amp_max) || a.noise_std < 0.0 {
            return Err(invalid(
                "audio.tone_amp_min/max/noise_std",
                "0 ≤ min ≤ max, std ≥ 0",
                a.tone_amp_min,
            ));
        }
        if v.frames == 0 || v.code_cells == 0 || v.cell_px == 0 {
            return Err(invalid(
                "video.frames/code_cells/cell_px",
                "positive",
                v.frames,
            ));
        }
        if v.code_cells * v.cell_px > v.size_px {
            return Err(invalid(
                "video.size_px",
                &format!(
                    "at least code_cells · cell_px = {}",
                    v.code_cells * v.cell_px
                ),
                v.size_px,
            ));
        }
        if v.gain_min > v.gain_max || v.gain_min.is_nan() || v.noise_std < 0.0 || v.max_speed_px < 0
        {
            return Err(invalid(
                "video.gain_min/gain_max/noise_std/max_speed_px",
                "min ≤ max, non-negative",
                v.gain_min,
            ));
        }
        Ok(())
    }

    /// Spectrogram shape `[1, F, T_a]`: F = n_fft/2 (Nyquist bin dropped), T_a = 1 +
    /// clip/hop (centred frames).
    pub fn audio_shape(&self) -> [usize; 3] {
        [
            1,
            self.audio.n_fft / 2,
            1 + self.audio.clip_len_samples / self.audio.hop_len_samples,
        ]
    }

    /// Clip shape `[T, 3, H, W]`.
    pub fn video_shape(&self) -> [usize; 4] {
        [self.video.frames, 3, self.video.size_px, self.video.size_px]
    }
}

/// The patterns drawn from the seed: tone chords (frequencies in Hz) and ±1 codes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternBank {
    /// `class_tones[y]`: the chord of class y.
    pub class_tones: Vec<Vec<f32>>,
    /// `row_tones[r]`: the chord of paired row r.
    pub row_tones: Vec<Vec<f32>>,
    /// `class_codes[y]`: the ±1 code of class y, row-major `code_cells²`.
    pub class_codes: Vec<Vec<f32>>,
    /// `column_codes[c]`: the ±1 code of paired column c.
    pub column_codes: Vec<Vec<f32>>,
}

impl PatternBank {
    /// Draws the bank from `seed` (frequencies without replacement from the grid).
    pub fn new(cfg: &SyntheticConfig, seed: u64) -> Self {
        let a = &cfg.audio;
        let mut rng = ChaCha8Rng::seed_from_u64(splitmix(seed ^ 0xBA4C_0000_0000_0001));
        let step = (a.max_freq_hz - a.min_freq_hz) / (a.freq_grid_size.max(2) - 1) as f32;
        let mut grid: Vec<f32> = (0..a.freq_grid_size)
            .map(|i| a.min_freq_hz + step * i as f32)
            .collect();
        grid.shuffle(&mut rng);
        let t = a.tones_per_pattern;
        let chord = |i: usize| grid[i * t..(i + 1) * t].to_vec();
        let k = cfg.num_classes;
        let cols = k / cfg.paired_rows;
        let cells = cfg.video.code_cells * cfg.video.code_cells;
        let code = |rng: &mut ChaCha8Rng| -> Vec<f32> {
            (0..cells)
                .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
                .collect()
        };
        let class_codes = (0..k).map(|_| code(&mut rng)).collect();
        let column_codes = (0..cols).map(|_| code(&mut rng)).collect();
        Self {
            class_tones: (0..k).map(chord).collect(),
            row_tones: (k..k + cfg.paired_rows).map(chord).collect(),
            class_codes,
            column_codes,
        }
    }
}

/// The generated dataset: training and test splits (already through the front ends) and the
/// pattern bank that produced them.
#[derive(Debug, Clone)]
pub struct SyntheticData {
    /// Training split.
    pub train: AvDataset,
    /// Test split.
    pub test: AvDataset,
    /// The patterns.
    pub bank: PatternBank,
    /// Mean and std of the training log-spectrograms, used to standardise both splits.
    pub audio_stats: (f32, f32),
}

/// SplitMix64: a well-mixed 64-bit hash, used to key per-sample random streams.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// One raw sample: waveform `(clip_len)`, frames in pixel space `(T, 3, H, W)`.
struct RawSample {
    wave: Vec<f32>,
    frames: Vec<f32>,
    label: u32,
    views: Views,
}

/// Draws a tone's amplitude and onset.
fn tone_amp_onset(cfg: &AudioSynthConfig, rng: &mut ChaCha8Rng) -> (f32, usize) {
    let amp = rng.random_range(cfg.tone_amp_min..=cfg.tone_amp_max);
    let onset = rng.random_range(0..=cfg.clip_len_samples - cfg.tone_len_samples);
    (amp, onset)
}

fn add_tone(
    wave: &mut [f32],
    freq_hz: f32,
    (amp, onset): (f32, usize),
    cfg: &AudioSynthConfig,
    rng: &mut ChaCha8Rng,
) {
    let phase = rng.random::<f32>() * std::f32::consts::TAU;
    let w = std::f32::consts::TAU * freq_hz / cfg.sample_rate_hz as f32;
    for (j, s) in wave[onset..onset + cfg.tone_len_samples]
        .iter_mut()
        .enumerate()
    {
        *s += amp * (w * j as f32 + phase).sin();
    }
}

/// Position along one axis after `t` frames, bouncing inside `[0, span]`.
fn bounce(start: i32, velocity: i32, t: i32, span: i32) -> usize {
    if span == 0 {
        return 0;
    }
    let period = 2 * span;
    let p = (start + velocity * t).rem_euclid(period);
    (if p > span { period - p } else { p }) as usize
}

fn paste_code(frames: &mut [f32], code: &[f32], cfg: &VideoSynthConfig, rng: &mut ChaCha8Rng) {
    let patch = cfg.code_cells * cfg.cell_px;
    let span = (cfg.size_px - patch) as i32;
    let (x0, y0) = (rng.random_range(0..=span), rng.random_range(0..=span));
    let vmax = cfg.max_speed_px;
    let (vx, vy) = (
        rng.random_range(-vmax..=vmax),
        rng.random_range(-vmax..=vmax),
    );
    let gains: Vec<f32> = (0..3)
        .map(|_| rng.random_range(cfg.gain_min..=cfg.gain_max))
        .collect();
    let hw = cfg.size_px * cfg.size_px;
    for t in 0..cfg.frames {
        let (px, py) = (
            bounce(x0, vx, t as i32, span),
            bounce(y0, vy, t as i32, span),
        );
        for (c, g) in gains.iter().enumerate() {
            let plane = &mut frames[(t * 3 + c) * hw..(t * 3 + c + 1) * hw];
            for yy in 0..patch {
                for xx in 0..patch {
                    let cell = (yy / cfg.cell_px) * cfg.code_cells + xx / cfg.cell_px;
                    plane[(py + yy) * cfg.size_px + px + xx] += cfg.pattern_amp * g * code[cell];
                }
            }
        }
    }
}

fn raw_sample(cfg: &SyntheticConfig, bank: &PatternBank, key: u64) -> RawSample {
    let mut rng = ChaCha8Rng::seed_from_u64(splitmix(key));
    let (a, v) = (&cfg.audio, &cfg.video);
    let label = rng.random_range(0..cfg.num_classes);
    let u: f64 = rng.random();
    let views = if u < cfg.paired_fraction {
        Views::Paired
    } else if u < cfg.paired_fraction + cfg.single_view_fraction {
        if rng.random::<f64>() < cfg.video_only_share {
            Views::VideoOnly
        } else {
            Views::AudioOnly
        }
    } else {
        Views::Both
    };
    let mut wave: Vec<f32> = (0..a.clip_len_samples)
        .map(|_| a.noise_std * normal(&mut rng))
        .collect();
    let chord: &[f32] = match views {
        Views::Both | Views::AudioOnly => &bank.class_tones[label],
        Views::Paired => &bank.row_tones[label / (cfg.num_classes / cfg.paired_rows)],
        _ => &[],
    };
    let shared = tone_amp_onset(a, &mut rng);
    for &f in chord {
        let at = if a.simultaneous_chord {
            shared
        } else {
            tone_amp_onset(a, &mut rng)
        };
        add_tone(&mut wave, f, at, a, &mut rng);
    }
    for _ in 0..a.distractor_tones {
        let f = rng.random_range(a.min_freq_hz..=a.max_freq_hz);
        let at = tone_amp_onset(a, &mut rng);
        add_tone(&mut wave, f, at, a, &mut rng);
    }
    let n = v.frames * 3 * v.size_px * v.size_px;
    let mut frames: Vec<f32> = (0..n).map(|_| v.noise_std * normal(&mut rng)).collect();
    let code: Option<&[f32]> = match views {
        Views::Both | Views::VideoOnly => Some(&bank.class_codes[label]),
        Views::Paired => Some(&bank.column_codes[label % (cfg.num_classes / cfg.paired_rows)]),
        _ => None,
    };
    if let Some(code) = code {
        paste_code(&mut frames, code, v, &mut rng);
    }
    for x in frames.iter_mut() {
        *x = v.pixel_mean + v.pixel_scale * *x;
    }
    RawSample {
        wave,
        frames,
        label: label as u32,
        views,
    }
}

/// Generates `n` raw samples of split `split` (0 train, 1 test) in parallel.
fn raw_split(
    cfg: &SyntheticConfig,
    bank: &PatternBank,
    seed: u64,
    split: u64,
    n: usize,
) -> Vec<RawSample> {
    (0..n)
        .into_par_iter()
        .map(|i| {
            raw_sample(
                cfg,
                bank,
                splitmix(seed) ^ splitmix((split << 40) | i as u64),
            )
        })
        .collect()
}

/// Runs the front ends on raw samples: log-magnitude STFT (flat `(N, 1, F, T_a)`, before
/// standardisation) and normalised frames (flat `(N, T, 3, H, W)`).
fn front_ends(cfg: &SyntheticConfig, raw: &[RawSample]) -> Result<(Vec<f32>, Vec<f32>)> {
    let specs =
        crate::front_end::log_spectrograms(&cfg.audio, raw.iter().map(|r| r.wave.as_slice()))?;
    let mut video = Vec::with_capacity(raw.len() * raw.first().map_or(0, |r| r.frames.len()));
    for r in raw {
        video.extend_from_slice(&r.frames);
    }
    crate::front_end::normalize_frames(&mut video, cfg.video.size_px)?;
    Ok((specs, video))
}

/// Generates the dataset for `seed` (pattern bank, training and test splits).
///
/// Audio is standardised with the mean and std of the training log-spectrograms (one scalar
/// each); frames use the ImageNet normalisation of `umt-video`.
pub fn generate(cfg: &SyntheticConfig, seed: u64) -> Result<SyntheticData> {
    cfg.validate()?;
    let bank = PatternBank::new(cfg, seed);
    let raw_train = raw_split(cfg, &bank, seed, 0, cfg.train_samples);
    let raw_test = raw_split(cfg, &bank, seed, 1, cfg.test_samples);
    let (mut a_train, v_train) = front_ends(cfg, &raw_train)?;
    let (mut a_test, v_test) = front_ends(cfg, &raw_test)?;
    let n = a_train.len() as f64;
    let mean = a_train.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = a_train
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt().max(1e-6);
    for x in a_train.iter_mut().chain(a_test.iter_mut()) {
        *x = ((*x as f64 - mean) / std) as f32;
    }
    let build = |audio, video, raw: &[RawSample]| {
        AvDataset::new(
            audio,
            cfg.audio_shape(),
            video,
            cfg.video_shape(),
            raw.iter().map(|r| r.label).collect(),
            raw.iter().map(|r| r.views).collect(),
            cfg.num_classes,
        )
    };
    Ok(SyntheticData {
        train: build(a_train, v_train, &raw_train)?,
        test: build(a_test, v_test, &raw_test)?,
        bank,
        audio_stats: (mean as f32, std as f32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_shaped() {
        let cfg = SyntheticConfig::smoke();
        let a = generate(&cfg, 3).unwrap();
        let b = generate(&cfg, 3).unwrap();
        assert_eq!(a.train.len(), 160);
        assert_eq!(a.test.len(), 120);
        assert_eq!(a.train.audio_shape(), [1, 32, 17]);
        assert_eq!(a.train.video_shape(), [2, 3, 16, 16]);
        assert_eq!(a.train.audio(5).unwrap(), b.train.audio(5).unwrap());
        assert_eq!(a.test.video(7).unwrap(), b.test.video(7).unwrap());
        let c = generate(&cfg, 4).unwrap();
        assert_ne!(a.train.audio(5).unwrap(), c.train.audio(5).unwrap());
        assert!(a.train.audio(0).unwrap().iter().all(|x| x.is_finite()));
    }

    #[test]
    fn view_fractions_follow_the_config() {
        let cfg = SyntheticConfig {
            train_samples: 4000,
            ..SyntheticConfig::smoke()
        };
        let d = generate(&cfg, 1).unwrap();
        let count = |v: Views| d.train.views().iter().filter(|&&x| x == v).count() as f64 / 4000.0;
        assert!((count(Views::Paired) - cfg.paired_fraction).abs() < 0.03);
        let single = count(Views::AudioOnly) + count(Views::VideoOnly);
        assert!((single - cfg.single_view_fraction).abs() < 0.03);
        assert!((count(Views::VideoOnly) / single - cfg.video_only_share).abs() < 0.05);
    }

    /// Nearest-class-mean on per-frequency time maxima of the spectrograms, centroids from the
    /// training split, scored on the test split. A pattern bank or label→pattern map that
    /// differed between the splits (e.g. drawn from a per-split seed) would give chance here
    /// while anything fitted on the training split still looked fine.
    #[test]
    fn train_and_test_share_the_class_patterns() {
        let mut cfg = SyntheticConfig::smoke();
        cfg.audio.noise_std = 0.3;
        cfg.audio.distractor_tones = 0;
        let d = generate(&cfg, 5).unwrap();
        let [_, f, t] = d.train.audio_shape();
        let tmax = |ds: &AvDataset, i: usize| -> Vec<f32> {
            let a = ds.audio(i).unwrap();
            (0..f)
                .map(|r| {
                    a[r * t..(r + 1) * t]
                        .iter()
                        .fold(f32::MIN, |m, &x| m.max(x))
                })
                .collect()
        };
        let k = cfg.num_classes;
        let has_chord = |v: Views| matches!(v, Views::Both | Views::AudioOnly);
        let mut cent = vec![vec![0f32; f]; k];
        let mut cnt = vec![0f32; k];
        for i in (0..d.train.len()).filter(|&i| has_chord(d.train.views()[i])) {
            let y = d.train.labels()[i] as usize;
            cent[y]
                .iter_mut()
                .zip(tmax(&d.train, i))
                .for_each(|(c, x)| *c += x);
            cnt[y] += 1.0;
        }
        let (mut hit, mut n) = (0, 0);
        for i in (0..d.test.len()).filter(|&i| has_chord(d.test.views()[i])) {
            let x = tmax(&d.test, i);
            let dist = |y: usize| -> f32 {
                cent[y]
                    .iter()
                    .zip(&x)
                    .map(|(c, v)| (c / cnt[y] - v).powi(2))
                    .sum()
            };
            let best = (0..k).min_by(|&a, &b| dist(a).total_cmp(&dist(b))).unwrap();
            hit += usize::from(best == d.test.labels()[i] as usize);
            n += 1;
        }
        let acc = hit as f64 / n as f64;
        assert!(
            acc > 0.9,
            "test accuracy of train centroids {acc} (chance 0.25)"
        );
    }

    /// The tones of a chord sound together (one onset, prototype: "simultaneous"): on a
    /// noise-free clip without distractors, the non-zero part is one tone long.
    #[test]
    fn chord_tones_are_simultaneous() {
        let mut cfg = SyntheticConfig::smoke();
        cfg.audio.noise_std = 0.0;
        cfg.audio.distractor_tones = 0;
        cfg.paired_fraction = 0.0;
        cfg.single_view_fraction = 0.0;
        let bank = PatternBank::new(&cfg, 0);
        for key in 0..20 {
            let r = raw_sample(&cfg, &bank, key);
            let nz: Vec<usize> = (0..r.wave.len()).filter(|&j| r.wave[j] != 0.0).collect();
            let span = nz.last().unwrap() - nz.first().unwrap() + 1;
            assert!(
                span <= cfg.audio.tone_len_samples,
                "chord spans {span} samples"
            );
        }
    }

    #[test]
    fn bounce_stays_inside_and_reflects() {
        for start in 0..=5 {
            for v in -3..=3 {
                for t in 0..20 {
                    assert!(bounce(start, v, t, 5) <= 5);
                }
            }
        }
        assert_eq!(bounce(4, 2, 1, 5), 4);
        assert_eq!(bounce(0, 0, 9, 0), 0);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let mut cfg = SyntheticConfig::smoke();
        cfg.paired_rows = 3;
        assert!(matches!(
            cfg.validate(),
            Err(Error::InvalidConfig {
                field: "paired_rows",
                ..
            })
        ));
        let mut cfg = SyntheticConfig::smoke();
        cfg.single_view_fraction = 1.5;
        assert!(matches!(
            cfg.validate(),
            Err(Error::InvalidConfig {
                field: "single_view_fraction",
                ..
            })
        ));
        let err = serde_json::from_str::<SyntheticConfig>(r#"{"num_clases": 3}"#).unwrap_err();
        assert!(err.to_string().contains("num_clases"));
    }
}
