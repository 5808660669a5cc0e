//! WAV decoding to mono `f32` in [-1, 1].
//!
//! A small RIFF parser (rather than `hound`) so that every problem becomes a precise, typed
//! [`Error`] naming the file: a truncated chunk says how many bytes it announced and how many are
//! there, an A-law file says "A-law", a 12-bit file says "12 bits".
//!
//! Supported encodings (plain `WAVE_FORMAT_PCM`/`WAVE_FORMAT_IEEE_FLOAT` headers and
//! `WAVE_FORMAT_EXTENSIBLE` with the matching sub-format GUID):
//!
//! | encoding | bits | mapping to f32 |
//! |---|---|---|
//! | unsigned integer PCM | 8 | `(b - 128) / 128` |
//! | signed integer PCM | 16, 24, 32 | `i / 2^(bits-1)` |
//! | IEEE float | 32, 64 | unchanged (NaN/inf rejected) |
//!
//! Integer samples therefore land in [-1, 1). Float samples are passed through unchanged: a
//! float file that clips above 1.0 keeps its values. Multichannel audio is mixed to mono by the
//! arithmetic mean of the channels of each frame.

use std::path::Path;

use crate::error::{Error, Result};

/// How the samples of a WAV file were stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    /// Linear integer PCM (8-bit unsigned, 16/24/32-bit signed) with this many bits.
    Int(u16),
    /// IEEE float with this many bits (32 or 64).
    Float(u16),
}

/// Decoded audio: mono samples in [-1, 1] and their rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// Mono samples (the mean over the source channels), nominally in [-1, 1].
    pub samples: Vec<f32>,
    /// Sample rate in Hz.
    pub sample_rate_hz: u32,
    /// Number of channels in the source file (before the mono mix).
    pub source_channels: u16,
    /// Sample format of the source file.
    pub source_format: SampleFormat,
}

impl Audio {
    /// Duration in seconds.
    pub fn duration_seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.sample_rate_hz)
    }
}

/// Reads and decodes a WAV file, mixing all channels to mono.
///
/// Errors: [`Error::Io`] (missing file), [`Error::NotWav`], [`Error::Truncated`],
/// [`Error::Malformed`], [`Error::UnsupportedEncoding`], [`Error::UnsupportedBitDepth`],
/// [`Error::NonFiniteSample`]; each names `path`.
pub fn read_wav(path: impl AsRef<Path>) -> Result<Audio> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_wav(&bytes, path)
}

const WAVE_FORMAT_PCM: u16 = 0x0001;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 0x0003;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// The 14 bytes that follow the format tag in every standard `KSDATAFORMAT_SUBTYPE_*` GUID.
const SUBFORMAT_GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];

struct Fmt {
    format_tag: u16,
    channels: u16,
    sample_rate_hz: u32,
    block_align: u16,
    bits_per_sample: u16,
}

/// Decodes WAV bytes already in memory; `path` only names the source in errors.
pub fn decode_wav(bytes: &[u8], path: &Path) -> Result<Audio> {
    let p = || path.to_path_buf();
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(Error::NotWav {
            path: p(),
            found: describe_magic(bytes),
        });
    }
    let mut fmt: Option<Fmt> = None;
    let mut data: Option<&[u8]> = None;
    let mut pos = 12usize;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32_le(&bytes[pos + 4..pos + 8]) as usize;
        let body_start = pos + 8;
        let available = bytes.len() - body_start;
        if id == b"data" {
            if size > available {
                return Err(Error::Truncated {
                    path: p(),
                    what: "data chunk",
                    expected_bytes: size as u64,
                    found_bytes: available as u64,
                });
            }
            data = Some(&bytes[body_start..body_start + size]);
        } else if id == b"fmt " {
            if size > available {
                return Err(Error::Truncated {
                    path: p(),
                    what: "fmt chunk",
                    expected_bytes: size as u64,
                    found_bytes: available as u64,
                });
            }
            fmt = Some(parse_fmt(&bytes[body_start..body_start + size], path)?);
        } else if size > available {
            // A trailing chunk we do not need (LIST, id3, ...) may be cut short: ignore it.
            break;
        }
        if data.is_some() && fmt.is_some() {
            break;
        }
        // Chunks are padded to an even size.
        pos = body_start.saturating_add(size).saturating_add(size & 1);
    }
    let fmt = fmt.ok_or_else(|| Error::Malformed {
        path: p(),
        problem: if bytes.len() < 20 {
            "file ends before the fmt chunk".to_owned()
        } else {
            "no fmt chunk before the end of the file".to_owned()
        },
    })?;
    let data = data.ok_or_else(|| Error::Truncated {
        path: p(),
        what: "data chunk header",
        expected_bytes: 8,
        found_bytes: bytes.len().saturating_sub(pos) as u64,
    })?;
    decode_samples(&fmt, data, path)
}

fn parse_fmt(body: &[u8], path: &Path) -> Result<Fmt> {
    let p = || path.to_path_buf();
    if body.len() < 16 {
        return Err(Error::Malformed {
            path: p(),
            problem: format!("fmt chunk has {} bytes, expected at least 16", body.len()),
        });
    }
    let mut fmt = Fmt {
        format_tag: u16_le(&body[0..2]),
        channels: u16_le(&body[2..4]),
        sample_rate_hz: u32_le(&body[4..8]),
        block_align: u16_le(&body[12..14]),
        bits_per_sample: u16_le(&body[14..16]),
    };
    if fmt.format_tag == WAVE_FORMAT_EXTENSIBLE {
        // cbSize(2) validBits(2) channelMask(4) subFormat GUID(16)
        if body.len() < 40 {
            return Err(Error::Malformed {
                path: p(),
                problem: format!(
                    "WAVE_FORMAT_EXTENSIBLE fmt chunk has {} bytes, expected 40",
                    body.len()
                ),
            });
        }
        let guid = &body[24..40];
        if guid[2..16] != SUBFORMAT_GUID_TAIL {
            return Err(Error::UnsupportedEncoding {
                path: p(),
                format_tag: WAVE_FORMAT_EXTENSIBLE,
                name: "WAVE_FORMAT_EXTENSIBLE with a non-standard sub-format GUID",
            });
        }
        fmt.format_tag = u16_le(&guid[0..2]);
        let valid_bits = u16_le(&body[18..20]);
        // Samples are left-justified in their container, so a 20-in-24-bit file decodes
        // correctly as 24-bit. A valid-bits value larger than the container is inconsistent.
        if valid_bits > fmt.bits_per_sample {
            return Err(Error::Malformed {
                path: p(),
                problem: format!(
                    "{valid_bits} valid bits per sample in a {}-bit container",
                    fmt.bits_per_sample
                ),
            });
        }
    }
    Ok(fmt)
}

fn decode_samples(fmt: &Fmt, data: &[u8], path: &Path) -> Result<Audio> {
    let p = || path.to_path_buf();
    let (source_format, bytes_per_sample) = match fmt.format_tag {
        WAVE_FORMAT_PCM => match fmt.bits_per_sample {
            8 | 16 | 24 | 32 => (
                SampleFormat::Int(fmt.bits_per_sample),
                usize::from(fmt.bits_per_sample / 8),
            ),
            bits => {
                return Err(Error::UnsupportedBitDepth {
                    path: p(),
                    encoding: "integer PCM",
                    bits,
                    expected: "8, 16, 24 or 32",
                })
            }
        },
        WAVE_FORMAT_IEEE_FLOAT => match fmt.bits_per_sample {
            32 | 64 => (
                SampleFormat::Float(fmt.bits_per_sample),
                usize::from(fmt.bits_per_sample / 8),
            ),
            bits => {
                return Err(Error::UnsupportedBitDepth {
                    path: p(),
                    encoding: "IEEE float",
                    bits,
                    expected: "32 or 64",
                })
            }
        },
        tag => {
            return Err(Error::UnsupportedEncoding {
                path: p(),
                format_tag: tag,
                name: encoding_name(tag),
            })
        }
    };
    let channels = usize::from(fmt.channels);
    if channels == 0 {
        return Err(Error::Malformed {
            path: p(),
            problem: "0 channels".to_owned(),
        });
    }
    if fmt.sample_rate_hz == 0 {
        return Err(Error::Malformed {
            path: p(),
            problem: "sample rate 0 Hz".to_owned(),
        });
    }
    let frame_bytes = channels * bytes_per_sample;
    if usize::from(fmt.block_align) != frame_bytes {
        return Err(Error::Malformed {
            path: p(),
            problem: format!(
                "block align {} bytes, expected {channels} channels x {bytes_per_sample} bytes = {frame_bytes}",
                fmt.block_align
            ),
        });
    }
    if data.len() % frame_bytes != 0 {
        return Err(Error::Truncated {
            path: p(),
            what: "last sample frame",
            expected_bytes: data.len().div_ceil(frame_bytes) as u64 * frame_bytes as u64,
            found_bytes: data.len() as u64,
        });
    }
    let interleaved: Vec<f32> = match source_format {
        SampleFormat::Int(8) => data
            .iter()
            .map(|&b| (f32::from(b) - 128.0) / 128.0)
            .collect(),
        SampleFormat::Int(16) => data
            .chunks_exact(2)
            .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32_768.0)
            .collect(),
        SampleFormat::Int(24) => data
            .chunks_exact(3)
            .map(|c| (i32::from_le_bytes([0, c[0], c[1], c[2]]) >> 8) as f32 / 8_388_608.0)
            .collect(),
        SampleFormat::Int(_) => data
            .chunks_exact(4)
            .map(|c| {
                (f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])) / 2_147_483_648.0) as f32
            })
            .collect(),
        SampleFormat::Float(32) => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        SampleFormat::Float(_) => data
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b) as f32
            })
            .collect(),
    };
    if let Some((index, &value)) = interleaved.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::NonFiniteSample {
            path: p(),
            index,
            value,
        });
    }
    let samples = if channels == 1 {
        interleaved
    } else {
        let scale = 1.0 / channels as f32;
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * scale)
            .collect()
    };
    Ok(Audio {
        samples,
        sample_rate_hz: fmt.sample_rate_hz,
        source_channels: fmt.channels,
        source_format,
    })
}

fn encoding_name(tag: u16) -> &'static str {
    match tag {
        0x0002 => "Microsoft ADPCM",
        0x0006 => "A-law",
        0x0007 => "mu-law",
        0x0011 => "IMA ADPCM",
        0x0031 => "GSM 6.10",
        0x0055 => "MPEG layer 3",
        _ => "unknown",
    }
}

fn describe_magic(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "an empty file".to_owned();
    }
    let head = &bytes[..bytes.len().min(12)];
    let text: String = head
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        })
        .collect();
    format!("{:?} ({} bytes in total)", text, bytes.len())
}

fn u16_le(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
