//! The trainer on a prepared AV-MNIST folder: a tiny run end to end through the library API
//! (the dataset recorded in `config.json`, the table's dataset name), the refusal of a folder
//! prepared again with other settings, and the data-directory checks.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use umt_data::avmnist::{write_prepared, AvMnistConfig, AvMnistData, IndexEntry, PreparedInfo};
use umt_data::{AvDataset, Views};
use umt_trainer::config::DatasetConfig;
use umt_trainer::report::{check_dataset, reproduce_table2, table2_with};
use umt_trainer::{Error, ExperimentConfig, Method, Preset, Progress, RunOptions, Runner};

/// A prepared folder with `n` training and `n / 2` test samples whose audio and image both
/// carry the label (a bright row per class), written by `write_prepared` as
/// `cargo xtask prepare-avmnist` would.
fn tiny_prepared(dir: &Path, n: usize, seed: u64) {
    let cfg = AvMnistConfig {
        train_samples: n,
        test_samples: n / 2,
        ..AvMnistConfig::default()
    };
    let (a, v) = (cfg.audio_shape(), cfg.video_shape());
    let split = |len: usize, name: &str, index: &mut Vec<IndexEntry>| {
        let labels: Vec<u32> = (0..len).map(|i| (i % 10) as u32).collect();
        let mut audio = vec![0.0f32; len * a.iter().product::<usize>()];
        let mut video = vec![0.0f32; len * v.iter().product::<usize>()];
        for (i, &y) in labels.iter().enumerate() {
            let y = y as usize;
            let pa = &mut audio[i * 1024..(i + 1) * 1024];
            pa[(3 * y) * 32..(3 * y + 1) * 32].fill(2.0); // (F, T): a bright frequency row
            let pv = &mut video[i * 2352..(i + 1) * 2352];
            for c in 0..3 {
                pv[c * 784 + (2 * y + 4) * 28..c * 784 + (2 * y + 5) * 28].fill(1.5);
            }
            index.push(IndexEntry {
                split: name.into(),
                position: i,
                label: y as u32,
                class_name: umt_data::avmnist::CLASSES[y].into(),
                mnist_split: name.into(),
                mnist_index: i,
                recording: format!("{y}_tiny_{}.wav", i + usize::from(name == "train") * 5),
            });
        }
        AvDataset::new(audio, a, video, v, labels, vec![Views::Both; len], 10).unwrap()
    };
    let mut index = Vec::new();
    let train = split(n, "train", &mut index);
    let test = split(n / 2, "test", &mut index);
    let data = AvMnistData {
        train,
        test,
        index,
        info: PreparedInfo {
            format: umt_data::avmnist::FORMAT.into(),
            config: cfg.clone(),
            seed,
            audio_mean: 0.0,
            audio_std: 1.0,
            pca_components: 4,
            pca_energy_kept: 0.28,
            audio_shape: a,
            video_shape: v,
        },
    };
    write_prepared(&data, dir).unwrap();
}

#[test]
fn tiny_avmnist_runs_end_to_end_and_a_reprepared_folder_is_refused() {
    umt_trainer::enable_fast_math();
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("avmnist");
    tiny_prepared(&data_dir, 60, 0);
    let dataset = DatasetConfig::avmnist(&data_dir).unwrap();
    let cfg = ExperimentConfig::preset_for(Preset::Smoke, dataset)
        .with_overrides(&serde_json::json!({"train": {
            "epochs": 1, "teacher_epochs": 1, "batch_size": 20, "linear_epochs": 2}}))
        .unwrap();
    assert_eq!(cfg.dataset.name(), "avmnist");
    let out = tmp.path().join("run");
    let opts = RunOptions {
        out_dir: out.clone(),
        seeds: vec![0],
        methods: vec![Method::NaiveFusion, Method::UniModalTeacher],
        device: Device::Cpu,
        progress: Progress::Quiet,
        validation_fraction: None,
    };
    let t2 = reproduce_table2(cfg.clone(), opts.clone(), "avmnist").unwrap();
    assert_eq!(t2.dataset, "avmnist");
    assert_eq!(t2.methods.len(), 2);
    assert!(t2.methods.iter().all(|m| (0.0..=100.0).contains(&m.mean)));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["dataset"]["name"], "avmnist");
    assert_eq!(saved["dataset"]["prepared"]["config"]["train_samples"], 60);
    // The teachers' cache key covers the dataset.
    let teachers: Vec<String> = std::fs::read_dir(out.join("teachers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(teachers.len(), 2, "{teachers:?}");

    // The table of the wrong dataset name is refused before anything runs.
    let e = reproduce_table2(cfg.clone(), opts.clone(), "synthetic").unwrap_err();
    assert!(matches!(e, Error::Dataset { .. }), "{e}");

    // The folder prepared again (another seed): the old run refuses to mix it in.
    tiny_prepared(&data_dir, 60, 1);
    let mut runner = Runner::new(cfg, opts).unwrap();
    std::fs::remove_file(out.join("seed-0/naive-fusion/result.json")).unwrap();
    let e = table2_with(&mut runner, "avmnist", Instant::now()).unwrap_err();
    assert!(
        matches!(e, Error::Dataset { .. }) && e.to_string().contains("prepared again"),
        "{e}"
    );
}

#[test]
fn avmnist_data_dir_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let e = check_dataset("avmnist", None).unwrap_err();
    assert!(e.to_string().contains("--data-dir"), "{e}");
    let e = check_dataset("avmnist", Some(tmp.path())).unwrap_err();
    assert!(e.to_string().contains("config.json"), "{e}");
    let e = check_dataset("synthetic", Some(tmp.path())).unwrap_err();
    assert!(matches!(e, Error::Dataset { .. }), "{e}");
    assert!(matches!(
        DatasetConfig::avmnist(&tmp.path().join("missing")),
        Err(Error::MissingDataDir { .. })
    ));
    let e = DatasetConfig::avmnist(tmp.path()).unwrap_err();
    assert!(e.to_string().contains("prepare-avmnist"), "{e}");
    tiny_prepared(tmp.path(), 20, 0);
    assert!(check_dataset("avmnist", Some(tmp.path())).is_ok());
}
