//! AV-MNIST-like data (Vielzeuf et al. 2018, "CentralNet"; used by MFAS and MultiBench) built
//! from two free sources: MNIST digit images (IDX files) and spoken digits of the Free Spoken
//! Digit Dataset (FSDD, 8 kHz WAV files named `{digit}_{speaker}_{take}.wav`). The original
//! AV-MNIST audio (TIDIGITS) is not free; FSDD is the substitute public re-implementations use.
//!
//! Construction ([`build`], `docs/avmnist.md`):
//! - **Splits.** FSDD's official split: takes `0..fsdd_test_takes` (0–4) are test, the rest
//!   training, so no recording is in both splits; MNIST training images only in training,
//!   MNIST test images only in test.
//! - **Pairing by digit**, deterministic from the seed: every split is balanced over the ten
//!   digits; within a digit, recordings are drawn round-robin from a seeded permutation (each
//!   is used once before any is reused) and images without replacement from a seeded
//!   permutation; the sample order is then shuffled.
//! - **Weakened images** as in AV-MNIST: a PCA fitted on the training split's images keeps
//!   the leading components holding `pca_energy_fraction` (25 %) of the variance; each image
//!   is reconstructed from them. The grey image is repeated over three channels, normalised
//!   with the ImageNet statistics of `umt-video`, and handed to the trainer as a one-frame clip
//!   `(T = 1, 3, 28, 28)`.
//! - **Audio** through `umt-audio`'s front end ([`FrontEndConfig`], CPU-sized by default):
//!   decode, resample if the rate differs, tile/crop from the start to a fixed length, optional
//!   white noise, log-magnitude STFT, the Nyquist bin dropped; standardised with the mean and
//!   std of the training split.
//!
//! [`write_prepared`] writes a prepared directory (`train.safetensors`, `test.safetensors`,
//! `index.jsonl`, `config.json`, `classes.txt`) and [`load_prepared`] reads it back.
//!
//! ```no_run
//! use umt_data::avmnist::{build, load_prepared, write_prepared, AvMnistConfig};
//!
//! let cfg = AvMnistConfig::default();
//! let data = build(&cfg, 0, "../shared/data/mnist".as_ref(), "../shared/data/fsdd".as_ref(), &|_, _, _| {})?;
//! write_prepared(&data, "avmnist".as_ref())?;
//! let back = load_prepared("avmnist".as_ref())?;
//! assert_eq!(back.train.video_shape(), [1, 3, 28, 28]);
//! # Ok::<(), umt_data::Error>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use umt_audio::{Crop, FrontEnd, FrontEndConfig, LogCompression, PadMode, StftConfig, Window};

use crate::dataset::{AvDataset, Views};
use crate::idx::read_idx;
use crate::{Error, Result};

mod pca;
pub use pca::{symmetric_eigen, Pca};

/// The class list, index = digit = label.
pub const CLASSES: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

/// Side of an MNIST image in pixels.
pub const IMAGE_SIDE: usize = 28;

/// Version tag of the prepared layout (`config.json` → `format`).
pub const FORMAT: &str = "umt-avmnist-v1";

/// How AV-MNIST is built. Every field has a default; JSON files may set any subset (unknown
/// keys are rejected; see [`AvMnistConfig::from_json_file`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AvMnistConfig {
    /// Training samples (balanced over digits). Default 1,200: our choice for the 15-minute
    /// CPU budget of the trainer on 2 cores (3 seeds × 9 methods; AV-MNIST has 55,000). FSDD's
    /// training split holds 2,700 recordings, so no recording is used twice.
    pub train_samples: usize,
    /// Test samples (balanced). Default 1,000: our choice (each of FSDD's 300 test recordings
    /// is paired with 3–4 different MNIST test images; one sample is 0.1 point).
    pub test_samples: usize,
    /// FSDD takes `0..fsdd_test_takes` form the test split. Default 5: FSDD's official split
    /// ("index 0–4 is test", `shared/data/SOURCES.md`).
    pub fsdd_test_takes: u32,
    /// Share of the image variance ("energy") the PCA keeps. Default 0.25: AV-MNIST (Vielzeuf
    /// et al. 2018 project MNIST so that 25 % of the energy remains).
    pub pca_energy_fraction: f64,
    /// Std of white noise added to each fixed-length waveform (full scale ±1), seeded per
    /// sample. Default 0: our choice (AV-MNIST adds ESC-50 noise to TIDIGITS; none is free
    /// here, so the clean FSDD audio is kept unless a run asks for noise).
    pub audio_noise_std: f32,
    /// The audio front end. Default [`AvMnistConfig::cpu_audio`]: 8 kHz (FSDD's rate, no
    /// resampling), 0.5 s, 64-point STFT, hop 128, `ln(1e-6 + |X|)` → `(1, 32, 32)`.
    pub audio: FrontEndConfig,
}

impl Default for AvMnistConfig {
    fn default() -> Self {
        Self {
            train_samples: 1200,
            test_samples: 1000,
            fsdd_test_takes: 5,
            pca_energy_fraction: 0.25,
            audio_noise_std: 0.0,
            audio: Self::cpu_audio(),
        }
    }
}

impl AvMnistConfig {
    /// The CPU-sized audio front end: 8 kHz (FSDD's rate: no resampling), 0.5 s (FSDD's mean
    /// recording is 0.44 s; longer ones are cropped from the start, shorter ones tiled),
    /// periodic-Hann STFT of 64 points with hop 128 (as the synthetic default,
    /// `docs/synthetic-dataset.md`), centred with reflect padding, `ln(1e-6 + |X|)`; with the
    /// Nyquist bin dropped the spectrogram is `(32, 32)`.
    pub fn cpu_audio() -> FrontEndConfig {
        FrontEndConfig {
            sample_rate_hz: 8000,
            clip_seconds: 0.5,
            stft: StftConfig {
                n_fft: 64,
                win_length: 64,
                hop_length: 128,
                window: Window::HannPeriodic,
                center: true,
                pad_mode: PadMode::Reflect,
                log: Some(LogCompression::default()),
            },
        }
    }

    /// A tiny configuration for tests: 40 training and 20 test samples.
    pub fn smoke() -> Self {
        Self {
            train_samples: 40,
            test_samples: 20,
            ..Self::default()
        }
    }

    /// Reads a JSON config: the object is merged onto the default key by key (nested objects
    /// too, so `{"audio": {"clip_seconds": 1.0}}` keeps the other audio defaults); unknown keys
    /// are an error naming the key.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let parse = |source| Error::ConfigParse {
            path: path.to_path_buf(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let patch: serde_json::Value = serde_json::from_str(&text).map_err(parse)?;
        let mut base = serde_json::to_value(Self::default()).map_err(parse)?;
        merge_json(&mut base, &patch);
        let cfg: Self = serde_json::from_value(base).map_err(parse)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field once; [`build`] calls it.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, expected: &str, found: String| {
            Err(Error::InvalidConfig {
                field,
                expected: expected.into(),
                found,
            })
        };
        if self.train_samples < CLASSES.len() || self.test_samples < CLASSES.len() {
            return bad(
                "train_samples/test_samples",
                "at least 10 each (one per digit)",
                format!("{}/{}", self.train_samples, self.test_samples),
            );
        }
        if !(self.pca_energy_fraction > 0.0 && self.pca_energy_fraction <= 1.0) {
            return bad(
                "pca_energy_fraction",
                "a fraction in (0, 1]",
                self.pca_energy_fraction.to_string(),
            );
        }
        if !(self.audio_noise_std >= 0.0 && self.audio_noise_std.is_finite()) {
            return bad(
                "audio_noise_std",
                "finite, ≥ 0",
                self.audio_noise_std.to_string(),
            );
        }
        if self.fsdd_test_takes == 0 {
            return bad("fsdd_test_takes", "at least 1", "0".into());
        }
        self.audio
            .validate()
            .map_err(|e| Error::Audio(e.to_string()))?;
        if self.audio.stft.n_fft % 4 != 0 {
            return bad(
                "audio.stft.n_fft",
                "a multiple of 4 (F = n_fft/2 even for stride-2 stages)",
                self.audio.stft.n_fft.to_string(),
            );
        }
        Ok(())
    }

    /// Spectrogram shape `[1, F, T_a]`: F = n_fft/2 (Nyquist bin dropped), T_a the STFT's frame
    /// count for `clip_seconds`.
    pub fn audio_shape(&self) -> [usize; 3] {
        let len = self.audio.clip_len_samples();
        let s = &self.audio.stft;
        [
            1,
            s.n_fft / 2,
            umt_audio::num_frames(len, s.n_fft, s.hop_length, s.center),
        ]
    }

    /// Clip shape `[T, 3, H, W]` = `[1, 3, 28, 28]`: one frame, the grey image on 3 channels.
    pub fn video_shape(&self) -> [usize; 4] {
        [1, 3, IMAGE_SIDE, IMAGE_SIDE]
    }
}

/// Deep-merges `patch` into `base` (objects key by key; anything else replaces).
pub fn merge_json(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

// -------------------------------------------------------------------------------------------
// Sources
// -------------------------------------------------------------------------------------------

/// One split of MNIST: `(N, 28, 28)` images in bytes and their labels.
#[derive(Debug, Clone)]
pub struct MnistSplit {
    /// Pixels, `(N, 28, 28)` row-major, 0–255.
    pub images: Vec<u8>,
    /// Digit labels `(N)`.
    pub labels: Vec<u8>,
}

impl MnistSplit {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image `i` (784 bytes).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = IMAGE_SIDE * IMAGE_SIDE;
        &self.images[i * n..(i + 1) * n]
    }
}

/// Reads one MNIST split (`train` or `t10k`) from `dir` (`{prefix}-images-idx3-ubyte[.gz]`,
/// `{prefix}-labels-idx1-ubyte[.gz]`), checking shapes and that every label is a digit.
pub fn read_mnist(dir: &Path, prefix: &str) -> Result<MnistSplit> {
    let find = |stem: String| -> PathBuf {
        let gz = dir.join(format!("{stem}.gz"));
        if gz.is_file() {
            gz
        } else {
            dir.join(stem)
        }
    };
    let ipath = find(format!("{prefix}-images-idx3-ubyte"));
    let lpath = find(format!("{prefix}-labels-idx1-ubyte"));
    let images = read_idx(&ipath)?;
    let labels = read_idx(&lpath)?;
    if images.dims.len() != 3 || images.dims[1..] != [IMAGE_SIDE, IMAGE_SIDE] {
        return Err(Error::Idx {
            path: ipath,
            expected: "dimensions [N, 28, 28]".into(),
            found: format!("{:?}", images.dims),
        });
    }
    if labels.dims.len() != 1 || labels.len() != images.len() {
        return Err(Error::Idx {
            path: lpath,
            expected: format!("dimensions [{}] (one label per image)", images.len()),
            found: format!("{:?}", labels.dims),
        });
    }
    if let Some(bad) = labels.data.iter().find(|&&y| y as usize >= CLASSES.len()) {
        return Err(Error::Idx {
            path: lpath,
            expected: "labels 0–9".into(),
            found: bad.to_string(),
        });
    }
    Ok(MnistSplit {
        images: images.data,
        labels: labels.data,
    })
}

/// One FSDD recording, parsed from its file name `{digit}_{speaker}_{take}.wav`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Recording {
    /// The spoken digit (label).
    pub digit: u32,
    /// Speaker name.
    pub speaker: String,
    /// Take number (FSDD: 0–49; 0–4 are the official test split).
    pub take: u32,
    /// The file.
    pub path: PathBuf,
}

impl Recording {
    /// The file name (`{digit}_{speaker}_{take}.wav`).
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Parses `{digit}_{speaker}_{take}.wav`; `None` when the name does not have that form.
pub fn parse_recording_name(name: &str) -> Option<(u32, String, u32)> {
    let stem = name.strip_suffix(".wav")?;
    let mut parts = stem.split('_');
    let (d, s, t) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || s.is_empty() {
        return None;
    }
    let digit: u32 = d
        .parse()
        .ok()
        .filter(|&d: &u32| (d as usize) < CLASSES.len())?;
    Some((digit, s.to_string(), t.parse().ok()?))
}

/// Lists the FSDD recordings under `dir` (or `dir/recordings`), sorted by (digit, speaker,
/// take). A `.wav` file whose name is not `{digit}_{speaker}_{take}.wav` is an error naming it.
pub fn list_fsdd(dir: &Path) -> Result<Vec<Recording>> {
    let rec_dir = if dir.join("recordings").is_dir() {
        dir.join("recordings")
    } else {
        dir.to_path_buf()
    };
    if !rec_dir.is_dir() {
        return Err(Error::MissingFile {
            path: rec_dir,
            what: "FSDD recordings directory",
        });
    }
    let io = |source| Error::Io {
        path: rec_dir.clone(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&rec_dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.ends_with(".wav") {
            continue;
        }
        let (digit, speaker, take) =
            parse_recording_name(&name).ok_or_else(|| Error::FileContent {
                path: path.clone(),
                expected: "an FSDD name `{digit}_{speaker}_{take}.wav`".into(),
                found: name.clone(),
            })?;
        out.push(Recording {
            digit,
            speaker,
            take,
            path,
        });
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::MissingFile {
            path: rec_dir,
            what: "FSDD recordings (`{digit}_{speaker}_{take}.wav`)",
        });
    }
    Ok(out)
}

// -------------------------------------------------------------------------------------------
// Building
// -------------------------------------------------------------------------------------------

/// Where a sample came from (`index.jsonl`, one line per sample).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// `train` or `test`.
    pub split: String,
    /// Row of the sample in its split's tensors.
    pub position: usize,
    /// Label (the digit).
    pub label: u32,
    /// Class name (`CLASSES[label]`).
    pub class_name: String,
    /// MNIST split of the image (`train` or `test`).
    pub mnist_split: String,
    /// Index of the image in that MNIST split's IDX file.
    pub mnist_index: usize,
    /// The FSDD recording's file name.
    pub recording: String,
}

/// What a prepared directory records about its construction (`config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreparedInfo {
    /// Layout version ([`FORMAT`]).
    pub format: String,
    /// The construction config.
    pub config: AvMnistConfig,
    /// The seed of the pairing (and the noise).
    pub seed: u64,
    /// Mean and std of the training log-spectrograms (both splits are standardised by them).
    pub audio_mean: f32,
    /// See `audio_mean`.
    pub audio_std: f32,
    /// PCA components kept.
    pub pca_components: usize,
    /// Share of the image variance they hold.
    pub pca_energy_kept: f64,
    /// Spectrogram shape `[1, F, T_a]`.
    pub audio_shape: [usize; 3],
    /// Clip shape `[T, 3, H, W]`.
    pub video_shape: [usize; 4],
}

/// AV-MNIST in memory: both splits, ready for the trainer, and their provenance.
#[derive(Debug, Clone)]
pub struct AvMnistData {
    /// Training split.
    pub train: AvDataset,
    /// Test split.
    pub test: AvDataset,
    /// One entry per sample, training split first, in tensor order.
    pub index: Vec<IndexEntry>,
    /// How it was built.
    pub info: PreparedInfo,
}

/// Progress callback: `(stage, done, total)`.
pub type ProgressFn<'a> = &'a (dyn Fn(&str, u64, u64) + Sync);

/// One sample before the front ends.
struct Pairing {
    label: u32,
    image: usize,
    recording: usize,
}

/// Pairs `n` samples of one split, balanced over digits (see the module docs).
fn pair_split(
    n: usize,
    image_labels: &[u8],
    recordings: &[&Recording],
    rng: &mut ChaCha8Rng,
    split: &str,
) -> Result<Vec<Pairing>> {
    let k = CLASSES.len();
    let mut out = Vec::with_capacity(n);
    for d in 0..k {
        let count = n / k + usize::from(d < n % k);
        let mut recs: Vec<usize> = (0..recordings.len())
            .filter(|&r| recordings[r].digit as usize == d)
            .collect();
        let mut imgs: Vec<usize> = (0..image_labels.len())
            .filter(|&i| image_labels[i] as usize == d)
            .collect();
        if recs.is_empty() {
            return Err(Error::InvalidConfig {
                field: "fsdd_test_takes",
                expected: format!("FSDD recordings of digit {d} in the {split} split"),
                found: "none".into(),
            });
        }
        if imgs.len() < count {
            return Err(Error::InvalidConfig {
                field: "train_samples/test_samples",
                expected: format!(
                    "at most {} {split} samples of digit {d} (MNIST images available)",
                    imgs.len()
                ),
                found: count.to_string(),
            });
        }
        recs.shuffle(rng);
        imgs.shuffle(rng);
        for j in 0..count {
            out.push(Pairing {
                label: d as u32,
                image: imgs[j],
                recording: recs[j % recs.len()],
            });
        }
    }
    out.shuffle(rng);
    Ok(out)
}

/// Builds AV-MNIST from the MNIST IDX files in `mnist_dir` and the FSDD recordings in
/// `fsdd_dir` (see the module docs). Deterministic from `seed`. `progress` is called as work
/// advances (stages `read`, `pca`, `audio`).
pub fn build(
    cfg: &AvMnistConfig,
    seed: u64,
    mnist_dir: &Path,
    fsdd_dir: &Path,
    progress: ProgressFn<'_>,
) -> Result<AvMnistData> {
    cfg.validate()?;
    progress("read", 0, 2);
    let mnist = [
        read_mnist(mnist_dir, "train")?,
        read_mnist(mnist_dir, "t10k")?,
    ];
    let recordings = list_fsdd(fsdd_dir)?;
    progress("read", 2, 2);
    let split_recs: [Vec<&Recording>; 2] = [
        recordings
            .iter()
            .filter(|r| r.take >= cfg.fsdd_test_takes)
            .collect(),
        recordings
            .iter()
            .filter(|r| r.take < cfg.fsdd_test_takes)
            .collect(),
    ];
    let names = ["train", "test"];
    let sizes = [cfg.train_samples, cfg.test_samples];
    let mut pairs = Vec::with_capacity(2);
    for s in 0..2 {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, s as u64));
        pairs.push(pair_split(
            sizes[s],
            &mnist[s].labels,
            &split_recs[s],
            &mut rng,
            names[s],
        )?);
    }

    // Images: PCA fitted on the training split's images, applied to both splits.
    progress("pca", 0, 1);
    let dim = IMAGE_SIDE * IMAGE_SIDE;
    let to_unit = |m: &MnistSplit, i: usize| -> Vec<f64> {
        m.image(i).iter().map(|&p| f64::from(p) / 255.0).collect()
    };
    let fit: Vec<f64> = pairs[0]
        .iter()
        .flat_map(|p| to_unit(&mnist[0], p.image))
        .collect();
    let pca = Pca::fit(&fit, dim, cfg.pca_energy_fraction)?;
    progress("pca", 1, 1);

    // Audio through the front end, in parallel.
    let front = FrontEnd::new(cfg.audio.clone()).map_err(|e| Error::Audio(e.to_string()))?;
    let [_, f_bins, frames] = cfg.audio_shape();
    let total = (pairs[0].len() + pairs[1].len()) as u64;
    let done = AtomicU64::new(0);
    let mut splits_audio = Vec::with_capacity(2);
    for s in 0..2 {
        let specs: Vec<Result<Vec<f32>>> = pairs[s]
            .par_iter()
            .enumerate()
            .map(|(j, p)| {
                let rec = split_recs[s][p.recording];
                let spec = spectrogram(&front, cfg, rec, mix(mix(seed, 100 + s as u64), j as u64));
                progress("audio", done.fetch_add(1, Ordering::Relaxed) + 1, total);
                spec
            })
            .collect();
        let mut flat = Vec::with_capacity(pairs[s].len() * f_bins * frames);
        for spec in specs {
            flat.extend_from_slice(&spec?);
        }
        splits_audio.push(flat);
    }
    let (mean, std) = mean_std(&splits_audio[0]);
    for x in splits_audio.iter_mut().flatten() {
        *x = (*x - mean) / std;
    }

    let mut out_splits = Vec::with_capacity(2);
    let mut index = Vec::new();
    for (s, audio) in splits_audio.into_iter().enumerate() {
        let mut video = Vec::with_capacity(pairs[s].len() * 3 * dim);
        for (j, p) in pairs[s].iter().enumerate() {
            let rec = pca.reconstruct(&to_unit(&mnist[s], p.image));
            for _ in 0..3 {
                video.extend(rec.iter().map(|&x| x as f32));
            }
            index.push(IndexEntry {
                split: names[s].into(),
                position: j,
                label: p.label,
                class_name: CLASSES[p.label as usize].into(),
                mnist_split: names[s].into(),
                mnist_index: p.image,
                recording: split_recs[s][p.recording].file_name(),
            });
        }
        crate::front_end::normalize_frames(&mut video, IMAGE_SIDE)?;
        out_splits.push(AvDataset::new(
            audio,
            cfg.audio_shape(),
            video,
            cfg.video_shape(),
            pairs[s].iter().map(|p| p.label).collect(),
            vec![Views::Both; pairs[s].len()],
            CLASSES.len(),
        )?);
    }
    let [train, test] = two_splits(out_splits)?;
    Ok(AvMnistData {
        train,
        test,
        index,
        info: PreparedInfo {
            format: FORMAT.into(),
            config: cfg.clone(),
            seed,
            audio_mean: mean,
            audio_std: std,
            pca_components: pca.num_components(),
            pca_energy_kept: pca.energy_kept,
            audio_shape: cfg.audio_shape(),
            video_shape: cfg.video_shape(),
        },
    })
}

/// `[train, test]` from the two datasets built in that order.
fn two_splits(v: Vec<AvDataset>) -> Result<[AvDataset; 2]> {
    let n = v.len();
    v.try_into().map_err(|_| Error::ShapeMismatch {
        what: "dataset splits (train, test)",
        expected: 2,
        found: n,
    })
}

/// The log-magnitude spectrogram `(F, T_a)` (Nyquist bin dropped) of one recording, with the
/// configured noise drawn from `noise_seed`.
fn spectrogram(
    front: &FrontEnd,
    cfg: &AvMnistConfig,
    rec: &Recording,
    noise_seed: u64,
) -> Result<Vec<f32>> {
    let recording_err = |source| Error::Recording {
        path: rec.path.clone(),
        source,
    };
    let audio = umt_audio::read_wav(&rec.path).map_err(recording_err)?;
    let mut wave = front
        .waveform(&audio.samples, audio.sample_rate_hz, Crop::Start)
        .map_err(recording_err)?;
    if cfg.audio_noise_std > 0.0 {
        let mut rng = ChaCha8Rng::seed_from_u64(noise_seed);
        for x in wave.iter_mut() {
            *x += cfg.audio_noise_std * normal(&mut rng);
        }
    }
    let spec = front.stft().magnitude(&wave).map_err(recording_err)?;
    let keep = cfg.audio.stft.n_fft / 2;
    // Row-major [freq][frame]: the first n_fft/2 rows are every bin below Nyquist.
    Ok(spec.as_slice()[..keep * spec.n_frames()].to_vec())
}

/// Mean and std (floored at 1e-6) of `xs`, accumulated in f64.
fn mean_std(xs: &[f32]) -> (f32, f32) {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = xs
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean as f32, var.sqrt().max(1e-6) as f32)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// A well-mixed 64-bit key of `(a, b)` (SplitMix64 finaliser).
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// -------------------------------------------------------------------------------------------
// The prepared directory
// -------------------------------------------------------------------------------------------

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn content_err(path: &Path, expected: impl Into<String>, found: impl Into<String>) -> Error {
    Error::FileContent {
        path: path.to_path_buf(),
        expected: expected.into(),
        found: found.into(),
    }
}

fn f32_bytes(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Writes `data` under `out`: `{train,test}.safetensors` (tensors `audio (N, 1, F, T_a)` f32,
/// `video (N, 1, 3, 28, 28)` f32, `labels (N)` i64), `index.jsonl`, `classes.txt` and, last,
/// `config.json` ([`PreparedInfo`]; a directory without it is unfinished).
pub fn write_prepared(data: &AvMnistData, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    // A folder being rewritten is unfinished until its new config.json lands.
    let cfg_path = out.join("config.json");
    if cfg_path.exists() {
        std::fs::remove_file(&cfg_path).map_err(io_err(&cfg_path))?;
    }
    for (name, ds) in [("train", &data.train), ("test", &data.test)] {
        let n = ds.len();
        let all: Vec<usize> = (0..n).collect();
        let b = ds.gather(&all)?;
        let (audio, video) = (f32_bytes(&b.audio), f32_bytes(&b.video));
        let labels: Vec<u8> = b
            .labels
            .iter()
            .flat_map(|&y| i64::from(y).to_le_bytes())
            .collect();
        let path = out.join(format!("{name}.safetensors"));
        let st =
            |e: safetensors::SafeTensorError| content_err(&path, "valid tensors", e.to_string());
        let mut shape_a = vec![n];
        shape_a.extend(ds.audio_shape());
        let mut shape_v = vec![n];
        shape_v.extend(ds.video_shape());
        let tensors = vec![
            (
                "audio",
                TensorView::new(Dtype::F32, shape_a, &audio).map_err(st)?,
            ),
            (
                "labels",
                TensorView::new(Dtype::I64, vec![n], &labels).map_err(st)?,
            ),
            (
                "video",
                TensorView::new(Dtype::F32, shape_v, &video).map_err(st)?,
            ),
        ];
        let meta = HashMap::from([("format".to_string(), FORMAT.to_string())]);
        let bytes = safetensors::tensor::serialize(tensors, Some(meta)).map_err(st)?;
        write_atomic(&path, &bytes)?;
    }
    let mut lines = String::new();
    for e in &data.index {
        let line = serde_json::to_string(e).map_err(|source| Error::ConfigParse {
            path: out.join("index.jsonl"),
            source,
        })?;
        lines += &line;
        lines.push('\n');
    }
    write_atomic(&out.join("index.jsonl"), lines.as_bytes())?;
    write_atomic(
        &out.join("classes.txt"),
        (CLASSES.join("\n") + "\n").as_bytes(),
    )?;
    let text = serde_json::to_string_pretty(&data.info).map_err(|source| Error::ConfigParse {
        path: cfg_path.clone(),
        source,
    })?;
    write_atomic(&cfg_path, text.as_bytes())
}

/// Reads `config.json` of a prepared directory.
pub fn read_prepared_info(dir: &Path) -> Result<PreparedInfo> {
    let path = dir.join("config.json");
    if !path.is_file() {
        return Err(Error::MissingFile {
            path,
            what: "AV-MNIST config (run `cargo xtask prepare-avmnist`)",
        });
    }
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let info: PreparedInfo = serde_json::from_str(&text).map_err(|source| Error::ConfigParse {
        path: path.clone(),
        source,
    })?;
    if info.format != FORMAT {
        return Err(content_err(&path, format!("format {FORMAT}"), info.format));
    }
    Ok(info)
}

/// Reads one tensor of a prepared split, checking its dtype and shape.
fn read_tensor(
    st: &safetensors::SafeTensors<'_>,
    path: &Path,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
) -> Result<Vec<u8>> {
    let t = st
        .tensor(name)
        .map_err(|_| content_err(path, format!("a tensor `{name}`"), "none"))?;
    if t.dtype() != dtype || t.shape() != shape {
        return Err(content_err(
            path,
            format!("`{name}` {dtype:?} {shape:?}"),
            format!("{:?} {:?}", t.dtype(), t.shape()),
        ));
    }
    Ok(t.data().to_vec())
}

/// Loads a directory written by [`write_prepared`] into [`AvMnistData`]; every inconsistency
/// (missing file, a tensor of the wrong shape or dtype, an index that disagrees with the
/// labels) is an error naming the file.
pub fn load_prepared(dir: &Path) -> Result<AvMnistData> {
    let info = read_prepared_info(dir)?;
    let index_path = dir.join("index.jsonl");
    if !index_path.is_file() {
        return Err(Error::MissingFile {
            path: index_path,
            what: "AV-MNIST index",
        });
    }
    let text = std::fs::read_to_string(&index_path).map_err(io_err(&index_path))?;
    let mut index = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let e: IndexEntry = serde_json::from_str(line).map_err(|e| Error::IndexLine {
            path: index_path.clone(),
            line: i + 1,
            problem: e.to_string(),
        })?;
        index.push(e);
    }
    let sizes = [info.config.train_samples, info.config.test_samples];
    let mut splits = Vec::with_capacity(2);
    let mut offset = 0;
    for (s, name) in ["train", "test"].into_iter().enumerate() {
        let n = sizes[s];
        let path = dir.join(format!("{name}.safetensors"));
        if !path.is_file() {
            return Err(Error::MissingFile {
                path,
                what: "AV-MNIST tensors",
            });
        }
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| content_err(&path, "a safetensors file", e.to_string()))?;
        let mut shape_a = vec![n];
        shape_a.extend(info.audio_shape);
        let mut shape_v = vec![n];
        shape_v.extend(info.video_shape);
        let to_f32 = |b: Vec<u8>| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let audio = to_f32(read_tensor(&st, &path, "audio", Dtype::F32, &shape_a)?);
        let video = to_f32(read_tensor(&st, &path, "video", Dtype::F32, &shape_v)?);
        let labels: Vec<u32> = read_tensor(&st, &path, "labels", Dtype::I64, &[n])?
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .map(|y| u32::try_from(y).unwrap_or(u32::MAX))
            .collect();
        for (j, &y) in labels.iter().enumerate() {
            let e = index.get(offset + j);
            if e.map(|e| (e.split.as_str(), e.position, e.label)) != Some((name, j, y)) {
                return Err(Error::IndexLine {
                    path: index_path.clone(),
                    line: offset + j + 1,
                    problem: format!(
                        "expected {name} sample {j} with label {y} (as in {}), found {e:?}",
                        path.display()
                    ),
                });
            }
        }
        offset += n;
        splits.push(AvDataset::new(
            audio,
            info.audio_shape,
            video,
            info.video_shape,
            labels,
            vec![Views::Both; n],
            CLASSES.len(),
        )?);
    }
    if index.len() != offset {
        return Err(Error::IndexLine {
            path: index_path,
            line: offset + 1,
            problem: format!("expected {offset} lines, found {}", index.len()),
        });
    }
    let [train, test] = two_splits(splits)?;
    Ok(AvMnistData {
        train,
        test,
        index,
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_names_parse() {
        assert_eq!(
            parse_recording_name("7_theo_12.wav"),
            Some((7, "theo".into(), 12))
        );
        for bad in [
            "7_theo.wav",
            "x_theo_1.wav",
            "12_theo_1.wav",
            "7__1.wav",
            "7_a_1_2.wav",
        ] {
            assert_eq!(parse_recording_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn pairing_is_balanced_seeded_and_within_split() {
        let recs: Vec<Recording> = (0..10)
            .flat_map(|d| {
                (0..3).map(move |t| Recording {
                    digit: d,
                    speaker: "s".into(),
                    take: t,
                    path: format!("{d}_s_{t}.wav").into(),
                })
            })
            .collect();
        let refs: Vec<&Recording> = recs.iter().collect();
        let labels: Vec<u8> = (0..200).map(|i| (i % 10) as u8).collect();
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            pair_split(45, &labels, &refs, &mut rng, "train").unwrap()
        };
        let a = run(1);
        assert_eq!(a.len(), 45);
        for p in &a {
            assert_eq!(labels[p.image] as u32, p.label);
            assert_eq!(refs[p.recording].digit, p.label);
        }
        for d in 0..10u32 {
            let c = a.iter().filter(|p| p.label == d).count();
            assert_eq!(c, if d < 5 { 5 } else { 4 });
        }
        let mut imgs: Vec<usize> = a.iter().map(|p| p.image).collect();
        imgs.sort_unstable();
        imgs.dedup();
        assert_eq!(imgs.len(), 45, "images are drawn without replacement");
        let key = |v: &[Pairing]| v.iter().map(|p| (p.image, p.recording)).collect::<Vec<_>>();
        assert_eq!(key(&a), key(&run(1)));
        assert_ne!(key(&a), key(&run(2)));
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(matches!(
            pair_split(10_000, &labels, &refs, &mut rng, "train"),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn config_rejects_bad_fields_and_unknown_keys() {
        let c = AvMnistConfig {
            pca_energy_fraction: 0.0,
            ..AvMnistConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(Error::InvalidConfig {
                field: "pca_energy_fraction",
                ..
            })
        ));
        let e = serde_json::from_str::<AvMnistConfig>(r#"{"pca_energy": 0.3}"#).unwrap_err();
        assert!(e.to_string().contains("pca_energy"));
        assert_eq!(AvMnistConfig::default().audio_shape(), [1, 32, 32]);
        AvMnistConfig::default().validate().unwrap();
    }
}
