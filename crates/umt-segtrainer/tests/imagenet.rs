//! ImageNet encoder weights (`--imagenet-weights`): a torchvision-named checkpoint written from
//! our own encoder at test size loads into both encoders (the depth stem summed over RGB),
//! strictly, and the tables gain their "ImageNet pre-train" rows.

use std::collections::HashMap;
use std::path::Path;

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use common::tiny;
use umt_esanet::{EsaNet, Modality};
use umt_segtrainer::{
    table3, Error, PretrainedEncoder, RunOptions, SegExperimentConfig, SegRunner,
};

fn tensors(vars: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = vars.data().lock().map_err(|_| anyhow::anyhow!("lock"))?;
    Ok(data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect())
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// An "ImageNet" checkpoint in torchvision naming: the RGB encoder of a model initialised
/// with seed 99 (prefix stripped, 3-channel stem) plus a classifier head, as torchvision
/// ships it.
fn write_checkpoint(cfg: &SegExperimentConfig, path: &Path) -> Result<HashMap<String, Tensor>> {
    let vars = VarMap::new();
    EsaNet::init(
        &cfg.model.clone().with_modality(Modality::Rgb),
        &vars,
        99,
        DType::F32,
        &Device::Cpu,
    )?;
    let mut file: HashMap<String, Tensor> = tensors(&vars)?
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("encoder.").map(|k| (k.to_string(), v)))
        .collect();
    file.insert(
        "fc.weight".into(),
        Tensor::zeros((1000, 4), DType::F32, &Device::Cpu)?,
    );
    file.insert(
        "fc.bias".into(),
        Tensor::zeros(1000, DType::F32, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&file, path)?;
    Ok(file)
}

/// Both encoders of an RGB-D model take the file's tensors, BatchNorm statistics included;
/// the depth stem is the RGB stem summed over its input channels; nothing else changes.
#[test]
fn imagenet_weights_load_into_both_encoders() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cfg = tiny();
    let path = tmp.path().join("imagenet.safetensors");
    let file = write_checkpoint(&cfg, &path)?;
    let weights = PretrainedEncoder::load(&path, &Device::Cpu)?;

    let vars = VarMap::new();
    EsaNet::init(&cfg.model, &vars, 5, DType::F32, &Device::Cpu)?;
    let before = tensors(&vars)?;
    let before: HashMap<String, Vec<f32>> = before
        .iter()
        .map(|(k, v)| Ok((k.clone(), values(v)?)))
        .collect::<Result<_>>()?;
    let n = weights.apply(&vars)?;
    let after = tensors(&vars)?;
    let encoder_vars = after
        .keys()
        .filter(|k| k.starts_with("encoder_rgb.") || k.starts_with("encoder_depth."))
        .count();
    assert_eq!(n, encoder_vars);
    assert!(n > 40, "{n} encoder variables");
    for (name, t) in &after {
        let got = values(t)?;
        if let Some(key) = name.strip_prefix("encoder_rgb.") {
            assert_eq!(got, values(&file[key])?, "{name}");
        } else if let Some(key) = name.strip_prefix("encoder_depth.") {
            let want = if key == "conv1.weight" {
                values(&file[key].sum_keepdim(1)?)?
            } else {
                values(&file[key])?
            };
            assert_eq!(got, want, "{name}");
        } else {
            assert_eq!(got, before[name], "{name} changed");
        }
    }
    assert!(after.keys().any(|k| k.ends_with("running_var")));

    // A depth-only model (Table 4's uni-depth network) takes the summed stem too.
    let depth_vars = VarMap::new();
    EsaNet::init(
        &cfg.model.clone().with_modality(Modality::Depth),
        &depth_vars,
        5,
        DType::F32,
        &Device::Cpu,
    )?;
    weights.apply(&depth_vars)?;
    let d = tensors(&depth_vars)?;
    assert_eq!(
        values(&d["encoder.conv1.weight"])?,
        values(&file["conv1.weight"].sum_keepdim(1)?)?
    );
    Ok(())
}

/// A missing key, a tensor of another shape and a tensor the encoder lacks are errors
/// naming the key, and leave the model untouched.
#[test]
fn bad_imagenet_checkpoints_name_the_key() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cfg = tiny();
    let path = tmp.path().join("imagenet.safetensors");
    let file = write_checkpoint(&cfg, &path)?;
    let check = |edit: &dyn Fn(&mut HashMap<String, Tensor>) -> Result<()>| -> Result<Error> {
        let mut bad = file.clone();
        edit(&mut bad)?;
        let p = tmp.path().join("bad.safetensors");
        candle_core::safetensors::save(&bad, &p)?;
        let vars = VarMap::new();
        EsaNet::init(&cfg.model, &vars, 5, DType::F32, &Device::Cpu)?;
        let before = values(&tensors(&vars)?["encoder_rgb.bn1.weight"])?;
        let err = PretrainedEncoder::load(&p, &Device::Cpu)?
            .apply(&vars)
            .err()
            .ok_or_else(|| anyhow::anyhow!("a bad checkpoint loaded"))?;
        assert_eq!(
            values(&tensors(&vars)?["encoder_rgb.bn1.weight"])?,
            before,
            "a failed load changed the model"
        );
        Ok(err)
    };
    let e = check(&|f| {
        f.remove("layer1.0.bn1.running_mean");
        Ok(())
    })?;
    assert!(
        matches!(&e, Error::MissingTensor { key, .. } if key == "layer1.0.bn1.running_mean"),
        "{e}"
    );
    let e = check(&|f| {
        f.insert(
            "bn1.weight".into(),
            Tensor::ones(7, DType::F32, &Device::Cpu)?,
        );
        Ok(())
    })?;
    assert!(
        matches!(&e, Error::TensorShape { key, found, .. } if key == "bn1.weight" && found == &[7]),
        "{e}"
    );
    let e = check(&|f| {
        f.insert(
            "layer5.0.conv1.weight".into(),
            Tensor::ones(1, DType::F32, &Device::Cpu)?,
        );
        Ok(())
    })?;
    assert!(
        matches!(&e, Error::UnexpectedTensor { key, .. } if key == "layer5.0.conv1.weight"),
        "{e}"
    );
    assert!(e.to_string().contains("layer5.0.conv1.weight"));
    Ok(())
}

/// With weights, Table 3 gains the "ImageNet pre-train" row from stages under
/// `seed-{s}/imagenet/`; the folder records the file and refuses other weights.
#[test]
fn tables_gain_imagenet_rows() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cfg = tiny();
    let path = tmp.path().join("imagenet.safetensors");
    write_checkpoint(&cfg, &path)?;
    let out = tmp.path().join("out");
    let mut opts = RunOptions::new(&out, Device::Cpu);
    opts.verbose = false;
    opts.imagenet_weights = Some(path.clone());
    let mut runner = SegRunner::new(cfg.clone(), opts.clone())?;
    let t = table3(&mut runner, &[0])?;
    assert_eq!(t.rows.len(), 2);
    assert_eq!(t.rows[1].setting, "ImageNet pre-train");
    assert_eq!(t.rows[1].paper, [48.48, 49.14]);
    for stage in ["esanet-rgbd", "esanet-rgb", "esanet-depth", "umt-rgbd"] {
        assert!(out
            .join("seed-0/imagenet")
            .join(stage)
            .join("result.json")
            .exists());
    }
    assert!(out.join("pretrained.json").exists());

    let other = tmp.path().join("other.safetensors");
    let file = write_checkpoint(&cfg, &other)?;
    // Same shapes, other values (a constant added to one tensor).
    let mut changed = file.clone();
    changed.insert("bn1.bias".into(), (file["bn1.bias"].clone() + 1.0)?);
    candle_core::safetensors::save(&changed, &other)?;
    opts.imagenet_weights = Some(other);
    assert!(matches!(
        SegRunner::new(cfg, opts),
        Err(Error::ConfigChanged { path }) if path.ends_with("pretrained.json")
    ));
    Ok(())
}
