//! Clip file names as downloaders write them: `{youtube_id}_{start:06}.mp4` by default.

use crate::error::{Error, Result};

/// A file-name pattern with the placeholders `{youtube_id}`, `{start}` and `{start:0N}` (start
/// seconds zero-padded to `N` digits). A pattern ending in `.*` matches any extension (clips
/// downloaded in several containers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    parts: Vec<Part>,
    any_extension: bool,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    YoutubeId,
    Start { width: usize },
}

/// The default pattern (the naming of the common VGGSound downloaders).
pub const DEFAULT_NAME_PATTERN: &str = "{youtube_id}_{start:06}.mp4";

impl NamePattern {
    /// Parses `pattern`; an unknown placeholder, an unclosed `{` or a `/` is an error.
    pub fn parse(pattern: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidConfig {
            field: "name_pattern",
            expected: format!("a file name with {{youtube_id}}, {{start}} or {{start:0N}} ({why})"),
            found: pattern.to_owned(),
        };
        let (body, any_extension) = match pattern.strip_suffix(".*") {
            Some(b) => (b, true),
            None => (pattern, false),
        };
        if body.contains(['/', '\\']) {
            return Err(bad("no path separators"));
        }
        let mut parts = Vec::new();
        let mut rest = body;
        let mut has_id = false;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..].find('}').ok_or_else(|| bad("unclosed `{`"))? + open;
            let name = &rest[open + 1..close];
            parts.push(match name {
                "youtube_id" => {
                    has_id = true;
                    Part::YoutubeId
                }
                "start" => Part::Start { width: 0 },
                _ => match name.strip_prefix("start:0").map(str::parse::<usize>) {
                    Some(Ok(width)) if width <= 20 => Part::Start { width },
                    _ => return Err(bad(&format!("unknown placeholder `{{{name}}}`"))),
                },
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        if !has_id {
            return Err(bad("{youtube_id} is required"));
        }
        Ok(Self {
            parts,
            any_extension,
            text: pattern.to_owned(),
        })
    }

    /// The file name of a clip (without extension when [`NamePattern::any_extension`]).
    pub fn render(&self, youtube_id: &str, start_seconds: u32) -> String {
        let mut s = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => s.push_str(l),
                Part::YoutubeId => s.push_str(youtube_id),
                Part::Start { width } => s.push_str(&format!("{start_seconds:0width$}")),
            }
        }
        s
    }

    /// Whether the pattern ends in `.*` (match the file stem, any extension).
    pub fn any_extension(&self) -> bool {
        self.any_extension
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Default for NamePattern {
    fn default() -> Self {
        Self {
            parts: vec![
                Part::YoutubeId,
                Part::Literal("_".into()),
                Part::Start { width: 6 },
                Part::Literal(".mp4".into()),
            ],
            any_extension: false,
            text: DEFAULT_NAME_PATTERN.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_downloader_names() {
        let p = NamePattern::parse(DEFAULT_NAME_PATTERN).unwrap();
        assert_eq!(p, NamePattern::default());
        assert_eq!(p.render("-0BKyt8iZ1I", 30), "-0BKyt8iZ1I_000030.mp4");
        let p = NamePattern::parse("{youtube_id}-{start}.*").unwrap();
        assert!(p.any_extension());
        assert_eq!(p.render("abc", 7), "abc-7");
    }

    #[test]
    fn rejects_bad_patterns() {
        for bad in [
            "{id}.mp4",
            "{youtube_id",
            "x/{youtube_id}",
            "{start}.mp4",
            "{youtube_id}_{start:x}",
        ] {
            assert!(
                matches!(
                    NamePattern::parse(bad),
                    Err(Error::InvalidConfig {
                        field: "name_pattern",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
