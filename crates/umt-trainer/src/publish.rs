//! Self-describing teachers and their publication on the Hugging Face Hub (issue 7).
//!
//! Every teacher checkpoint the runner writes carries a [`TeacherCard`] in its safetensors
//! `__metadata__` (besides `umt-nn`'s `architecture`, `config` and `normalization` keys): the
//! modality, the full experiment config, the dataset and its class list, the input it expects,
//! the training metrics and the code version. A pulled teacher is therefore usable without any
//! other file: [`read_teacher_card`] reads it back, [`TeacherCard::check_compatible`] says
//! which field differs from a run that wants to use it.
//!
//! [`export_teachers`] turns a run folder into a folder ready to upload to the hub: the
//! teachers as `{modality}-seed{s}.safetensors`, a `config.json` and a model card `README.md`
//! with the hub's YAML header (license, tags, datasets, metrics, `model-index`) and the run's
//! results tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use umt_nn::checkpoint::{self, CheckpointMeta};

use crate::config::ExperimentConfig;
use crate::error::io_err;
use crate::model::Modality;
use crate::run::{read_json, write_atomic, write_json_atomic, StageResult};
use crate::{Error, Result};

/// Metadata key of the teacher card (a JSON object, [`TeacherCard`]).
pub const KEY_TEACHER: &str = "umt_teacher";

/// Architecture string of a teacher checkpoint (`umt-trainer/{modality}-teacher`).
pub fn teacher_architecture(modality: Modality) -> String {
    format!("umt-trainer/{}-teacher", modality.name())
}

/// The code that trained a checkpoint: this crate's version and, when built from a git
/// checkout, the commit (`UMT_GIT_COMMIT`, set by `build.rs`).
pub fn code_version() -> String {
    match option_env!("UMT_GIT_COMMIT") {
        Some(c) if !c.is_empty() => format!("umt-trainer {} (git {c})", env!("CARGO_PKG_VERSION")),
        _ => format!("umt-trainer {}", env!("CARGO_PKG_VERSION")),
    }
}

/// What the teacher's encoder expects as input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Shape of one sample: audio `[1, F, T_a]` (log-magnitude spectrogram), video
    /// `[T, 3, H, W]` (frames).
    pub shape: Vec<usize>,
    /// How raw input becomes that tensor, in words (front end and normalisation).
    pub preprocessing: String,
    /// Per-channel `(x − mean) / std` applied last (also in the checkpoint's `normalization`).
    pub mean: Vec<f32>,
    /// See `mean`.
    pub std: Vec<f32>,
}

/// The training metrics stored with a teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherMetrics {
    /// The split `top1` is measured on (`test`, or a validation split in tuning mode).
    pub split: String,
    /// Top-1 accuracy in [0, 1] after the last epoch.
    pub top1: f64,
    /// Per-class top-1 in [0, 1], in class-list order.
    pub per_class_top1: Vec<f64>,
    /// Mean training loss of every epoch.
    pub epoch_losses: Vec<f32>,
    /// Training seed.
    pub seed: u64,
}

/// Everything a teacher checkpoint says about itself (metadata key [`KEY_TEACHER`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherCard {
    /// `audio` or `video`.
    pub modality: String,
    /// The dataset name (`synthetic`, `avmnist`, `vggsound`).
    pub dataset: String,
    /// Class names; index = class id = row of `fc.weight`.
    pub classes: Vec<String>,
    /// The full experiment config of the run that trained it.
    pub experiment: ExperimentConfig,
    /// The encoder's input.
    pub input: InputSpec,
    /// How well it did.
    pub metrics: TeacherMetrics,
    /// [`code_version`] of the trainer.
    pub code_version: String,
}

impl TeacherCard {
    /// The checkpoint metadata of this card: architecture, the encoder config (as every
    /// trainer checkpoint), the normalisation and the card itself.
    pub fn to_meta(&self, path: &Path) -> Result<CheckpointMeta> {
        let json_err = |source| Error::Json {
            path: path.to_path_buf(),
            source,
        };
        let modality = parse_modality(&self.modality, path)?;
        let mut meta = CheckpointMeta::new(
            teacher_architecture(modality),
            serde_json::to_value(&self.experiment.encoder).map_err(json_err)?,
        );
        meta.normalization = Some(checkpoint::Normalization {
            mean: self.input.mean.clone(),
            std: self.input.std.clone(),
        });
        meta.extra.insert(
            KEY_TEACHER.into(),
            serde_json::to_string(self).map_err(json_err)?,
        );
        Ok(meta)
    }

    /// Reads the card out of checkpoint metadata; `path` names the file in errors.
    pub fn from_meta(meta: &CheckpointMeta, path: &Path) -> Result<Self> {
        let raw = meta
            .extra
            .get(KEY_TEACHER)
            .ok_or_else(|| Error::TeacherCard {
                path: path.to_path_buf(),
                problem: format!(
                    "no `{KEY_TEACHER}` metadata (architecture {:?}): not a teacher written by \
                     umt-trainer",
                    meta.architecture
                ),
            })?;
        serde_json::from_str(raw).map_err(|e| Error::TeacherCard {
            path: path.to_path_buf(),
            problem: format!("metadata `{KEY_TEACHER}` is not a valid teacher card: {e}"),
        })
    }

    /// The modality of the card.
    pub fn modality(&self, path: &Path) -> Result<Modality> {
        parse_modality(&self.modality, path)
    }

    /// Checks that this teacher fits a run of `cfg` on `dataset` with `classes` classes as its
    /// `modality` teacher; the error names the first field that differs.
    pub fn check_compatible(
        &self,
        path: &Path,
        modality: Modality,
        dataset: &str,
        classes: usize,
        cfg: &ExperimentConfig,
    ) -> Result<()> {
        let differ = |field: &str, teacher: String, run: String| Error::TeacherCard {
            path: path.to_path_buf(),
            problem: format!("`{field}` differs: the teacher has {teacher}, this run {run}"),
        };
        if self.modality != modality.name() {
            return Err(differ(
                "modality",
                self.modality.clone(),
                modality.name().into(),
            ));
        }
        if self.dataset != dataset {
            return Err(differ("dataset", self.dataset.clone(), dataset.into()));
        }
        if self.classes.len() != classes {
            return Err(differ(
                "classes",
                format!("{} classes", self.classes.len()),
                format!("{classes} classes"),
            ));
        }
        if self.experiment.encoder != cfg.encoder {
            return Err(differ(
                "experiment.encoder",
                json_string(&self.experiment.encoder),
                json_string(&cfg.encoder),
            ));
        }
        Ok(())
    }
}

fn json_string<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("<unserialisable: {e}>"))
}

fn parse_modality(name: &str, path: &Path) -> Result<Modality> {
    match name {
        "audio" => Ok(Modality::Audio),
        "video" => Ok(Modality::Video),
        other => Err(Error::TeacherCard {
            path: path.to_path_buf(),
            problem: format!("modality {other:?}: expected \"audio\" or \"video\""),
        }),
    }
}

/// Reads only the header of a teacher checkpoint and returns its card.
pub fn read_teacher_card(path: &Path) -> Result<TeacherCard> {
    let meta = checkpoint::read_meta(path)?;
    TeacherCard::from_meta(&meta, path)
}

// -------------------------------------------------------------------------------------------
// Export
// -------------------------------------------------------------------------------------------

/// Options of [`export_teachers`].
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// The hub `license` identifier of the model card. Default `apache-2.0` (one of the
    /// project's two licences; the hub takes a single identifier).
    pub license: String,
    /// The repo the folder is meant for (`OWNER/NAME`), used in the card's usage lines.
    pub repo_id: Option<String>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            license: "apache-2.0".into(),
            repo_id: None,
        }
    }
}

/// One exported teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedTeacher {
    /// File name in the export folder.
    pub file: String,
    /// The stage folder it came from (relative to the run folder).
    pub source: String,
    /// `audio` or `video`.
    pub modality: String,
    /// Training seed.
    pub seed: u64,
    /// Split of `top1`.
    pub split: String,
    /// Top-1 in [0, 1].
    pub top1: f64,
}

/// What [`export_teachers`] wrote (also the `teachers` list of `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSummary {
    /// The dataset the teachers were trained on.
    pub dataset: String,
    /// Class names.
    pub classes: Vec<String>,
    /// The exported teachers, sorted by (modality, seed).
    pub teachers: Vec<ExportedTeacher>,
    /// Code version of the trainer that wrote them.
    pub code_version: String,
}

/// Writes `out_dir` ready to upload to the hub from the finished teachers of `run_dir`
/// (`teachers/*/model.safetensors` with their `result.json`): the checkpoints as
/// `{modality}-seed{s}.safetensors`, `config.json` (the run's experiment config and the list
/// of teachers) and a model card `README.md`. Teachers without a card (written before cards
/// existed) or with a stage still running are errors naming the file; a run with no finished
/// teacher is an error. Files are written atomically; an existing `out_dir` is reused.
pub fn export_teachers(
    run_dir: &Path,
    out_dir: &Path,
    opts: &ExportOptions,
) -> Result<ExportSummary> {
    let teachers_dir = run_dir.join("teachers");
    let mut found: Vec<(TeacherCard, PathBuf, String)> = Vec::new();
    let entries = match std::fs::read_dir(&teachers_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Export {
                path: run_dir.to_path_buf(),
                problem: "has no `teachers/` folder: not a run folder of reproduce-table1/2, or \
                          no teacher has been trained yet"
                    .into(),
            })
        }
        Err(e) => return Err(io_err(&teachers_dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(&teachers_dir))?;
        let stage = entry.path();
        if !stage.is_dir() {
            continue;
        }
        let ckpt = stage.join("model.safetensors");
        let result = stage.join("result.json");
        if !ckpt.exists() {
            // A given (external) teacher's stage holds only its evaluation.
            continue;
        }
        if !result.exists() {
            return Err(Error::Export {
                path: stage,
                problem: "the teacher stage has not finished (no result.json); let the run \
                          finish or resume it first"
                    .into(),
            });
        }
        let _: StageResult = read_json(&result)?;
        let card = read_teacher_card(&ckpt)?;
        let rel = format!("teachers/{}", entry.file_name().to_string_lossy());
        found.push((card, ckpt, rel));
    }
    if found.is_empty() {
        return Err(Error::Export {
            path: teachers_dir,
            problem: "holds no finished teacher checkpoint".into(),
        });
    }
    found.sort_by(|a, b| {
        (a.0.modality.as_str(), a.0.metrics.seed).cmp(&(b.0.modality.as_str(), b.0.metrics.seed))
    });
    let first = &found[0].0;
    for (card, ckpt, _) in &found {
        if card.dataset != first.dataset || card.experiment != first.experiment {
            return Err(Error::Export {
                path: ckpt.clone(),
                problem: format!(
                    "was trained with another dataset or config than {}: one export folder \
                     holds one teacher set",
                    found[0].1.display()
                ),
            });
        }
    }
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let mut teachers = Vec::new();
    let mut seen = BTreeMap::new();
    for (card, ckpt, rel) in &found {
        let file = format!("{}-seed{}.safetensors", card.modality, card.metrics.seed);
        if let Some(other) = seen.insert(file.clone(), rel.clone()) {
            return Err(Error::Export {
                path: ckpt.clone(),
                problem: format!("is a second {file} (also {other}); export one run at a time"),
            });
        }
        let bytes = std::fs::read(ckpt).map_err(io_err(ckpt))?;
        write_atomic(&out_dir.join(&file), &bytes)?;
        teachers.push(ExportedTeacher {
            file,
            source: rel.clone(),
            modality: card.modality.clone(),
            seed: card.metrics.seed,
            split: card.metrics.split.clone(),
            top1: card.metrics.top1,
        });
    }
    let summary = ExportSummary {
        dataset: first.dataset.clone(),
        classes: first.classes.clone(),
        teachers,
        code_version: first.code_version.clone(),
    };
    let config = serde_json::json!({
        "library_name": "umt",
        "experiment": first.experiment,
        "inputs": found.iter().map(|(c, _, _)| (c.modality.clone(), c.input.clone()))
            .collect::<BTreeMap<_, _>>(),
        "teachers": summary,
    });
    write_json_atomic(&out_dir.join("config.json"), &config)?;
    // The run's experiment config alone, as `--config` of the reproduce commands takes it.
    write_json_atomic(&out_dir.join("experiment.json"), &first.experiment)?;
    let card = model_card(&summary, &found, run_dir, opts);
    write_atomic(&out_dir.join("README.md"), card.as_bytes())?;
    Ok(summary)
}

/// Mean and sample std of `xs` in percent, formatted `m ± s` (or `m` for one value).
fn pct(xs: &[f64]) -> String {
    let (m, s) = crate::report::mean_std(xs);
    if xs.len() > 1 {
        format!("{:.2} ± {:.2}", 100.0 * m, 100.0 * s)
    } else {
        format!("{:.2}", 100.0 * m)
    }
}

fn model_card(
    summary: &ExportSummary,
    found: &[(TeacherCard, PathBuf, String)],
    run_dir: &Path,
    opts: &ExportOptions,
) -> String {
    let repo = opts.repo_id.clone().unwrap_or_else(|| "OWNER/REPO".into());
    let mut per_modality: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for t in &summary.teachers {
        per_modality.entry(&t.modality).or_default().push(t.top1);
    }
    let split = summary
        .teachers
        .first()
        .map_or("test".to_string(), |t| t.split.clone());
    // YAML header: the hub's model-card metadata (huggingface.co/docs/hub/model-cards).
    let mut s = String::from("---\n");
    s += &format!("license: {}\n", opts.license);
    s += "library_name: umt\n";
    s += "tags:\n  - uni-modal-teacher\n  - multi-modal\n  - audio-visual\n  - safetensors\n  - candle\n";
    s += &format!("datasets:\n  - {}\n", summary.dataset);
    s += "metrics:\n  - accuracy\n";
    s += "model-index:\n";
    for (modality, accs) in &per_modality {
        let (m, _) = crate::report::mean_std(accs);
        s += &format!("  - name: umt-{}-{modality}-teacher\n", summary.dataset);
        s += "    results:\n";
        s += "      - task:\n          type: audio-visual-classification\n";
        s += &format!(
            "        dataset:\n          name: {}\n          type: {}\n          split: {}\n",
            summary.dataset,
            summary.dataset,
            yaml_scalar(&split)
        );
        s += &format!(
            "        metrics:\n          - type: accuracy\n            value: {:.2}\n            name: top-1 (mean over {} seed{})\n",
            100.0 * m,
            accs.len(),
            if accs.len() == 1 { "" } else { "s" }
        );
    }
    s += "---\n\n";
    s += &format!(
        "# Uni-Modal Teachers for `{}`\n\nThe uni-modal teachers of *Uni-Modal Teacher* (Du et \
         al., \"Improving Multi-Modal Learning with Uni-Modal Teachers\", §2.2): each encoder \
         trained alone with a linear head, to be frozen and distilled into a fusion model. \
         Written by {} with `cargo xtask export-teachers`.\n\n",
        summary.dataset, summary.code_version
    );
    s +=
        &format!("## Files\n\n| file | modality | seed | {split} top-1 (%) |\n|---|---|---|---|\n");
    for t in &summary.teachers {
        s += &format!(
            "| `{}` | {} | {} | {:.2} |\n",
            t.file,
            t.modality,
            t.seed,
            100.0 * t.top1
        );
    }
    s += "\n| modality | top-1 (%), mean ± std over seeds |\n|---|---|\n";
    for (modality, accs) in &per_modality {
        s += &format!("| {modality} | {} |\n", pct(accs));
    }
    s += "\n## Inputs\n\n";
    let mut inputs_seen = Vec::new();
    for (card, _, _) in found {
        if inputs_seen.contains(&card.modality) {
            continue;
        }
        inputs_seen.push(card.modality.clone());
        s += &format!(
            "- **{}**: one sample is `{:?}`; {}; then `(x − mean) / std` with mean {:?}, std {:?}.\n",
            card.modality, card.input.shape, card.input.preprocessing, card.input.mean, card.input.std
        );
    }
    s += &format!(
        "\nClasses ({}): {}.\n\nEvery file is self-describing: its safetensors metadata holds the \
         architecture, the full experiment config (`{KEY_TEACHER}`), the normalisation, the \
         dataset and class list, the training metrics and the code version; `config.json` \
         repeats the config and the file list.\n\n",
        summary.classes.len(),
        summary
            .classes
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s += "## Use\n\n```sh\n";
    s += &format!("cargo xtask pull-teachers --repo {repo}\n");
    let first_seed = summary.teachers.first().map_or(0, |t| t.seed);
    s += &format!(
        "cargo xtask reproduce-table2 --dataset {} --config experiment.json \\\n  --audio-teacher hf://{repo}/audio-seed{first_seed}.safetensors \\\n  --video-teacher hf://{repo}/video-seed{first_seed}.safetensors\n```\n\n",
        summary.dataset
    );
    for (name, title) in [("table2.md", "Table 2"), ("table1.md", "Table 1")] {
        if let Ok(t) = std::fs::read_to_string(run_dir.join(name)) {
            s += &format!("## Results of the run: {title}\n\n{}\n\n", t.trim());
        }
    }
    s += "## Training\n\nThe full experiment config is in `config.json` (`experiment`). \
          Teachers train with cross-entropy alone; BatchNorm statistics are stored with the \
          weights (use the encoders in eval mode when distilling, as the paper does).\n";
    s
}

/// A YAML plain scalar, quoted when it holds characters YAML would read otherwise.
fn yaml_scalar(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}
