//! Self-describing teachers (issue 7): the card every teacher checkpoint carries, the export
//! folder for the hub, and a run that uses given teachers instead of training them.

use std::path::Path;

use candle_core::Device;
use umt_trainer::publish::{export_teachers, read_teacher_card, ExportOptions, KEY_TEACHER};
use umt_trainer::run::GivenTeacher;
use umt_trainer::{
    EncoderConfig, Error, ExperimentConfig, Method, Modality, Preset, Progress, RunOptions, Runner,
    UniModel,
};

fn opts(out: &Path) -> RunOptions {
    RunOptions {
        out_dir: out.to_path_buf(),
        seeds: vec![0],
        methods: vec![Method::PretrainFinetune],
        device: Device::Cpu,
        progress: Progress::Quiet,
        validation_fraction: None,
    }
}

fn given(path: &Path) -> Option<GivenTeacher> {
    Some(GivenTeacher::new(path, path.display().to_string()).expect("teacher file readable"))
}

#[test]
fn teachers_carry_a_card_export_to_a_hub_folder_and_are_reused_by_another_run() {
    umt_trainer::enable_fast_math();
    let dir = tempfile::tempdir().unwrap();
    let cfg = ExperimentConfig::preset(Preset::Smoke);
    let run1 = dir.path().join("run1");
    let mut runner = Runner::new(cfg.clone(), opts(&run1)).unwrap();
    let (ra, pa) = runner.teacher(Modality::Audio, 0).unwrap();
    let (rv, _) = runner.teacher(Modality::Video, 0).unwrap();

    // The card: everything needed to use the file alone.
    let card = read_teacher_card(&pa).unwrap();
    assert_eq!(card.modality, "audio");
    assert_eq!(card.dataset, "synthetic");
    assert_eq!(card.classes.len(), cfg.synthetic.num_classes);
    assert_eq!(card.experiment, cfg);
    // serde_json's default float parsing may differ from the value in the last bit.
    assert!((card.metrics.top1 - ra.test_top1).abs() < 1e-12);
    assert_eq!(card.metrics.per_class_top1.len(), ra.per_class_test.len());
    assert_eq!(card.metrics.epoch_losses, ra.epoch_losses);
    assert_eq!(card.metrics.split, "test");
    assert_eq!(card.input.shape.len(), 3);
    assert!(
        card.code_version.starts_with("umt-trainer "),
        "{}",
        card.code_version
    );
    let meta = umt_nn::checkpoint::read_meta(&pa).unwrap();
    assert_eq!(meta.architecture, "umt-trainer/audio-teacher");
    assert_eq!(meta.normalization.unwrap().mean, card.input.mean);

    // The export folder.
    let export = dir.path().join("export");
    let opts_export = ExportOptions {
        license: "mit".into(),
        repo_id: Some("someone/smoke-teachers".into()),
    };
    let summary = export_teachers(&run1, &export, &opts_export).unwrap();
    let files: Vec<&str> = summary.teachers.iter().map(|t| t.file.as_str()).collect();
    assert_eq!(
        files,
        ["audio-seed0.safetensors", "video-seed0.safetensors"]
    );
    assert!((summary.teachers[1].top1 - rv.test_top1).abs() < 1e-12);
    let readme = std::fs::read_to_string(export.join("README.md")).unwrap();
    assert!(readme.starts_with("---\nlicense: mit\n"), "{readme}");
    let header_end = readme[4..].find("\n---\n").unwrap();
    let header = &readme[..header_end + 4];
    for needle in [
        "library_name: umt",
        "datasets:\n  - synthetic",
        "model-index:",
        "type: accuracy",
    ] {
        assert!(header.contains(needle), "{needle} missing in\n{header}");
    }
    assert!(readme.contains("hf://someone/smoke-teachers/audio-seed0.safetensors"));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["teachers"]["teachers"].as_array().unwrap().len(), 2);
    let exported: ExperimentConfig = serde_json::from_value(config["experiment"].clone()).unwrap();
    assert_eq!(exported, cfg);
    assert_eq!(
        std::fs::read(export.join("audio-seed0.safetensors")).unwrap(),
        std::fs::read(&pa).unwrap()
    );

    // A second run given the exported files trains no teacher and scores them identically.
    let run2 = dir.path().join("run2");
    let mut runner2 = Runner::new(cfg.clone(), opts(&run2))
        .unwrap()
        .with_teachers([
            given(&export.join("audio-seed0.safetensors")),
            given(&export.join("video-seed0.safetensors")),
        ])
        .unwrap();
    let (ra2, pa2) = runner2.teacher(Modality::Audio, 0).unwrap();
    assert_eq!(pa2, export.join("audio-seed0.safetensors"));
    assert!((ra2.test_top1 - ra.test_top1).abs() < 1e-12);
    assert!(
        ra2.stage.starts_with("teachers/audio-given-"),
        "{}",
        ra2.stage
    );
    let r = runner2.method(Method::PretrainFinetune, 0).unwrap();
    assert!(r.test_top1.is_finite());
    assert!(!runner2.stages_run.iter().any(|s| s.contains("-seed0-")));
    // The given teachers are part of the folder's identity.
    let swapped = Runner::new(cfg.clone(), opts(&run2))
        .unwrap()
        .with_teachers([given(&export.join("audio-seed0.safetensors")), None]);
    assert!(matches!(swapped, Err(Error::ConfigChanged { .. })));

    // A teacher of the wrong modality or another encoder is refused, naming the field.
    let run3 = dir.path().join("run3");
    let mut wrong = Runner::new(cfg.clone(), opts(&run3))
        .unwrap()
        .with_teachers([given(&export.join("video-seed0.safetensors")), None])
        .unwrap();
    let err = wrong.teacher(Modality::Audio, 0).unwrap_err();
    assert!(
        matches!(&err, Error::TeacherCard { problem, .. } if problem.contains("`modality`")),
        "{err}"
    );
    let wider = ExperimentConfig {
        encoder: EncoderConfig {
            base_width: cfg.encoder.base_width * 2,
            ..cfg.encoder.clone()
        },
        ..cfg.clone()
    };
    let run4 = dir.path().join("run4");
    let mut wide = Runner::new(wider, opts(&run4))
        .unwrap()
        .with_teachers([given(&export.join("audio-seed0.safetensors")), None])
        .unwrap();
    let err = wide.teacher(Modality::Audio, 0).unwrap_err();
    assert!(
        err.to_string().contains("`experiment.encoder` differs"),
        "{err}"
    );
}

#[test]
fn export_errors_name_the_folder_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export");
    // Not a run folder.
    let err = export_teachers(dir.path(), &out, &ExportOptions::default()).unwrap_err();
    assert!(matches!(&err, Error::Export { .. }), "{err}");
    assert!(err.to_string().contains("teachers/"), "{err}");

    // A teacher checkpoint without a card (written before cards, or by another tool).
    let stage = dir.path().join("teachers/audio-seed0-0000");
    std::fs::create_dir_all(&stage).unwrap();
    let cfg = ExperimentConfig::preset(Preset::Smoke);
    let model = UniModel::new(Modality::Audio, &cfg.encoder, 4, 0, &Device::Cpu).unwrap();
    let meta = umt_nn::checkpoint::CheckpointMeta::new(
        "umt-trainer/audio-teacher",
        serde_json::to_value(&cfg.encoder).unwrap(),
    );
    umt_nn::checkpoint::save_varmap(&model.vars, &stage.join("model.safetensors"), &meta).unwrap();
    // Unfinished stage first: no result.json.
    let err = export_teachers(dir.path(), &out, &ExportOptions::default()).unwrap_err();
    assert!(err.to_string().contains("has not finished"), "{err}");
    std::fs::write(
        stage.join("result.json"),
        serde_json::to_string(&umt_trainer::StageResult {
            stage: "teachers/audio-seed0-0000".into(),
            seed: 0,
            test_top1: 0.5,
            train_top1: None,
            per_class_test: vec![],
            epoch_losses: vec![],
            seconds: 0.0,
            extra: serde_json::Value::Null,
        })
        .unwrap(),
    )
    .unwrap();
    let err = export_teachers(dir.path(), &out, &ExportOptions::default()).unwrap_err();
    match &err {
        Error::TeacherCard { path, problem } => {
            assert_eq!(path, &stage.join("model.safetensors"));
            assert!(problem.contains(KEY_TEACHER), "{problem}");
        }
        other => panic!("expected a teacher-card error, got {other}"),
    }
}
