//! Architecture checks on random weights: exact parameter counts against torchvision and
//! ESANet, torchvision's weight names, feature-map shapes of every preset and stem, config
//! serde and validation, BatchNorm running statistics in train vs eval mode.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use umt_resnet::{BlockKind, Error, ResNet, ResNetConfig, StemKind};

fn build(config: &ResNetConfig) -> anyhow::Result<(ResNet, VarMap)> {
    let vars = VarMap::new();
    let model = ResNet::new(
        config,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )?;
    Ok((model, vars))
}

fn var_names(vars: &VarMap) -> anyhow::Result<Vec<String>> {
    let data = vars
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned lock"))?;
    let mut names: Vec<String> = data.keys().cloned().collect();
    names.sort();
    Ok(names)
}

/// `sum(p.numel() for p in model.parameters())` of torchvision 0.29 / ESANet, printed by
/// `make_golden.py`'s models at width 64.
#[test]
fn parameter_counts_match_torchvision_and_esanet() -> anyhow::Result<()> {
    let cases = [
        (
            ResNetConfig::resnet18(3).with_num_classes(Some(1000)),
            11_689_512,
        ),
        (
            ResNetConfig::resnet34(3).with_num_classes(Some(1000)),
            21_797_672,
        ),
        (ResNetConfig::resnet34_nbt1d(3), 14_787_136),
        (ResNetConfig::resnet34_nbt1d(1), 14_780_864),
        (ResNetConfig::resnet18_nbt1d(3), 8_038_464),
    ];
    for (config, expected) in cases {
        let (model, vars) = build(&config)?;
        assert_eq!(model.num_parameters(), expected, "{config:?}");
        // The VarMap holds the same parameters plus two BN buffers per BN.
        let data = vars
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned lock"))?;
        let params: usize = data
            .iter()
            .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
            .map(|(_, v)| v.elem_count())
            .sum();
        assert_eq!(params, expected);
    }
    Ok(())
}

#[test]
fn weight_names_are_torchvision_names() -> anyhow::Result<()> {
    let (_, vars) = build(
        &ResNetConfig::resnet18(3)
            .with_width(4)
            .with_num_classes(Some(5)),
    )?;
    let names = var_names(&vars)?;
    for key in [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "layer1.0.conv1.weight",
        "layer1.0.bn1.weight",
        "layer1.1.conv2.weight",
        "layer1.1.bn2.running_var",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_mean",
        "layer4.1.bn2.bias",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.iter().any(|n| n == key), "missing {key}");
    }
    // No bias on torchvision's convolutions, no shortcut where width and stride are unchanged.
    assert!(!names.iter().any(|n| n.starts_with("conv1.bias")));
    assert!(!names.iter().any(|n| n.starts_with("layer1.0.downsample")));
    assert!(!names.iter().any(|n| n.starts_with("layer2.1.downsample")));
    // 20 convolutions + 20 BN (4 keys each) + fc.
    assert_eq!(names.len(), 20 + 20 * 4 + 2);

    let (_, vars) = build(&ResNetConfig::resnet34_nbt1d(1).with_width(4))?;
    let names = var_names(&vars)?;
    for key in [
        "layer3.5.conv3x1_1.weight",
        "layer3.5.conv3x1_1.bias",
        "layer3.5.conv1x3_1.weight",
        "layer3.5.bn1.running_var",
        "layer3.5.conv3x1_2.bias",
        "layer3.5.conv1x3_2.weight",
        "layer3.5.bn2.weight",
        "layer4.0.downsample.0.weight",
    ] {
        assert!(names.iter().any(|n| n == key), "missing {key}");
    }
    assert!(!names.iter().any(|n| n.starts_with("fc.")));
    Ok(())
}

#[test]
fn feature_shapes_of_every_preset() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    // (config, input (C, H, W), expected [stem, l1, l2, l3, l4] spatial sizes)
    let cases = [
        (
            ResNetConfig::resnet34(3),
            (3, 64, 96),
            [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)],
        ),
        (
            ResNetConfig::resnet18(1).with_width(8),
            (1, 64, 48),
            [(32, 24), (16, 12), (8, 6), (4, 3), (2, 2)],
        ),
        (
            ResNetConfig::resnet18(1)
                .with_width(8)
                .with_stem(StemKind::Small),
            (1, 32, 32),
            [(16, 16), (16, 16), (8, 8), (4, 4), (2, 2)],
        ),
        (
            ResNetConfig::resnet34_nbt1d(1).with_width(4),
            (1, 48, 64),
            [(24, 32), (12, 16), (6, 8), (3, 4), (2, 2)],
        ),
    ];
    for (config, (c, h, w), sizes) in cases {
        let (model, _) = build(&config)?;
        let x = Tensor::randn(0f32, 1.0, (2, c, h, w), &dev)?;
        let out = model.forward_t(&x, false)?;
        let channels = config.stage_channels();
        for (i, t) in out.stages().iter().enumerate() {
            assert_eq!(
                t.dims(),
                &[2, channels[i], sizes[i].0, sizes[i].1],
                "{config:?} stage {i}"
            );
        }
        assert_eq!(out.embedding.dims(), &[2, config.embedding_dim()]);
        assert!(out.logits.is_none());
        // The embedding is the spatial mean of layer4.
        let mean = out.layer4.mean((2, 3))?;
        let d = (mean - &out.embedding)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(d < 1e-6);
    }
    Ok(())
}

#[test]
fn stage_by_stage_api_equals_forward() -> anyhow::Result<()> {
    let config = ResNetConfig::resnet18(3)
        .with_width(4)
        .with_num_classes(Some(7));
    let (model, _) = build(&config)?;
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu)?;
    let out = model.forward_t(&x, false)?;
    let mut y = model.stem_pool(&model.forward_stem(&x, false)?)?;
    for stage in 1..=4 {
        y = model.forward_layer(stage, &y, false)?;
    }
    let logits = model
        .head(&model.embed(&y)?)?
        .ok_or_else(|| anyhow::anyhow!("no head"))?;
    let expected = out.logits.ok_or_else(|| anyhow::anyhow!("no logits"))?;
    let d = (logits - expected)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    assert_eq!(d, 0.0);
    assert!(matches!(
        model.forward_layer(5, &y, false),
        Err(Error::Config { field: "stage", .. })
    ));
    Ok(())
}

/// torchvision's init: conv weights N(0, 2/fan_out), BN weight 1 / bias 0, fc U(±1/√D).
#[test]
fn initialisation_follows_torchvision() -> anyhow::Result<()> {
    let (_, vars) = build(&ResNetConfig::resnet18(3).with_num_classes(Some(1000)))?;
    let data = vars
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned lock"))?;
    let get = |k: &str| -> anyhow::Result<Tensor> {
        Ok(data
            .get(k)
            .ok_or_else(|| anyhow::anyhow!("no {k}"))?
            .as_tensor()
            .flatten_all()?)
    };
    let w = get("layer3.0.conv1.weight")?; // (256, 128, 3, 3): fan_out = 256·9
    let std = w.sqr()?.mean_all()?.sqrt()?.to_scalar::<f32>()?;
    let expected = (2.0f32 / (256.0 * 9.0)).sqrt();
    assert!(
        (std / expected - 1.0).abs() < 0.02,
        "std {std} vs {expected}"
    );
    assert_eq!(get("layer3.0.bn1.weight")?.min(0)?.to_scalar::<f32>()?, 1.0);
    assert_eq!(
        get("layer3.0.bn1.bias")?
            .abs()?
            .max(0)?
            .to_scalar::<f32>()?,
        0.0
    );
    let fc = get("fc.weight")?.abs()?.max(0)?.to_scalar::<f32>()?;
    assert!(fc <= 1.0 / 512f32.sqrt() && fc > 0.9 / 512f32.sqrt());
    Ok(())
}

#[test]
fn batchnorm_running_stats_update_only_in_train_mode() -> anyhow::Result<()> {
    let (model, vars) = build(&ResNetConfig::resnet18(1).with_width(4))?;
    let running = || -> anyhow::Result<Vec<f32>> {
        let data = vars
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned lock"))?;
        let v = data
            .get("layer1.0.bn1.running_mean")
            .ok_or_else(|| anyhow::anyhow!("no running mean"))?;
        Ok(v.as_tensor().to_vec1::<f32>()?)
    };
    let x = (Tensor::randn(0f32, 1.0, (2, 1, 32, 32), &Device::Cpu)? + 3.0)?;
    let before = running()?;
    model.forward_t(&x, false)?;
    assert_eq!(running()?, before);
    model.forward_t(&x, true)?;
    assert_ne!(running()?, before);
    Ok(())
}

#[test]
fn config_serde_roundtrip_and_strictness() -> anyhow::Result<()> {
    let config = ResNetConfig::resnet34_nbt1d(1)
        .with_width(16)
        .with_stem(StemKind::Small)
        .with_num_classes(Some(40));
    let json = serde_json::to_string(&config)?;
    let back: ResNetConfig = serde_json::from_str(&json)?;
    assert_eq!(back, config);
    assert_eq!(back.block, BlockKind::NonBottleneck1D);
    // Defaults: torchvision stem, no head.
    let minimal: ResNetConfig = serde_json::from_str(
        r#"{"block":"basic","layers":[2,2,2,2],"in_channels":3,"base_width":64}"#,
    )?;
    assert_eq!(minimal, ResNetConfig::resnet18(3));
    let unknown = serde_json::from_str::<ResNetConfig>(
        r#"{"block":"basic","layers":[2,2,2,2],"in_channels":3,"base_width":64,"widht":8}"#,
    );
    let msg = unknown.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("widht"), "{msg}");
    Ok(())
}

#[test]
fn invalid_configs_are_rejected_by_field() {
    let cases = [
        (ResNetConfig::resnet18(0), "in_channels"),
        (ResNetConfig::resnet18(3).with_width(0), "base_width"),
        (
            ResNetConfig::resnet18(3).with_num_classes(Some(0)),
            "num_classes",
        ),
        (
            ResNetConfig {
                layers: [2, 0, 2, 2],
                ..ResNetConfig::resnet18(3)
            },
            "layers",
        ),
    ];
    for (config, field) in cases {
        let vars = VarMap::new();
        let r = ResNet::new(
            &config,
            VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
        );
        match r {
            Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected a config error, got {other:?}"),
        }
    }
}
