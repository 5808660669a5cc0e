//! End to end: real tiny videos made by ffmpeg (`testsrc` pictures, a `sine` tone per class),
//! a CSV, the preparation, then the loader of `umt-data` on the result. Prints plainly that it
//! skipped when ffmpeg is not installed.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use umt_data::vggsound::{
    read_classes, read_index, Batches, LoaderConfig, Split, VggSound, VggSoundConfig, AUDIO_FILE,
    CLIPS_DIR, FRAMES_DIR, REPORT_FILE,
};
use umt_data_prep::{prepare, tools_available, Error, Failure, FailureReason, PrepareOptions};

fn skip_without_ffmpeg(test: &str) -> bool {
    if tools_available() {
        return false;
    }
    eprintln!(
        "SKIPPED {test}: ffmpeg/ffprobe are not on PATH (install them: apt-get install ffmpeg); \
         the VGGSound preparation was NOT tested"
    );
    true
}

/// A `seconds`-long 128×96 clip at 10 fps; with a `tone_hz` sine track unless `None`.
fn make_video(
    path: &Path,
    seconds: f64,
    tone_hz: Option<u32>,
    picture: &str,
) -> anyhow::Result<()> {
    let mut c = Command::new("ffmpeg");
    c.args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("{picture}=size=128x96:rate=10"));
    if let Some(f) = tone_hz {
        c.args(["-f", "lavfi", "-i"])
            .arg(format!("sine=frequency={f}:sample_rate=22050"));
    }
    c.arg("-t").arg(seconds.to_string()).args([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
    ]);
    if tone_hz.is_some() {
        c.args(["-c:a", "aac"]);
    }
    let out = c.arg(path).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

struct Fixture {
    _dir: tempfile::TempDir,
    csv: std::path::PathBuf,
    videos: std::path::PathBuf,
    out: std::path::PathBuf,
}

/// Three good clips of three classes (one of 1.5 s, to be tiled), a truncated file, a clip
/// without audio, a CSV row without a file and a file without a CSV row.
fn fixture() -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let videos = dir.path().join("videos");
    std::fs::create_dir_all(&videos)?;
    make_video(&videos.join("vidA_000010.mp4"), 2.0, Some(880), "testsrc")?;
    make_video(&videos.join("vidB_000000.mp4"), 2.0, Some(220), "smptebars")?;
    make_video(&videos.join("-vidC_000030.mp4"), 1.5, Some(440), "testsrc2")?;
    make_video(&videos.join("vidN_000000.mp4"), 2.0, None, "testsrc")?;
    let whole = std::fs::read(videos.join("vidA_000010.mp4"))?;
    std::fs::write(videos.join("vidT_000000.mp4"), &whole[..whole.len() / 3])?;
    std::fs::copy(
        videos.join("vidB_000000.mp4"),
        videos.join("stray_000000.mp4"),
    )?;
    let csv = dir.path().join("vggsound.csv");
    std::fs::write(
        &csv,
        "vidA,10,\"beep, high\",train\n\
         vidB,0,hum,train\n\
         -vidC,30,tone mid,test\n\
         vidT,0,hum,train\n\
         vidN,0,\"beep, high\",train\n\
         vidM,5,whistle,test\n",
    )?;
    let out = dir.path().join("prepared");
    Ok(Fixture {
        csv,
        videos,
        out,
        _dir: dir,
    })
}

fn report(out: &Path) -> anyhow::Result<Vec<Failure>> {
    let text = std::fs::read_to_string(out.join(REPORT_FILE))?;
    Ok(text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<Vec<Failure>, _>>()?)
}

/// The peak STFT bin of frame `frame` of a flat `(1, F, T_a)` spectrogram.
fn peak_bin(spec: &[f32], n_freqs: usize, n_frames: usize, frame: usize) -> usize {
    (0..n_freqs)
        .max_by(|&a, &b| spec[a * n_frames + frame].total_cmp(&spec[b * n_frames + frame]))
        .unwrap_or(0)
}

#[test]
fn prepares_real_videos_reports_bad_ones_and_resumes() -> anyhow::Result<()> {
    if skip_without_ffmpeg("prepares_real_videos_reports_bad_ones_and_resumes") {
        return Ok(());
    }
    let f = fixture()?;
    let mut opts = PrepareOptions::new(&f.csv, &f.videos, &f.out);
    opts.jobs = 2;
    let s = prepare(&opts)?;
    assert_eq!(
        (s.prepared, s.skipped, s.failed_total(), s.not_in_csv),
        (3, 0, 3, 1),
        "{s}"
    );
    assert_eq!(s.classes, 4);

    // The failures, with their reasons.
    let rep = report(&f.out)?;
    let reasons: Vec<(Option<&str>, Option<&str>, FailureReason)> = rep
        .iter()
        .map(|r| (r.clip_id.as_deref(), r.source.as_deref(), r.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (Some("vidM_000005"), None, FailureReason::Missing),
            (
                Some("vidN_000000"),
                Some("vidN_000000.mp4"),
                FailureReason::NoAudioStream
            ),
            (
                Some("vidT_000000"),
                Some("vidT_000000.mp4"),
                FailureReason::Unreadable
            ),
            (None, Some("stray_000000.mp4"), FailureReason::NotInCsv),
        ]
    );

    // Class list: every CSV label, sorted, so ids do not depend on what was downloaded.
    let classes = read_classes(&f.out.join("classes.txt"))?;
    assert_eq!(classes, ["beep, high", "hum", "tone mid", "whistle"]);
    let index = read_index(&f.out.join("index.jsonl"))?;
    let summary: Vec<(&str, u32, Split, usize, &str)> = index
        .iter()
        .map(|e| {
            (
                e.clip_id.as_str(),
                e.class_id,
                e.split,
                e.num_frames,
                e.source.as_str(),
            )
        })
        .collect();
    // 10 fps: 2 s → 20 frames, 1.5 s → 15 frames.
    assert_eq!(
        summary,
        vec![
            ("-vidC_000030", 2, Split::Test, 15, "-vidC_000030.mp4"),
            ("vidA_000010", 0, Split::Train, 20, "vidA_000010.mp4"),
            ("vidB_000000", 1, Split::Train, 20, "vidB_000000.mp4"),
        ]
    );

    // Frames: 256×256 JPEG, one file per frame; audio: 16 kHz mono float, exactly 10 s.
    for e in &index {
        let clip = f.out.join(CLIPS_DIR).join(&e.clip_id);
        let frames = umt_video::list_frames(&clip.join(FRAMES_DIR))?;
        assert_eq!(frames.len(), e.num_frames);
        assert_eq!(image::image_dimensions(&frames[0])?, (256, 256));
        let wav = umt_audio::read_wav(clip.join(AUDIO_FILE))?;
        assert_eq!(wav.sample_rate_hz, 16_000);
        assert_eq!(wav.source_channels, 1);
        assert_eq!(wav.source_format, umt_audio::SampleFormat::Float(32));
        assert_eq!(wav.samples.len(), 160_000);
        // Tiled, not zero-padded: the last second still carries the tone.
        let tail_rms =
            (wav.samples[150_000..].iter().map(|x| x * x).sum::<f32>() / 10_000.0).sqrt();
        assert!(tail_rms > 0.05, "{}: tail rms {tail_rms}", e.clip_id);
    }

    // The loader reads the result; each class's tone sits in its STFT bin (f / 15.625 Hz).
    let train = Arc::new(VggSound::open(
        &f.out,
        Split::Train,
        VggSoundConfig::default(),
    )?);
    assert_eq!((train.len(), train.num_classes()), (2, 4));
    let mut cfg = VggSoundConfig::default();
    cfg.video.num_frames = 8;
    cfg.video.resize_height = 32;
    cfg.video.resize_width = 32;
    let test = Arc::new(VggSound::open(&f.out, Split::Test, cfg)?);
    assert_eq!(test.audio_shape(), [1, 512, 313]);
    assert_eq!(test.video_shape(), [8, 3, 32, 32]);
    let loader = LoaderConfig {
        batch_size: 2,
        workers: 2,
        prefetch_batches: 2,
        ..LoaderConfig::default()
    };
    let batches: Vec<_> =
        Batches::new(Arc::clone(&test), &loader, 0, false)?.collect::<Result<_, _>>()?;
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].labels, vec![2]);
    assert_eq!(batches[0].video.len(), 8 * 3 * 32 * 32);
    assert_eq!(
        peak_bin(&batches[0].audio, 512, 313, 200),
        (440.0f64 / 15.625).round() as usize
    );
    let b = train.gather(&[0, 1], false, 0, 0)?;
    assert_eq!(b.labels, vec![0, 1]);
    assert_eq!(
        peak_bin(&b.audio[..512 * 313], 512, 313, 100),
        (880.0f64 / 15.625).round() as usize
    );
    assert_eq!(
        peak_bin(&b.audio[512 * 313..], 512, 313, 100),
        (220.0f64 / 15.625).round() as usize
    );

    // A rerun skips the finished clips and reports the same failures.
    let s2 = prepare(&opts)?;
    assert_eq!(
        (s2.prepared, s2.skipped, s2.failed_total(), s2.not_in_csv),
        (0, 3, 3, 1),
        "{s2}"
    );
    let key = |r: &[Failure]| -> Vec<(Option<String>, FailureReason)> {
        r.iter().map(|f| (f.clip_id.clone(), f.reason)).collect()
    };
    assert_eq!(key(&report(&f.out)?), key(&rep));
    assert_eq!(read_index(&f.out.join("index.jsonl"))?, index);

    // After a kill: a half-written temporary folder is cleared and an unfinished clip redone.
    let clips = f.out.join(CLIPS_DIR);
    std::fs::create_dir_all(clips.join(".tmp-vidB_000000").join(FRAMES_DIR))?;
    std::fs::remove_dir_all(clips.join("vidB_000000"))?;
    let s3 = prepare(&opts)?;
    assert_eq!((s3.prepared, s3.skipped), (1, 2), "{s3}");
    assert!(!clips.join(".tmp-vidB_000000").exists());
    assert_eq!(read_index(&f.out.join("index.jsonl"))?, index);

    // Other settings into the same folder are refused.
    opts.settings.frames_fps = 5.0;
    let e = prepare(&opts).unwrap_err();
    assert!(matches!(e, Error::SettingsMismatch { .. }), "{e}");
    Ok(())
}

#[test]
fn run_level_errors_name_the_problem() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("v.csv");
    std::fs::write(&csv, "a,1,x,train\nb,2,y,validation\n")?;
    let opts = PrepareOptions::new(&csv, dir.path(), dir.path().join("out"));
    let e = prepare(&opts).unwrap_err();
    assert!(
        matches!(&e, Error::CsvField { line: 2, field: "split", found, .. } if found == "validation"),
        "{e}"
    );
    let mut opts = PrepareOptions::new(&csv, dir.path(), dir.path().join("out"));
    opts.settings.jpeg_quality = 0;
    assert!(matches!(
        prepare(&opts),
        Err(Error::InvalidConfig {
            field: "jpeg_quality",
            ..
        })
    ));
    if skip_without_ffmpeg("run_level_errors_name_the_problem (videos folder part)") {
        return Ok(());
    }
    std::fs::write(&csv, "a,1,x,train\n")?;
    let opts = PrepareOptions::new(&csv, dir.path().join("no-such-dir"), dir.path().join("out"));
    let e = prepare(&opts).unwrap_err();
    assert!(
        matches!(&e, Error::Io { path, .. } if path.ends_with("no-such-dir")),
        "{e}"
    );
    Ok(())
}
