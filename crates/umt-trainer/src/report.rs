//! Tables 1 and 2 and Figure 2: running the stages they need, aggregating over seeds, and
//! writing JSON (the schema), Markdown, PNG and SVG. Accuracies are in percent.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::ExperimentConfig;
use crate::method::Method;
use crate::model::Modality;
use crate::run::{write_atomic, write_json_atomic, ProbeSource, RunOptions, Runner};
use crate::{Error, Result};

/// Datasets the commands accept, and what provides each.
pub const DATASETS: &str = "synthetic, avmnist, vggsound";

/// Checks the dataset name and data directory before anything runs: `synthetic` (the
/// embedded generator) takes no directory; `avmnist` needs a folder written by
/// `cargo xtask prepare-avmnist`; `vggsound` one written by `cargo xtask prepare-vggsound`
/// (with its `classes.txt` and `index.jsonl`).
pub fn check_dataset(name: &str, data_dir: Option<&Path>) -> Result<()> {
    if let Some(d) = data_dir {
        if !d.is_dir() {
            return Err(Error::MissingDataDir {
                path: d.to_path_buf(),
            });
        }
    }
    match name {
        "synthetic" => match data_dir {
            None => Ok(()),
            Some(d) => Err(Error::Dataset {
                name: name.into(),
                problem: format!(
                    "is generated in memory from the config and reads no data directory (got {})",
                    d.display()
                ),
            }),
        },
        "avmnist" => match data_dir {
            None => Err(Error::Dataset {
                name: name.into(),
                problem: "needs --data-dir DIR, a folder written by `cargo xtask \
                          prepare-avmnist --out DIR`"
                    .into(),
            }),
            Some(d) if !d.join("config.json").is_file() => Err(Error::Dataset {
                name: name.into(),
                problem: format!(
                    "{} has no config.json: not a folder written by `cargo xtask \
                     prepare-avmnist` (or its preparation did not finish)",
                    d.display()
                ),
            }),
            Some(_) => Ok(()),
        },
        "vggsound" => match data_dir {
            None => Err(Error::Dataset {
                name: name.into(),
                problem: "needs --data-dir DIR, a folder written by `cargo xtask \
                          prepare-vggsound --out DIR` (docs/vggsound.md)"
                    .into(),
            }),
            // Names the missing classes.txt / index.jsonl and the command that writes them.
            Some(d) => crate::config::vggsound_index_sha256(d).map(|_| ()),
        },
        other => Err(Error::Dataset {
            name: other.into(),
            problem: format!("unknown dataset; expected one of {DATASETS}"),
        }),
    }
}

/// [`check_dataset`] on the dataset of `cfg`, which must be the one called `name`.
fn check_config_dataset(name: &str, cfg: &ExperimentConfig) -> Result<()> {
    check_dataset(name, cfg.dataset.data_dir())?;
    if cfg.dataset.name() != name {
        return Err(Error::Dataset {
            name: name.into(),
            problem: format!(
                "the experiment config's dataset is `{}`",
                cfg.dataset.name()
            ),
        });
    }
    Ok(())
}

/// Mean and sample standard deviation (n − 1; 0 for a single value).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// One row of Table 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table2Row {
    /// The paper's method name.
    pub name: String,
    /// Top-1 test accuracy (%) per seed, last epoch.
    pub top1: Vec<f64>,
    /// Mean over seeds (%).
    pub mean: f64,
    /// Sample standard deviation over seeds (%).
    pub std: f64,
}

/// Table 2 (`table2.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table2 {
    /// Dataset name.
    pub dataset: String,
    /// Training seeds.
    pub seeds: Vec<u64>,
    /// Wall time of the command that wrote the table, in seconds.
    pub wall_seconds: f64,
    /// The split the accuracies are measured on: `test`, or the validation split of a tuning
    /// run (`--tune-on-validation`; only then written to the JSON).
    #[serde(default = "test_split", skip_serializing_if = "is_test_split")]
    pub split: String,
    /// One row per method.
    pub methods: Vec<Table2Row>,
}

fn test_split() -> String {
    "test".into()
}

/// Test runs keep exactly the JSON schema; only tuning runs carry `split`.
fn is_test_split(split: &str) -> bool {
    split == "test"
}

impl Table2 {
    /// The table in the paper's layout (method, top-1 mean ± std).
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "Table 2 ({} data, seeds {:?}): top-1 accuracy (%) on the {} split, mean ± std over seeds, last epoch\n\n| Method | Top-1 Accuracy |\n|---|---|\n",
            self.dataset, self.seeds, self.split
        );
        let best = self
            .methods
            .iter()
            .map(|r| r.mean)
            .fold(f64::NEG_INFINITY, f64::max);
        for r in &self.methods {
            let cell = format!("{:.2} ± {:.2}", r.mean, r.std);
            let cell = if r.mean == best {
                format!("**{cell}**")
            } else {
                cell
            };
            let base = if r.name == Method::NaiveFusion.name() {
                " (Baseline)"
            } else {
                ""
            };
            s += &format!("| {} | {cell}{base} |\n", r.name);
        }
        s += &format!("\nWall time: {:.0} s\n", self.wall_seconds);
        s
    }
}

/// One row of Table 1 (means over seeds, %; `None` where the column does not apply).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table1Row {
    /// Row name.
    pub name: String,
    /// Audio encoder, linear evaluation, test top-1.
    pub audio_test: Option<f64>,
    /// Video encoder, linear evaluation, test top-1.
    pub video_test: Option<f64>,
    /// Audio encoder, linear evaluation, training top-1.
    pub audio_train: Option<f64>,
    /// Video encoder, linear evaluation, training top-1.
    pub video_train: Option<f64>,
}

/// Table 1 (`table1.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table1 {
    /// The split the "test" columns are measured on: `test`, or the validation split of a
    /// tuning run (`--tune-on-validation`; only then written to the JSON).
    #[serde(default = "test_split", skip_serializing_if = "is_test_split")]
    pub split: String,
    /// One row per encoder source.
    pub methods: Vec<Table1Row>,
}

/// Figure 2's numbers (`figure2.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure2 {
    /// Classes where the audio teacher is best (its test accuracy, descending; top 20).
    pub classes: Vec<usize>,
    /// The audio teacher's per-class test accuracy on those classes (%).
    pub audio_teacher: Vec<f64>,
    /// Per video encoder: name, per-class linear-evaluation test accuracy (%), their mean.
    pub series: Vec<Figure2Series>,
}

/// One bar series of Figure 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Figure2Series {
    /// Encoder source.
    pub name: String,
    /// Per-class accuracy (%), in the order of `classes`.
    pub per_class: Vec<f64>,
    /// Mean over those classes (%).
    pub mean: f64,
}

/// Runs (or resumes) every stage of Table 2 and writes `table2.json` and `table2.md` under
/// `opts.out_dir`.
pub fn reproduce_table2(cfg: ExperimentConfig, opts: RunOptions, dataset: &str) -> Result<Table2> {
    check_config_dataset(dataset, &cfg)?;
    let t0 = Instant::now();
    let mut runner = Runner::new(cfg, opts)?;
    table2_with(&mut runner, dataset, t0)
}

/// Table 2 on an existing runner (the integration tests use this to inspect the stages).
pub fn table2_with(runner: &mut Runner, dataset: &str, t0: Instant) -> Result<Table2> {
    let opts = runner.options().clone();
    let mut rows = Vec::new();
    let mut per_method: Vec<Vec<f64>> = vec![Vec::new(); opts.methods.len()];
    for &seed in &opts.seeds {
        for (i, &m) in opts.methods.iter().enumerate() {
            per_method[i].push(100.0 * runner.method(m, seed)?.test_top1);
        }
    }
    for (m, top1) in opts.methods.iter().zip(per_method) {
        let (mean, std) = mean_std(&top1);
        rows.push(Table2Row {
            name: m.name().into(),
            top1,
            mean,
            std,
        });
    }
    let table = Table2 {
        dataset: dataset.into(),
        seeds: opts.seeds.clone(),
        wall_seconds: t0.elapsed().as_secs_f64(),
        split: opts.split_name(),
        methods: rows,
    };
    write_json_atomic(&opts.out_dir.join("table2.json"), &table)?;
    write_atomic(
        &opts.out_dir.join("table2.md"),
        table.to_markdown().as_bytes(),
    )?;
    Ok(table)
}

/// The rows of Table 1, in the paper's order.
pub const TABLE1_ROWS: [ProbeSource; 7] = [
    ProbeSource::Method(Method::NaiveFusion),
    ProbeSource::Teacher(Modality::Audio),
    ProbeSource::Teacher(Modality::Video),
    ProbeSource::Method(Method::GradientBlending),
    ProbeSource::Method(Method::AudioOnlyDistillation),
    ProbeSource::Method(Method::VideoOnlyDistillation),
    ProbeSource::Method(Method::UniModalTeacher),
];

/// Runs (or resumes) the linear evaluations of Table 1 (training whatever they need) and
/// Figure 2; writes `table1.json`, `table1.md`, `figure2.json`, `figure2.png`, `figure2.svg`.
pub fn reproduce_table1(
    cfg: ExperimentConfig,
    opts: RunOptions,
    dataset: &str,
) -> Result<(Table1, Figure2)> {
    check_config_dataset(dataset, &cfg)?;
    let t0 = Instant::now();
    let mut runner = Runner::new(cfg, opts)?;
    table1_with(&mut runner, t0)
}

/// Table 1 and Figure 2 on an existing runner.
pub fn table1_with(runner: &mut Runner, t0: Instant) -> Result<(Table1, Figure2)> {
    let opts = runner.options().clone();
    let mut rows = Vec::new();
    let mut md = format!(
        "Table 1: linear evaluation (frozen encoder, fresh linear classifier), top-1 (%), mean ± std over seeds; \"Test\" columns on the {} split\n\n| Method | Audio Test | Video Test | Audio Training | Video Training |\n|---|---|---|---|---|\n",
        opts.split_name()
    );
    let mut video_per_class: Vec<(String, Vec<Vec<f64>>)> = Vec::new();
    for source in TABLE1_ROWS {
        let mods: &[Modality] = match source {
            ProbeSource::Teacher(Modality::Audio) => &[Modality::Audio],
            ProbeSource::Teacher(_) => &[Modality::Video],
            ProbeSource::Method(_) => &[Modality::Audio, Modality::Video],
        };
        let mut cols: [Option<(Vec<f64>, Vec<f64>)>; 2] = [None, None];
        for &m in mods {
            let (mut test, mut train, mut pcs) = (Vec::new(), Vec::new(), Vec::new());
            for &seed in &opts.seeds {
                let r = runner.probe(source, m, seed)?;
                test.push(100.0 * r.test_top1);
                train.push(100.0 * r.train_top1.unwrap_or(f64::NAN));
                pcs.push(r.per_class_test.iter().map(|x| 100.0 * x).collect());
            }
            if m == Modality::Video {
                video_per_class.push((source.name().to_string(), pcs));
            }
            cols[if m == Modality::Audio { 0 } else { 1 }] = Some((test, train));
        }
        let stat = |c: &Option<(Vec<f64>, Vec<f64>)>, train: bool| {
            c.as_ref()
                .map(|(te, tr)| mean_std(if train { tr } else { te }))
        };
        let cell =
            |x: Option<(f64, f64)>| x.map_or("/".to_string(), |(m, s)| format!("{m:.2} ± {s:.2}"));
        let (at, vt, atr, vtr) = (
            stat(&cols[0], false),
            stat(&cols[1], false),
            stat(&cols[0], true),
            stat(&cols[1], true),
        );
        md += &format!(
            "| {} | {} | {} | {} | {} |\n",
            source.name(),
            cell(at),
            cell(vt),
            cell(atr),
            cell(vtr)
        );
        rows.push(Table1Row {
            name: source.name().into(),
            audio_test: at.map(|x| x.0),
            video_test: vt.map(|x| x.0),
            audio_train: atr.map(|x| x.0),
            video_train: vtr.map(|x| x.0),
        });
    }
    md += &format!(
        "\nWall time of this command: {:.0} s\n",
        t0.elapsed().as_secs_f64()
    );
    let table = Table1 {
        split: opts.split_name(),
        methods: rows,
    };
    write_json_atomic(&opts.out_dir.join("table1.json"), &table)?;
    write_atomic(&opts.out_dir.join("table1.md"), md.as_bytes())?;

    // Figure 2: classes where the audio teacher is best.
    let mut audio_pc: Vec<Vec<f64>> = Vec::new();
    for &seed in &opts.seeds {
        let (r, _) = runner.teacher(Modality::Audio, seed)?;
        audio_pc.push(r.per_class_test.iter().map(|x| 100.0 * x).collect());
    }
    let avg = |v: &[Vec<f64>]| -> Vec<f64> {
        let k = v.first().map_or(0, Vec::len);
        (0..k)
            .map(|c| v.iter().map(|s| s[c]).sum::<f64>() / v.len() as f64)
            .collect()
    };
    let audio_avg = avg(&audio_pc);
    let mut classes: Vec<usize> = (0..audio_avg.len()).collect();
    classes.sort_by(|&a, &b| audio_avg[b].total_cmp(&audio_avg[a]).then(a.cmp(&b)));
    classes.truncate(20);
    let wanted = [
        Method::NaiveFusion.name(),
        Method::GradientBlending.name(),
        Method::UniModalTeacher.name(),
        "Video-only Training",
    ];
    let mut series = Vec::new();
    for name in wanted {
        if let Some((_, pcs)) = video_per_class.iter().find(|(n, _)| n == name) {
            let a = avg(pcs);
            let per_class: Vec<f64> = classes.iter().map(|&c| a[c]).collect();
            let mean = per_class.iter().sum::<f64>() / per_class.len().max(1) as f64;
            series.push(Figure2Series {
                name: name.into(),
                per_class,
                mean,
            });
        }
    }
    let fig = Figure2 {
        audio_teacher: classes.iter().map(|&c| audio_avg[c]).collect(),
        classes,
        series,
    };
    write_json_atomic(&opts.out_dir.join("figure2.json"), &fig)?;
    crate::figure::write_figure2(&fig, &opts.out_dir)?;
    Ok((table, fig))
}
