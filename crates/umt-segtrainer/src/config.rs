//! The experiment configuration: model, data, optimisation, UMT and probe settings, with the
//! presets `smoke`, `cpu` and `paper`. Serialised next to every result (`config.json`);
//! unknown keys are rejected.

use serde::{Deserialize, Serialize};
use umt_data::rgbd::augment::AugmentConfig;
use umt_data::rgbd::nyuv2::{DepthKind, NYUV2_NUM_CLASSES};
use umt_data::rgbd::synthetic::{SyntheticRgbdConfig, SYNTHETIC_CLASS_NAMES};
use umt_esanet::EsaNetConfig;

use crate::{Error, Result};

/// The optimiser of every stage (weight decay on every parameter, BatchNorm included, as the
/// reference does).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum OptimizerConfig {
    /// SGD with Nesterov momentum (the reference NYUv2 recipe, notes §3).
    SgdNesterov {
        /// Peak learning rate of the OneCycle schedule (reference: 0.01 at batch 8).
        max_lr: f64,
        /// Momentum (reference passes 0.9; OneCycle's momentum cycling is not reproduced).
        momentum: f64,
        /// Weight decay (reference: 1e-4).
        weight_decay: f64,
    },
    /// Adam (ESANet's Cityscapes optimiser); trains far faster in few CPU epochs.
    Adam {
        /// Peak learning rate of the OneCycle schedule.
        max_lr: f64,
        /// L2 weight decay.
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// The peak learning rate.
    pub fn max_lr(&self) -> f64 {
        match *self {
            Self::SgdNesterov { max_lr, .. } | Self::Adam { max_lr, .. } => max_lr,
        }
    }
}

/// How the cross-entropy weights the classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassWeighting {
    /// ESANet's median-frequency weights from the training labels (reference default).
    MedianFrequency,
    /// All classes weigh 1.
    None,
}

/// Training settings shared by every stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Epochs of every full-model stage (reference: 500).
    pub epochs: usize,
    /// Batch size (reference: 8, `drop_last`).
    pub batch_size: usize,
    /// Batch size of the evaluation passes (no effect on the numbers).
    pub eval_batch_size: usize,
    /// The optimiser and its peak learning rate.
    pub optimizer: OptimizerConfig,
    /// OneCycle warm-up share (reference: `pct_start = 0.1`). The schedule is stepped per
    /// iteration here (reference: per epoch), so short CPU runs still warm up smoothly.
    pub pct_start: f64,
    /// OneCycle `div_factor` (reference: 25).
    pub div_factor: f64,
    /// OneCycle `final_div_factor` (reference: 1e4).
    pub final_div_factor: f64,
    /// Class weighting of the cross-entropy (reference: median frequency).
    pub class_weighting: ClassWeighting,
    /// Whether to apply ESANet's training augmentation (scale, crop, HSV, flip; reference: on).
    pub augment: bool,
}

/// UMT for segmentation (paper §4.2). The paper gives neither the weights nor the tap
/// points: the defaults are our choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UmtConfig {
    /// Weight λ_d of the depth-branch MSE (our choice: 1; not in the paper).
    pub lambda_depth: f64,
    /// Weight λ_r of the predicted-RGB MSE (our choice: 1; not in the paper).
    pub lambda_rgb: f64,
    /// Stages distilled, indices into `[stem, layer1, layer2, layer3, layer4]` (our choice: all
    /// five fusion points, "multi-scale" in the paper).
    pub taps: Vec<usize>,
}

/// How the frozen encoder's BatchNorm layers run while a Table 4 probe trains its decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrozenBn {
    /// Eval mode: running statistics used and left untouched, so the encoder is measured
    /// exactly as it was trained (weights and statistics frozen).
    Eval,
    /// Training mode: batch statistics, running statistics re-estimated on the probe's
    /// batches (PyTorch's `requires_grad=False` under `model.train()`).
    Train,
}

/// The frozen-encoder probes of Table 4.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Epochs of training the new decoder (the paper does not say; our choice: as `train`).
    pub epochs: usize,
    /// BatchNorm mode of the frozen encoder (the paper does not say; our choice: `eval`,
    /// since Table 4 measures the encoder as trained: frozen weights and statistics).
    pub frozen_bn: FrozenBn,
}

/// Where the images come from.
// One value per run: boxing the generator config would buy nothing but noise at every use.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum DataConfig {
    /// The embedded synthetic RGB-D rooms (docs/rgbd-data.md), rendered on demand.
    Synthetic {
        /// The generator (its size must equal the model input size, its 10 classes the
        /// model's).
        generator: SyntheticRgbdConfig,
    },
    /// NYUv2 (40 classes) in the layout `cargo xtask prepare-nyuv2` writes; the folder is a
    /// run option (`RunOptions::data_dir`, recorded in the output folder's `data.json`),
    /// not part of the configuration. Images whose size differs from the model input are
    /// resized to it first (RGB bilinear, depth and labels nearest; a no-op at 480×640).
    Nyuv2 {
        /// Depth folder: `refined` (`depth/`, ESANet's default) or `raw` (`depth_raw/`).
        depth: DepthKind,
        /// Factor from depth PNG values to mm (1 for NYUv2 as prepared; 0.1 for ESANet's
        /// sample pair).
        depth_scale: f32,
        /// Train on the first N ids of `train.txt` only (`None`: all 795; our smoke preset
        /// uses 16).
        max_train_samples: Option<usize>,
        /// Test on the first N ids of `test.txt` only (`None`: all 654).
        max_test_samples: Option<usize>,
    },
}

impl DataConfig {
    /// `synthetic` or `nyuv2`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Synthetic { .. } => "synthetic",
            Self::Nyuv2 { .. } => "nyuv2",
        }
    }

    /// Number of classes K of the data (labels `1..=K`).
    pub fn num_classes(&self) -> usize {
        match self {
            Self::Synthetic { .. } => SYNTHETIC_CLASS_NAMES.len(),
            Self::Nyuv2 { .. } => NYUV2_NUM_CLASSES,
        }
    }
}

/// Everything that determines the results of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegExperimentConfig {
    /// Preset name this config started from (recorded for the tables).
    pub preset: String,
    /// The RGB-D model; the uni-modal teachers and probes use it with another modality.
    pub model: EsaNetConfig,
    /// The data: the embedded synthetic scenes or NYUv2.
    pub data: DataConfig,
    /// Seed of the synthetic scenes and of the validation carve in tuning mode (independent
    /// of the training seeds).
    pub data_seed: u64,
    /// Training settings.
    pub train: TrainConfig,
    /// UMT settings.
    pub umt: UmtConfig,
    /// Table 4 probe settings.
    pub probe: ProbeConfig,
}

impl SegExperimentConfig {
    /// A preset by name on NYUv2 instead of the synthetic scenes ([`Self::with_nyuv2`]).
    pub fn preset_nyuv2(name: &str) -> Result<Self> {
        Ok(Self::preset(name)?.with_nyuv2())
    }

    /// The same recipe on NYUv2 (refined depth, scale 1): 40 classes at the preset's model
    /// size (480×640 for `paper`: the reference; the CPU presets resize the images to their
    /// 96×128 or 64×64). `smoke` uses the first 16 train / 8 test ids; the others all.
    pub fn with_nyuv2(mut self) -> Self {
        let (max_train_samples, max_test_samples) = match &self.data {
            DataConfig::Synthetic { generator } if self.preset == "smoke" => {
                (Some(generator.train_samples), Some(generator.test_samples))
            }
            DataConfig::Nyuv2 {
                max_train_samples,
                max_test_samples,
                ..
            } => (*max_train_samples, *max_test_samples),
            DataConfig::Synthetic { .. } => (None, None),
        };
        self.data = DataConfig::Nyuv2 {
            depth: DepthKind::Refined,
            depth_scale: 1.0,
            max_train_samples,
            max_test_samples,
        };
        self.model = self.model.with_num_classes(NYUV2_NUM_CLASSES);
        self
    }

    /// A preset by name: `smoke`, `cpu` or `paper`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "smoke" => Ok(Self::smoke()),
            "cpu" => Ok(Self::cpu()),
            "paper" => Ok(Self::paper()),
            other => Err(Error::InvalidConfig {
                field: "preset",
                expected: "one of smoke, cpu, paper".into(),
                found: other.into(),
            }),
        }
    }

    /// The reference recipe (notes §3): ESANet-R34-NBt1D at 480×640, SGD Nesterov lr 0.01,
    /// weight decay 1e-4, OneCycle, batch 8, 500 epochs, median-frequency weights,
    /// augmentation; on the synthetic data at 480×640 with NYUv2's split sizes
    /// ([`Self::with_nyuv2`] for NYUv2 itself). A GPU run.
    pub fn paper() -> Self {
        let data = SyntheticRgbdConfig {
            height: 480,
            width: 640,
            ..SyntheticRgbdConfig::default()
        };
        Self {
            preset: "paper".into(),
            model: EsaNetConfig::paper()
                .with_input_size(data.height, data.width)
                .with_num_classes(SYNTHETIC_CLASS_NAMES.len()),
            data: DataConfig::Synthetic { generator: data },
            data_seed: 0,
            train: TrainConfig {
                epochs: 500,
                batch_size: 8,
                eval_batch_size: 8,
                optimizer: OptimizerConfig::SgdNesterov {
                    max_lr: 0.01,
                    momentum: 0.9,
                    weight_decay: 1e-4,
                },
                pct_start: 0.1,
                div_factor: 25.0,
                final_div_factor: 1e4,
                class_weighting: ClassWeighting::MedianFrequency,
                augment: true,
            },
            umt: UmtConfig {
                lambda_depth: 1.0,
                lambda_rgb: 1.0,
                taps: vec![0, 1, 2, 3, 4],
            },
            probe: ProbeConfig {
                epochs: 500,
                frozen_bn: FrozenBn::Eval,
            },
        }
    }

    /// The CPU default: [`EsaNetConfig::cpu`] (R18-NBt1D width 16, decoder [128, 64, 32]) at
    /// the generator's 96×128 with its 10 classes, 240 train / 120 test scenes, 8 epochs, Adam
    /// lr 2e-3 with OneCycle (SGD at lr 0.01 barely moves in 8 epochs; our choice).
    pub fn cpu() -> Self {
        let data = SyntheticRgbdConfig {
            train_samples: 240,
            test_samples: 120,
            ..SyntheticRgbdConfig::default()
        };
        let paper = Self::paper();
        Self {
            preset: "cpu".into(),
            model: EsaNetConfig::cpu()
                .with_input_size(data.height, data.width)
                .with_num_classes(SYNTHETIC_CLASS_NAMES.len()),
            data: DataConfig::Synthetic { generator: data },
            train: TrainConfig {
                epochs: 8,
                optimizer: OptimizerConfig::Adam {
                    max_lr: 2e-3,
                    weight_decay: 1e-4,
                },
                ..paper.train
            },
            probe: ProbeConfig {
                epochs: 8,
                ..paper.probe
            },
            ..paper
        }
    }

    /// A run of a minute or two that exercises every stage: the CPU model at width 8 on
    /// 64×64 scenes, 16 train / 8 test, one epoch.
    pub fn smoke() -> Self {
        let cpu = Self::cpu();
        let data = SyntheticRgbdConfig {
            height: 64,
            width: 64,
            train_samples: 16,
            test_samples: 8,
            ..SyntheticRgbdConfig::default()
        };
        let mut model = EsaNetConfig::cpu()
            .with_input_size(data.height, data.width)
            .with_num_classes(SYNTHETIC_CLASS_NAMES.len());
        model.base_width = 8;
        model.decoder_channels = [32, 16, 16];
        Self {
            preset: "smoke".into(),
            model,
            data: DataConfig::Synthetic { generator: data },
            train: TrainConfig {
                epochs: 1,
                batch_size: 4,
                eval_batch_size: 8,
                // Too few images for every class to appear: uniform weights.
                class_weighting: ClassWeighting::None,
                ..cpu.train
            },
            probe: ProbeConfig {
                epochs: 1,
                ..cpu.probe
            },
            ..cpu
        }
    }

    /// Reads a config from JSON (unknown keys are an error naming the key).
    pub fn from_json_str(text: &str, path: &std::path::Path) -> Result<Self> {
        let cfg: Self = serde_json::from_str(text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field once.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, expected: &str, found: String| {
            Err(Error::InvalidConfig {
                field,
                expected: expected.into(),
                found,
            })
        };
        self.model.validate()?;
        match &self.data {
            DataConfig::Synthetic { generator } => {
                generator.validate()?;
                if (self.model.height, self.model.width) != (generator.height, generator.width) {
                    return bad(
                        "model.height/width",
                        &format!("the data size {}x{}", generator.height, generator.width),
                        format!("{}x{}", self.model.height, self.model.width),
                    );
                }
            }
            DataConfig::Nyuv2 {
                depth_scale,
                max_train_samples,
                max_test_samples,
                ..
            } => {
                if !(depth_scale.is_finite() && *depth_scale > 0.0) {
                    return bad(
                        "data.depth_scale",
                        "a finite positive factor (PNG value to mm)",
                        depth_scale.to_string(),
                    );
                }
                if *max_train_samples == Some(0) || *max_test_samples == Some(0) {
                    return bad(
                        "data.max_train_samples/max_test_samples",
                        "null or > 0",
                        format!("{max_train_samples:?} / {max_test_samples:?}"),
                    );
                }
            }
        }
        let classes = self.data.num_classes();
        if self.model.num_classes != classes {
            return bad(
                "model.num_classes",
                &format!("{classes} (the {} classes)", self.data.name()),
                self.model.num_classes.to_string(),
            );
        }
        if self.model.modality != umt_esanet::Modality::RgbD {
            return bad(
                "model.modality",
                "rgbd",
                format!("{:?}", self.model.modality),
            );
        }
        let t = &self.train;
        if t.epochs == 0 || self.probe.epochs == 0 {
            return bad(
                "train.epochs/probe.epochs",
                "> 0",
                format!("{} / {}", t.epochs, self.probe.epochs),
            );
        }
        let max_batch = match &self.data {
            DataConfig::Synthetic { generator } => generator.train_samples,
            // Checked against the images found when the data is opened.
            DataConfig::Nyuv2 { .. } => usize::MAX,
        };
        if t.batch_size == 0 || t.batch_size > max_batch {
            return bad(
                "train.batch_size",
                &format!("in 1..={max_batch} (the training scenes)"),
                t.batch_size.to_string(),
            );
        }
        if t.eval_batch_size == 0 {
            return bad("train.eval_batch_size", "> 0", "0".into());
        }
        let lr = t.optimizer.max_lr();
        if !(lr.is_finite() && lr > 0.0) {
            return bad(
                "train.optimizer.max_lr",
                "a finite positive number",
                lr.to_string(),
            );
        }
        if !(t.pct_start > 0.0 && t.pct_start < 1.0) {
            return bad("train.pct_start", "in (0, 1)", t.pct_start.to_string());
        }
        if !(t.div_factor >= 1.0 && t.final_div_factor >= 1.0) {
            return bad(
                "train.div_factor/final_div_factor",
                ">= 1",
                format!("{} / {}", t.div_factor, t.final_div_factor),
            );
        }
        let u = &self.umt;
        if !(u.lambda_depth >= 0.0 && u.lambda_rgb >= 0.0) {
            return bad(
                "umt.lambda_depth/lambda_rgb",
                "finite and >= 0",
                format!("{} / {}", u.lambda_depth, u.lambda_rgb),
            );
        }
        if u.taps.is_empty() || u.taps.iter().any(|&t| t > 4) {
            return bad(
                "umt.taps",
                "a non-empty list of stage indices 0..=4",
                format!("{:?}", u.taps),
            );
        }
        Ok(())
    }

    /// ESANet's training augmentation for the model input size.
    pub fn augment_config(&self) -> AugmentConfig {
        AugmentConfig::for_size(self.model.height, self.model.width)
    }
}
