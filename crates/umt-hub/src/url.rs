//! Percent-encoding as Python's `urllib.parse.quote`/`unquote`, which huggingface_hub uses for
//! revisions (`quote(revision, safe="")`) and file paths (`quote(path)`, keeping `/`).

/// Percent-encodes everything but `A-Za-z0-9_.-~` (and `/` when `keep_slash`).
pub(crate) fn quote(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'_' | b'.' | b'-' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes; `None` on a malformed escape or a result that is not UTF-8.
pub(crate) fn unquote(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_matches_python() {
        // urllib.parse.quote("refs/pr/1", safe="") == "refs%2Fpr%2F1"
        assert_eq!(quote("refs/pr/1", false), "refs%2Fpr%2F1");
        // urllib.parse.quote("dir/a b+c.safetensors") == "dir/a%20b%2Bc.safetensors"
        assert_eq!(
            quote("dir/a b+c.safetensors", true),
            "dir/a%20b%2Bc.safetensors"
        );
        assert_eq!(quote("é", true), "%C3%A9");
        assert_eq!(unquote("refs%2fpr%2F1").as_deref(), Some("refs/pr/1"));
        assert_eq!(unquote("%C3%A9").as_deref(), Some("é"));
        assert_eq!(unquote("%G1"), None);
        assert_eq!(unquote("%4"), None);
    }
}
