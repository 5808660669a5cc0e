//! WAV decoding round trips (every sample format, written by `hound` and by hand), bad input
//! (each a typed error naming the file) and the whole front end, including a real FSDD file.

use std::path::{Path, PathBuf};

use umt_audio::{read_wav, Crop, Error, FrontEnd, FrontEndConfig, SampleFormat, StftConfig};

fn write_hound(
    path: &Path,
    spec: hound::WavSpec,
    write: impl FnOnce(&mut hound::WavWriter<std::io::BufWriter<std::fs::File>>),
) {
    let mut w = hound::WavWriter::create(path, spec).expect("create test WAV");
    write(&mut w);
    w.finalize().expect("finalize test WAV");
}

fn spec(channels: u16, bits: u16, float: bool) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate: 22_050,
        bits_per_sample: bits,
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    }
}

/// A WAV file built by hand: `fmt ` chunk (plain, or `WAVE_FORMAT_EXTENSIBLE` with the given
/// sub-format tag), an unrelated `LIST` chunk, then `data`.
fn wav_bytes(tag: u16, channels: u16, bits: u16, data: &[u8], extensible: Option<u16>) -> Vec<u8> {
    let block_align = channels * bits.div_ceil(8);
    let rate = 16_000u32;
    let mut fmt = Vec::new();
    fmt.extend(extensible.map_or(tag, |_| 0xFFFE).to_le_bytes());
    fmt.extend(channels.to_le_bytes());
    fmt.extend(rate.to_le_bytes());
    fmt.extend((rate * u32::from(block_align)).to_le_bytes());
    fmt.extend(block_align.to_le_bytes());
    fmt.extend(bits.to_le_bytes());
    if let Some(sub) = extensible {
        fmt.extend(22u16.to_le_bytes());
        fmt.extend(bits.to_le_bytes());
        fmt.extend(0u32.to_le_bytes());
        fmt.extend(sub.to_le_bytes());
        fmt.extend([
            0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
        ]);
    }
    let mut body = b"WAVE".to_vec();
    body.extend(b"fmt ");
    body.extend((fmt.len() as u32).to_le_bytes());
    body.extend(&fmt);
    body.extend(b"LIST");
    body.extend(3u32.to_le_bytes());
    body.extend(b"abc\0"); // odd size + pad byte
    body.extend(b"data");
    body.extend((data.len() as u32).to_le_bytes());
    body.extend(data);
    let mut out = b"RIFF".to_vec();
    out.extend((body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

#[test]
fn integer_and_float_round_trips_via_hound() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("i8.wav");
    let v8: [i8; 5] = [-128, -1, 0, 1, 127];
    write_hound(&p, spec(1, 8, false), |w| {
        v8.iter().for_each(|&s| w.write_sample(s).unwrap())
    });
    let a = read_wav(&p).unwrap();
    assert_eq!(
        (a.sample_rate_hz, a.source_channels, a.source_format),
        (22_050, 1, SampleFormat::Int(8))
    );
    assert_eq!(a.samples, v8.map(|s| f32::from(s) / 128.0));

    let v16: [i16; 5] = [i16::MIN, -1, 0, 12_345, i16::MAX];
    write_hound(&p, spec(1, 16, false), |w| {
        v16.iter().for_each(|&s| w.write_sample(s).unwrap())
    });
    assert_eq!(
        read_wav(&p).unwrap().samples,
        v16.map(|s| f32::from(s) / 32_768.0)
    );

    let v24: [i32; 5] = [-(1 << 23), -1, 0, 4_000_000, (1 << 23) - 1];
    write_hound(&p, spec(1, 24, false), |w| {
        v24.iter().for_each(|&s| w.write_sample(s).unwrap())
    });
    let a = read_wav(&p).unwrap();
    assert_eq!(a.source_format, SampleFormat::Int(24));
    assert_eq!(a.samples, v24.map(|s| s as f32 / 8_388_608.0));

    let v32: [i32; 4] = [i32::MIN, -1, 1 << 30, i32::MAX];
    write_hound(&p, spec(1, 32, false), |w| {
        v32.iter().for_each(|&s| w.write_sample(s).unwrap())
    });
    let a = read_wav(&p).unwrap();
    assert_eq!(a.source_format, SampleFormat::Int(32));
    assert_eq!(
        a.samples,
        v32.map(|s| (f64::from(s) / 2_147_483_648.0) as f32)
    );
    assert!(a.samples.iter().all(|v| (-1.0..=1.0).contains(v)));

    let vf: [f32; 4] = [-1.0, -0.25, 0.0, 0.999];
    write_hound(&p, spec(1, 32, true), |w| {
        vf.iter().for_each(|&s| w.write_sample(s).unwrap())
    });
    let a = read_wav(&p).unwrap();
    assert_eq!(a.source_format, SampleFormat::Float(32));
    assert_eq!(a.samples, vf);
}

#[test]
fn stereo_and_multichannel_mix_to_mono() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("stereo.wav");
    // Frames (L, R): (1000, 3000), (-2000, 0).
    write_hound(&p, spec(2, 16, false), |w| {
        [1000i16, 3000, -2000, 0]
            .iter()
            .for_each(|&s| w.write_sample(s).unwrap())
    });
    let a = read_wav(&p).unwrap();
    assert_eq!(a.source_channels, 2);
    assert_eq!(a.samples, [2000.0 / 32_768.0, -1000.0 / 32_768.0]);

    // Six-channel float, WAVE_FORMAT_EXTENSIBLE, written by hand.
    let frame = [0.1f32, 0.2, 0.3, -0.4, 0.5, 0.9];
    let data: Vec<u8> = frame
        .iter()
        .chain(&frame)
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = write_bytes(dir.path(), "6ch.wav", &wav_bytes(0, 6, 32, &data, Some(3)));
    let a = read_wav(&p).unwrap();
    assert_eq!(
        (a.source_channels, a.source_format),
        (6, SampleFormat::Float(32))
    );
    assert_eq!(a.samples.len(), 2);
    assert!((a.samples[0] - 1.6 / 6.0).abs() < 1e-7, "{}", a.samples[0]);
}

#[test]
fn hand_written_headers_plain_and_extensible() {
    let dir = tempfile::tempdir().unwrap();
    // 24-bit extensible PCM: -2^23 and 2^22.
    let data = [0x00, 0x00, 0x80, 0x00, 0x00, 0x40];
    let p = write_bytes(
        dir.path(),
        "ext24.wav",
        &wav_bytes(0, 1, 24, &data, Some(1)),
    );
    let a = read_wav(&p).unwrap();
    assert_eq!(
        (a.sample_rate_hz, a.source_format),
        (16_000, SampleFormat::Int(24))
    );
    assert_eq!(a.samples, [-1.0, 0.5]);
    // Plain 8-bit unsigned: 0 -> -1, 128 -> 0, 192 -> 0.5.
    let p = write_bytes(
        dir.path(),
        "u8.wav",
        &wav_bytes(1, 1, 8, &[0, 128, 192], None),
    );
    assert_eq!(read_wav(&p).unwrap().samples, [-1.0, 0.0, 0.5]);
    // 64-bit float.
    let data: Vec<u8> = [0.25f64, -0.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = write_bytes(dir.path(), "f64.wav", &wav_bytes(3, 1, 64, &data, None));
    assert_eq!(read_wav(&p).unwrap().samples, [0.25, -0.5]);
}

fn assert_names_file(err: &Error, path: &Path) {
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error does not name the file: {msg}"
    );
}

#[test]
fn bad_input_gives_typed_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.wav");
    let e = read_wav(&missing).unwrap_err();
    assert!(
        matches!(&e, Error::Io { path, .. } if path == &missing),
        "{e:?}"
    );
    assert_names_file(&e, &missing);

    let good = wav_bytes(1, 1, 16, &[0u8; 200], None);
    let p = write_bytes(dir.path(), "truncated.wav", &good[..good.len() - 51]);
    let e = read_wav(&p).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Truncated {
                what: "data chunk",
                expected_bytes: 200,
                found_bytes: 149,
                ..
            }
        ),
        "{e:?}"
    );
    assert_names_file(&e, &p);
    let p = write_bytes(dir.path(), "header_only.wav", &good[..30]);
    let e = read_wav(&p).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Truncated {
                what: "fmt chunk",
                ..
            }
        ),
        "{e:?}"
    );

    let p = write_bytes(dir.path(), "notes.wav", b"this is a text file, not audio\n");
    let e = read_wav(&p).unwrap_err();
    assert!(matches!(e, Error::NotWav { .. }), "{e:?}");
    assert_names_file(&e, &p);
    let p = write_bytes(dir.path(), "empty.wav", b"");
    assert!(matches!(read_wav(&p).unwrap_err(), Error::NotWav { .. }));

    let p = write_bytes(
        dir.path(),
        "alaw.wav",
        &wav_bytes(6, 1, 8, &[0xD5; 10], None),
    );
    let e = read_wav(&p).unwrap_err();
    assert!(
        matches!(
            e,
            Error::UnsupportedEncoding {
                format_tag: 6,
                name: "A-law",
                ..
            }
        ),
        "{e:?}"
    );
    assert_names_file(&e, &p);

    let p = write_bytes(
        dir.path(),
        "pcm12.wav",
        &wav_bytes(1, 1, 12, &[0; 10], None),
    );
    let e = read_wav(&p).unwrap_err();
    assert!(
        matches!(e, Error::UnsupportedBitDepth { bits: 12, .. }),
        "{e:?}"
    );
    assert_names_file(&e, &p);

    let p = write_bytes(
        dir.path(),
        "ext_alaw.wav",
        &wav_bytes(0, 1, 8, &[0; 4], Some(6)),
    );
    assert!(matches!(
        read_wav(&p).unwrap_err(),
        Error::UnsupportedEncoding { format_tag: 6, .. }
    ));

    let data: Vec<u8> = [0.5f32, f32::NAN]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = write_bytes(dir.path(), "nan.wav", &wav_bytes(3, 1, 32, &data, None));
    assert!(matches!(
        read_wav(&p).unwrap_err(),
        Error::NonFiniteSample { index: 1, .. }
    ));

    let p = write_bytes(
        dir.path(),
        "half_frame.wav",
        &wav_bytes(1, 2, 16, &[0; 6], None),
    );
    assert!(matches!(
        read_wav(&p).unwrap_err(),
        Error::Truncated {
            what: "last sample frame",
            ..
        }
    ));

    // A valid WAV with zero samples decodes, but cannot become a fixed-length clip.
    let p = write_bytes(
        dir.path(),
        "silent_zero_length.wav",
        &wav_bytes(1, 1, 16, &[], None),
    );
    assert!(read_wav(&p).unwrap().samples.is_empty());
    let front_end = FrontEnd::new(FrontEndConfig::paper()).unwrap();
    let e = front_end.process_file(&p, Crop::Start).unwrap_err();
    assert!(
        matches!(&e, Error::EmptyClip { path: Some(q), target_len: 160_000 } if q == &p),
        "{e:?}"
    );
    assert_names_file(&e, &p);
}

#[test]
fn front_end_resamples_tiles_and_crops() {
    let config = FrontEndConfig {
        clip_seconds: 0.5,
        stft: StftConfig {
            n_fft: 256,
            win_length: 256,
            hop_length: 128,
            ..StftConfig::paper()
        },
        ..FrontEndConfig::paper()
    };
    let front_end = FrontEnd::new(config).unwrap();
    assert_eq!(front_end.clip_len_samples(), 8_000);
    assert_eq!(front_end.output_shape(), (129, 63));
    // 0.2 s at 44.1 kHz -> 3200 samples at 16 kHz -> tiled to 8000.
    let x: Vec<f32> = (0..8_820)
        .map(|i| ((i as f32) * 0.05).sin() * 0.5)
        .collect();
    let w = front_end.waveform(&x, 44_100, Crop::Start).unwrap();
    assert_eq!(w.len(), 8_000);
    assert_eq!(&w[..1_600], &w[3_200..4_800]);
    let spec = front_end
        .process_samples(&x, 44_100, Crop::Random { seed: 9 })
        .unwrap();
    assert_eq!(spec.shape(), (129, 63));
    assert_eq!(
        spec,
        front_end
            .process_samples(&x, 44_100, Crop::Random { seed: 9 })
            .unwrap()
    );
    // Config serde: deny unknown fields, defaults are the paper's.
    let cfg: FrontEndConfig = serde_json::from_str(r#"{"clip_seconds": 2.0}"#).unwrap();
    assert_eq!(cfg.sample_rate_hz, 16_000);
    assert!(serde_json::from_str::<FrontEndConfig>(r#"{"clip_secs": 2.0}"#).is_err());
    let bad = FrontEndConfig {
        clip_seconds: 0.01,
        ..FrontEndConfig::paper()
    };
    assert!(matches!(
        FrontEnd::new(bad),
        Err(Error::InvalidConfig {
            field: "clip_seconds",
            ..
        })
    ));
}

#[test]
fn real_fsdd_recording() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/fsdd/recordings/0_george_0.wav");
    if !path.exists() {
        eprintln!(
            "SKIPPED real_fsdd_recording: {} is absent (the shared data folder is not mounted); \
             nothing about real FSDD files was checked",
            path.display()
        );
        return;
    }
    let audio = read_wav(&path).unwrap();
    // 8 kHz mono 16-bit PCM, 0x12a0 data bytes; the first sample is 0xfa2f = -1489.
    assert_eq!((audio.sample_rate_hz, audio.source_channels), (8_000, 1));
    assert_eq!(audio.source_format, SampleFormat::Int(16));
    assert_eq!(audio.samples.len(), 0x12a0 / 2);
    assert_eq!(audio.samples[0], -1489.0 / 32_768.0);
    let front_end = FrontEnd::new(FrontEndConfig::paper()).unwrap();
    let spec = front_end.process_file(&path, Crop::Start).unwrap();
    assert_eq!(spec.shape(), (513, 313));
    assert!(spec.as_slice().iter().all(|v| v.is_finite() && *v >= 0.0));
    // Speech has energy: the mean magnitude is well above zero.
    let mean = spec.as_slice().iter().sum::<f32>() / spec.as_slice().len() as f32;
    assert!(mean > 1e-3, "{mean}");
}
