//! `cargo xtask sample-frames CLIP_DIR OUT.safetensors`: the paper's video front end (§4.1) on
//! one clip directory. Lists the frames (JPEG/PNG, natural order), samples `--frames` of them
//! uniformly (segment centres, or with `--train` a seeded random point of each segment),
//! decodes, resizes to `--size`² (Pillow's antialiased bilinear), optionally crops `--crop`²
//! (random with `--train`, else centred), normalises with ImageNet mean/std and writes tensor
//! `frames` (f32, `[T, 3, H, W]`, row-major) with metadata `indices` (JSON array of frame
//! indices), `frame_files` (JSON array of the chosen file names, one per output frame),
//! `sampling` (`eval` or `train`), `seed`, `clip_dir` and `config` (the full `VideoConfig` as
//! JSON, normalisation constants included).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use safetensors::{tensor::TensorView, Dtype};
use umt_video::{CropConfig, Sampling, VideoConfig};

/// Arguments of `cargo xtask sample-frames`.
#[derive(clap::Args)]
pub struct Args {
    /// Clip directory of frame images (.jpg/.jpeg/.png, any case), ordered by the numbers in
    /// their names (frame_2 before frame_10).
    clip_dir: PathBuf,
    /// Output safetensors file (written atomically: temporary file, then rename).
    output: PathBuf,
    /// Frames sampled from the clip, T (paper §4.1: 32). Short clips repeat frames in order.
    #[arg(long, default_value_t = 32)]
    frames: usize,
    /// Side of the square each frame is resized to (default 224, the ResNet input; the paper
    /// stores 256 and a training pipeline crops 224 from it: `--size 256 --crop 224`).
    #[arg(long, default_value_t = 224)]
    size: u32,
    /// Side of a square crop taken after resizing (random with --train, centred otherwise).
    #[arg(long)]
    crop: Option<u32>,
    /// Training sampling: a seeded random frame within each segment (and random crop).
    #[arg(long)]
    train: bool,
    /// Seed of the clip's ChaCha8 RNG (training only).
    #[arg(long, default_value_t = 0, requires = "train")]
    seed: u64,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = VideoConfig {
        num_frames: args.frames,
        resize_height: args.size,
        resize_width: args.size,
        crop: args.crop.map(|side| CropConfig {
            height: side,
            width: side,
        }),
        ..VideoConfig::default()
    };
    config.validate().context("invalid sampling options")?;
    let sampling = if args.train {
        Sampling::Train { seed: args.seed }
    } else {
        Sampling::Eval
    };
    let dir = &args.clip_dir;
    let paths = umt_video::list_frames(dir)
        .with_context(|| format!("cannot list the frames of {}", dir.display()))?;
    let frames = umt_video::load_frames(&paths, &config, sampling)
        .with_context(|| format!("cannot load clip {}", dir.display()))?;
    let names: Vec<String> = frames
        .indices
        .iter()
        .map(|&i| file_name(&paths[i]))
        .collect();

    let bytes: Vec<u8> = frames.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, frames.shape.to_vec(), &bytes)
        .context("building the safetensors view")?;
    let metadata = HashMap::from([
        ("config".to_owned(), serde_json::to_string(&config)?),
        (
            "indices".to_owned(),
            serde_json::to_string(&frames.indices)?,
        ),
        ("frame_files".to_owned(), serde_json::to_string(&names)?),
        (
            "sampling".to_owned(),
            if args.train { "train" } else { "eval" }.to_owned(),
        ),
        ("seed".to_owned(), args.seed.to_string()),
        ("clip_dir".to_owned(), dir.display().to_string()),
    ]);
    crate::io::write_atomically(&args.output, |tmp| {
        safetensors::serialize_to_file([("frames", view)], Some(metadata), tmp)
            .map_err(anyhow::Error::from)
    })?;
    let [t, c, h, w] = frames.shape;
    println!(
        "{}: {} frames, {} sampling{} -> indices {:?} -> frames [{t}, {c}, {h}, {w}] -> {}",
        dir.display(),
        paths.len(),
        if args.train { "train" } else { "eval" },
        if args.train {
            format!(" (seed {})", args.seed)
        } else {
            String::new()
        },
        frames.indices,
        args.output.display()
    );
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
