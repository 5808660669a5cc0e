//! The clip pipeline: list → sample → decode (parallel) → resize → crop → normalise.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use fast_image_resize::Resizer;
use rayon::prelude::*;

use crate::config::VideoConfig;
use crate::error::{Result, VideoError};
use crate::frame::{decode_rgb8_file, resize_impl, NormLut, Rgb8Image};
use crate::listing::list_frames;
use crate::sampling::{crop_offset, plan, Sampling};

/// A sampled, normalised clip: `data` is `(T, 3, H, W)` row-major `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct Frames {
    /// `T * 3 * H * W` values, `(T, 3, H, W)` row-major, channels in RGB order.
    pub data: Vec<f32>,
    /// `[T, 3, H, W]`.
    pub shape: [usize; 4],
    /// For each of the `T` output frames, its index in the clip's (naturally sorted) frame list.
    pub indices: Vec<usize>,
}

impl Frames {
    /// Output frame `t` as `(3, H, W)`, or `None` past the end.
    pub fn frame(&self, t: usize) -> Option<&[f32]> {
        let len = self.shape[1] * self.shape[2] * self.shape[3];
        self.data.get(t * len..(t + 1) * len)
    }
}

/// Lists a clip directory ([`list_frames`]) and loads it ([`load_frames`]).
pub fn load_clip(dir: &Path, cfg: &VideoConfig, sampling: Sampling) -> Result<Frames> {
    cfg.validate()?;
    let paths = list_frames(dir)?;
    load_frames(&paths, cfg, sampling)
}

/// Samples `cfg.num_frames` of the clip whose frames, in order, are `paths`, then decodes the
/// chosen files in parallel (rayon; a repeated index is decoded once), resizes, crops and
/// normalises them into a `(T, 3, H, W)` buffer.
pub fn load_frames(paths: &[PathBuf], cfg: &VideoConfig, sampling: Sampling) -> Result<Frames> {
    assemble(paths.len(), cfg, sampling, |i| {
        let path = &paths[i];
        Ok((
            Cow::Owned(decode_rgb8_file(path)?),
            Cow::Borrowed(path.as_path()),
        ))
    })
}

/// The same pipeline on in-memory RGB8 frames (`clip` is the whole clip in order): sampling,
/// resize, crop and normalisation exactly as for decoded files.
pub fn frames_from_rgb8(
    clip: &[Rgb8Image],
    cfg: &VideoConfig,
    sampling: Sampling,
) -> Result<Frames> {
    assemble(clip.len(), cfg, sampling, |i| {
        Ok((
            Cow::Borrowed(&clip[i]),
            Cow::Owned(PathBuf::from(format!("<frame {i}>"))),
        ))
    })
}

type Source<'a> = (Cow<'a, Rgb8Image>, Cow<'a, Path>);

fn assemble<'a, F>(
    num_available: usize,
    cfg: &VideoConfig,
    sampling: Sampling,
    get: F,
) -> Result<Frames>
where
    F: Fn(usize) -> Result<Source<'a>> + Sync,
{
    cfg.validate()?;
    let mut plan = plan(num_available, cfg.num_frames, sampling)?;
    let (out_h, out_w) = cfg.output_hw();
    let (top, left) = match cfg.crop {
        // Drawn after the frame indices, from the same per-clip RNG (training) or centred.
        Some(c) => {
            let top = crop_offset(plan.rng.as_mut(), cfg.resize_height - c.height);
            let left = crop_offset(plan.rng.as_mut(), cfg.resize_width - c.width);
            (top as usize, left as usize)
        }
        None => (0, 0),
    };
    let (out_h, out_w) = (out_h as usize, out_w as usize);
    let frame_len = 3 * out_h * out_w;
    let t = plan.indices.len();
    let mut data = vec![0.0f32; t * frame_len];
    let lut = NormLut::new(&cfg.normalization);

    // Group repeated indices (they are sorted, so repeats are adjacent): one decode per group.
    let mut groups: Vec<(usize, &mut [f32])> = Vec::new();
    let mut rest = data.as_mut_slice();
    let mut k = 0;
    while k < t {
        let index = plan.indices[k];
        let run = plan.indices[k..]
            .iter()
            .take_while(|&&j| j == index)
            .count();
        let (group, tail) = rest.split_at_mut(run * frame_len);
        groups.push((index, group));
        rest = tail;
        k += run;
    }

    groups
        .into_par_iter()
        .try_for_each_init(Resizer::new, |resizer, (index, group)| {
            let (img, path) = get(index)?;
            let resized = resize_impl(resizer, &img, cfg.resize_width, cfg.resize_height, &path)?;
            let (first, repeats) = group.split_at_mut(frame_len);
            lut.write_chw(
                &resized.data,
                resized.width as usize,
                top,
                left,
                out_h,
                out_w,
                first,
            );
            for copy in repeats.chunks_exact_mut(frame_len) {
                copy.copy_from_slice(first);
            }
            Ok::<(), VideoError>(())
        })?;

    Ok(Frames {
        data,
        shape: [t, 3, out_h, out_w],
        indices: plan.indices,
    })
}
