//! Experiment configuration: the dataset, the encoders and the training schedule, with named
//! presets (`default`, `paper`, `smoke`) and JSON overrides (`--config FILE`: any subset of
//! fields, merged onto the preset; unknown keys are an error naming the key).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use umt_data::avmnist::PreparedInfo;
use umt_data::synthetic::SyntheticConfig;
use umt_data::vggsound::{self, VggSoundConfig};
use umt_resnet::StemKind;

use crate::model::EncoderConfig;
use crate::source::StreamLoader;
use crate::{Error, Result};

/// Optimisation and method hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Epochs of every fusion method. Paper §4.1: 20; default preset 6 (15-minute CPU budget
    /// for 3 seeds × 9 methods; the prototype used 12).
    pub epochs: usize,
    /// Epochs of each uni-modal teacher (same schedule shape). Paper: as the fusion methods;
    /// default preset 6.
    pub teacher_epochs: usize,
    /// Mini-batch size. Paper §4.1: 24; default preset 32 (with 64 the distilled students got
    /// only 90 steps and stayed far from their teachers: on validation UMT 28.9 %, Naive Fusion
    /// 80.4 %).
    pub batch_size: usize,
    /// Adam learning rate. Paper §4.1: 1e-3 (default preset: see `default_cpu`).
    pub learning_rate: f64,
    /// Multiply the learning rate by `lr_decay_factor` every this many epochs (baselines and
    /// teachers). Paper §4.1: 10.
    pub lr_decay_every_epochs: usize,
    /// The same for UMT and the one-teacher distillations. Paper §4.1: 5.
    pub distill_lr_decay_every_epochs: usize,
    /// Paper §4.1: 0.1.
    pub lr_decay_factor: f64,
    /// λ of Eq. (3), weight of the mean-reduced feature MSE. Paper §4.1: 50.
    pub lambda: f64,
    /// Dropout probability on the fused embedding ("Dropout" row). Paper Table 2: 0.5.
    pub dropout: f32,
    /// Share of the training set held out to estimate Gradient-Blending's weights (Wang et
    /// al. 2020 use a held-out split of the training data). Our choice: 0.2.
    pub gb_validation_fraction: f64,
    /// Epochs of the Gradient-Blending estimation run (losses are read at half and at the end).
    /// Our choice: half of `epochs` (CPU budget).
    pub gb_estimation_epochs: usize,
    /// Epochs of every linear classifier fitted on frozen embeddings (Pre-train + Fine-tune and
    /// the linear evaluation of Table 1). Our choice: 60 (converged on the synthetic data);
    /// default preset 40.
    pub linear_epochs: usize,
    /// Adam learning rate of those linear classifiers (standardised inputs). Our choice: 1e-2.
    pub linear_learning_rate: f64,
}

/// The dataset of a run. Recorded in the run's `config.json`, so the resume check
/// ([`crate::Error::ConfigChanged`]) and the teachers' cache keys cover it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum DatasetConfig {
    /// The embedded synthetic generator, configured by [`ExperimentConfig::synthetic`].
    #[default]
    Synthetic,
    /// AV-MNIST prepared by `cargo xtask prepare-avmnist` (`umt_data::avmnist`).
    Avmnist {
        /// The prepared folder.
        data_dir: PathBuf,
        /// Its `config.json` when the run started: a folder prepared again with other
        /// settings is refused rather than mixed into the run.
        prepared: Box<PreparedInfo>,
    },
    /// VGGSound prepared by `cargo xtask prepare-vggsound` (`umt_data::vggsound`), streamed
    /// from disk by the prefetching loader (never held in memory).
    Vggsound {
        /// The prepared folder (`classes.txt`, `index.jsonl`, `clips/`).
        data_dir: PathBuf,
        /// SHA-256 of `classes.txt` and `index.jsonl` when the run started: a folder prepared
        /// again since (other clips, other classes) is refused rather than mixed into the run.
        index_sha256: String,
        /// Frame sampling and the audio front end. Default
        /// [`VggSoundConfig::default`]: 32 frames (paper §4.1), 224×224 (not in the paper:
        /// ResNet18's input size; the paper stores 256×256), ImageNet normalisation, 10 s of
        /// 16 kHz audio through the paper's STFT (1024 points, 64 ms window, 32 ms shift,
        /// magnitude; `ln(1e-6 + |X|)` is our choice, as for the other datasets).
        front_end: VggSoundConfig,
        /// Training clips (a seeded sample, `data_seed`) whose spectrograms give the audio
        /// mean and std. Our choice: 1000 (the paper does not say how it normalises).
        audio_stats_clips: usize,
        /// Worker threads, prefetch depth and evaluation batch of the loader (they change
        /// no result; see [`StreamLoader`]).
        loader: StreamLoader,
    },
}

impl DatasetConfig {
    /// The dataset's name on the command line (`synthetic`, `avmnist`).
    pub fn name(&self) -> &'static str {
        match self {
            DatasetConfig::Synthetic => "synthetic",
            DatasetConfig::Avmnist { .. } => "avmnist",
            DatasetConfig::Vggsound { .. } => "vggsound",
        }
    }

    /// The prepared folder of a real dataset (`None` for the synthetic one).
    pub fn data_dir(&self) -> Option<&Path> {
        match self {
            DatasetConfig::Synthetic => None,
            DatasetConfig::Avmnist { data_dir, .. } | DatasetConfig::Vggsound { data_dir, .. } => {
                Some(data_dir)
            }
        }
    }

    /// VGGSound from the folder `data_dir` written by `cargo xtask prepare-vggsound`, with the
    /// paper's front end and our loader defaults (see the fields of
    /// [`DatasetConfig::Vggsound`]). The folder must hold `classes.txt` and `index.jsonl`;
    /// otherwise [`Error::Dataset`] names the missing file and says to run the preparation.
    pub fn vggsound(data_dir: &Path) -> Result<Self> {
        Ok(DatasetConfig::Vggsound {
            data_dir: data_dir.to_path_buf(),
            index_sha256: vggsound_index_sha256(data_dir)?,
            front_end: VggSoundConfig::default(),
            audio_stats_clips: 1000,
            loader: StreamLoader::default(),
        })
    }

    /// The config with everything that cannot change a result (the loader's threads, prefetch
    /// depth and evaluation batch) set to defaults: what cache keys and the resume check
    /// compare.
    pub fn result_relevant(&self) -> Self {
        let mut d = self.clone();
        if let DatasetConfig::Vggsound { loader, .. } = &mut d {
            *loader = StreamLoader::default();
        }
        d
    }

    /// AV-MNIST from the prepared folder `data_dir` (reads its `config.json`).
    pub fn avmnist(data_dir: &Path) -> Result<Self> {
        if !data_dir.is_dir() {
            return Err(Error::MissingDataDir {
                path: data_dir.to_path_buf(),
            });
        }
        Ok(DatasetConfig::Avmnist {
            data_dir: data_dir.to_path_buf(),
            prepared: Box::new(umt_data::avmnist::read_prepared_info(data_dir)?),
        })
    }
}

/// SHA-256 (hex) of `classes.txt` followed by `index.jsonl` of a prepared VGGSound folder; a
/// missing file is [`Error::Dataset`] naming it and the command that writes it.
pub fn vggsound_index_sha256(data_dir: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    if !data_dir.is_dir() {
        return Err(Error::MissingDataDir {
            path: data_dir.to_path_buf(),
        });
    }
    let mut h = Sha256::new();
    for name in [vggsound::CLASSES_FILE, vggsound::INDEX_FILE] {
        let path = data_dir.join(name);
        if !path.is_file() {
            return Err(Error::Dataset {
                name: "vggsound".into(),
                problem: format!(
                    "{} is missing: not a folder written by `cargo xtask prepare-vggsound` \
                     (or its preparation did not finish); run `cargo xtask prepare-vggsound \
                     --csv vggsound.csv --videos DIR --out {}` first",
                    path.display(),
                    data_dir.display()
                ),
            });
        }
        h.update(std::fs::read(&path).map_err(crate::error::io_err(&path))?);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Everything that determines a run: the dataset, the encoders and the training schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The dataset. Default (and in `config.json` files written before it existed):
    /// synthetic.
    #[serde(default)]
    pub dataset: DatasetConfig,
    /// The synthetic generator (the embedded default dataset; unused by other datasets).
    pub synthetic: SyntheticConfig,
    /// Seed of the dataset draw (kept fixed across training seeds, as a real dataset is).
    pub data_seed: u64,
    /// Both encoders.
    pub encoder: EncoderConfig,
    /// Optimisation.
    pub train: TrainConfig,
}

/// A named preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// CPU-sized, the committed results (15-minute budget on 2 cores).
    Default,
    /// The paper's §4.1 schedule and a full-width ResNet18 (needs a GPU).
    Paper,
    /// About a minute end to end: for tests.
    Smoke,
}

impl Preset {
    /// Parses `default`, `paper` or `smoke`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "default" => Ok(Preset::Default),
            "paper" => Ok(Preset::Paper),
            "smoke" => Ok(Preset::Smoke),
            other => Err(Error::InvalidConfig {
                field: "preset",
                expected: "one of default, paper, smoke".into(),
                found: other.into(),
            }),
        }
    }
}

impl ExperimentConfig {
    /// The configuration of a preset.
    pub fn preset(p: Preset) -> Self {
        match p {
            Preset::Default => Self::default_cpu(),
            Preset::Paper => Self::paper(),
            Preset::Smoke => Self::smoke(),
        }
    }

    /// The preset `p` for `dataset`: the synthetic presets as they are; on AV-MNIST the
    /// `default` preset is [`ExperimentConfig::avmnist_cpu`] (`paper` and `smoke` keep their
    /// encoders and schedules).
    ///
    /// On VGGSound, `default` and `paper` are both [`ExperimentConfig::paper_vggsound`] (the
    /// paper's experiment; no CPU runs it), and `smoke` is the smoke schedule and encoders
    /// with [`ExperimentConfig::vggsound_smoke_front_end`].
    pub fn preset_for(p: Preset, dataset: DatasetConfig) -> Self {
        let mut dataset = dataset;
        let base = match (&mut dataset, p) {
            (DatasetConfig::Avmnist { .. }, Preset::Default) => Self::avmnist_cpu(),
            (DatasetConfig::Vggsound { .. }, Preset::Default | Preset::Paper) => {
                Self::paper_vggsound()
            }
            (DatasetConfig::Vggsound { front_end, .. }, Preset::Smoke) => {
                *front_end = Self::vggsound_smoke_front_end();
                Self::smoke()
            }
            _ => Self::preset(p),
        };
        Self { dataset, ..base }
    }

    /// The paper's VGGSound experiment (§4.1; dataset field left synthetic: set it with
    /// [`ExperimentConfig::preset_for`], whose front end is the paper's, see
    /// [`DatasetConfig::Vggsound`]). Two ResNet18 at full width with torchvision's stem
    /// ("Two ResNet18 \[20\] backbones are employed as our video and audio encoders"), batch 24,
    /// Adam at 1e-3 for 20 epochs, the learning rate ×0.1 every 5 epochs for UMT (and the
    /// one-teacher distillations) and every 10 for the baselines and teachers, λ = 50 with
    /// mean-reduced MSE on the features. Not in the paper (our choices, see
    /// [`TrainConfig`]): the Gradient-Blending estimation run (10 epochs, 20 % of the training
    /// split), the linear classifiers of Table 1 and Pre-train + Fine-tune (60 epochs, Adam
    /// 1e-2 on standardised embeddings), and the teachers' schedule (the baselines').
    pub fn paper_vggsound() -> Self {
        let p = Self::paper();
        Self {
            encoder: EncoderConfig {
                // Paper §4.1: ResNet18 (torchvision: width 64, 7×7/s2 stem + max pool).
                base_width: 64,
                stem: StemKind::Torchvision,
            },
            ..p
        }
    }

    /// The front end of the VGGSound smoke preset (a pipeline check, not an experiment): 4
    /// frames of 64×64, the first 2 s of audio through a 256-point STFT (hop 128).
    pub fn vggsound_smoke_front_end() -> VggSoundConfig {
        let mut f = VggSoundConfig::default();
        f.video.num_frames = 4;
        f.video.resize_height = 64;
        f.video.resize_width = 64;
        f.audio.clip_seconds = 2.0;
        f.audio.stft.n_fft = 256;
        f.audio.stft.win_length = 256;
        f.audio.stft.hop_length = 128;
        f
    }

    /// The CPU preset for AV-MNIST (`docs/avmnist.md`; dataset field left synthetic: set it
    /// with [`ExperimentConfig::preset_for`]): sized for the 15-minute budget of 3 seeds × 9
    /// methods on 2 cores and chosen on a validation split carved from the training data
    /// (`--tune-on-validation 0.25`), never on the test split.
    pub fn avmnist_cpu() -> Self {
        let d = Self::default_cpu();
        Self {
            encoder: EncoderConfig {
                // Width 8 as the synthetic preset; torchvision's stem (the paper's, 7×7/s2 +
                // max pool) puts `layer1` at 8×8 (audio 32×32) and 7×7 (images 28×28): a
                // quarter of the small stem's cost.
                base_width: 8,
                stem: StemKind::Torchvision,
            },
            train: TrainConfig {
                epochs: 6,
                teacher_epochs: 6,
                ..d.train
            },
            ..d
        }
    }

    /// The CPU default (see the field comments of [`TrainConfig`]): sized for the 15-minute
    /// budget of 3 seeds × 9 methods on 2 cores and tuned on a validation split carved from
    /// the training data (`--tune-on-validation 0.25`, never the test split; the numbers are
    /// in `docs/synthetic-dataset.md`).
    pub fn default_cpu() -> Self {
        Self {
            dataset: DatasetConfig::Synthetic,
            synthetic: SyntheticConfig::default(),
            data_seed: 0,
            encoder: EncoderConfig {
                // ResNet18 topology at 1/8 width (embedding 64): width 4 could not learn the
                // audio patterns in the budget (validation 34 % vs 69 % at width 8).
                base_width: 8,
                stem: StemKind::Small,
            },
            train: TrainConfig {
                epochs: 6,
                teacher_epochs: 6,
                batch_size: 32,
                // Twice the paper's 1e-3: at 1e-3 the distilled students (λ = 50) stayed far
                // from their teachers in 6 epochs (validation: UMT 70.6 %, naive fusion 81.4 %);
                // at 2e-3 UMT 88.1 %, naive fusion 86.1 %.
                learning_rate: 2e-3,
                // One decay near the end of the short schedule (paper: after half the epochs).
                lr_decay_every_epochs: 5,
                // Paper: distillation decays twice as often; with 6 epochs that left the
                // students under-trained, so the same schedule as the baselines.
                distill_lr_decay_every_epochs: 5,
                lr_decay_factor: 0.1,
                lambda: 50.0,
                dropout: 0.5,
                gb_validation_fraction: 0.2,
                gb_estimation_epochs: 3,
                linear_epochs: 40,
                linear_learning_rate: 1e-2,
            },
        }
    }

    /// The paper's §4.1 training schedule with full-width ResNet18 encoders on the synthetic
    /// data (a GPU-sized run).
    pub fn paper() -> Self {
        let d = Self::default_cpu();
        Self {
            encoder: EncoderConfig {
                base_width: 64,
                stem: StemKind::Small,
            },
            train: TrainConfig {
                epochs: 20,
                teacher_epochs: 20,
                batch_size: 24,
                learning_rate: 1e-3,
                lr_decay_every_epochs: 10,
                distill_lr_decay_every_epochs: 5,
                gb_estimation_epochs: 10,
                linear_epochs: 60,
                ..d.train
            },
            ..d
        }
    }

    /// A tiny run for tests (about a minute on 2 cores).
    pub fn smoke() -> Self {
        let d = Self::default_cpu();
        Self {
            synthetic: SyntheticConfig::smoke(),
            encoder: EncoderConfig {
                base_width: 4,
                stem: StemKind::Small,
            },
            train: TrainConfig {
                epochs: 4,
                teacher_epochs: 4,
                batch_size: 32,
                lr_decay_every_epochs: 3,
                distill_lr_decay_every_epochs: 3,
                gb_estimation_epochs: 2,
                linear_epochs: 10,
                ..d.train
            },
            ..d
        }
    }

    /// The preset with the JSON object of `path` merged onto it (objects merge key by key,
    /// anything else replaces), then validated. Unknown keys are an error naming the key.
    pub fn with_overrides_file(self, path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(crate::error::io_err(path))?;
        let patch: serde_json::Value =
            serde_json::from_str(&text).map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            })?;
        self.with_overrides(&patch).map_err(|e| match e {
            Error::Json { source, .. } => Error::Json {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// The preset with `patch` merged onto it, then validated.
    pub fn with_overrides(self, patch: &serde_json::Value) -> Result<Self> {
        let json_err = |source| Error::Json {
            path: "<config>".into(),
            source,
        };
        let mut base = serde_json::to_value(&self).map_err(json_err)?;
        umt_data::avmnist::merge_json(&mut base, patch);
        let cfg: Self = serde_json::from_value(base).map_err(json_err)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config without what changes no result ([`DatasetConfig::result_relevant`]): what
    /// the resume check compares.
    pub fn result_relevant(&self) -> Self {
        Self {
            dataset: self.dataset.result_relevant(),
            ..self.clone()
        }
    }

    /// Checks every field once.
    pub fn validate(&self) -> Result<()> {
        let t = &self.train;
        let bad = |field: &'static str, expected: &str, found: String| {
            Err(Error::InvalidConfig {
                field,
                expected: expected.into(),
                found,
            })
        };
        if !(t.lambda >= 0.0 && t.lambda.is_finite()) {
            return bad("train.lambda", "λ ≥ 0 (paper: 50)", t.lambda.to_string());
        }
        if t.epochs == 0 || t.teacher_epochs == 0 || t.linear_epochs == 0 {
            return bad("train.epochs", "at least 1", t.epochs.to_string());
        }
        if t.gb_estimation_epochs < 2 {
            return bad(
                "train.gb_estimation_epochs",
                "at least 2",
                t.gb_estimation_epochs.to_string(),
            );
        }
        if t.batch_size < 2 {
            return bad(
                "train.batch_size",
                "at least 2 (BatchNorm)",
                t.batch_size.to_string(),
            );
        }
        if !(t.learning_rate > 0.0 && t.linear_learning_rate > 0.0) {
            return bad(
                "train.learning_rate",
                "positive",
                t.learning_rate.to_string(),
            );
        }
        if t.lr_decay_every_epochs == 0 || t.distill_lr_decay_every_epochs == 0 {
            return bad("train.lr_decay_every_epochs", "at least 1", "0".into());
        }
        if !(0.0..1.0).contains(&t.dropout) {
            return bad(
                "train.dropout",
                "a probability in [0, 1)",
                t.dropout.to_string(),
            );
        }
        if !(t.gb_validation_fraction > 0.0 && t.gb_validation_fraction < 1.0) {
            return bad(
                "train.gb_validation_fraction",
                "in (0, 1)",
                t.gb_validation_fraction.to_string(),
            );
        }
        if self.encoder.base_width == 0 {
            return bad("encoder.base_width", "at least 1", "0".into());
        }
        if let DatasetConfig::Vggsound {
            audio_stats_clips,
            loader,
            front_end,
            ..
        } = &self.dataset
        {
            if *audio_stats_clips == 0 {
                return bad("dataset.audio_stats_clips", "at least 1", "0".into());
            }
            loader.validate()?;
            if let Err(e) = front_end.video.validate() {
                return bad(
                    "dataset.front_end.video",
                    "a valid video config",
                    e.to_string(),
                );
            }
            if let Err(e) = front_end.audio.validate() {
                return bad(
                    "dataset.front_end.audio",
                    "a valid front end",
                    e.to_string(),
                );
            }
        }
        self.synthetic.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_merge_onto_the_preset() {
        let cfg = ExperimentConfig::smoke()
            .with_overrides(&serde_json::json!({"train": {"lambda": 10.0}}))
            .unwrap();
        assert_eq!(cfg.train.lambda, 10.0);
        assert_eq!(cfg.train.epochs, ExperimentConfig::smoke().train.epochs);
    }

    #[test]
    fn unknown_keys_and_negative_lambda_are_errors() {
        let e = ExperimentConfig::smoke()
            .with_overrides(&serde_json::json!({"train": {"lamda": 1.0}}))
            .unwrap_err();
        assert!(e.to_string().contains("lamda"), "{e}");
        let e = ExperimentConfig::smoke()
            .with_overrides(&serde_json::json!({"train": {"lambda": -1.0}}))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidConfig {
                    field: "train.lambda",
                    ..
                }
            ),
            "{e}"
        );
        let e = ExperimentConfig::smoke()
            .with_overrides(&serde_json::json!({"synthetic": {"audio": {"nfft": 3}}}))
            .unwrap_err();
        assert!(e.to_string().contains("nfft"), "{e}");
    }

    #[test]
    fn presets_are_valid() {
        for p in [Preset::Default, Preset::Paper, Preset::Smoke] {
            ExperimentConfig::preset(p).validate().unwrap();
        }
        assert!(Preset::parse("fast").is_err());
    }
}
