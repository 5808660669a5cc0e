//! ImageNet weights in (paper Table 3, second row): a torchvision ResNet converted by
//! `data-prep/convert_torchvision.py` loads into umt-resnet with no renaming and gives
//! torchvision's outputs, and the depth encoder made from it by summing conv1 over the RGB
//! channels (ESANet, `umt_hub::imagenet::adapt_first_conv`) gives what torchvision gives for the
//! same summed model. Fixture: data-prep/golden/imagenet/ (make_fixture.py, random init, no
//! download).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use umt_resnet::{imagenet_normalization, load_resnet, load_resnet_from_checkpoint, ResNetConfig};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../data-prep/golden/imagenet")
        .join(name)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let d = (a - b).and_then(|d| d.abs()).and_then(|d| d.flatten_all());
    d.and_then(|d| d.max(0))
        .and_then(|m| m.to_scalar::<f32>())
        .expect("max |a - b|")
}

#[test]
fn converted_torchvision_checkpoint_loads_and_matches_torchvision() {
    let device = Device::Cpu;
    let check = candle_core::safetensors::load(fixture("resnet18_w4.check.safetensors"), &device)
        .expect("check tensors");
    let (model, _vars, meta) =
        load_resnet_from_checkpoint(&fixture("resnet18_w4.safetensors"), &device).expect("load");
    // The config came from the file's metadata, inferred by the converter.
    assert_eq!(
        meta.config,
        serde_json::to_value(
            ResNetConfig::resnet18(3)
                .with_width(4)
                .with_num_classes(Some(10))
        )
        .expect("json")
    );
    assert_eq!(meta.normalization, Some(imagenet_normalization()));
    let out = model.forward_t(&check["input"], false).expect("forward"); // (2, 3, 32, 32)
    assert!(max_abs_diff(&out.embedding, &check["embedding"]) < 1e-4);
    let logits = out.logits.expect("10-class head");
    assert!(max_abs_diff(&logits, &check["logits"]) < 1e-4);
}

#[test]
fn depth_encoder_sums_conv1_over_rgb_like_esanet() {
    let device = Device::Cpu;
    let check = candle_core::safetensors::load(fixture("resnet18_w4.check.safetensors"), &device)
        .expect("check tensors");
    let dir = tempfile::tempdir().expect("tempdir");
    let depth_path = dir.path().join("depth.safetensors");
    umt_hub::imagenet::adapt_first_conv(&fixture("resnet18_w4.safetensors"), &depth_path, 1, true)
        .expect("adapt");
    let depth_config = ResNetConfig::resnet18(1).with_width(4);
    let (depth, _vars, meta) =
        load_resnet(&depth_config, &depth_path, &device).expect("strict load");
    assert_eq!(
        meta.normalization, None,
        "RGB statistics do not apply to depth"
    );
    assert_eq!(
        meta.config,
        serde_json::to_value(&depth_config).expect("json")
    );
    let out = depth
        .forward_t(&check["depth_input"], false)
        .expect("forward"); // (2, 1, 32, 32)
    assert!(max_abs_diff(&out.embedding, &check["depth_embedding"]) < 1e-4);
    assert!(out.logits.is_none());

    // The point of the sum: depth d through the summed conv equals (d, d, d) through RGB.
    let (rgb, _, _) =
        load_resnet_from_checkpoint(&fixture("resnet18_w4.safetensors"), &device).expect("load");
    let d = &check["depth_input"];
    let grey = Tensor::cat(&[d, d, d], 1).expect("cat"); // (2, 3, 32, 32)
    let rgb_out = rgb.forward_t(&grey, false).expect("forward");
    assert!(max_abs_diff(&rgb_out.embedding, &out.embedding) < 1e-4);
}
