//! `cargo xtask reproduce-table2` / `reproduce-table1`: the paper's Tables 1 and 2 (and
//! Figure 2) end to end, resumable, on the embedded synthetic dataset, on AV-MNIST (prepared by
//! `cargo xtask prepare-avmnist`) or on VGGSound (prepared by `cargo xtask prepare-vggsound`,
//! streamed from disk; docs/vggsound.md).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use umt_trainer::config::DatasetConfig;
use umt_trainer::report::{check_dataset, table1_with, table2_with};
use umt_trainer::{ExperimentConfig, Method, Preset, Progress, RunOptions, Runner};

/// Arguments of both reproduce commands.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Dataset: `synthetic` (embedded, generated in memory), `avmnist` (a folder written by
    /// `cargo xtask prepare-avmnist`, given as `--data-dir`) or `vggsound` (a folder written by
    /// `cargo xtask prepare-vggsound`, given as `--data-dir`, streamed from disk by prefetching
    /// worker threads; needs a GPU: docs/vggsound.md).
    #[arg(long, default_value = "synthetic")]
    dataset: String,
    /// Data directory of a real dataset (must exist; the synthetic dataset takes none).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Preset: `default` (2-core CPU, ≤ 15 min), `paper` (§4.1 schedule, full-width ResNet18;
    /// GPU-sized) or `smoke` (about a minute). On VGGSound `default` is `paper` (32 frames of
    /// 224×224, 10 s of audio, batch 24, 20 epochs) and `smoke` a pipeline check (4 frames of
    /// 64×64, 2 s of audio, tiny encoders).
    #[arg(long, default_value = "default")]
    preset: String,
    /// JSON file whose fields override the preset (any subset; unknown keys are an error).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Number of training seeds (0, 1, ..., N-1).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Output folder (results, configs, checkpoints, logs). A rerun resumes from it.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Methods of Table 2, comma-separated paper names or slugs (`naive-fusion,umt`); default
    /// all nine.
    #[arg(long, value_delimiter = ',')]
    methods: Vec<String>,
    /// Device: `cpu`, `cuda` or `cuda:N` (a `cuda` build: `cargo xtask build-cuda`). Default:
    /// the first GPU where the build has CUDA and one is present, else the CPU.
    #[arg(long)]
    device: Option<String>,
    /// Tuning mode: carve a stratified fraction F (e.g. 0.25) of the training split as a
    /// validation split, train on the rest and report on it instead of the test split (the
    /// tables and JSON say so). Tune presets with this, never on the test split; use a
    /// separate `--out` folder (a folder is never mixed between the two modes).
    #[arg(long, value_name = "F")]
    tune_on_validation: Option<f64>,
    /// Teachers given instead of trained (`--audio-teacher`, `--video-teacher`).
    #[command(flatten)]
    teachers: crate::teachers::TeacherArgs,
}

fn setup(args: &Args) -> anyhow::Result<(Runner, Instant)> {
    let t0 = Instant::now();
    check_dataset(&args.dataset, args.data_dir.as_deref())?;
    let dataset = match (args.dataset.as_str(), &args.data_dir) {
        ("avmnist", Some(dir)) => DatasetConfig::avmnist(dir)?,
        ("vggsound", Some(dir)) => DatasetConfig::vggsound(dir)?,
        _ => DatasetConfig::Synthetic,
    };
    let mut cfg = ExperimentConfig::preset_for(Preset::parse(&args.preset)?, dataset);
    if let Some(path) = &args.config {
        cfg = cfg.with_overrides_file(path)?;
    }
    let methods = if args.methods.is_empty() {
        Method::ALL.to_vec()
    } else {
        args.methods
            .iter()
            .map(|m| Method::parse(m))
            .collect::<Result<Vec<_>, _>>()?
    };
    if args.seeds == 0 {
        anyhow::bail!("--seeds must be at least 1");
    }
    umt_trainer::enable_fast_math();
    let opts = RunOptions {
        out_dir: args.out.clone(),
        seeds: (0..args.seeds).collect(),
        methods,
        device: crate::device::parse(args.device.as_deref())?,
        progress: Progress::Auto,
        validation_fraction: args.tune_on_validation,
    };
    let runner = Runner::new(cfg, opts)?.with_teachers(args.teachers.resolve()?)?;
    Ok((runner, t0))
}

/// Table 2.
pub fn run_table2(args: Args) -> anyhow::Result<()> {
    let (mut runner, t0) = setup(&args)?;
    let table = table2_with(&mut runner, &args.dataset, t0)?;
    println!("{}", table.to_markdown());
    println!(
        "stages computed: {}, reused: {}; results in {}",
        runner.stages_run.len(),
        runner.stages_reused.len(),
        args.out.display()
    );
    Ok(())
}

/// Table 1 and Figure 2.
pub fn run_table1(args: Args) -> anyhow::Result<()> {
    let (mut runner, t0) = setup(&args)?;
    let (_, fig) = table1_with(&mut runner, t0)?;
    let md = std::fs::read_to_string(args.out.join("table1.md")).context("table1.md")?;
    println!("{md}");
    println!(
        "Figure 2 (classes where the audio teacher is best: {:?})",
        fig.classes
    );
    for s in &fig.series {
        println!("  {:<24} mean {:.2}%", s.name, s.mean);
    }
    println!(
        "stages computed: {}, reused: {}; results in {} (figure2.png, figure2.svg, figure2.json)",
        runner.stages_run.len(),
        runner.stages_reused.len(),
        args.out.display()
    );
    Ok(())
}
