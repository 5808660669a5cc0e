//! The models: a late-fusion model (paper Figure 1: audio encoder, video encoder, embeddings
//! concatenated into one linear classifier `fc`) and a uni-modal model (one encoder + `fc`, the
//! teachers of UMT). Weight names: `audio.*` / `video.*` (torchvision names inside), `fc`, and
//! for Gradient-Blending the uni-modal heads `audio_fc` / `video_fc`.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
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
        // Deterministic initial values from (seed, variable name): umt_nn::init.
        let vb = umt_nn::init::seeded_var_builder(&vars, seed, DType::F32, device);
        let encoder = Encoder::new(modality, cfg, vb.pp(modality.name()))?;
        let fc = candle_nn::linear(cfg.embedding_dim(), classes, vb.pp("fc"))?;
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
        // Deterministic initial values from (seed, variable name): umt_nn::init.
        let vb = umt_nn::init::seeded_var_builder(&vars, seed, DType::F32, device);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn values(vars: &VarMap) -> Vec<(String, Vec<f32>)> {
        let data = vars.data().lock().unwrap();
        let mut out: Vec<(String, Vec<f32>)> = data
            .iter()
            .map(|(k, v)| (k.clone(), v.flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn initial_weights_are_a_function_of_the_seed_only() {
        let cfg = crate::ExperimentConfig::preset(crate::Preset::Smoke).encoder;
        let dev = Device::Cpu;
        let a = FusionModel::new(&cfg, 4, true, 11, &dev).unwrap();
        let b = FusionModel::new(&cfg, 4, true, 11, &dev).unwrap();
        let c = FusionModel::new(&cfg, 4, true, 12, &dev).unwrap();
        assert_eq!(values(&a.vars), values(&b.vars));
        assert_ne!(values(&a.vars), values(&c.vars));
        // The teacher's audio encoder starts where the fusion model's does for the same seed
        // (same variable names, same streams).
        let t = UniModel::new(Modality::Audio, &cfg, 4, 11, &dev).unwrap();
        let enc = |v: Vec<(String, Vec<f32>)>| -> Vec<(String, Vec<f32>)> {
            v.into_iter()
                .filter(|(k, _)| k.starts_with("audio."))
                .collect()
        };
        assert_eq!(enc(values(&t.vars)), enc(values(&a.vars)));
    }
}
