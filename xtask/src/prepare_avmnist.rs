//! `cargo xtask prepare-avmnist`: builds AV-MNIST from the MNIST IDX files and the FSDD
//! recordings (`umt_data::avmnist`, `docs/avmnist.md`) and writes the prepared directory that
//! `reproduce-table2 --dataset avmnist --data-dir DIR` reads.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use umt_data::avmnist::{build, write_prepared, AvMnistConfig};

/// Arguments of `prepare-avmnist`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder of the MNIST IDX files (`train-images-idx3-ubyte.gz`, `t10k-...`; gzip or not).
    #[arg(long, default_value = "../shared/data/mnist")]
    mnist_dir: PathBuf,
    /// Folder of the FSDD recordings (`{digit}_{speaker}_{take}.wav`), or its parent holding
    /// `recordings/`.
    #[arg(long, default_value = "../shared/data/fsdd")]
    fsdd_dir: PathBuf,
    /// Output folder (tensors as safetensors, `index.jsonl`, `config.json`, `classes.txt`);
    /// the default lies under the git-ignored `results/`.
    #[arg(long, default_value = "results/avmnist-data")]
    out: PathBuf,
    /// JSON file whose fields override the default construction (any subset of
    /// `umt_data::avmnist::AvMnistConfig`; unknown keys are an error).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seed of the image–recording pairing (and of the audio noise, if any).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let cfg = match &args.config {
        Some(path) => AvMnistConfig::from_json_file(path)?,
        None => AvMnistConfig::default(),
    };
    let style = ProgressStyle::with_template(
        "{prefix:>8} [{bar:30}] {pos}/{len} {elapsed_precise} ETA {eta}",
    )?
    .progress_chars("=> ");
    let bar: Mutex<Option<(String, ProgressBar)>> = Mutex::new(None);
    let progress = |stage: &str, done: u64, total: u64| {
        let mut slot = bar.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().map(|(s, _)| s.as_str()) != Some(stage) {
            if let Some((_, old)) = slot.take() {
                old.finish();
            }
            let b = ProgressBar::new(total).with_style(style.clone());
            b.set_prefix(stage.to_string());
            *slot = Some((stage.to_string(), b));
        }
        if let Some((_, b)) = slot.as_ref() {
            b.set_position(done);
        }
    };
    let data = build(&cfg, args.seed, &args.mnist_dir, &args.fsdd_dir, &progress)?;
    if let Some((_, b)) = bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
        b.finish();
    }
    write_prepared(&data, &args.out)?;
    println!(
        "AV-MNIST: {} train / {} test samples, audio {:?}, image clip {:?}, PCA keeps {} components \
         ({:.1}% of the variance); written to {} in {:.1} s",
        data.train.len(),
        data.test.len(),
        data.info.audio_shape,
        data.info.video_shape,
        data.info.pca_components,
        100.0 * data.info.pca_energy_kept,
        args.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
