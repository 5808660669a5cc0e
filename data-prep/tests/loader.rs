//! `umt_data::vggsound` on a prepared layout written by hand (no ffmpeg needed): shapes, the
//! frames and audio it picks, deterministic batches whatever the workers, typed errors for a
//! damaged folder. (These live here because this crate has the image and WAV writers.)

use std::path::Path;
use std::sync::Arc;

use umt_audio::FrontEndConfig;
use umt_data::vggsound::{
    epoch_batches, Batches, IndexEntry, LoaderConfig, Split, VggSound, VggSoundConfig,
    CLASSES_FILE, INDEX_FILE,
};
use umt_data::Error;
use umt_video::{Normalization, VideoConfig};

const CLASSES: [&str; 3] = ["a, comma", "b", "c"];

/// Clips `0..n_train` are train, the rest test; clip
/// `i` has `5 + i % 4` frames of flat grey `20·k` and a 1 s, 16 kHz tone at `500·(1 + i % 3)`
/// Hz; its class is `i % 3`.
fn write_layout(root: &Path, n_train: usize, n_test: usize) -> anyhow::Result<Vec<IndexEntry>> {
    std::fs::write(root.join(CLASSES_FILE), CLASSES.join("\n") + "\n")?;
    let mut index = String::new();
    let mut entries = Vec::new();
    for i in 0..n_train + n_test {
        let e = IndexEntry {
            clip_id: format!("clip{i:02}_000000"),
            label: CLASSES[i % 3].to_owned(),
            class_id: (i % 3) as u32,
            split: if i < n_train {
                Split::Train
            } else {
                Split::Test
            },
            num_frames: 5 + i % 4,
            source: format!("clip{i:02}_000000.mp4"),
        };
        let frames = e.frames_dir(root);
        std::fs::create_dir_all(&frames)?;
        for k in 0..e.num_frames {
            let grey = vec![(20 * k) as u8; 12 * 10 * 3];
            image::save_buffer(
                frames.join(format!("{:06}.png", k + 1)),
                &grey,
                12,
                10,
                image::ColorType::Rgb8,
            )?;
        }
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(e.audio_path(root), spec)?;
        let f = 500.0 * (1 + i % 3) as f32;
        for t in 0..16_000 {
            w.write_sample((2.0 * std::f32::consts::PI * f * t as f32 / 16_000.0).sin())?;
        }
        w.finalize()?;
        index.push_str(&serde_json::to_string(&e)?);
        index.push('\n');
        entries.push(e);
    }
    std::fs::write(root.join(INDEX_FILE), index)?;
    Ok(entries)
}

/// Small shapes: 4 frames of 8×8 in [0, 1]; 1 s of audio (n_fft 1024, hop 512: 32 frames).
fn small_config() -> VggSoundConfig {
    let mut audio = FrontEndConfig::paper();
    audio.clip_seconds = 1.0;
    audio.stft.log = Some(umt_audio::LogCompression::default());
    VggSoundConfig {
        video: VideoConfig {
            num_frames: 4,
            resize_height: 8,
            resize_width: 8,
            crop: None,
            normalization: Normalization::IDENTITY,
        },
        audio,
    }
}

#[test]
fn shapes_frames_and_tones_come_through() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_layout(dir.path(), 4, 2)?;
    let train = VggSound::open(dir.path(), Split::Train, small_config())?;
    assert_eq!((train.len(), train.num_classes()), (4, 3));
    assert_eq!(train.labels(), vec![0, 1, 2, 0]);
    assert_eq!(train.audio_shape(), [1, 512, 32]); // (1, n_fft/2, 1 + 16000/512)
    assert_eq!(train.video_shape(), [4, 3, 8, 8]); // (T, 3, H, W)
    let test = VggSound::open(dir.path(), Split::Test, small_config())?;
    assert_eq!(test.labels(), vec![1, 2]);

    // Clip 1 has 6 frames; evaluation takes the centre of 4 segments: floor((2i+1)·6/8).
    let (audio, video) = train.sample(1, false, 0, 0)?;
    assert_eq!(video.len(), 4 * 3 * 8 * 8);
    for (t, k) in [0usize, 2, 3, 5].into_iter().enumerate() {
        let v = video[t * 3 * 64];
        assert!((v - (20 * k) as f32 / 255.0).abs() < 1e-6, "frame {t}: {v}");
    }
    // Its 1000 Hz tone peaks in bin 1000 / 15.625 = 64.
    let peak = (0..512)
        .max_by(|&a, &b| audio[a * 32 + 16].total_cmp(&audio[b * 32 + 16]))
        .unwrap_or(0);
    assert_eq!(peak, 64);
    assert!(matches!(
        train.sample(4, false, 0, 0),
        Err(Error::IndexOutOfRange { index: 4, len: 4 })
    ));
    Ok(())
}

#[test]
fn batches_do_not_depend_on_workers_or_prefetch() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_layout(dir.path(), 7, 0)?;
    let data = Arc::new(VggSound::open(dir.path(), Split::Train, small_config())?);
    let run = |workers, prefetch_batches, epoch, train, drop_last| -> anyhow::Result<Vec<_>> {
        let cfg = LoaderConfig {
            batch_size: 3,
            workers,
            prefetch_batches,
            drop_last,
            seed: 11,
        };
        let it = Batches::new(Arc::clone(&data), &cfg, epoch, train)?;
        assert_eq!(it.len(), if drop_last { 2 } else { 3 });
        Ok(it
            .map(|b| b.map(|b| (b.audio, b.video, b.labels)))
            .collect::<Result<Vec<_>, _>>()?)
    };
    let reference = run(1, 1, 0, true, false)?;
    assert_eq!(reference.len(), 3);
    assert_eq!(reference[2].2.len(), 1); // 7 = 3 + 3 + 1
    assert_eq!(run(3, 5, 0, true, false)?, reference);
    assert_eq!(run(8, 1, 0, true, false)?, reference);
    // The same batches as gathering the epoch's index lists by hand.
    let cfg = LoaderConfig {
        batch_size: 3,
        seed: 11,
        ..LoaderConfig::default()
    };
    for (b, idx) in reference.iter().zip(epoch_batches(7, &cfg, 0, true)) {
        let g = data.gather(&idx, true, 11, 0)?;
        assert_eq!((&g.audio, &g.video, &g.labels), (&b.0, &b.1, &b.2));
    }
    // Another epoch, another order; evaluation in index order; drop_last.
    assert_ne!(run(2, 2, 1, true, false)?, reference);
    let eval = run(2, 2, 0, false, false)?;
    let labels: Vec<u32> = eval.iter().flat_map(|b| b.2.clone()).collect();
    assert_eq!(labels, data.labels());
    assert_eq!(run(2, 2, 0, true, true)?, reference[..2].to_vec());
    Ok(())
}

#[test]
fn dropping_the_iterator_early_stops_the_workers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    write_layout(dir.path(), 6, 0)?;
    let data = Arc::new(VggSound::open(dir.path(), Split::Train, small_config())?);
    let cfg = LoaderConfig {
        batch_size: 1,
        workers: 2,
        prefetch_batches: 1,
        ..LoaderConfig::default()
    };
    let mut it = Batches::new(data, &cfg, 0, true)?;
    assert!(it.next().is_some_and(|b| b.is_ok()));
    drop(it); // Joins the workers; a hang here would time the test out.
    Ok(())
}

#[test]
fn a_damaged_folder_is_a_typed_error_naming_the_path() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let entries = write_layout(root, 3, 1)?;
    let open = |split| VggSound::open(root, split, small_config());

    std::fs::remove_file(entries[1].audio_path(root))?;
    match open(Split::Train) {
        Err(Error::MissingFile {
            path,
            what: "audio WAV",
        }) => {
            assert_eq!(path, entries[1].audio_path(root))
        }
        other => anyhow::bail!("expected a missing WAV, got {other:?}"),
    }
    // The other split does not need that clip.
    assert_eq!(open(Split::Test)?.len(), 1);

    std::fs::remove_dir_all(entries[3].frames_dir(root))?;
    match open(Split::Test) {
        Err(Error::MissingFile {
            path,
            what: "frame folder",
        }) => {
            assert_eq!(path, entries[3].frames_dir(root))
        }
        other => anyhow::bail!("expected a missing frame folder, got {other:?}"),
    }

    let index = std::fs::read_to_string(root.join(INDEX_FILE))?;
    std::fs::write(
        root.join(INDEX_FILE),
        index.replacen("\"class_id\":0", "\"class_id\":1", 1),
    )?;
    assert!(matches!(
        open(Split::Train),
        Err(Error::IndexLine { line: 1, .. })
    ));
    std::fs::write(
        root.join(INDEX_FILE),
        format!("{}\nnot json\n", index.lines().next().unwrap_or("")),
    )?;
    assert!(matches!(
        open(Split::Train),
        Err(Error::IndexLine { line: 2, .. })
    ));
    std::fs::remove_file(root.join(INDEX_FILE))?;
    assert!(matches!(
        open(Split::Train),
        Err(Error::MissingFile { what: "index", .. })
    ));

    std::fs::write(root.join(CLASSES_FILE), "b\na, comma\n")?;
    let e = open(Split::Train).unwrap_err();
    assert!(matches!(e, Error::IndexLine { line: 2, .. }), "{e}");
    Ok(())
}
