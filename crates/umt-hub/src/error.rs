//! The crate's one error type.

use std::path::PathBuf;

use crate::HubFile;

/// Everything that can go wrong while parsing a teacher reference, reading the cache or talking
/// to the hub. Variants carry what was expected and what was found, and the repo, revision,
/// file or path involved. None of them ever carries the access token.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A teacher reference string could not be parsed; `part` names the offending piece.
    #[error("invalid teacher reference {reference:?}: {part} {reason}")]
    InvalidReference {
        /// The whole string as given.
        reference: String,
        /// The piece that is wrong, e.g. `repo id "a--b"` or `revision ""`.
        part: String,
        /// What is wrong with it and what was expected.
        reason: String,
    },
    /// A local teacher path does not exist.
    #[error("teacher checkpoint {path} does not exist")]
    LocalNotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// Offline mode (`HF_HUB_OFFLINE=1`) and the file is not in the cache.
    #[error(
        "offline mode (HF_HUB_OFFLINE) and {path:?} of {repo} at revision {rev:?} is not in the \
         cache {cache_dir}; fetch it first with `cargo xtask pull-teachers --repo {repo} \
         --revision {rev} --files {path}` while online",
        path = .file.path, repo = .file.repo_id, rev = .file.revision, cache_dir = .cache_dir.display()
    )]
    NotCachedOffline {
        /// The file asked for (repo, revision, path).
        file: HubFile,
        /// The hub cache directory that was searched.
        cache_dir: PathBuf,
    },
    /// Offline mode and no snapshot of that revision is cached (a set pulled without `--files`).
    #[error(
        "offline mode (HF_HUB_OFFLINE) and no snapshot of {repo_id} at revision {revision:?} is in \
         the cache {cache_dir}; fetch it first with `cargo xtask pull-teachers --repo {repo_id} \
         --revision {revision}` while online"
    )]
    NoCachedSnapshot {
        /// `owner/name`.
        repo_id: String,
        /// The revision asked for.
        revision: String,
        /// The hub cache directory that was searched.
        cache_dir: PathBuf,
    },
    /// The hub could not be reached and the file is not cached either.
    #[error(
        "cannot reach the hub ({reason}) and {path:?} of {repo} at revision {rev:?} is not in \
         the cache {cache_dir}",
        path = .file.path, repo = .file.repo_id, rev = .file.revision, cache_dir = .cache_dir.display()
    )]
    Unreachable {
        /// The file asked for (repo, revision, path).
        file: HubFile,
        /// The URL that failed and the transport error.
        reason: String,
        /// The hub cache directory that was searched.
        cache_dir: PathBuf,
    },
    /// HTTP 401: the repo is private (or does not exist) and no token, or a refused one, was sent.
    #[error("{repo_id} is private, gated or does not exist (HTTP 401 from {url}): {hint}")]
    Unauthorized {
        /// `owner/name`.
        repo_id: String,
        /// The URL that was refused.
        url: String,
        /// What to do: set a token, or the token that was sent was refused (never the token).
        hint: String,
    },
    /// HTTP 403: a token was sent but does not grant access (e.g. a gated repo not accepted).
    #[error("access to {repo_id} was refused (HTTP 403 from {url}): {message}")]
    Forbidden {
        /// `owner/name`.
        repo_id: String,
        /// The URL that was refused.
        url: String,
        /// The hub's `X-Error-Message`, if any.
        message: String,
    },
    /// The repo does not exist.
    #[error("repository {repo_id} not found on {endpoint}")]
    RepoNotFound {
        /// `owner/name`.
        repo_id: String,
        /// The hub endpoint asked.
        endpoint: String,
    },
    /// The revision (branch, tag or commit) does not exist in the repo.
    #[error("revision {revision:?} not found in {repo_id} on {endpoint}")]
    RevisionNotFound {
        /// `owner/name`.
        repo_id: String,
        /// The revision asked for.
        revision: String,
        /// The hub endpoint asked.
        endpoint: String,
    },
    /// The file does not exist at that revision of the repo.
    #[error("file {path:?} not found in {repo_id} at revision {revision:?} on {endpoint}")]
    EntryNotFound {
        /// `owner/name`.
        repo_id: String,
        /// The revision asked for.
        revision: String,
        /// The file's path inside the repo.
        path: String,
        /// The hub endpoint asked.
        endpoint: String,
    },
    /// Any other unexpected HTTP status.
    #[error("HTTP {status} from {url}: {message}")]
    Http {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The hub's `X-Error-Message`, or the status text.
        message: String,
    },
    /// A transport error in the middle of a request or a download.
    #[error("request to {url} failed: {message}")]
    Network {
        /// The URL requested.
        url: String,
        /// The transport error.
        message: String,
    },
    /// A header the client relies on is missing or malformed.
    #[error("response from {url}: header {header} {problem}")]
    BadHeader {
        /// The URL requested.
        url: String,
        /// The header's name.
        header: &'static str,
        /// Expected and found.
        problem: String,
    },
    /// The downloaded file does not have the size the hub announced. Nothing was cached.
    #[error(
        "download of {path:?} from {repo_id}: expected {expected} bytes (as announced by the hub), \
         received {found}; the partial file was discarded"
    )]
    SizeMismatch {
        /// `owner/name`.
        repo_id: String,
        /// The file's path inside the repo.
        path: String,
        /// Bytes announced (`X-Linked-Size`/`Content-Length`).
        expected: u64,
        /// Bytes received.
        found: u64,
    },
    /// The downloaded file's hash is not the one the hub announced. Nothing was cached.
    #[error(
        "download of {path:?} from {repo_id}: {algorithm} is {found}, the hub announced {expected}; \
         the corrupted file was discarded"
    )]
    HashMismatch {
        /// `owner/name`.
        repo_id: String,
        /// The file's path inside the repo.
        path: String,
        /// `sha256` (LFS files) or `git-sha1` (regular files).
        algorithm: &'static str,
        /// Hash announced by the hub (`X-Linked-Etag`/`ETag`).
        expected: String,
        /// Hash of the received bytes.
        found: String,
    },
    /// The repo listing (`/api/models/...`) is not the JSON expected.
    #[error("repo listing from {url} is not valid: {message}")]
    BadListing {
        /// The URL requested.
        url: String,
        /// The parse error.
        message: String,
    },
    /// A checkpoint cannot be adapted: a tensor is missing or has the wrong shape or dtype.
    #[error("checkpoint {path}: tensor {tensor} {problem}")]
    BadCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor involved.
        tensor: String,
        /// Expected and found.
        problem: String,
    },
    /// A file-system operation in the cache failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("create directory", "write", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl HubError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| HubError::Io {
            action,
            path,
            source,
        }
    }
}
