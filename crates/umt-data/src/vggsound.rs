//! VGGSound (paper §4.1) from disk, in the layout that `cargo xtask prepare-vggsound`
//! (crate `umt-data-prep`) writes, with a prefetching batch iterator so that a trainer streams
//! epochs from disk instead of holding the dataset in memory.
//!
//! # Layout (this module owns it; `umt-data-prep` writes it through these types)
//!
//! ```text
//! ROOT/
//!   classes.txt          one class name per line, sorted by name; the line number (0-based) is
//!                        the class id, so ids are the same on every machine
//!   index.jsonl          one IndexEntry per prepared clip, sorted by clip id
//!   report.jsonl         the clips that failed to prepare, with the reason
//!   prepare.json         the preparation settings (frame rate, JPEG quality, sizes)
//!   clips/<clip_id>/frames/000001.jpg …   256×256 RGB JPEG frames, in time order
//!   clips/<clip_id>/audio.wav             16 kHz mono 32-bit float, exactly 10 s
//!   clips/<clip_id>/meta.json             the clip's IndexEntry (written last)
//! ```
//!
//! # Shapes
//!
//! One sample is a spectrogram `(1, F, T_a)` and a clip `(T, 3, H, W)`:
//! `F = n_fft / 2` (the STFT's Nyquist bin is dropped so F stays even for stride-2
//! convolutions, as in [`crate::front_end`]), `T_a = 1 + clip_len / hop` (`(1, 512, 313)` for
//! the paper's front end); `T, H, W` from the [`umt_video::VideoConfig`] (`(32, 3, 224, 224)`
//! by default). A [`Batch`] stacks them: audio `(B, 1, F, T_a)`, video `(B, T, 3, H, W)`,
//! labels `(B)`.
//!
//! # Determinism
//!
//! The order of an epoch is a function of `(seed, epoch)` only (shuffled when training,
//! index order in evaluation), and each sample's random choices (frame within each segment,
//! audio crop) are seeded from `(seed, epoch, sample index)` with [`umt_video::clip_seed`]: the
//! batches are the same whatever the number of workers or the prefetch depth.
//!
//! ```no_run
//! use std::sync::Arc;
//! use umt_data::vggsound::{Batches, LoaderConfig, Split, VggSound, VggSoundConfig};
//!
//! let train = Arc::new(VggSound::open("data/vggsound", Split::Train, VggSoundConfig::default())?);
//! let loader = LoaderConfig { batch_size: 24, workers: 4, prefetch_batches: 8, ..LoaderConfig::default() };
//! for epoch in 0..20 {
//!     for batch in Batches::new(Arc::clone(&train), &loader, epoch, true)? {
//!         let batch = batch?; // audio (24, 1, 512, 313), video (24, 32, 3, 224, 224), labels (24)
//!         # let _ = batch;
//!     }
//! }
//! # Ok::<(), umt_data::Error>(())
//! ```

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use umt_audio::{Crop, FrontEnd, FrontEndConfig, LogCompression};
use umt_video::{clip_seed, Sampling, VideoConfig};

use crate::{Batch, Error, Result};

/// The class list, one name per line in sorted order.
pub const CLASSES_FILE: &str = "classes.txt";
/// The index of prepared clips, JSON Lines of [`IndexEntry`].
pub const INDEX_FILE: &str = "index.jsonl";
/// The failure report of the preparation, JSON Lines.
pub const REPORT_FILE: &str = "report.jsonl";
/// The preparation settings, JSON.
pub const PREPARE_CONFIG_FILE: &str = "prepare.json";
/// The folder holding one folder per clip.
pub const CLIPS_DIR: &str = "clips";
/// A clip's frame folder (inside its clip folder).
pub const FRAMES_DIR: &str = "frames";
/// A clip's audio file (inside its clip folder).
pub const AUDIO_FILE: &str = "audio.wav";
/// A clip's [`IndexEntry`] (inside its clip folder), written last: its presence marks the clip
/// as complete.
pub const META_FILE: &str = "meta.json";

/// The split of a clip, as in the official `vggsound.csv` (`train` / `test`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training split.
    Train,
    /// Test split.
    Test,
}

impl Split {
    /// The name used in the CSV and the index (`"train"`, `"test"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }

    /// Parses `"train"` / `"test"` (surrounding whitespace ignored, case-sensitive as in the
    /// official CSV).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "train" => Some(Split::Train),
            "test" => Some(Split::Test),
            _ => None,
        }
    }
}

/// One prepared clip: a line of `index.jsonl` and the clip's `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// `{youtube_id}_{start_seconds:06}`, also the clip's folder name under `clips/`.
    pub clip_id: String,
    /// Class name as in the CSV.
    pub label: String,
    /// Line of `label` in `classes.txt` (0-based).
    pub class_id: u32,
    /// Split from the CSV.
    pub split: Split,
    /// Number of JPEG frames written.
    pub num_frames: usize,
    /// The video file the clip was prepared from (as found under `--videos`).
    pub source: String,
}

impl IndexEntry {
    /// The clip's folder, `root/clips/<clip_id>`.
    pub fn clip_dir(&self, root: &Path) -> PathBuf {
        root.join(CLIPS_DIR).join(&self.clip_id)
    }

    /// The clip's frame folder, `root/clips/<clip_id>/frames`.
    pub fn frames_dir(&self, root: &Path) -> PathBuf {
        self.clip_dir(root).join(FRAMES_DIR)
    }

    /// The clip's WAV, `root/clips/<clip_id>/audio.wav`.
    pub fn audio_path(&self, root: &Path) -> PathBuf {
        self.clip_dir(root).join(AUDIO_FILE)
    }
}

/// How samples are turned into tensors. Default: the paper's front ends (§4.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VggSoundConfig {
    /// Frame sampling, resize/crop and normalisation. Default [`VideoConfig::default`]: 32
    /// frames (paper §4.1: "32 frames are uniformly sampled"), resized from the stored 256×256
    /// to 224×224 (ResNet-18's input size), no crop (paper §4.1: no data augmentation),
    /// ImageNet normalisation.
    pub video: VideoConfig,
    /// WAV → spectrogram. Default [`FrontEndConfig::paper`] (16 kHz, 10 s, n_fft 1024, hop
    /// 512) with `ln(1e-6 + |X|)` compression (the project's audio encoders take
    /// log-magnitudes, as [`crate::front_end`] does for the synthetic data).
    pub audio: FrontEndConfig,
}

impl Default for VggSoundConfig {
    fn default() -> Self {
        let mut audio = FrontEndConfig::paper();
        audio.stft.log = Some(LogCompression::default());
        Self {
            video: VideoConfig::default(),
            audio,
        }
    }
}

/// How batches are streamed. Defaults: the paper's batch size, our choice of workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderConfig {
    /// Samples per batch. Default 24 (paper §4.1: "batch size of 24").
    pub batch_size: usize,
    /// Worker threads, each building whole batches (frame decoding inside a batch also uses
    /// rayon). Default 4 (our choice: PyTorch's `DataLoader` habit of a few workers per GPU).
    pub workers: usize,
    /// Batches decoded ahead of the consumer, over all workers (at least one per worker).
    /// Default 8 (our choice: two per worker, like PyTorch's `prefetch_factor=2`).
    pub prefetch_batches: usize,
    /// Drop the last batch when it is smaller than `batch_size`. Default `false` (evaluation
    /// must see every sample).
    pub drop_last: bool,
    /// Seed of the epoch order and of each sample's random choices. Default 0.
    pub seed: u64,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 24,
            workers: 4,
            prefetch_batches: 8,
            drop_last: false,
            seed: 0,
        }
    }
}

impl LoaderConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("loader.batch_size", self.batch_size),
            ("loader.workers", self.workers),
            ("loader.prefetch_batches", self.prefetch_batches),
        ] {
            if v == 0 {
                return Err(Error::InvalidConfig {
                    field,
                    expected: "at least 1".into(),
                    found: "0".into(),
                });
            }
        }
        Ok(())
    }
}

/// Reads `classes.txt`: one name per line, sorted, unique, none empty.
pub fn read_classes(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).map_err(|e| io_or_missing(e, path, "class list"))?;
    let classes: Vec<String> = text.lines().map(str::to_owned).collect();
    for (i, name) in classes.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(Error::IndexLine {
                path: path.to_path_buf(),
                line: i + 1,
                problem: "expected a class name, found an empty line".into(),
            });
        }
        if i > 0 && classes[i - 1] >= *name {
            return Err(Error::IndexLine {
                path: path.to_path_buf(),
                line: i + 1,
                problem: format!(
                    "expected names in strictly increasing order, found {:?} after {:?}",
                    name,
                    classes[i - 1]
                ),
            });
        }
    }
    Ok(classes)
}

/// Reads `index.jsonl` (every split).
pub fn read_index(path: &Path) -> Result<Vec<IndexEntry>> {
    let file = fs::File::open(path).map_err(|e| io_or_missing(e, path, "index"))?;
    let mut entries = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: IndexEntry = serde_json::from_str(&line).map_err(|e| Error::IndexLine {
            path: path.to_path_buf(),
            line: i + 1,
            problem: format!("expected an index entry: {e}"),
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

fn io_or_missing(e: std::io::Error, path: &Path, what: &'static str) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::MissingFile {
            path: path.to_path_buf(),
            what,
        }
    } else {
        Error::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// One split of a prepared VGGSound folder: the index in memory, samples decoded on demand.
#[derive(Debug)]
pub struct VggSound {
    root: PathBuf,
    classes: Vec<String>,
    entries: Vec<IndexEntry>,
    config: VggSoundConfig,
    front_end: FrontEnd,
}

impl VggSound {
    /// Opens `split` of the prepared folder `root`: reads the class list and the index, checks
    /// that every clip's class id names its label, and that its frame folder and WAV exist
    /// (a missing one is [`Error::MissingFile`] naming the path).
    pub fn open(root: impl AsRef<Path>, split: Split, config: VggSoundConfig) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        config
            .video
            .validate()
            .map_err(|e| Error::Video(e.to_string()))?;
        let front_end =
            FrontEnd::new(config.audio.clone()).map_err(|e| Error::Audio(e.to_string()))?;
        let classes_path = root.join(CLASSES_FILE);
        let classes = read_classes(&classes_path)?;
        let index_path = root.join(INDEX_FILE);
        let all = read_index(&index_path)?;
        let mut entries = Vec::new();
        for (i, e) in all.into_iter().enumerate() {
            match classes.get(e.class_id as usize) {
                Some(name) if *name == e.label => {}
                found => {
                    return Err(Error::IndexLine {
                        path: index_path,
                        line: i + 1,
                        problem: format!(
                            "clip {}: class id {} should name {:?} in {}, found {:?}",
                            e.clip_id,
                            e.class_id,
                            e.label,
                            CLASSES_FILE,
                            found.map_or("nothing (out of range)", String::as_str)
                        ),
                    })
                }
            }
            if e.split != split {
                continue;
            }
            let frames = e.frames_dir(&root);
            if !frames.is_dir() {
                return Err(Error::MissingFile {
                    path: frames,
                    what: "frame folder",
                });
            }
            let audio = e.audio_path(&root);
            if !audio.is_file() {
                return Err(Error::MissingFile {
                    path: audio,
                    what: "audio WAV",
                });
            }
            entries.push(e);
        }
        Ok(Self {
            root,
            classes,
            entries,
            config,
            front_end,
        })
    }

    /// The prepared folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of clips in this split.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the split has no clips.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All class names (every split), in id order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Number of classes (every split: 309 for the full VGGSound CSV).
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// The clips of this split, in index order.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Class id of every clip `(N)`.
    pub fn labels(&self) -> Vec<u32> {
        self.entries.iter().map(|e| e.class_id).collect()
    }

    /// The configuration.
    pub fn config(&self) -> &VggSoundConfig {
        &self.config
    }

    /// Shape of one spectrogram, `[1, n_fft / 2, T_a]`.
    pub fn audio_shape(&self) -> [usize; 3] {
        let (_, frames) = self.front_end.output_shape();
        [1, self.config.audio.stft.n_fft / 2, frames]
    }

    /// Shape of one clip, `[T, 3, H, W]`.
    pub fn video_shape(&self) -> [usize; 4] {
        let (h, w) = self.config.video.output_hw();
        [self.config.video.num_frames, 3, h as usize, w as usize]
    }

    fn entry(&self, i: usize) -> Result<&IndexEntry> {
        self.entries.get(i).ok_or(Error::IndexOutOfRange {
            index: i,
            len: self.len(),
        })
    }

    /// Loads sample `i`: spectrogram flat `(1, F, T_a)` and clip flat `(T, 3, H, W)`. With
    /// `train`, frames are drawn at random within their segments and the audio window at a
    /// random offset, seeded from `(seed, epoch, i)`; otherwise the centre of each segment and
    /// the start of the audio.
    pub fn sample(
        &self,
        i: usize,
        train: bool,
        seed: u64,
        epoch: u64,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let e = self.entry(i)?;
        let (sampling, crop) = random_choices(i, train, seed, epoch);
        let frames_dir = e.frames_dir(&self.root);
        let video = umt_video::load_clip(&frames_dir, &self.config.video, sampling)
            .map_err(|err| Error::Video(err.to_string()))?;
        Ok((self.spectrogram_with(e, crop)?, video.data))
    }

    /// The spectrogram of sample `i` alone, flat `(1, F, T_a)`, with the audio window that
    /// [`VggSound::sample`] picks for the same arguments (no frame is decoded).
    pub fn spectrogram(&self, i: usize, train: bool, seed: u64, epoch: u64) -> Result<Vec<f32>> {
        let e = self.entry(i)?;
        self.spectrogram_with(e, random_choices(i, train, seed, epoch).1)
    }

    fn spectrogram_with(&self, e: &IndexEntry, crop: Crop) -> Result<Vec<f32>> {
        let audio_path = e.audio_path(&self.root);
        let spec = self
            .front_end
            .process_file(&audio_path, crop)
            .map_err(|err| Error::Audio(err.to_string()))?; // (n_fft/2 + 1, T_a)
        let [_, keep, frames] = self.audio_shape();
        // Row-major [freq][frame]: the first n_fft/2 rows are every bin below Nyquist.
        Ok(spec.as_slice()[..keep * frames].to_vec()) // (1, F, T_a)
    }

    /// The clips at `indices` (of this split), in that order, as a split of their own (same
    /// folder, classes and configuration). Sample `j` of the result is clip `indices[j]`.
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        let entries = indices
            .iter()
            .map(|&i| self.entry(i).cloned())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            root: self.root.clone(),
            classes: self.classes.clone(),
            entries,
            config: self.config.clone(),
            front_end: FrontEnd::new(self.config.audio.clone())
                .map_err(|e| Error::Audio(e.to_string()))?,
        })
    }

    /// Loads the samples at `indices` into one batch: audio `(B, 1, F, T_a)`, video
    /// `(B, T, 3, H, W)`, labels `(B)` (see [`VggSound::sample`] for `train`).
    pub fn gather(&self, indices: &[usize], train: bool, seed: u64, epoch: u64) -> Result<Batch> {
        let per_a: usize = self.audio_shape().iter().product();
        let per_v: usize = self.video_shape().iter().product();
        let mut audio = Vec::with_capacity(indices.len() * per_a);
        let mut video = Vec::with_capacity(indices.len() * per_v);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let (a, v) = self.sample(i, train, seed, epoch)?;
            for (what, expected, found) in
                [("spectrogram", per_a, a.len()), ("clip", per_v, v.len())]
            {
                if found != expected {
                    return Err(Error::ShapeMismatch {
                        what,
                        expected,
                        found,
                    });
                }
            }
            audio.extend_from_slice(&a);
            video.extend_from_slice(&v);
            labels.push(self.entries[i].class_id);
        }
        Ok(Batch {
            audio,
            video,
            labels,
        })
    }
}

/// The frame sampling and audio window of sample `i`: drawn from `(seed, epoch, i)` when
/// `train`, the centre of each segment and the start of the audio otherwise.
fn random_choices(i: usize, train: bool, seed: u64, epoch: u64) -> (Sampling, Crop) {
    if train {
        let s = clip_seed(seed, epoch, i as u64);
        (
            Sampling::Train { seed: s },
            // A distinct stream for the audio crop.
            Crop::Random {
                seed: clip_seed(s, u64::MAX, 0),
            },
        )
    } else {
        (Sampling::Eval, Crop::Start)
    }
}

/// The order in which an epoch visits `len` samples: a permutation seeded from
/// `(seed, epoch)` when `train`, `0..len` otherwise.
pub fn epoch_order(len: usize, seed: u64, epoch: u64, train: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if train {
        let mut rng = ChaCha8Rng::seed_from_u64(clip_seed(seed, epoch, u64::MAX));
        order.shuffle(&mut rng);
    }
    order
}

/// The batches of one epoch, split from [`epoch_order`]: `ceil(len / batch_size)` of them
/// (`floor` with `drop_last`).
pub fn epoch_batches(len: usize, cfg: &LoaderConfig, epoch: u64, train: bool) -> Vec<Vec<usize>> {
    let order = epoch_order(len, cfg.seed, epoch, train);
    order
        .chunks(cfg.batch_size.max(1))
        .filter(|c| !cfg.drop_last || c.len() == cfg.batch_size)
        .map(<[usize]>::to_vec)
        .collect()
}

/// A prefetching iterator over one epoch's batches.
///
/// Worker `w` of `W` builds batches `w, w + W, w + 2W, …` and sends them down its own bounded
/// channel (`ceil(prefetch_batches / W)` deep); the iterator reads the channels in turn, so
/// batches come out in epoch order whatever `W` is, at most `prefetch_batches` (rounded up to a
/// multiple of `W`) wait decoded, and a slow consumer blocks the workers instead of filling
/// memory. Dropping the iterator stops the workers.
pub struct Batches {
    receivers: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    next: usize,
    num_batches: usize,
}

impl Batches {
    /// Starts `cfg.workers` threads streaming epoch `epoch` of `dataset` (see
    /// [`VggSound::sample`] and [`epoch_order`] for `train`).
    pub fn new(
        dataset: Arc<VggSound>,
        cfg: &LoaderConfig,
        epoch: u64,
        train: bool,
    ) -> Result<Self> {
        cfg.validate()?;
        let batches = Arc::new(epoch_batches(dataset.len(), cfg, epoch, train));
        let num_batches = batches.len();
        let workers = cfg.workers.min(num_batches.max(1));
        let depth = cfg.prefetch_batches.div_ceil(workers).max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(depth);
            receivers.push(rx);
            let (dataset, batches, stop) = (
                Arc::clone(&dataset),
                Arc::clone(&batches),
                Arc::clone(&stop),
            );
            let seed = cfg.seed;
            let handle = std::thread::Builder::new()
                .name(format!("umt-vggsound-loader-{w}"))
                .spawn(move || {
                    worker(
                        &dataset, &batches, w, workers, &tx, &stop, train, seed, epoch,
                    )
                })
                .map_err(|source| Error::Io {
                    path: dataset_thread_path(w),
                    source,
                })?;
            handles.push(handle);
        }
        Ok(Self {
            receivers,
            handles,
            stop,
            next: 0,
            num_batches,
        })
    }
}

fn dataset_thread_path(w: usize) -> PathBuf {
    PathBuf::from(format!("<loader thread {w}>"))
}

#[allow(clippy::too_many_arguments)]
fn worker(
    dataset: &VggSound,
    batches: &[Vec<usize>],
    w: usize,
    workers: usize,
    tx: &SyncSender<Result<Batch>>,
    stop: &AtomicBool,
    train: bool,
    seed: u64,
    epoch: u64,
) {
    for indices in batches.iter().skip(w).step_by(workers) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let batch = dataset.gather(indices, train, seed, epoch);
        if tx.send(batch).is_err() {
            return; // The iterator was dropped.
        }
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.num_batches || self.receivers.is_empty() {
            return None;
        }
        let w = self.next % self.receivers.len();
        let item = self.receivers[w]
            .recv()
            .unwrap_or(Err(Error::WorkerStopped {
                worker: w,
                batch: self.next,
            }));
        self.next += 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.num_batches - self.next.min(self.num_batches);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches {}

impl Drop for Batches {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers makes any blocked `send` return an error.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("workers", &self.receivers.len())
            .field("next", &self.next)
            .field("num_batches", &self.num_batches)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn epoch_batches_cover_every_sample_once(
            len in 0usize..200,
            batch_size in 1usize..40,
            seed in any::<u64>(),
            epoch in 0u64..5,
            train in any::<bool>(),
            drop_last in any::<bool>(),
        ) {
            let cfg = LoaderConfig { batch_size, drop_last, seed, ..LoaderConfig::default() };
            let batches = epoch_batches(len, &cfg, epoch, train);
            let expected = if drop_last { len / batch_size } else { len.div_ceil(batch_size) };
            prop_assert_eq!(batches.len(), expected);
            let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
            prop_assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= batch_size));
            if !train {
                prop_assert!(seen.windows(2).all(|w| w[0] < w[1]));
            }
            seen.sort_unstable();
            seen.dedup();
            let covered = if drop_last { expected * batch_size } else { len };
            prop_assert_eq!(seen.len(), covered);
            prop_assert!(seen.iter().all(|&i| i < len));
            prop_assert_eq!(epoch_batches(len, &cfg, epoch, train), batches);
        }
    }

    #[test]
    fn loader_config_rejects_zeros() {
        let cfg = LoaderConfig {
            workers: 0,
            ..LoaderConfig::default()
        };
        assert!(matches!(
            cfg.validate(),
            Err(Error::InvalidConfig {
                field: "loader.workers",
                ..
            })
        ));
        let json = r#"{"batch_size": 4, "worker": 2}"#;
        assert!(serde_json::from_str::<LoaderConfig>(json).is_err());
    }
}
