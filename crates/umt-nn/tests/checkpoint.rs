//! Strict safetensors checkpoints: round trip, atomic writes and every error case.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};
use umt_nn::checkpoint::{
    load_tensors, load_varmap_strict, read_meta, save_varmap, CheckpointMeta, Normalization,
};
use umt_nn::Error;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A small model: conv, BatchNorm with its buffers, linear head.
fn model(dtype: DType, init: Init) -> candle_core::Result<VarMap> {
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, dtype, &Device::Cpu);
    vb.get_with_hints((4, 3, 3, 3), "conv1.weight", init)?;
    vb.get_with_hints(4, "bn1.weight", init)?;
    vb.get_with_hints(4, "bn1.bias", init)?;
    vb.get_with_hints(4, "bn1.running_mean", init)?;
    vb.get_with_hints(4, "bn1.running_var", init)?;
    vb.get_with_hints((2, 4), "fc.weight", init)?;
    Ok(vars)
}

fn random() -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: 1.0,
    }
}

fn meta() -> CheckpointMeta {
    let mut m = CheckpointMeta::new("tiny", serde_json::json!({ "width": 4, "classes": 2 }));
    m.normalization = Some(Normalization {
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
    });
    m.extra = BTreeMap::from([("epoch".to_string(), "7".to_string())]);
    m
}

fn values(vars: &VarMap) -> Result<BTreeMap<String, Vec<f64>>, Box<dyn std::error::Error>> {
    let data = vars.data().lock().map_err(|_| "poisoned")?;
    let mut out = BTreeMap::new();
    for (k, v) in data.iter() {
        out.insert(
            k.clone(),
            v.as_tensor()
                .to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1()?,
        );
    }
    Ok(out)
}

#[test]
fn round_trip_with_metadata() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("m.safetensors");
    let src = model(DType::F32, random())?;
    save_varmap(&src, &path, &meta())?;

    let dst = model(DType::F32, Init::Const(0.0))?;
    let read = load_varmap_strict(&dst, &path)?;
    assert_eq!(values(&src)?, values(&dst)?);
    assert_eq!(read.architecture, "tiny");
    assert_eq!(read.config, meta().config);
    assert_eq!(read.normalization, meta().normalization);
    assert_eq!(read.extra.get("epoch").map(String::as_str), Some("7"));
    assert_eq!(
        read.extra.get("umt_nn_version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(read_meta(&path)?, read);

    // Tensors lie in the file in name order (all f32 here); tools see every tensor.
    let tensors = load_tensors(&path, &Device::Cpu)?;
    assert_eq!(tensors.len(), 6);
    let bytes = std::fs::read(&path)?;
    let n = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n])?;
    let mut by_offset: Vec<(u64, String)> = header
        .as_object()
        .ok_or("header is not an object")?
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .map(|(k, v)| (v["data_offsets"][0].as_u64().unwrap_or(u64::MAX), k.clone()))
        .collect();
    by_offset.sort();
    let names: Vec<&str> = by_offset.iter().map(|(_, k)| k.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);

    // Loading into f64 variables converts.
    let wide = model(DType::F64, Init::Const(0.0))?;
    load_varmap_strict(&wide, &path)?;
    let a = values(&src)?;
    for (k, v) in values(&wide)? {
        assert_eq!(v, a[&k], "{k}");
    }
    Ok(())
}

#[test]
fn save_replaces_an_existing_file_whole() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("m.safetensors");
    std::fs::write(&path, vec![7u8; 100_000])?; // a larger, unrelated file
    let src = model(DType::F32, random())?;
    save_varmap(&src, &path, &meta())?;
    let dst = model(DType::F32, Init::Const(0.0))?;
    load_varmap_strict(&dst, &path)?;
    assert_eq!(values(&src)?, values(&dst)?);
    // No temporary files are left behind.
    let entries: Vec<_> = std::fs::read_dir(dir.path())?.collect::<Result<_, _>>()?;
    assert_eq!(entries.len(), 1);
    Ok(())
}

#[test]
fn failed_save_leaves_nothing_and_keeps_the_old_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("no-such-dir").join("m.safetensors");
    let src = model(DType::F32, random())?;
    let err = save_varmap(&src, &missing, &meta())
        .err()
        .ok_or("saved into a missing dir")?;
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &missing),
        "{err}"
    );
    assert!(!missing.exists());

    // A reserved key in `extra` fails before anything is written: the old file survives.
    let path = dir.path().join("m.safetensors");
    save_varmap(&src, &path, &meta())?;
    let before = std::fs::read(&path)?;
    let mut bad = meta();
    bad.extra.insert("config".into(), "x".into());
    let err = save_varmap(&model(DType::F32, random())?, &path, &bad)
        .err()
        .ok_or("saved")?;
    assert!(
        matches!(&err, Error::Metadata { key, .. } if key == "config"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path)?, before);
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
    Ok(())
}

/// Saves `tensors` as a raw safetensors file (as another tool would).
fn write_raw(path: &Path, tensors: &[(&str, Tensor)]) -> TestResult {
    safetensors::serialize_to_file(tensors.iter().map(|(n, t)| (*n, t)), None, path)?;
    Ok(())
}

#[test]
fn missing_and_unexpected_keys_are_all_listed() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("m.safetensors");
    let z = |s: &[usize]| Tensor::zeros(s, DType::F32, &Device::Cpu);
    write_raw(
        &path,
        &[
            ("conv1.weight", z(&[4, 3, 3, 3])?),
            ("bn1.weight", z(&[4])?),
            ("bn1.running_mean", z(&[4])?),
            ("fc.w", z(&[2, 4])?),
            ("extra.a", z(&[1])?),
        ],
    )?;
    let vars = model(DType::F32, Init::Const(1.0))?;
    let err = load_varmap_strict(&vars, &path).err().ok_or("loaded")?;
    match &err {
        Error::MissingKeys {
            path: p,
            keys,
            unexpected,
        } => {
            assert_eq!(p, &path);
            assert_eq!(keys, &["bn1.bias", "bn1.running_var", "fc.weight"]);
            assert_eq!(unexpected, &["extra.a", "fc.w"]);
        }
        other => return Err(format!("wrong error: {other}").into()),
    }
    assert!(err.to_string().contains("m.safetensors") && err.to_string().contains("fc.weight"));
    // Nothing was modified by the failed load.
    assert!(values(&vars)?.values().all(|v| v.iter().all(|&x| x == 1.0)));

    // Only unexpected keys (num_batches_tracked is tolerated, other extras are not).
    let src = model(DType::F32, random())?;
    save_varmap(&src, &path, &meta())?;
    let mut all: Vec<(String, Tensor)> = load_tensors(&path, &Device::Cpu)?.into_iter().collect();
    all.push((
        "bn1.num_batches_tracked".into(),
        Tensor::new(&[100i64], &Device::Cpu)?.reshape(())?,
    ));
    let tolerated = dir.path().join("tv.safetensors");
    safetensors::serialize_to_file(all.iter().map(|(n, t)| (n.as_str(), t)), None, &tolerated)?;
    let dst = model(DType::F32, Init::Const(0.0))?;
    let read = load_varmap_strict(&dst, &tolerated)?;
    assert_eq!(read.architecture, ""); // a file without metadata
    assert_eq!(values(&dst)?, values(&src)?);

    all.push(("head.weight".into(), z(&[3])?));
    all.push(("aux.bias".into(), z(&[3])?));
    safetensors::serialize_to_file(all.iter().map(|(n, t)| (n.as_str(), t)), None, &tolerated)?;
    let err = load_varmap_strict(&dst, &tolerated).err().ok_or("loaded")?;
    assert!(
        matches!(&err, Error::UnexpectedKeys { keys, .. } if keys == &["aux.bias", "head.weight"]),
        "{err}"
    );
    Ok(())
}

#[test]
fn shape_mismatch_names_key_and_shapes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("m.safetensors");
    let src = model(DType::F32, random())?;
    save_varmap(&src, &path, &meta())?;
    let other = VarMap::new();
    let vb = VarBuilder::from_varmap(&other, DType::F32, &Device::Cpu);
    vb.get((4, 3, 3, 3), "conv1.weight")?;
    vb.get(4, "bn1.weight")?;
    vb.get(4, "bn1.bias")?;
    vb.get(4, "bn1.running_mean")?;
    vb.get(4, "bn1.running_var")?;
    vb.get((3, 4), "fc.weight")?;
    let err = load_varmap_strict(&other, &path).err().ok_or("loaded")?;
    match &err {
        Error::ShapeMismatch {
            key,
            expected,
            found,
            ..
        } => {
            assert_eq!(key, "fc.weight");
            assert_eq!(expected, &[3, 4]);
            assert_eq!(found, &[2, 4]);
        }
        other => return Err(format!("wrong error: {other}").into()),
    }
    Ok(())
}

#[test]
fn truncated_and_foreign_files_are_corrupt() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("m.safetensors");
    save_varmap(&model(DType::F32, random())?, &path, &meta())?;
    let bytes = std::fs::read(&path)?;
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10])?;
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, b"this is not a checkpoint at all")?;
    let tiny = dir.path().join("tiny.safetensors");
    std::fs::write(&tiny, b"abc")?;
    let vars = model(DType::F32, Init::Const(0.0))?;
    for p in [&truncated, &text, &tiny] {
        let err = load_varmap_strict(&vars, p).err().ok_or("loaded")?;
        assert!(
            matches!(&err, Error::Corrupt { path, .. } if path == p),
            "{err}"
        );
        let err = load_tensors(p, &Device::Cpu).err().ok_or("loaded")?;
        assert!(matches!(&err, Error::Corrupt { .. }), "{err}");
    }
    for p in [&text, &tiny] {
        let err = read_meta(p).err().ok_or("read")?;
        assert!(
            matches!(&err, Error::Corrupt { path, .. } if path == p),
            "{err}"
        );
    }
    let absent = dir.path().join("absent.safetensors");
    let err = load_varmap_strict(&vars, &absent).err().ok_or("loaded")?;
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &absent),
        "{err}"
    );
    Ok(())
}

#[test]
fn bad_metadata_is_an_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("m.safetensors");
    let t = Tensor::zeros(2, DType::F32, &Device::Cpu)?;
    let meta = std::collections::HashMap::from([("config".to_string(), "{not json".to_string())]);
    safetensors::serialize_to_file([("a", &t)], Some(meta), &path)?;
    let err = read_meta(&path).err().ok_or("read")?;
    assert!(
        matches!(&err, Error::Metadata { key, .. } if key == "config"),
        "{err}"
    );
    Ok(())
}
