//! The shared cache layout, exactly as huggingface_hub writes it (`file_download.py`):
//!
//! ```text
//! <cache_dir>/models--OWNER--NAME/
//!     refs/<revision>                      the commit hash the branch/tag pointed to (no newline)
//!     blobs/<etag>                         file contents; etag = sha256 (LFS) or git blob sha1
//!     snapshots/<commit>/<path/in/repo>    relative symlink to ../../blobs/<etag>
//! ```
//!
//! Paths come from `hf_hub::Cache`/`hf_hub::Repo`, so the folder naming stays the one the crate
//! shares with candle's examples.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, CacheRepo, Repo, RepoType};

use crate::{HubError, HubFile};

/// `models--OWNER--NAME` under `cache_dir`.
pub fn repo_dir(cache_dir: &Path, repo_id: &str) -> PathBuf {
    cache_dir.join(Repo::new(repo_id.to_string(), RepoType::Model).folder_name())
}

pub(crate) fn cache_repo(cache_dir: &Path, file: &HubFile) -> CacheRepo {
    Cache::new(cache_dir.to_path_buf()).repo(Repo::with_revision(
        file.repo_id.clone(),
        RepoType::Model,
        file.revision.clone(),
    ))
}

/// Whether a revision is a full commit hash (huggingface_hub `REGEX_COMMIT_HASH`).
pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40
        && revision
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The cached copy of `file`, as huggingface_hub's `try_to_load_from_cache` finds it: the
/// revision is mapped to a commit through `refs/<revision>` (a commit hash maps to itself), and
/// the snapshot entry must resolve to a regular file (a dangling symlink is not a hit).
pub fn cached_file(cache_dir: &Path, file: &HubFile) -> Option<PathBuf> {
    let repo = repo_dir(cache_dir, &file.repo_id);
    let commit = match std::fs::read_to_string(repo.join("refs").join(&file.revision)) {
        Ok(commit) => commit.trim().to_string(),
        Err(_) => file.revision.clone(),
    };
    if commit.is_empty() || commit.contains(['/', '\\']) || commit == ".." {
        return None;
    }
    let pointer = repo.join("snapshots").join(commit).join(&file.path);
    pointer.is_file().then_some(pointer)
}

/// Records `refs/<revision>` → `commit`, unless the revision is the commit itself (as Python).
pub(crate) fn write_ref(cache_dir: &Path, file: &HubFile, commit: &str) -> Result<(), HubError> {
    if file.revision == commit {
        return Ok(());
    }
    let path = repo_dir(cache_dir, &file.repo_id)
        .join("refs")
        .join(&file.revision);
    if std::fs::read_to_string(&path).is_ok_and(|c| c == commit) {
        return Ok(());
    }
    cache_repo(cache_dir, file)
        .create_ref(commit)
        .map_err(HubError::io("write ref", path))
}

/// Makes `snapshots/<commit>/<path>` a relative symlink to `blobs/<etag>` (replacing any older
/// entry atomically) and returns it. Where symlinks are unavailable the blob is copied, as
/// huggingface_hub does on Windows without developer mode.
pub(crate) fn link_snapshot(
    cache_dir: &Path,
    file: &HubFile,
    commit: &str,
    blob: &Path,
) -> Result<PathBuf, HubError> {
    let pointer = cache_repo(cache_dir, file)
        .pointer_path(commit)
        .join(&file.path);
    let parent = pointer.parent().unwrap_or(cache_dir).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(HubError::io("create directory", &parent))?;
    let blob_name = blob.file_name().unwrap_or_default();
    // From snapshots/<commit>/<dirs...>/ up to the repo folder, then into blobs/.
    let mut target = PathBuf::new();
    for _ in 0..2 + file.path.matches('/').count() {
        target.push("..");
    }
    target.push("blobs");
    target.push(blob_name);
    let tmp = parent.join(format!(
        ".{}.umt-link-{}",
        file_name(&file.path),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    #[cfg(unix)]
    let linked = std::os::unix::fs::symlink(&target, &tmp);
    #[cfg(windows)]
    let linked = std::os::windows::fs::symlink_file(&target, &tmp);
    #[cfg(not(any(unix, windows)))]
    let linked: std::io::Result<()> = Err(std::io::ErrorKind::Unsupported.into());
    if linked.is_err() {
        std::fs::copy(blob, &tmp).map_err(HubError::io("copy blob to", &tmp))?;
    }
    std::fs::rename(&tmp, &pointer).map_err(HubError::io("move into place", &pointer))?;
    Ok(pointer)
}

/// Makes a fully written temporary file durable and readable by everyone (`0644`, as
/// huggingface_hub leaves blobs), then renames it to `dst`: readers see the old `dst` or the
/// complete new one, never a partial file.
pub(crate) fn persist(tmp: tempfile::NamedTempFile, dst: &Path) -> Result<(), HubError> {
    tmp.as_file()
        .sync_all()
        .map_err(HubError::io("sync", tmp.path()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let perms = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(tmp.path(), perms)
            .map_err(HubError::io("set permissions of", tmp.path()))?;
    }
    tmp.persist(dst).map_err(|e| HubError::Io {
        action: "move into place",
        path: dst.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths_match_python() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = dir.path();
        let file = HubFile::new("umt-rs/teachers", "main", "sub/audio.safetensors").expect("file");
        assert_eq!(
            repo_dir(cache, "umt-rs/teachers"),
            cache.join("models--umt-rs--teachers")
        );
        let repo = repo_dir(cache, &file.repo_id);
        let blob = repo.join("blobs").join("e3b0c442");
        std::fs::create_dir_all(blob.parent().expect("parent")).expect("mkdir");
        std::fs::write(&blob, b"x").expect("write blob");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let pointer = link_snapshot(cache, &file, commit, &blob).expect("link");
        write_ref(cache, &file, commit).expect("ref");
        assert_eq!(
            pointer,
            repo.join("snapshots")
                .join(commit)
                .join("sub/audio.safetensors")
        );
        #[cfg(unix)]
        assert_eq!(
            std::fs::read_link(&pointer).expect("symlink"),
            Path::new("../../../blobs/e3b0c442")
        );
        assert_eq!(
            std::fs::read_to_string(repo.join("refs/main")).expect("ref"),
            commit
        );
        assert_eq!(cached_file(cache, &file), Some(pointer.clone()));
        let by_commit = HubFile {
            revision: commit.into(),
            ..file.clone()
        };
        assert_eq!(cached_file(cache, &by_commit), Some(pointer));
        write_ref(cache, &by_commit, commit).expect("no ref for a commit");
        assert!(!repo.join("refs").join(commit).exists());
        let other = HubFile {
            revision: "v2".into(),
            ..file
        };
        assert_eq!(cached_file(cache, &other), None);
        assert!(is_commit_hash(commit) && !is_commit_hash("main"));
    }
}
