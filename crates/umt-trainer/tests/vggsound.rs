//! The trainer on VGGSound streamed from disk: real tiny videos made by ffmpeg (a `testsrc`
//! picture and one sine tone per class), prepared through `umt-data-prep`'s library API as
//! `cargo xtask prepare-vggsound` does, then a tiny run (Naive Fusion, Gradient-Blending and
//! UMT, one Table 1 probe) through the runner: results finite, audio statistics recorded, and a
//! second run on the same folder recomputes nothing. Prints plainly that it skipped when
//! ffmpeg is not installed. The errors for a bad data folder need no ffmpeg.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use umt_data::vggsound::{CLASSES_FILE, INDEX_FILE};
use umt_data_prep::{prepare, tools_available, PrepareOptions};
use umt_trainer::config::DatasetConfig;
use umt_trainer::report::{check_dataset, table2_with};
use umt_trainer::run::ProbeSource;
use umt_trainer::source::{AudioStats, AUDIO_STATS_FILE};
use umt_trainer::{
    Error, ExperimentConfig, Method, Modality, Preset, Progress, RunOptions, Runner,
};

/// A 1 s, 64×48 clip at 10 fps with a `tone_hz` sine track.
fn make_video(path: &Path, tone_hz: u32, picture: &str) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("{picture}=size=64x48:rate=10"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={tone_hz}:sample_rate=16000"))
        .args(["-t", "1", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three classes (by tone and picture), four clips each: three train, one test.
fn prepared_folder(root: &Path) -> std::path::PathBuf {
    let videos = root.join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    let mut csv = String::new();
    for (c, (label, tone, picture)) in [
        ("low hum", 300, "testsrc"),
        ("mid beep", 1000, "smptebars"),
        ("high whistle", 3000, "rgbtestsrc"),
    ]
    .into_iter()
    .enumerate()
    {
        for k in 0..4 {
            let id = format!("c{c}v{k}");
            make_video(&videos.join(format!("{id}_000000.mp4")), tone, picture);
            let split = if k == 3 { "test" } else { "train" };
            csv.push_str(&format!("{id},0,{label},{split}\n"));
        }
    }
    std::fs::write(root.join("vggsound.csv"), csv).unwrap();
    let out = root.join("prepared");
    let mut opts = PrepareOptions::new(root.join("vggsound.csv"), &videos, &out);
    opts.jobs = 2;
    opts.settings.frame_size_px = 32;
    opts.settings.clip_seconds = 1.0;
    let summary = prepare(&opts).unwrap();
    assert_eq!(
        (summary.prepared, summary.failed_total()),
        (12, 0),
        "{summary}"
    );
    out
}

/// The smoke preset on VGGSound, shrunk to the tiny clips: 2 frames of 32×32, 1 s of audio,
/// one epoch of everything.
fn tiny_config(data_dir: &Path, workers: usize) -> ExperimentConfig {
    let dataset = DatasetConfig::vggsound(data_dir).unwrap();
    ExperimentConfig::preset_for(Preset::Smoke, dataset)
        .with_overrides(&serde_json::json!({
            "dataset": {
                "front_end": {
                    "video": {"num_frames": 2, "resize_height": 32, "resize_width": 32},
                    "audio": {"clip_seconds": 1.0},
                },
                "audio_stats_clips": 5,
                "loader": {"workers": workers, "prefetch_batches": 2, "eval_batch_size": 4},
            },
            "train": {
                "epochs": 1, "teacher_epochs": 1, "batch_size": 4,
                "gb_estimation_epochs": 2, "linear_epochs": 2,
            },
        }))
        .unwrap()
}

fn opts(out: &Path) -> RunOptions {
    RunOptions {
        out_dir: out.to_path_buf(),
        seeds: vec![0],
        methods: vec![
            Method::NaiveFusion,
            Method::GradientBlending,
            Method::UniModalTeacher,
        ],
        device: Device::Cpu,
        progress: Progress::Quiet,
        validation_fraction: None,
    }
}

#[test]
fn tiny_vggsound_streams_through_the_runner_and_resumes() {
    if !tools_available() {
        eprintln!(
            "SKIPPED tiny_vggsound_streams_through_the_runner_and_resumes: ffmpeg/ffprobe are \
             not on PATH (install them: apt-get install ffmpeg); the trainer on VGGSound was \
             NOT tested"
        );
        return;
    }
    umt_trainer::enable_fast_math();
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = prepared_folder(tmp.path());
    check_dataset("vggsound", Some(&data_dir)).unwrap();
    let out = tmp.path().join("run");
    let cfg = tiny_config(&data_dir, 2);
    assert_eq!(cfg.dataset.name(), "vggsound");

    let mut runner = Runner::new(cfg, opts(&out)).unwrap();
    let d = runner.data().unwrap();
    assert_eq!((d.train.len(), d.test.len()), (9, 3));
    assert_eq!(d.train.audio_shape(), [1, 128, 126]); // (1, n_fft/2, 1 + 16000/128)
    assert_eq!(d.train.video_shape(), [2, 3, 32, 32]); // (T, 3, H, W)
    assert_eq!(
        runner.class_names().unwrap(),
        ["high whistle", "low hum", "mid beep"]
    );
    let t2 = table2_with(&mut runner, "vggsound", Instant::now()).unwrap();
    assert_eq!(t2.dataset, "vggsound");
    assert_eq!(t2.methods.len(), 3);
    for m in &t2.methods {
        assert!((0.0..=100.0).contains(&m.mean), "{}: {}", m.name, m.mean);
    }
    let probe = runner
        .probe(
            ProbeSource::Method(Method::UniModalTeacher),
            Modality::Video,
            0,
        )
        .unwrap();
    assert!((0.0..=1.0).contains(&probe.train_top1.unwrap()));
    assert!((0.0..=1.0).contains(&probe.test_top1));
    for stage in &runner.stages_run {
        let r = &runner.finished()[stage];
        assert!(r.test_top1.is_finite(), "{stage}");
        assert!(r.epoch_losses.iter().all(|l| l.is_finite()), "{stage}");
    }
    // Both teachers, the GB weights, three methods and the probe.
    assert_eq!(runner.stages_run.len(), 7, "{:?}", runner.stages_run);
    for file in ["table2.json", "table2.md", "config.json", AUDIO_STATS_FILE] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let stats: AudioStats =
        serde_json::from_str(&std::fs::read_to_string(out.join(AUDIO_STATS_FILE)).unwrap())
            .unwrap();
    assert_eq!(stats.clips, 5);
    assert!(stats.mean.is_finite() && stats.std > 0.0, "{stats:?}");
    let gb: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("seed-0/gb-weights/result.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(gb["extra"]["validation_samples"], 3); // round(0.2 · 3) of each class

    // Resumed (with another number of loader threads, which changes no result): nothing is
    // recomputed.
    let mut again = Runner::new(tiny_config(&data_dir, 1), opts(&out)).unwrap();
    let t2b = table2_with(&mut again, "vggsound", Instant::now()).unwrap();
    again
        .probe(
            ProbeSource::Method(Method::UniModalTeacher),
            Modality::Video,
            0,
        )
        .unwrap();
    assert!(again.stages_run.is_empty(), "{:?}", again.stages_run);
    let means = |t: &umt_trainer::Table2| t.methods.iter().map(|m| m.mean).collect::<Vec<_>>();
    assert_eq!(means(&t2), means(&t2b));
}

#[test]
fn a_bad_vggsound_folder_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // No index.jsonl / classes.txt: named, with the command that writes them.
    let e = DatasetConfig::vggsound(dir).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(CLASSES_FILE) && msg.contains("prepare-vggsound"),
        "{msg}"
    );
    std::fs::write(dir.join(CLASSES_FILE), "hum\n").unwrap();
    let e = check_dataset("vggsound", Some(dir)).unwrap_err();
    assert!(
        e.to_string().contains(INDEX_FILE) && e.to_string().contains("prepare-vggsound"),
        "{e}"
    );
    assert!(matches!(
        DatasetConfig::vggsound(&dir.join("missing")),
        Err(Error::MissingDataDir { .. })
    ));
    let e = check_dataset("vggsound", None).unwrap_err();
    assert!(e.to_string().contains("--data-dir"), "{e}");

    // A split with no clips.
    std::fs::write(dir.join(INDEX_FILE), "").unwrap();
    let cfg = ExperimentConfig::preset_for(Preset::Smoke, DatasetConfig::vggsound(dir).unwrap());
    let mut runner = Runner::new(cfg, opts(&dir.join("run"))).unwrap();
    let e = runner.data().unwrap_err();
    assert!(
        matches!(e, Error::Dataset { .. }) && e.to_string().contains("no train clip"),
        "{e}"
    );

    // The folder prepared again since the run started.
    let cfg = ExperimentConfig::preset_for(Preset::Smoke, DatasetConfig::vggsound(dir).unwrap());
    std::fs::write(dir.join(CLASSES_FILE), "hum\nwhistle\n").unwrap();
    let mut runner = Runner::new(cfg, opts(&dir.join("run2"))).unwrap();
    let e = runner.data().unwrap_err();
    assert!(e.to_string().contains("prepared again"), "{e}");

    // Loader fields are checked.
    let e = ExperimentConfig::preset_for(Preset::Paper, DatasetConfig::vggsound(dir).unwrap())
        .with_overrides(&serde_json::json!({"dataset": {"loader": {"workers": 0}}}))
        .unwrap_err();
    assert!(e.to_string().contains("loader.workers"), "{e}");
}

#[test]
fn the_paper_preset_on_vggsound_is_the_papers_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(CLASSES_FILE), "hum\n").unwrap();
    std::fs::write(tmp.path().join(INDEX_FILE), "").unwrap();
    let dataset = DatasetConfig::vggsound(tmp.path()).unwrap();
    let cfg = ExperimentConfig::preset_for(Preset::Paper, dataset.clone());
    assert_eq!(cfg, ExperimentConfig::preset_for(Preset::Default, dataset));
    let t = &cfg.train;
    assert_eq!((t.epochs, t.teacher_epochs, t.batch_size), (20, 20, 24));
    assert_eq!(
        (t.learning_rate, t.lr_decay_factor, t.lambda),
        (1e-3, 0.1, 50.0)
    );
    assert_eq!(
        (t.distill_lr_decay_every_epochs, t.lr_decay_every_epochs),
        (5, 10)
    );
    assert_eq!(cfg.encoder.base_width, 64);
    assert_eq!(cfg.encoder.stem, umt_resnet::StemKind::Torchvision);
    let DatasetConfig::Vggsound { front_end, .. } = &cfg.dataset else {
        panic!("not vggsound: {:?}", cfg.dataset)
    };
    assert_eq!(front_end.video.num_frames, 32);
    assert_eq!(front_end.audio.sample_rate_hz, 16_000);
    assert_eq!(front_end.audio.clip_seconds, 10.0);
    assert_eq!(
        (front_end.audio.stft.n_fft, front_end.audio.stft.hop_length),
        (1024, 512)
    );
}
