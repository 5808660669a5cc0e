//! Bad input gets a typed error naming the tensor, the keys or the file: wrong input rank or
//! channel count (image and video encoders), a checkpoint of another architecture or width,
//! a truncated safetensors file, a checkpoint without a umt-resnet config.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use umt_resnet::{
    load_resnet, load_resnet_from_checkpoint, save_resnet, Error, ResNet, ResNetConfig,
    VideoEncoder,
};

fn build(config: &ResNetConfig) -> anyhow::Result<(ResNet, VarMap)> {
    let vars = VarMap::new();
    let model = ResNet::new(
        config,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )?;
    Ok((model, vars))
}

/// The error of loading `path` into a model of `config` (an error itself when loading succeeds).
fn load_err(config: &ResNetConfig, path: &Path) -> anyhow::Result<Error> {
    match load_resnet(config, path, &Device::Cpu) {
        Ok(_) => anyhow::bail!("loading {} into {config:?} succeeded", path.display()),
        Err(e) => Ok(e),
    }
}

fn saved(config: &ResNetConfig, path: &Path) -> anyhow::Result<()> {
    let (_, vars) = build(config)?;
    save_resnet(&vars, config, None, path)?;
    Ok(())
}

#[test]
fn wrong_input_rank_or_channels() -> anyhow::Result<()> {
    let (model, _) = build(&ResNetConfig::resnet18(3).with_width(4))?;
    let dev = Device::Cpu;
    for dims in [vec![3, 32, 32], vec![2, 1, 32, 32], vec![1, 2, 3, 32, 32]] {
        let x = Tensor::zeros(dims.as_slice(), DType::F32, &dev)?;
        match model.forward_t(&x, false) {
            Err(e @ Error::InputShape { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("(B, 3, H, W)"), "{msg}");
                assert!(msg.contains(&format!("{dims:?}")), "{msg}");
            }
            other => panic!("{dims:?}: expected InputShape, got {other:?}"),
        }
    }
    let video = VideoEncoder::from_resnet(model);
    for dims in [vec![2, 3, 32, 32], vec![2, 4, 1, 32, 32]] {
        let x = Tensor::zeros(dims.as_slice(), DType::F32, &dev)?;
        match video.forward_t(&x, false) {
            Err(e @ Error::InputShape { .. }) => {
                assert!(e.to_string().contains("(B, T, 3, H, W)"), "{e}");
            }
            other => panic!("{dims:?}: expected InputShape, got {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn resnet34_weights_into_resnet18_names_the_unexpected_keys() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("r34.safetensors");
    saved(&ResNetConfig::resnet34(3).with_width(4), &path)?;
    match load_err(&ResNetConfig::resnet18(3).with_width(4), &path)? {
        Error::Nn(umt_nn::Error::UnexpectedKeys { path: p, keys }) => {
            assert_eq!(p, path);
            assert!(
                keys.iter().any(|k| k == "layer1.2.conv1.weight"),
                "{keys:?}"
            );
            assert!(
                keys.iter().any(|k| k == "layer3.5.bn2.running_var"),
                "{keys:?}"
            );
        }
        other => panic!("expected UnexpectedKeys, got {other:?}"),
    }
    // The other way round: resnet18 weights lack resnet34's extra blocks.
    let path18 = dir.path().join("r18.safetensors");
    saved(&ResNetConfig::resnet18(3).with_width(4), &path18)?;
    let err = load_err(&ResNetConfig::resnet34(3).with_width(4), &path18)?;
    assert!(
        matches!(&err, Error::Nn(umt_nn::Error::MissingKeys { .. })),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("layer2.3.conv2.weight") && msg.contains("r18.safetensors"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn other_width_or_block_names_the_tensor() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("w4.safetensors");
    saved(&ResNetConfig::resnet18(3).with_width(4), &path)?;
    match load_err(&ResNetConfig::resnet18(3).with_width(8), &path)? {
        Error::Nn(umt_nn::Error::ShapeMismatch {
            key,
            expected,
            found,
            ..
        }) => {
            assert!(key.ends_with("weight") || key.ends_with("bias") || key.contains("running"));
            assert_ne!(expected, found);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    // BasicBlock weights into NonBottleneck1D: every block key differs.
    let err = load_err(&ResNetConfig::resnet18_nbt1d(3).with_width(4), &path)?;
    let msg = err.to_string();
    assert!(msg.contains("layer1.0.conv3x1_1.weight"), "{msg}");
    assert!(msg.contains("layer1.0.conv1.weight"), "{msg}");
    Ok(())
}

#[test]
fn truncated_file_names_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cut.safetensors");
    saved(&ResNetConfig::resnet18(1).with_width(4), &path)?;
    let bytes = std::fs::read(&path)?;
    std::fs::write(&path, &bytes[..bytes.len() / 2])?;
    let config = ResNetConfig::resnet18(1).with_width(4);
    match load_err(&config, &path)? {
        e @ Error::Nn(umt_nn::Error::Corrupt { .. }) => {
            assert!(e.to_string().contains("cut.safetensors"), "{e}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let missing = dir.path().join("absent.safetensors");
    match load_err(&config, &missing)? {
        e @ Error::Nn(umt_nn::Error::Io { .. }) => {
            assert!(e.to_string().contains("absent.safetensors"), "{e}");
        }
        other => panic!("expected Io, got {other:?}"),
    }
    Ok(())
}

#[test]
fn checkpoint_roundtrip_and_foreign_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = ResNetConfig::resnet34_nbt1d(1)
        .with_width(4)
        .with_num_classes(Some(3));
    let (model, vars) = build(&config)?;
    let path = dir.path().join("ckpt.safetensors");
    save_resnet(
        &vars,
        &config,
        Some(umt_resnet::imagenet_normalization()),
        &path,
    )?;
    let (again, _, meta) = load_resnet_from_checkpoint(&path, &Device::Cpu)?;
    assert_eq!(again.config(), &config);
    assert_eq!(
        meta.normalization,
        Some(umt_resnet::imagenet_normalization())
    );
    let x = Tensor::randn(0f32, 1.0, (1, 1, 32, 32), &Device::Cpu)?;
    let a = model.forward_t(&x, false)?.embedding;
    let b = again.forward_t(&x, false)?.embedding;
    assert_eq!(a.to_vec2::<f32>()?, b.to_vec2::<f32>()?);

    // A torchvision-style file has no umt-resnet config in its metadata.
    let golden = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data-prep/golden/resnet/resnet18_w4.weights.safetensors");
    match load_resnet_from_checkpoint(&golden, &Device::Cpu) {
        Err(Error::Config {
            field: "architecture",
            problem,
        }) => {
            assert!(
                problem.contains("resnet18_w4.weights.safetensors"),
                "{problem}"
            );
        }
        Err(other) => panic!("expected a config error, got {other:?}"),
        Ok(_) => panic!("a torchvision state dict loaded without a config"),
    }
    Ok(())
}
