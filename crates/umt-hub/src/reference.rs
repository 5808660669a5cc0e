//! Teacher references: a local path or `hf://OWNER/REPO[@REVISION]/PATH.safetensors`.
//!
//! The `hf://` form is the one huggingface_hub's `HfFileSystem` uses for model repos
//! (`hf://<repo_id>[@<revision>]/<path/in/repo>`): the revision sits right after the repo name.
//! A revision containing `/` is written percent-encoded (`@refs%2Fpr%2F1`), or plainly for the
//! hub's special refs `refs/pr/<N>` and `refs/convert/<name>`, exactly as `HfFileSystem` accepts.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::HubError;

/// The revision used when a reference names none (huggingface_hub `DEFAULT_REVISION`).
pub const DEFAULT_REVISION: &str = "main";

/// A file in a model repo on the hub, at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    /// `owner/name`.
    pub repo_id: String,
    /// Branch, tag or commit hash; `main` when the reference named none.
    pub revision: String,
    /// Path inside the repo, `/`-separated, e.g. `teachers/audio.safetensors`.
    pub path: String,
}

impl HubFile {
    /// A hub file, validated like a parsed reference (repo id, revision, path).
    pub fn new(
        repo_id: impl Into<String>,
        revision: impl Into<String>,
        path: impl Into<String>,
    ) -> Result<Self, HubError> {
        let file = Self {
            repo_id: repo_id.into(),
            revision: revision.into(),
            path: path.into(),
        };
        let shown = file.to_string();
        let bad = |part: String, reason: String| HubError::InvalidReference {
            reference: shown.clone(),
            part,
            reason,
        };
        validate_repo_id(&file.repo_id)
            .map_err(|r| bad(format!("repo id {:?}", file.repo_id), r))?;
        validate_revision(&file.revision)
            .map_err(|r| bad(format!("revision {:?}", file.revision), r))?;
        validate_path(&file.path).map_err(|r| bad(format!("path {:?}", file.path), r))?;
        Ok(file)
    }
}

impl fmt::Display for HubFile {
    /// The `hf://` form, with the revision percent-encoded where it contains `/`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hf://{}", self.repo_id)?;
        if self.revision != DEFAULT_REVISION {
            write!(f, "@{}", crate::url::quote(&self.revision, false))?;
        }
        write!(f, "/{}", self.path)
    }
}

/// Where a teacher checkpoint comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeacherRef {
    /// A safetensors file on this machine.
    Local(PathBuf),
    /// A safetensors file in a model repo on the hub.
    Hub(HubFile),
}

impl FromStr for TeacherRef {
    type Err = HubError;

    /// `hf://OWNER/REPO[@REVISION]/PATH.safetensors` is a hub file; anything else without a
    /// `scheme://` prefix is a local path. Errors name the offending part.
    fn from_str(reference: &str) -> Result<Self, HubError> {
        let bad = |part: String, reason: &str| HubError::InvalidReference {
            reference: reference.to_string(),
            part,
            reason: reason.to_string(),
        };
        let Some(rest) = reference.strip_prefix("hf://") else {
            if let Some((scheme, _)) = reference.split_once("://") {
                if !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '+')
                {
                    return Err(bad(
                        format!("scheme {scheme:?}"),
                        "is not supported: use a local path or hf://OWNER/REPO[@REVISION]/PATH.safetensors",
                    ));
                }
            }
            if reference.is_empty() {
                return Err(bad("path \"\"".into(), "is empty"));
            }
            return Ok(TeacherRef::Local(PathBuf::from(reference)));
        };
        let (owner, rest) = rest.split_once('/').ok_or_else(|| {
            bad(
                format!("{rest:?}"),
                "must be OWNER/REPO[@REVISION]/PATH.safetensors",
            )
        })?;
        if matches!(owner, "datasets" | "spaces") {
            return Err(bad(
                format!("repo type {owner:?}"),
                "is not supported: teachers live in model repos (hf://OWNER/REPO/...)",
            ));
        }
        let (name_and_rev, path) = split_repo_and_path(rest).ok_or_else(|| {
            bad(
                format!("{rest:?}"),
                "must be REPO[@REVISION]/PATH.safetensors (no file path)",
            )
        })?;
        let (name, revision) = match name_and_rev.split_once('@') {
            Some((name, rev)) => {
                let rev = crate::url::unquote(rev)
                    .ok_or_else(|| bad(format!("revision {rev:?}"), "has a bad %-escape"))?;
                (name, rev)
            }
            None => (name_and_rev, DEFAULT_REVISION.to_string()),
        };
        let repo_id = format!("{owner}/{name}");
        validate_repo_id(&repo_id).map_err(|r| bad(format!("repo id {repo_id:?}"), &r))?;
        validate_revision(&revision).map_err(|r| bad(format!("revision {revision:?}"), &r))?;
        validate_path(path).map_err(|r| bad(format!("path {path:?}"), &r))?;
        if !path.ends_with(".safetensors") {
            return Err(bad(
                format!("path {path:?}"),
                "must name a .safetensors file",
            ));
        }
        Ok(TeacherRef::Hub(HubFile {
            repo_id,
            revision,
            path: path.to_string(),
        }))
    }
}

impl fmt::Display for TeacherRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TeacherRef::Local(path) => write!(f, "{}", path.display()),
            TeacherRef::Hub(file) => write!(f, "{file}"),
        }
    }
}

/// Splits `NAME[@REV]/PATH`, letting an unencoded `@refs/pr/N` or `@refs/convert/NAME` keep its
/// slashes (huggingface_hub `SPECIAL_REFS_REVISION_REGEX`).
fn split_repo_and_path(rest: &str) -> Option<(&str, &str)> {
    if let Some(at) = rest.find('@') {
        if !rest[..at].contains('/') {
            let rev = &rest[at + 1..];
            for prefix in ["refs/pr/", "refs/convert/"] {
                if let Some(tail) = rev.strip_prefix(prefix) {
                    let is_pr = prefix == "refs/pr/";
                    let len = tail
                        .find(|c: char| {
                            if is_pr {
                                !c.is_ascii_digit()
                            } else {
                                !(c.is_alphanumeric() || c == '_')
                            }
                        })
                        .unwrap_or(tail.len());
                    if len > 0 && tail[len..].starts_with('/') {
                        let split = at + 1 + prefix.len() + len;
                        return Some((&rest[..split], &rest[split + 1..]));
                    }
                }
            }
        }
    }
    rest.split_once('/')
}

/// huggingface_hub `validate_repo_id` for `owner/name`: word characters, `-`, `.`; no `--` or
/// `..`; neither part starting or ending with `-` or `.`; at most 96 characters.
fn validate_repo_id(repo_id: &str) -> Result<(), String> {
    let parts: Vec<&str> = repo_id.split('/').collect();
    if parts.len() != 2 {
        return Err("must be OWNER/NAME".into());
    }
    if repo_id.len() > 96 {
        return Err(format!(
            "is {} characters long, at most 96 are allowed",
            repo_id.len()
        ));
    }
    for part in parts {
        if part.is_empty() {
            return Err("must be OWNER/NAME with neither part empty".into());
        }
        if !part
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err("may only contain letters, digits, '_', '-' and '.'".into());
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err("parts cannot start or end with '-' or '.'".into());
        }
    }
    if repo_id.contains("--") || repo_id.contains("..") {
        return Err("cannot contain '--' or '..'".into());
    }
    Ok(())
}

/// A revision becomes a file name under `refs/` (and a URL segment).
fn validate_revision(revision: &str) -> Result<(), String> {
    if revision.is_empty() {
        return Err("is empty (omit `@` for the default branch `main`)".into());
    }
    validate_components(revision, "has an empty, '.' or '..' component")
}

/// A path inside the repo: relative, `/`-separated.
fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("is empty".into());
    }
    validate_components(
        path,
        "must be relative with no empty, '.' or '..' component",
    )
}

/// No control characters or backslashes, and no empty, `.` or `..` `/`-separated component
/// (either would escape or alias folders of the cache).
fn validate_components(s: &str, component_problem: &str) -> Result<(), String> {
    if s.chars().any(|c| c.is_control() || c == '\\') {
        return Err("contains a control character or a backslash".into());
    }
    if s.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(component_problem.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(s: &str) -> HubFile {
        match s.parse::<TeacherRef>() {
            Ok(TeacherRef::Hub(file)) => file,
            other => panic!("{s}: expected a hub reference, got {other:?}"),
        }
    }

    fn err(s: &str) -> String {
        match s.parse::<TeacherRef>() {
            Err(e) => e.to_string(),
            Ok(r) => panic!("{s}: expected an error, got {r:?}"),
        }
    }

    #[test]
    fn local_paths() {
        for s in [
            "teachers/audio.safetensors",
            "/abs/x.safetensors",
            "hf:notascheme.safetensors",
        ] {
            assert_eq!(
                s.parse::<TeacherRef>().ok(),
                Some(TeacherRef::Local(PathBuf::from(s)))
            );
        }
    }

    #[test]
    fn hub_references_with_and_without_revision() {
        let f = hub("hf://umt-rs/vggsound-teachers/audio.safetensors");
        assert_eq!(
            (f.repo_id.as_str(), f.revision.as_str(), f.path.as_str()),
            ("umt-rs/vggsound-teachers", "main", "audio.safetensors")
        );
        let f = hub("hf://umt-rs/t@v1.0/sub/dir/visual.safetensors");
        assert_eq!(
            (f.repo_id.as_str(), f.revision.as_str(), f.path.as_str()),
            ("umt-rs/t", "v1.0", "sub/dir/visual.safetensors")
        );
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            hub(&format!("hf://o/r@{commit}/a.safetensors")).revision,
            commit
        );
        let f = hub("hf://o/r@refs%2Fpr%2F3/a.safetensors");
        assert_eq!(
            (f.revision.as_str(), f.path.as_str()),
            ("refs/pr/3", "a.safetensors")
        );
        let f = hub("hf://o/r@refs/pr/12/x/a.safetensors");
        assert_eq!(
            (f.revision.as_str(), f.path.as_str()),
            ("refs/pr/12", "x/a.safetensors")
        );
        let f = hub("hf://o/r@refs/convert/parquet/a.safetensors");
        assert_eq!(
            (f.revision.as_str(), f.path.as_str()),
            ("refs/convert/parquet", "a.safetensors")
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "hf://o/r/a.safetensors",
            "hf://o/r@v2/d/a.safetensors",
            "hf://o/r@refs%2Fpr%2F3/a.safetensors",
            "local/a.safetensors",
        ] {
            let parsed: TeacherRef = s.parse().expect(s);
            assert_eq!(parsed.to_string(), s);
            assert_eq!(parsed.to_string().parse::<TeacherRef>().ok(), Some(parsed));
        }
    }

    #[test]
    fn errors_name_the_bad_part() {
        assert!(err("s3://bucket/a.safetensors").contains("scheme \"s3\""));
        assert!(err("").contains("empty"));
        assert!(err("hf://owner").contains("OWNER/REPO"));
        assert!(err("hf://owner/repo").contains("no file path"));
        assert!(err("hf://datasets/o/r/a.safetensors").contains("repo type \"datasets\""));
        assert!(err("hf://o/r@/a.safetensors").contains("revision \"\""));
        assert!(err("hf://o/r@%zz/a.safetensors").contains("revision \"%zz\""));
        assert!(err("hf://o/r@a%2F..%2Fb/a.safetensors").contains("revision \"a/../b\""));
        assert!(err("hf://o/re--po/a.safetensors").contains("repo id \"o/re--po\""));
        assert!(err("hf://o/-repo/a.safetensors").contains("repo id \"o/-repo\""));
        assert!(err("hf://o/r$/a.safetensors").contains("repo id \"o/r$\""));
        assert!(err("hf://o/r/../a.safetensors").contains("path \"../a.safetensors\""));
        assert!(err("hf://o/r/a//b.safetensors").contains("path \"a//b.safetensors\""));
        assert!(err("hf://o/r/model.bin").contains("path \"model.bin\""));
        assert!(err("hf://o/r/model.bin").contains(".safetensors"));
    }

    #[test]
    fn hub_file_new_validates() {
        assert!(HubFile::new("o/r", "main", "config.json").is_ok());
        let e = HubFile::new("o", "main", "config.json")
            .expect_err("invalid")
            .to_string();
        assert!(e.contains("repo id \"o\""), "{e}");
        let e = HubFile::new("o/r", "main", "/etc/passwd")
            .expect_err("invalid")
            .to_string();
        assert!(e.contains("path \"/etc/passwd\""), "{e}");
    }
}
