//! Downloads against a real HTTP server on 127.0.0.1 (random port) that answers the hub's
//! requests with the headers huggingface_hub relies on, and offline use of a cache pre-filled
//! in the Python layout. No internet.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha1::Sha1;
use sha2::{Digest, Sha256};
use umt_hub::{HfToken, Hub, HubConfig, HubError, HubFile, TeacherRef};

const COMMIT: &str = "4f2a0b1c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f40";
const PRIVATE_COMMIT: &str = "aaaaaaaaaabbbbbbbbbbccccccccccdddddddddd";
const TOKEN: &str = "hf_test_secret_token_value";

/// What the fake hub does to the bytes it serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Serve {
    Honest,
    /// One byte flipped: same size, different hash.
    Corrupt,
    /// The last byte missing.
    Truncated,
}

struct RepoFile {
    bytes: Vec<u8>,
    /// Stored with git LFS: the hub redirects to the CDN and reports the SHA-256.
    lfs: bool,
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    url: String,
    authorization: Option<String>,
}

/// The hub and its CDN (another port, so another origin: the client must not follow the CDN
/// redirect while resolving, exactly as with huggingface.co and its CDN).
struct FakeHub {
    base: String,
    servers: Vec<Arc<tiny_http::Server>>,
    threads: Vec<JoinHandle<()>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn git_sha1_hex(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn teacher_bytes() -> Vec<u8> {
    (0..3000u32).map(|i| (i * 7 + 3) as u8).collect()
}

fn config_bytes() -> Vec<u8> {
    br#"{"architecture": "resnet18"}"#.to_vec()
}

/// Public repo `umt-rs/teachers` and private repo `umt-rs/private`.
fn repos() -> HashMap<String, (String, bool, HashMap<String, RepoFile>)> {
    let mut public = HashMap::new();
    public.insert(
        "audio.safetensors".to_string(),
        RepoFile {
            bytes: teacher_bytes(),
            lfs: true,
        },
    );
    public.insert(
        "sub/visual.safetensors".to_string(),
        RepoFile {
            bytes: vec![9u8; 1500],
            lfs: true,
        },
    );
    public.insert(
        "config.json".to_string(),
        RepoFile {
            bytes: config_bytes(),
            lfs: false,
        },
    );
    public.insert(
        "train.log".to_string(),
        RepoFile {
            bytes: b"log".to_vec(),
            lfs: false,
        },
    );
    let mut private = HashMap::new();
    private.insert(
        "audio.safetensors".to_string(),
        RepoFile {
            bytes: vec![1u8; 100],
            lfs: true,
        },
    );
    let mut repos = HashMap::new();
    repos.insert(
        "umt-rs/teachers".to_string(),
        (COMMIT.to_string(), false, public),
    );
    repos.insert(
        "umt-rs/private".to_string(),
        (PRIVATE_COMMIT.to_string(), true, private),
    );
    repos
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

type Reply = tiny_http::Response<std::io::Cursor<Vec<u8>>>;

fn error_reply(status: u16, code: &str, message: &str) -> Reply {
    tiny_http::Response::from_data(message.as_bytes().to_vec())
        .with_status_code(status)
        .with_header(header("X-Error-Code", code))
        .with_header(header("X-Error-Message", message))
}

impl FakeHub {
    fn start(serve: Serve) -> Self {
        let bind = || Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1:0"));
        let url = |s: &tiny_http::Server| {
            format!("http://{}", s.server_addr().to_ip().expect("ip address"))
        };
        let (hub, cdn) = (bind(), bind());
        let (base, cdn_base) = (url(&hub), url(&cdn));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let threads = [hub.clone(), cdn.clone()]
            .into_iter()
            .map(|server| {
                let (seen, cdn_base) = (seen.clone(), cdn_base.clone());
                std::thread::spawn(move || {
                    let repos = repos();
                    for request in server.incoming_requests() {
                        let authorization = request
                            .headers()
                            .iter()
                            .find(|h| h.field.equiv("Authorization"))
                            .map(|h| h.value.to_string());
                        seen.lock().expect("log").push(Seen {
                            method: request.method().to_string(),
                            url: request.url().to_string(),
                            authorization: authorization.clone(),
                        });
                        let reply = route(
                            &repos,
                            &cdn_base,
                            serve,
                            request.url(),
                            authorization.as_deref(),
                        );
                        let _ = request.respond(reply);
                    }
                })
            })
            .collect();
        Self {
            base,
            servers: vec![hub, cdn],
            threads,
            seen,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }

    fn stop(&mut self) {
        for server in &self.servers {
            server.unblock();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.servers.clear();
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop();
    }
}

fn route(
    repos: &HashMap<String, (String, bool, HashMap<String, RepoFile>)>,
    cdn_base: &str,
    serve: Serve,
    url: &str,
    authorization: Option<&str>,
) -> Reply {
    if let Some(sha) = url.strip_prefix("/cdn/") {
        let Some(file) = repos
            .values()
            .flat_map(|r| r.2.values())
            .find(|f| sha256_hex(&f.bytes) == sha)
        else {
            return error_reply(404, "", "no such object");
        };
        let mut bytes = file.bytes.clone();
        match serve {
            Serve::Honest => {}
            Serve::Corrupt => bytes[10] ^= 0xff,
            Serve::Truncated => {
                bytes.pop();
            }
        }
        return tiny_http::Response::from_data(bytes);
    }
    let (api, rest) = match url.strip_prefix("/api/models/") {
        Some(rest) => (true, rest),
        None => (false, url.trim_start_matches('/')),
    };
    let parts: Vec<&str> = rest.splitn(5, '/').collect();
    if parts.len() < 4 {
        return error_reply(404, "", "bad route");
    }
    let repo_id = format!("{}/{}", parts[0], parts[1]);
    let Some((commit, private, files)) = repos.get(&repo_id) else {
        return error_reply(404, "RepoNotFound", "Repository not found");
    };
    if *private && authorization != Some(&format!("Bearer {TOKEN}")) {
        return error_reply(401, "RepoNotFound", "Invalid username or password.");
    }
    let revision = parts[3].replace("%2F", "/");
    if revision != "main" && revision != *commit {
        return error_reply(
            404,
            "RevisionNotFound",
            &format!("Invalid rev id: {revision}"),
        );
    }
    if api {
        let siblings: Vec<_> = files
            .keys()
            .map(|p| serde_json::json!({ "rfilename": p }))
            .collect();
        let body = serde_json::json!({ "id": repo_id, "sha": commit, "siblings": siblings });
        return tiny_http::Response::from_data(body.to_string().into_bytes())
            .with_header(header("Content-Type", "application/json"));
    }
    let path = parts.get(4).copied().unwrap_or("");
    let Some(file) = files.get(path) else {
        return error_reply(404, "EntryNotFound", &format!("{path} does not exist"));
    };
    let reply = if file.lfs {
        let sha = sha256_hex(&file.bytes);
        tiny_http::Response::from_data(Vec::new())
            .with_status_code(302)
            .with_header(header("Location", &format!("{cdn_base}/cdn/{sha}")))
            .with_header(header("X-Linked-Etag", &format!("\"{sha}\"")))
            .with_header(header("X-Linked-Size", &file.bytes.len().to_string()))
            .with_header(header(
                "ETag",
                "\"0000000000000000000000000000000000000000\"",
            ))
    } else {
        tiny_http::Response::from_data(file.bytes.clone()).with_header(header(
            "ETag",
            &format!("\"{}\"", git_sha1_hex(&file.bytes)),
        ))
    };
    reply.with_header(header("X-Repo-Commit", commit))
}

fn config(hub: &FakeHub, cache: &Path) -> HubConfig {
    HubConfig::new(cache)
        .with_endpoint(&hub.base)
        .with_progress(false)
}

fn file(repo: &str, revision: &str, path: &str) -> HubFile {
    HubFile::new(repo, revision, path).expect("valid hub file")
}

fn fetch(config: &HubConfig, file: &HubFile) -> Result<PathBuf, HubError> {
    umt_hub::resolve(&TeacherRef::Hub(file.clone()), config)
}

/// Every entry under `dir` as huggingface_hub's fixture lists it: relative path → `dir`,
/// `file` or the symlink's target.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .to_string();
            let kind = match (std::fs::read_link(&path), entry.file_type()) {
                (Ok(target), _) => target.to_string_lossy().to_string(),
                (_, Ok(t)) if t.is_dir() => "dir".to_string(),
                _ => "file".to_string(),
            };
            if kind == "dir" {
                walk(&path, root, out);
            }
            out.insert(rel, kind);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn names(tree: &BTreeMap<String, String>) -> Vec<&str> {
    tree.keys().map(String::as_str).collect()
}

#[test]
fn first_fetch_lands_in_the_python_cache_layout() {
    let hub = FakeHub::start(Serve::Honest);
    let cache = tempfile::tempdir().expect("tempdir");
    let cfg = config(&hub, cache.path());
    let path = fetch(&cfg, &file("umt-rs/teachers", "main", "audio.safetensors")).expect("fetch");
    let nested = fetch(
        &cfg,
        &file("umt-rs/teachers", "main", "sub/visual.safetensors"),
    )
    .expect("nested");
    let json = fetch(&cfg, &file("umt-rs/teachers", "main", "config.json")).expect("config.json");

    let sha = sha256_hex(&teacher_bytes());
    let visual_sha = sha256_hex(&[9u8; 1500]);
    let git = git_sha1_hex(&config_bytes());
    let repo = cache.path().join("models--umt-rs--teachers");
    assert_eq!(
        path,
        repo.join("snapshots")
            .join(COMMIT)
            .join("audio.safetensors")
    );
    assert_eq!(
        nested,
        repo.join("snapshots")
            .join(COMMIT)
            .join("sub/visual.safetensors")
    );
    assert_eq!(
        json,
        repo.join("snapshots").join(COMMIT).join("config.json")
    );
    assert_eq!(std::fs::read(&path).expect("read"), teacher_bytes());
    assert_eq!(std::fs::read(&json).expect("read"), config_bytes());
    // Exactly what huggingface_hub writes: refs/main without newline, relative symlinks.
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).expect("ref"),
        COMMIT
    );
    assert_eq!(
        std::fs::read_link(&path).expect("link"),
        Path::new(&format!("../../blobs/{sha}"))
    );
    assert_eq!(
        std::fs::read_link(&nested).expect("link"),
        Path::new(&format!("../../../blobs/{visual_sha}"))
    );
    assert_eq!(
        std::fs::read_link(&json).expect("link"),
        Path::new(&format!("../../blobs/{git}"))
    );
    // The tree huggingface_hub wrote for the same repo (data-prep/golden/hub/python_layout.py).
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-prep/golden/hub/python_layout.json");
    let python: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture).expect("read python_layout.json"))
            .expect("json");
    assert_eq!(python["commit"], COMMIT);
    let python_tree: BTreeMap<String, String> =
        serde_json::from_value(python["tree"].clone()).expect("tree of strings");
    #[cfg(unix)]
    assert_eq!(
        tree(&repo),
        python_tree,
        "layout differs from huggingface_hub's"
    );
    #[cfg(not(unix))]
    assert_eq!(names(&tree(&repo)), names(&python_tree));
    // HEAD to resolve, then the LFS file from the CDN the hub redirected to.
    let seen = hub.seen();
    assert_eq!(seen.len(), 6, "3 × (HEAD, GET): {seen:?}");
    assert_eq!(seen[0].method, "HEAD");
    assert_eq!(
        seen[0].url,
        "/umt-rs/teachers/resolve/main/audio.safetensors"
    );
    assert_eq!(
        (seen[1].method.as_str(), seen[1].url.as_str()),
        ("GET", format!("/cdn/{sha}").as_str())
    );
    assert!(
        seen.iter().all(|s| s.authorization.is_none()),
        "no token configured, none sent"
    );
}

#[test]
fn second_fetch_is_served_from_the_cache_with_the_server_stopped() {
    let mut hub = FakeHub::start(Serve::Honest);
    let cache = tempfile::tempdir().expect("tempdir");
    let cfg = config(&hub, cache.path());
    let f = file("umt-rs/teachers", "main", "audio.safetensors");
    let first = fetch(&cfg, &f).expect("first fetch");
    // Online again: the hub is asked for the commit, but nothing is downloaded twice.
    let again = fetch(&cfg, &f).expect("second fetch");
    assert_eq!(again, first);
    assert_eq!(hub.seen().iter().filter(|s| s.method == "GET").count(), 1);
    hub.stop();
    let offline_server = fetch(&cfg, &f).expect("hub unreachable: the cached copy is used");
    assert_eq!(offline_server, first);
    let by_commit =
        fetch(&cfg, &file("umt-rs/teachers", COMMIT, "audio.safetensors")).expect("by commit");
    assert_eq!(by_commit, first);
    // Unreachable and not cached: an error naming the file.
    let err = fetch(&cfg, &file("umt-rs/teachers", "main", "config.json")).expect_err("not cached");
    assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
}

/// A cache laid out by hand exactly as huggingface_hub leaves it.
fn prefill_python_cache(cache: &Path) -> PathBuf {
    let repo = cache.join("models--umt-rs--teachers");
    let sha = sha256_hex(&teacher_bytes());
    std::fs::create_dir_all(repo.join("blobs")).expect("mkdir");
    std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
    std::fs::create_dir_all(repo.join("snapshots").join(COMMIT)).expect("mkdir");
    std::fs::write(repo.join("blobs").join(&sha), teacher_bytes()).expect("blob");
    std::fs::write(repo.join("refs/main"), COMMIT).expect("ref");
    let pointer = repo
        .join("snapshots")
        .join(COMMIT)
        .join("audio.safetensors");
    #[cfg(unix)]
    std::os::unix::fs::symlink(format!("../../blobs/{sha}"), &pointer).expect("symlink");
    #[cfg(not(unix))]
    std::fs::write(&pointer, teacher_bytes()).expect("copy");
    pointer
}

#[test]
fn offline_uses_the_cache_and_names_what_is_missing() {
    let hub = FakeHub::start(Serve::Honest);
    let cache = tempfile::tempdir().expect("tempdir");
    let pointer = prefill_python_cache(cache.path());
    let cfg = config(&hub, cache.path()).with_offline(true);
    let found = fetch(&cfg, &file("umt-rs/teachers", "main", "audio.safetensors")).expect("cached");
    assert_eq!(found, pointer);
    assert_eq!(std::fs::read(&found).expect("read"), teacher_bytes());
    let hub_ref: TeacherRef = "hf://umt-rs/teachers/audio.safetensors"
        .parse()
        .expect("parse");
    assert_eq!(umt_hub::resolve(&hub_ref, &cfg).expect("resolve"), pointer);

    let err = fetch(&cfg, &file("umt-rs/teachers", "v2", "audio.safetensors"))
        .expect_err("v2 not cached");
    let msg = err.to_string();
    assert!(matches!(err, HubError::NotCachedOffline { .. }), "{msg}");
    for part in [
        "umt-rs/teachers",
        "\"v2\"",
        "audio.safetensors",
        "HF_HUB_OFFLINE",
    ] {
        assert!(msg.contains(part), "{part} missing from: {msg}");
    }
    let empty = tempfile::tempdir().expect("tempdir");
    let err = fetch(
        &config(&hub, empty.path()).with_offline(true),
        &file("umt-rs/teachers", "main", "audio.safetensors"),
    )
    .expect_err("empty cache");
    assert!(err.to_string().contains("audio.safetensors"), "{err}");
    assert!(
        hub.seen().is_empty(),
        "offline mode made requests: {:?}",
        hub.seen()
    );
}

#[test]
fn corrupted_or_truncated_downloads_are_rejected_and_never_cached() {
    for (serve, expected) in [
        (Serve::Corrupt, "sha256"),
        (Serve::Truncated, "expected 3000 bytes"),
    ] {
        let hub = FakeHub::start(serve);
        let cache = tempfile::tempdir().expect("tempdir");
        let err = fetch(
            &config(&hub, cache.path()),
            &file("umt-rs/teachers", "main", "audio.safetensors"),
        )
        .expect_err("bad download");
        match (&err, serve) {
            (HubError::HashMismatch { expected: e, .. }, Serve::Corrupt) => {
                assert_eq!(e, &sha256_hex(&teacher_bytes()))
            }
            (
                HubError::SizeMismatch {
                    expected: 3000,
                    found: 2999,
                    ..
                },
                Serve::Truncated,
            ) => {}
            _ => panic!("unexpected error {err}"),
        }
        assert!(err.to_string().contains(expected), "{err}");
        let repo = cache.path().join("models--umt-rs--teachers");
        // Only the empty blobs folder remains: no blob, no temporary file, no snapshot, no ref.
        assert_eq!(names(&tree(&repo)), ["blobs"], "left in the cache");
    }
}

#[test]
fn missing_revision_repo_and_file_are_named() {
    let hub = FakeHub::start(Serve::Honest);
    let cache = tempfile::tempdir().expect("tempdir");
    let cfg = config(&hub, cache.path());
    let err = fetch(
        &cfg,
        &file("umt-rs/teachers", "no-such-branch", "audio.safetensors"),
    )
    .expect_err("404");
    assert!(
        matches!(err, HubError::RevisionNotFound { ref revision, .. } if revision == "no-such-branch"),
        "{err}"
    );
    assert!(err.to_string().contains("\"no-such-branch\""), "{err}");
    let err = fetch(
        &cfg,
        &file("umt-rs/teachers", "main", "missing.safetensors"),
    )
    .expect_err("404");
    assert!(matches!(err, HubError::EntryNotFound { .. }), "{err}");
    assert!(err.to_string().contains("missing.safetensors"), "{err}");
    let err = fetch(&cfg, &file("umt-rs/nothing", "main", "a.safetensors")).expect_err("404");
    assert!(matches!(err, HubError::RepoNotFound { .. }), "{err}");
    assert!(err.to_string().contains("umt-rs/nothing"), "{err}");
    assert!(
        tree(cache.path()).is_empty(),
        "errors wrote to the cache: {:?}",
        tree(cache.path())
    );
}

#[test]
fn private_repo_needs_a_token_sent_as_bearer_and_never_printed() {
    let hub = FakeHub::start(Serve::Honest);
    let cache = tempfile::tempdir().expect("tempdir");
    let f = file("umt-rs/private", "main", "audio.safetensors");
    let err = fetch(&config(&hub, cache.path()), &f).expect_err("401");
    assert!(matches!(err, HubError::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");

    let wrong = config(&hub, cache.path()).with_token(HfToken::new("hf_wrong_token_value"));
    let err = fetch(&wrong, &f).expect_err("refused token");
    let shown = format!("{err} {err:?} {wrong:?}");
    assert!(
        !shown.contains("hf_wrong_token_value"),
        "token printed: {shown}"
    );
    assert!(shown.contains("refused"), "{shown}");

    let right = config(&hub, cache.path()).with_token(HfToken::new(TOKEN));
    let path = fetch(&right, &f).expect("authorised fetch");
    assert_eq!(std::fs::read(path).expect("read"), vec![1u8; 100]);
    let bearer = format!("Bearer {TOKEN}");
    assert!(hub
        .seen()
        .iter()
        .any(|s| s.method == "HEAD" && s.authorization.as_deref() == Some(bearer.as_str())));
    // The token stays on the hub: the CDN (another host) never sees it.
    let cdn: Vec<Seen> = hub
        .seen()
        .into_iter()
        .filter(|s| s.url.starts_with("/cdn/"))
        .collect();
    assert!(
        !cdn.is_empty() && cdn.iter().all(|s| s.authorization.is_none()),
        "{cdn:?}"
    );
}

#[test]
fn hf_endpoint_and_cache_come_from_the_environment_variables() {
    let hub = FakeHub::start(Serve::Honest);
    let cache = tempfile::tempdir().expect("tempdir");
    let cache_dir = cache.path().to_string_lossy().to_string();
    let vars: HashMap<&str, String> = HashMap::from([
        ("HF_ENDPOINT", format!("{}/", hub.base)),
        ("HF_HUB_CACHE", cache_dir),
        ("HF_TOKEN", TOKEN.to_string()),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1".to_string()),
    ]);
    let cfg = HubConfig::from_vars(|name| vars.get(name).cloned());
    assert_eq!(cfg.endpoint(), hub.base);
    let path = fetch(&cfg, &file("umt-rs/private", "main", "audio.safetensors")).expect("fetch");
    assert!(path.starts_with(cache.path().join("models--umt-rs--private")));
    assert!(!hub.seen().is_empty());
}

/// The whole teacher set of `umt-rs/teachers` at `revision`.
fn pull(config: HubConfig, revision: &str) -> Result<Vec<umt_hub::PulledFile>, HubError> {
    umt_hub::block_on(async {
        Hub::new(config)?
            .pull("umt-rs/teachers", revision, &[])
            .await
    })?
}

#[test]
fn pull_fetches_the_teacher_set_at_one_commit() {
    let mut hub = FakeHub::start(Serve::Honest);
    let cache = tempfile::tempdir().expect("tempdir");
    let cfg = config(&hub, cache.path());
    let pulled = pull(cfg.clone(), "main").expect("pull");
    let mut names: Vec<&str> = pulled.iter().map(|p| p.path.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["audio.safetensors", "config.json", "sub/visual.safetensors"],
        "train.log is not part of a set"
    );
    let repo = cache.path().join("models--umt-rs--teachers");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).expect("ref"),
        COMMIT
    );
    assert!(!repo.join("refs").join(COMMIT).exists());
    assert!(hub
        .seen()
        .iter()
        .any(|s| s.url == "/api/models/umt-rs/teachers/revision/main"));

    hub.stop();
    let offline = cfg.clone().with_offline(true);
    let again = pull(offline, "main").expect("offline pull from the cache");
    let mut again_names: Vec<&str> = again.iter().map(|p| p.path.as_str()).collect();
    again_names.sort();
    assert_eq!(again_names, names);

    let err = pull(cfg.with_offline(true), "v9").expect_err("nothing cached for v9");
    assert!(matches!(err, HubError::NoCachedSnapshot { .. }), "{err}");
    assert!(err.to_string().contains("\"v9\""), "{err}");
}

#[test]
fn local_references_are_checked_for_existence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let present = dir.path().join("teacher.safetensors");
    std::fs::write(&present, b"x").expect("write");
    let cfg = HubConfig::new(dir.path()).with_offline(true);
    let found = umt_hub::resolve(&TeacherRef::Local(present.clone()), &cfg).expect("exists");
    assert_eq!(found, present);
    let missing = dir.path().join("missing.safetensors");
    let err = umt_hub::resolve(&TeacherRef::Local(missing.clone()), &cfg).expect_err("missing");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}
