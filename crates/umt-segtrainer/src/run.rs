//! Resumable stages (the pattern of `umt-trainer`'s runner): every stage is a folder under the
//! output folder holding `model.safetensors` (written atomically) and then `result.json`
//! (atomically, last). A stage whose `result.json` exists is reused; the output folder's
//! `config.json` must equal the run's config, otherwise the run is refused.
//!
//! Stages, per seed `s`:
//! - `seed-{s}/esanet-{rgbd,rgb,depth}`: a plain ESANet variant (the Table 3 baseline and the
//!   two uni-modal teachers);
//! - `seed-{s}/umt-rgbd`: the UMT student (needs both teachers);
//! - `seed-{s}/probe-{uni-depth,rgbd-depth}`: Table 4's frozen depth encoder of the uni-depth
//!   network or of the RGB-D ESANet with a new decoder trained on depth.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use umt_data::rgbd::augment::Normalization;
use umt_data::rgbd::{RgbdBatch, Split};
use umt_esanet::{loss, ClassHistogram, ConfusionMatrix, EsaNet, EsaNetConfig, Modality};
use umt_nn::checkpoint::{self, CheckpointMeta};
use umt_nn::optim::{trainable_vars, Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};

use crate::config::{ClassWeighting, DataConfig, FrozenBn, OptimizerConfig, SegExperimentConfig};
use crate::data::{
    for_each_batch, permutation, split_indices, splitmix, ClassWeightsRecord, DataRecord, Prepare,
    Source,
};
use crate::error::io_err;
use crate::pretrained::PretrainedEncoder;
use crate::umt::{Predictors, UmtDistiller};
use crate::{Error, Result};

/// One epoch of a stage's training log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochLog {
    /// Epoch index (0-based).
    pub epoch: usize,
    /// Mean training loss (the stage's whole objective).
    pub loss: f64,
    /// Wall time of the epoch.
    pub seconds: f64,
}

/// What a finished stage records (`result.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageResult {
    /// The stage folder relative to the output folder, e.g. `seed-0/umt-rgbd`.
    pub stage: String,
    /// The training seed.
    pub seed: u64,
    /// mIoU on the evaluation images (the whole test split, or the validation carve in tuning
    /// mode; one confusion matrix, mean over classes present).
    pub miou: f64,
    /// Pixel accuracy on the same images (void excluded).
    pub pixel_accuracy: f64,
    /// Per-epoch training log.
    pub epochs: Vec<EpochLog>,
    /// Wall time of the stage.
    pub seconds: f64,
}

/// How a stage's network starts (the two settings of Tables 3 and 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Random initialisation everywhere (the reference's `--no_imagenet_pretraining`).
    Scratch,
    /// Encoders from ImageNet weights ([`RunOptions::imagenet_weights`]), the rest random.
    ImageNet,
}

/// Which depth encoder a Table 4 probe freezes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeSource {
    /// The encoder of the depth-only ESANet (`encoder.*`).
    UniDepth,
    /// The depth encoder of the RGB-D ESANet (`encoder_depth.*`).
    RgbdDepth,
}

impl ProbeSource {
    /// The stage slug.
    pub fn slug(self) -> &'static str {
        match self {
            Self::UniDepth => "probe-uni-depth",
            Self::RgbdDepth => "probe-rgbd-depth",
        }
    }
}

/// Options of a run besides the experiment config (none of them changes a number, except
/// `validation_fraction`, which is recorded in `evaluation.json`).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The output folder.
    pub out_dir: PathBuf,
    /// The device every model runs on.
    pub device: Device,
    /// Print one line per epoch and per stage to stderr.
    pub verbose: bool,
    /// The NYUv2 folder (`cargo xtask prepare-nyuv2 --out`) when the config's data is
    /// `nyuv2`; recorded in `data.json`.
    pub data_dir: Option<PathBuf>,
    /// `None`: train on the training split, report on the test split (the paper's tables).
    /// `Some(f)`: **tuning mode**, as `umt-trainer`'s: a seeded fraction `f` of the training
    /// images (seed: the config's `data_seed`) is carved off as a validation split, every
    /// stage trains on the rest and reports on it instead of the test split, and the tables
    /// say so. Use a separate output folder (a folder is never reused across modes).
    pub validation_fraction: Option<f64>,
    /// Batches prepared ahead of the training step on a loader thread (0: load on the
    /// training thread).
    pub prefetch_batches: usize,
    /// ImageNet encoder weights ([`crate::pretrained`]): the tables then add the
    /// "ImageNet pre-train" rows (stages under `seed-{s}/imagenet/`). Identified in
    /// `pretrained.json`; other weights in the same folder are refused.
    pub imagenet_weights: Option<PathBuf>,
}

impl RunOptions {
    /// Options for `out_dir` on `device`: verbose, no data folder, the test split, two
    /// batches prefetched.
    pub fn new(out_dir: impl Into<PathBuf>, device: Device) -> Self {
        Self {
            out_dir: out_dir.into(),
            device,
            verbose: true,
            data_dir: None,
            validation_fraction: None,
            prefetch_batches: 2,
            imagenet_weights: None,
        }
    }

    /// What the reported numbers are measured on: `test`, or
    /// `validation (F% of the training split; tuning mode, not the test split)`.
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

/// Writes `bytes` to `path` atomically (temporary file, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Writes `value` as pretty JSON to `path` atomically.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, text.as_bytes())
}

/// Writes `value` to `path`, or checks that the file there holds the same value; a
/// different (or unreadable) one is [`Error::ConfigChanged`].
fn record_or_refuse<T: Serialize + for<'de> Deserialize<'de> + PartialEq>(
    path: &Path,
    value: &T,
) -> Result<()> {
    if !path.exists() {
        return write_json_atomic(path, value);
    }
    match read_json::<T>(path) {
        Ok(previous) if previous == *value => Ok(()),
        _ => Err(Error::ConfigChanged {
            path: path.to_path_buf(),
        }),
    }
}

/// Reads a JSON file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// A seed of its own for `(seed, name)`.
fn derive_seed(seed: u64, name: &str) -> u64 {
    name.bytes()
        .fold(splitmix(seed), |h, b| splitmix(h ^ u64::from(b)))
}

/// A trained (or loaded) model and its variables.
struct Trained {
    vars: VarMap,
    model: EsaNet,
}

/// The optimiser of a stage.
enum Opt {
    Sgd(Sgd),
    Adam(Adam),
}

impl Opt {
    fn new(cfg: OptimizerConfig, vars: Vec<Var>) -> Result<Self> {
        Ok(match cfg {
            OptimizerConfig::SgdNesterov {
                max_lr,
                momentum,
                weight_decay,
            } => Self::Sgd(Sgd::new(
                vec![ParamGroup::new(vars, weight_decay)],
                SgdConfig {
                    lr: max_lr,
                    momentum,
                    dampening: 0.0,
                    nesterov: true,
                },
            )?),
            OptimizerConfig::Adam {
                max_lr,
                weight_decay,
            } => Self::Adam(Adam::new(
                vec![ParamGroup::new(vars, weight_decay)],
                AdamConfig {
                    lr: max_lr,
                    ..AdamConfig::default()
                },
            )?),
        })
    }

    fn opt(&mut self) -> &mut dyn Optimizer {
        match self {
            Self::Sgd(o) => o,
            Self::Adam(o) => o,
        }
    }
}

/// The extra objective of a stage on top of the deep-supervision CE, and how the model runs.
enum Objective<'a> {
    /// CE alone.
    Plain,
    /// UMT distillation.
    Umt(&'a UmtDistiller),
    /// CE of a Table 4 probe: the encoder frozen (outputs detached), its BatchNorm as given.
    FrozenEncoder(FrozenBn),
}

/// Runs the stages of Tables 3 and 4 under one output folder.
pub struct SegRunner {
    cfg: SegExperimentConfig,
    opts: RunOptions,
    /// The training split's images.
    train_src: Source,
    /// Where the evaluation images come from: the test split, or (tuning mode) the training
    /// split again.
    eval_src: Source,
    /// Training images (indices into `train_src`).
    train_idx: Vec<usize>,
    /// Evaluation images (indices into `eval_src`).
    eval_idx: Vec<usize>,
    class_weights: Option<Option<Vec<f32>>>,
    pretrained: Option<PretrainedEncoder>,
    /// Stages computed by this runner, in order.
    pub stages_run: Vec<String>,
    /// Stages reused from an earlier run, in order.
    pub stages_reused: Vec<String>,
}

impl SegRunner {
    /// A runner writing under `opts.out_dir`; writes the config there (`config.json`), the
    /// evaluation split (`evaluation.json`) and the data read (`data.json`), or refuses a
    /// folder holding another of any of them. Opens the data: NYUv2 problems (a missing
    /// folder, list or image; a bad first image of a split) are reported here, before any
    /// training.
    pub fn new(cfg: SegExperimentConfig, opts: RunOptions) -> Result<Self> {
        cfg.validate()?;
        let data_dir = match (&cfg.data, &opts.data_dir) {
            (DataConfig::Nyuv2 { .. }, Some(dir)) => {
                Some(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone()))
            }
            (DataConfig::Nyuv2 { .. }, None) => {
                return Err(Error::InvalidConfig {
                    field: "data_dir",
                    expected: "the NYUv2 folder `cargo xtask prepare-nyuv2` wrote (--data-dir)"
                        .into(),
                    found: "none".into(),
                })
            }
            (DataConfig::Synthetic { .. }, _) => None,
        };
        let train_src = Source::open(&cfg, data_dir.as_deref(), Split::Train)?;
        let eval_split = if opts.validation_fraction.is_some() {
            Split::Train
        } else {
            Split::Test
        };
        let eval_src = Source::open(&cfg, data_dir.as_deref(), eval_split)?;
        let limits = match &cfg.data {
            DataConfig::Nyuv2 {
                max_train_samples,
                max_test_samples,
                ..
            } => (*max_train_samples, *max_test_samples),
            DataConfig::Synthetic { .. } => (None, None),
        };
        let (train_idx, eval_idx) = split_indices(
            train_src.len(),
            eval_src.len(),
            limits,
            opts.validation_fraction,
            cfg.data_seed,
        )?;
        if cfg.train.batch_size > train_idx.len() {
            return Err(Error::InvalidConfig {
                field: "train.batch_size",
                expected: format!("in 1..={} (the training images)", train_idx.len()),
                found: cfg.train.batch_size.to_string(),
            });
        }
        if eval_idx.is_empty() {
            return Err(Error::InvalidConfig {
                field: "data",
                expected: "at least one evaluation image".into(),
                found: "none".into(),
            });
        }
        // Fail fast on format problems (bit depth, sizes, label range) of each split.
        train_src.sample(train_idx[0])?;
        eval_src.sample(eval_idx[0])?;

        std::fs::create_dir_all(&opts.out_dir).map_err(io_err(&opts.out_dir))?;
        record_or_refuse(&opts.out_dir.join("config.json"), &cfg)?;
        // The evaluation split is part of what a stage's result means: a tuning folder is
        // never resumed as a test run, nor the other way round.
        let evaluation = serde_json::json!({
            "split": if opts.validation_fraction.is_some() { "validation" } else { "test" },
            "validation_fraction": opts.validation_fraction,
        });
        record_or_refuse(&opts.out_dir.join("evaluation.json"), &evaluation)?;
        let record = DataRecord {
            kind: cfg.data.name().into(),
            root: data_dir,
            train_images: train_idx.len(),
            eval_images: eval_idx.len(),
        };
        record_or_refuse(&opts.out_dir.join("data.json"), &record)?;
        let pretrained = match &opts.imagenet_weights {
            Some(path) => {
                let p = PretrainedEncoder::load(path, &opts.device)?;
                // Checked against the model now rather than after hours of other stages.
                let check = VarMap::new();
                EsaNet::init(&cfg.model, &check, 0, DType::F32, &opts.device)?;
                p.apply(&check)?;
                record_or_refuse(&opts.out_dir.join("pretrained.json"), p.record())?;
                Some(p)
            }
            None => None,
        };
        Ok(Self {
            cfg,
            opts,
            train_src,
            eval_src,
            train_idx,
            eval_idx,
            class_weights: None,
            pretrained,
            stages_run: Vec::new(),
            stages_reused: Vec::new(),
        })
    }

    /// `(training images, evaluation images)` of this run.
    pub fn num_images(&self) -> (usize, usize) {
        (self.train_idx.len(), self.eval_idx.len())
    }

    /// The run options.
    pub fn options(&self) -> &RunOptions {
        &self.opts
    }

    /// The configuration.
    pub fn config(&self) -> &SegExperimentConfig {
        &self.cfg
    }

    /// The output folder.
    pub fn out_dir(&self) -> &Path {
        &self.opts.out_dir
    }

    fn log(&self, line: &str) {
        if self.opts.verbose {
            eprintln!("{line}");
        }
    }

    /// The model config of a modality.
    fn model_config(&self, modality: Modality) -> EsaNetConfig {
        self.cfg.model.clone().with_modality(modality)
    }

    /// Median-frequency weights from the (unaugmented, original-size) training labels, or
    /// `None`; computed once per output folder and recorded in `class_weights.json` (reused
    /// when it lists the same training images).
    fn class_weights(&mut self) -> Result<Option<Vec<f32>>> {
        if let Some(w) = &self.class_weights {
            return Ok(w.clone());
        }
        let w = match self.cfg.train.class_weighting {
            ClassWeighting::None => None,
            ClassWeighting::MedianFrequency => {
                let path = self.opts.out_dir.join("class_weights.json");
                let images: Vec<String> = self
                    .train_idx
                    .iter()
                    .map(|&i| self.train_src.id(i))
                    .collect();
                let cached = read_json::<ClassWeightsRecord>(&path)
                    .ok()
                    .filter(|r| r.images == images && r.weighting == "median_frequency");
                let record = match cached {
                    Some(r) => r,
                    None => {
                        let t0 = Instant::now();
                        let mut hist = ClassHistogram::new(self.cfg.model.num_classes);
                        for &i in &self.train_idx {
                            hist.add_image(&self.train_src.labels(i)?)?;
                        }
                        let r = ClassWeightsRecord {
                            weighting: "median_frequency".into(),
                            images,
                            pixels: hist.pixels().to_vec(),
                            weights: hist.median_frequency_weights()?,
                        };
                        write_json_atomic(&path, &r)?;
                        self.log(&format!(
                            "class weights (median frequency) from {} training label maps in \
                             {:.1} s: {}",
                            self.train_idx.len(),
                            t0.elapsed().as_secs_f64(),
                            path.display()
                        ));
                        r
                    }
                };
                Some(record.weights)
            }
        };
        self.class_weights = Some(w.clone());
        Ok(w)
    }

    /// How a training (`train`) or evaluation sample is prepared.
    fn prepare(&self, train: bool) -> Prepare {
        Prepare {
            size: (self.cfg.model.height, self.cfg.model.width),
            augment: (train && self.cfg.train.augment).then(|| self.cfg.augment_config()),
            norm: Normalization::nyuv2(),
        }
    }

    /// `(rgb (B, 3, H, W), depth (B, 1, H, W), labels (B, H, W) u32)` on the device.
    fn tensors(&self, b: &RgbdBatch) -> Result<(Tensor, Tensor, Tensor)> {
        let dev = &self.opts.device;
        let rgb = Tensor::from_slice(&b.rgb, b.rgb_shape().as_slice(), dev)?;
        let depth = Tensor::from_slice(&b.depth, b.depth_shape().as_slice(), dev)?;
        let labels: Vec<u32> = b.labels.iter().map(|&l| u32::from(l)).collect();
        let labels = Tensor::from_vec(labels, b.labels_shape().as_slice(), dev)?;
        Ok((rgb, depth, labels))
    }

    /// mIoU and pixel accuracy of `model` on the evaluation images (the test split, or the
    /// validation carve in tuning mode): eval mode, one confusion matrix over all of them,
    /// images resized to the model input when they differ (labels nearest).
    pub fn evaluate(&self, model: &EsaNet) -> Result<(f64, f64)> {
        let mut cm = ConfusionMatrix::new(self.cfg.model.num_classes);
        let jobs: Vec<(Vec<usize>, u64)> = self
            .eval_idx
            .chunks(self.cfg.train.eval_batch_size)
            .map(|c| (c.to_vec(), 0))
            .collect();
        let prep = self.prepare(false);
        for_each_batch(
            &self.eval_src,
            &jobs,
            &prep,
            self.opts.prefetch_batches,
            |_, batch| {
                let (rgb, depth, labels) = self.tensors(&batch)?;
                let out = model.forward_t(Some(&rgb), Some(&depth), false)?; // (B, K, H, W)
                cm.update_from_logits(&out.logits, &labels)?;
                Ok(())
            },
        )?;
        Ok((cm.miou(), cm.pixel_accuracy()))
    }

    /// Runs (or reuses) the stage `rel`.
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
            self.log(&format!("{rel}: reused (mIoU {:.2}%)", 100.0 * r.miou));
            return Ok(r);
        }
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        self.log(&format!("{rel}: training"));
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
        self.log(&format!(
            "{rel}: {split} mIoU {:.2}%, pixel accuracy {:.2}% in {:.1} s",
            100.0 * r.miou,
            100.0 * r.pixel_accuracy,
            r.seconds
        ));
        Ok(r)
    }

    /// Trains `model` (trainable `vars`) for `epochs` with `objective`; returns the log.
    fn fit(
        &mut self,
        stage: &str,
        seed: u64,
        model: &EsaNet,
        vars: Vec<Var>,
        epochs: usize,
        objective: Objective<'_>,
    ) -> Result<Vec<EpochLog>> {
        let weights = self.class_weights()?;
        let this = &*self;
        let t = this.cfg.train.clone();
        let mut opt = Opt::new(t.optimizer, vars)?;
        let n = this.train_idx.len();
        let steps_per_epoch = n / t.batch_size; // drop_last
        let total = epochs * steps_per_epoch;
        let prep = this.prepare(true);
        let mut logs = Vec::with_capacity(epochs);
        for epoch in 0..epochs {
            let t0 = Instant::now();
            // From the init seed only, so stages with one init seed (ESANet and its UMT student,
            // the two probes) see the same batches and augmentations: paired comparisons.
            let epoch_seed = derive_seed(seed, &format!("epoch{epoch}"));
            let order = permutation(n, epoch_seed);
            let jobs: Vec<(Vec<usize>, u64)> = (0..steps_per_epoch)
                .map(|step| {
                    let idx = order[step * t.batch_size..(step + 1) * t.batch_size]
                        .iter()
                        .map(|&k| this.train_idx[k])
                        .collect();
                    (idx, splitmix(epoch_seed ^ step as u64))
                })
                .collect();
            let mut sum = 0.0;
            for_each_batch(
                &this.train_src,
                &jobs,
                &prep,
                this.opts.prefetch_batches,
                |step, batch| {
                    let lr = umt_nn::schedule::one_cycle(
                        epoch * steps_per_epoch + step,
                        t.optimizer.max_lr(),
                        total,
                        t.pct_start,
                        t.div_factor,
                        t.final_div_factor,
                    );
                    opt.opt().set_learning_rate(lr);
                    let (rgb, depth, labels) = this.tensors(&batch)?;
                    let out = match objective {
                        Objective::FrozenEncoder(bn) => model.forward_frozen_encoder_t(
                            Some(&rgb),
                            Some(&depth),
                            bn == FrozenBn::Train,
                            true,
                        )?,
                        _ => model.forward_t(Some(&rgb), Some(&depth), true)?,
                    };
                    let ce = loss::deep_supervision_loss(&out, &labels, weights.as_deref())?;
                    let l = match objective {
                        Objective::Umt(d) => d.loss(&out, &ce, &rgb, &depth, true)?.total,
                        _ => ce,
                    };
                    let value = f64::from(l.to_dtype(DType::F32)?.to_scalar::<f32>()?);
                    if !value.is_finite() {
                        return Err(Error::NonFiniteLoss {
                            stage: stage.to_string(),
                            epoch,
                            step,
                            loss: value,
                        });
                    }
                    opt.opt().backward_step(&l)?;
                    sum += value;
                    Ok(())
                },
            )?;
            let log = EpochLog {
                epoch,
                loss: sum / steps_per_epoch.max(1) as f64,
                seconds: t0.elapsed().as_secs_f64(),
            };
            this.log(&format!(
                "{stage}: epoch {}/{epochs} loss {:.4} ({:.1} s)",
                epoch + 1,
                log.loss,
                log.seconds
            ));
            logs.push(log);
        }
        Ok(logs)
    }

    fn save(vars: &VarMap, config: &EsaNetConfig, path: &Path, what: &str) -> Result<()> {
        let value = serde_json::to_value(config).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let meta = CheckpointMeta::new(format!("umt-segtrainer/{what}"), value);
        checkpoint::save_varmap(vars, path, &meta)?;
        Ok(())
    }

    /// Saves a trained stage's model into `dir`, evaluates it, and builds its result.
    fn finish(
        &self,
        t: &Trained,
        dir: &Path,
        what: &str,
        seed: u64,
        epochs: Vec<EpochLog>,
    ) -> Result<StageResult> {
        Self::save(
            &t.vars,
            t.model.config(),
            &dir.join("model.safetensors"),
            what,
        )?;
        let (miou, pixel_accuracy) = self.evaluate(&t.model)?;
        Ok(StageResult {
            stage: String::new(),
            seed,
            miou,
            pixel_accuracy,
            epochs,
            seconds: 0.0,
        })
    }

    /// A freshly initialised model; with `Init::ImageNet` its encoder(s) then take the
    /// ImageNet weights.
    fn fresh(&self, modality: Modality, seed: u64, init: Init) -> Result<Trained> {
        let vars = VarMap::new();
        let model = EsaNet::init(
            &self.model_config(modality),
            &vars,
            seed,
            DType::F32,
            &self.opts.device,
        )?;
        if init == Init::ImageNet {
            let weights = self.pretrained.as_ref().ok_or(Error::InvalidConfig {
                field: "imagenet_weights",
                expected: "a weights file (--imagenet-weights) for the ImageNet stages".into(),
                found: "none".into(),
            })?;
            weights.apply(&vars)?;
        }
        Ok(Trained { vars, model })
    }

    /// Loads a finished stage's model.
    fn load(&self, modality: Modality, rel: &str) -> Result<Trained> {
        let t = self.fresh(modality, 0, Init::Scratch)?;
        checkpoint::load_varmap_strict(
            &t.vars,
            &self.opts.out_dir.join(rel).join("model.safetensors"),
        )?;
        Ok(t)
    }

    /// `seed-{s}/{slug}` (from scratch) or `seed-{s}/imagenet/{slug}`.
    fn stage_name(seed: u64, slug: &str, init: Init) -> String {
        match init {
            Init::Scratch => format!("seed-{seed}/{slug}"),
            Init::ImageNet => format!("seed-{seed}/imagenet/{slug}"),
        }
    }

    /// Trains (or reuses) a plain ESANet of `modality` from scratch:
    /// `seed-{s}/esanet-{modality}`.
    pub fn baseline(&mut self, modality: Modality, seed: u64) -> Result<StageResult> {
        self.baseline_init(modality, seed, Init::Scratch)
    }

    /// [`SegRunner::baseline`] from `init` (ImageNet: `seed-{s}/imagenet/esanet-{modality}`).
    pub fn baseline_init(
        &mut self,
        modality: Modality,
        seed: u64,
        init: Init,
    ) -> Result<StageResult> {
        let slug = format!("esanet-{}", modality_slug(modality));
        let rel = Self::stage_name(seed, &slug, init);
        let init_seed = derive_seed(seed, &slug);
        self.stage(&rel.clone(), seed, |r, dir| {
            let t = r.fresh(modality, init_seed, init)?;
            let vars = trainable_vars(&t.vars)?
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            let epochs = r.cfg.train.epochs;
            let log = r.fit(&rel, init_seed, &t.model, vars, epochs, Objective::Plain)?;
            r.finish(&t, dir, &slug, seed, log)
        })
    }

    /// The UMT teachers (trained or reused stages `esanet-rgb`, `esanet-depth` from `init`,
    /// loaded frozen) and fresh predictors (in `pred_vars`) for `seed`.
    pub fn distiller(&mut self, seed: u64, init: Init, pred_vars: &VarMap) -> Result<UmtDistiller> {
        self.baseline_init(Modality::Rgb, seed, init)?;
        self.baseline_init(Modality::Depth, seed, init)?;
        let rel = |m| Self::stage_name(seed, &format!("esanet-{}", modality_slug(m)), init);
        let rgb = self.load(Modality::Rgb, &rel(Modality::Rgb))?;
        let depth = self.load(Modality::Depth, &rel(Modality::Depth))?;
        let vb = umt_nn::init::seeded_var_builder(
            pred_vars,
            derive_seed(seed, "umt-predictors"),
            DType::F32,
            &self.opts.device,
        );
        let predictors = Predictors::new(&self.cfg.umt.taps, self.cfg.model.stage_channels(), vb)?;
        Ok(UmtDistiller {
            teacher_rgb: rgb.model,
            teacher_depth: depth.model,
            predictors,
            config: self.cfg.umt.clone(),
        })
    }

    /// Trains (or reuses) the UMT student `seed-{s}/umt-rgbd` from scratch (and its
    /// teachers' stages).
    pub fn umt(&mut self, seed: u64) -> Result<StageResult> {
        self.umt_init(seed, Init::Scratch)
    }

    /// [`SegRunner::umt`] from `init` (student and teachers alike).
    pub fn umt_init(&mut self, seed: u64, init: Init) -> Result<StageResult> {
        let rel = Self::stage_name(seed, "umt-rgbd", init);
        // The student starts from the same initial weights as the plain ESANet of this seed.
        let init_seed = derive_seed(seed, "esanet-rgbd");
        self.stage(&rel.clone(), seed, |r, dir| {
            let pred_vars = VarMap::new();
            let distiller = r.distiller(seed, init, &pred_vars)?;
            let t = r.fresh(Modality::RgbD, init_seed, init)?;
            let mut vars: Vec<Var> = trainable_vars(&t.vars)?
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            vars.extend(trainable_vars(&pred_vars)?.into_iter().map(|(_, v)| v));
            let epochs = r.cfg.train.epochs;
            let log = r.fit(
                &rel,
                init_seed,
                &t.model,
                vars,
                epochs,
                Objective::Umt(&distiller),
            )?;
            // The predictors are dropped: only the student is saved.
            r.finish(&t, dir, "umt-rgbd", seed, log)
        })
    }

    /// Trains (or reuses) a Table 4 probe from scratch-trained networks: the depth encoder
    /// of `source` frozen, a new depth-only decoder (context module, skips, decoder) trained
    /// on depth.
    pub fn probe(&mut self, source: ProbeSource, seed: u64) -> Result<StageResult> {
        self.probe_init(source, seed, Init::Scratch)
    }

    /// [`SegRunner::probe`] on the networks trained from `init`.
    pub fn probe_init(
        &mut self,
        source: ProbeSource,
        seed: u64,
        init: Init,
    ) -> Result<StageResult> {
        let (modality, prefix) = match source {
            ProbeSource::UniDepth => (Modality::Depth, "encoder."),
            ProbeSource::RgbdDepth => (Modality::RgbD, "encoder_depth."),
        };
        let src_rel = Self::stage_name(seed, &format!("esanet-{}", modality_slug(modality)), init);
        let rel = Self::stage_name(seed, source.slug(), init);
        if !self.opts.out_dir.join(&rel).join("result.json").exists() {
            self.baseline_init(modality, seed, init)?;
        }
        // Both probes start their new decoder from the same weights (the encoder is
        // overwritten by the source's).
        let init_seed = derive_seed(seed, "probe");
        self.stage(&rel.clone(), seed, |r, dir| {
            let t = r.fresh(Modality::Depth, init_seed, Init::Scratch)?;
            let src_path = r.opts.out_dir.join(&src_rel).join("model.safetensors");
            let src = checkpoint::load_tensors(&src_path, &r.opts.device)?;
            copy_encoder(&t.vars, &src, prefix, &src_path)?;
            // Only the new decoder trains; the encoder (and any SE inside it) stays as
            // loaded, its BatchNorm statistics too with `frozen_bn: eval`.
            let vars = trainable_vars(&t.vars)?
                .into_iter()
                .filter(|(n, _)| !n.starts_with("encoder.") && !n.starts_with("se_layer"))
                .map(|(_, v)| v)
                .collect();
            let epochs = r.cfg.probe.epochs;
            let objective = Objective::FrozenEncoder(r.cfg.probe.frozen_bn);
            let log = r.fit(&rel, init_seed, &t.model, vars, epochs, objective)?;
            r.finish(&t, dir, source.slug(), seed, log)
        })
    }

    /// Whether ImageNet weights were given (the tables then add the ImageNet rows).
    pub fn has_imagenet_weights(&self) -> bool {
        self.pretrained.is_some()
    }
}

/// `rgbd`, `rgb` or `depth`.
pub fn modality_slug(m: Modality) -> &'static str {
    match m {
        Modality::RgbD => "rgbd",
        Modality::Rgb => "rgb",
        Modality::Depth => "depth",
    }
}

/// Sets every `encoder.*` variable of `vars` from `src[prefix + rest]`; a missing tensor is
/// an error naming it.
fn copy_encoder(
    vars: &VarMap,
    src: &std::collections::HashMap<String, Tensor>,
    prefix: &str,
    path: &Path,
) -> Result<()> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("the VarMap's lock is poisoned".into()))?;
    for (name, var) in data.iter() {
        let Some(rest) = name.strip_prefix("encoder.") else {
            continue;
        };
        let key = format!("{prefix}{rest}");
        let t = src.get(&key).ok_or_else(|| Error::MissingTensor {
            path: path.to_path_buf(),
            key: key.clone(),
        })?;
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}
