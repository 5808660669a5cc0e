//! The synthetic RGB-D room generator: determinism, shapes, config errors, class coverage,
//! the geometric/photometric design (pictures flat in depth, cabinets not), PNG round trip
//! through the NYUv2 loader's reading functions.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use umt_data::rgbd::io::{load_labels, load_rgbd_pair};
use umt_data::rgbd::synthetic::{SyntheticRgbd, SyntheticRgbdConfig, SYNTHETIC_CLASS_NAMES};
use umt_data::rgbd::{RgbdDataset, Split};
use umt_data::Error;

fn small() -> SyntheticRgbdConfig {
    SyntheticRgbdConfig {
        height: 64,
        width: 96,
        train_samples: 40,
        test_samples: 10,
        ..Default::default()
    }
}

#[test]
fn deterministic_by_seed_split_and_index() {
    let cfg = small();
    let a = SyntheticRgbd::new(&cfg, Split::Train, 5).unwrap();
    let b = SyntheticRgbd::new(&cfg, Split::Train, 5).unwrap();
    assert_eq!(a.sample(3).unwrap(), b.sample(3).unwrap());
    assert_ne!(a.sample(3).unwrap(), a.sample(4).unwrap());
    let test = SyntheticRgbd::new(&cfg, Split::Test, 5).unwrap();
    assert_ne!(a.sample(3).unwrap(), test.sample(3).unwrap());
    let other_seed = SyntheticRgbd::new(&cfg, Split::Train, 6).unwrap();
    assert_ne!(a.sample(3).unwrap(), other_seed.sample(3).unwrap());
    // batch rendering (parallel) equals sample-by-sample rendering
    let batch = a.batch(&[4, 3]).unwrap();
    assert_eq!(batch.rgb_shape(), [2, 3, 64, 96]);
    assert_eq!(batch.depth_shape(), [2, 1, 64, 96]);
    assert_eq!(batch.labels_shape(), [2, 64, 96]);
    let s3 = a.sample(3).unwrap();
    assert_eq!(&batch.rgb[3 * 64 * 96..], &s3.rgb[..]);
    assert_eq!(&batch.labels[64 * 96..], &s3.labels[..]);
}

#[test]
fn samples_have_plausible_values_and_all_classes_appear() {
    let cfg = small();
    let ds = SyntheticRgbd::new(&cfg, Split::Train, 0).unwrap();
    assert_eq!(ds.len(), 40);
    assert_eq!(ds.num_classes(), 10);
    assert_eq!(ds.class_names().len(), SYNTHETIC_CLASS_NAMES.len());
    let freq = ds.label_frequencies(40).unwrap();
    assert_eq!(freq.len(), 11);
    assert!((freq.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    for (c, f) in freq.iter().enumerate().skip(1) {
        assert!(
            *f > 0.002,
            "class {c} ({}) has share {f}",
            SYNTHETIC_CLASS_NAMES[c - 1]
        );
    }
    let s = ds.sample(0).unwrap();
    s.validate().unwrap();
    assert!(s.rgb.iter().all(|v| (0.0..=255.0).contains(v)));
    // depth in whole mm, inside a room of at most 7 m (diagonal < 10 m)
    assert!(s
        .depth
        .iter()
        .all(|d| *d >= 1.0 && *d <= 10_000.0 && d.fract() == 0.0));
    let mean = s.depth.iter().sum::<f32>() / s.depth.len() as f32;
    assert!((800.0..7000.0).contains(&mean), "mean depth {mean}");
    assert!(s.labels.iter().all(|&l| l <= 10));
}

#[test]
fn pictures_are_flat_in_depth_and_cabinets_stand_out() {
    // Depth step at the border of a picture (label 5) vs a cabinet (label 6), against the
    // wall (label 1) pixel next to it on the same row: the design that makes a depth-only net
    // blind to pictures and an RGB-only net unable to tell them from cabinets.
    let cfg = small();
    let ds = SyntheticRgbd::new(&cfg, Split::Train, 1).unwrap();
    let (mut pic, mut cab, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..40 {
        let s = ds.sample(i).unwrap();
        for y in 0..s.height {
            for x in 1..s.width {
                let (a, b) = (s.labels[y * s.width + x - 1], s.labels[y * s.width + x]);
                let step = (s.depth[y * s.width + x] - s.depth[y * s.width + x - 1]).abs();
                match (a, b) {
                    (1, 5) | (5, 1) => pic.push(step),
                    (1, 6) | (6, 1) => cab.push(step),
                    (1, 1) => wall.push(step),
                    _ => {}
                }
            }
        }
    }
    let median = |v: &mut Vec<f32>| {
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    };
    assert!(
        pic.len() > 20 && cab.len() > 20,
        "{} {}",
        pic.len(),
        cab.len()
    );
    let (mp, mc, mw) = (median(&mut pic), median(&mut cab), median(&mut wall));
    println!("median depth step: wall/wall {mw} mm, picture/wall {mp} mm, cabinet/wall {mc} mm");
    // a picture border is as smooth in depth as the wall itself (1 cm, under the noise) ...
    assert!(
        mp < 2.0 * mw + 20.0,
        "picture/wall step {mp} vs wall/wall {mw}"
    );
    // ... a cabinet border is a step of tens of centimetres
    assert!(
        mc > 150.0 && mc > 3.0 * mp,
        "cabinet/wall step {mc} vs picture/wall {mp}"
    );
}

#[test]
fn resolution_must_be_a_multiple_of_32() {
    let cfg = SyntheticRgbdConfig {
        height: 100,
        ..small()
    };
    match SyntheticRgbd::new(&cfg, Split::Train, 0) {
        Err(Error::InvalidConfig { field, found, .. }) => {
            assert_eq!(field, "height");
            assert_eq!(found, "100");
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    let cfg = SyntheticRgbdConfig {
        room_width_m: [5.0, 4.0],
        ..small()
    };
    assert!(matches!(
        cfg.validate(),
        Err(Error::InvalidConfig {
            field: "room_width_m",
            ..
        })
    ));
}

#[test]
fn config_json_rejects_unknown_keys_and_accepts_subsets() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.json");
    std::fs::write(&good, r#"{"height": 64, "objects": {"rugs": [1, 1]}}"#).unwrap();
    let cfg = SyntheticRgbdConfig::from_json_file(&good).unwrap();
    assert_eq!(cfg.height, 64);
    assert_eq!(cfg.objects.rugs, [1, 1]);
    assert_eq!(cfg.width, 128);
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, r#"{"heigth": 64}"#).unwrap();
    assert!(matches!(
        SyntheticRgbdConfig::from_json_file(&bad),
        Err(Error::ConfigParse { path, .. }) if path == bad
    ));
    assert!(matches!(
        SyntheticRgbdConfig::from_json_file(&tmp.path().join("absent.json")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn index_out_of_range_is_an_error() {
    let ds = SyntheticRgbd::new(&small(), Split::Test, 0).unwrap();
    assert!(matches!(
        ds.sample(10),
        Err(Error::IndexOutOfRange { index: 10, len: 10 })
    ));
}

#[test]
fn written_pngs_load_back_through_the_nyuv2_reading_path() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = SyntheticRgbd::new(&small(), Split::Test, 2).unwrap();
    let files = ds.write_pngs(tmp.path(), 2).unwrap();
    assert_eq!(files.len(), 2);
    let s = ds.sample(1).unwrap();
    let pair = load_rgbd_pair(&files[1].rgb, &files[1].depth, 1.0).unwrap();
    assert_eq!((pair.height, pair.width), (64, 96));
    assert_eq!(pair.depth, s.depth); // whole mm survive 16-bit PNG exactly
    for (a, b) in pair.rgb.iter().zip(&s.rgb) {
        assert!((a - b).abs() <= 0.5 + 1e-4);
    }
    let (labels, _, _) = load_labels(&files[1].labels, 10).unwrap();
    assert_eq!(labels, s.labels);
    assert!(files[1].labels_colored.is_file());
}
