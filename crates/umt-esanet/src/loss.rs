//! ESANet's training loss (reference `src/utils.py` `CrossEntropyLoss2d` and `train.py`):
//! per scale a class-weighted cross-entropy over the non-void pixels — labels shifted by −1 so
//! void (0) is ignored, the sum divided by `Σ_pixels w[label]` (PyTorch's weighted-mean
//! reduction) — summed without weights over the full-resolution output and the three side
//! outputs, whose targets are the labels nearest-resized to 1/8, 1/16 and 1/32.
//!
//! Labels are the dataset's raw values: `0` = void, `1..=K` = classes (NYUv2 `labels_40`), the
//! network's channel `c` predicting label `c + 1`.

use candle_core::{DType, Tensor};

use crate::model::EsaNetOutput;
use crate::{Error, Result};

/// Reads a label tensor `(B, H, W)` (any integer or float dtype holding integers) to the host
/// and checks every value is in `0..=num_classes`.
pub fn labels_to_vec(what: &'static str, labels: &Tensor, num_classes: usize) -> Result<Vec<u32>> {
    let v: Vec<u32> = labels.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
    if let Some(&bad) = v.iter().find(|&&l| l as usize > num_classes) {
        return Err(Error::LabelOutOfRange {
            what,
            max: num_classes,
            found: u64::from(bad),
        });
    }
    Ok(v)
}

/// Nearest downsampling of a label map by an integer `factor`: `(B, H, W)` →
/// `(B, H/f, W/f)`, keeping the top-left pixel of each `f × f` block (what
/// `cv2.resize(..., INTER_NEAREST)` does at an exact ratio, as the reference builds its 1/8,
/// 1/16, 1/32 targets). `H` and `W` must be multiples of `factor`.
pub fn downsample_labels(labels: &Tensor, factor: usize) -> Result<Tensor> {
    let (b, h, w) = labels.dims3().map_err(|_| Error::InputShape {
        what: "labels",
        expected: "(B, H, W)".into(),
        found: labels.dims().to_vec(),
    })?;
    if factor == 0 || h % factor != 0 || w % factor != 0 {
        return Err(Error::InputShape {
            what: "labels",
            expected: format!("(B, H, W) with H and W multiples of {factor}"),
            found: labels.dims().to_vec(),
        });
    }
    Ok(labels
        .reshape((b, h / factor, factor, w / factor, factor))?
        .narrow(4, 0, 1)?
        .narrow(2, 0, 1)?
        .reshape((b, h / factor, w / factor))?) // (B, H/f, W/f)
}

/// Class-weighted cross-entropy with void ignored, reduced as PyTorch's weighted mean.
///
/// - `logits`: `(B, K, H, W)`;
/// - `labels`: `(B, H, W)`, raw values `0..=K` (0 = void, ignored);
/// - `class_weights`: `K` weights (void excluded) or `None` for 1.
///
/// Returns the scalar `−Σ_p w[y_p] log softmax(z_p)[y_p] / Σ_p w[y_p]` over non-void pixels
/// `p` (0 when every pixel is void).
pub fn weighted_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    class_weights: Option<&[f32]>,
) -> Result<Tensor> {
    let (b, k, h, w) = logits.dims4().map_err(|_| Error::InputShape {
        what: "cross-entropy logits",
        expected: "(B, K, H, W)".into(),
        found: logits.dims().to_vec(),
    })?;
    if labels.dims() != [b, h, w] {
        return Err(Error::InputShape {
            what: "cross-entropy labels",
            expected: format!("({b}, {h}, {w}) like the logits (B, K, H, W)"),
            found: labels.dims().to_vec(),
        });
    }
    if let Some(cw) = class_weights {
        if cw.len() != k {
            return Err(Error::InputShape {
                what: "class weights",
                expected: format!("({k}) = one weight per class, void excluded"),
                found: vec![cw.len()],
            });
        }
    }
    let raw = labels_to_vec("cross-entropy labels", labels, k)?;
    let mut index = Vec::with_capacity(raw.len());
    let mut weight = Vec::with_capacity(raw.len());
    for &l in &raw {
        let (c, wt) = match l.checked_sub(1) {
            None => (0, 0.0), // void: any index, weight 0
            Some(c) => (c, class_weights.map_or(1.0, |cw| f64::from(cw[c as usize]))),
        };
        index.push(c);
        weight.push(wt);
    }
    let total: f64 = weight.iter().sum();
    let dev = logits.device();
    if total <= 0.0 {
        return Ok(Tensor::zeros((), logits.dtype(), dev)?);
    }
    let index = Tensor::from_vec(index, (b, 1, h, w), dev)?; // (B, 1, H, W)
    let weight = Tensor::from_vec(weight, (b, 1, h, w), dev)?.to_dtype(logits.dtype())?;
    let log_p = candle_nn::ops::log_softmax(logits, 1)?; // (B, K, H, W)
    let picked = log_p.gather(&index, 1)?; // (B, 1, H, W)
    Ok(((picked * weight)?.sum_all()? * (-1.0 / total))?)
}

/// ESANet's deep-supervision loss: the weighted cross-entropy of the full-resolution logits
/// plus that of each side output against the labels downsampled to its size, unweighted sum.
///
/// `labels`: `(B, H, W)` raw values (0 = void). In eval mode (no side outputs) this is the
/// main term alone.
pub fn deep_supervision_loss(
    output: &EsaNetOutput,
    labels: &Tensor,
    class_weights: Option<&[f32]>,
) -> Result<Tensor> {
    let mut loss = weighted_cross_entropy(&output.logits, labels, class_weights)?;
    let (_, _, h, _) = output.logits.dims4()?;
    for side in &output.side_outputs {
        let (_, _, hs, _) = side.dims4()?;
        let factor = h.checked_div(hs).unwrap_or(0);
        let target = downsample_labels(labels, factor)?; // (B, H/f, W/f)
        loss = (loss + weighted_cross_entropy(side, &target, class_weights)?)?;
    }
    Ok(loss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use umt_nn::gradcheck::{check_gradients, GradCheck};

    fn logits() -> candle_core::Result<Tensor> {
        let v: Vec<f64> = (0..2 * 3 * 2 * 2)
            .map(|i| (i as f64 * 0.71).sin() * 2.0)
            .collect();
        Tensor::from_vec(v, (2, 3, 2, 2), &Device::Cpu)
    }

    fn labels() -> candle_core::Result<Tensor> {
        Tensor::new(&[[[0u32, 1], [2, 3]], [[3, 3], [0, 1]]], &Device::Cpu)
    }

    /// The loss equals a direct evaluation of the formula.
    #[test]
    fn matches_hand_computation() -> anyhow::Result<()> {
        let z = logits()?;
        let weights = [0.5f32, 2.0, 1.5];
        let loss = weighted_cross_entropy(&z, &labels()?, Some(&weights))?.to_scalar::<f64>()?;
        let zv: Vec<f64> = z.flatten_all()?.to_vec1()?;
        let lv = [[0u32, 1, 2, 3], [3, 3, 0, 1]];
        let (mut num, mut den) = (0.0, 0.0);
        for (bi, row) in lv.iter().enumerate() {
            for (p, &l) in row.iter().enumerate() {
                if l == 0 {
                    continue;
                }
                let at = |c: usize| zv[bi * 12 + c * 4 + p];
                let lse = (0..3).map(|c| at(c).exp()).sum::<f64>().ln();
                let c = (l - 1) as usize;
                let wt = f64::from(weights[c]);
                num += wt * (lse - at(c));
                den += wt;
            }
        }
        assert!((loss - num / den).abs() < 1e-12, "{loss} vs {}", num / den);
        // All void: zero loss.
        let void = Tensor::zeros((2, 2, 2), DType::U32, &Device::Cpu)?;
        assert_eq!(
            weighted_cross_entropy(&z, &void, None)?.to_scalar::<f64>()?,
            0.0
        );
        Ok(())
    }

    #[test]
    fn gradients_with_weights_and_void() -> anyhow::Result<()> {
        let y = labels()?;
        let weights = [0.5f32, 2.0, 1.5];
        check_gradients(
            |t| {
                weighted_cross_entropy(&t[0], &y, Some(&weights))
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))
            },
            &[logits()?],
            GradCheck::default(),
        )?;
        Ok(())
    }

    #[test]
    fn bad_labels_and_shapes_are_errors() -> anyhow::Result<()> {
        let z = logits()?;
        let y = Tensor::new(&[[[0u32, 1], [2, 4]], [[3, 3], [0, 1]]], &Device::Cpu)?;
        assert!(matches!(
            weighted_cross_entropy(&z, &y, None),
            Err(Error::LabelOutOfRange {
                max: 3,
                found: 4,
                ..
            })
        ));
        let y = Tensor::zeros((2, 2, 3), DType::U32, &Device::Cpu)?;
        assert!(matches!(
            weighted_cross_entropy(&z, &y, None),
            Err(Error::InputShape {
                what: "cross-entropy labels",
                ..
            })
        ));
        assert!(matches!(
            weighted_cross_entropy(&z, &labels()?, Some(&[1.0, 2.0])),
            Err(Error::InputShape {
                what: "class weights",
                ..
            })
        ));
        let y = Tensor::zeros((1, 6, 8), DType::U32, &Device::Cpu)?;
        assert!(matches!(
            downsample_labels(&y, 4),
            Err(Error::InputShape { .. })
        ));
        Ok(())
    }

    #[test]
    fn downsampling_keeps_top_left_of_each_block() -> anyhow::Result<()> {
        let y = Tensor::arange(0u32, 32, &Device::Cpu)?.reshape((2, 4, 4))?;
        let d = downsample_labels(&y, 2)?;
        assert_eq!(
            d.to_vec3::<u32>()?,
            vec![
                vec![vec![0, 2], vec![8, 10]],
                vec![vec![16, 18], vec![24, 26]]
            ]
        );
        Ok(())
    }
}
