//! An in-memory audio-visual classification dataset: one spectrogram `(1, F, T_a)` and one clip
//! `(T, 3, H, W)` per sample, a label, and (for synthetic data) which views the sample carries.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which class-indicating features a sample carries (paper §3.1, Hypothesis 1, plus the paired
/// view of `docs/synthetic-dataset.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Views {
    /// Both the audio and the visual class pattern (multi-view sample).
    Both,
    /// Only the audio class pattern (single-view, strong modality).
    AudioOnly,
    /// Only the visual class pattern (single-view, weak modality).
    VideoOnly,
    /// Only a paired feature: an audio pattern and a visual pattern whose combination (and
    /// neither alone) gives the label.
    Paired,
    /// Unknown (real data).
    Unknown,
}

/// An audio-visual dataset held in memory as flat `f32` buffers.
#[derive(Debug, Clone)]
pub struct AvDataset {
    audio: Vec<f32>,
    audio_shape: [usize; 3],
    video: Vec<f32>,
    video_shape: [usize; 4],
    labels: Vec<u32>,
    views: Vec<Views>,
    num_classes: usize,
}

impl AvDataset {
    /// Builds a dataset from flat buffers: `audio (N, 1, F, T_a)` with `audio_shape = [1, F, T_a]`,
    /// `video (N, T, 3, H, W)` with `video_shape = [T, 3, H, W]`, `labels (N)` in
    /// `0..num_classes`, `views (N)`.
    pub fn new(
        audio: Vec<f32>,
        audio_shape: [usize; 3],
        video: Vec<f32>,
        video_shape: [usize; 4],
        labels: Vec<u32>,
        views: Vec<Views>,
        num_classes: usize,
    ) -> Result<Self> {
        let n = labels.len();
        let per_a: usize = audio_shape.iter().product();
        let per_v: usize = video_shape.iter().product();
        if audio.len() != n * per_a {
            return Err(Error::ShapeMismatch {
                what: "audio buffer",
                expected: n * per_a,
                found: audio.len(),
            });
        }
        if video.len() != n * per_v {
            return Err(Error::ShapeMismatch {
                what: "video buffer",
                expected: n * per_v,
                found: video.len(),
            });
        }
        if views.len() != n {
            return Err(Error::ShapeMismatch {
                what: "views",
                expected: n,
                found: views.len(),
            });
        }
        if let Some(&bad) = labels.iter().find(|&&y| y as usize >= num_classes) {
            return Err(Error::InvalidConfig {
                field: "labels",
                expected: format!("labels in 0..{num_classes}"),
                found: bad.to_string(),
            });
        }
        Ok(Self {
            audio,
            audio_shape,
            video,
            video_shape,
            labels,
            views,
            num_classes,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the dataset has no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Shape of one spectrogram `[1, F, T_a]`.
    pub fn audio_shape(&self) -> [usize; 3] {
        self.audio_shape
    }

    /// Shape of one clip `[T, 3, H, W]`.
    pub fn video_shape(&self) -> [usize; 4] {
        self.video_shape
    }

    /// All labels `(N)`.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Which views each sample carries `(N)`.
    pub fn views(&self) -> &[Views] {
        &self.views
    }

    /// The spectrogram of sample `i`, flat `(1, F, T_a)`.
    pub fn audio(&self, i: usize) -> Result<&[f32]> {
        let per: usize = self.audio_shape.iter().product();
        self.check(i)?;
        Ok(&self.audio[i * per..(i + 1) * per])
    }

    /// The clip of sample `i`, flat `(T, 3, H, W)`.
    pub fn video(&self, i: usize) -> Result<&[f32]> {
        let per: usize = self.video_shape.iter().product();
        self.check(i)?;
        Ok(&self.video[i * per..(i + 1) * per])
    }

    fn check(&self, i: usize) -> Result<()> {
        if i >= self.len() {
            return Err(Error::IndexOutOfRange {
                index: i,
                len: self.len(),
            });
        }
        Ok(())
    }

    /// Gathers a batch: audio `(B, 1, F, T_a)`, video `(B, T, 3, H, W)` (flat), labels `(B)`.
    pub fn gather(&self, indices: &[usize]) -> Result<Batch> {
        let per_a: usize = self.audio_shape.iter().product();
        let per_v: usize = self.video_shape.iter().product();
        let mut audio = Vec::with_capacity(indices.len() * per_a);
        let mut video = Vec::with_capacity(indices.len() * per_v);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            audio.extend_from_slice(self.audio(i)?);
            video.extend_from_slice(self.video(i)?);
            labels.push(self.labels[i]);
        }
        Ok(Batch {
            audio,
            video,
            labels,
        })
    }

    /// The samples at `indices`, in that order, as a new dataset.
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        let b = self.gather(indices)?;
        let views = indices.iter().map(|&i| self.views[i]).collect();
        Self::new(
            b.audio,
            self.audio_shape,
            b.video,
            self.video_shape,
            b.labels,
            views,
            self.num_classes,
        )
    }

    /// Splits off a validation set carved from this (training) set: a seeded, stratified
    /// `fraction` of every class goes to validation. Returns `(train, validation)`.
    pub fn split_validation(&self, fraction: f64, seed: u64) -> Result<(Self, Self)> {
        let (train, val) = stratified_split(&self.labels, self.num_classes, fraction, seed)?;
        Ok((self.subset(&train)?, self.subset(&val)?))
    }
}

/// The indices of a seeded, stratified split of samples labelled `labels` (in
/// `0..num_classes`): `round(fraction · n_c)` of the `n_c` samples of every class `c` go to the
/// second list, the rest to the first; both sorted. The same for every dataset type (in-memory
/// or streamed), so a validation split is the same whatever holds the samples.
pub fn stratified_split(
    labels: &[u32],
    num_classes: usize,
    fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::InvalidConfig {
            field: "validation_fraction",
            expected: "a fraction in (0, 1)".into(),
            found: fraction.to_string(),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut rest, mut val) = (Vec::new(), Vec::new());
    for c in 0..num_classes {
        let mut idx: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] as usize == c)
            .collect();
        idx.shuffle(&mut rng);
        let n_val = ((idx.len() as f64) * fraction).round() as usize;
        val.extend_from_slice(&idx[..n_val]);
        rest.extend_from_slice(&idx[n_val..]);
    }
    rest.sort_unstable();
    val.sort_unstable();
    Ok((rest, val))
}

/// A gathered mini-batch (flat buffers; shapes as in [`AvDataset::gather`]).
#[derive(Debug, Clone)]
pub struct Batch {
    /// `(B, 1, F, T_a)`.
    pub audio: Vec<f32>,
    /// `(B, T, 3, H, W)`.
    pub video: Vec<f32>,
    /// `(B)`.
    pub labels: Vec<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> AvDataset {
        AvDataset::new(
            (0..n * 2).map(|x| x as f32).collect(),
            [1, 1, 2],
            (0..n * 3).map(|x| x as f32).collect(),
            [1, 3, 1, 1],
            (0..n).map(|i| (i % 3) as u32).collect(),
            vec![Views::Both; n],
            3,
        )
        .unwrap()
    }

    #[test]
    fn gather_and_subset_keep_samples_together() {
        let d = toy(6);
        let b = d.gather(&[4, 1]).unwrap();
        assert_eq!(b.audio, vec![8.0, 9.0, 2.0, 3.0]);
        assert_eq!(b.video, vec![12.0, 13.0, 14.0, 3.0, 4.0, 5.0]);
        assert_eq!(b.labels, vec![1, 1]);
        assert!(matches!(
            d.gather(&[6]),
            Err(Error::IndexOutOfRange { index: 6, len: 6 })
        ));
    }

    #[test]
    fn validation_split_is_stratified_disjoint_and_seeded() {
        let d = toy(30);
        let (tr, va) = d.split_validation(0.2, 7).unwrap();
        assert_eq!(tr.len() + va.len(), 30);
        assert_eq!(va.len(), 6);
        for c in 0..3 {
            assert_eq!(va.labels().iter().filter(|&&y| y == c).count(), 2);
        }
        let (tr2, _) = d.split_validation(0.2, 7).unwrap();
        assert_eq!(
            tr.gather(&[0, 1]).unwrap().audio,
            tr2.gather(&[0, 1]).unwrap().audio
        );
        assert!(d.split_validation(1.0, 7).is_err());
    }

    #[test]
    fn shape_mismatch_is_reported() {
        let e = AvDataset::new(
            vec![0.0; 3],
            [1, 1, 2],
            vec![],
            [1, 3, 1, 1],
            vec![0],
            vec![Views::Both],
            2,
        );
        assert!(matches!(
            e,
            Err(Error::ShapeMismatch {
                what: "audio buffer",
                expected: 2,
                found: 3
            })
        ));
    }
}
