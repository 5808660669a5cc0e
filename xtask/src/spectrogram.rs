//! `cargo xtask spectrogram IN.wav OUT.safetensors`: the paper's audio front end (§4.1) on one
//! file. Decodes the WAV (mixing to mono), resamples to `--sample-rate` (16 kHz), tiles/crops
//! to `--seconds` (10 s) from the start, and writes the STFT magnitude as tensor `spectrogram`
//! (f32, shape `[n_fft/2 + 1, frames]`, row-major `[freq][frame]`) with the full front-end
//! config as JSON under metadata key `config` and the input's file name under `source`.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use safetensors::{tensor::TensorView, Dtype};
use umt_audio::{Crop, FrontEnd, FrontEndConfig, LogCompression, StftConfig};

/// Arguments of `cargo xtask spectrogram`.
#[derive(clap::Args)]
pub struct Args {
    /// Input WAV file (8/16/24/32-bit integer or float PCM, any rate, any channel count).
    input: PathBuf,
    /// Output safetensors file (written atomically: temporary file, then rename).
    output: PathBuf,
    /// Clip duration in seconds after tiling/cropping from the start (paper: 10).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// FFT size (paper: 1024).
    #[arg(long, default_value_t = 1024)]
    n_fft: usize,
    /// Frame shift in samples (paper: 512 = 32 ms at 16 kHz).
    #[arg(long, default_value_t = 512)]
    hop: usize,
    /// Window length in samples, <= n_fft (paper: 1024 = 64 ms at 16 kHz).
    #[arg(long, default_value_t = 1024)]
    win_length: usize,
    /// Target sample rate in Hz (paper: 16000).
    #[arg(long, default_value_t = 16_000)]
    sample_rate: u32,
    /// Apply ln(1e-6 + magnitude) (off in the paper).
    #[arg(long)]
    log: bool,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = FrontEndConfig {
        sample_rate_hz: args.sample_rate,
        clip_seconds: args.seconds,
        stft: StftConfig {
            n_fft: args.n_fft,
            win_length: args.win_length,
            hop_length: args.hop,
            log: args.log.then(LogCompression::default),
            ..StftConfig::paper()
        },
    };
    let front_end = FrontEnd::new(config.clone()).context("invalid front-end options")?;
    let audio = umt_audio::read_wav(&args.input)
        .with_context(|| format!("cannot decode {}", args.input.display()))?;
    let spec = front_end
        .process_audio(&audio, Crop::Start)
        .with_context(|| format!("cannot compute the spectrogram of {}", args.input.display()))?;
    let (n_freqs, n_frames) = spec.shape();
    let bytes: Vec<u8> = spec
        .as_slice()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let view = TensorView::new(Dtype::F32, vec![n_freqs, n_frames], &bytes)
        .context("building the safetensors view")?;
    let source = args.input.file_name().map_or_else(
        || args.input.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let metadata = HashMap::from([
        ("config".to_owned(), serde_json::to_string(&config)?),
        ("source".to_owned(), source.clone()),
    ]);
    crate::io::write_atomically(&args.output, |tmp| {
        safetensors::serialize_to_file([("spectrogram", view)], Some(metadata), tmp)
            .map_err(anyhow::Error::from)
    })?;
    let max = spec
        .as_slice()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    println!(
        "{source}: {:.2} s at {} Hz, {} ch -> {} Hz, {} s -> spectrogram [{n_freqs}, {n_frames}] (max {max:.3}{}) -> {}",
        audio.duration_seconds(),
        audio.sample_rate_hz,
        audio.source_channels,
        config.sample_rate_hz,
        config.clip_seconds,
        if args.log { ", log" } else { "" },
        args.output.display()
    );
    Ok(())
}
