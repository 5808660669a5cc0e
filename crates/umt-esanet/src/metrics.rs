//! Segmentation metrics and class weighting as ESANet computes them on NYUv2.
//!
//! - [`ConfusionMatrix`]: one `K × K` matrix (rows = ground truth, columns = prediction)
//!   accumulated over the **whole** test set, void pixels (label 0) skipped; per-class IoU
//!   `TP / (TP + FP + FN)`, mIoU, pixel accuracy (reference `src/confusion_matrix.py`).
//! - [`ClassHistogram`]: label histograms of the training set and the median-frequency class
//!   weights `w_c = median(freq) / freq_c` with `freq_c = pixels_c / (pixels of the images that
//!   contain c)`, void excluded (reference `DatasetBase.compute_class_weights`).
//!
//! Labels are raw dataset values (`0` = void, `1..=K`); predictions are channel indices
//! `0..K` (label − 1).

use candle_core::{DType, Tensor};

use crate::loss::labels_to_vec;
use crate::{Error, Result};

/// A `K × K` confusion matrix, rows = ground-truth class, columns = predicted class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    num_classes: usize,
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// An empty matrix for `num_classes` classes (void excluded).
    pub fn new(num_classes: usize) -> Self {
        Self {
            num_classes,
            counts: vec![0; num_classes * num_classes],
        }
    }

    /// Number of classes `K`.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Count of pixels of ground-truth class `gt` predicted as `pred` (both `0..K`).
    pub fn get(&self, gt: usize, pred: usize) -> u64 {
        if gt < self.num_classes && pred < self.num_classes {
            self.counts[gt * self.num_classes + pred]
        } else {
            0
        }
    }

    /// Adds one batch: `labels` raw (`0` void, skipped; `1..=K`), `predictions` channel indices
    /// `0..K`, the same length.
    pub fn update<L, P>(&mut self, labels: &[L], predictions: &[P]) -> Result<()>
    where
        L: Copy + Into<u64>,
        P: Copy + Into<u64>,
    {
        let k = self.num_classes as u64;
        if labels.len() != predictions.len() {
            return Err(Error::InputShape {
                what: "confusion matrix predictions",
                expected: format!("({}) like the labels", labels.len()),
                found: vec![predictions.len()],
            });
        }
        for (&l, &p) in labels.iter().zip(predictions) {
            let (l, p) = (l.into(), p.into());
            if l > k {
                return Err(Error::LabelOutOfRange {
                    what: "confusion matrix labels",
                    max: self.num_classes,
                    found: l,
                });
            }
            if p >= k {
                return Err(Error::LabelOutOfRange {
                    what: "confusion matrix predictions (channel indices)",
                    max: self.num_classes.saturating_sub(1),
                    found: p,
                });
            }
            if l > 0 {
                self.counts[((l - 1) * k + p) as usize] += 1;
            }
        }
        Ok(())
    }

    /// Adds one batch of logits `(B, K, H, W)` (argmax over classes) against raw labels
    /// `(B, H, W)`. Resize the logits to the label size first (the reference upsamples
    /// bilinearly to the original label size).
    pub fn update_from_logits(&mut self, logits: &Tensor, labels: &Tensor) -> Result<()> {
        let (b, k, h, w) = logits.dims4().map_err(|_| Error::InputShape {
            what: "confusion matrix logits",
            expected: format!("(B, {}, H, W)", self.num_classes),
            found: logits.dims().to_vec(),
        })?;
        if k != self.num_classes || labels.dims() != [b, h, w] {
            return Err(Error::InputShape {
                what: "confusion matrix logits/labels",
                expected: format!(
                    "logits (B, {}, H, W) and labels (B, H, W); labels found {:?}",
                    self.num_classes,
                    labels.dims()
                ),
                found: logits.dims().to_vec(),
            });
        }
        let pred: Vec<u32> = logits
            .argmax(1)?
            .to_dtype(DType::U32)?
            .flatten_all()?
            .to_vec1()?;
        let labels = labels_to_vec("confusion matrix labels", labels, self.num_classes)?;
        self.update(&labels, &pred)
    }

    /// Adds another matrix (e.g. from another worker).
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if other.num_classes != self.num_classes {
            return Err(Error::InputShape {
                what: "confusion matrix to merge",
                expected: format!("{0} × {0}", self.num_classes),
                found: vec![other.num_classes, other.num_classes],
            });
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        Ok(())
    }

    /// Pixels of ground-truth class `c`.
    fn gt_pixels(&self, c: usize) -> u64 {
        (0..self.num_classes).map(|p| self.get(c, p)).sum()
    }

    /// Pixels predicted as class `c`.
    fn pred_pixels(&self, c: usize) -> u64 {
        (0..self.num_classes).map(|g| self.get(g, c)).sum()
    }

    /// Per-class IoU `TP / (TP + FP + FN)`; `None` for a class with neither ground-truth nor
    /// predicted pixels (union 0).
    pub fn iou(&self) -> Vec<Option<f64>> {
        (0..self.num_classes)
            .map(|c| {
                let tp = self.get(c, c);
                let union = self.gt_pixels(c) + self.pred_pixels(c) - tp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect()
    }

    /// mIoU: the plain mean of the per-class IoU over the classes that have ground-truth
    /// pixels (notes §4; a class that is only predicted still lowers the IoU of the classes
    /// it was confused with). 0 for an empty matrix. On the NYUv2 test set every class occurs
    /// and this equals [`ConfusionMatrix::miou_reference`].
    pub fn miou(&self) -> f64 {
        let ious: Vec<f64> = self
            .iou()
            .into_iter()
            .enumerate()
            .filter(|&(c, _)| self.gt_pixels(c) > 0)
            .map(|(_, iou)| iou.unwrap_or(0.0))
            .collect();
        if ious.is_empty() {
            0.0
        } else {
            ious.iter().sum::<f64>() / ious.len() as f64
        }
    }

    /// mIoU exactly as the reference's `ConfusionMatrixTensorflow.compute_miou`: the mean over
    /// **all** `K` classes, a class with an empty union counting 0.
    pub fn miou_reference(&self) -> f64 {
        if self.num_classes == 0 {
            return 0.0;
        }
        let sum: f64 = self.iou().into_iter().map(|i| i.unwrap_or(0.0)).sum();
        sum / self.num_classes as f64
    }

    /// Pixel accuracy `Σ TP / Σ pixels` over non-void pixels (0 for an empty matrix).
    pub fn pixel_accuracy(&self) -> f64 {
        let total: u64 = self.counts.iter().sum();
        let correct: u64 = (0..self.num_classes).map(|c| self.get(c, c)).sum();
        if total == 0 {
            0.0
        } else {
            correct as f64 / total as f64
        }
    }
}

/// Label histograms for class weighting: per label value `0..=K` the pixel count and the
/// summed size of the images containing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassHistogram {
    num_classes: usize,
    pixels: Vec<u64>,
    image_pixels_with_class: Vec<u64>,
}

impl ClassHistogram {
    /// An empty histogram for labels `0..=num_classes` (0 = void).
    pub fn new(num_classes: usize) -> Self {
        Self {
            num_classes,
            pixels: vec![0; num_classes + 1],
            image_pixels_with_class: vec![0; num_classes + 1],
        }
    }

    /// Adds one whole label image (raw values `0..=K`).
    pub fn add_image<L: Copy + Into<u64>>(&mut self, labels: &[L]) -> Result<()> {
        let mut counts = vec![0u64; self.num_classes + 1];
        for &l in labels {
            let l = l.into();
            match counts.get_mut(l as usize) {
                Some(c) if l <= self.num_classes as u64 => *c += 1,
                _ => {
                    return Err(Error::LabelOutOfRange {
                        what: "class histogram labels",
                        max: self.num_classes,
                        found: l,
                    })
                }
            }
        }
        for (c, &n) in counts.iter().enumerate() {
            self.pixels[c] += n;
            if n > 0 {
                self.image_pixels_with_class[c] += labels.len() as u64;
            }
        }
        Ok(())
    }

    /// Pixel count per label value `0..=K` (void first).
    pub fn pixels(&self) -> &[u64] {
        &self.pixels
    }

    /// Median-frequency weights for the `K` classes (void excluded): `freq_c = pixels_c /
    /// image_pixels_with_class_c`, `w_c = median(freq) / freq_c` (numpy's median: the mean
    /// of the two middle values for even `K`). A class that never occurs has no defined
    /// weight (the reference raises on the NaN): [`Error::AbsentClass`].
    pub fn median_frequency_weights(&self) -> Result<Vec<f32>> {
        let mut freq = Vec::with_capacity(self.num_classes);
        for c in 1..=self.num_classes {
            if self.pixels[c] == 0 {
                return Err(Error::AbsentClass {
                    class: c - 1,
                    label: c,
                });
            }
            freq.push(self.pixels[c] as f64 / self.image_pixels_with_class[c] as f64);
        }
        let mut sorted = freq.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return Ok(Vec::new()),
            _ if n % 2 == 1 => sorted[n / 2],
            _ => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
        };
        Ok(freq.iter().map(|f| (median / f) as f32).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// 3 classes; labels and predictions chosen so every cell is known:
    /// GT\pred  0  1  2
    ///   0      2  1  0
    ///   1      0  3  1
    ///   2      0  0  0     (class 2 never in GT, predicted once)
    #[test]
    fn confusion_matrix_against_hand_computation() -> Result<()> {
        let mut cm = ConfusionMatrix::new(3);
        let labels: [u8; 9] = [1, 1, 1, 2, 2, 2, 2, 0, 0];
        let preds: [u8; 9] = [0, 0, 1, 1, 1, 1, 2, 2, 0];
        cm.update(&labels[..5], &preds[..5])?;
        cm.update(&labels[5..], &preds[5..])?; // accumulates over batches, void skipped
        let expected = [[2, 1, 0], [0, 3, 1], [0, 0, 0]];
        for (g, row) in expected.iter().enumerate() {
            for (p, &n) in row.iter().enumerate() {
                assert_eq!(cm.get(g, p), n, "cell ({g}, {p})");
            }
        }
        // IoU0 = 2/(3+2−2) = 2/3; IoU1 = 3/(4+4−3) = 3/5; IoU2 = 0/(0+1−0) = 0.
        let iou = cm.iou();
        assert_eq!(iou, vec![Some(2.0 / 3.0), Some(0.6), Some(0.0)]);
        assert!((cm.miou() - (2.0 / 3.0 + 0.6) / 2.0).abs() < 1e-12);
        assert!((cm.miou_reference() - (2.0 / 3.0 + 0.6) / 3.0).abs() < 1e-12);
        assert!((cm.pixel_accuracy() - 5.0 / 7.0).abs() < 1e-12);
        let mut twice = cm.clone();
        twice.merge(&cm)?;
        assert_eq!(twice.get(1, 1), 6);
        assert!((twice.miou() - cm.miou()).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn confusion_matrix_from_logits_and_errors() -> Result<()> {
        let dev = Device::Cpu;
        // (1, 2, 1, 3): argmax = [1, 0, 1]
        let logits = Tensor::new(&[[[[0f32, 5.0, 0.0]], [[1.0, 0.0, 2.0]]]], &dev)?;
        let labels = Tensor::new(&[[[2u32, 1, 0]]], &dev)?;
        let mut cm = ConfusionMatrix::new(2);
        cm.update_from_logits(&logits, &labels)?;
        assert_eq!(
            (cm.get(1, 1), cm.get(0, 0), cm.get(0, 1), cm.get(1, 0)),
            (1, 1, 0, 0)
        );
        let bad = Tensor::new(&[[[3u32, 1, 0]]], &dev)?;
        assert!(matches!(
            cm.update_from_logits(&logits, &bad),
            Err(Error::LabelOutOfRange { found: 3, .. })
        ));
        assert!(matches!(
            cm.update(&[1u8], &[2u8]),
            Err(Error::LabelOutOfRange { .. })
        ));
        assert!(matches!(
            cm.update(&[1u8, 1], &[0u8]),
            Err(Error::InputShape { .. })
        ));
        assert!(matches!(
            cm.merge(&ConfusionMatrix::new(3)),
            Err(Error::InputShape { .. })
        ));
        Ok(())
    }

    /// Two 2×2 images, 3 classes:
    /// image A = [1, 1, 2, 0] (4 px), image B = [1, 3, 3, 3] (4 px).
    /// pixels: c1 = 3, c2 = 1, c3 = 3; image pixels with class: c1 = 8, c2 = 4, c3 = 4.
    /// freq = [3/8, 1/4, 3/4], median = 3/8, weights = [1, 1.5, 0.5].
    #[test]
    fn median_frequency_against_hand_computation() -> Result<()> {
        let mut hist = ClassHistogram::new(3);
        hist.add_image(&[1u8, 1, 2, 0])?;
        hist.add_image(&[1u16, 3, 3, 3])?;
        assert_eq!(hist.pixels(), &[1, 3, 1, 3]);
        let w = hist.median_frequency_weights()?;
        for (a, b) in w.iter().zip([1.0f32, 1.5, 0.5]) {
            assert!((a - b).abs() < 1e-6, "{w:?}");
        }
        // Even K: the median is the mean of the two middle frequencies.
        let mut hist = ClassHistogram::new(2);
        hist.add_image(&[1u8, 2, 2, 2])?; // freq = [1/4, 3/4], median 1/2
        let w = hist.median_frequency_weights()?;
        assert!(
            (w[0] - 2.0).abs() < 1e-6 && (w[1] - 2.0 / 3.0).abs() < 1e-6,
            "{w:?}"
        );
        // Absent class and out-of-range label are errors naming the class / value.
        let mut hist = ClassHistogram::new(3);
        hist.add_image(&[1u8, 3])?;
        assert!(matches!(
            hist.median_frequency_weights(),
            Err(Error::AbsentClass { class: 1, label: 2 })
        ));
        assert!(matches!(
            hist.add_image(&[4u8]),
            Err(Error::LabelOutOfRange {
                found: 4,
                max: 3,
                ..
            })
        ));
        Ok(())
    }
}
