//! Finite-difference gradient checks (f64) of both residual blocks in training mode (BatchNorm
//! batch statistics), with and without the downsample shortcut, with respect to the input and
//! to several weights, and of a whole tiny ResNet (stem, max pool, four stages, head) with
//! respect to its input. Weights and inputs are drawn from seeded streams
//! (`umt_nn::init`), so every run checks the same points: with candle's unseeded generator a
//! draw that put a pre-activation within ε of a ReLU kink failed about one run in ten.

use std::collections::HashMap;

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use umt_nn::gradcheck::{check_gradients, GradCheck};
use umt_resnet::{Block, BlockKind, ResNet, ResNetConfig, StemKind};

/// Central differences through ReLU kinks and BatchNorm: ε 1e-6 in f64, tolerance
/// 1e-6 + 1e-4·|g| (the defaults).
fn cfg() -> GradCheck {
    GradCheck::default()
}

/// Initial tensors of a model built by `build` under a fresh f64 VarMap (name → tensor).
fn initial_tensors<F>(build: F) -> anyhow::Result<HashMap<String, Tensor>>
where
    F: Fn(VarBuilder<'_>) -> anyhow::Result<()>,
{
    let vars = VarMap::new();
    build(umt_nn::init::seeded_var_builder(
        &vars,
        1,
        DType::F64,
        &Device::Cpu,
    ))?;
    let data = vars
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned lock"))?;
    let mut out = HashMap::new();
    for (k, v) in data.iter() {
        out.insert(k.clone(), v.as_tensor().copy()?);
    }
    Ok(out)
}

/// A standard-normal f64 tensor drawn from the seeded stream named `name`.
fn seeded_normal(shape: (usize, usize, usize, usize), name: &str) -> anyhow::Result<Tensor> {
    let shape = candle_core::Shape::from(shape);
    let init = candle_nn::Init::Randn {
        mean: 0.0,
        stdev: 1.0,
    };
    let values = umt_nn::init::sample_init(init, &shape, 1, name);
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Checks d/d(input) and d/d(each of `weights`) of one block in train mode.
fn check_block(
    kind: BlockKind,
    (c_in, c_out, stride): (usize, usize, usize),
    (h, w): (usize, usize),
    weights: &[&str],
) -> anyhow::Result<()> {
    let base = initial_tensors(|vb| {
        Block::new(kind, c_in, c_out, stride, vb)?;
        Ok(())
    })?;
    for name in weights {
        anyhow::ensure!(
            base.contains_key(*name),
            "no weight `{name}` in {:?}",
            base.keys()
        );
    }
    let x = seeded_normal((2, c_in, h, w), "x")?;
    let mut inputs = vec![x];
    for name in weights {
        inputs.push(base[*name].clone());
    }
    let f = |xs: &[Tensor]| -> candle_core::Result<Tensor> {
        let mut map = base.clone();
        for (name, t) in weights.iter().zip(&xs[1..]) {
            map.insert(name.to_string(), t.clone());
        }
        let vb = VarBuilder::from_tensors(map, DType::F64, &Device::Cpu);
        let block = Block::new(kind, c_in, c_out, stride, vb)?;
        block.forward_t(&xs[0], true)
    };
    let out = f(&inputs)?;
    assert_eq!(
        out.dims(),
        &[2, c_out, h.div_ceil(stride), w.div_ceil(stride)]
    );
    let report = check_gradients(f, &inputs, cfg())?;
    assert!(report.elements > 2 * c_in * h * w);
    Ok(())
}

#[test]
fn basic_block_with_downsample_gradients() -> anyhow::Result<()> {
    check_block(
        BlockKind::Basic,
        (2, 3, 2),
        (6, 6),
        &[
            "conv1.weight",
            "bn1.weight",
            "conv2.weight",
            "downsample.0.weight",
            "downsample.1.bias",
        ],
    )
}

#[test]
fn basic_block_identity_gradients() -> anyhow::Result<()> {
    check_block(
        BlockKind::Basic,
        (3, 3, 1),
        (5, 7),
        &["conv2.weight", "bn2.bias"],
    )
}

#[test]
fn non_bottleneck_1d_with_downsample_gradients() -> anyhow::Result<()> {
    check_block(
        BlockKind::NonBottleneck1D,
        (2, 4, 2),
        (7, 7),
        &[
            "conv3x1_1.weight",
            "conv1x3_1.bias",
            "bn1.weight",
            "conv3x1_2.weight",
            "conv1x3_2.weight",
            "downsample.0.weight",
        ],
    )
}

#[test]
fn non_bottleneck_1d_identity_gradients() -> anyhow::Result<()> {
    check_block(
        BlockKind::NonBottleneck1D,
        (3, 3, 1),
        (6, 5),
        &["conv3x1_1.bias", "conv1x3_2.weight", "bn2.weight"],
    )
}

/// The whole network (torchvision stem with the 3×3/s2/p1 max pool, four stages, fc) in train
/// mode, with respect to its input.
#[test]
fn tiny_resnet_input_gradient() -> anyhow::Result<()> {
    for (config, (h, w)) in [
        (
            ResNetConfig::resnet18(1)
                .with_width(2)
                .with_num_classes(Some(3)),
            (16, 16),
        ),
        (
            ResNetConfig::resnet18_nbt1d(2)
                .with_width(2)
                .with_stem(StemKind::Small),
            (8, 8),
        ),
    ] {
        let vars = VarMap::new();
        let model = ResNet::new(
            &config,
            umt_nn::init::seeded_var_builder(&vars, 1, DType::F64, &Device::Cpu),
        )?;
        let x = seeded_normal((2, config.in_channels, h, w), "x")?;
        let f = |xs: &[Tensor]| -> candle_core::Result<Tensor> {
            let out = model
                .forward_t(&xs[0], true)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            // Every output the trainer uses: embedding, logits, the stage maps.
            let mut parts = vec![out.embedding.flatten_all()?, out.stem.flatten_all()?];
            parts.push(out.layer2.flatten_all()?);
            if let Some(l) = out.logits {
                parts.push(l.flatten_all()?);
            }
            Tensor::cat(&parts, 0)
        };
        check_gradients(f, &[x], cfg())?;
    }
    Ok(())
}
