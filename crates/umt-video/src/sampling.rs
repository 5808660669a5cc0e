//! Which frames of a clip to use: uniform segment sampling (TSN-style, paper §4.1).
//!
//! A clip of `L` frames is cut into `N` equal segments `[i·L/N, (i+1)·L/N)`, one sampled frame
//! per segment:
//!
//! * evaluation: the middle of each segment, `index_i = floor((i + 0.5) · L / N)`, computed
//!   exactly in integers as `((2i + 1) · L) div (2N)`;
//! * training: a random point of each segment, `index_i = floor((i + u_i) · L / N)`, with
//!   `u_i = r_i / 2^32` and `r_i` the `i`-th `next_u32()` of a `ChaCha8Rng` seeded with the
//!   clip's seed (`SeedableRng::seed_from_u64`); computed exactly in integers as
//!   `((i · 2^32 + r_i) · L) div (N · 2^32)`, so the indices are identical on every platform.
//!
//! Properties (checked by property tests): `N` indices, sorted (non-decreasing), each in
//! `[0, L)`; index `i` is a frame overlapping segment `i`. In evaluation with `L ≥ N` the
//! indices are distinct and symmetric about the clip's centre (`index_i + index_{N-1-i}` is
//! `L - 1` or `L`). With `L < N` frames repeat in order (`0, 0, 1, 1, 2, …`); evaluation then
//! uses every frame at least once, training may skip one. In training with `L ≥ N` but `L` not
//! a multiple of `N`, two neighbouring segments can both pick the frame that straddles their
//! shared boundary (the formula's own behaviour; it never happens when `N` divides `L`).

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, VideoError};

/// Training or evaluation sampling. Training takes the clip's seed explicitly: derive one per
/// clip and epoch with [`clip_seed`] so that epochs see different frames but runs repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    /// Deterministic centre-of-segment frames; centre crop.
    Eval,
    /// Seeded random frame within each segment; random crop (same offset for the whole clip).
    Train {
        /// Seed of the clip's `ChaCha8Rng`.
        seed: u64,
    },
}

impl Sampling {
    /// `true` for [`Sampling::Train`].
    pub fn is_train(&self) -> bool {
        matches!(self, Sampling::Train { .. })
    }
}

/// Mixes a run seed, an epoch and a clip index into one clip seed (SplitMix64 finaliser over
/// each part), so that neighbouring clips and epochs get unrelated random streams.
pub fn clip_seed(run_seed: u64, epoch: u64, clip_index: u64) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    mix(mix(mix(run_seed) ^ epoch) ^ clip_index)
}

/// What the sampler chose for one clip: frame indices and, in training, the RNG state left for
/// the crop offset.
pub(crate) struct Plan {
    pub(crate) indices: Vec<usize>,
    pub(crate) rng: Option<ChaCha8Rng>,
}

fn check_counts(num_available: usize, num_frames: usize) -> Result<()> {
    if num_frames == 0 {
        return Err(VideoError::InvalidConfig {
            field: "num_frames",
            expected: "at least 1".into(),
            found: "0".into(),
        });
    }
    if num_available == 0 {
        return Err(VideoError::InvalidConfig {
            field: "num_available",
            expected: "a clip of at least 1 frame".into(),
            found: "0".into(),
        });
    }
    Ok(())
}

pub(crate) fn plan(num_available: usize, num_frames: usize, sampling: Sampling) -> Result<Plan> {
    check_counts(num_available, num_frames)?;
    let l = num_available as u128;
    let n = num_frames as u128;
    Ok(match sampling {
        Sampling::Eval => Plan {
            indices: (0..n)
                .map(|i| ((2 * i + 1) * l / (2 * n)) as usize)
                .collect(),
            rng: None,
        },
        Sampling::Train { seed } => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let indices = (0..n)
                .map(|i| {
                    let r = u128::from(rng.next_u32());
                    (((i << 32) + r) * l / (n << 32)) as usize
                })
                .collect();
            Plan {
                indices,
                rng: Some(rng),
            }
        }
    })
}

/// The `num_frames` frame indices to take from a clip of `num_available` frames (rule in the
/// [module docs](self)). Errors if either count is zero.
///
/// ```
/// use umt_video::{sample_indices, Sampling};
/// assert_eq!(sample_indices(10, 5, Sampling::Eval)?, vec![1, 3, 5, 7, 9]);
/// assert_eq!(sample_indices(3, 6, Sampling::Eval)?, vec![0, 0, 1, 1, 2, 2]);
/// let a = sample_indices(100, 8, Sampling::Train { seed: 7 })?;
/// assert_eq!(a, sample_indices(100, 8, Sampling::Train { seed: 7 })?);
/// # Ok::<(), umt_video::VideoError>(())
/// ```
pub fn sample_indices(
    num_available: usize,
    num_frames: usize,
    sampling: Sampling,
) -> Result<Vec<usize>> {
    Ok(plan(num_available, num_frames, sampling)?.indices)
}

/// Offset `0..=max` drawn from the clip's RNG (`(r · (max + 1)) >> 32` for a `next_u32()` `r`;
/// bias below `(max + 1) / 2^32`), or without an RNG the centred offset as torchvision's
/// `CenterCrop` computes it, `int(round(max / 2))` (Python rounds halves to even).
pub(crate) fn crop_offset(rng: Option<&mut ChaCha8Rng>, max: u32) -> u32 {
    match rng {
        Some(rng) => ((u64::from(rng.next_u32()) * (u64::from(max) + 1)) >> 32) as u32,
        None => {
            let half = max / 2;
            if max % 2 == 1 && half % 2 == 1 {
                half + 1
            } else {
                half
            }
        }
    }
}
