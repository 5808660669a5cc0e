//! `cargo xtask bench stft`: throughput of the STFT magnitude front end, in seconds of audio
//! turned into spectrograms per second of wall time, on a batch of ten-second 16 kHz noise
//! clips (fixed seed), median of several runs, all cores; then `torch.stft` on the CPU with the
//! same thread count in the same run (through `$UMT_PYTHON`, default `python3`), and the ratio.

use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use umt_audio::{Stft, StftConfig};

/// Options of the STFT benchmark.
#[derive(clap::Args)]
pub struct Args {
    /// Clips per batch.
    #[arg(long, default_value_t = 64)]
    clips: usize,
    /// Seconds per clip (at 16 kHz).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Timed runs (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Threads for both sides (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

const SAMPLE_RATE_HZ: f64 = 16_000.0;

/// Runs the benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.clips > 0 && args.runs > 0,
        "--clips and --runs must be > 0"
    );
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("building the thread pool")?;
    let len = (args.seconds * SAMPLE_RATE_HZ).round() as usize;
    let audio_seconds = args.clips as f64 * len as f64 / SAMPLE_RATE_HZ;

    // Uniform noise in [-1, 1) from a fixed-seed splitmix64 (no rand dependency in xtask).
    let mut state = 0x5EED_u64;
    let clips: Vec<Vec<f32>> = (0..args.clips)
        .map(|_| (0..len).map(|_| noise(&mut state)).collect())
        .collect();
    let refs: Vec<&[f32]> = clips.iter().map(Vec::as_slice).collect();
    let stft = Stft::new(StftConfig::paper())?;
    let (n_freqs, n_frames) = (stft.n_freqs(), stft.num_frames(len)?);
    let mut out = vec![0.0f32; args.clips * n_freqs * n_frames];
    println!(
        "stft: {} clips x {} s at 16 kHz -> [{}, {n_freqs}, {n_frames}] (n_fft 1024, hop 512, periodic Hann, center reflect), {threads} threads, median of {} runs",
        args.clips, args.seconds, args.clips, args.runs
    );
    let mut times = Vec::with_capacity(args.runs);
    for run in 0..=args.runs {
        let start = Instant::now();
        pool.install(|| stft.magnitude_batch_into(&refs, &mut out))?;
        if run > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    let ours = median(&mut times);
    let ours_rate = audio_seconds / ours;
    println!("ours (umt-audio, realfft + rayon): {ours_rate:>10.0} s of audio per s  (median batch {:.1} ms)", ours * 1e3);

    match torch_median_seconds(args.clips, len, args.runs, threads) {
        Ok(torch) => {
            let torch_rate = audio_seconds / torch;
            println!("torch.stft (CPU, {threads} threads): {torch_rate:>10.0} s of audio per s  (median batch {:.1} ms)", torch * 1e3);
            println!("ratio ours / torch: {:.2}x", ours_rate / torch_rate);
        }
        Err(e) => println!("torch: not measured ({e:#}); only our number is reported"),
    }
    Ok(())
}

fn noise(state: &mut u64) -> f32 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

const TORCH_SCRIPT: &str = r#"
import sys, time
try:
    import torch
except Exception as e:
    print(f"NO_TORCH {type(e).__name__}: {e}")
    sys.exit(0)
clips, length, runs, threads = map(int, sys.argv[1:5])
torch.set_num_threads(threads)
g = torch.Generator().manual_seed(0)
x = torch.rand(clips, length, generator=g) * 2 - 1
window = torch.hann_window(1024, periodic=True)
def once():
    return torch.stft(x, n_fft=1024, hop_length=512, win_length=1024, window=window,
                      center=True, pad_mode="reflect", return_complex=True).abs()
with torch.inference_mode():
    once()
    times = []
    for _ in range(runs):
        t = time.perf_counter(); y = once(); times.append(time.perf_counter() - t)
times.sort()
print(f"MEDIAN_S {times[len(times) // 2]} SHAPE {tuple(y.shape)} TORCH {torch.__version__}")
"#;

fn torch_median_seconds(
    clips: usize,
    len: usize,
    runs: usize,
    threads: usize,
) -> anyhow::Result<f64> {
    let python = std::env::var("UMT_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(&python)
        .arg("-c")
        .arg(TORCH_SCRIPT)
        .args([clips, len, runs, threads].map(|v| v.to_string()))
        .output()
        .with_context(|| format!("could not start `{python}` (set UMT_PYTHON)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if let Some(line) = stdout.lines().find(|l| l.starts_with("NO_TORCH")) {
        anyhow::bail!(
            "`{python}` cannot import torch: {}",
            line.trim_start_matches("NO_TORCH ")
        );
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("MEDIAN_S"))
        .with_context(|| {
            format!(
                "`{python}` printed no timing; stderr: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })?;
    println!(
        "  ({})",
        line.split_once(' ').map_or(line, |(_, rest)| rest)
    );
    line.split_whitespace()
        .nth(1)
        .context("malformed timing line")?
        .parse()
        .context("malformed timing value")
}
