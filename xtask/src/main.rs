//! `cargo xtask`: the project's front door. `main` only dispatches; each command lives in its
//! own module, and its help text is the documentation users read (`cargo xtask help <command>`).

use clap::{Parser, Subcommand};

mod bench;
mod build_cuda;
mod ci;
mod device;
mod export_teachers;
mod io;
mod model_summary;
mod prepare_avmnist;
mod prepare_nyuv2;
mod prepare_vggsound;
mod pull_teachers;
mod reproduce;
mod reproduce_seg;
mod run_encoder;
mod sample_frames;
mod spectrogram;
mod teachers;

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
    /// Reproduce the paper's Table 3 (ESANet vs UMT mIoU, RGB-D segmentation, from scratch)
    /// on the embedded synthetic RGB-D scenes.
    ReproduceTable3(reproduce_seg::Args),
    /// Reproduce the paper's Table 4 (frozen depth encoder of the uni-depth network vs of the
    /// RGB-D ESANet, new decoder trained on depth) on the synthetic RGB-D scenes.
    ReproduceTable4(reproduce_seg::Args),
    /// Build AV-MNIST from MNIST + FSDD (pairing by digit, PCA-weakened images, spectrograms)
    /// into a prepared folder for `reproduce-table2 --dataset avmnist --data-dir DIR`.
    PrepareAvmnist(prepare_avmnist::Args),
    /// Write NYUv2 (40 classes) in ESANet's layout from the official nyu_depth_v2_labeled.mat
    /// (HDF5), splits.mat and classMapping40.mat (through $UMT_PYTHON with h5py), then verify
    /// every sample loads.
    PrepareNyuv2(prepare_nyuv2::Args),
    /// Prepare VGGSound from downloaded clips with ffmpeg (256x256 JPEG frames, 16 kHz float
    /// WAV of 10 s, index, class list, failure report; parallel and resumable).
    PrepareVggsound(prepare_vggsound::Args),
    /// Fetch a set of teacher checkpoints from the Hugging Face Hub into the shared cache.
    PullTeachers(pull_teachers::Args),
    /// Write a run's teachers as a folder ready to upload to the Hugging Face Hub
    /// (self-describing safetensors, config.json, model card README.md).
    ExportTeachers(export_teachers::Args),
    /// Benchmarks (ours and, where python3 can import torch, PyTorch in the same run).
    Bench(bench::Args),
    /// The one check: fmt, clippy -D warnings, tests, docs (cheapest first).
    Ci(ci::Args),
    /// torchinfo-like table of a model (resnet18/34, esanet, esanet-rgb, esanet-depth):
    /// output shape and parameters per module, per-part breakdown and total.
    ModelSummary(model_summary::Args),
    /// Build the CUDA runner and device tests on a machine without a GPU (installs the CUDA
    /// compiler from PyPI wheels into target/); binaries land in target/cuda/dist/.
    BuildCuda(build_cuda::Args),
}

/// candle's CPU element-wise ops (the additions that accumulate gradients in its backward pass,
/// above all) run on candle's own thread pool, whose workers spin-wait, separate from the rayon
/// pool that umt-nn's kernels (convolution, BatchNorm, pools, optimizer) use. With both pools
/// sized to the cores, their spinning threads compete: on this project's 2-core VM a training
/// step of the CPU preset's shape took 16–84 % longer and burned 25–61 % more CPU time than with
/// candle's pool reduced to the calling thread; at the paper's audio shape (large tensors) the
/// difference was within noise (docs/performance.md, "Threads"). Unless the user set
/// `CANDLE_NUM_THREADS`, candle's pool therefore gets no extra worker.
fn one_candle_thread() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Called first thing in `main`, before any other thread exists.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

fn main() -> anyhow::Result<()> {
    one_candle_thread();
    // Freed buffers stay in the process for the next training step instead of being
    // page-faulted in again (docs/performance.md, "Allocator").
    umt_nn::malloc::retain_freed_memory();
    match Cli::parse().command {
        Command::Spectrogram(args) => spectrogram::run(args),
        Command::SampleFrames(args) => sample_frames::run(args),
        Command::RunEncoder(args) => run_encoder::run(args),
        Command::ReproduceTable2(args) => reproduce::run_table2(args),
        Command::ReproduceTable1(args) => reproduce::run_table1(args),
        Command::ReproduceTable3(args) => reproduce_seg::run_table3(args),
        Command::ReproduceTable4(args) => reproduce_seg::run_table4(args),
        Command::PrepareAvmnist(args) => prepare_avmnist::run(args),
        Command::PrepareNyuv2(args) => prepare_nyuv2::run(args),
        Command::PrepareVggsound(args) => prepare_vggsound::run(args),
        Command::PullTeachers(args) => pull_teachers::run(args),
        Command::ExportTeachers(args) => export_teachers::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Ci(args) => ci::run(args),
        Command::ModelSummary(args) => model_summary::run(args),
        Command::BuildCuda(args) => build_cuda::run_build(args),
    }
}
