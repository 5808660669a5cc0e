//! Where a stage's mini-batches come from: a dataset held in memory (the synthetic data,
//! AV-MNIST) or a prepared VGGSound split streamed from disk by worker threads that decode
//! batches ahead of the model ([`umt_data::vggsound::Batches`]), so that a GPU is not starved
//! and 175k clips of 32 frames never sit in memory at once.
//!
//! Every stage of the runner (teachers, the nine methods, Gradient-Blending's weights, the
//! linear evaluation of Table 1, the tuning split) sees a split only through
//! [`DataSource`]: its length, labels and shapes, [`DataSource::train_batches`] (one shuffled
//! epoch) and [`DataSource::eval_batches`] (index order, evaluation mode). The order of an
//! epoch is a function of the stage's seed and the epoch number only.
//!
//! - **In memory**: the epoch order is drawn from the stage's random generator, shared with
//!   the loss (dropout masks), exactly as before this module existed: results of the
//!   synthetic and AV-MNIST runs are unchanged bit for bit.
//! - **Streamed**: the order is [`umt_data::vggsound::epoch_order`] of `(stage seed, epoch)`,
//!   each sample's random choices (frame within a segment, audio crop) are seeded from
//!   `(stage seed, epoch, sample)`, and spectrograms are standardised on the device with the
//!   training split's mean and std ([`audio_stats`]).

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use umt_data::vggsound::{self, Batches, LoaderConfig, Split, VggSound};
use umt_data::AvDataset;

use crate::config::{vggsound_index_sha256, DatasetConfig};
use crate::train::{device_batch, DeviceBatch};
use crate::{Error, Result};

/// Evaluation batch of in-memory data (forward only; small inputs).
pub const MEMORY_EVAL_BATCH: usize = 256;

/// How a streamed split is read. None of these fields changes a result: the batches are the
/// same whatever the number of workers or the prefetch depth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamLoader {
    /// Worker threads decoding batches (JPEG frames, WAV + STFT). Our choice: 4 (PyTorch's
    /// habit of a few `DataLoader` workers per GPU); raise it when the GPU waits.
    pub workers: usize,
    /// Batches decoded ahead of the model, over all workers. Our choice: 8 (two per worker,
    /// PyTorch's `prefetch_factor = 2`).
    pub prefetch_batches: usize,
    /// Batch size of evaluation passes (test accuracy, embeddings for linear evaluation).
    /// Our choice: 24, the paper's training batch (§4.1), so evaluation fits wherever
    /// training does; the paper does not state one.
    pub eval_batch_size: usize,
}

impl Default for StreamLoader {
    fn default() -> Self {
        Self {
            workers: 4,
            prefetch_batches: 8,
            eval_batch_size: 24,
        }
    }
}

impl StreamLoader {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if self.eval_batch_size == 0 {
            return Err(Error::InvalidConfig {
                field: "dataset.loader.eval_batch_size",
                expected: "at least 1".into(),
                found: "0".into(),
            });
        }
        // `workers` and `prefetch_batches` as the loader itself checks them.
        Ok(self.loader_config(self.eval_batch_size, 0).validate()?)
    }

    /// The loader's settings for one pass in batches of `batch_size` seeded by `seed`.
    fn loader_config(&self, batch_size: usize, seed: u64) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            workers: self.workers,
            prefetch_batches: self.prefetch_batches,
            drop_last: false,
            seed,
        }
    }
}

/// One split streamed from a prepared VGGSound folder.
#[derive(Debug, Clone)]
pub struct StreamSplit {
    data: Arc<VggSound>,
    labels: Vec<u32>,
    /// `(mean, std)` of the training split's log-spectrograms.
    audio_stats: (f32, f32),
    loader: StreamLoader,
}

impl StreamSplit {
    /// Streams `data`, standardising spectrograms by `audio_stats` = `(mean, std)`.
    pub fn new(data: VggSound, audio_stats: (f32, f32), loader: StreamLoader) -> Result<Self> {
        loader.validate()?;
        let labels = data.labels();
        Ok(Self {
            data: Arc::new(data),
            labels,
            audio_stats,
            loader,
        })
    }

    /// The split on disk.
    pub fn dataset(&self) -> &VggSound {
        &self.data
    }
}

/// A split of a run, in memory or streamed.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// Held in memory, already standardised.
    Memory(AvDataset),
    /// Streamed from disk with prefetching.
    Stream(StreamSplit),
}

impl From<AvDataset> for DataSource {
    fn from(d: AvDataset) -> Self {
        DataSource::Memory(d)
    }
}

impl DataSource {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels().len()
    }

    /// Whether the split has no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        match self {
            DataSource::Memory(d) => d.num_classes(),
            DataSource::Stream(s) => s.data.num_classes(),
        }
    }

    /// Every label `(N)`, in sample order.
    pub fn labels(&self) -> &[u32] {
        match self {
            DataSource::Memory(d) => d.labels(),
            DataSource::Stream(s) => &s.labels,
        }
    }

    /// Shape of one spectrogram `[1, F, T_a]`.
    pub fn audio_shape(&self) -> [usize; 3] {
        match self {
            DataSource::Memory(d) => d.audio_shape(),
            DataSource::Stream(s) => s.data.audio_shape(),
        }
    }

    /// Shape of one clip `[T, 3, H, W]`.
    pub fn video_shape(&self) -> [usize; 4] {
        match self {
            DataSource::Memory(d) => d.video_shape(),
            DataSource::Stream(s) => s.data.video_shape(),
        }
    }

    /// The batch size of evaluation passes: [`MEMORY_EVAL_BATCH`] in memory, the loader's
    /// `eval_batch_size` when streamed (full-size clips).
    pub fn eval_batch_size(&self) -> usize {
        match self {
            DataSource::Memory(_) => MEMORY_EVAL_BATCH,
            DataSource::Stream(s) => s.loader.eval_batch_size,
        }
    }

    /// The samples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        Ok(match self {
            DataSource::Memory(d) => DataSource::Memory(d.subset(indices)?),
            DataSource::Stream(s) => DataSource::Stream(StreamSplit {
                data: Arc::new(s.data.subset(indices)?),
                labels: indices
                    .iter()
                    .map(|&i| s.labels[i]) // in range: `VggSound::subset` checked
                    .collect(),
                audio_stats: s.audio_stats,
                loader: s.loader.clone(),
            }),
        })
    }

    /// A seeded, stratified `fraction` of every class carved off as a validation split
    /// ([`umt_data::dataset::stratified_split`]); returns `(rest, validation)`.
    pub fn split_validation(&self, fraction: f64, seed: u64) -> Result<(Self, Self)> {
        match self {
            DataSource::Memory(d) => {
                let (a, b) = d.split_validation(fraction, seed)?;
                Ok((a.into(), b.into()))
            }
            DataSource::Stream(_) => {
                let (rest, val) = umt_data::dataset::stratified_split(
                    self.labels(),
                    self.num_classes(),
                    fraction,
                    seed,
                )?;
                Ok((self.subset(&rest)?, self.subset(&val)?))
            }
        }
    }

    /// One training epoch in batches of `batch_size` (the last one may be smaller). In
    /// memory the order is a permutation drawn from `rng` (the stage's generator, which the
    /// loss goes on using); streamed, it is a function of `(seed, epoch)` and `rng` is not
    /// touched.
    pub fn train_batches(
        &self,
        epoch: usize,
        batch_size: usize,
        seed: u64,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<BatchIter<'_>> {
        match self {
            DataSource::Memory(d) => {
                let mut order: Vec<usize> = (0..d.len()).collect();
                order.shuffle(rng);
                Ok(BatchIter::memory(d, order, batch_size, device))
            }
            DataSource::Stream(s) => {
                let cfg = s.loader.loader_config(batch_size, seed);
                let batches = Batches::new(Arc::clone(&s.data), &cfg, epoch as u64, true)?;
                Ok(BatchIter::stream(s, batches, device))
            }
        }
    }

    /// The whole split in index order, in evaluation mode (centre frames, audio from the
    /// start), in batches of `batch_size`.
    pub fn eval_batches(&self, batch_size: usize, device: &Device) -> Result<BatchIter<'_>> {
        match self {
            DataSource::Memory(d) => Ok(BatchIter::memory(
                d,
                (0..d.len()).collect(),
                batch_size,
                device,
            )),
            DataSource::Stream(s) => {
                let cfg = s.loader.loader_config(batch_size, 0);
                let batches = Batches::new(Arc::clone(&s.data), &cfg, 0, false)?;
                Ok(BatchIter::stream(s, batches, device))
            }
        }
    }
}

/// The batches of one pass over a [`DataSource`], on the device.
pub struct BatchIter<'a> {
    inner: Inner<'a>,
    device: Device,
}

enum Inner<'a> {
    Memory {
        data: &'a AvDataset,
        order: Vec<usize>,
        batch_size: usize,
        next: usize,
    },
    Stream {
        split: &'a StreamSplit,
        batches: Batches,
    },
}

impl<'a> BatchIter<'a> {
    fn memory(data: &'a AvDataset, order: Vec<usize>, batch_size: usize, device: &Device) -> Self {
        Self {
            inner: Inner::Memory {
                data,
                order,
                batch_size: batch_size.max(1),
                next: 0,
            },
            device: device.clone(),
        }
    }

    fn stream(split: &'a StreamSplit, batches: Batches, device: &Device) -> Self {
        Self {
            inner: Inner::Stream { split, batches },
            device: device.clone(),
        }
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<DeviceBatch>;

    fn next(&mut self) -> Option<Result<DeviceBatch>> {
        match &mut self.inner {
            Inner::Memory {
                data,
                order,
                batch_size,
                next,
            } => {
                if *next >= order.len() {
                    return None;
                }
                let end = (*next + *batch_size).min(order.len());
                let chunk = &order[*next..end];
                *next = end;
                Some(device_batch(data, chunk, &self.device))
            }
            Inner::Stream { split, batches } => {
                let batch = batches.next()?;
                Some(
                    batch
                        .map_err(Error::from)
                        .and_then(|b| upload_standardised(b, split, &self.device)),
                )
            }
        }
    }
}

/// A decoded batch onto the device, spectrograms standardised: audio `(B, 1, F, T_a)`,
/// video `(B, T, 3, H, W)`, labels `(B)`.
fn upload_standardised(
    b: umt_data::Batch,
    split: &StreamSplit,
    device: &Device,
) -> Result<DeviceBatch> {
    let n = b.labels.len();
    let [c, f, t] = split.data.audio_shape();
    let [tv, cv, h, w] = split.data.video_shape();
    let (mean, std) = split.audio_stats;
    let audio = Tensor::from_vec(b.audio, (n, c, f, t), device)?; // (B, 1, F, T_a)
    Ok(DeviceBatch {
        // (x − mean) / std, as the in-memory datasets were standardised when built.
        audio: audio.affine(1.0 / f64::from(std), -f64::from(mean) / f64::from(std))?,
        video: Tensor::from_vec(b.video, (n, tv, cv, h, w), device)?,
        labels: Tensor::from_vec(b.labels, n, device)?,
    })
}

/// What [`audio_stats`] measured, recorded in the run folder (`audio-stats.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioStats {
    /// Mean of every spectrogram value of the sampled clips.
    pub mean: f32,
    /// Their standard deviation (population).
    pub std: f32,
    /// How many training clips were sampled.
    pub clips: usize,
    /// Seed of the sample (the config's `data_seed`).
    pub seed: u64,
}

/// Mean and standard deviation of the log-spectrograms of a seeded sample of `clips` clips of
/// the training split `train` (all of them when it has fewer), read in evaluation mode (audio
/// from the start of the clip). A zero or non-finite std is an error naming the folder.
pub fn audio_stats(train: &VggSound, clips: usize, seed: u64) -> Result<AudioStats> {
    let mut idx: Vec<usize> = (0..train.len()).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    idx.truncate(clips.max(1));
    idx.sort_unstable(); // read in index order (disk locality)
    let (mut sum, mut sum_sq, mut count) = (0.0f64, 0.0f64, 0usize);
    for &i in &idx {
        for &x in &train.spectrogram(i, false, 0, 0)? {
            let x = f64::from(x);
            sum += x;
            sum_sq += x * x;
            count += 1;
        }
    }
    let mean = sum / count.max(1) as f64;
    let std = (sum_sq / count.max(1) as f64 - mean * mean).max(0.0).sqrt();
    if !(std > 0.0 && std.is_finite() && mean.is_finite()) {
        return Err(Error::Dataset {
            name: "vggsound".into(),
            problem: format!(
                "{}: the spectrograms of {} sampled training clips have mean {mean} and std \
                 {std}; expected a finite mean and a positive std (silent or damaged audio?)",
                train.root().display(),
                idx.len()
            ),
        });
    }
    Ok(AudioStats {
        mean: mean as f32,
        std: std as f32,
        clips: idx.len(),
        seed,
    })
}

/// Where [`open_vggsound`] records the audio statistics of a run (in its output folder).
pub const AUDIO_STATS_FILE: &str = "audio-stats.json";

/// Both splits of the VGGSound `dataset` (a [`DatasetConfig::Vggsound`]) as streamed
/// sources, and the audio statistics of its training split: read from the run folder's
/// [`AUDIO_STATS_FILE`] when an earlier run of the folder measured them, else measured on
/// `audio_stats_clips` training clips drawn with `data_seed` and recorded there.
///
/// Errors name the problem: a folder prepared again since the run started (other
/// `index.jsonl` or `classes.txt`), a missing file, a split with no clips.
pub fn open_vggsound(
    dataset: &DatasetConfig,
    data_seed: u64,
    out_dir: &Path,
) -> Result<(DataSource, DataSource, AudioStats)> {
    let DatasetConfig::Vggsound {
        data_dir,
        index_sha256,
        front_end,
        audio_stats_clips,
        loader,
    } = dataset
    else {
        return Err(Error::Dataset {
            name: dataset.name().into(),
            problem: "is not VGGSound".into(),
        });
    };
    if vggsound_index_sha256(data_dir)? != *index_sha256 {
        return Err(Error::Dataset {
            name: "vggsound".into(),
            problem: format!(
                "{} was prepared again (its {} or {} changed) since this run started; use \
                 another --out folder",
                data_dir.display(),
                vggsound::CLASSES_FILE,
                vggsound::INDEX_FILE
            ),
        });
    }
    let open = |split: Split| -> Result<VggSound> {
        let d = VggSound::open(data_dir, split, front_end.clone())?;
        if d.is_empty() {
            return Err(Error::Dataset {
                name: "vggsound".into(),
                problem: format!(
                    "{} lists no {} clip: every split needs at least one (see {} for the \
                     clips that failed to prepare)",
                    data_dir.join(vggsound::INDEX_FILE).display(),
                    split.as_str(),
                    data_dir.join(vggsound::REPORT_FILE).display()
                ),
            });
        }
        Ok(d)
    };
    let (train, test) = (open(Split::Train)?, open(Split::Test)?);
    let path = out_dir.join(AUDIO_STATS_FILE);
    let stats = if path.is_file() {
        crate::run::read_json::<AudioStats>(&path)?
    } else {
        let s = audio_stats(&train, *audio_stats_clips, data_seed)?;
        crate::run::write_json_atomic(&path, &s)?;
        s
    };
    let stream = |d| StreamSplit::new(d, (stats.mean, stats.std), loader.clone());
    Ok((
        DataSource::Stream(stream(train)?),
        DataSource::Stream(stream(test)?),
        stats,
    ))
}
