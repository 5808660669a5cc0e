//! End to end on the smoke preset through the library API: Table 2 (all nine methods),
//! Table 1 and Figure 2, the JSON schemas, resume after a deleted stage, and the bad-input
//! errors that need a run (wrong-architecture teacher, NaN loss, changed config).

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use umt_trainer::report::{check_dataset, table1_with, table2_with};
use umt_trainer::run::{write_json_atomic, StageResult};
use umt_trainer::{
    EncoderConfig, Error, ExperimentConfig, Method, Modality, Preset, Progress, RunOptions, Runner,
    UniModel,
};

fn opts(out: &Path, methods: Vec<Method>) -> RunOptions {
    RunOptions {
        out_dir: out.to_path_buf(),
        seeds: vec![0],
        methods,
        device: Device::Cpu,
        progress: Progress::Quiet,
        validation_fraction: None,
    }
}

#[test]
fn smoke_run_tables_resume_and_schema() {
    umt_trainer::enable_fast_math();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // Loud tones (amplitude ≥ 1) on top of the default's quiet audio keep the smoke data
    // learnable by its width-4 encoders, so the "beats chance" check below tests the pipeline.
    let cfg = ExperimentConfig::preset(Preset::Smoke)
        .with_overrides(&serde_json::json!({"synthetic": {"audio": {
            "noise_std": 0.1, "distractor_tones": 0, "tone_amp_min": 1.0}}}))
        .unwrap();
    let mut runner = Runner::new(cfg.clone(), opts(&out, Method::ALL.to_vec())).unwrap();
    let t2 = table2_with(&mut runner, "synthetic", Instant::now()).unwrap();
    let (t1, fig) = table1_with(&mut runner, Instant::now()).unwrap();

    // table2.json: exactly the schema, nine paper names, percentages.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("table2.json")).unwrap()).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4);
    for k in ["dataset", "seeds", "wall_seconds", "methods"] {
        assert!(keys.contains(&k), "{keys:?}");
    }
    assert_eq!(json["dataset"], "synthetic");
    let names: Vec<&str> = json["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "Naive Fusion",
            "Dropout",
            "Modality Dropout",
            "Self Distillation",
            "Pre-train + Fine-tune",
            "Audio-only Distillation",
            "Video-only Distillation",
            "Gradient-Blending",
            "Uni-Modal Teacher"
        ]
    );
    for m in json["methods"].as_array().unwrap() {
        let obj = m.as_object().unwrap();
        assert_eq!(obj.len(), 4);
        let top1 = m["top1"].as_array().unwrap();
        assert_eq!(top1.len(), 1);
        let v = top1[0].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&v), "{v}");
        assert_eq!(m["mean"].as_f64().unwrap(), v);
        assert_eq!(m["std"].as_f64().unwrap(), 0.0);
    }
    // The smoke data is learnable: the fused models beat chance (25%) on average.
    let mean: f64 = t2.methods.iter().map(|r| r.mean).sum::<f64>() / 9.0;
    assert!(mean > 25.0, "{mean}");

    // table1.json: seven rows, null where a column does not apply.
    let json1: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("table1.json")).unwrap()).unwrap();
    let rows = json1["methods"].as_array().unwrap();
    assert_eq!(rows.len(), 7);
    assert_eq!(rows[1]["name"], "Audio-only Training");
    assert!(rows[1]["video_test"].is_null() && rows[1]["video_train"].is_null());
    assert!(rows[2]["audio_test"].is_null());
    assert!(rows[0]["video_test"].as_f64().is_some());
    assert_eq!(t1.methods.len(), 7);
    assert_eq!(fig.classes.len(), 4);
    assert_eq!(fig.series.len(), 4);
    let png = std::fs::read(out.join("figure2.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    assert!(out.join("figure2.svg").exists());

    // Resume: delete the result of a later stage; only that stage is recomputed, identically.
    std::fs::remove_file(out.join("seed-0/umt/result.json")).unwrap();
    let mut again = Runner::new(cfg.clone(), opts(&out, Method::ALL.to_vec())).unwrap();
    let t2b = table2_with(&mut again, "synthetic", Instant::now()).unwrap();
    assert_eq!(again.stages_run, vec!["seed-0/umt".to_string()]);
    assert!(again
        .stages_reused
        .iter()
        .any(|s| s.starts_with("teachers/audio")));
    // Reused stages give identical numbers. The recomputed one is deterministic up to the
    // floating-point summation order of umt-nn's multi-threaded convolution backward, which
    // grows over epochs: it is only checked to land close by.
    for (a, b) in t2.methods.iter().zip(&t2b.methods) {
        if a.name == "Uni-Modal Teacher" {
            assert!(
                (a.top1[0] - b.top1[0]).abs() < 15.0,
                "{:?} vs {:?}",
                a.top1,
                b.top1
            );
        } else {
            // Equal up to serde_json's float parsing (≤ 1 ulp).
            assert!(
                (a.top1[0] - b.top1[0]).abs() < 1e-9,
                "{}: {:?} vs {:?}",
                a.name,
                a.top1,
                b.top1
            );
        }
    }

    // A rerun with a different config into the same folder is refused (nothing overwritten).
    let other = cfg
        .with_overrides(&serde_json::json!({"train": {"lambda": 5.0}}))
        .unwrap();
    let err = Runner::new(other, opts(&out, vec![Method::UniModalTeacher])).unwrap_err();
    assert!(matches!(err, Error::ConfigChanged { .. }), "{err}");
}

#[test]
fn wrong_architecture_teacher_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let cfg = ExperimentConfig::preset(Preset::Smoke);
    let mut runner = Runner::new(cfg.clone(), opts(&out, vec![Method::UniModalTeacher])).unwrap();
    // Plant a finished audio teacher of another width where the cache expects it.
    let rel = format!(
        "teachers/audio-seed0-{}",
        runner.teacher_key(Modality::Audio, 0)
    );
    let wide = EncoderConfig {
        base_width: 8,
        ..cfg.encoder.clone()
    };
    let model = UniModel::new(Modality::Audio, &wide, 4, 0, &Device::Cpu).unwrap();
    let path = out.join(&rel).join("model.safetensors");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let meta =
        umt_nn::checkpoint::CheckpointMeta::new("umt-trainer/audio-teacher", serde_json::json!({}));
    umt_nn::checkpoint::save_varmap(&model.vars, &path, &meta).unwrap();
    let fake = StageResult {
        stage: rel.clone(),
        seed: 0,
        test_top1: 0.5,
        train_top1: None,
        per_class_test: vec![0.5; 4],
        epoch_losses: vec![],
        seconds: 0.0,
        extra: serde_json::Value::Null,
    };
    write_json_atomic(&out.join(&rel).join("result.json"), &fake).unwrap();
    let err = runner.method(Method::UniModalTeacher, 0).unwrap_err();
    match &err {
        Error::Checkpoint { path: p, .. } => assert_eq!(p, &path),
        other => panic!("expected a checkpoint error, got {other}"),
    }
    assert!(err.to_string().contains("audio teacher"), "{err}");
}

#[test]
fn nan_loss_stops_the_run_and_keeps_finished_stages() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // λ = 1e300 overflows the distillation term to infinity: UMT's first step is non-finite,
    // while Naive Fusion and the teachers train normally.
    let cfg = ExperimentConfig::preset(Preset::Smoke)
        .with_overrides(&serde_json::json!({"train": {"lambda": 1e300}}))
        .unwrap();
    let methods = vec![Method::NaiveFusion, Method::UniModalTeacher];
    let mut runner = Runner::new(cfg, opts(&out, methods)).unwrap();
    let err = table2_with(&mut runner, "synthetic", Instant::now()).unwrap_err();
    match &err {
        Error::NonFiniteLoss {
            stage,
            step,
            last_checkpoint,
            ..
        } => {
            assert!(stage.contains("umt"), "{stage}");
            assert_eq!(*step, 0);
            assert!(
                last_checkpoint.contains("teachers/video"),
                "{last_checkpoint}"
            );
        }
        other => panic!("expected a NaN error, got {other}"),
    }
    assert!(out.join("seed-0/naive-fusion/result.json").exists());
    assert!(out.join("seed-0/naive-fusion/model.safetensors").exists());
    assert!(!out.join("seed-0/umt/result.json").exists());
}

#[test]
fn datasets_and_data_dirs_are_checked() {
    assert!(check_dataset("synthetic", None).is_ok());
    let e = check_dataset("vggsound", None).unwrap_err();
    assert!(
        e.to_string().contains("--data-dir") && e.to_string().contains("prepare-vggsound"),
        "{e}"
    );
    let e = check_dataset("avmnist", None).unwrap_err();
    assert!(e.to_string().contains("prepare-avmnist"), "{e}");
    let e = check_dataset("imagenet", None).unwrap_err();
    assert!(e.to_string().contains("unknown dataset"), "{e}");
    let e = check_dataset("avmnist", Some(Path::new("/no/such/dir"))).unwrap_err();
    assert!(matches!(e, Error::MissingDataDir { .. }), "{e}");
}

#[test]
fn tuning_mode_reports_on_a_carved_validation_split_and_is_never_mixed_with_test() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tune");
    let cfg = ExperimentConfig::preset(Preset::Smoke);
    let mut o = opts(&out, vec![Method::NaiveFusion]);
    o.validation_fraction = Some(0.25);
    let mut runner = Runner::new(cfg.clone(), o.clone()).unwrap();
    let d = runner.data().unwrap();
    // 25 % of each class of the 160 training samples; the test split is not used at all.
    assert_eq!(d.train.len() + d.test.len(), cfg.synthetic.train_samples);
    assert!(
        (d.test.len() as f64 - 40.0).abs() <= 4.0,
        "{}",
        d.test.len()
    );
    let t2 = table2_with(&mut runner, "synthetic", Instant::now()).unwrap();
    assert!(t2.split.starts_with("validation"), "{}", t2.split);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("table2.json")).unwrap()).unwrap();
    assert!(json["split"].as_str().unwrap().starts_with("validation"));
    assert!(std::fs::read_to_string(out.join("table2.md"))
        .unwrap()
        .contains("validation"));
    // The same folder as a test run (or with another fraction) is refused, not mixed.
    let e = Runner::new(cfg.clone(), opts(&out, vec![Method::NaiveFusion])).unwrap_err();
    assert!(matches!(e, Error::ConfigChanged { .. }), "{e}");
    o.validation_fraction = Some(0.5);
    let e = Runner::new(cfg.clone(), o.clone()).unwrap_err();
    assert!(matches!(e, Error::ConfigChanged { .. }), "{e}");
    o.validation_fraction = Some(1.5);
    let e = Runner::new(cfg, o).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidConfig {
                field: "validation_fraction",
                ..
            }
        ),
        "{e}"
    );
}
