//! NYUv2 (40 classes) in the layout ESANet's `src/datasets/nyuv2/prepare_dataset.py` writes
//! (and `cargo xtask prepare-nyuv2` reproduces):
//!
//! ```text
//! ROOT/train.txt, ROOT/test.txt        one id per line (4-digit 1-based MATLAB index, "0003")
//! ROOT/{train,test}/rgb/ID.png         8-bit RGB, 480x640
//! ROOT/{train,test}/depth/ID.png       16-bit, mm, refined ('depths'); depth_raw/ = 'rawDepths'
//! ROOT/{train,test}/labels_40/ID.png   8-bit, 0 = void, 1..=40
//! ```
//!
//! [`Nyuv2Dataset::open`] reads the split's list and checks that every file exists (a missing
//! one is an error naming it); [`Nyuv2Dataset::sample`] loads one sample through
//! [`io::load_rgbd_pair`](super::io::load_rgbd_pair) (the path the real sample pair takes too)
//! and checks formats, sizes and label range.

use std::path::{Path, PathBuf};

use super::io::{check_size, load_labels, load_rgbd_pair};
use super::{RgbdDataset, RgbdSample, Split};
use crate::{Error, Result};

/// Number of NYUv2 classes in the 40-class protocol.
pub const NYUV2_NUM_CLASSES: usize = 40;

/// The 40 class names, index `c` = label `c + 1` = network channel `c` (ESANet
/// `class_names_1+40.txt` without 'void'; "refridgerator" spelled as there).
pub const NYUV2_CLASS_NAMES: [&str; NYUV2_NUM_CLASSES] = [
    "wall",
    "floor",
    "cabinet",
    "bed",
    "chair",
    "sofa",
    "table",
    "door",
    "window",
    "bookshelf",
    "picture",
    "counter",
    "blinds",
    "desk",
    "shelves",
    "curtain",
    "dresser",
    "pillow",
    "mirror",
    "floor mat",
    "clothes",
    "ceiling",
    "books",
    "refridgerator",
    "television",
    "paper",
    "towel",
    "shower curtain",
    "box",
    "whiteboard",
    "person",
    "night stand",
    "toilet",
    "sink",
    "lamp",
    "bathtub",
    "bag",
    "otherstructure",
    "otherfurniture",
    "otherprop",
];

/// Which depth folder to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DepthKind {
    /// `depth/`: the refined (inpainted) depth, ESANet's default.
    Refined,
    /// `depth_raw/`: the sensor's raw depth, 0 = no measurement (ESANet `--raw_depth`).
    Raw,
}

impl DepthKind {
    fn folder(self) -> &'static str {
        match self {
            DepthKind::Refined => "depth",
            DepthKind::Raw => "depth_raw",
        }
    }
}

/// The files of one NYUv2 sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nyuv2Files {
    /// The id from the split list (file stem, e.g. `0003`).
    pub id: String,
    /// `SPLIT/rgb/ID.png`
    pub rgb: PathBuf,
    /// `SPLIT/depth/ID.png` or `SPLIT/depth_raw/ID.png`
    pub depth: PathBuf,
    /// `SPLIT/labels_40/ID.png`
    pub labels: PathBuf,
}

/// One split of a prepared NYUv2 directory.
#[derive(Debug, Clone)]
pub struct Nyuv2Dataset {
    root: PathBuf,
    split: Split,
    depth_kind: DepthKind,
    depth_scale: f32,
    files: Vec<Nyuv2Files>,
}

impl Nyuv2Dataset {
    /// Opens `root` for `split` with the refined depth (ESANet's default).
    pub fn open(root: &Path, split: Split) -> Result<Self> {
        Self::open_with_depth(root, split, DepthKind::Refined)
    }

    /// Opens `root` for `split`, reading depth from the folder `depth_kind` names. Reads
    /// `ROOT/SPLIT.txt` and checks that the three files of every id exist.
    pub fn open_with_depth(root: &Path, split: Split, depth_kind: DepthKind) -> Result<Self> {
        let list = root.join(format!("{}.txt", split.name()));
        if !list.is_file() {
            return Err(Error::MissingFile {
                path: list,
                what: "NYUv2 split list (one id per line)",
            });
        }
        let text = std::fs::read_to_string(&list).map_err(|source| Error::Io {
            path: list.clone(),
            source,
        })?;
        let dir = root.join(split.name());
        let mut files = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let id = line.trim();
            if id.is_empty() {
                continue;
            }
            if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(Error::IndexLine {
                    path: list.clone(),
                    line: n + 1,
                    problem: format!("expected an id like `0003`, found `{id}`"),
                });
            }
            let f = Nyuv2Files {
                id: id.to_owned(),
                rgb: dir.join("rgb").join(format!("{id}.png")),
                depth: dir.join(depth_kind.folder()).join(format!("{id}.png")),
                labels: dir.join("labels_40").join(format!("{id}.png")),
            };
            for (path, what) in [
                (&f.rgb, "NYUv2 RGB image"),
                (&f.depth, "NYUv2 depth image"),
                (&f.labels, "NYUv2 label image (labels_40)"),
            ] {
                if !path.is_file() {
                    return Err(Error::MissingFile {
                        path: path.clone(),
                        what,
                    });
                }
            }
            files.push(f);
        }
        Ok(Self {
            root: root.to_path_buf(),
            split,
            depth_kind,
            depth_scale: 1.0,
            files,
        })
    }

    /// The same split with depth PNG values multiplied by `depth_scale` to give millimetres
    /// (1.0, the default, for NYUv2 as prepared; 0.1 for ESANet's sample pair in
    /// `shared/data/rgbd-sample`, whose values are tenths of a millimetre). A scale that is not
    /// finite and positive is [`Error::InvalidConfig`].
    pub fn with_depth_scale(mut self, depth_scale: f32) -> Result<Self> {
        if !(depth_scale.is_finite() && depth_scale > 0.0) {
            return Err(Error::InvalidConfig {
                field: "depth_scale",
                expected: "a finite positive factor (raw depth value to mm)".into(),
                found: depth_scale.to_string(),
            });
        }
        self.depth_scale = depth_scale;
        Ok(self)
    }

    /// The factor from depth PNG values to millimetres.
    pub fn depth_scale(&self) -> f32 {
        self.depth_scale
    }

    /// The labels of sample `index` alone (`(H, W)`, checked to `0..=40`) and their size,
    /// without decoding RGB and depth (class-frequency statistics).
    pub fn labels(&self, index: usize) -> Result<(Vec<u8>, usize, usize)> {
        let files = self.files.get(index).ok_or(Error::IndexOutOfRange {
            index,
            len: self.files.len(),
        })?;
        load_labels(&files.labels, NYUV2_NUM_CLASSES)
    }

    /// The dataset root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The split.
    pub fn split(&self) -> Split {
        self.split
    }

    /// The depth folder read.
    pub fn depth_kind(&self) -> DepthKind {
        self.depth_kind
    }

    /// The files of every sample, in list order.
    pub fn files(&self) -> &[Nyuv2Files] {
        &self.files
    }
}

/// Loads one sample from its three files: RGB and depth through
/// [`load_rgbd_pair`] (depth already in mm, scale 1), labels checked to `0..=num_classes`,
/// all three the same size.
pub fn load_sample(files: &Nyuv2Files, num_classes: usize) -> Result<RgbdSample> {
    load_sample_scaled(files, num_classes, 1.0)
}

/// [`load_sample`] with depth PNG values multiplied by `depth_scale` (to millimetres).
pub fn load_sample_scaled(
    files: &Nyuv2Files,
    num_classes: usize,
    depth_scale: f32,
) -> Result<RgbdSample> {
    let pair = load_rgbd_pair(&files.rgb, &files.depth, depth_scale)?;
    let (labels, lh, lw) = load_labels(&files.labels, num_classes)?;
    check_size(
        &files.labels,
        &files.rgb,
        (pair.height, pair.width),
        (lh, lw),
    )?;
    Ok(RgbdSample {
        rgb: pair.rgb,
        depth: pair.depth,
        labels,
        height: pair.height,
        width: pair.width,
    })
}

impl RgbdDataset for Nyuv2Dataset {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn num_classes(&self) -> usize {
        NYUV2_NUM_CLASSES
    }

    fn class_names(&self) -> Vec<String> {
        NYUV2_CLASS_NAMES.iter().map(|s| (*s).to_owned()).collect()
    }

    fn sample(&self, index: usize) -> Result<RgbdSample> {
        let files = self.files.get(index).ok_or(Error::IndexOutOfRange {
            index,
            len: self.files.len(),
        })?;
        load_sample_scaled(files, NYUV2_NUM_CLASSES, self.depth_scale)
    }
}
