//! Equivalence with torchvision (eval mode) on the fixtures of
//! `data-prep/golden/resnet/make_golden.py`: torchvision's own `ResNet` class at base width 4
//! (BasicBlock [2, 2, 2, 2], 3 channels, 10 classes) and ESANet's NonBottleneck1D in the
//! ResNet34 layout (1 channel, no head). The state dicts (with `num_batches_tracked`) load
//! through the strict loader with no renaming; every stage must match to 1e-4 (relative to the
//! map's largest magnitude when that exceeds 1).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use umt_resnet::{load_resnet, ResNetConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data-prep/golden/resnet")
        .join(name)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    anyhow::ensure!(
        a.dims() == b.dims(),
        "shapes {:?} vs {:?}",
        a.dims(),
        b.dims()
    );
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn check(prefix: &str, config: &ResNetConfig) -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let (model, _vars, _meta) = load_resnet(
        config,
        &fixture(&format!("{prefix}.weights.safetensors")),
        &dev,
    )?;
    let input =
        umt_nn::checkpoint::load_tensors(&fixture(&format!("{prefix}.input.safetensors")), &dev)?;
    let expected: HashMap<String, Tensor> = umt_nn::checkpoint::load_tensors(
        &fixture(&format!("{prefix}.expected.safetensors")),
        &dev,
    )?;
    let x = input
        .get("input")
        .ok_or_else(|| anyhow::anyhow!("no `input`"))?;
    let out = model.forward_t(x, false)?;
    let mut got: Vec<(&str, &Tensor)> = vec![
        ("stem", &out.stem),
        ("layer1", &out.layer1),
        ("layer2", &out.layer2),
        ("layer3", &out.layer3),
        ("layer4", &out.layer4),
        ("embedding", &out.embedding),
    ];
    if let Some(l) = &out.logits {
        got.push(("logits", l));
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "{prefix}: outputs {:?}",
        expected.keys()
    );
    for (name, t) in got {
        let want = expected
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("fixture lacks `{name}`"))?;
        // 1e-4 relative to the map's scale (f32 rounding grows with the magnitude: the NBt1D
        // fixture's layer3/4 values reach ~60).
        let scale = want
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?
            .max(1.0);
        let d = max_abs_diff(t, want)?;
        assert!(
            d < 1e-4 * scale,
            "{prefix} {name}: max |diff| {d:e} (scale {scale})"
        );
    }
    Ok(())
}

#[test]
fn resnet18_width4_matches_torchvision() -> anyhow::Result<()> {
    check(
        "resnet18_w4",
        &ResNetConfig::resnet18(3)
            .with_width(4)
            .with_num_classes(Some(10)),
    )
}

#[test]
fn resnet34_nbt1d_width4_depth_matches_esanet() -> anyhow::Result<()> {
    check(
        "r34nbt1d_w4_c1",
        &ResNetConfig::resnet34_nbt1d(1).with_width(4),
    )
}
