//! `cargo xtask pull-teachers`: fetch a set of teacher checkpoints from the Hugging Face Hub
//! into the shared cache ahead of time (for a machine that trains offline, or to pin a set).

use anyhow::Context;
use umt_hub::{Hub, HubConfig, DEFAULT_REVISION};

/// Fetches a teacher set (every `*.safetensors` plus `config.json` and `README.md`, or the
/// files named with `--files`) from a model repo into the Hugging Face cache and prints where
/// each file is. Honours HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN (never printed) and
/// HF_HUB_OFFLINE=1 (then the files must already be cached). Pulled files are then usable as
/// `hf://OWNER/REPO[@REVISION]/PATH.safetensors` by every command that takes a teacher, also
/// offline. See docs/hub.md.
#[derive(clap::Args)]
pub struct Args {
    /// Model repo on the hub, `OWNER/NAME`.
    #[arg(long)]
    repo: String,
    /// Branch, tag or commit hash.
    #[arg(long, default_value = DEFAULT_REVISION)]
    revision: String,
    /// Paths inside the repo to fetch (default: the whole teacher set).
    #[arg(long, num_args = 1..)]
    files: Vec<String>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<()> {
    let config = HubConfig::from_env();
    eprintln!(
        "pulling {}@{} from {} into {}{}",
        args.repo,
        args.revision,
        config.endpoint(),
        config.cache_dir().display(),
        if config.offline() {
            " (offline: cache only)"
        } else {
            ""
        }
    );
    let pulled = umt_hub::block_on(async {
        Hub::new(config)?
            .pull(&args.repo, &args.revision, &args.files)
            .await
    })??;
    anyhow::ensure!(
        !pulled.is_empty(),
        "{}@{} holds no teacher-set files",
        args.repo,
        args.revision
    );
    for file in &pulled {
        println!("{}\t{}", file.path, file.local.display());
    }
    let snapshot = pulled
        .first()
        .and_then(|f| {
            let depth = f.path.split('/').count();
            f.local.ancestors().nth(depth).map(|p| p.to_path_buf())
        })
        .context("locating the snapshot folder")?;
    let noun = if pulled.len() == 1 { "file" } else { "files" };
    eprintln!("{} {noun} in {}", pulled.len(), snapshot.display());
    Ok(())
}
