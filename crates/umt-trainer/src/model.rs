//! The models: a late-fusion model (paper Figure 1: audio encoder, video encoder, embeddings
//! concatenated into one linear classifier `fc`) and a uni-modal model (one encoder + `fc`, the
//! teachers of UMT). Weight names: `audio.*` / `video.*` (torchvision names inside), `fc`, and
//! for Gradient-Blending the uni-modal heads `audio_fc` / `video_fc`.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use umt_resnet::{ResNet, ResNetConfig, StemKind, VideoEncoder};

use crate::{Error, Result};

/// Architecture of both encoders: ResNet18's topology (`[2, 2, 2, 2]` basic blocks), optionally
/// narrowed and with a small stem for tiny CPU inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// Base width (channels of `layer1`; the embedding has 8× this). Paper: 64 (ResNet18).
    pub base_width: usize,
    /// Stem: `torchvision` (7×7/s2 + max pool, paper) or `small` (3×3/s2, no pool, CPU presets).
    pub stem: StemKind,
}

impl EncoderConfig {
    /// The audio encoder: 1-channel spectrograms.
    pub fn audio(&self) -> ResNetConfig {
        ResNetConfig::resnet18(1)
            .with_width(self.base_width)
            .with_stem(self.stem)
    }

    /// The per-frame video encoder: RGB frames.
    pub fn video(&self) -> ResNetConfig {
        ResNetConfig::resnet18(3)
            .with_width(self.base_width)
            .with_stem(self.stem)
    }

    /// Embedding dimension of each encoder (`8 · base_width`).
    pub fn embedding_dim(&self) -> usize {
        8 * self.base_width
    }
}

/// A modality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    /// Spectrograms `(B, 1, F, T_a)`.
    Audio,
    /// Clips `(B, T, 3, H, W)`.
    Video,
}

impl Modality {
    /// `audio` or `video`.
    pub fn name(self) -> &'static str {
        match self {
            Modality::Audio => "audio",
            Modality::Video => "video",
        }
    }
}

/// One encoder of either modality; `embed` maps its input to the pooled embedding `(B, D)`.
#[derive(Debug, Clone)]
pub enum Encoder {
    /// 2D ResNet over spectrograms.
    Audio(ResNet),
    /// Per-frame 2D ResNet with temporal average pooling.
    Video(VideoEncoder),
}

impl Encoder {
    /// Builds the encoder of `modality` under `vb`.
    pub fn new(modality: Modality, cfg: &EncoderConfig, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(match modality {
            Modality::Audio => Encoder::Audio(ResNet::new(&cfg.audio(), vb).map_err(resnet)?),
            Modality::Video => Encoder::Video(VideoEncoder::new(&cfg.video(), vb).map_err(resnet)?),
        })
    }

    /// Audio `(B, 1, F, T_a)` or video `(B, T, 3, H, W)` → embedding `(B, D)` (the input of the
    /// last linear layer: what UMT distils).
    pub fn embed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(match self {
            Encoder::Audio(m) => m.forward_t(x, train).map_err(resnet)?.embedding,
            Encoder::Video(m) => m.forward_t(x, train).map_err(resnet)?.embedding,
        })
    }
}

pub(crate) fn resnet(e: umt_resnet::Error) -> Error {
    match e {
        umt_resnet::Error::Candle(c) => Error::Candle(c),
        umt_resnet::Error::Nn(n) => Error::Nn(n),
        other => Error::InvalidConfig {
            field: "encoder",
            expected: "a valid ResNet".into(),
            found: other.to_string(),
        },
    }
}

/// A uni-modal model: `{audio|video}.*` encoder + `fc` linear head (a UMT teacher).
pub struct UniModel {
    /// Its variables (BatchNorm running statistics included).
    pub vars: VarMap,
    /// The modality.
    pub modality: Modality,
    /// The encoder.
    pub encoder: Encoder,
    /// The linear head `(D → k)`.
    pub fc: Linear,
}

impl UniModel {
    /// A freshly initialised model (deterministic from `seed`).
    pub fn new(
        modality: Modality,
        cfg: &EncoderConfig,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, device);
        let encoder = Encoder::new(modality, cfg, vb.pp(modality.name()))?;
        let fc = candle_nn::linear(cfg.embedding_dim(), classes, vb.pp("fc"))?;
        reseed(&vars, seed)?;
        Ok(Self {
            vars,
            modality,
            encoder,
            fc,
        })
    }

    /// `x` → logits `(B, k)` and embedding `(B, D)`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let e = self.encoder.embed(x, train)?;
        Ok((self.fc.forward(&e)?, e))
    }
}

/// A late-fusion model: `audio.*`, `video.*`, `fc` over the concatenated embeddings
/// `(B, D_a + D_v) → (B, k)`, and for Gradient-Blending `audio_fc` / `video_fc`.
pub struct FusionModel {
    /// Its variables.
    pub vars: VarMap,
    /// Audio encoder.
    pub audio: Encoder,
    /// Video encoder.
    pub video: Encoder,
    /// The fused linear classifier.
    pub fc: Linear,
    /// Uni-modal heads (audio, video), Gradient-Blending only.
    pub uni_heads: Option<(Linear, Linear)>,
}

/// What a forward pass of the fusion model returns.
#[derive(Debug)]
pub struct FusionOutput {
    /// Audio embedding `(B, D_a)`.
    pub audio: Tensor,
    /// Video embedding `(B, D_v)`.
    pub video: Tensor,
}

impl FusionModel {
    /// A freshly initialised model (deterministic from `seed`).
    pub fn new(
        cfg: &EncoderConfig,
        classes: usize,
        uni_heads: bool,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, device);
        let audio = Encoder::new(Modality::Audio, cfg, vb.pp("audio"))?;
        let video = Encoder::new(Modality::Video, cfg, vb.pp("video"))?;
        let d = cfg.embedding_dim();
        let fc = candle_nn::linear(2 * d, classes, vb.pp("fc"))?;
        let uni_heads = if uni_heads {
            Some((
                candle_nn::linear(d, classes, vb.pp("audio_fc"))?,
                candle_nn::linear(d, classes, vb.pp("video_fc"))?,
            ))
        } else {
            None
        };
        reseed(&vars, seed)?;
        Ok(Self {
            vars,
            audio,
            video,
            fc,
            uni_heads,
        })
    }

    /// Audio `(B, 1, F, T_a)`, video `(B, T, 3, H, W)` → both embeddings.
    pub fn embed(&self, audio: &Tensor, video: &Tensor, train: bool) -> Result<FusionOutput> {
        Ok(FusionOutput {
            audio: self.audio.embed(audio, train)?,
            video: self.video.embed(video, train)?,
        })
    }

    /// The fused classifier on (possibly masked) embeddings: `(B, D_a)`, `(B, D_v)` → `(B, k)`.
    pub fn classify(&self, audio: &Tensor, video: &Tensor) -> Result<Tensor> {
        Ok(self.fc.forward(&Tensor::cat(&[audio, video], 1)?)?)
    }
}

/// Re-initialises every randomly initialised variable of `vars` from `seed` (candle's CPU
/// generator cannot be seeded): a tensor whose values are not all equal is redrawn with the
/// same mean and std — Gaussian for convolution kernels (rank 4, torchvision's Kaiming normal),
/// uniform for the rest (linear layers' ±1/√fan_in) — in sorted name order. Constant tensors
/// (BatchNorm γ = 1, β = 0, running statistics) are kept.
pub fn reseed(vars: &VarMap, seed: u64) -> Result<()> {
    let data = vars.data().lock().map_err(|_| Error::InvalidConfig {
        field: "vars",
        expected: "an unpoisoned VarMap".into(),
        found: "a poisoned lock".into(),
    })?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for name in names {
        let var: &Var = &data[name];
        let values: Vec<f32> = var.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let n = values.len() as f64;
        let mean = values.iter().map(|&x| x as f64).sum::<f64>() / n;
        let std = (values
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        if values.len() < 2 || std == 0.0 {
            continue;
        }
        let gaussian = var.rank() == 4;
        let fresh: Vec<f32> = (0..values.len())
            .map(|_| {
                let z = if gaussian {
                    let u1: f64 = rng.random::<f64>().max(1e-300);
                    let u2: f64 = rng.random();
                    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                } else {
                    (rng.random::<f64>() * 2.0 - 1.0) * 3f64.sqrt()
                };
                (mean + std * z) as f32
            })
            .collect();
        let t = Tensor::from_vec(fresh, var.shape(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}
