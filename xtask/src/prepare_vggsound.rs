//! `cargo xtask prepare-vggsound --csv vggsound.csv --videos DIR --out DIR`: VGGSound (paper
//! §4.1) from downloaded clips into the layout `reproduce-table2 --dataset vggsound` reads
//! (crate `umt-data-prep`; walkthrough in docs/vggsound.md).

use std::path::PathBuf;

use anyhow::Context;
use umt_data_prep::{prepare, NamePattern, PrepareOptions, Settings, DEFAULT_NAME_PATTERN};

/// Arguments of `cargo xtask prepare-vggsound`.
#[derive(clap::Args)]
pub struct Args {
    /// The official vggsound.csv (youtube_id,start_seconds,label,split; a header line is
    /// accepted; quoted labels may contain commas).
    #[arg(long)]
    csv: PathBuf,
    /// Folder of downloaded clips (any container ffmpeg reads).
    #[arg(long)]
    videos: PathBuf,
    /// Output folder: `clips/ID/{frames/*.jpg,audio.wav}`, `classes.txt`, `index.jsonl`,
    /// `report.jsonl` (failed clips and why), `prepare.json`. A rerun resumes: finished clips are
    /// skipped.
    #[arg(long)]
    out: PathBuf,
    /// Clips prepared at once, each by its own ffmpeg (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// JPEG quality of the frames, 1-100 (default 90, our choice).
    #[arg(long, default_value_t = Settings::default().jpeg_quality)]
    jpeg_quality: u8,
    /// How clip files are named: {youtube_id}, {start} or {start:06} (zero-padded start
    /// seconds); end with `.*` to accept any extension.
    #[arg(long, default_value = DEFAULT_NAME_PATTERN)]
    name_pattern: String,
    /// Frame rate at which frames are stored (default 10, our choice: the paper does not give
    /// one; 100 frames per 10 s clip for its 32 uniformly sampled frames).
    #[arg(long, default_value_t = Settings::default().frames_fps)]
    frames_fps: f64,
    /// No progress bar (logs, CI).
    #[arg(long)]
    quiet: bool,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut opts = PrepareOptions::new(&args.csv, &args.videos, &args.out);
    opts.name_pattern = NamePattern::parse(&args.name_pattern)?;
    if let Some(jobs) = args.jobs {
        opts.jobs = jobs;
    }
    opts.progress = !args.quiet;
    opts.settings.jpeg_quality = args.jpeg_quality;
    opts.settings.frames_fps = args.frames_fps;
    let summary = prepare(&opts).context("prepare-vggsound")?;
    println!("{summary}");
    if summary.failed_total() + summary.not_in_csv > 0 {
        println!(
            "see {} for the clips that failed and why",
            args.out.join(umt_data::vggsound::REPORT_FILE).display()
        );
    }
    Ok(())
}
