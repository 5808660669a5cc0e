//! Tables 3 and 4 of the paper: run the stages for every seed (from scratch, and from
//! ImageNet encoders when weights were given), aggregate mean ± std, and write JSON and
//! Markdown with the configuration.

use serde::{Deserialize, Serialize};
use umt_esanet::Modality;

use crate::config::SegExperimentConfig;
use crate::run::{write_atomic, write_json_atomic, Init, ProbeSource, SegRunner, StageResult};
use crate::Result;

/// Mean and sample standard deviation over seeds, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Mean mIoU (%).
    pub mean: f64,
    /// Sample standard deviation (%); 0 for one seed.
    pub std: f64,
}

impl Summary {
    /// The summary of fractions `values` (0..1) in percent.
    pub fn of(values: &[f64]) -> Self {
        let n = values.len().max(1) as f64;
        let pct: Vec<f64> = values.iter().map(|v| 100.0 * v).collect();
        let mean = pct.iter().sum::<f64>() / n;
        let var = if values.len() > 1 {
            pct.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Self {
            mean,
            std: var.sqrt(),
        }
    }

    fn cell(&self) -> String {
        if self.std > 0.0 {
            format!("{:.2} ± {:.2}", self.mean, self.std)
        } else {
            format!("{:.2}", self.mean)
        }
    }
}

/// One row of a table: a setting, two numbers, their difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRow {
    /// The setting (`From scratch`).
    pub setting: String,
    /// Left column (Table 3: ESANet; Table 4: uni-depth encoder), mIoU %.
    pub left: Summary,
    /// Right column (Table 3: UMT; Table 4: depth encoder of RGB-D ESANet), mIoU %.
    pub right: Summary,
    /// `right − left` of the means, percentage points (Table 3: improvement; Table 4: drop).
    pub delta: f64,
    /// The paper's numbers for this setting `[left, right]`.
    pub paper: [f64; 2],
}

/// A finished table with everything needed to read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegTable {
    /// `table3` or `table4`.
    pub table: String,
    /// Column headers `[setting, left, right, delta]`.
    pub columns: [String; 4],
    /// The rows.
    pub rows: Vec<TableRow>,
    /// What the mIoU is measured on, e.g. `nyuv2 test (654 images)` or `synthetic
    /// validation (20% of the training split; tuning mode, not the test split) (48 images)`.
    pub evaluated_on: String,
    /// The seeds run.
    pub seeds: Vec<u64>,
    /// Every stage result behind the numbers.
    pub stages: Vec<StageResult>,
    /// The configuration.
    pub config: SegExperimentConfig,
    /// Whether the paper's direction reproduces (Table 3: UMT > ESANet; Table 4: the
    /// uni-depth encoder > the fused one).
    pub paper_direction_reproduced: bool,
}

impl SegTable {
    /// The table as Markdown (header, rows, a line per seed count and the paper's numbers).
    pub fn to_markdown(&self) -> String {
        let c = &self.columns;
        let mut s = format!(
            "| {} | {} | {} | {} |\n|---|---|---|---|\n",
            c[0], c[1], c[2], c[3]
        );
        for r in &self.rows {
            s += &format!(
                "| {} | {} | {} | {:+.2} |\n",
                r.setting,
                r.left.cell(),
                r.right.cell(),
                r.delta
            );
        }
        s += &format!(
            "\nmIoU (%) on {}, preset `{}`, {} seed(s) {:?}; mean ± std.\n",
            self.evaluated_on,
            self.config.preset,
            self.seeds.len(),
            self.seeds
        );
        for r in &self.rows {
            s += &format!(
                "Paper ({}, NYUv2): {:.2} vs {:.2} ({:+.2}).\n",
                r.setting,
                r.paper[0],
                r.paper[1],
                r.paper[1] - r.paper[0]
            );
        }
        s += &format!(
            "Paper's direction reproduced: {}.\n",
            if self.paper_direction_reproduced {
                "yes"
            } else {
                "no"
            }
        );
        s
    }

    /// Writes `{table}.json` and `{table}.md` into the runner's output folder.
    pub fn write(&self, runner: &SegRunner) -> Result<()> {
        let dir = runner.out_dir();
        write_json_atomic(&dir.join(format!("{}.json", self.table)), self)?;
        write_atomic(
            &dir.join(format!("{}.md", self.table)),
            self.to_markdown().as_bytes(),
        )
    }
}

/// `{data} {split} ({n} images)`.
fn evaluated_on(runner: &SegRunner) -> String {
    format!(
        "{} {} ({} images)",
        runner.config().data.name(),
        runner.options().split_name(),
        runner.num_images().1
    )
}

fn row(setting: &str, left: &[StageResult], right: &[StageResult], paper: [f64; 2]) -> TableRow {
    let l = Summary::of(&left.iter().map(|r| r.miou).collect::<Vec<_>>());
    let r = Summary::of(&right.iter().map(|r| r.miou).collect::<Vec<_>>());
    TableRow {
        setting: setting.into(),
        delta: r.mean - l.mean,
        left: l,
        right: r,
        paper,
    }
}

/// The settings a runner can produce: from scratch, and ImageNet where weights were given.
fn settings(runner: &SegRunner) -> Vec<(Init, &'static str)> {
    let mut v = vec![(Init::Scratch, "From scratch")];
    if runner.has_imagenet_weights() {
        v.push((Init::ImageNet, "ImageNet pre-train"));
    }
    v
}

/// Table 3: ESANet vs UMT, RGB-D, for every seed; from scratch, and from ImageNet encoders
/// when the runner has weights. Paper (NYUv2): from scratch 38.59 → 40.45, ImageNet
/// 48.48 → 49.14.
pub fn table3(runner: &mut SegRunner, seeds: &[u64]) -> Result<SegTable> {
    let mut rows = Vec::new();
    let mut stages = Vec::new();
    for (init, setting) in settings(runner) {
        let (mut base, mut umt) = (Vec::new(), Vec::new());
        for &s in seeds {
            base.push(runner.baseline_init(Modality::RgbD, s, init)?);
            umt.push(runner.umt_init(s, init)?);
        }
        let paper = match init {
            Init::Scratch => [38.59, 40.45],
            Init::ImageNet => [48.48, 49.14],
        };
        rows.push(row(setting, &base, &umt, paper));
        stages.extend(base.into_iter().chain(umt));
    }
    let reproduced = rows.iter().all(|r| r.delta > 0.0);
    Ok(SegTable {
        table: "table3".into(),
        columns: [
            "Setting".into(),
            "ESANet (mIoU %)".into(),
            "UMT (mIoU %)".into(),
            "Improvement".into(),
        ],
        rows,
        evaluated_on: evaluated_on(runner),
        seeds: seeds.to_vec(),
        stages,
        config: runner.config().clone(),
        paper_direction_reproduced: reproduced,
    })
}

/// Table 4: the frozen depth encoder of the uni-depth network vs that of the RGB-D ESANet,
/// each with a new decoder trained on depth; from scratch, and from ImageNet encoders when
/// the runner has weights. Paper: from scratch 32.69 vs 28.53, ImageNet 39.45 vs 34.73.
pub fn table4(runner: &mut SegRunner, seeds: &[u64]) -> Result<SegTable> {
    let mut rows = Vec::new();
    let mut stages = Vec::new();
    for (init, setting) in settings(runner) {
        let (mut uni, mut fused) = (Vec::new(), Vec::new());
        for &s in seeds {
            uni.push(runner.probe_init(ProbeSource::UniDepth, s, init)?);
            fused.push(runner.probe_init(ProbeSource::RgbdDepth, s, init)?);
        }
        let paper = match init {
            Init::Scratch => [32.69, 28.53],
            Init::ImageNet => [39.45, 34.73],
        };
        rows.push(row(setting, &uni, &fused, paper));
        stages.extend(uni.into_iter().chain(fused));
    }
    let reproduced = rows.iter().all(|r| r.delta < 0.0);
    Ok(SegTable {
        table: "table4".into(),
        columns: [
            "Setting".into(),
            "Uni-depth encoder (mIoU %)".into(),
            "Depth encoder of RGB-D ESANet (mIoU %)".into(),
            "Drop".into(),
        ],
        rows,
        evaluated_on: evaluated_on(runner),
        seeds: seeds.to_vec(),
        stages,
        config: runner.config().clone(),
        paper_direction_reproduced: reproduced,
    })
}
