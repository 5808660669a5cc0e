//! The IDX format of MNIST (LeCun et al., <http://yann.lecun.com/exdb/mnist/>): a big-endian
//! header — two zero bytes, a type code (`0x08` = unsigned byte, the only type MNIST uses), the
//! number of dimensions — then one big-endian `u32` per dimension, then the data in row-major
//! order. Files may be gzip-compressed (`*.gz`, detected by the gzip magic bytes).
//!
//! ```
//! use umt_data::idx::parse_idx;
//!
//! // Two 1 × 2 "images": magic 0x00000803, dims 2, 1, 2, then 4 bytes.
//! let bytes = [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 10, 20, 30, 40];
//! let a = parse_idx(&bytes, "<memory>".as_ref())?;
//! assert_eq!(a.dims, vec![2, 1, 2]);
//! assert_eq!(a.item(1), &[30, 40]);
//! # Ok::<(), umt_data::Error>(())
//! ```

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// Type code of unsigned bytes, the element type of every MNIST file.
const TYPE_U8: u8 = 0x08;

/// An IDX array of unsigned bytes: `dims[0]` items of `dims[1..]` each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions (`[N]` for labels, `[N, 28, 28]` for MNIST images).
    pub dims: Vec<usize>,
    /// The values, row-major, `dims.iter().product()` of them.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// Number of items (`dims[0]`).
    pub fn len(&self) -> usize {
        self.dims.first().copied().unwrap_or(0)
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per item (the product of `dims[1..]`; 1 for a label file).
    pub fn item_len(&self) -> usize {
        self.dims.iter().skip(1).product()
    }

    /// Item `i`, flat (`item_len()` values). Panics if `i >= len()` (callers index within
    /// `len()`, which the parser has checked against the data).
    pub fn item(&self, i: usize) -> &[u8] {
        let n = self.item_len();
        &self.data[i * n..(i + 1) * n]
    }
}

fn idx_err(path: &Path, expected: impl Into<String>, found: impl Into<String>) -> Error {
    Error::Idx {
        path: path.to_path_buf(),
        expected: expected.into(),
        found: found.into(),
    }
}

/// Parses an uncompressed IDX buffer of unsigned bytes; `path` names the source in errors.
///
/// Errors ([`Error::Idx`]): a header shorter than announced, a bad magic (non-zero first bytes,
/// a type other than `0x08`, zero dimensions), or a data size that differs from the product of
/// the dimensions (truncated or trailing bytes).
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    if bytes.len() < 4 {
        return Err(idx_err(
            path,
            "a 4-byte IDX magic number",
            format!("{} bytes", bytes.len()),
        ));
    }
    let (zero, ty, ndims) = ([bytes[0], bytes[1]], bytes[2], bytes[3] as usize);
    if zero != [0, 0] || ty != TYPE_U8 || ndims == 0 {
        return Err(idx_err(
            path,
            "magic 0x0000_08_NN (unsigned bytes, NN ≥ 1 dimensions)",
            format!("0x{:02x}{:02x}_{ty:02x}_{ndims:02x}", zero[0], zero[1]),
        ));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(idx_err(
            path,
            format!("a header of {header} bytes ({ndims} dimensions)"),
            format!("{} bytes", bytes.len()),
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| idx_err(path, "dimensions whose product fits in memory", "overflow"))?;
    let found = bytes.len() - header;
    if found != expected {
        return Err(idx_err(
            path,
            format!("{expected} data bytes for dimensions {dims:?}"),
            format!("{found} bytes"),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Reads an IDX file, gunzipping it first when it starts with the gzip magic (`1f 8b`).
/// Errors name `path`: [`Error::MissingFile`], [`Error::Io`] (unreadable or corrupt gzip
/// stream) and [`Error::Idx`].
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    if !path.is_file() {
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            what: "MNIST IDX file",
        });
    }
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io)?;
        parse_idx(&out, path)
    } else {
        parse_idx(&raw, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ty: u8, dims: &[u32]) -> Vec<u8> {
        let mut b = vec![0, 0, ty, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn parses_labels_and_images() {
        let mut b = header(8, &[3]);
        b.extend_from_slice(&[7, 2, 1]);
        let a = parse_idx(&b, Path::new("l")).unwrap();
        assert_eq!(
            (a.dims.clone(), a.item_len(), a.item(2)),
            (vec![3], 1, &[1u8][..])
        );
        let mut b = header(8, &[2, 2, 3]);
        b.extend(0..12u8);
        let a = parse_idx(&b, Path::new("i")).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a.item(1), &[6, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn corrupt_buffers_are_typed_errors_naming_the_file() {
        let p = Path::new("corrupt.idx");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0, 0], "2 bytes"),
            (
                {
                    let mut b = header(0x0D, &[1]); // float data: not MNIST
                    b.push(0);
                    b
                },
                "_0d_",
            ),
            (
                {
                    let mut b = header(8, &[1]);
                    b[0] = 1;
                    b.push(0);
                    b
                },
                "0x0100",
            ),
            (vec![0, 0, 8, 3, 0, 0, 0, 1], "8 bytes"),
            (
                {
                    let mut b = header(8, &[2, 2]);
                    b.extend_from_slice(&[1, 2, 3]); // truncated
                    b
                },
                "3 bytes",
            ),
            (
                {
                    let mut b = header(8, &[1]);
                    b.extend_from_slice(&[1, 2]); // trailing byte
                    b
                },
                "2 bytes",
            ),
            (header(8, &[]), "_00"),
        ];
        for (bytes, needle) in cases {
            let e = parse_idx(&bytes, p).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, Error::Idx { .. }), "{msg}");
            assert!(msg.contains("corrupt.idx") && msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn missing_and_corrupt_gzip_files_name_the_file() {
        let dir = std::env::temp_dir().join(format!("umt-idx-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("nope.gz");
        assert!(matches!(read_idx(&missing), Err(Error::MissingFile { .. })));
        let bad = dir.join("bad.gz");
        std::fs::write(&bad, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        let e = read_idx(&bad).unwrap_err();
        assert!(
            matches!(e, Error::Io { .. }) && e.to_string().contains("bad.gz"),
            "{e}"
        );
        let good = dir.join("good.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = header(8, &[2]);
        b.extend_from_slice(&[4, 5]);
        std::io::Write::write_all(&mut enc, &b).unwrap();
        std::fs::write(&good, enc.finish().unwrap()).unwrap();
        assert_eq!(read_idx(&good).unwrap().data, vec![4, 5]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
