//! The Uni-Modal Teacher trainer (Du et al., §2.2 and §4.1): late-fusion models, all nine
//! methods of Table 2, the linear evaluation of Table 1 and Figure 2, in resumable runs whose
//! stages (teachers, methods, probes) are checkpointed as safetensors. Every stage reads its
//! mini-batches through [`source::DataSource`]: in memory (synthetic data, AV-MNIST) or
//! streamed from a prepared VGGSound folder by prefetching worker threads.
//!
//! ```no_run
//! use candle_core::Device;
//! use umt_trainer::{reproduce_table2, ExperimentConfig, Method, Preset, Progress, RunOptions};
//!
//! let cfg = ExperimentConfig::preset(Preset::Smoke);
//! let opts = RunOptions {
//!     out_dir: "results-smoke".into(),
//!     seeds: vec![0, 1],
//!     methods: Method::ALL.to_vec(),
//!     device: Device::Cpu,
//!     progress: Progress::Auto,
//!     validation_fraction: None, // Some(0.2): tune on a validation split instead of test
//! };
//! let table = reproduce_table2(cfg, opts, "synthetic")?;
//! println!("{}", table.to_markdown());
//! # Ok::<(), umt_trainer::Error>(())
//! ```
//!
//! The building blocks compile and run on their own:
//!
//! ```
//! use umt_trainer::{ExperimentConfig, Method, Preset};
//! assert_eq!(Method::parse("umt")?.name(), "Uni-Modal Teacher");
//! let cfg = ExperimentConfig::preset(Preset::Default);
//! assert_eq!(cfg.train.lambda, 50.0); // paper §4.1
//! let bad = ExperimentConfig::preset(Preset::Smoke)
//!     .with_overrides(&serde_json::json!({"train": {"lambda": -1.0}}));
//! assert!(bad.is_err());
//! # Ok::<(), umt_trainer::Error>(())
//! ```

pub mod config;
mod error;
mod figure;
pub mod method;
pub mod model;
pub mod progress;
pub mod publish;
pub mod report;
pub mod run;
pub mod source;
pub mod train;

pub use config::{ExperimentConfig, Preset, TrainConfig};
pub use error::{Error, Result};
pub use method::Method;
pub use model::{EncoderConfig, FusionModel, Modality, UniModel};
pub use progress::Progress;
pub use report::{reproduce_table1, reproduce_table2, Table1, Table2};
pub use run::{RunOptions, Runner, StageResult};

/// Turns on flush-to-zero / denormals-are-zero for CPU training
/// (`umt_nn::conv::enable_flush_to_zero`: tiny gradients late in training otherwise hit the
/// slow denormal path, 8× slower in the PyTorch prototype). Call once at start-up.
pub fn enable_fast_math() {
    umt_nn::conv::enable_flush_to_zero();
}
