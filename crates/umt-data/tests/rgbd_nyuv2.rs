//! NYUv2 loader (ESANet layout) on tiny PNGs written here, one test per bad-input case, and the
//! real RGB-D pair of `../shared/data/rgbd-sample` through the same code path.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use image::{ImageBuffer, Luma, Rgb};
use umt_data::rgbd::io::{load_depth, load_rgbd_pair};
use umt_data::rgbd::nyuv2::{DepthKind, Nyuv2Dataset, NYUV2_NUM_CLASSES};
use umt_data::rgbd::{targets_i64, RgbdDataset, Split};
use umt_data::Error;

fn rgb_png(path: &Path, h: u32, w: u32) {
    let img = ImageBuffer::from_fn(w, h, |x, y| Rgb([(x * 10) as u8, (y * 20) as u8, 7u8]));
    img.save(path).unwrap();
}

fn depth_png(path: &Path, h: u32, w: u32) {
    let img = ImageBuffer::from_fn(w, h, |x, y| Luma([(1000 + 100 * x + y) as u16]));
    img.save(path).unwrap();
}

fn labels_png(path: &Path, h: u32, w: u32, value: u8) {
    let img = ImageBuffer::from_fn(w, h, |x, _| Luma([if x == 0 { 0 } else { value }]));
    img.save(path).unwrap();
}

/// Writes a 2-sample train split of 4x6 images; returns the root.
fn tiny_dataset(dir: &Path) -> PathBuf {
    let root = dir.to_path_buf();
    for sub in ["rgb", "depth", "depth_raw", "labels_40"] {
        std::fs::create_dir_all(root.join("train").join(sub)).unwrap();
    }
    std::fs::write(root.join("train.txt"), "0001\n0002\n\n").unwrap();
    for id in ["0001", "0002"] {
        let t = root.join("train");
        rgb_png(&t.join("rgb").join(format!("{id}.png")), 4, 6);
        depth_png(&t.join("depth").join(format!("{id}.png")), 4, 6);
        depth_png(&t.join("depth_raw").join(format!("{id}.png")), 4, 6);
        labels_png(&t.join("labels_40").join(format!("{id}.png")), 4, 6, 40);
    }
    root
}

fn file(root: &Path, kind: &str, id: &str) -> PathBuf {
    root.join("train").join(kind).join(format!("{id}.png"))
}

#[test]
fn loads_samples_as_plain_buffers() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tiny_dataset(tmp.path());
    let ds = Nyuv2Dataset::open(&root, Split::Train).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.num_classes(), NYUV2_NUM_CLASSES);
    assert_eq!(ds.class_names()[0], "wall");
    let s = ds.sample(1).unwrap();
    assert_eq!((s.height, s.width), (4, 6));
    assert_eq!(s.rgb.len(), 3 * 4 * 6);
    // (3, H, W): channel 0 at (y=2, x=3) is x*10, channel 1 is y*20, channel 2 is 7.
    assert_eq!(s.rgb[2 * 6 + 3], 30.0);
    assert_eq!(s.rgb[24 + 2 * 6 + 3], 40.0);
    assert_eq!(s.rgb[48 + 2 * 6 + 3], 7.0);
    assert_eq!(s.depth[2 * 6 + 3], 1302.0); // mm, unscaled
    assert_eq!(s.labels[0], 0);
    assert_eq!(s.labels[1], 40);
    // void -> -1, label 40 -> class 39
    assert_eq!(targets_i64(&s.labels[..2]), vec![-1, 39]);
    let raw = Nyuv2Dataset::open_with_depth(&root, Split::Train, DepthKind::Raw).unwrap();
    assert!(raw.files()[0].depth.ends_with("train/depth_raw/0001.png"));
    assert!(matches!(
        ds.sample(2),
        Err(Error::IndexOutOfRange { index: 2, len: 2 })
    ));
}

#[test]
fn depth_scale_and_labels_only_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tiny_dataset(tmp.path());
    let ds = Nyuv2Dataset::open(&root, Split::Train).unwrap();
    assert_eq!(ds.depth_scale(), 1.0);
    let scaled = ds.clone().with_depth_scale(0.1).unwrap();
    let (a, b) = (ds.sample(1).unwrap(), scaled.sample(1).unwrap());
    assert_eq!(b.depth[2 * 6 + 3], a.depth[2 * 6 + 3] * 0.1); // 1302 -> 130.2 mm
    assert_eq!(a.rgb, b.rgb);
    let (labels, h, w) = ds.labels(1).unwrap();
    assert_eq!((labels, h, w), (a.labels, 4, 6));
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            ds.clone().with_depth_scale(bad),
            Err(Error::InvalidConfig {
                field: "depth_scale",
                ..
            })
        ));
    }
    assert!(matches!(
        ds.labels(5),
        Err(Error::IndexOutOfRange { index: 5, len: 2 })
    ));
}

#[test]
fn label_outside_range_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tiny_dataset(tmp.path());
    let bad = file(&root, "labels_40", "0002");
    labels_png(&bad, 4, 6, 41);
    let ds = Nyuv2Dataset::open(&root, Split::Train).unwrap();
    match ds.sample(1) {
        Err(Error::LabelOutOfRange {
            path,
            value: 41,
            max: 40,
            row: 0,
            col: 1,
        }) => assert_eq!(path, bad),
        other => panic!("expected LabelOutOfRange, got {other:?}"),
    }
    assert!(ds.sample(0).is_ok());
}

#[test]
fn eight_bit_depth_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tiny_dataset(tmp.path());
    let bad = file(&root, "depth", "0001");
    labels_png(&bad, 4, 6, 3); // an 8-bit grayscale PNG
    let ds = Nyuv2Dataset::open(&root, Split::Train).unwrap();
    match ds.sample(0) {
        Err(Error::ImageFormat {
            path,
            expected,
            found,
        }) => {
            assert_eq!(path, bad);
            assert_eq!(expected, "16-bit grayscale");
            assert!(found.contains("L8"), "{found}");
        }
        other => panic!("expected ImageFormat, got {other:?}"),
    }
}

#[test]
fn rgb_that_is_not_8bit_rgb_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tiny_dataset(tmp.path());
    let bad = file(&root, "rgb", "0001");
    depth_png(&bad, 4, 6);
    let ds = Nyuv2Dataset::open(&root, Split::Train).unwrap();
    assert!(
        matches!(ds.sample(0), Err(Error::ImageFormat { path, expected: "8-bit RGB", .. }) if path == bad)
    );
}

#[test]
fn depth_of_another_size_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tiny_dataset(tmp.path());
    let bad = file(&root, "depth", "0002");
    depth_png(&bad, 5, 6);
    let ds = Nyuv2Dataset::open(&root, Split::Train).unwrap();
    match ds.sample(1) {
        Err(Error::ImageSizeMismatch {
            path,
            reference,
            expected_height: 4,
            expected_width: 6,
            found_height: 5,
            found_width: 6,
        }) => {
            assert_eq!(path, bad);
            assert_eq!(reference, file(&root, "rgb", "0002"));
        }
        other => panic!("expected ImageSizeMismatch, got {other:?}"),
    }
}

#[test]
fn labels_of_another_size_are_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tiny_dataset(tmp.path());
    let bad = file(&root, "labels_40", "0001");
    labels_png(&bad, 4, 7, 1);
    let ds = Nyuv2Dataset::open(&root, Split::Train).unwrap();
    assert!(matches!(
        ds.sample(0),
        Err(Error::ImageSizeMismatch { path, found_width: 7, .. }) if path == bad
    ));
}

#[test]
fn missing_files_are_errors_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tiny_dataset(tmp.path());
    let gone = file(&root, "labels_40", "0002");
    std::fs::remove_file(&gone).unwrap();
    assert!(matches!(
        Nyuv2Dataset::open(&root, Split::Train),
        Err(Error::MissingFile { path, .. }) if path == gone
    ));
    // no test.txt at all
    assert!(matches!(
        Nyuv2Dataset::open(&root, Split::Test),
        Err(Error::MissingFile { path, .. }) if path == root.join("test.txt")
    ));
}

#[test]
fn bad_id_line_is_an_error_with_line_number() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tiny_dataset(tmp.path());
    std::fs::write(root.join("train.txt"), "0001\n../etc/passwd\n").unwrap();
    assert!(matches!(
        Nyuv2Dataset::open(&root, Split::Train),
        Err(Error::IndexLine { line: 2, .. })
    ));
}

#[test]
fn unreadable_png_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tiny_dataset(tmp.path());
    let bad = file(&root, "rgb", "0001");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let ds = Nyuv2Dataset::open(&root, Split::Train).unwrap();
    match ds.sample(0) {
        Err(e @ Error::ImageDecode { .. }) => {
            assert!(e.to_string().contains("0001.png"), "{e}")
        }
        other => panic!("expected ImageDecode, got {other:?}"),
    }
}

/// The real pair shipped with ESANet (`samples/`), read through `load_rgbd_pair`, the function
/// NYUv2 samples go through. Its depth is stored in 1/10 mm (ESANet README runs the NYUv2 model
/// on it with `--depth_scale 0.1`).
#[test]
fn real_rgbd_sample_pair_loads_through_the_nyuv2_path() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/rgbd-sample");
    if !dir.is_dir() {
        println!(
            "SKIPPED real_rgbd_sample_pair: {} is absent (shared data not mounted)",
            dir.display()
        );
        return;
    }
    let rgb = dir.join("sample_rgb.png");
    let depth = dir.join("sample_depth.png");
    let pair = load_rgbd_pair(&rgb, &depth, 0.1).unwrap();
    assert_eq!((pair.height, pair.width), (424, 512));
    assert_eq!(pair.rgb.len(), 3 * 424 * 512);
    assert_eq!(pair.depth.len(), 424 * 512);
    // 16-bit: raw values above 255 exist (an 8-bit file would be rejected by load_depth).
    let (raw, _, _) = load_depth(&depth, 1.0).unwrap();
    assert!(raw.iter().any(|&d| d > 255.0));
    // plausible indoor range in mm after the 0.1 scale: median of valid pixels 0.5..8 m
    let mut valid: Vec<f32> = pair.depth.iter().copied().filter(|&d| d > 0.0).collect();
    assert!(valid.len() > pair.depth.len() / 2, "mostly valid depth");
    valid.sort_by(f32::total_cmp);
    let median = valid[valid.len() / 2];
    assert!(
        (500.0..8000.0).contains(&median),
        "median depth {median} mm"
    );
    assert!(valid[valid.len() - 1] <= 6553.5 + 1e-3);
    let rgb_mean = pair.rgb.iter().sum::<f32>() / pair.rgb.len() as f32;
    assert!((10.0..245.0).contains(&rgb_mean), "rgb mean {rgb_mean}");
}
