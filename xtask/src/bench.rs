//! `cargo xtask bench <what>`: speed measurements. Each benchmark prints ours and, where
//! `python3` can import torch, PyTorch's number measured in the same run, and the ratio.

use clap::Subcommand;

#[path = "bench_stft.rs"]
mod stft;
#[path = "bench_train_step.rs"]
mod train_step;

/// Which benchmark to run.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// STFT magnitude front end (64 ten-second 16 kHz clips), ours vs torch.stft on the CPU.
    Stft(stft::Args),
    /// One training step (forward, backward, AdamW) of a ResNet, ours vs PyTorch; with
    /// `--conv-layers`, single convolutions (ours, candle's builtin, PyTorch).
    TrainStep(train_step::Args),
}

/// Runs the chosen benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Stft(a) => stft::run(a),
        What::TrainStep(a) => train_step::run(a),
    }
}
