//! The resumable experiment runner: every unit of work is a *stage* with its own directory
//! under the output folder. A stage is done when its `result.json` exists; that file is written
//! atomically (temporary file + rename) only after the stage's checkpoint, so a killed run
//! resumes with every finished stage reused and nothing finished lost.
//!
//! Layout under `out/`:
//! - `teachers/{audio|video}-seed{s}-{hash}/`: the uni-modal teachers, keyed by the SHA-256 of
//!   everything that determines them (dataset, encoder, schedule, seed);
//! - `seed-{s}/{method}/`: one Table 2 method (`model.safetensors`, `result.json`);
//! - `seed-{s}/gb-weights/`: Gradient-Blending's estimated weights;
//! - `seed-{s}/probe-{source}-{modality}/`: one linear evaluation of Table 1.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::{loss, Module};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use umt_data::synthetic::generate;
use umt_nn::checkpoint::{self, CheckpointMeta};

use crate::config::{DatasetConfig, ExperimentConfig};
use crate::error::io_err;
use crate::method::Method;
use crate::model::{Encoder, FusionModel, Modality, UniModel};
use crate::progress::Progress;
use crate::source::DataSource;
use crate::train::{accuracy, feature_mse, map_batches, train_epochs, LinearProbe, Schedule};
use crate::{Error, Result};

/// What a finished stage records (`result.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageResult {
    /// Stage path relative to the output folder.
    pub stage: String,
    /// Training seed.
    pub seed: u64,
    /// Top-1 accuracy on the test split in [0, 1], last epoch (no selection on test); in
    /// tuning mode ([`RunOptions::validation_fraction`]) on the validation split.
    pub test_top1: f64,
    /// Top-1 accuracy on the training split in [0, 1], where measured (linear evaluation).
    pub train_top1: Option<f64>,
    /// Per-class test accuracy in [0, 1].
    pub per_class_test: Vec<f64>,
    /// Mean training loss of every epoch.
    pub epoch_losses: Vec<f32>,
    /// Wall time of the stage in seconds.
    pub seconds: f64,
    /// Stage-specific numbers (e.g. Gradient-Blending weights).
    pub extra: serde_json::Value,
}

/// Options of a run besides the experiment config.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output folder (checkpoints, results, logs).
    pub out_dir: PathBuf,
    /// Training seeds.
    pub seeds: Vec<u64>,
    /// Methods of Table 2 to run.
    pub methods: Vec<Method>,
    /// Device.
    pub device: Device,
    /// Progress display.
    pub progress: Progress,
    /// `None`: train on the training split, report on the test split (the paper's tables).
    /// `Some(f)`: **tuning mode** — a stratified fraction `f` of the training split (seeded by
    /// the config's `data_seed`) is carved off as a validation split, every stage trains on
    /// the rest and reports on the validation split instead of the test split, and the
    /// reports say so. Tune on this, never on the test split.
    pub validation_fraction: Option<f64>,
}

impl RunOptions {
    /// The split every reported accuracy is measured on: `"test"`, or
    /// `"validation (F of the training split)"` in tuning mode.
    pub fn split_name(&self) -> String {
        match self.validation_fraction {
            None => "test".into(),
            Some(f) => format!(
                "validation ({:.0}% of the training split; tuning mode, not the test split)",
                100.0 * f
            ),
        }
    }
}

/// The data of a run: both splits ready for the models (in memory or streamed, see
/// [`crate::source`]), and the standardisation of the audio.
#[derive(Debug, Clone)]
pub struct RunData {
    /// Training split (in tuning mode: what is left after carving the validation split).
    pub train: DataSource,
    /// Test split (in tuning mode: the validation split).
    pub test: DataSource,
    /// Mean and std of the training log-spectrograms, by which both splits are standardised.
    pub audio_stats: (f32, f32),
}

/// A linear-evaluation source of Table 1 (the encoders of a method, or a uni-modal teacher).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeSource {
    /// The encoders of a fusion method.
    Method(Method),
    /// A uni-modal teacher ("Audio-only Training" / "Video-only Training").
    Teacher(Modality),
}

impl ProbeSource {
    /// The Table 1 row name.
    pub fn name(self) -> &'static str {
        match self {
            ProbeSource::Method(m) => m.name(),
            ProbeSource::Teacher(Modality::Audio) => "Audio-only Training",
            ProbeSource::Teacher(Modality::Video) => "Video-only Training",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            ProbeSource::Method(m) => m.slug(),
            ProbeSource::Teacher(Modality::Audio) => "audio-only-training",
            ProbeSource::Teacher(Modality::Video) => "video-only-training",
        }
    }
}

/// The runner: holds the config, the generated data per seed and the stage bookkeeping.
#[derive(Debug)]
pub struct Runner {
    cfg: ExperimentConfig,
    opts: RunOptions,
    data: Option<Rc<RunData>>,
    /// Stages computed by this runner (in order).
    pub stages_run: Vec<String>,
    /// Stages found finished on disk and reused.
    pub stages_reused: Vec<String>,
    last_checkpoint: String,
    /// Teachers given from outside (a local file or a pulled hub file) instead of trained:
    /// `[audio, video]`, with the SHA-256 of each file.
    given: [Option<GivenTeacher>; 2],
}

/// A teacher checkpoint given to the run instead of training one ([`Runner::with_teachers`]).
#[derive(Debug, Clone, PartialEq)]
pub struct GivenTeacher {
    /// The checkpoint file (already resolved: a hub reference is fetched by the caller).
    pub path: PathBuf,
    /// Where it came from, as the user wrote it (`hf://...` or the path); recorded in results.
    pub source: String,
    sha256: String,
}

impl GivenTeacher {
    /// A teacher read from `path` (hashed now, so the run folder records exactly which file
    /// it used); `source` is the reference as the user wrote it.
    pub fn new(path: impl Into<PathBuf>, source: impl Into<String>) -> Result<Self> {
        let path = path.into();
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let sha256 = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            path,
            source: source.into(),
            sha256,
        })
    }
}

fn modality_index(m: Modality) -> usize {
    match m {
        Modality::Audio => 0,
        Modality::Video => 1,
    }
}

/// Records `value` in the run folder's `path` on the first run; on a resumed run, refuses
/// ([`Error::ConfigChanged`]) a folder whose record is unreadable or not `same` as `value`.
fn record_or_refuse<T: Serialize + for<'de> Deserialize<'de>>(
    path: &Path,
    value: &T,
    same: impl Fn(&T, &T) -> bool,
) -> Result<()> {
    if !path.exists() {
        return write_json_atomic(path, value);
    }
    match read_json::<T>(path) {
        Ok(previous) if same(&previous, value) => Ok(()),
        _ => Err(Error::ConfigChanged {
            path: path.to_path_buf(),
        }),
    }
}

/// A stable 64-bit seed for `(seed, name)`.
fn derive_seed(seed: u64, name: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(name.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// Writes `value` as pretty JSON to `path` atomically (temporary file, then rename).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, text.as_bytes())
}

/// Writes bytes to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Reads a JSON file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

impl Runner {
    /// A runner writing under `opts.out_dir`; writes the config there (`config.json`).
    pub fn new(cfg: ExperimentConfig, opts: RunOptions) -> Result<Self> {
        cfg.validate()?;
        std::fs::create_dir_all(&opts.out_dir).map_err(io_err(&opts.out_dir))?;
        // Compared as configs (JSON values would differ in the last bits of f32 fields),
        // leaving out what changes no result (a streamed dataset's loader threads).
        record_or_refuse(&opts.out_dir.join("config.json"), &cfg, |a, b| {
            a.result_relevant() == b.result_relevant()
        })?;
        // The evaluation split is part of what a stage's result means: a folder of a tuning
        // run (validation split) is never resumed as a test run, nor the other way round.
        let split_path = opts.out_dir.join("evaluation.json");
        let split = serde_json::json!({
            "split": if opts.validation_fraction.is_some() { "validation" } else { "test" },
            "validation_fraction": opts.validation_fraction,
        });
        if let Some(f) = opts.validation_fraction {
            if !(f > 0.0 && f < 1.0) {
                return Err(Error::InvalidConfig {
                    field: "validation_fraction",
                    expected: "a fraction in (0, 1)".into(),
                    found: f.to_string(),
                });
            }
        }
        record_or_refuse(&split_path, &split, |a, b| a == b)?;
        Ok(Self {
            cfg,
            opts,
            data: None,
            stages_run: Vec::new(),
            stages_reused: Vec::new(),
            last_checkpoint: "none".into(),
            given: [None, None],
        })
    }

    /// Uses the given teachers (`[audio, video]`; `None` = train that one as usual) for every
    /// seed instead of training them. Which files are used is part of what the run folder's
    /// results mean: it is recorded in `teachers.json` and a later call with other teachers on
    /// the same folder is an [`Error::ConfigChanged`]. Each file's card must fit the run
    /// ([`crate::publish::TeacherCard::check_compatible`]); that is checked when the teacher is
    /// first needed.
    pub fn with_teachers(mut self, given: [Option<GivenTeacher>; 2]) -> Result<Self> {
        let record = serde_json::json!({
            "audio": given[0].as_ref().map(|g| serde_json::json!({"sha256": g.sha256, "source": g.source})),
            "video": given[1].as_ref().map(|g| serde_json::json!({"sha256": g.sha256, "source": g.source})),
        });
        // Same files (by hash) are the same run, wherever they were read from.
        let hashes = |v: &serde_json::Value| {
            [&v["audio"]["sha256"], &v["video"]["sha256"]].map(|x| x.as_str().map(String::from))
        };
        record_or_refuse(&self.opts.out_dir.join("teachers.json"), &record, |a, b| {
            hashes(a) == hashes(b)
        })?;
        self.given = given;
        Ok(self)
    }

    /// The dataset's name as the teacher cards record it.
    pub fn dataset_name(&self) -> String {
        self.cfg.dataset.name().into()
    }

    /// Class names of the dataset (index = class id).
    pub fn class_names(&mut self) -> Result<Vec<String>> {
        let data = self.data()?;
        if let DataSource::Stream(s) = &data.train {
            // VGGSound: the prepared folder's `classes.txt`.
            return Ok(s.dataset().classes().to_vec());
        }
        let k = data.train.num_classes();
        Ok(match self.cfg.dataset {
            crate::config::DatasetConfig::Avmnist { .. } => umt_data::avmnist::CLASSES
                .iter()
                .take(k)
                .map(|c| c.to_string())
                .collect(),
            // The synthetic classes have no names: class-00, class-01, ...
            crate::config::DatasetConfig::Synthetic | DatasetConfig::Vggsound { .. } => {
                (0..k).map(|c| format!("class-{c:02}")).collect()
            }
        })
    }

    /// What a `modality` encoder takes as input, for the teacher cards.
    fn input_spec(&mut self, modality: Modality) -> Result<crate::publish::InputSpec> {
        let data = self.data()?;
        Ok(match modality {
            Modality::Audio => crate::publish::InputSpec {
                shape: data.train.audio_shape().to_vec(),
                preprocessing: "ln(1e-6 + |STFT|) magnitude spectrogram of the waveform \
                                (umt-audio front end, parameters in the experiment config); mean and std \
                                below are the training split's"
                    .into(),
                mean: vec![data.audio_stats.0],
                std: vec![data.audio_stats.1],
            },
            Modality::Video => {
                let n = umt_resnet::imagenet_normalization();
                let imagenet = "RGB frames scaled to [0, 1] (umt-video clip pipeline), \
                                ImageNet normalisation per channel";
                let (preprocessing, mean, std) = match &self.cfg.dataset {
                    // VGGSound's frame normalisation is a config field (ImageNet by default).
                    DatasetConfig::Vggsound { front_end, .. } => (
                        "RGB frames scaled to [0, 1] (umt-video clip pipeline), normalised \
                         per channel by the mean and std below",
                        front_end.video.normalization.mean.to_vec(),
                        front_end.video.normalization.std.to_vec(),
                    ),
                    _ => (imagenet, n.mean, n.std),
                };
                crate::publish::InputSpec {
                    shape: data.train.video_shape().to_vec(),
                    preprocessing: preprocessing.into(),
                    mean,
                    std,
                }
            }
        })
    }

    /// The experiment config.
    pub fn config(&self) -> &ExperimentConfig {
        &self.cfg
    }

    /// The run options.
    pub fn options(&self) -> &RunOptions {
        &self.opts
    }

    /// The dataset of the config (loaded once per runner): the synthetic one generated from
    /// `data_seed`, or a prepared AV-MNIST folder (refused if it was prepared again with other
    /// settings since the run started).
    pub fn data(&mut self) -> Result<Rc<RunData>> {
        if let Some(d) = &self.data {
            return Ok(d.clone());
        }
        let t0 = Instant::now();
        let mut d = match &self.cfg.dataset {
            DatasetConfig::Synthetic => {
                let g = generate(&self.cfg.synthetic, self.cfg.data_seed)?;
                RunData {
                    train: g.train.into(),
                    test: g.test.into(),
                    audio_stats: g.audio_stats,
                }
            }
            DatasetConfig::Avmnist { data_dir, prepared } => {
                let a = umt_data::avmnist::load_prepared(data_dir)?;
                if a.info != **prepared {
                    return Err(Error::Dataset {
                        name: "avmnist".into(),
                        problem: format!(
                            "{} was prepared again with other settings since this run \
                             started; use another --out folder",
                            data_dir.join("config.json").display()
                        ),
                    });
                }
                RunData {
                    train: a.train.into(),
                    test: a.test.into(),
                    audio_stats: (a.info.audio_mean, a.info.audio_std),
                }
            }
            DatasetConfig::Vggsound { .. } => self.vggsound_data()?,
        };
        if let Some(f) = self.opts.validation_fraction {
            // Tuning mode: the validation split takes the place of the test split.
            let (train, val) = d.train.split_validation(f, self.cfg.data_seed)?;
            d.train = train;
            d.test = val;
        }
        let d = Rc::new(d);
        self.opts.progress.log(&format!(
            "{} data: {} train / {} {} samples in {:.1} s",
            self.cfg.dataset.name(),
            d.train.len(),
            d.test.len(),
            self.opts.split_name(),
            t0.elapsed().as_secs_f64()
        ));
        self.data = Some(d.clone());
        Ok(d)
    }

    /// The streamed VGGSound splits ([`crate::source::open_vggsound`]).
    fn vggsound_data(&self) -> Result<RunData> {
        let (train, test, stats) = crate::source::open_vggsound(
            &self.cfg.dataset,
            self.cfg.data_seed,
            &self.opts.out_dir,
        )?;
        self.opts.progress.log(&format!(
            "vggsound audio mean {:.4}, std {:.4} from {} training clips ({})",
            stats.mean,
            stats.std,
            stats.clips,
            self.opts
                .out_dir
                .join(crate::source::AUDIO_STATS_FILE)
                .display()
        ));
        Ok(RunData {
            train,
            test,
            audio_stats: (stats.mean, stats.std),
        })
    }

    fn append_log(&self, line: &str) -> Result<()> {
        use std::io::Write;
        let path = self.opts.out_dir.join("log.txt");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        writeln!(f, "{line}").map_err(io_err(&path))
    }

    /// Runs (or reuses) the stage `rel`: `f(runner, dir)` computes it, writing any checkpoint
    /// into `dir`; the result is written last, atomically.
    fn stage(
        &mut self,
        rel: &str,
        seed: u64,
        f: impl FnOnce(&mut Self, &Path) -> Result<StageResult>,
    ) -> Result<StageResult> {
        let dir = self.opts.out_dir.join(rel);
        let result_path = dir.join("result.json");
        if result_path.exists() {
            let r: StageResult = read_json(&result_path)?;
            self.stages_reused.push(rel.to_string());
            return Ok(r);
        }
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let t0 = Instant::now();
        let mut r = f(self, &dir)?;
        r.stage = rel.to_string();
        r.seed = seed;
        r.seconds = t0.elapsed().as_secs_f64();
        write_json_atomic(&result_path, &r)?;
        self.stages_run.push(rel.to_string());
        let split = if self.opts.validation_fraction.is_some() {
            "validation"
        } else {
            "test"
        };
        let line = format!(
            "{rel}: {split} top-1 {:.2}% in {:.1} s",
            100.0 * r.test_top1,
            r.seconds
        );
        self.opts.progress.log(&line);
        self.append_log(&line)?;
        Ok(r)
    }

    fn save(&mut self, vars: &candle_nn::VarMap, path: &Path, what: &str) -> Result<()> {
        let meta = CheckpointMeta::new(
            format!("umt-trainer/{what}"),
            serde_json::to_value(&self.cfg.encoder).map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            })?,
        );
        checkpoint::save_varmap(vars, path, &meta)?;
        self.last_checkpoint = path.display().to_string();
        Ok(())
    }

    fn schedule(&self, stage: &str, seed: u64, epochs: usize, distill: bool) -> Schedule {
        let t = &self.cfg.train;
        Schedule {
            stage: format!("seed {seed} {stage}"),
            epochs,
            batch_size: t.batch_size,
            learning_rate: t.learning_rate,
            decay_every: if distill {
                t.distill_lr_decay_every_epochs
            } else {
                t.lr_decay_every_epochs
            },
            decay_factor: t.lr_decay_factor,
            seed: derive_seed(seed, stage),
            last_checkpoint: self.last_checkpoint.clone(),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Teachers
    // ---------------------------------------------------------------------------------------

    /// The cache key of a teacher: SHA-256 (first 16 hex digits) of everything that
    /// determines it.
    pub fn teacher_key(&self, modality: Modality, seed: u64) -> String {
        let t = &self.cfg.train;
        let mut key = serde_json::json!({
            "modality": modality.name(),
            "seed": seed,
            "synthetic": self.cfg.synthetic,
            "data_seed": self.cfg.data_seed,
            "encoder": self.cfg.encoder,
            "epochs": t.teacher_epochs,
            "batch_size": t.batch_size,
            "learning_rate": t.learning_rate,
            "lr_decay_every_epochs": t.lr_decay_every_epochs,
            "lr_decay_factor": t.lr_decay_factor,
            "validation_fraction": self.opts.validation_fraction,
        });
        if self.cfg.dataset != DatasetConfig::Synthetic {
            // Only real datasets add the key, so existing synthetic teachers keep theirs.
            key["dataset"] = serde_json::json!(self.cfg.dataset.result_relevant());
        }
        let digest = Sha256::digest(key.to_string().as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Trains (or reuses) the uni-modal teacher of `modality` for `seed`; returns its stage
    /// result and checkpoint path.
    pub fn teacher(&mut self, modality: Modality, seed: u64) -> Result<(StageResult, PathBuf)> {
        if let Some(given) = self.given[modality_index(modality)].clone() {
            return self.given_teacher(modality, seed, &given);
        }
        let rel = format!(
            "teachers/{}-seed{seed}-{}",
            modality.name(),
            self.teacher_key(modality, seed)
        );
        let ckpt = self.opts.out_dir.join(&rel).join("model.safetensors");
        let r = self.stage(&rel, seed, |run, dir| {
            let data = run.data()?;
            let classes = data.train.num_classes();
            let dev = run.opts.device.clone();
            let model = UniModel::new(
                modality,
                &run.cfg.encoder,
                classes,
                derive_seed(seed, &rel),
                &dev,
            )?;
            let name = format!("{} teacher", modality.name());
            let sched = run.schedule(&name, seed, run.cfg.train.teacher_epochs, false);
            let input = |b: &crate::train::DeviceBatch| match modality {
                Modality::Audio => b.audio.clone(),
                Modality::Video => b.video.clone(),
            };
            let losses = train_epochs(
                &sched,
                &data.train,
                model.vars.all_vars(),
                &dev,
                &run.opts.progress,
                |b, _| {
                    let (logits, _) = model.forward_t(&input(b), true)?;
                    Ok(loss::cross_entropy(&logits, &b.labels)?)
                },
                |_| Ok(()),
            )?;
            let logits = map_batches(&data.test, &dev, |b| {
                Ok(model.forward_t(&input(b), false)?.0)
            })?;
            let (top1, per_class) = accuracy(&logits, data.test.labels(), classes)?;
            // The checkpoint describes itself (crate::publish): usable without this folder.
            let card = crate::publish::TeacherCard {
                modality: modality.name().into(),
                dataset: run.dataset_name(),
                classes: run.class_names()?,
                experiment: run.cfg.clone(),
                input: run.input_spec(modality)?,
                metrics: crate::publish::TeacherMetrics {
                    split: run.opts.split_name(),
                    top1,
                    per_class_top1: per_class.clone(),
                    epoch_losses: losses.clone(),
                    seed,
                },
                code_version: crate::publish::code_version(),
            };
            let path = dir.join("model.safetensors");
            checkpoint::save_varmap(&model.vars, &path, &card.to_meta(&path)?)?;
            run.last_checkpoint = path.display().to_string();
            Ok(StageResult {
                stage: String::new(),
                seed,
                test_top1: top1,
                train_top1: None,
                per_class_test: per_class,
                epoch_losses: losses,
                seconds: 0.0,
                extra: serde_json::Value::Null,
            })
        })?;
        Ok((r, ckpt))
    }

    /// The stage of a given teacher: its card checked against this run, then evaluated on
    /// this run's evaluation split (the same file serves every seed).
    fn given_teacher(
        &mut self,
        modality: Modality,
        seed: u64,
        given: &GivenTeacher,
    ) -> Result<(StageResult, PathBuf)> {
        let rel = format!("teachers/{}-given-{}", modality.name(), &given.sha256[..16]);
        let r = self.stage(&rel, seed, |run, _dir| {
            let data = run.data()?;
            let classes = data.train.num_classes();
            let meta = checkpoint::read_meta(&given.path)?;
            let card = match crate::publish::TeacherCard::from_meta(&meta, &given.path) {
                Ok(card) => {
                    card.check_compatible(
                        &given.path,
                        modality,
                        &run.dataset_name(),
                        classes,
                        &run.cfg,
                    )?;
                    Some(card)
                }
                // A file without a card (another tool's export) is used if it loads strictly.
                Err(Error::TeacherCard { .. })
                    if !meta.extra.contains_key(crate::publish::KEY_TEACHER) =>
                {
                    None
                }
                Err(e) => return Err(e),
            };
            let model = run.load_teacher(modality, &given.path, classes)?;
            let dev = run.opts.device.clone();
            let logits = map_batches(&data.test, &dev, |b| {
                let x = match modality {
                    Modality::Audio => &b.audio,
                    Modality::Video => &b.video,
                };
                Ok(model.forward_t(x, false)?.0)
            })?;
            let (top1, per_class) = accuracy(&logits, data.test.labels(), classes)?;
            Ok(StageResult {
                stage: String::new(),
                seed,
                test_top1: top1,
                train_top1: None,
                per_class_test: per_class,
                epoch_losses: card
                    .as_ref()
                    .map(|c| c.metrics.epoch_losses.clone())
                    .unwrap_or_default(),
                seconds: 0.0,
                extra: serde_json::json!({
                    "given": given.source,
                    "sha256": given.sha256,
                    "card_top1": card.as_ref().map(|c| c.metrics.top1),
                    "card_seed": card.as_ref().map(|c| c.metrics.seed),
                    "code_version": card.as_ref().map(|c| c.code_version.clone()),
                }),
            })
        })?;
        Ok((r, given.path.clone()))
    }

    /// Loads a teacher checkpoint strictly; a checkpoint of another architecture is an
    /// [`Error::Checkpoint`] naming the file and the offending keys.
    pub fn load_teacher(
        &self,
        modality: Modality,
        path: &Path,
        classes: usize,
    ) -> Result<UniModel> {
        let model = UniModel::new(modality, &self.cfg.encoder, classes, 0, &self.opts.device)?;
        checkpoint::load_varmap_strict(&model.vars, path).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            what: format!(
                "{} teacher (ResNet18 topology, base width {})",
                modality.name(),
                self.cfg.encoder.base_width
            ),
            source: Box::new(e),
        })?;
        Ok(model)
    }

    fn load_fusion(&self, method: Method, path: &Path, classes: usize) -> Result<FusionModel> {
        let model = FusionModel::new(
            &self.cfg.encoder,
            classes,
            method == Method::GradientBlending,
            0,
            &self.opts.device,
        )?;
        checkpoint::load_varmap_strict(&model.vars, path).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            what: format!("{} fusion model", method.name()),
            source: Box::new(e),
        })?;
        Ok(model)
    }

    fn method_checkpoint(&self, method: Method, seed: u64) -> PathBuf {
        self.opts
            .out_dir
            .join(format!("seed-{seed}"))
            .join(method.slug())
            .join("model.safetensors")
    }

    // ---------------------------------------------------------------------------------------
    // Gradient-Blending weights
    // ---------------------------------------------------------------------------------------

    /// Estimates Gradient-Blending's weights `(w_fused, w_audio, w_video)` for `seed` on a
    /// validation split carved from the training data (see `docs/trainer.md`).
    pub fn gb_weights(&mut self, seed: u64) -> Result<[f64; 3]> {
        let rel = format!("seed-{seed}/gb-weights");
        let r = self.stage(&rel, seed, |run, _dir| {
            let data = run.data()?;
            let classes = data.train.num_classes();
            let dev = run.opts.device.clone();
            let t = run.cfg.train.clone();
            let (fit, val) = data
                .train
                .split_validation(t.gb_validation_fraction, derive_seed(seed, "gb-split"))?;
            // Training losses are measured on a subset of the fit split as large as `val`.
            let fit_probe = fit.subset(&(0..val.len().min(fit.len())).collect::<Vec<_>>())?;
            let model = FusionModel::new(
                &run.cfg.encoder,
                classes,
                true,
                derive_seed(seed, &rel),
                &dev,
            )?;
            let sched = run.schedule("gb-estimate", seed, t.gb_estimation_epochs, false);
            let mid = t.gb_estimation_epochs / 2 - 1;
            let last = t.gb_estimation_epochs - 1;
            // losses[e][set][head]: set 0 = fit, 1 = val; head 0 fused, 1 audio, 2 video.
            let mut snapshots: Vec<[[f64; 3]; 2]> = Vec::new();
            let head_losses = |model: &FusionModel, ds: &DataSource| -> Result<[f64; 3]> {
                let mut sums = [0.0f64; 3];
                for b in ds.eval_batches(ds.eval_batch_size(), &dev)? {
                    let b = b?;
                    let e = model.embed(&b.audio, &b.video, false)?;
                    let logits = gb_logits(model, &e.audio, &e.video)?;
                    for (h, l) in logits.iter().enumerate() {
                        let ce = loss::cross_entropy(l, &b.labels)?.to_scalar::<f32>()?;
                        sums[h] += ce as f64 * b.labels.dims1()? as f64;
                    }
                }
                Ok(sums.map(|s| s / ds.len() as f64))
            };
            let losses = train_epochs(
                &sched,
                &fit,
                model.vars.all_vars(),
                &dev,
                &run.opts.progress,
                |b, _| {
                    let e = model.embed(&b.audio, &b.video, true)?;
                    let l = gb_logits(&model, &e.audio, &e.video)?;
                    let mut total = loss::cross_entropy(&l[0], &b.labels)?;
                    for x in &l[1..] {
                        total = (total + loss::cross_entropy(x, &b.labels)?)?;
                    }
                    Ok((total / 3.0)?)
                },
                |epoch| {
                    if epoch == mid || epoch == last {
                        snapshots
                            .push([head_losses(&model, &fit_probe)?, head_losses(&model, &val)?]);
                    }
                    Ok(())
                },
            )?;
            let weights = ogr_weights(&snapshots[0], &snapshots[snapshots.len() - 1]);
            Ok(StageResult {
                stage: String::new(),
                seed,
                test_top1: 0.0,
                train_top1: None,
                per_class_test: Vec::new(),
                epoch_losses: losses,
                seconds: 0.0,
                extra: serde_json::json!({
                    "weights": {"fused": weights[0], "audio": weights[1], "video": weights[2]},
                    "losses_at_half": snapshots[0],
                    "losses_at_end": snapshots[snapshots.len() - 1],
                    "validation_samples": val.len(),
                    "note": "test_top1 is not measured in this stage",
                }),
            })
        })?;
        let w = &r.extra["weights"];
        let get = |k: &str| w[k].as_f64().unwrap_or(1.0 / 3.0);
        Ok([get("fused"), get("audio"), get("video")])
    }

    // ---------------------------------------------------------------------------------------
    // Table 2 methods
    // ---------------------------------------------------------------------------------------

    /// Trains (or reuses) `method` for `seed`, with its prerequisites (teachers, the Naive
    /// Fusion model for Self Distillation, the Gradient-Blending weights) first.
    pub fn method(&mut self, method: Method, seed: u64) -> Result<StageResult> {
        let rel = format!("seed-{seed}/{}", method.slug());
        // Prerequisites are visited (and their checkpoints loaded) only when this stage still
        // has to run: a finished stage is reused without touching them.
        self.stage(&rel, seed, |run, dir| {
            let classes = run.data()?.train.num_classes();
            let mut teachers: (Option<Encoder>, Option<Encoder>) = (None, None);
            if method.needs_teachers() {
                let (_, pa) = run.teacher(Modality::Audio, seed)?;
                let (_, pv) = run.teacher(Modality::Video, seed)?;
                let (da, dv) = match method {
                    Method::PretrainFinetune => (true, true),
                    m => m.distils(),
                };
                if da {
                    teachers.0 = Some(run.load_teacher(Modality::Audio, &pa, classes)?.encoder);
                }
                if dv {
                    teachers.1 = Some(run.load_teacher(Modality::Video, &pv, classes)?.encoder);
                }
            }
            if method == Method::SelfDistillation {
                run.method(Method::NaiveFusion, seed)?;
                let nf = run.load_fusion(
                    Method::NaiveFusion,
                    &run.method_checkpoint(Method::NaiveFusion, seed),
                    classes,
                )?;
                teachers = (Some(nf.audio), Some(nf.video));
            }
            let gb = if method == Method::GradientBlending {
                Some(run.gb_weights(seed)?)
            } else {
                None
            };
            if method == Method::PretrainFinetune {
                run.pretrain_finetune(seed, dir, &teachers)
            } else {
                run.train_fusion(method, seed, dir, &teachers, gb)
            }
        })
    }

    fn pretrain_finetune(
        &mut self,
        seed: u64,
        dir: &Path,
        teachers: &(Option<Encoder>, Option<Encoder>),
    ) -> Result<StageResult> {
        let data = self.data()?;
        let dev = self.opts.device.clone();
        let (Some(ta), Some(tv)) = teachers else {
            return Err(Error::InvalidConfig {
                field: "teachers",
                expected: "both uni-modal teachers".into(),
                found: "missing".into(),
            });
        };
        let embed = |ds: &DataSource| {
            map_batches(ds, &dev, |b| {
                Ok(Tensor::cat(
                    &[ta.embed(&b.audio, false)?, tv.embed(&b.video, false)?],
                    1,
                )?)
            })
        };
        let (xtr, xte) = (embed(&data.train)?, embed(&data.test)?);
        let mut r = self.fit_linear(&data, &xtr, &xte, seed, "pretrain-finetune", dir)?;
        r.extra = serde_json::json!({"encoders": "frozen uni-modal teachers (eval mode)"});
        Ok(r)
    }

    fn train_fusion(
        &mut self,
        method: Method,
        seed: u64,
        dir: &Path,
        teachers: &(Option<Encoder>, Option<Encoder>),
        gb: Option<[f64; 3]>,
    ) -> Result<StageResult> {
        let data = self.data()?;
        let classes = data.train.num_classes();
        let dev = self.opts.device.clone();
        let t = self.cfg.train.clone();
        let rel = format!("seed-{seed}/{}", method.slug());
        let model = FusionModel::new(
            &self.cfg.encoder,
            classes,
            method == Method::GradientBlending,
            derive_seed(seed, &rel),
            &dev,
        )?;
        let distill = matches!(
            method,
            Method::UniModalTeacher | Method::AudioOnlyDistillation | Method::VideoOnlyDistillation
        );
        let sched = self.schedule(method.slug(), seed, t.epochs, distill);
        let lambda = t.lambda;
        let losses = train_epochs(
            &sched,
            &data.train,
            model.vars.all_vars(),
            &dev,
            &self.opts.progress,
            |b, rng| {
                let e = model.embed(&b.audio, &b.video, true)?;
                let n = b.labels.dims1()?;
                let mut total = match method {
                    Method::Dropout => {
                        let fused = Tensor::cat(&[&e.audio, &e.video], 1)?; // (B, D_a + D_v)
                        let mask = dropout_mask(fused.dims(), t.dropout, rng, &dev)?;
                        loss::cross_entropy(&model.fc.forward(&(fused * mask)?)?, &b.labels)?
                    }
                    Method::ModalityDropout => {
                        let (ma, mv) = modality_masks(n, rng, &dev)?; // (B, 1) each
                        let logits = model
                            .classify(&e.audio.broadcast_mul(&ma)?, &e.video.broadcast_mul(&mv)?)?;
                        loss::cross_entropy(&logits, &b.labels)?
                    }
                    Method::GradientBlending => {
                        let w = gb.unwrap_or([1.0 / 3.0; 3]);
                        let l = gb_logits(&model, &e.audio, &e.video)?;
                        let mut total = (loss::cross_entropy(&l[0], &b.labels)? * w[0])?;
                        for (x, wi) in l[1..].iter().zip(&w[1..]) {
                            total = (total + (loss::cross_entropy(x, &b.labels)? * *wi)?)?;
                        }
                        total
                    }
                    _ => loss::cross_entropy(&model.classify(&e.audio, &e.video)?, &b.labels)?,
                };
                if let Some(ta) = &teachers.0 {
                    let target = ta.embed(&b.audio, false)?;
                    total = (total + (feature_mse(&e.audio, &target)? * lambda)?)?;
                }
                if let Some(tv) = &teachers.1 {
                    let target = tv.embed(&b.video, false)?;
                    total = (total + (feature_mse(&e.video, &target)? * lambda)?)?;
                }
                Ok(total)
            },
            |_| Ok(()),
        )?;
        self.save(&model.vars, &dir.join("model.safetensors"), method.slug())?;
        let logits = map_batches(&data.test, &dev, |b| {
            let e = model.embed(&b.audio, &b.video, false)?;
            model.classify(&e.audio, &e.video)
        })?;
        let (top1, per_class) = accuracy(&logits, data.test.labels(), classes)?;
        Ok(StageResult {
            stage: String::new(),
            seed,
            test_top1: top1,
            train_top1: None,
            per_class_test: per_class,
            epoch_losses: losses,
            seconds: 0.0,
            extra: match gb {
                Some(w) => {
                    serde_json::json!({"gb_weights": {"fused": w[0], "audio": w[1], "video": w[2]}})
                }
                None => serde_json::Value::Null,
            },
        })
    }

    // ---------------------------------------------------------------------------------------
    // Table 1: linear evaluation
    // ---------------------------------------------------------------------------------------

    /// Linear evaluation of the `modality` encoder of `source` for `seed` (training the source
    /// first if needed): frozen encoder (eval mode), a fresh linear classifier on its
    /// training-set embeddings; train and test top-1.
    pub fn probe(
        &mut self,
        source: ProbeSource,
        modality: Modality,
        seed: u64,
    ) -> Result<StageResult> {
        let classes = self.data()?.train.num_classes();
        let rel = format!("seed-{seed}/probe-{}-{}", source.slug(), modality.name());
        // The source is trained (or found) first, as its own stage; its checkpoint is only
        // loaded when the probe itself still has to run.
        match source {
            ProbeSource::Teacher(m) => {
                self.teacher(m, seed)?;
            }
            ProbeSource::Method(m) => {
                self.method(m, seed)?;
            }
        }
        self.stage(&rel, seed, |run, dir| {
            let encoder = match source {
                ProbeSource::Teacher(m) => {
                    let (_, path) = run.teacher(m, seed)?;
                    run.load_teacher(m, &path, classes)?.encoder
                }
                ProbeSource::Method(m) => {
                    let f = run.load_fusion(m, &run.method_checkpoint(m, seed), classes)?;
                    match modality {
                        Modality::Audio => f.audio,
                        Modality::Video => f.video,
                    }
                }
            };
            let data = run.data()?;
            let dev = run.opts.device.clone();
            let embed = |ds: &DataSource| {
                map_batches(ds, &dev, |b| {
                    encoder.embed(
                        if modality == Modality::Audio {
                            &b.audio
                        } else {
                            &b.video
                        },
                        false,
                    )
                })
            };
            let (xtr, xte) = (embed(&data.train)?, embed(&data.test)?);
            run.fit_linear(&data, &xtr, &xte, seed, &rel, dir)
        })
    }

    /// Fits a linear classifier on frozen training embeddings `xtr (N, D)`, saves it as
    /// `dir/classifier.safetensors` and scores it on the training and test embeddings.
    fn fit_linear(
        &mut self,
        data: &RunData,
        xtr: &Tensor,
        xte: &Tensor,
        seed: u64,
        name: &str,
        dir: &Path,
    ) -> Result<StageResult> {
        let t = &self.cfg.train;
        let classes = data.train.num_classes();
        let probe = LinearProbe::fit(
            xtr,
            data.train.labels(),
            classes,
            t.linear_epochs,
            t.batch_size,
            t.linear_learning_rate,
            derive_seed(seed, name),
        )?;
        self.save(
            probe.vars(),
            &dir.join("classifier.safetensors"),
            "linear-classifier",
        )?;
        let (train_top1, _) = accuracy(&probe.logits(xtr)?, data.train.labels(), classes)?;
        let (top1, per_class) = accuracy(&probe.logits(xte)?, data.test.labels(), classes)?;
        Ok(StageResult {
            stage: String::new(),
            seed,
            test_top1: top1,
            train_top1: Some(train_top1),
            per_class_test: per_class,
            epoch_losses: Vec::new(),
            seconds: 0.0,
            extra: serde_json::Value::Null,
        })
    }

    /// Every stage result of the run so far, by stage path.
    pub fn finished(&self) -> HashMap<String, StageResult> {
        let mut out = HashMap::new();
        for s in self.stages_run.iter().chain(&self.stages_reused) {
            if let Ok(r) = read_json::<StageResult>(&self.opts.out_dir.join(s).join("result.json"))
            {
                out.insert(s.clone(), r);
            }
        }
        out
    }
}

/// The three heads of a Gradient-Blending model: fused, audio-only, video-only logits
/// `(B, k)` each (a model without uni-modal heads returns the fused logits three times).
fn gb_logits(model: &FusionModel, audio: &Tensor, video: &Tensor) -> Result<[Tensor; 3]> {
    let fused = model.classify(audio, video)?;
    Ok(match &model.uni_heads {
        Some((ha, hv)) => [fused, ha.forward(audio)?, hv.forward(video)?],
        None => [fused.clone(), fused.clone(), fused],
    })
}

/// Gradient-Blending weights from per-head losses at two points of training (Wang et al.
/// 2020, Eq. 7 and §3.3): overfitting `O = L_val − L_train`, `ΔO = O_N − O_n`, generalisation
/// `ΔG = L_val,n − L_val,N`; `w_k ∝ max(ΔG_k, 0) / ΔO_k²` (ΔO² floored at 1e-8), normalised to
/// sum 1 (uniform when every head stopped generalising). `snapshot[set][head]`: set 0 = train,
/// 1 = validation; heads fused, audio, video.
pub fn ogr_weights(at_n: &[[f64; 3]; 2], at_big_n: &[[f64; 3]; 2]) -> [f64; 3] {
    let mut w = [0.0; 3];
    for k in 0..3 {
        let o_n = at_n[1][k] - at_n[0][k];
        let o_big = at_big_n[1][k] - at_big_n[0][k];
        let d_o = o_big - o_n;
        let d_g = at_n[1][k] - at_big_n[1][k];
        w[k] = d_g.max(0.0) / (d_o * d_o).max(1e-8);
    }
    let z: f64 = w.iter().sum();
    if z > 0.0 && z.is_finite() {
        w.map(|x| x / z)
    } else {
        [1.0 / 3.0; 3]
    }
}

/// Inverted-dropout mask of `shape` with drop probability `p`, drawn from `rng` (candle's CPU
/// generator cannot be seeded): entries are 0 or 1/(1 − p).
fn dropout_mask(
    shape: &[usize],
    p: f32,
    rng: &mut rand_chacha::ChaCha8Rng,
    dev: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let keep = 1.0 / (1.0 - p);
    let v: Vec<f32> = (0..n)
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
        .collect();
    Ok(Tensor::from_vec(v, shape, dev)?)
}

/// Modality-dropout masks `(B, 1)` for audio and video: per sample, with probability 1/3 the
/// audio embedding is zeroed, with 1/3 the video embedding, with 1/3 neither (no rescaling).
fn modality_masks(
    n: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let (mut a, mut v) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let r: u32 = rng.random_range(0..3);
        a.push(if r == 0 { 0.0f32 } else { 1.0 });
        v.push(if r == 1 { 0.0f32 } else { 1.0 });
    }
    Ok((
        Tensor::from_vec(a, (n, 1), dev)?,
        Tensor::from_vec(v, (n, 1), dev)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ogr_weights_favour_the_head_that_generalises_without_overfitting() {
        // fused: generalises a lot, overfits a little; audio: overfits a lot; video: no gain.
        let at_n = [[1.0, 1.0, 1.0], [1.5, 1.5, 1.5]];
        let at_end = [[0.5, 0.1, 0.9], [1.0, 1.4, 1.6]];
        let w = ogr_weights(&at_n, &at_end);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(w[2], 0.0);
        assert!(w[0] > w[1]);
        assert_eq!(ogr_weights(&at_n, &at_n), [1.0 / 3.0; 3]);
    }

    #[test]
    fn modality_masks_follow_the_one_third_rule() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let (a, v) = modality_masks(3000, &mut rng, &Device::Cpu).unwrap();
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let v: Vec<f32> = v.flatten_all().unwrap().to_vec1().unwrap();
        let both_zero = a
            .iter()
            .zip(&v)
            .filter(|(x, y)| **x == 0.0 && **y == 0.0)
            .count();
        assert_eq!(both_zero, 0);
        for m in [&a, &v] {
            let dropped = m.iter().filter(|&&x| x == 0.0).count() as f64 / 3000.0;
            assert!((dropped - 1.0 / 3.0).abs() < 0.03, "{dropped}");
        }
    }

    #[test]
    fn dropout_mask_keeps_the_expectation() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let m = dropout_mask(&[100, 100], 0.5, &mut rng, &Device::Cpu).unwrap();
        let mean = m.mean_all().unwrap().to_scalar::<f32>().unwrap();
        assert!((mean - 1.0).abs() < 0.05);
    }
}
