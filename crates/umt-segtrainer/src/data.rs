//! The images of a run: the synthetic scenes or NYUv2 on disk, the training and evaluation
//! views (a validation carve in tuning mode), the preparation of one sample (resize to the
//! model input, augmentation, normalisation) and batch prefetching on worker threads.
//!
//! **Memory.** Nothing is cached: every batch is decoded (NYUv2) or rendered (synthetic) when
//! it is needed, augmented and normalised, and dropped after its step. The 795 NYUv2 training
//! images would fit in memory decoded (about 4 GB as f32 at 480×640, 1.5 GB as u8/u16), but
//! decoding is cheap next to a training step when it runs ahead on worker threads: a producer
//! thread prepares the next `prefetch_batches` batches (their samples in parallel on rayon's
//! pool) while the model trains on the current one.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use umt_data::rgbd::augment::{augment_train, resize_eval, AugmentConfig, Normalization};
use umt_data::rgbd::nyuv2::Nyuv2Dataset;
use umt_data::rgbd::synthetic::SyntheticRgbd;
use umt_data::rgbd::{RgbdBatch, RgbdDataset, RgbdSample, Split};

use crate::config::{DataConfig, SegExperimentConfig};
use crate::{Error, Result};

/// One split of the data source.
#[derive(Debug)]
pub enum Source {
    /// Rendered on demand.
    Synthetic(Box<SyntheticRgbd>),
    /// Read from disk.
    Nyuv2(Nyuv2Dataset),
}

impl Source {
    /// Opens `split` of the data `cfg.data` names (`data_dir`: the NYUv2 folder).
    pub fn open(cfg: &SegExperimentConfig, data_dir: Option<&Path>, split: Split) -> Result<Self> {
        match &cfg.data {
            DataConfig::Synthetic { generator } => Ok(Self::Synthetic(Box::new(
                SyntheticRgbd::new(generator, split, cfg.data_seed)?,
            ))),
            DataConfig::Nyuv2 {
                depth, depth_scale, ..
            } => {
                let root = data_dir.ok_or(Error::InvalidConfig {
                    field: "data_dir",
                    expected: "the folder `cargo xtask prepare-nyuv2` wrote (--data-dir)".into(),
                    found: "none".into(),
                })?;
                if !root.is_dir() {
                    return Err(Error::Nyuv2Missing {
                        path: root.to_path_buf(),
                        what: "NYUv2 folder",
                    });
                }
                let ds =
                    Nyuv2Dataset::open_with_depth(root, split, *depth).map_err(|e| match e {
                        umt_data::Error::MissingFile { path, what } => {
                            Error::Nyuv2Missing { path, what }
                        }
                        other => other.into(),
                    })?;
                Ok(Self::Nyuv2(ds.with_depth_scale(*depth_scale)?))
            }
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Self::Synthetic(d) => d.len(),
            Self::Nyuv2(d) => d.len(),
        }
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `i` as loaded or rendered (RGB in `[0, 255]`, depth in mm).
    pub fn sample(&self, i: usize) -> Result<RgbdSample> {
        Ok(match self {
            Self::Synthetic(d) => d.sample(i)?,
            Self::Nyuv2(d) => d.sample(i)?,
        })
    }

    /// The labels of sample `i` (`(H, W)`; NYUv2: without decoding RGB and depth).
    pub fn labels(&self, i: usize) -> Result<Vec<u8>> {
        Ok(match self {
            Self::Synthetic(d) => d.sample(i)?.labels,
            Self::Nyuv2(d) => d.labels(i)?.0,
        })
    }

    /// A name of sample `i` that identifies it across runs (`train/0003`, `synthetic/train/7`).
    pub fn id(&self, i: usize) -> String {
        match self {
            Self::Synthetic(d) => format!("synthetic/{}/{i}", d.split().name()),
            Self::Nyuv2(d) => match d.files().get(i) {
                Some(f) => format!("{}/{}", d.split().name(), f.id),
                None => format!("{}/#{i}", d.split().name()),
            },
        }
    }
}

/// `(train indices, evaluation indices into the evaluation source)`: the first
/// `max_train`/`max_test` of each split, or in tuning mode (`validation_fraction`) a seeded
/// carve of the training indices: `round(f·n)` of them (at least 1) for validation, the rest
/// for training.
pub fn split_indices(
    train_len: usize,
    test_len: usize,
    limits: (Option<usize>, Option<usize>),
    validation_fraction: Option<f64>,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let train: Vec<usize> = (0..limits.0.map_or(train_len, |m| m.min(train_len))).collect();
    match validation_fraction {
        None => Ok((
            train,
            (0..limits.1.map_or(test_len, |m| m.min(test_len))).collect(),
        )),
        Some(f) => {
            let n_val = ((f * train.len() as f64).round() as usize).max(1);
            if !(f > 0.0 && f < 1.0) || n_val >= train.len() {
                return Err(Error::InvalidConfig {
                    field: "validation_fraction",
                    expected: format!(
                        "a fraction in (0, 1) leaving training images (of {})",
                        train.len()
                    ),
                    found: f.to_string(),
                });
            }
            let order = permutation(train.len(), splitmix(seed ^ 0x7A11_DA7E));
            let mut val: Vec<usize> = order[..n_val].iter().map(|&k| train[k]).collect();
            let mut rest: Vec<usize> = order[n_val..].iter().map(|&k| train[k]).collect();
            val.sort_unstable();
            rest.sort_unstable();
            Ok((rest, val))
        }
    }
}

/// SplitMix64 step (seed derivation and the epoch shuffles).
pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fisher–Yates permutation of `0..n` from `seed`.
pub(crate) fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    let mut state = seed;
    for i in (1..n).rev() {
        state = splitmix(state);
        let j = (state % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

/// How one sample becomes network input.
#[derive(Debug, Clone)]
pub struct Prepare {
    /// Model input size `(H, W)`.
    pub size: (usize, usize),
    /// Training augmentation (`None`: evaluation, or augmentation off).
    pub augment: Option<AugmentConfig>,
    /// Normalisation (NYUv2 statistics).
    pub norm: Normalization,
}

impl Prepare {
    /// Resize to the model size when the image differs (RGB bilinear, depth and labels
    /// nearest; a no-op for NYUv2 at 480×640), augment with `seed` (training), normalise.
    pub fn apply(&self, raw: RgbdSample, seed: u64) -> Result<RgbdSample> {
        let (h, w) = self.size;
        let sized = if (raw.height, raw.width) == (h, w) {
            raw
        } else {
            resize_eval(&raw, h, w)?
        };
        let mut s = match &self.augment {
            Some(aug) => augment_train(&sized, aug, seed)?,
            None => sized,
        };
        self.norm.apply(&mut s);
        Ok(s)
    }
}

/// Builds the batch of the source samples `items`, each prepared with the seed
/// `splitmix(seed ^ index)`, in parallel on rayon's pool.
pub fn load_batch(
    source: &Source,
    items: &[usize],
    prep: &Prepare,
    seed: u64,
) -> Result<RgbdBatch> {
    let samples = items
        .par_iter()
        .map(|&i| prep.apply(source.sample(i)?, splitmix(seed ^ i as u64)))
        .collect::<Result<Vec<_>>>()?;
    Ok(RgbdBatch::from_samples(&samples)?)
}

/// Runs `consume` on the batches `jobs` (each a list of source indices and a seed) in order,
/// while a producer thread prepares up to `prefetch` batches ahead (`0`: on this thread). The
/// first error of either side stops both and is returned.
pub fn for_each_batch(
    source: &Source,
    jobs: &[(Vec<usize>, u64)],
    prep: &Prepare,
    prefetch: usize,
    mut consume: impl FnMut(usize, RgbdBatch) -> Result<()>,
) -> Result<()> {
    if prefetch == 0 {
        for (k, (items, seed)) in jobs.iter().enumerate() {
            consume(k, load_batch(source, items, prep, *seed)?)?;
        }
        return Ok(());
    }
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Result<RgbdBatch>>(prefetch);
        scope.spawn(move || {
            for (items, seed) in jobs {
                let batch = load_batch(source, items, prep, *seed);
                let failed = batch.is_err();
                // A closed channel: the consumer stopped (an error); stop too.
                if tx.send(batch).is_err() || failed {
                    break;
                }
            }
        });
        for k in 0..jobs.len() {
            let batch = rx.recv().map_err(|_| Error::InvalidConfig {
                field: "prefetch",
                expected: "a batch from the loader thread".into(),
                found: "the loader thread ended early".into(),
            })??;
            consume(k, batch)?;
        }
        Ok(())
    })
}

/// The class weights of a run as recorded in `class_weights.json` (ESANet caches them as a
/// pickle next to its dataset code; here next to the results they produced).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassWeightsRecord {
    /// `median_frequency`.
    pub weighting: String,
    /// The training images counted, by id.
    pub images: Vec<String>,
    /// Pixels per class over those images (void excluded), index `c` = label `c + 1`.
    pub pixels: Vec<u64>,
    /// The weights, index `c` = label `c + 1`.
    pub weights: Vec<f32>,
}

/// The NYUv2 folder a run read (`data.json`; a folder of another run is refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataRecord {
    /// `synthetic` or `nyuv2`.
    pub kind: String,
    /// The NYUv2 folder (absolute when it could be resolved), `None` for synthetic data.
    pub root: Option<PathBuf>,
    /// Training images used.
    pub train_images: usize,
    /// Evaluation images (test split, or the validation carve in tuning mode).
    pub eval_images: usize,
}
