//! Fetching a whole teacher set ahead of time (`cargo xtask pull-teachers`).

use std::path::{Path, PathBuf};

use crate::cache::{repo_dir, write_ref};
use crate::{Hub, HubError, HubFile};

/// One file of a pulled set: its path in the repo and where it is in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledFile {
    /// Path inside the repo.
    pub path: String,
    /// The snapshot entry in the cache (a symlink to the blob).
    pub local: PathBuf,
}

/// The files a teacher set consists of when none are named: every `*.safetensors`, plus
/// `config.json` and `README.md` (the model card) at the top of the repo.
pub fn is_teacher_set_file(path: &str) -> bool {
    path.ends_with(".safetensors") || path == "config.json" || path == "README.md"
}

impl Hub {
    /// Fetches `files` of `repo_id` at `revision` (all [teacher-set files](is_teacher_set_file)
    /// when `files` is empty) and returns where each one is. Like huggingface_hub
    /// `snapshot_download`, a listed set is fetched at the one commit the listing reports, so
    /// a branch that moves meanwhile cannot mix two versions; `refs/<revision>` then records it.
    /// Offline, the files come from the cache (the whole cached snapshot when none are named).
    pub async fn pull(
        &self,
        repo_id: &str,
        revision: &str,
        files: &[String],
    ) -> Result<Vec<PulledFile>, HubError> {
        let cache_dir = self.config().cache_dir();
        let (commit, paths) = match (files.is_empty(), self.config().offline()) {
            (false, _) => (revision.to_string(), files.to_vec()),
            (true, false) => {
                let listing = self.list_files(repo_id, revision).await?;
                let paths = listing
                    .files
                    .into_iter()
                    .filter(|p| is_teacher_set_file(p))
                    .collect();
                (listing.commit, paths)
            }
            (true, true) => {
                let probe = HubFile::new(repo_id, revision, "config.json")?;
                let snapshot = cached_snapshot(cache_dir, &probe).ok_or_else(|| {
                    HubError::NoCachedSnapshot {
                        repo_id: repo_id.to_string(),
                        revision: revision.to_string(),
                        cache_dir: cache_dir.to_path_buf(),
                    }
                })?;
                let mut paths = Vec::new();
                list_dir(&snapshot, "", &mut paths)
                    .map_err(HubError::io("list cached snapshot", &snapshot))?;
                paths.sort();
                (revision.to_string(), paths)
            }
        };
        let mut pulled = Vec::with_capacity(paths.len());
        for path in paths {
            let file = HubFile::new(repo_id, commit.as_str(), path.as_str())?;
            let local = self.fetch(&file).await?;
            pulled.push(PulledFile { path, local });
        }
        if commit != revision {
            write_ref(
                cache_dir,
                &HubFile::new(repo_id, revision, "config.json")?,
                &commit,
            )?;
        }
        Ok(pulled)
    }
}

/// `snapshots/<commit>` for the revision of `probe`, if cached.
fn cached_snapshot(cache_dir: &Path, probe: &HubFile) -> Option<PathBuf> {
    let repo = repo_dir(cache_dir, &probe.repo_id);
    let commit = std::fs::read_to_string(repo.join("refs").join(&probe.revision))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| probe.revision.clone());
    let dir = repo.join("snapshots").join(commit);
    dir.is_dir().then_some(dir)
}

fn list_dir(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if entry.path().is_dir() {
            list_dir(&entry.path(), &path, out)?;
        } else if entry.path().is_file() {
            out.push(path);
        }
    }
    Ok(())
}
