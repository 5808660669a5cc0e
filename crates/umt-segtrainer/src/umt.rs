//! Uni-Modal Teacher for middle fusion (paper §4.2, Fig. 3): frozen RGB-only and depth-only
//! ESANet teachers see the student's augmented batch in eval mode; the student's depth-branch
//! features are pulled to the depth teacher's by MSE, and small predictors map the student's
//! fused RGB-branch features to the RGB teacher's (the fused maps mix both modalities, so they
//! are not distilled directly). The predictors train with the student and are dropped at
//! inference.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use umt_esanet::layers::ConvBnAct;
use umt_esanet::{EsaNet, EsaNetOutput};

use crate::config::UmtConfig;
use crate::{Error, Result};

/// The paper's "2 layers CNN" predictor: 3×3 conv-BN-ReLU (`0`) then a 1×1 conv with bias
/// (`1`), `C → C` (kernel sizes are our choice; the paper gives none).
#[derive(Debug, Clone)]
pub struct FeaturePredictor {
    conv_bn_relu: ConvBnAct,
    conv: candle_nn::Conv2d,
}

impl FeaturePredictor {
    /// Builds `{0.conv.weight, 0.bn.*, 1.weight, 1.bias}` under `vb` for `c` channels.
    pub fn new(c: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self {
            conv_bn_relu: ConvBnAct::new(c, c, 3, vb.pp("0"))?,
            conv: candle_nn::conv2d(c, c, 1, Default::default(), vb.pp("1"))?,
        })
    }

    /// `(B, C, h, w)` → `(B, C, h, w)`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv_bn_relu.forward_t(x, train)?; // (B, C, h, w)
        Ok(self.conv.forward(&y)?) // (B, C, h, w)
    }
}

/// One predictor per tapped stage, named `predictor{s}` with `s` the stage index.
#[derive(Debug, Clone)]
pub struct Predictors {
    taps: Vec<usize>,
    nets: Vec<FeaturePredictor>,
}

impl Predictors {
    /// Predictors for `taps` (indices into the five stages) with the stage widths `channels`.
    pub fn new(taps: &[usize], channels: [usize; 5], vb: VarBuilder<'_>) -> Result<Self> {
        let nets = taps
            .iter()
            .map(|&s| FeaturePredictor::new(channels[s], vb.pp(format!("predictor{s}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            taps: taps.to_vec(),
            nets,
        })
    }
}

/// The terms of the UMT loss of one batch (scalars).
#[derive(Debug, Clone)]
pub struct UmtLoss {
    /// `CE + λ_d · depth + λ_r · rgb`.
    pub total: Tensor,
    /// Σ over taps of MSE(student depth features, depth teacher's).
    pub depth: Tensor,
    /// Σ over taps of MSE(predictor(student fused RGB features), RGB teacher's).
    pub rgb: Tensor,
}

/// The frozen teachers and the trainable predictors.
#[derive(Debug, Clone)]
pub struct UmtDistiller {
    /// The RGB-only teacher (never trained here).
    pub teacher_rgb: EsaNet,
    /// The depth-only teacher (never trained here).
    pub teacher_depth: EsaNet,
    /// The predictors (train with the student).
    pub predictors: Predictors,
    /// λ's and taps.
    pub config: UmtConfig,
}

/// Mean squared error of two maps of one shape.
fn mse(what: &'static str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() {
        return Err(Error::EsaNet(umt_esanet::Error::InputShape {
            what,
            expected: format!("{:?} (the teacher's feature map)", b.dims()),
            found: a.dims().to_vec(),
        }));
    }
    Ok((a - b)?.sqr()?.mean_all()?)
}

impl UmtDistiller {
    /// The UMT loss of a student output `student` (from `forward_t(rgb, depth, train)`) whose
    /// supervised loss is `ce`. The teachers run in eval mode on the same `rgb (B, 3, H, W)`
    /// and `depth (B, 1, H, W)`; their features are detached, so no gradient reaches them.
    pub fn loss(
        &self,
        student: &EsaNetOutput,
        ce: &Tensor,
        rgb: &Tensor,
        depth: &Tensor,
        train: bool,
    ) -> Result<UmtLoss> {
        let t_rgb = self.teacher_rgb.forward_t(Some(rgb), Some(depth), false)?;
        let t_depth = self
            .teacher_depth
            .forward_t(Some(rgb), Some(depth), false)?;
        let dev = ce.device();
        let mut l_depth = Tensor::zeros((), ce.dtype(), dev)?;
        let mut l_rgb = Tensor::zeros((), ce.dtype(), dev)?;
        let stage = |v: &[Tensor], s: usize, what: &'static str| -> Result<Tensor> {
            v.get(s)
                .cloned()
                .ok_or(Error::EsaNet(umt_esanet::Error::InputShape {
                    what,
                    expected: "five per-stage feature maps".into(),
                    found: vec![v.len()],
                }))
        };
        for (&s, pred) in self.predictors.taps.iter().zip(&self.predictors.nets) {
            let sd = stage(&student.depth_features, s, "student depth features")?; // (B, C_s, h, w)
            let td = stage(&t_depth.depth_features, s, "depth teacher features")?.detach();
            l_depth = (l_depth + mse("student depth features", &sd, &td)?)?;
            let sr = stage(&student.rgb_features, s, "student fused RGB features")?;
            let tr = stage(&t_rgb.rgb_features, s, "RGB teacher features")?.detach();
            let p = pred.forward_t(&sr, train)?; // (B, C_s, h, w)
            l_rgb = (l_rgb + mse("predicted RGB features", &p, &tr)?)?;
        }
        let total =
            ((ce + (&l_depth * self.config.lambda_depth)?)? + (&l_rgb * self.config.lambda_rgb)?)?;
        Ok(UmtLoss {
            total,
            depth: l_depth,
            rgb: l_rgb,
        })
    }
}
