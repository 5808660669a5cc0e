//! The official `vggsound.csv`: `youtube_id,start_seconds,label,split`, no header (a header
//! line is accepted and skipped), labels may hold commas inside quotes.

use std::collections::BTreeSet;
use std::path::Path;

use umt_data::vggsound::Split;

use crate::error::{Error, Result};

/// One row of the CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRow {
    /// YouTube video id (may start with `-`).
    pub youtube_id: String,
    /// Start of the 10 s clip in the video, in seconds.
    pub start_seconds: u32,
    /// Class name.
    pub label: String,
    /// `train` or `test`.
    pub split: Split,
    /// 1-based line in the CSV.
    pub line: u64,
}

impl CsvRow {
    /// The clip's id and folder name, `{youtube_id}_{start_seconds:06}` (the name the common
    /// downloaders give the clip file, without its extension).
    pub fn clip_id(&self) -> String {
        clip_id(&self.youtube_id, self.start_seconds)
    }
}

/// `{youtube_id}_{start_seconds:06}`.
pub fn clip_id(youtube_id: &str, start_seconds: u32) -> String {
    format!("{youtube_id}_{start_seconds:06}")
}

/// Reads the CSV at `path`. A first line whose `start_seconds` field is not a number and
/// reads `start_seconds` (any case) is taken as a header and skipped; every other malformed
/// line is an error naming the line and field.
pub fn read_csv(path: &Path) -> Result<Vec<CsvRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(path)
        .map_err(|e| csv_error(path, e))?;
    let mut rows = Vec::new();
    for (k, record) in reader.records().enumerate() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map_or(k as u64 + 1, |p| p.line());
        if record.len() == 1 && record.get(0).is_some_and(|f| f.trim().is_empty()) {
            continue; // A blank line.
        }
        let field_err = |field: &'static str, expected: &str, found: &str| Error::CsvField {
            path: path.to_path_buf(),
            line,
            field,
            expected: expected.to_owned(),
            found: found.to_owned(),
        };
        if record.len() != 4 {
            return Err(field_err(
                "record",
                "4 fields: youtube_id,start_seconds,label,split",
                &format!("{} fields", record.len()),
            ));
        }
        let get = |i: usize| record.get(i).unwrap_or("").trim();
        let (youtube_id, start, label, split) = (get(0), get(1), get(2), get(3));
        let start_seconds = match parse_seconds(start) {
            Some(s) => s,
            None if rows.is_empty() && start.eq_ignore_ascii_case("start_seconds") => continue,
            None => {
                return Err(field_err(
                    "start_seconds",
                    "a whole number of seconds >= 0",
                    start,
                ))
            }
        };
        if youtube_id.is_empty() || youtube_id.contains(['/', '\\']) {
            return Err(field_err(
                "youtube_id",
                "a non-empty id without path separators",
                youtube_id,
            ));
        }
        if label.is_empty() || label.contains(['\n', '\r']) {
            return Err(field_err(
                "label",
                "a non-empty class name on one line",
                label,
            ));
        }
        let split =
            Split::parse(split).ok_or_else(|| field_err("split", "`train` or `test`", split))?;
        rows.push(CsvRow {
            youtube_id: youtube_id.to_owned(),
            start_seconds,
            label: label.to_owned(),
            split,
            line,
        });
    }
    Ok(rows)
}

/// `30` or `30.0` (whole seconds only).
fn parse_seconds(s: &str) -> Option<u32> {
    if let Ok(v) = s.parse::<u32>() {
        return Some(v);
    }
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX)).then_some(v as u32)
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(source) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        kind => Error::CsvSyntax {
            path: path.to_path_buf(),
            line,
            message: format!("{kind:?}"),
        },
    }
}

/// The class list: every label of the CSV, sorted by name and deduplicated. A class's id is
/// its position, so ids are the same on every machine and do not depend on which clips could
/// be downloaded.
pub fn class_list(rows: &[CsvRow]) -> Vec<String> {
    rows.iter()
        .map(|r| r.label.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<CsvRow>> {
        parse_bytes(text.as_bytes())
    }

    fn parse_bytes(bytes: &[u8]) -> Result<Vec<CsvRow>> {
        let dir = tempfile::tempdir().map_err(crate::error::io("tempdir"))?;
        let p = dir.path().join("v.csv");
        std::fs::write(&p, bytes).map_err(crate::error::io(&p))?;
        read_csv(&p)
    }

    #[test]
    fn official_rows_with_quoted_commas_and_optional_header() {
        let body = "---g-f_I2yQ,1,\"people marching\",test\n\
                    -0BKyt8iZ1I,30,\"dog barking, howling\",train\n";
        let rows = parse(body).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].youtube_id, "---g-f_I2yQ");
        assert_eq!(rows[0].clip_id(), "---g-f_I2yQ_000001");
        assert_eq!(rows[1].label, "dog barking, howling");
        assert_eq!(rows[1].split, Split::Train);
        assert_eq!(rows[1].line, 2);
        let with_header = parse(&format!("youtube_id,start_seconds,label,split\n{body}")).unwrap();
        assert_eq!(with_header, {
            let mut r = rows.clone();
            r.iter_mut().for_each(|r| r.line += 1);
            r
        });
        assert_eq!(
            class_list(&rows),
            vec![
                "dog barking, howling".to_owned(),
                "people marching".to_owned()
            ]
        );
    }

    #[test]
    fn bad_fields_name_line_and_field() {
        let e = parse("a,1,x,train\nb,one,x,train\n").unwrap_err();
        assert!(
            matches!(&e, Error::CsvField { line: 2, field: "start_seconds", found, .. } if found == "one"),
            "{e}"
        );
        let e = parse("a,1,x,val\n").unwrap_err();
        assert!(
            matches!(
                e,
                Error::CsvField {
                    line: 1,
                    field: "split",
                    ..
                }
            ),
            "{e}"
        );
        let e = parse("a,1,x\n").unwrap_err();
        assert!(
            matches!(
                e,
                Error::CsvField {
                    line: 1,
                    field: "record",
                    ..
                }
            ),
            "{e}"
        );
        let e = parse("a,1,x,train\n,2,y,test\n").unwrap_err();
        assert!(
            matches!(
                e,
                Error::CsvField {
                    line: 2,
                    field: "youtube_id",
                    ..
                }
            ),
            "{e}"
        );
        let e = parse_bytes(b"a,1,x,train\nb,2,\xff\xfe,train\n").unwrap_err();
        assert!(matches!(e, Error::CsvSyntax { line: 2, .. }), "{e}");
        let e = read_csv(Path::new("/nonexistent/vggsound.csv")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
    }
}
