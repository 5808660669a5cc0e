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
use umt_data::rgbd::augment::{augment_train, Normalization};
use umt_data::rgbd::synthetic::SyntheticRgbd;
use umt_data::rgbd::{RgbdBatch, RgbdDataset, Split};
use umt_esanet::{loss, ClassHistogram, ConfusionMatrix, EsaNet, EsaNetConfig, Modality};
use umt_nn::checkpoint::{self, CheckpointMeta};
use umt_nn::optim::{trainable_vars, Adam, AdamConfig, Optimizer, ParamGroup, Sgd, SgdConfig};

use crate::config::{ClassWeighting, OptimizerConfig, SegExperimentConfig};
use crate::error::io_err;
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
    /// Test mIoU (one confusion matrix over the whole test split, mean over classes present).
    pub miou: f64,
    /// Test pixel accuracy (void excluded).
    pub pixel_accuracy: f64,
    /// Per-epoch training log.
    pub epochs: Vec<EpochLog>,
    /// Wall time of the stage.
    pub seconds: f64,
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

/// How a runner reports progress.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The output folder.
    pub out_dir: PathBuf,
    /// The device every model runs on.
    pub device: Device,
    /// Print one line per epoch and per stage to stderr.
    pub verbose: bool,
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

/// Reads a JSON file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// SplitMix64 step (seed derivation and the epoch shuffles).
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed of its own for `(seed, name)`.
fn derive_seed(seed: u64, name: &str) -> u64 {
    name.bytes()
        .fold(splitmix(seed), |h, b| splitmix(h ^ u64::from(b)))
}

/// Fisher–Yates permutation of `0..n` from `seed`.
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    let mut state = seed;
    for i in (1..n).rev() {
        state = splitmix(state);
        let j = (state % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
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

/// The extra objective of a stage on top of the deep-supervision CE.
enum Objective<'a> {
    /// CE alone.
    Plain,
    /// UMT distillation.
    Umt(&'a UmtDistiller),
}

/// Runs the stages of Tables 3 and 4 under one output folder.
pub struct SegRunner {
    cfg: SegExperimentConfig,
    opts: RunOptions,
    train: SyntheticRgbd,
    test: SyntheticRgbd,
    class_weights: Option<Option<Vec<f32>>>,
    /// Stages computed by this runner, in order.
    pub stages_run: Vec<String>,
    /// Stages reused from an earlier run, in order.
    pub stages_reused: Vec<String>,
}

impl SegRunner {
    /// A runner writing under `opts.out_dir`; writes the config there (`config.json`) or
    /// refuses a folder holding another configuration.
    pub fn new(cfg: SegExperimentConfig, opts: RunOptions) -> Result<Self> {
        cfg.validate()?;
        std::fs::create_dir_all(&opts.out_dir).map_err(io_err(&opts.out_dir))?;
        let cfg_path = opts.out_dir.join("config.json");
        if cfg_path.exists() {
            let previous: Option<SegExperimentConfig> = read_json(&cfg_path).ok();
            if previous.as_ref() != Some(&cfg) {
                return Err(Error::ConfigChanged { path: cfg_path });
            }
        } else {
            write_json_atomic(&cfg_path, &cfg)?;
        }
        let train = SyntheticRgbd::new(&cfg.data, Split::Train, cfg.data_seed)?;
        let test = SyntheticRgbd::new(&cfg.data, Split::Test, cfg.data_seed)?;
        Ok(Self {
            cfg,
            opts,
            train,
            test,
            class_weights: None,
            stages_run: Vec::new(),
            stages_reused: Vec::new(),
        })
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

    /// Median-frequency weights from the (unaugmented) training labels, or `None`; computed
    /// once.
    fn class_weights(&mut self) -> Result<Option<Vec<f32>>> {
        if let Some(w) = &self.class_weights {
            return Ok(w.clone());
        }
        let w = match self.cfg.train.class_weighting {
            ClassWeighting::None => None,
            ClassWeighting::MedianFrequency => {
                let mut hist = ClassHistogram::new(self.cfg.model.num_classes);
                for i in 0..self.train.len() {
                    hist.add_image(&self.train.sample(i)?.labels)?;
                }
                Some(hist.median_frequency_weights()?)
            }
        };
        self.class_weights = Some(w.clone());
        Ok(w)
    }

    /// The batch of training scenes `indices`, augmented (per-sample seeds from `seed`) and
    /// normalised.
    fn train_batch(&self, indices: &[usize], seed: u64) -> Result<RgbdBatch> {
        let aug = self.cfg.augment_config();
        let norm = Normalization::nyuv2();
        let samples = indices
            .iter()
            .map(|&i| {
                let raw = self.train.sample(i)?;
                let mut s = if self.cfg.train.augment {
                    augment_train(&raw, &aug, splitmix(seed ^ i as u64))?
                } else {
                    raw
                };
                norm.apply(&mut s);
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RgbdBatch::from_samples(&samples)?)
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

    /// Test mIoU and pixel accuracy of `model` (eval mode, whole test split, one matrix).
    pub fn evaluate(&self, model: &EsaNet) -> Result<(f64, f64)> {
        let norm = Normalization::nyuv2();
        let mut cm = ConfusionMatrix::new(self.cfg.model.num_classes);
        let n = self.test.len();
        let bs = self.cfg.train.eval_batch_size;
        for start in (0..n).step_by(bs) {
            let samples = (start..(start + bs).min(n))
                .map(|i| {
                    let mut s = self.test.sample(i)?;
                    norm.apply(&mut s);
                    Ok(s)
                })
                .collect::<Result<Vec<_>>>()?;
            let (rgb, depth, labels) = self.tensors(&RgbdBatch::from_samples(&samples)?)?;
            let out = model.forward_t(Some(&rgb), Some(&depth), false)?; // logits (B, K, H, W)
            cm.update_from_logits(&out.logits, &labels)?;
        }
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
        self.log(&format!(
            "{rel}: test mIoU {:.2}%, pixel accuracy {:.2}% in {:.1} s",
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
        let t = self.cfg.train.clone();
        let mut opt = Opt::new(t.optimizer, vars)?;
        let steps_per_epoch = self.train.len() / t.batch_size;
        let total = epochs * steps_per_epoch;
        let mut logs = Vec::with_capacity(epochs);
        for epoch in 0..epochs {
            let t0 = Instant::now();
            // From the init seed only, so stages with one init seed (ESANet and its UMT student,
            // the two probes) see the same batches and augmentations: paired comparisons.
            let epoch_seed = derive_seed(seed, &format!("epoch{epoch}"));
            let order = permutation(self.train.len(), epoch_seed);
            let mut sum = 0.0;
            for step in 0..steps_per_epoch {
                let lr = umt_nn::schedule::one_cycle(
                    epoch * steps_per_epoch + step,
                    t.optimizer.max_lr(),
                    total,
                    t.pct_start,
                    t.div_factor,
                    t.final_div_factor,
                );
                opt.opt().set_learning_rate(lr);
                let idx = &order[step * t.batch_size..(step + 1) * t.batch_size];
                let batch = self.train_batch(idx, splitmix(epoch_seed ^ step as u64))?;
                let (rgb, depth, labels) = self.tensors(&batch)?;
                let out = model.forward_t(Some(&rgb), Some(&depth), true)?;
                let ce = loss::deep_supervision_loss(&out, &labels, weights.as_deref())?;
                let l = match objective {
                    Objective::Plain => ce,
                    Objective::Umt(d) => d.loss(&out, &ce, &rgb, &depth, true)?.total,
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
            }
            let log = EpochLog {
                epoch,
                loss: sum / steps_per_epoch.max(1) as f64,
                seconds: t0.elapsed().as_secs_f64(),
            };
            self.log(&format!(
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

    fn fresh(&self, modality: Modality, seed: u64) -> Result<Trained> {
        let vars = VarMap::new();
        let model = EsaNet::init(
            &self.model_config(modality),
            &vars,
            seed,
            DType::F32,
            &self.opts.device,
        )?;
        Ok(Trained { vars, model })
    }

    /// Loads a finished stage's model.
    fn load(&self, modality: Modality, seed: u64, rel: &str) -> Result<Trained> {
        let t = self.fresh(modality, seed)?;
        checkpoint::load_varmap_strict(
            &t.vars,
            &self.opts.out_dir.join(rel).join("model.safetensors"),
        )?;
        Ok(t)
    }

    fn stage_name(seed: u64, slug: &str) -> String {
        format!("seed-{seed}/{slug}")
    }

    /// Trains (or reuses) a plain ESANet of `modality`: `seed-{s}/esanet-{modality}`.
    pub fn baseline(&mut self, modality: Modality, seed: u64) -> Result<StageResult> {
        let slug = format!("esanet-{}", modality_slug(modality));
        let rel = Self::stage_name(seed, &slug);
        let init_seed = derive_seed(seed, &slug);
        self.stage(&rel.clone(), seed, |r, dir| {
            let t = r.fresh(modality, init_seed)?;
            let vars = trainable_vars(&t.vars)?
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            let epochs = r.cfg.train.epochs;
            let log = r.fit(&rel, init_seed, &t.model, vars, epochs, Objective::Plain)?;
            r.finish(&t, dir, &slug, seed, log)
        })
    }

    /// The UMT teachers (trained or reused stages `esanet-rgb`, `esanet-depth`, loaded frozen)
    /// and fresh predictors (in `pred_vars`) for `seed`.
    pub fn distiller(&mut self, seed: u64, pred_vars: &VarMap) -> Result<UmtDistiller> {
        self.baseline(Modality::Rgb, seed)?;
        self.baseline(Modality::Depth, seed)?;
        let slug = |m| format!("esanet-{}", modality_slug(m));
        let rgb = self.load(
            Modality::Rgb,
            0,
            &Self::stage_name(seed, &slug(Modality::Rgb)),
        )?;
        let depth = self.load(
            Modality::Depth,
            0,
            &Self::stage_name(seed, &slug(Modality::Depth)),
        )?;
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

    /// Trains (or reuses) the UMT student `seed-{s}/umt-rgbd` (and its teachers' stages).
    pub fn umt(&mut self, seed: u64) -> Result<StageResult> {
        let rel = Self::stage_name(seed, "umt-rgbd");
        // The student starts from the same initial weights as the plain ESANet of this seed.
        let init_seed = derive_seed(seed, "esanet-rgbd");
        self.stage(&rel.clone(), seed, |r, dir| {
            let pred_vars = VarMap::new();
            let distiller = r.distiller(seed, &pred_vars)?;
            let t = r.fresh(Modality::RgbD, init_seed)?;
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

    /// Trains (or reuses) a Table 4 probe: the depth encoder of `source` frozen, a new
    /// depth-only decoder (context module, skips, decoder) trained on depth.
    pub fn probe(&mut self, source: ProbeSource, seed: u64) -> Result<StageResult> {
        let (modality, prefix) = match source {
            ProbeSource::UniDepth => (Modality::Depth, "encoder."),
            ProbeSource::RgbdDepth => (Modality::RgbD, "encoder_depth."),
        };
        let src_rel = Self::stage_name(seed, &format!("esanet-{}", modality_slug(modality)));
        let rel = Self::stage_name(seed, source.slug());
        if !self.opts.out_dir.join(&rel).join("result.json").exists() {
            self.baseline(modality, seed)?;
        }
        // Both probes start their new decoder from the same weights.
        let init_seed = derive_seed(seed, "probe");
        self.stage(&rel.clone(), seed, |r, dir| {
            let t = r.fresh(Modality::Depth, init_seed)?;
            let src_path = r.opts.out_dir.join(&src_rel).join("model.safetensors");
            let src = checkpoint::load_tensors(&src_path, &r.opts.device)?;
            copy_encoder(&t.vars, &src, prefix, &src_path)?;
            // Only the new decoder trains; the encoder's parameters stay as loaded.
            let vars = trainable_vars(&t.vars)?
                .into_iter()
                .filter(|(n, _)| !n.starts_with("encoder."))
                .map(|(_, v)| v)
                .collect();
            let epochs = r.cfg.probe.epochs;
            let log = r.fit(&rel, init_seed, &t.model, vars, epochs, Objective::Plain)?;
            r.finish(&t, dir, source.slug(), seed, log)
        })
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
