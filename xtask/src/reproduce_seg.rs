//! `cargo xtask reproduce-table3` and `reproduce-table4`: the RGB-D segmentation experiment of
//! the paper (§4.2) on the embedded synthetic RGB-D scenes or on NYUv2 (`--dataset nyuv2
//! --data-dir DIR`), through `umt-segtrainer`'s resumable stages. Both commands share stages
//! when given the same `--out` folder (Table 4's networks are Table 3's uni-depth teacher and
//! RGB-D baseline).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use umt_segtrainer::{table3, table4, RunOptions, SegExperimentConfig, SegRunner, SegTable};

/// Arguments of both commands.
#[derive(clap::Args)]
pub struct Args {
    /// Preset: `smoke` (a minute or two, every stage), `cpu` (the CPU default) or `paper`
    /// (the reference recipe at 480×640, 500 epochs: a GPU run).
    #[arg(long, default_value = "cpu")]
    preset: String,
    /// Data: `synthetic` (the embedded RGB-D scenes) or `nyuv2` (40 classes, from
    /// `--data-dir`; the preset's recipe at its model size, `paper` = the reference).
    /// Ignored with `--config` (the file says).
    #[arg(long, default_value = "synthetic")]
    dataset: String,
    /// The NYUv2 folder `cargo xtask prepare-nyuv2 --out` wrote
    /// (`{train,test}/{rgb,depth,labels_40}/NNNN.png`, `train.txt`, `test.txt`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Tuning mode: carve this fraction of the training images (seeded) as a validation
    /// split, train on the rest and report on it instead of the test split. Use its own
    /// `--out` folder.
    #[arg(long, value_name = "F")]
    tune_on_validation: Option<f64>,
    /// Batches prepared ahead of the training step on a loader thread (0: none).
    #[arg(long, default_value_t = 2)]
    prefetch: usize,
    /// A JSON config file (the full `config.json` schema written into `--out`); overrides
    /// `--preset`. Unknown keys are an error.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Number of training seeds (0, 1, ..., N-1).
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Output folder (config, stage checkpoints and results, tables). A rerun resumes from it.
    #[arg(long, default_value = "results/segmentation")]
    out: PathBuf,
    /// Device: `cpu`, `cuda` or `cuda:N`. Default: the first GPU where the build has CUDA and
    /// one is present, else the CPU.
    #[arg(long)]
    device: Option<String>,
    /// ImageNet encoder weights (safetensors, torchvision ResNet names, 3-channel stem; see
    /// docs/segmentation.md): adds the paper's "ImageNet pre-train" rows. Both encoders start
    /// from them (the depth stem summed over RGB, as ESANet).
    #[arg(long, value_name = "FILE")]
    imagenet_weights: Option<PathBuf>,
}

fn setup(args: &Args) -> anyhow::Result<SegRunner> {
    if args.seeds == 0 {
        anyhow::bail!("--seeds must be at least 1");
    }
    let cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            SegExperimentConfig::from_json_str(&text, path)?
        }
        None => match args.dataset.as_str() {
            "synthetic" => SegExperimentConfig::preset(&args.preset)?,
            "nyuv2" => SegExperimentConfig::preset_nyuv2(&args.preset)?,
            other => anyhow::bail!("--dataset {other}: expected `synthetic` or `nyuv2`"),
        },
    };
    let device = crate::device::parse(args.device.as_deref())?;
    let describe = crate::device::describe(&device);
    let mut opts = RunOptions::new(args.out.clone(), device);
    opts.data_dir = args.data_dir.clone();
    opts.validation_fraction = args.tune_on_validation;
    opts.prefetch_batches = args.prefetch;
    opts.imagenet_weights = args.imagenet_weights.clone();
    let (preset, epochs, (h, w)) = (
        cfg.preset.clone(),
        cfg.train.epochs,
        (cfg.model.height, cfg.model.width),
    );
    let data = cfg.data.name();
    let runner = SegRunner::new(cfg, opts)?;
    let (n_train, n_eval) = runner.num_images();
    eprintln!(
        "preset {preset} on {describe}: {data} data, {epochs} epochs, {n_train} train / \
         {n_eval} {} images at {h}x{w}, out {}",
        runner.options().split_name(),
        args.out.display()
    );
    Ok(runner)
}

fn finish(runner: &SegRunner, table: &SegTable, t0: Instant) -> anyhow::Result<()> {
    table.write(runner)?;
    println!("{}", table.to_markdown());
    println!(
        "wrote {0}/{1}.json and {0}/{1}.md in {2:.1} s ({3} stages run, {4} reused)",
        runner.out_dir().display(),
        table.table,
        t0.elapsed().as_secs_f64(),
        runner.stages_run.len(),
        runner.stages_reused.len()
    );
    Ok(())
}

/// `reproduce-table3`: ESANet vs UMT (RGB-D, from scratch).
pub fn run_table3(args: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut runner = setup(&args)?;
    let seeds: Vec<u64> = (0..args.seeds).collect();
    let table = table3(&mut runner, &seeds)?;
    finish(&runner, &table, t0)
}

/// `reproduce-table4`: frozen depth encoders (uni-depth vs RGB-D ESANet) with a new decoder.
pub fn run_table4(args: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut runner = setup(&args)?;
    let seeds: Vec<u64> = (0..args.seeds).collect();
    let table = table4(&mut runner, &seeds)?;
    finish(&runner, &table, t0)
}
