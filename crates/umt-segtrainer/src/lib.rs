//! Training and evaluation for the RGB-D segmentation experiment of Uni-Modal Teacher (Du et
//! al., §4.2, Tables 3 and 4) on ESANet ([`umt_esanet`]) and the embedded synthetic RGB-D
//! scenes or NYUv2 ([`umt_data::rgbd`]).
//!
//! - [`SegExperimentConfig`]: model, data, optimiser, UMT and probe settings; presets
//!   `smoke`, `cpu`, `paper` (on NYUv2: [`SegExperimentConfig::preset_nyuv2`]); unknown keys
//!   rejected.
//! - [`data`]: the data sources, the validation carve of tuning mode
//!   ([`RunOptions::validation_fraction`]), sample preparation and batch prefetching.
//! - [`pretrained`]: ImageNet encoder weights ([`RunOptions::imagenet_weights`]).
//! - [`SegRunner`]: resumable stages (`seed-{s}/esanet-{rgbd,rgb,depth}`, `seed-{s}/umt-rgbd`,
//!   `seed-{s}/probe-{uni-depth,rgbd-depth}`), each `model.safetensors` + `result.json`
//!   written atomically; a changed config is refused.
//! - [`umt`]: the frozen teachers, the feature predictors and the UMT loss.
//! - [`tables`]: Table 3 (ESANet vs UMT) and Table 4 (frozen depth encoders), JSON + Markdown.
//!
//! ```
//! use umt_segtrainer::SegExperimentConfig;
//!
//! let cfg = SegExperimentConfig::preset("smoke")?;
//! assert_eq!(cfg.model.height % 32, 0);
//! assert!(SegExperimentConfig::preset("huge").is_err());
//! # Ok::<(), umt_segtrainer::Error>(())
//! ```

pub mod config;
pub mod data;
pub mod error;
pub mod pretrained;
pub mod run;
pub mod tables;
pub mod umt;

pub use config::{
    ClassWeighting, DataConfig, FrozenBn, OptimizerConfig, ProbeConfig, SegExperimentConfig,
    TrainConfig, UmtConfig,
};
pub use error::{Error, Result};
pub use pretrained::PretrainedEncoder;
pub use run::{EpochLog, Init, ProbeSource, RunOptions, SegRunner, StageResult};
pub use tables::{table3, table4, SegTable, Summary, TableRow};
pub use umt::{FeaturePredictor, Predictors, UmtDistiller, UmtLoss};
