//! AV-MNIST construction end to end: on tiny handmade sources (IDX gz files and 8 kHz WAV
//! files written here), and on the real MNIST + FSDD in `../shared/data` when present.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use umt_data::avmnist::{
    build, load_prepared, parse_recording_name, write_prepared, AvMnistConfig, AvMnistData,
};
use umt_data::Error;

fn idx_gz(path: &Path, dims: &[u32], data: &[u8]) {
    let mut bytes = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&bytes).unwrap();
    std::fs::write(path, enc.finish().unwrap()).unwrap();
}

/// A 16-bit mono PCM WAV file.
fn wav(path: &Path, rate: u32, samples: &[i16]) {
    let data_len = (samples.len() * 2) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

/// Tiny sources: MNIST-like images (a bright bar whose row encodes the digit, plus a little
/// per-image texture), 30 training and 10 test images per digit; FSDD-like recordings, 2
/// speakers × takes 0–6 per digit (takes 0–4 test), a tone whose pitch encodes the digit.
fn tiny_sources(root: &Path) -> (PathBuf, PathBuf) {
    let mnist = root.join("mnist");
    let fsdd = root.join("fsdd").join("recordings");
    std::fs::create_dir_all(&mnist).unwrap();
    std::fs::create_dir_all(&fsdd).unwrap();
    for (prefix, per_digit) in [("train", 30usize), ("t10k", 10)] {
        let n = 10 * per_digit;
        let mut images = vec![0u8; n * 784];
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let d = i % 10;
            labels.push(d as u8);
            let img = &mut images[i * 784..(i + 1) * 784];
            for x in 4..24 {
                img[(2 + 2 * d) * 28 + x] = 200;
            }
            img[(i * 7) % 784] = 255;
        }
        idx_gz(
            &mnist.join(format!("{prefix}-images-idx3-ubyte.gz")),
            &[n as u32, 28, 28],
            &images,
        );
        idx_gz(
            &mnist.join(format!("{prefix}-labels-idx1-ubyte.gz")),
            &[n as u32],
            &labels,
        );
    }
    for d in 0..10 {
        for speaker in ["ann", "bob"] {
            for take in 0..7 {
                let f = 300.0 + 250.0 * d as f32 + 10.0 * take as f32;
                let len = 1500 + 300 * take;
                let s: Vec<i16> = (0..len)
                    .map(|j| {
                        (8000.0 * (std::f32::consts::TAU * f * j as f32 / 8000.0).sin()) as i16
                    })
                    .collect();
                wav(&fsdd.join(format!("{d}_{speaker}_{take}.wav")), 8000, &s);
            }
        }
    }
    (mnist, root.join("fsdd"))
}

fn tiny_cfg() -> AvMnistConfig {
    AvMnistConfig {
        train_samples: 50,
        test_samples: 30,
        ..AvMnistConfig::default()
    }
}

fn quiet(_: &str, _: u64, _: u64) {}

fn all(d: &umt_data::AvDataset) -> umt_data::Batch {
    d.gather(&(0..d.len()).collect::<Vec<_>>()).unwrap()
}

#[test]
fn tiny_build_is_shaped_deterministic_and_splits_recordings() {
    let tmp = tempfile::tempdir().unwrap();
    let (mnist, fsdd) = tiny_sources(tmp.path());
    let cfg = tiny_cfg();
    let a = build(&cfg, 7, &mnist, &fsdd, &quiet).unwrap();
    assert_eq!((a.train.len(), a.test.len()), (50, 30));
    assert_eq!(a.train.audio_shape(), [1, 32, 32]);
    assert_eq!(a.train.video_shape(), [1, 3, 28, 28]);
    assert_eq!(a.index.len(), 80);
    for (e, &y) in a
        .index
        .iter()
        .zip(a.train.labels().iter().chain(a.test.labels()))
    {
        assert_eq!(e.label, y);
        assert_eq!(e.mnist_split, e.split, "MNIST test images only in test");
        let (digit, _, take) = parse_recording_name(&e.recording).unwrap();
        assert_eq!(digit, y, "paired by digit");
        assert_eq!(take < 5, e.split == "test", "FSDD's official split");
    }
    let recs = |split: &str| -> HashSet<&str> {
        a.index
            .iter()
            .filter(|e| e.split == split)
            .map(|e| e.recording.as_str())
            .collect()
    };
    assert!(recs("train").is_disjoint(&recs("test")));
    // Balanced over digits.
    for d in 0..10 {
        assert_eq!(a.train.labels().iter().filter(|&&y| y == d).count(), 5);
    }
    // The PCA keeps at least the requested share of the variance.
    assert!(a.info.pca_energy_kept >= 0.25 && a.info.pca_components >= 1);
    assert!(all(&a.train).audio.iter().all(|x| x.is_finite()));

    let b = build(&cfg, 7, &mnist, &fsdd, &quiet).unwrap();
    assert_eq!(a.index, b.index);
    assert_eq!(all(&a.train).audio, all(&b.train).audio);
    assert_eq!(all(&a.test).video, all(&b.test).video);
    let c = build(&cfg, 8, &mnist, &fsdd, &quiet).unwrap();
    assert_ne!(a.index, c.index, "another seed pairs differently");
}

#[test]
fn prepared_directory_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let (mnist, fsdd) = tiny_sources(tmp.path());
    let a = build(&tiny_cfg(), 1, &mnist, &fsdd, &quiet).unwrap();
    let out = tmp.path().join("prepared");
    write_prepared(&a, &out).unwrap();
    let back: AvMnistData = load_prepared(&out).unwrap();
    assert_eq!(back.info, a.info);
    assert_eq!(back.index, a.index);
    for (x, y) in [(&a.train, &back.train), (&a.test, &back.test)] {
        let (bx, by) = (all(x), all(y));
        assert_eq!(bx.audio, by.audio);
        assert_eq!(bx.video, by.video);
        assert_eq!(bx.labels, by.labels);
        assert_eq!(y.video_shape(), [1, 3, 28, 28]);
    }
    let classes = std::fs::read_to_string(out.join("classes.txt")).unwrap();
    assert_eq!(classes.lines().next(), Some("zero"));

    // A loader error per inconsistency, naming the file.
    let mut info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    info["config"]["train_samples"] = serde_json::json!(51);
    std::fs::write(out.join("config.json"), info.to_string()).unwrap();
    let e = load_prepared(&out).unwrap_err();
    assert!(
        matches!(e, Error::FileContent { .. }) && e.to_string().contains("train.safetensors"),
        "{e}"
    );
    std::fs::remove_file(out.join("config.json")).unwrap();
    assert!(matches!(
        load_prepared(&out),
        Err(Error::MissingFile { .. })
    ));
}

#[test]
fn bad_sources_are_typed_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (mnist, fsdd) = tiny_sources(tmp.path());
    let cfg = tiny_cfg();

    let e = build(&cfg, 0, &tmp.path().join("nowhere"), &fsdd, &quiet).unwrap_err();
    assert!(matches!(e, Error::MissingFile { .. }), "{e}");
    assert!(e.to_string().contains("train-images-idx3-ubyte"), "{e}");

    let e = build(&cfg, 0, &mnist, &tmp.path().join("nowhere"), &quiet).unwrap_err();
    assert!(matches!(e, Error::MissingFile { .. }), "{e}");

    // Corrupt IDX: labels file with one label too few.
    let bad_mnist = tmp.path().join("bad-mnist");
    std::fs::create_dir_all(&bad_mnist).unwrap();
    for f in std::fs::read_dir(&mnist).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, bad_mnist.join(f.file_name().unwrap())).unwrap();
    }
    idx_gz(
        &bad_mnist.join("t10k-labels-idx1-ubyte.gz"),
        &[100],
        &[0u8; 99],
    );
    let e = build(&cfg, 0, &bad_mnist, &fsdd, &quiet).unwrap_err();
    assert!(
        matches!(e, Error::Idx { .. }) && e.to_string().contains("t10k-labels"),
        "{e}"
    );

    // Corrupt WAV.
    let rec = fsdd.join("recordings");
    std::fs::write(rec.join("3_bob_6.wav"), b"RIFF0000WAVEjunk").unwrap();
    let e = build(&cfg, 0, &mnist, &fsdd, &quiet).unwrap_err();
    assert!(
        matches!(e, Error::Recording { .. }) && e.to_string().contains("3_bob_6.wav"),
        "{e}"
    );
    std::fs::remove_file(rec.join("3_bob_6.wav")).unwrap();

    // A WAV whose name is not FSDD's.
    std::fs::write(rec.join("three-bob.wav"), b"").unwrap();
    let e = build(&cfg, 0, &mnist, &fsdd, &quiet).unwrap_err();
    assert!(
        matches!(e, Error::FileContent { .. }) && e.to_string().contains("three-bob.wav"),
        "{e}"
    );
}

/// The real sources, when `../shared/data` is present (a small build: 100 / 50 samples).
#[test]
fn real_mnist_and_fsdd_when_present() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let (mnist, fsdd) = (root.join("mnist"), root.join("fsdd"));
    if !mnist.is_dir() || !fsdd.is_dir() {
        println!(
            "SKIPPED real_mnist_and_fsdd_when_present: {} is absent",
            root.display()
        );
        return;
    }
    let cfg = AvMnistConfig {
        train_samples: 100,
        test_samples: 50,
        ..AvMnistConfig::default()
    };
    let d = build(&cfg, 0, &mnist, &fsdd, &quiet).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (100, 50));
    let mut train_recs = HashSet::new();
    for e in &d.index {
        let (digit, _, take) = parse_recording_name(&e.recording).unwrap();
        assert_eq!(digit, e.label);
        assert_eq!(take < 5, e.split == "test");
        assert!(fsdd.join("recordings").join(&e.recording).is_file());
        if e.split == "train" {
            train_recs.insert(e.recording.clone());
            assert!(e.mnist_index < 60_000);
        } else {
            assert!(e.mnist_index < 10_000);
            assert!(!train_recs.contains(&e.recording));
        }
    }
    assert!(d.info.pca_energy_kept >= 0.25);
    assert!(all(&d.test).audio.iter().all(|x| x.is_finite()));
}
