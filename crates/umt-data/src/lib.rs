//! Datasets for Uni-Modal Teacher: the in-memory audio-visual dataset type and the embedded
//! synthetic multi-view dataset of the paper's Hypothesis 1 (§3.1), generated from a seed with
//! no download, through the real front ends (`umt-audio`'s STFT, ImageNet normalisation of
//! frames). Real data: [`avmnist`] (AV-MNIST from MNIST + FSDD, read with [`idx`]),
//! [`vggsound`] (the layout `cargo xtask prepare-vggsound` writes, streamed by a prefetching
//! loader) and [`rgbd`] (NYUv2 in ESANet's layout, its augmentation, and a synthetic RGB-D
//! scene generator for the segmentation experiment).
//!
//! ```
//! use umt_data::synthetic::{generate, SyntheticConfig};
//!
//! let cfg = SyntheticConfig::smoke();
//! let data = generate(&cfg, 0)?;
//! assert_eq!(data.train.len(), cfg.train_samples);
//! assert_eq!(data.train.audio_shape(), [1, 32, 17]); // (1, n_fft/2, 1 + clip/hop)
//! assert_eq!(data.train.video_shape(), [2, 3, 16, 16]); // (T, 3, H, W)
//! let batch = data.train.gather(&[0, 1, 2])?;
//! assert_eq!(batch.labels.len(), 3);
//! # Ok::<(), umt_data::Error>(())
//! ```

pub mod avmnist;
pub mod dataset;
mod error;
pub mod front_end;
pub mod idx;
pub mod rgbd;
pub mod synthetic;
pub mod vggsound;

pub use dataset::{AvDataset, Batch, Views};
pub use error::{Error, Result};
