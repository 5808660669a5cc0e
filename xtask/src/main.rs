//! `cargo xtask`: the project's front door. `main` only dispatches; each command lives in its
//! own module, and its help text is the documentation users read (`cargo xtask help <command>`).

use clap::{Parser, Subcommand};

mod bench;
mod build_cuda;
mod ci;
mod device;
mod io;
mod pull_teachers;
mod reproduce;
mod run_encoder;
mod sample_frames;
mod spectrogram;

/// Uni-Modal Teacher in Rust: reproduce the paper, inspect the front ends, run the encoders.
#[derive(Parser)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The paper's audio front end on one WAV file: resample to 16 kHz, crop/tile to 10 s,
    /// STFT magnitude; writes tensor `spectrogram` [n_fft/2+1, frames] to a safetensors file.
    Spectrogram(spectrogram::Args),
    /// Sample frames from a clip directory, decode, resize and normalise; writes tensor
    /// `frames` [T, 3, size, size] to a safetensors file.
    SampleFrames(sample_frames::Args),
    /// Run a ResNet encoder in eval mode on tensor `input` [B, C, H, W] of a safetensors file.
    RunEncoder(run_encoder::Args),
    /// Reproduce the paper's Table 2 (fused top-1 of all nine methods, mean ± std over seeds).
    ReproduceTable2(reproduce::Args),
    /// Reproduce the paper's Table 1 (linear evaluation of each encoder) and Figure 2.
    ReproduceTable1(reproduce::Args),
    /// Fetch a set of teacher checkpoints from the Hugging Face Hub into the shared cache.
    PullTeachers(pull_teachers::Args),
    /// Benchmarks (ours and, where python3 can import torch, PyTorch in the same run).
    Bench(bench::Args),
    /// The one check: fmt, clippy -D warnings, tests, docs (cheapest first).
    Ci(ci::Args),
    /// Build the CUDA runner and device tests on a machine without a GPU (installs the CUDA
    /// compiler from PyPI wheels into target/); binaries land in target/cuda/dist/.
    BuildCuda(build_cuda::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Spectrogram(args) => spectrogram::run(args),
        Command::SampleFrames(args) => sample_frames::run(args),
        Command::RunEncoder(args) => run_encoder::run(args),
        Command::ReproduceTable2(args) => reproduce::run_table2(args),
        Command::ReproduceTable1(args) => reproduce::run_table1(args),
        Command::PullTeachers(args) => pull_teachers::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Ci(args) => ci::run(args),
        Command::BuildCuda(args) => build_cuda::run_build(args),
    }
}
