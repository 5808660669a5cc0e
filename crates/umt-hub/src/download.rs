//! Talking to the hub: file metadata (`HEAD .../resolve/...`), verified downloads into the
//! cache, and repo listings (`GET /api/models/...`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header::{HeaderMap, ACCEPT_ENCODING, AUTHORIZATION, LOCATION};
use reqwest::{Client, Response};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::cache::{cache_repo, cached_file, is_commit_hash, link_snapshot, write_ref};
use crate::url::quote;
use crate::{HubConfig, HubError, HubFile, TeacherRef};

/// huggingface_hub `HF_HUB_ETAG_TIMEOUT` default: seconds for the metadata request.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// huggingface_hub `HF_HUB_DOWNLOAD_TIMEOUT` default: seconds without progress before giving up.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What the hub's `HEAD {endpoint}/{repo}/resolve/{revision}/{path}` says about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMetadata {
    /// `X-Repo-Commit`: the commit the revision resolved to.
    pub commit: String,
    /// `X-Linked-Etag` (LFS: the SHA-256 of the contents) or else `ETag` (regular files: the
    /// git blob SHA-1), without quotes or `W/`. It names the blob in the cache.
    pub etag: String,
    /// `X-Linked-Size` or else `Content-Length`: the file's size in bytes.
    pub size: u64,
    /// Where to download from: the redirect target (a CDN for LFS files) or the resolve URL.
    pub location: String,
}

/// A repo's files at a revision (`GET {endpoint}/api/models/{repo}/revision/{revision}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoListing {
    /// The commit the revision resolved to.
    pub commit: String,
    /// Paths of all files in the repo at that commit.
    pub files: Vec<String>,
}

/// A client for one hub configuration. Cheap to clone; create it inside the tokio runtime that
/// drives it (see [`block_on`] for synchronous callers).
#[derive(Debug, Clone)]
pub struct Hub {
    config: HubConfig,
    /// Follows only same-origin redirects (a renamed repo), so that a redirect to the CDN is
    /// seen with the hub's own headers, as huggingface_hub's `follow_relative_redirects`.
    head_client: Client,
    /// Follows redirects (to the CDN); reqwest drops `Authorization` on a cross-host redirect.
    get_client: Client,
}

impl Hub {
    /// A client for `config`.
    pub fn new(config: HubConfig) -> Result<Self, HubError> {
        let user_agent = format!("umt-hub/{}; hf_hub/0.5; rust", env!("CARGO_PKG_VERSION"));
        let same_origin_only = reqwest::redirect::Policy::custom(|attempt| {
            let same = attempt
                .previous()
                .last()
                .is_some_and(|prev| prev.origin() == attempt.url().origin());
            if attempt.previous().len() > 10 || !same {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let build = |builder: reqwest::ClientBuilder| {
            builder
                .user_agent(user_agent.clone())
                .build()
                .map_err(|e| HubError::Network {
                    url: config.endpoint().to_string(),
                    message: describe(&e),
                })
        };
        let head_client = build(
            Client::builder()
                .redirect(same_origin_only)
                .timeout(METADATA_TIMEOUT),
        )?;
        let get_client = build(
            Client::builder()
                .connect_timeout(DOWNLOAD_TIMEOUT)
                .read_timeout(DOWNLOAD_TIMEOUT),
        )?;
        Ok(Self {
            config,
            head_client,
            get_client,
        })
    }

    /// The configuration this client uses.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// `{endpoint}/{repo}/resolve/{revision}/{path}`, quoted as huggingface_hub `hf_hub_url`.
    pub fn file_url(&self, file: &HubFile) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.config.endpoint(),
            file.repo_id,
            quote(&file.revision, false),
            quote(&file.path, true)
        )
    }

    /// A teacher checkpoint on disk: a local path is checked for existence, a hub file is
    /// [`fetch`](Hub::fetch)ed.
    pub async fn resolve(&self, reference: &TeacherRef) -> Result<PathBuf, HubError> {
        match reference {
            TeacherRef::Local(path) => check_local(path),
            TeacherRef::Hub(file) => self.fetch(file).await,
        }
    }

    /// The path of `file` in the cache, downloading and verifying it first if needed. Follows
    /// huggingface_hub `hf_hub_download`: a commit revision already cached needs no network;
    /// offline mode only reads the cache; otherwise the hub is asked which commit the revision
    /// is at now (falling back to the cache when it cannot be reached), and only a blob not yet
    /// cached is downloaded.
    pub async fn fetch(&self, file: &HubFile) -> Result<PathBuf, HubError> {
        let cache_dir = self.config.cache_dir();
        if is_commit_hash(&file.revision) {
            if let Some(path) = cached_file(cache_dir, file) {
                return Ok(path);
            }
        }
        if self.config.offline() {
            return cached_file(cache_dir, file).ok_or_else(|| HubError::NotCachedOffline {
                file: file.clone(),
                cache_dir: cache_dir.to_path_buf(),
            });
        }
        let meta = match self.metadata(file).await {
            Ok(meta) => meta,
            Err(HubError::Network { url, message }) => {
                return cached_file(cache_dir, file).ok_or_else(|| HubError::Unreachable {
                    file: file.clone(),
                    reason: format!("{url}: {message}"),
                    cache_dir: cache_dir.to_path_buf(),
                })
            }
            Err(e) => return Err(e),
        };
        let repo = cache_repo(cache_dir, file);
        let pointer = repo.pointer_path(&meta.commit).join(&file.path);
        let blob = repo.blob_path(&meta.etag);
        if !pointer.is_file() {
            let cached_blob_ok =
                std::fs::metadata(&blob).is_ok_and(|m| m.is_file() && m.len() == meta.size);
            if !cached_blob_ok {
                self.download_blob(file, &meta, &blob).await?;
            }
            link_snapshot(cache_dir, file, &meta.commit, &blob)?;
        }
        write_ref(cache_dir, file, &meta.commit)?;
        Ok(pointer)
    }

    /// Asks the hub about `file` (`HEAD .../resolve/...`, not following a redirect to the CDN).
    pub async fn metadata(&self, file: &HubFile) -> Result<FileMetadata, HubError> {
        let url = self.file_url(file);
        let request = self
            .authorise(self.head_client.head(&url))
            .header(ACCEPT_ENCODING, "identity");
        let response = request.send().await.map_err(|e| network(&url, &e))?;
        let status = response.status();
        if !(status.is_success() || status.is_redirection()) {
            return Err(self.status_error(&response, &file.repo_id, Some(file)));
        }
        let headers = response.headers();
        let commit = header(headers, "x-repo-commit", &url)?;
        if !is_safe_name(&commit) {
            return Err(bad_header(
                &url,
                "X-Repo-Commit",
                format!("is not a commit hash: {commit:?}"),
            ));
        }
        let (etag_name, raw_etag) = match header(headers, "x-linked-etag", &url) {
            Ok(etag) => ("X-Linked-Etag", etag),
            Err(_) => ("ETag", header(headers, "etag", &url)?),
        };
        let etag = raw_etag
            .trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_string();
        if !is_safe_name(&etag) {
            return Err(bad_header(
                &url,
                etag_name,
                format!("is not a usable blob name: {raw_etag:?}"),
            ));
        }
        // A redirect's own Content-Length is not the file's (huggingface_hub ignores it too).
        let (size_name, raw_size) = match header(headers, "x-linked-size", &url) {
            Ok(size) => ("X-Linked-Size", size),
            Err(e) if status.is_redirection() => return Err(e),
            Err(_) => ("Content-Length", header(headers, "content-length", &url)?),
        };
        let size = raw_size.trim().parse().map_err(|_| {
            bad_header(
                &url,
                size_name,
                format!("is not a byte count: {raw_size:?}"),
            )
        })?;
        let location = match headers.get(LOCATION).and_then(|v| v.to_str().ok()) {
            Some(location) if status.is_redirection() => response
                .url()
                .join(location)
                .map(String::from)
                .map_err(|_| bad_header(&url, "Location", format!("is not a URL: {location:?}")))?,
            _ => response.url().to_string(),
        };
        Ok(FileMetadata {
            commit,
            etag,
            size,
            location,
        })
    }

    /// The repo's files at `revision` (`GET {endpoint}/api/models/{repo}/revision/{revision}`).
    pub async fn list_files(&self, repo_id: &str, revision: &str) -> Result<RepoListing, HubError> {
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.config.endpoint(),
            repo_id,
            quote(revision, false)
        );
        let request = self.authorise(self.get_client.get(&url));
        let response = request.send().await.map_err(|e| network(&url, &e))?;
        if !response.status().is_success() {
            let probe = HubFile {
                repo_id: repo_id.into(),
                revision: revision.into(),
                path: String::new(),
            };
            return Err(self.status_error(&response, repo_id, Some(&probe)));
        }
        let body = response.bytes().await.map_err(|e| network(&url, &e))?;
        let info: hf_hub::api::RepoInfo =
            serde_json::from_slice(&body).map_err(|e| HubError::BadListing {
                url: url.clone(),
                message: e.to_string(),
            })?;
        Ok(RepoListing {
            commit: info.sha,
            files: info.siblings.into_iter().map(|s| s.rfilename).collect(),
        })
    }

    /// Streams `meta.location` into a temporary file in `blobs/`, checks size and hash, and
    /// only then renames it to `blob`. On any failure the temporary file is deleted.
    async fn download_blob(
        &self,
        file: &HubFile,
        meta: &FileMetadata,
        blob: &Path,
    ) -> Result<(), HubError> {
        let blobs = blob
            .parent()
            .unwrap_or(self.config.cache_dir())
            .to_path_buf();
        std::fs::create_dir_all(&blobs).map_err(HubError::io("create directory", &blobs))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", meta.etag))
            .suffix(".umt-incomplete")
            .tempfile_in(&blobs)
            .map_err(HubError::io("create temporary file in", &blobs))?;
        let url = &meta.location;
        let mut request = self.get_client.get(url).header(ACCEPT_ENCODING, "identity");
        if same_origin(url, self.config.endpoint()) {
            request = self.authorise(request);
        }
        let mut response = request.send().await.map_err(|e| network(url, &e))?;
        if !response.status().is_success() {
            return Err(self.status_error(&response, &file.repo_id, Some(file)));
        }
        let mut verifier = Verifier::for_etag(&meta.etag, meta.size);
        let progress = self.progress_bar(meta.size, &file.path);
        let mut received = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| network(url, &e))? {
            received += chunk.len() as u64;
            if received > meta.size {
                break;
            }
            verifier.update(&chunk);
            tmp.write_all(&chunk)
                .map_err(HubError::io("write", tmp.path()))?;
            progress.inc(chunk.len() as u64);
        }
        progress.finish_and_clear();
        if received != meta.size {
            return Err(HubError::SizeMismatch {
                repo_id: file.repo_id.clone(),
                path: file.path.clone(),
                expected: meta.size,
                found: received,
            });
        }
        if let Some((algorithm, found)) = verifier.finish() {
            if found != meta.etag {
                return Err(HubError::HashMismatch {
                    repo_id: file.repo_id.clone(),
                    path: file.path.clone(),
                    algorithm,
                    expected: meta.etag.clone(),
                    found,
                });
            }
        }
        crate::cache::persist(tmp, blob)?;
        Ok(())
    }

    fn authorise(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.config.token() {
            Some(token) => request.header(AUTHORIZATION, format!("Bearer {}", token.expose())),
            None => request,
        }
    }

    fn progress_bar(&self, size: u64, name: &str) -> ProgressBar {
        use std::io::IsTerminal;
        if !self.config.progress() || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(name.to_string());
        bar
    }

    /// Maps an error status to an error naming what was not found or not allowed, following
    /// huggingface_hub `hf_raise_for_status` (`X-Error-Code` first, then the status).
    fn status_error(&self, response: &Response, repo_id: &str, file: Option<&HubFile>) -> HubError {
        let url = response.url().to_string();
        let status = response.status().as_u16();
        let text = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let code = text("x-error-code");
        let message = match text("x-error-message") {
            m if m.is_empty() => response
                .status()
                .canonical_reason()
                .unwrap_or("")
                .to_string(),
            m => m,
        };
        let endpoint = self.config.endpoint().to_string();
        let repo_id = repo_id.to_string();
        match (status, code.as_str()) {
            (401, _) => HubError::Unauthorized {
                repo_id,
                url,
                hint: if self.config.token().is_some() {
                    "a token was sent (HF_TOKEN or the token file) but it was refused or has no \
                     read access to this repo"
                        .into()
                } else {
                    "no token was sent: set HF_TOKEN (or run `huggingface-cli login`) to a token \
                     with read access"
                        .into()
                },
            },
            (403, _) => HubError::Forbidden {
                repo_id,
                url,
                message,
            },
            (_, "RepoNotFound") => HubError::RepoNotFound { repo_id, endpoint },
            (_, "RevisionNotFound") => HubError::RevisionNotFound {
                repo_id,
                revision: file.map(|f| f.revision.clone()).unwrap_or_default(),
                endpoint,
            },
            (_, "EntryNotFound") => HubError::EntryNotFound {
                repo_id,
                revision: file.map(|f| f.revision.clone()).unwrap_or_default(),
                path: file.map(|f| f.path.clone()).unwrap_or_default(),
                endpoint,
            },
            _ => HubError::Http {
                url,
                status,
                message,
            },
        }
    }
}

/// Runs `future` to completion on a fresh single-threaded tokio runtime, for synchronous callers
/// (the trainer, xtask). Must not be called from inside a tokio runtime.
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, HubError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(HubError::io(
            "start the tokio runtime for",
            "the hub client",
        ))?;
    Ok(runtime.block_on(future))
}

/// A teacher checkpoint on disk, synchronously: a local path is checked for existence, a hub
/// file is fetched through the cache with `config` (see [`Hub::fetch`]).
pub fn resolve(reference: &TeacherRef, config: &HubConfig) -> Result<PathBuf, HubError> {
    match reference {
        TeacherRef::Local(path) => check_local(path),
        TeacherRef::Hub(file) => block_on(async { Hub::new(config.clone())?.fetch(file).await })?,
    }
}

fn check_local(path: &Path) -> Result<PathBuf, HubError> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(HubError::LocalNotFound {
            path: path.to_path_buf(),
        })
    }
}

/// Hashes the download as it streams: SHA-256 when the etag is one (LFS files), the git blob
/// SHA-1 (`sha1("blob {size}\0" + contents)`) when the etag is one (regular files); otherwise
/// only the size can be checked.
enum Verifier {
    Sha256(Sha256),
    GitSha1(Sha1),
    SizeOnly,
}

impl Verifier {
    fn for_etag(etag: &str, size: u64) -> Self {
        let hex = etag.bytes().all(|b| b.is_ascii_hexdigit());
        match etag.len() {
            64 if hex => Verifier::Sha256(Sha256::new()),
            40 if hex => {
                let mut sha1 = Sha1::new();
                sha1.update(format!("blob {size}\0").as_bytes());
                Verifier::GitSha1(sha1)
            }
            _ => Verifier::SizeOnly,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Verifier::Sha256(h) => h.update(bytes),
            Verifier::GitSha1(h) => h.update(bytes),
            Verifier::SizeOnly => {}
        }
    }

    fn finish(self) -> Option<(&'static str, String)> {
        match self {
            Verifier::Sha256(h) => Some(("sha256", hex(&h.finalize()))),
            Verifier::GitSha1(h) => Some(("git-sha1", hex(&h.finalize()))),
            Verifier::SizeOnly => None,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A header value as text, or an error naming the missing header.
fn header(headers: &HeaderMap, name: &'static str, url: &str) -> Result<String, HubError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| {
            bad_header(
                url,
                name,
                "is missing (is this a Hugging Face hub endpoint?)".into(),
            )
        })
}

fn bad_header(url: &str, header: &'static str, problem: String) -> HubError {
    HubError::BadHeader {
        url: url.to_string(),
        header,
        problem,
    }
}

/// Commit hashes and etags become file names in the cache: keep them to `[A-Za-z0-9_-]`.
fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn same_origin(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

fn network(url: &str, e: &reqwest::Error) -> HubError {
    HubError::Network {
        url: url.to_string(),
        message: describe(e),
    }
}

/// The error and its causes on one line (reqwest's own message is often just "error sending
/// request"). Requests never carry the token in the URL, so this cannot leak it.
fn describe(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_matches_known_digests() {
        // sha256("") and `git hash-object` of an empty file.
        let v = Verifier::for_etag(&"0".repeat(64), 0);
        assert_eq!(
            v.finish().map(|(_, h)| h).as_deref(),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        let v = Verifier::for_etag(&"0".repeat(40), 0);
        assert_eq!(
            v.finish().map(|(_, h)| h).as_deref(),
            Some("e69de29bb2d1d6434b8b29ae775ad8c2e48c5391")
        );
        // `printf 'hello\n' | git hash-object --stdin`
        let mut v = Verifier::for_etag(&"0".repeat(40), 6);
        v.update(b"hello\n");
        assert_eq!(
            v.finish().map(|(_, h)| h).as_deref(),
            Some("ce013625030ba8dba906f756967f9e9ca394464a")
        );
        assert!(Verifier::for_etag("abc-1", 3).finish().is_none());
    }

    #[test]
    fn safe_names_and_origins() {
        assert!(is_safe_name("0123abc"));
        assert!(!is_safe_name("../x") && !is_safe_name("") && !is_safe_name("a/b"));
        assert!(same_origin("http://127.0.0.1:5/a/b", "http://127.0.0.1:5"));
        assert!(!same_origin(
            "https://cdn.example/a",
            "https://huggingface.co"
        ));
    }
}
