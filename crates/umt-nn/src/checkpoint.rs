//! Strict safetensors checkpoints for a candle `VarMap`, with their metadata.
//!
//! - [`save_varmap`] writes every variable (names sorted) plus a `__metadata__` string map built
//!   from [`CheckpointMeta`]: `architecture`, `config` (JSON), `normalization` (JSON mean/std, so
//!   the constants travel with the weights), `umt_nn_version` and free-form extra keys. The write
//!   is atomic: a temporary file in the same directory is written, fsynced and renamed over the
//!   target, so a crash or error never leaves a half-written checkpoint under the final name.
//! - [`load_varmap_strict`] fills every variable from the file and fails, naming the file and
//!   **all** offending keys, when a variable is missing, the file holds an unexpected tensor, or
//!   a shape differs. Tensors are converted to each variable's dtype.
//!   Keys ending in `num_batches_tracked` are accepted and ignored when the model has no such
//!   variable: torchvision state dicts carry this i64 BatchNorm counter, which only matters for
//!   `momentum=None` (cumulative averaging) and never for inference or fine-tuning with a fixed
//!   momentum, so refusing it would force a renaming step on every torchvision import.
//! - [`read_meta`] reads only the header; [`load_tensors`] loads every tensor (for tools).
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_nn::{VarBuilder, VarMap};
//! use umt_nn::checkpoint::{load_varmap_strict, save_varmap, CheckpointMeta};
//! let dir = std::env::temp_dir().join(format!("umt-nn-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).map_err(|e| umt_nn::Error::Io { path: dir.clone(), source: e })?;
//! let path = dir.join("model.safetensors");
//!
//! let vars = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
//! vb.get_with_hints((2, 3), "fc.weight", candle_nn::init::ZERO)?;
//! let meta = CheckpointMeta::new("linear", serde_json::json!({ "in": 3, "out": 2 }));
//! save_varmap(&vars, &path, &meta)?;
//!
//! let again = VarMap::new();
//! let vb = VarBuilder::from_varmap(&again, DType::F32, &Device::Cpu);
//! vb.get_with_hints((2, 3), "fc.weight", candle_nn::init::ONE)?;
//! let read = load_varmap_strict(&again, &path)?;
//! assert_eq!(read.architecture, "linear");
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), umt_nn::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Metadata key of the architecture name.
pub const KEY_ARCHITECTURE: &str = "architecture";
/// Metadata key of the model config (JSON).
pub const KEY_CONFIG: &str = "config";
/// Metadata key of the input normalisation (JSON `{"mean": [..], "std": [..]}`).
pub const KEY_NORMALIZATION: &str = "normalization";
/// Metadata key of the umt-nn version that wrote the file (always written by [`save_varmap`]).
pub const KEY_VERSION: &str = "umt_nn_version";

/// Per-channel input normalisation `(x − mean) / std`, stored with the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// Per-channel mean (e.g. ImageNet's `[0.485, 0.456, 0.406]`).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation (e.g. ImageNet's `[0.229, 0.224, 0.225]`).
    pub std: Vec<f32>,
}

/// What a checkpoint says about itself, stored as safetensors `__metadata__` strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointMeta {
    /// Architecture name, e.g. `"resnet18"` (empty when the file has none, e.g. a converted
    /// torchvision state dict).
    pub architecture: String,
    /// The model config that produced the weights (`null` when absent).
    pub config: serde_json::Value,
    /// Input normalisation constants, if the model expects normalised input.
    pub normalization: Option<Normalization>,
    /// Free-form extra key/values (e.g. epoch, metric). On reading, every metadata key other than
    /// `architecture`, `config` and `normalization` lands here, `umt_nn_version` included.
    pub extra: BTreeMap<String, String>,
}

impl CheckpointMeta {
    /// Metadata with an architecture and config, no normalisation and no extra keys.
    pub fn new(architecture: impl Into<String>, config: serde_json::Value) -> Self {
        Self {
            architecture: architecture.into(),
            config,
            normalization: None,
            extra: BTreeMap::new(),
        }
    }

    /// The safetensors `__metadata__` map: the extra keys, then the reserved keys (which win)
    /// and `umt_nn_version` = this crate's version. An extra key named `architecture`, `config`
    /// or `normalization` is an error.
    pub fn to_string_map(&self) -> Result<HashMap<String, String>> {
        let mut map: HashMap<String, String> = self.extra.clone().into_iter().collect();
        for key in [KEY_ARCHITECTURE, KEY_CONFIG, KEY_NORMALIZATION] {
            if map.contains_key(key) {
                return Err(meta_error(
                    Path::new(""),
                    key,
                    "reserved key used in `extra`",
                ));
            }
        }
        let json = |key: &str, v: &dyn erased::Json| {
            v.to_json()
                .map_err(|e| meta_error(Path::new(""), key, &e.to_string()))
        };
        map.insert(KEY_ARCHITECTURE.into(), self.architecture.clone());
        map.insert(KEY_CONFIG.into(), json(KEY_CONFIG, &self.config)?);
        if let Some(n) = &self.normalization {
            map.insert(KEY_NORMALIZATION.into(), json(KEY_NORMALIZATION, n)?);
        }
        map.insert(KEY_VERSION.into(), env!("CARGO_PKG_VERSION").into());
        Ok(map)
    }

    /// Parses a `__metadata__` map; `path` only names the file in errors. Missing keys are
    /// allowed (files written by other tools); a `config` or `normalization` that is not valid
    /// JSON of the right form is an [`Error::Metadata`].
    pub fn from_string_map(map: &HashMap<String, String>, path: &Path) -> Result<Self> {
        let mut extra: BTreeMap<String, String> = map.clone().into_iter().collect();
        let architecture = extra.remove(KEY_ARCHITECTURE).unwrap_or_default();
        let config = match extra.remove(KEY_CONFIG) {
            Some(s) => serde_json::from_str(&s)
                .map_err(|e| meta_error(path, KEY_CONFIG, &e.to_string()))?,
            None => serde_json::Value::Null,
        };
        let normalization = match extra.remove(KEY_NORMALIZATION) {
            Some(s) => Some(
                serde_json::from_str(&s)
                    .map_err(|e| meta_error(path, KEY_NORMALIZATION, &e.to_string()))?,
            ),
            None => None,
        };
        Ok(Self {
            architecture,
            config,
            normalization,
            extra,
        })
    }
}

/// `serde_json::to_string` behind a trait object (two different types go through one closure).
mod erased {
    pub(super) trait Json {
        fn to_json(&self) -> serde_json::Result<String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> serde_json::Result<String> {
            serde_json::to_string(self)
        }
    }
}

fn meta_error(path: &Path, key: &str, reason: &str) -> Error {
    Error::Metadata {
        path: path.to_path_buf(),
        key: key.into(),
        reason: reason.into(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// A snapshot of the VarMap's variables as `(name, tensor)`, sorted by name.
fn sorted_vars(vars: &VarMap) -> Result<Vec<(String, candle_core::Var)>> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("the VarMap's lock is poisoned".into()))?;
    let mut named: Vec<(String, candle_core::Var)> =
        data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(named)
}

/// Saves every variable of `vars` (names sorted) with `meta` to `path`, atomically.
///
/// The bytes go to a temporary file next to `path`, which is fsynced and renamed over `path`
/// (then the directory is fsynced, best effort): readers see the old file or the new one, never
/// a mix. On error the temporary file is removed and an existing `path` is left untouched.
pub fn save_varmap(vars: &VarMap, path: &Path, meta: &CheckpointMeta) -> Result<()> {
    let map = meta.to_string_map()?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (name, var) in sorted_vars(vars)? {
        // Copy to a contiguous CPU tensor so serialisation cannot fail half-way.
        let t = var.as_tensor().to_device(&Device::Cpu)?.contiguous()?;
        tensors.push((name, t));
    }
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(map))
        .map_err(|e| corrupt(path, format!("serialisation failed: {e}")))?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a synced temporary file in the same directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| corrupt(path, "the path has no file name"))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{nanos}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: e,
        });
    }
    // Persist the rename itself (directories can be opened for fsync on Unix; best effort).
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads the whole file and parses its safetensors header.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(io_error(path))
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| corrupt(path, e))
}

fn metadata_of(path: &Path, bytes: &[u8]) -> Result<CheckpointMeta> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(path, e))?;
    let empty = HashMap::new();
    CheckpointMeta::from_string_map(header.metadata().as_ref().unwrap_or(&empty), path)
}

/// Whether a file key is a BatchNorm counter that strict loading ignores (see module docs).
pub fn is_ignored_on_load(key: &str) -> bool {
    key.ends_with("num_batches_tracked")
}

/// Loads every variable of `vars` from `path`, strictly, and returns the file's metadata.
///
/// Errors (all naming the file): [`Error::MissingKeys`] listing every variable absent from the
/// file (and every unexpected key too), [`Error::UnexpectedKeys`] listing every file tensor the
/// model lacks (`*num_batches_tracked` excepted), [`Error::ShapeMismatch`] with both shapes,
/// [`Error::Corrupt`] for a truncated or non-safetensors file. Checks happen before any
/// variable is modified. Tensors are converted to each variable's dtype and device.
pub fn load_varmap_strict(vars: &VarMap, path: &Path) -> Result<CheckpointMeta> {
    let bytes = read_file(path)?;
    let st = parse(path, &bytes)?;
    let meta = metadata_of(path, &bytes)?;
    let named = sorted_vars(vars)?;
    let model: BTreeSet<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    let file: BTreeSet<String> = st.names().into_iter().map(String::from).collect();
    let missing: Vec<String> = model
        .iter()
        .filter(|k| !file.contains(**k))
        .map(|k| k.to_string())
        .collect();
    let unexpected: Vec<String> = file
        .iter()
        .filter(|k| !model.contains(k.as_str()) && !is_ignored_on_load(k))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(Error::MissingKeys {
            path: path.to_path_buf(),
            keys: missing,
            unexpected,
        });
    }
    if !unexpected.is_empty() {
        return Err(Error::UnexpectedKeys {
            path: path.to_path_buf(),
            keys: unexpected,
        });
    }
    let mut loaded = Vec::with_capacity(named.len());
    for (name, var) in &named {
        let view = st.tensor(name).map_err(|e| corrupt(path, e))?;
        if view.shape() != var.dims() {
            return Err(Error::ShapeMismatch {
                path: path.to_path_buf(),
                key: name.clone(),
                expected: var.dims().to_vec(),
                found: view.shape().to_vec(),
            });
        }
        let t = view_to_tensor(path, name, &view, var.device())?.to_dtype(var.dtype())?;
        loaded.push(t);
    }
    for ((_, var), t) in named.iter().zip(loaded) {
        var.set(&t)?;
    }
    Ok(meta)
}

fn view_to_tensor(
    path: &Path,
    name: &str,
    view: &safetensors::tensor::TensorView<'_>,
    device: &Device,
) -> Result<Tensor> {
    let dtype = DType::try_from(view.dtype())
        .map_err(|e| corrupt(path, format!("tensor `{name}`: {e}")))?;
    Ok(Tensor::from_raw_buffer(
        view.data(),
        dtype,
        view.shape(),
        device,
    )?)
}

/// Reads only the header of `path` and returns its metadata (cheap on large files).
pub fn read_meta(path: &Path) -> Result<CheckpointMeta> {
    let mut f = std::fs::File::open(path).map_err(io_error(path))?;
    let len = f.metadata().map_err(io_error(path))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .map_err(|_| corrupt(path, format!("file of {len} bytes has no header")))?;
    let n = u64::from_le_bytes(n);
    if n.saturating_add(8) > len || n > 100_000_000 {
        return Err(corrupt(
            path,
            format!("header of {n} bytes does not fit a file of {len} bytes"),
        ));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(io_error(path))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| corrupt(path, format!("header: {e}")))?;
    let map: HashMap<String, String> = match json.get("__metadata__") {
        None | Some(serde_json::Value::Null) => HashMap::new(),
        Some(m) => serde_json::from_value(m.clone())
            .map_err(|e| corrupt(path, format!("__metadata__: {e}")))?,
    };
    CheckpointMeta::from_string_map(&map, path)
}

/// Loads every tensor of `path` onto `device`, in the file's dtypes.
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = read_file(path)?;
    let st = parse(path, &bytes)?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let t = view_to_tensor(path, &name, &view, device)?;
            Ok((name, t))
        })
        .collect()
}
