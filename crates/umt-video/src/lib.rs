//! Video front end of Uni-Modal Teacher (Du et al., §4.1): a clip is a directory of frames;
//! `T` frames are sampled uniformly, decoded, resized, optionally cropped and normalised into
//! a `(T, 3, H, W)` `f32` buffer. No tensor library: hand the buffer to candle, tch or ndarray.
//!
//! # Pipeline
//!
//! 1. **List** ([`list_frames`]): files ending in `.jpg`, `.jpeg` or `.png` (any case), in
//!    natural order of their names (`frame_2 < frame_10`; ties and names without numbers:
//!    see [`natural_cmp`]).
//! 2. **Sample** ([`sample_indices`]): the clip's `L` frames are cut into `N` equal segments;
//!    evaluation takes the middle of each, `floor((i + 0.5)·L/N)`, training a seeded random
//!    point of each, `floor((i + u_i)·L/N)` with `u_i ~ U[0, 1)` from a `ChaCha8Rng` seeded
//!    per clip ([`clip_seed`]). Clips shorter than `N` repeat frames in order. Exact rule and
//!    guarantees: [`sampling`].
//! 3. **Decode** ([`decode_rgb8_file`]) the chosen files in parallel with rayon, straight to
//!    RGB8 (grayscale replicated, alpha dropped).
//! 4. **Resize** ([`resize_rgb8`]) to `resize_height × resize_width` with Pillow's
//!    antialiased bilinear filter: the same numbers as torchvision's `Resize` on PIL images
//!    (golden-tested against Pillow to within one grey level).
//! 5. **Crop** (optional, [`CropConfig`]): one offset per clip, random in training and
//!    centred in evaluation. The paper stores frames at 256×256; a training pipeline
//!    typically random-crops 224×224 from them ([`VideoConfig::paper_256_crop_224`]). The
//!    default config instead resizes straight to 224×224 with no crop.
//! 6. **Normalise**: `(x / 255 - mean) / std` per channel in `f32` (ImageNet statistics by
//!    default), written channel-first. [`normalize_rgb8`] and [`frames_from_rgb8`] apply the
//!    same arithmetic to in-memory frames (synthetic data).
//!
//! # Example
//!
//! ```
//! use umt_video::{load_clip, Sampling, VideoConfig};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("umt_video_doc_{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! for i in 0..5u8 {
//!     // Five 40×30 frames, each a flat grey of level 50·i.
//!     let rgb = vec![50 * i; 40 * 30 * 3];
//!     image::save_buffer(dir.join(format!("frame_{i}.png")), &rgb, 40, 30, image::ColorType::Rgb8)?;
//! }
//! let cfg = VideoConfig { num_frames: 3, resize_height: 16, resize_width: 16, ..VideoConfig::default() };
//! let clip = load_clip(&dir, &cfg, Sampling::Eval)?;
//! assert_eq!(clip.shape, [3, 3, 16, 16]); // (T, 3, H, W)
//! assert_eq!(clip.indices, vec![0, 2, 4]); // floor((i + 0.5) * 5 / 3)
//! // Frame 0 is black: (0 - 0.485) / 0.229 in the red plane.
//! assert!((clip.data[0] - (-0.485 / 0.229)).abs() < 1e-6);
//! std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! Every failure is a [`VideoError`] naming the directory, file or config field: a missing
//! directory, a directory without frames, an unreadable or corrupt frame, a zero frame count
//! or size. Nothing panics on user data.

mod clip;
mod config;
mod error;
mod frame;
mod listing;
pub mod sampling;

pub use clip::{frames_from_rgb8, load_clip, load_frames, Frames};
pub use config::{CropConfig, Normalization, VideoConfig};
pub use error::{Result, VideoError};
pub use fast_image_resize::Resizer;
pub use frame::{
    decode_rgb8, decode_rgb8_file, normalize_rgb8, normalize_rgb8_into,
    normalize_unit_chw_in_place, resize_rgb8, Rgb8Image,
};
pub use listing::{is_frame_file, list_frames, natural_cmp, FRAME_EXTENSIONS};
pub use sampling::{clip_seed, sample_indices, Sampling};
