//! NYUv2 through the segmentation trainer: a tiny fake NYUv2 folder (64×64 PNGs in the layout
//! `cargo xtask prepare-nyuv2` writes) trained end to end with the smoke recipe, every
//! bad-input case as an error from the trainer, the real RGB-D pair of
//! `../shared/data/rgbd-sample` through the same code path, and the validation carve.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;
use proptest::prelude::*;
use umt_data::rgbd::io::{write_depth_png, write_labels_png, write_rgb_png};
use umt_data::rgbd::synthetic::{SyntheticRgbd, SyntheticRgbdConfig};
use umt_data::rgbd::{RgbdDataset, Split};
use umt_esanet::Modality;
use umt_segtrainer::data::split_indices;
use umt_segtrainer::{
    table3, table4, ClassWeighting, DataConfig, Error, RunOptions, SegExperimentConfig, SegRunner,
};

const SIZE: usize = 64;

/// Writes `n_train` + `n_test` synthetic scenes at 64×64 as a NYUv2 folder under `root`; the
/// labels of image `i` are shifted by `10 · (i % 4)`, and the first 40 pixels of every image
/// are labels 1..=40, so any subset holds all 40 classes (median-frequency weights need
/// every class).
fn fake_nyuv2(root: &Path, n_train: usize, n_test: usize) -> Result<()> {
    let gen_cfg = SyntheticRgbdConfig {
        height: SIZE,
        width: SIZE,
        train_samples: n_train,
        test_samples: n_test,
        ..SyntheticRgbdConfig::default()
    };
    for (split, n) in [(Split::Train, n_train), (Split::Test, n_test)] {
        let gen = SyntheticRgbd::new(&gen_cfg, split, 3)?;
        let dir = root.join(split.name());
        for sub in ["rgb", "depth", "labels_40"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let mut list = String::new();
        for i in 0..n {
            let id = format!("{:04}", i + 1);
            let s = gen.sample(i)?;
            let mut labels: Vec<u8> = s
                .labels
                .iter()
                .map(|&l| if l == 0 { 0 } else { l + 10 * (i % 4) as u8 })
                .collect();
            // Every image holds every class (any subset of images has all 40).
            for (c, l) in labels.iter_mut().take(40).enumerate() {
                *l = c as u8 + 1;
            }
            let png = |sub: &str| dir.join(sub).join(format!("{id}.png"));
            write_rgb_png(&png("rgb"), &s.rgb, SIZE, SIZE)?;
            write_depth_png(&png("depth"), &s.depth, SIZE, SIZE)?;
            write_labels_png(&png("labels_40"), &labels, SIZE, SIZE)?;
            list += &format!("{id}\n");
        }
        std::fs::write(root.join(format!("{}.txt", split.name())), list)?;
    }
    Ok(())
}

/// The smoke recipe on NYUv2 shrunk for a test: a width-4 model at 32×32 (the 64×64 images
/// are resized to it), batch 2, median-frequency weights.
fn tiny_nyuv2() -> SegExperimentConfig {
    let mut cfg = SegExperimentConfig::preset_nyuv2("smoke").unwrap_or_else(|_| unreachable!());
    cfg.preset = "test".into();
    cfg.data = DataConfig::Nyuv2 {
        depth: umt_data::rgbd::nyuv2::DepthKind::Refined,
        depth_scale: 1.0,
        max_train_samples: None,
        max_test_samples: None,
    };
    cfg.model = cfg.model.with_input_size(32, 32);
    cfg.model.base_width = 4;
    cfg.model.decoder_channels = [16, 8, 8];
    cfg.train.batch_size = 2;
    cfg.train.eval_batch_size = 2;
    cfg.train.class_weighting = ClassWeighting::MedianFrequency;
    cfg.umt.taps = vec![1, 4];
    cfg
}

fn opts(out: &Path, data: Option<&Path>) -> RunOptions {
    let mut o = RunOptions::new(out, Device::Cpu);
    o.verbose = false;
    o.data_dir = data.map(Path::to_path_buf);
    o
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

/// Both tables run end to end on a fake NYUv2 folder with the smoke recipe: 40 classes,
/// median-frequency weights recorded (and reused), the data folder recorded, tables that say
/// what they were measured on.
#[test]
fn smoke_recipe_runs_end_to_end_on_a_fake_nyuv2_folder() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("nyuv2");
    fake_nyuv2(&data, 4, 2)?;
    let out = tmp.path().join("out");
    let mut runner = SegRunner::new(tiny_nyuv2(), opts(&out, Some(&data)))?;
    assert_eq!(runner.num_images(), (4, 2));
    let t3 = table3(&mut runner, &[0])?;
    let t4 = table4(&mut runner, &[0])?;
    t3.write(&runner)?;
    assert_eq!(runner.stages_run.len(), 6);
    assert!(
        t3.evaluated_on.starts_with("nyuv2 test"),
        "{}",
        t3.evaluated_on
    );
    assert!(std::fs::read_to_string(out.join("table3.md"))?.contains("nyuv2 test (2 images)"));
    for r in t3.rows.iter().chain(&t4.rows) {
        assert!((0.0..=100.0).contains(&r.left.mean) && (0.0..=100.0).contains(&r.right.mean));
    }

    let weights = read_json(&out.join("class_weights.json"))?;
    assert_eq!(weights["weighting"], "median_frequency");
    assert_eq!(weights["weights"].as_array().map(Vec::len), Some(40));
    assert_eq!(weights["images"][0], "train/0001");
    let record = read_json(&out.join("data.json"))?;
    assert_eq!(record["kind"], "nyuv2");
    assert_eq!(record["train_images"], 4);
    let evaluation = read_json(&out.join("evaluation.json"))?;
    assert_eq!(evaluation["split"], "test");

    // A rerun reuses every stage and the recorded weights (the file is not rewritten).
    let before = std::fs::metadata(out.join("class_weights.json"))?.modified()?;
    let mut again = SegRunner::new(tiny_nyuv2(), opts(&out, Some(&data)))?;
    let t3b = table3(&mut again, &[0])?;
    assert!(again.stages_run.is_empty());
    assert_eq!(t3b.rows, t3.rows);
    assert_eq!(
        std::fs::metadata(out.join("class_weights.json"))?.modified()?,
        before
    );

    // Another data folder in the same output folder is refused.
    let other = tmp.path().join("other");
    fake_nyuv2(&other, 4, 2)?;
    assert!(matches!(
        SegRunner::new(tiny_nyuv2(), opts(&out, Some(&other))),
        Err(Error::ConfigChanged { path }) if path.ends_with("data.json")
    ));
    Ok(())
}

/// Missing folder, list file or image: an error naming it and saying how to prepare NYUv2;
/// no `--data-dir`: an error naming the option.
#[test]
fn missing_nyuv2_files_are_named_with_the_fix() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("out");
    let err = |data: Option<&Path>| -> Result<Error> {
        SegRunner::new(tiny_nyuv2(), opts(&out, data))
            .err()
            .ok_or_else(|| anyhow::anyhow!("a runner opened bad data"))
    };
    let nowhere = tmp.path().join("nowhere");
    let e = err(Some(&nowhere))?;
    assert!(matches!(&e, Error::Nyuv2Missing { path, .. } if path == &nowhere));
    assert!(e.to_string().contains("prepare-nyuv2"), "{e}");

    let data = tmp.path().join("nyuv2");
    fake_nyuv2(&data, 4, 2)?;
    std::fs::remove_file(data.join("test.txt"))?;
    let e = err(Some(&data))?;
    assert!(
        matches!(&e, Error::Nyuv2Missing { path, .. } if path.ends_with("test.txt")),
        "{e}"
    );
    assert!(e.to_string().contains("prepare-nyuv2"), "{e}");

    fake_nyuv2(&data, 4, 2)?;
    std::fs::remove_file(data.join("train/labels_40/0003.png"))?;
    let e = err(Some(&data))?;
    assert!(
        matches!(&e, Error::Nyuv2Missing { path, .. } if path.ends_with("labels_40/0003.png")),
        "{e}"
    );

    assert!(matches!(
        err(None)?,
        Error::InvalidConfig {
            field: "data_dir",
            ..
        }
    ));
    Ok(())
}

/// Bad images reach the trainer as typed errors naming the file: a label above 40 (found
/// while counting class frequencies, before any training step), 8-bit depth, RGB and depth of
/// different sizes; a model size that is not a multiple of 32 names the setting.
#[test]
fn bad_nyuv2_images_are_errors_naming_the_file() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("nyuv2");
    let fresh = |data: &Path| -> Result<()> {
        let _ = std::fs::remove_dir_all(data);
        fake_nyuv2(data, 4, 2)
    };
    let px = SIZE * SIZE;

    fresh(&data)?;
    let bad = data.join("train/labels_40/0003.png");
    write_labels_png(&bad, &vec![41u8; px], SIZE, SIZE)?;
    let mut runner = SegRunner::new(tiny_nyuv2(), opts(&tmp.path().join("o1"), Some(&data)))?;
    let e = runner
        .baseline(Modality::RgbD, 0)
        .err()
        .ok_or_else(|| anyhow::anyhow!("label 41 accepted"))?;
    assert!(
        matches!(&e, Error::Data(umt_data::Error::LabelOutOfRange { path, value: 41, max: 40, .. }) if path == &bad),
        "{e}"
    );
    assert!(!tmp
        .path()
        .join("o1/seed-0/esanet-rgbd/result.json")
        .exists());

    fresh(&data)?;
    let bad = data.join("train/depth/0001.png");
    write_labels_png(&bad, &vec![9u8; px], SIZE, SIZE)?; // 8-bit
    let e = SegRunner::new(tiny_nyuv2(), opts(&tmp.path().join("o2"), Some(&data)))
        .err()
        .ok_or_else(|| anyhow::anyhow!("8-bit depth accepted"))?;
    assert!(
        matches!(&e, Error::Data(umt_data::Error::ImageFormat { path, .. }) if path == &bad),
        "{e}"
    );
    assert!(e.to_string().contains("16-bit"), "{e}");

    fresh(&data)?;
    let bad = data.join("test/depth/0001.png");
    write_depth_png(&bad, &vec![1000.0; SIZE * 32], 32, SIZE)?;
    let e = SegRunner::new(tiny_nyuv2(), opts(&tmp.path().join("o3"), Some(&data)))
        .err()
        .ok_or_else(|| anyhow::anyhow!("mismatched sizes accepted"))?;
    assert!(
        matches!(&e, Error::Data(umt_data::Error::ImageSizeMismatch { path, found_height: 32, .. }) if path == &bad),
        "{e}"
    );

    fresh(&data)?;
    let mut cfg = tiny_nyuv2();
    cfg.model = cfg.model.with_input_size(48, 64);
    let e = SegRunner::new(cfg, opts(&tmp.path().join("o4"), Some(&data)))
        .err()
        .ok_or_else(|| anyhow::anyhow!("a 48-pixel model accepted"))?;
    assert!(matches!(&e, Error::EsaNet(_)), "{e}");
    assert!(
        e.to_string().contains("height") && e.to_string().contains("32"),
        "{e}"
    );
    Ok(())
}

/// The real RGB-D pair (512×424 Kinect v2 frame, depth in 0.1 mm) loads through the NYUv2
/// path of the trainer with `depth_scale: 0.1`, resized to the model input, and trains.
#[test]
fn real_rgbd_sample_pair_trains_through_the_nyuv2_path() -> Result<()> {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/rgbd-sample");
    if !sample.join("sample_depth.png").is_file() {
        println!(
            "SKIPPED real_rgbd_sample_pair_trains_through_the_nyuv2_path: {} is absent \
             (the shared data folder next to the repository)",
            sample.display()
        );
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("nyuv2");
    // The pair under two ids per split; labels from depth (near / far halves of the range).
    let (depth, h, w) = umt_data::rgbd::io::load_depth(&sample.join("sample_depth.png"), 0.1)?;
    assert_eq!((h, w), (424, 512));
    let labels: Vec<u8> = depth
        .iter()
        .map(|&d| match d {
            d if d <= 0.0 => 0,
            d if d < 2500.0 => 1,
            _ => 2,
        })
        .collect();
    for split in ["train", "test"] {
        for sub in ["rgb", "depth", "labels_40"] {
            std::fs::create_dir_all(data.join(split).join(sub))?;
        }
        for id in ["0001", "0002"] {
            let png =
                |sub: &str| -> PathBuf { data.join(split).join(sub).join(format!("{id}.png")) };
            std::fs::copy(sample.join("sample_rgb.png"), png("rgb"))?;
            std::fs::copy(sample.join("sample_depth.png"), png("depth"))?;
            write_labels_png(&png("labels_40"), &labels, h, w)?;
        }
        std::fs::write(data.join(format!("{split}.txt")), "0001\n0002\n")?;
    }
    let mut cfg = tiny_nyuv2();
    cfg.train.class_weighting = ClassWeighting::None; // two classes of 40
    cfg.data = DataConfig::Nyuv2 {
        depth: umt_data::rgbd::nyuv2::DepthKind::Refined,
        depth_scale: 0.1,
        max_train_samples: None,
        max_test_samples: None,
    };
    let src = umt_segtrainer::data::Source::open(&cfg, Some(&data), Split::Train)?;
    let s = src.sample(0)?;
    assert_eq!((s.height, s.width), (424, 512));
    let mut d: Vec<f32> = s.depth.iter().copied().filter(|&d| d > 0.0).collect();
    d.sort_by(f32::total_cmp);
    let median = d[d.len() / 2];
    assert!(
        (2000.0..3000.0).contains(&median),
        "median depth {median} mm"
    );

    let mut runner = SegRunner::new(cfg, opts(&tmp.path().join("out"), Some(&data)))?;
    let r = runner.baseline(Modality::RgbD, 0)?;
    assert!((0.0..=1.0).contains(&r.miou) && r.epochs[0].loss.is_finite());
    Ok(())
}

/// Tuning mode: a seeded carve of the training images replaces the test split, the tables
/// say so, and a tuning folder is never resumed as a test run.
#[test]
fn tuning_mode_reports_on_a_validation_carve() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("nyuv2");
    fake_nyuv2(&data, 6, 2)?;
    let out = tmp.path().join("tune");
    let mut o = opts(&out, Some(&data));
    o.validation_fraction = Some(1.0 / 3.0);
    let mut runner = SegRunner::new(tiny_nyuv2(), o.clone())?;
    assert_eq!(runner.num_images(), (4, 2));
    let t = table4(&mut runner, &[0])?;
    assert!(t.evaluated_on.contains("validation"), "{}", t.evaluated_on);
    assert!(t.to_markdown().contains("tuning mode, not the test split"));
    assert_eq!(
        read_json(&out.join("evaluation.json"))?["split"],
        "validation"
    );
    // Class weights come from the 4 training images only.
    let w = read_json(&out.join("class_weights.json"))?;
    assert_eq!(w["images"].as_array().map(Vec::len), Some(4));

    assert!(matches!(
        SegRunner::new(tiny_nyuv2(), opts(&out, Some(&data))),
        Err(Error::ConfigChanged { path }) if path.ends_with("evaluation.json")
    ));
    o.validation_fraction = Some(1.0);
    assert!(matches!(
        SegRunner::new(tiny_nyuv2(), o),
        Err(Error::InvalidConfig {
            field: "validation_fraction",
            ..
        })
    ));
    Ok(())
}

proptest! {
    /// The carve is a deterministic partition of the (limited) training indices, with
    /// `round(f·n)` (at least 1) for validation.
    #[test]
    fn validation_carve_partitions_the_training_indices(
        n in 2usize..200, f in 0.01f64..0.99, seed in any::<u64>(), limit in proptest::option::of(2usize..300),
    ) {
        let used = limit.map_or(n, |m| m.min(n));
        let n_val = ((f * used as f64).round() as usize).max(1);
        let got = split_indices(n, 5, (limit, None), Some(f), seed);
        if n_val >= used {
            prop_assert!(got.is_err());
        } else {
            let (train, val) = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(val.len(), n_val);
            let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..used).collect::<Vec<_>>());
            let again = split_indices(n, 5, (limit, None), Some(f), seed)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(again, (train, val));
        }
        let (train, test) = split_indices(n, 5, (limit, Some(3)), None, seed)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(train.len(), used);
        prop_assert_eq!(test, vec![0, 1, 2]);
    }
}
