//! Bringing a clip to a fixed length: tile (repeat) when it is too short, then crop.
//!
//! The paper (§4.1) "randomly crops or tiles" every clip to 10 s. Here that is one operation:
//! conceptually the clip is repeated `n = ceil(target_len / len)` times (once when it is already
//! long enough), giving `n * len >= target_len` samples, and a window of `target_len` samples is
//! cut from it at `offset`:
//!
//! - [`Crop::Start`] (evaluation): `offset = 0`, fully deterministic;
//! - [`Crop::Random`] (training): `offset` uniform in `0..=n * len - target_len`, drawn from a
//!   ChaCha8 generator seeded with `seed`, so the same seed always gives the same crop.
//!
//! Output sample `j` is `clip[(offset + j) % len]`; nothing is ever allocated for the tiled
//! signal. A clip with zero samples cannot be tiled and yields [`Error::EmptyClip`].

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// Where the fixed-length window starts in the (tiled) clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Crop {
    /// From the first sample (evaluation).
    Start,
    /// At a uniformly random offset drawn from a ChaCha8 generator seeded with `seed` (training;
    /// derive the seed from e.g. `(epoch, sample index)` to make runs reproducible).
    Random {
        /// Seed of the generator.
        seed: u64,
    },
}

/// Offset of the crop window in the tiled clip: `0` for [`Crop::Start`], uniform in
/// `0..=ceil(target_len / len) * len - target_len` for [`Crop::Random`].
///
/// Errors with [`Error::EmptyClip`] when `len == 0`.
pub fn crop_offset(len: usize, target_len: usize, crop: Crop) -> Result<usize> {
    if len == 0 {
        return Err(Error::EmptyClip {
            path: None,
            target_len,
        });
    }
    match crop {
        Crop::Start => Ok(0),
        Crop::Random { seed } => {
            let tiled_len = target_len.div_ceil(len).max(1) * len;
            let max_offset = tiled_len - target_len;
            Ok(ChaCha8Rng::seed_from_u64(seed).random_range(0..=max_offset))
        }
    }
}

/// Tiles then crops `clip` to exactly `target_len` samples (see the module docs).
pub fn crop_or_tile(clip: &[f32], target_len: usize, crop: Crop) -> Result<Vec<f32>> {
    let mut out = vec![0.0; target_len];
    crop_or_tile_into(clip, &mut out, crop)?;
    Ok(out)
}

/// Like [`crop_or_tile`], writing `out.len()` samples into `out`.
pub fn crop_or_tile_into(clip: &[f32], out: &mut [f32], crop: Crop) -> Result<()> {
    let len = clip.len();
    let mut offset = crop_offset(len, out.len(), crop)? % len;
    let mut written = 0;
    while written < out.len() {
        let n = (len - offset).min(out.len() - written);
        out[written..written + n].copy_from_slice(&clip[offset..offset + n]);
        written += n;
        offset = 0;
    }
    Ok(())
}
