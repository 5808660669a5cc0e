//! The Hugging Face environment as an explicit value: [`HubConfig::from_env`] reads the variables
//! the Python tools read, with the same precedence; tests build one with [`HubConfig::from_vars`]
//! or the builder setters and never touch the process environment.

use std::fmt;
use std::path::{Path, PathBuf};

/// The hub used when `HF_ENDPOINT` is not set (huggingface_hub `constants.ENDPOINT`).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// An access token. Its `Debug` and `Display` print `<redacted>`, so a config or an error can be
/// logged without leaking it; only the HTTP layer reads it (as `Authorization: Bearer ...`).
#[derive(Clone, PartialEq, Eq)]
pub struct HfToken(String);

impl HfToken {
    /// Wraps a token; `None` if it is empty or only whitespace (huggingface_hub ignores those).
    pub fn new(token: impl Into<String>) -> Option<Self> {
        let token = token.into();
        let trimmed = token.trim();
        (!trimmed.is_empty()).then(|| Self(trimmed.to_string()))
    }

    /// The secret itself, for the `Authorization` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HfToken(<redacted>)")
    }
}

impl fmt::Display for HfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the cache is, which hub to ask, with which token, and whether to go online at all.
#[derive(Debug, Clone)]
pub struct HubConfig {
    endpoint: String,
    cache_dir: PathBuf,
    token: Option<HfToken>,
    offline: bool,
    progress: bool,
}

impl HubConfig {
    /// The configuration the Python `huggingface_hub` would use in this process (see
    /// [`HubConfig::from_vars`] for the variables and their precedence).
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The configuration from a variable lookup, with huggingface_hub's rules (`constants.py`):
    /// - endpoint: `HF_ENDPOINT` (trailing `/` removed), else `https://huggingface.co`;
    /// - `HF_HOME`: `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`;
    /// - cache: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE` (legacy), else `$HF_HOME/hub`;
    /// - token: `HF_TOKEN`, else the file `HF_TOKEN_PATH`, else the file `$HF_HOME/token`
    ///   (written by `huggingface-cli login`);
    /// - offline: `HF_HUB_OFFLINE` (or the legacy `TRANSFORMERS_OFFLINE`) is one of
    ///   `1`, `ON`, `YES`, `TRUE` (any case);
    /// - progress bars: off when `HF_HUB_DISABLE_PROGRESS_BARS` is true in the same sense (they
    ///   are hidden anyway when stderr is not a terminal).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let nonempty = |name: &str| var(name).filter(|v| !v.is_empty());
        let endpoint = nonempty("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let hf_home = match nonempty("HF_HOME") {
            Some(home) => expand_home(&home, &var),
            None => {
                let xdg = nonempty("XDG_CACHE_HOME")
                    .map(|x| expand_home(&x, &var))
                    .unwrap_or_else(|| home_dir(&var).join(".cache"));
                xdg.join("huggingface")
            }
        };
        let cache_dir = nonempty("HF_HUB_CACHE")
            .or_else(|| nonempty("HUGGINGFACE_HUB_CACHE"))
            .map(|c| expand_home(&c, &var))
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = nonempty("HF_TOKEN").and_then(HfToken::new).or_else(|| {
            let path = nonempty("HF_TOKEN_PATH")
                .map(|p| expand_home(&p, &var))
                .unwrap_or_else(|| hf_home.join("token"));
            std::fs::read_to_string(path).ok().and_then(HfToken::new)
        });
        let offline = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"]
            .iter()
            .any(|name| var(name).is_some_and(|v| is_true(&v)));
        let progress = !var("HF_HUB_DISABLE_PROGRESS_BARS").is_some_and(|v| is_true(&v));
        Self {
            endpoint: String::new(),
            cache_dir,
            token,
            offline,
            progress,
        }
        .with_endpoint(endpoint)
    }

    /// A configuration with an explicit cache directory and everything else at its default
    /// (public hub, no token, online, progress bars when stderr is a terminal).
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            cache_dir: cache_dir.into(),
            token: None,
            offline: false,
            progress: true,
        }
    }

    /// Sets the hub endpoint (`HF_ENDPOINT`), e.g. a mirror; a trailing `/` is removed.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into().trim_end_matches('/').to_string();
        self
    }

    /// Sets the hub cache directory (`HF_HUB_CACHE`), the folder holding `models--*`.
    pub fn with_cache_dir(mut self, cache_dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = cache_dir.into();
        self
    }

    /// Sets or clears the access token (`HF_TOKEN`).
    pub fn with_token(mut self, token: Option<HfToken>) -> Self {
        self.token = token;
        self
    }

    /// Cache only, never the network (`HF_HUB_OFFLINE=1`).
    pub fn with_offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Shows download progress bars on stderr when it is a terminal (default true).
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// The hub endpoint, without a trailing `/`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The hub cache directory (the folder holding `models--*`).
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The access token, if any (it prints as `<redacted>`).
    pub fn token(&self) -> Option<&HfToken> {
        self.token.as_ref()
    }

    /// Whether only the cache may be used.
    pub fn offline(&self) -> bool {
        self.offline
    }

    /// Whether progress bars may be shown.
    pub fn progress(&self) -> bool {
        self.progress
    }
}

/// huggingface_hub `_is_true`: `value.upper() in {"1", "ON", "YES", "TRUE"}`.
fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

fn home_dir(var: &impl Fn(&str) -> Option<String>) -> PathBuf {
    var("HOME")
        .or_else(|| var("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// `os.path.expanduser` for a leading `~`.
fn expand_home(path: &str, var: &impl Fn(&str) -> Option<String>) -> PathBuf {
    match path.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            home_dir(var).join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_follow_home() {
        let c = HubConfig::from_vars(vars(&[("HOME", "/home/u")]));
        assert_eq!(c.endpoint(), DEFAULT_ENDPOINT);
        assert_eq!(c.cache_dir(), Path::new("/home/u/.cache/huggingface/hub"));
        assert!(c.token().is_none());
        assert!(!c.offline());
        assert!(c.progress());
    }

    #[test]
    fn precedence_of_cache_variables() {
        let c = HubConfig::from_vars(vars(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]));
        assert_eq!(c.cache_dir(), Path::new("/x/huggingface/hub"));
        let c = HubConfig::from_vars(vars(&[("XDG_CACHE_HOME", "/x"), ("HF_HOME", "/hf")]));
        assert_eq!(c.cache_dir(), Path::new("/hf/hub"));
        let c = HubConfig::from_vars(vars(&[
            ("HF_HOME", "/hf"),
            ("HUGGINGFACE_HUB_CACHE", "/legacy"),
        ]));
        assert_eq!(c.cache_dir(), Path::new("/legacy"));
        let c = HubConfig::from_vars(vars(&[
            ("HF_HOME", "/hf"),
            ("HUGGINGFACE_HUB_CACHE", "/legacy"),
            ("HF_HUB_CACHE", "/cache"),
        ]));
        assert_eq!(c.cache_dir(), Path::new("/cache"));
        let c = HubConfig::from_vars(vars(&[("HOME", "/h"), ("HF_HUB_CACHE", "~/c")]));
        assert_eq!(c.cache_dir(), Path::new("/h/c"));
    }

    #[test]
    fn endpoint_offline_and_progress() {
        let c = HubConfig::from_vars(vars(&[
            ("HF_ENDPOINT", "http://127.0.0.1:8080/"),
            ("HF_HUB_OFFLINE", "yes"),
            ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ]));
        assert_eq!(c.endpoint(), "http://127.0.0.1:8080");
        assert!(c.offline());
        assert!(!c.progress());
        for (value, expected) in [
            ("1", true),
            ("TRUE", true),
            ("on", true),
            ("0", false),
            ("", false),
        ] {
            let c = HubConfig::from_vars(vars(&[("HF_HUB_OFFLINE", value)]));
            assert_eq!(c.offline(), expected, "HF_HUB_OFFLINE={value:?}");
        }
        let c = HubConfig::from_vars(vars(&[("TRANSFORMERS_OFFLINE", "1")]));
        assert!(c.offline());
    }

    #[test]
    fn token_from_variable_then_file_and_never_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().to_string_lossy().to_string();
        std::fs::write(dir.path().join("token"), "hf_from_file\n").expect("write token");
        let c = HubConfig::from_vars(vars(&[("HF_HOME", &home)]));
        assert_eq!(c.token().map(HfToken::expose), Some("hf_from_file"));
        let c = HubConfig::from_vars(vars(&[("HF_HOME", &home), ("HF_TOKEN", "hf_secret_value")]));
        let token = c.token().expect("token from HF_TOKEN");
        assert_eq!(token.expose(), "hf_secret_value");
        for printed in [format!("{c:?}"), format!("{token}"), format!("{token:?}")] {
            assert!(
                !printed.contains("hf_secret_value"),
                "token leaked in {printed}"
            );
            assert!(printed.contains("redacted"), "{printed}");
        }
        assert!(HfToken::new("  ").is_none());
    }
}
