//! `cargo xtask export-teachers RUN_DIR OUT_DIR`: a folder ready to upload to the Hugging Face
//! Hub from the teachers of a reproduce run (the logic is `umt_trainer::publish`).

use std::path::PathBuf;

use umt_trainer::publish::{export_teachers, ExportOptions};

/// Writes the run's teachers as `{modality}-seed{s}.safetensors` (self-describing: their
/// metadata carries architecture, config, normalisation, dataset and classes, metrics and code
/// version), `config.json` and a model card `README.md` with the hub's YAML header and the
/// run's results tables. Upload with `huggingface-cli upload OWNER/REPO OUT_DIR`.
#[derive(clap::Args)]
pub struct Args {
    /// Output folder of `reproduce-table2` / `reproduce-table1` (holds `teachers/`).
    run_dir: PathBuf,
    /// Folder to write (created; existing files of the same names are replaced atomically).
    out_dir: PathBuf,
    /// The model card's `license` (a hub licence identifier).
    #[arg(long, default_value = "apache-2.0")]
    license: String,
    /// The hub repo the folder is for (`OWNER/NAME`), used in the card's usage lines.
    #[arg(long)]
    repo: Option<String>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = ExportOptions {
        license: args.license,
        repo_id: args.repo,
    };
    let summary = export_teachers(&args.run_dir, &args.out_dir, &opts)?;
    for t in &summary.teachers {
        println!(
            "{}\t{} seed {}\t{} top-1 {:.2}%\tfrom {}",
            t.file,
            t.modality,
            t.seed,
            t.split,
            100.0 * t.top1,
            t.source
        );
    }
    println!(
        "{} teachers ({} classes, dataset {}) with config.json and README.md in {}",
        summary.teachers.len(),
        summary.classes.len(),
        summary.dataset,
        args.out_dir.display()
    );
    Ok(())
}
