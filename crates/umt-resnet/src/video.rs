//! The video encoder: the 2D [`ResNet`] applied to every frame, averaged over time.
//!
//! UMT (paper §4.1) uses "ResNet18 backbones ... as our video and audio encoders (whether 3D CNN
//! is needed depends on the input)", so the paper leaves the temporal model open. We use the
//! per-frame 2D network with temporal average pooling: a clip `(B, T, C, H, W)` is reshaped to
//! `(B·T, C, H, W)`, encoded frame by frame, and the embeddings (and every stage's feature map)
//! are averaged over `T`. Reasons: candle 0.11 has no `conv3d`; the 2D network keeps
//! torchvision's weights and names, so a video teacher and the image encoder share checkpoints;
//! the paper's late fusion and feature distillation only need one `(B, D)` embedding per clip.
//! Temporal order is ignored, which is the known limit of this choice (a TSN-style average).
//!
//! In training mode BatchNorm statistics are computed over all `B·T` frames of the batch.
//! Because `fc` is linear, `fc(mean_t embedding_t) = mean_t fc(embedding_t)`: the logits are
//! those of the averaged embedding.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::{Error, ResNet, ResNetConfig, ResNetFeatures, Result};

/// A per-frame [`ResNet`] with temporal average pooling (see the module docs).
#[derive(Debug, Clone)]
pub struct VideoEncoder {
    resnet: ResNet,
}

impl VideoEncoder {
    /// Builds the frame encoder under `vb` (weight names are the ResNet's: `conv1`, `layer1`...).
    pub fn new(config: &ResNetConfig, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self::from_resnet(ResNet::new(config, vb)?))
    }

    /// Wraps an existing frame encoder.
    pub fn from_resnet(resnet: ResNet) -> Self {
        Self { resnet }
    }

    /// The frame encoder.
    pub fn resnet(&self) -> &ResNet {
        &self.resnet
    }

    /// Dimension `D` of the clip embedding.
    pub fn embedding_dim(&self) -> usize {
        self.resnet.embedding_dim()
    }

    /// `x`: `(B, T, C, H, W)` with `C = in_channels`. Returns the time-averaged features: every
    /// stage `(B, C_s, h_s, w_s)`, the embedding `(B, D)` and, with a head, the logits
    /// `(B, num_classes)`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<ResNetFeatures> {
        let c = self.resnet.config().in_channels;
        let err = || Error::InputShape {
            what: "VideoEncoder",
            expected: format!("(B, T, {c}, H, W)"),
            found: x.dims().to_vec(),
        };
        let (b, t, c_in, h, w) = x.dims5().map_err(|_| err())?;
        if c_in != c || b == 0 || t == 0 {
            return Err(err());
        }
        let frames = x.reshape((b * t, c, h, w))?; // (B·T, C, H, W)
        let f = self.resnet.forward_t(&frames, train)?; // every map (B·T, ...)
        let mean_over_time = |y: &Tensor| -> Result<Tensor> {
            let mut dims = y.dims().to_vec(); // (B·T, ...)
            dims[0] = t;
            dims.insert(0, b);
            Ok(y.reshape(dims)?.mean(1)?) // (B, T, ...) → (B, ...)
        };
        let embedding = mean_over_time(&f.embedding)?; // (B, D)
        let logits = self.resnet.head(&embedding)?; // (B, num_classes)
        Ok(ResNetFeatures {
            stem: mean_over_time(&f.stem)?,
            layer1: mean_over_time(&f.layer1)?,
            layer2: mean_over_time(&f.layer2)?,
            layer3: mean_over_time(&f.layer3)?,
            layer4: mean_over_time(&f.layer4)?,
            embedding,
            logits,
        })
    }
}
