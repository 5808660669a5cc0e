//! `cargo xtask prepare-nyuv2 --mat nyu_depth_v2_labeled.mat --splits splits.mat --out DIR`:
//! writes NYUv2 (40 classes) in the layout of ESANet's `prepare_dataset.py`
//! (`{train,test}/{rgb,depth,depth_raw,labels_40}/NNNN.png`, `train.txt`, `test.txt`), then
//! opens both splits with `umt_data::rgbd::nyuv2::Nyuv2Dataset` and loads every sample, so a
//! finished run is known to be readable by the trainer.
//!
//! The labeled file is MATLAB v7.3 (HDF5), the splits and mapping MATLAB v5; the conversion
//! runs `data-prep/nyuv2/prepare_nyuv2.py` (h5py, scipy, Pillow, numpy, the reference's own
//! tools) with `$UMT_PYTHON` (default `python3`); `docs/rgbd-data.md` says why.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use umt_data::rgbd::nyuv2::Nyuv2Dataset;
use umt_data::rgbd::{RgbdDataset, Split};

/// Arguments of `cargo xtask prepare-nyuv2`.
#[derive(clap::Args)]
pub struct Args {
    /// The official `nyu_depth_v2_labeled.mat` (MATLAB v7.3 / HDF5, 2.8 GB).
    #[arg(long)]
    mat: PathBuf,
    /// The standard `splits.mat` (trainNdxs 795, testNdxs 654; shipped with ESANet).
    #[arg(long)]
    splits: PathBuf,
    /// `classMapping40.mat` (variable `mapClass`, 894 → 40; shipped with ESANet and
    /// github.com/ankurhanda/nyuv2-meta-data). Default: `classMapping40.mat` next to --splits.
    #[arg(long)]
    class_mapping: Option<PathBuf>,
    /// Output directory (created; existing files are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Skip loading every written sample with the Rust loader afterwards.
    #[arg(long)]
    no_verify: bool,
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data-prep/nyuv2/prepare_nyuv2.py")
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mapping = match &args.class_mapping {
        Some(p) => p.clone(),
        None => args
            .splits
            .parent()
            .unwrap_or(Path::new("."))
            .join("classMapping40.mat"),
    };
    for (path, flag) in [
        (&args.mat, "--mat"),
        (&args.splits, "--splits"),
        (&mapping, "--class-mapping"),
    ] {
        if !path.is_file() {
            bail!("{flag} {}: no such file", path.display());
        }
    }
    let python = std::env::var("UMT_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = script_path();
    let status = Command::new(&python)
        .arg(&script)
        .arg("--mat")
        .arg(&args.mat)
        .arg("--splits")
        .arg(&args.splits)
        .arg("--mapping")
        .arg(&mapping)
        .arg("--out")
        .arg(&args.out)
        .status()
        .with_context(|| {
            format!(
                "could not start `{python}` (set UMT_PYTHON to a Python with h5py, scipy, numpy \
                 and Pillow: `{python} -m pip install h5py scipy numpy pillow`)"
            )
        })?;
    if !status.success() {
        bail!(
            "{} failed ({status}); see its message above (a missing h5py is installed with \
             `{python} -m pip install h5py`)",
            script.display()
        );
    }
    if args.no_verify {
        return Ok(());
    }
    for split in [Split::Train, Split::Test] {
        let ds = Nyuv2Dataset::open(&args.out, split)
            .with_context(|| format!("verifying the {} split", split.name()))?;
        for i in 0..ds.len() {
            ds.sample(i)
                .with_context(|| format!("verifying {} sample {i}", split.name()))?;
        }
        println!(
            "verified {}: {} samples load with umt_data::rgbd::nyuv2",
            split.name(),
            ds.len()
        );
    }
    Ok(())
}
