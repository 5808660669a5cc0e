//! Behaviour of the whole model: the reference parameter counts, weight names, shapes of every
//! output, the one-way fusion, input errors, and a short training run.

use std::collections::HashMap;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use umt_esanet::{
    esanet_summary, loss, EncoderKind, Error, EsaNet, EsaNetConfig, Modality, UpsamplingMode,
};
use umt_resnet::BlockKind;

/// Builds a model with zero weights (no RNG, no VarMap): enough to count parameters.
fn zeros_model(config: &EsaNetConfig) -> Result<EsaNet> {
    Ok(EsaNet::new(
        config,
        VarBuilder::zeros(DType::F32, &Device::Cpu),
    )?)
}

/// The reference NYUv2 ESANet-R34-NBt1D (480×640, 40 classes): 46 955 840 parameters
/// (notes/esanet.md §6: 46.96 M; RGB encoder 14.79 M, depth 14.78 M, decoder 16.34 M with the
/// 36 k side heads, context module 0.79 M, skips 0.17 M, SE 0.09 M).
#[test]
fn paper_model_has_the_reference_parameter_count() -> Result<()> {
    let model = zeros_model(&EsaNetConfig::paper())?;
    let parts = model.num_parameters_by_part();
    let expected = [
        ("encoder_rgb", 14_787_136),
        ("encoder_depth", 14_780_864),
        ("fusion (se_layer0..4)", 90_240),
        ("skip_layer1..3", 173_824),
        ("context_module", 788_480),
        ("decoder (without side heads)", 16_299_336),
        ("decoder side heads", 35_960),
    ];
    assert_eq!(parts, expected.to_vec());
    assert_eq!(model.num_parameters(), 46_955_840);
    Ok(())
}

/// Other rows of the notes' size table (§6), all exact counts of the reference classes.
#[test]
fn variant_parameter_counts_match_the_reference_table() -> Result<()> {
    let paper = EsaNetConfig::paper();
    let r18 = |block| EsaNetConfig {
        encoder: EncoderKind::ResNet18,
        encoder_block: block,
        ..EsaNetConfig::paper()
    };
    let cases = [
        // uni-modal teacher R34-NBt1D: 32.1 M (depth: conv1 has 1 input channel)
        (paper.clone().with_modality(Modality::Rgb), 32_084_736),
        (paper.clone().with_modality(Modality::Depth), 32_078_464),
        // ESANet-R18-BasicBlock: 39.73 M; R18-NBt1D: 33.46 M
        (r18(BlockKind::Basic), 39_734_592),
        (r18(BlockKind::NonBottleneck1D), 33_458_496),
        // R18-BasicBlock, decoder [128]*3 with 1 NBt1D each: 23.98 M
        (
            EsaNetConfig {
                decoder_channels: [128, 128, 128],
                decoder_blocks: [1, 1, 1],
                ..r18(BlockKind::Basic)
            },
            23_975_232,
        ),
        // ppm-1-2-4-8 has the same count as ppm (1, 5)
        (
            EsaNetConfig {
                context_bins: vec![1, 2, 4, 8],
                ..paper.clone()
            },
            46_955_840,
        ),
    ];
    for (config, n) in cases {
        assert_eq!(zeros_model(&config)?.num_parameters(), n, "{config:?}");
    }
    // The input size does not change the count (192×256 and 96×128 rows of the table).
    assert_eq!(
        zeros_model(&paper.with_input_size(192, 256))?.num_parameters(),
        46_955_840
    );
    Ok(())
}

/// Replaces the (unseeded) initial values of every convolution weight by deterministic ones
/// with PyTorch's default scale, U(±1/√fan_in), and zeroes convolution biases, so the tests
/// that train or take finite differences are reproducible. BatchNorm parameters and the
/// learned upsampling kernels keep their (deterministic) initial values.
fn seed_weights(vars: &VarMap, seed: u64) -> Result<()> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    for (name, var) in umt_nn::optim::trainable_vars(vars)? {
        if name.contains("upsample") || name.contains("bn") || name.contains(".bn1.") {
            continue;
        }
        let dims = var.dims().to_vec();
        let values: Vec<f64> = if dims.len() == 4 {
            let bound = 1.0 / ((dims[1] * dims[2] * dims[3]) as f64).sqrt();
            (0..var.elem_count())
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * bound
                })
                .collect()
        } else if name.ends_with(".bias") {
            vec![0.0; var.elem_count()]
        } else {
            continue;
        };
        let t = Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// A model with fresh variables (f32, CPU) and its `VarMap`.
fn build(config: &EsaNetConfig) -> Result<(VarMap, EsaNet)> {
    let vars = VarMap::new();
    let model = EsaNet::new(
        config,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )?;
    Ok((vars, model))
}

fn tiny_config() -> EsaNetConfig {
    EsaNetConfig {
        encoder: EncoderKind::ResNet18,
        base_width: 8,
        num_classes: 3,
        height: 32,
        width: 64,
        decoder_channels: [16, 16, 16],
        decoder_blocks: [1, 1, 1],
        ..EsaNetConfig::paper()
    }
}

fn inputs(b: usize, h: usize, w: usize, seed: u64) -> Result<(Tensor, Tensor)> {
    let n = |c: usize, s: u64| -> Result<Tensor> {
        let v: Vec<f32> = (0..b * c * h * w)
            .map(|i| ((i as u64 * 2654435761 + s * 97) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        Ok(Tensor::from_vec(v, (b, c, h, w), &Device::Cpu)?)
    };
    Ok((n(3, seed)?, n(1, seed + 1)?))
}

/// Shapes of the logits, side outputs and features, train and eval, checked against the
/// analytic shapes of the summary; the summary's rows partition the parameters.
#[test]
fn output_shapes_and_summary_agree_with_a_forward_pass() -> Result<()> {
    let config = EsaNetConfig::cpu()
        .with_input_size(64, 96)
        .with_num_classes(7);
    let (vars, model) = build(&config)?;
    let (rgb, depth) = inputs(2, 64, 96, 1)?;
    let out = model.forward_rgbd(&rgb, &depth, true)?;
    assert_eq!(out.logits.dims(), &[2, 7, 64, 96]);
    let sides: Vec<_> = out.side_outputs.iter().map(|t| t.dims().to_vec()).collect();
    assert_eq!(
        sides,
        vec![vec![2, 7, 8, 12], vec![2, 7, 4, 6], vec![2, 7, 2, 3]]
    );
    let strides = [2, 4, 8, 16, 32];
    for (i, (r, d)) in out.rgb_features.iter().zip(&out.depth_features).enumerate() {
        let c = config.stage_channels()[i];
        let expected = [2, c, 64 / strides[i], 96 / strides[i]];
        assert_eq!(r.dims(), &expected);
        assert_eq!(d.dims(), &expected);
    }
    let eval = model.forward_rgbd(&rgb, &depth, false)?;
    assert!(eval.side_outputs.is_empty());
    assert_eq!(eval.logits.dims(), &[2, 7, 64, 96]);

    let summary = esanet_summary(&config)?;
    assert_eq!(summary.total_params, model.num_parameters());
    let trainable: usize = umt_nn::optim::trainable_vars(&vars)?
        .iter()
        .map(|(_, v)| v.elem_count())
        .sum();
    assert_eq!(summary.total_params, trainable);
    assert_eq!(
        summary.rows.iter().map(|r| r.params).sum::<usize>(),
        trainable
    );
    let row = |name: &str| {
        summary
            .rows
            .iter()
            .find(|r| r.module == name)
            .map(|r| r.output_shape.clone())
    };
    assert_eq!(row("encoder_depth.layer4"), Some(vec![1, 128, 2, 3]));
    assert_eq!(row("se_layer0"), Some(vec![1, 16, 32, 48]));
    assert_eq!(
        row("decoder.decoder_module_1.side_output (train only)"),
        Some(vec![1, 7, 2, 3])
    );
    assert_eq!(row("decoder.upsample2"), Some(vec![1, 7, 64, 96]));
    assert!(summary.to_string().contains("Total params"));
    Ok(())
}

/// Weight names are the reference's module paths.
#[test]
fn weight_names_follow_the_reference() -> Result<()> {
    let (vars, _) = build(&tiny_config())?;
    let names: Vec<String> = vars
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .keys()
        .cloned()
        .collect();
    for key in [
        "encoder_rgb.conv1.weight",
        "encoder_rgb.layer1.0.conv3x1_1.weight",
        "encoder_depth.layer2.0.downsample.0.weight",
        "se_layer0.se_rgb.fc.0.weight",
        "se_layer4.se_depth.fc.2.bias",
        "skip_layer1.0.conv.weight",
        "skip_layer3.0.bn.running_var",
        "context_module.features.1.1.conv.weight",
        "context_module.final_conv.bn.weight",
        "decoder.decoder_module_1.conv3x3.conv.weight",
        "decoder.decoder_module_2.decoder_blocks.0.conv1x3_2.bias",
        "decoder.decoder_module_3.side_output.weight",
        "decoder.decoder_module_3.upsample.conv.weight",
        "decoder.conv_out.bias",
        "decoder.upsample2.conv.weight",
    ] {
        assert!(names.iter().any(|n| n == key), "missing {key}");
    }
    // layer2 already has the decoder width (16): skip_layer2 is an empty `nn.Sequential`.
    assert!(!names.iter().any(|n| n.starts_with("skip_layer2")));
    // Uni-modal: one `encoder`, no fusion modules.
    let teacher = tiny_config().with_modality(Modality::Depth);
    let (vars, _) = build(&teacher)?;
    let names: Vec<String> = vars
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .keys()
        .cloned()
        .collect();
    assert!(names.iter().any(|n| n == "encoder.conv1.weight"));
    assert!(!names
        .iter()
        .any(|n| n.starts_with("se_layer") || n.starts_with("encoder_rgb")));
    Ok(())
}

/// Depth features never see RGB; the fused RGB-branch features do see depth.
#[test]
fn fusion_is_one_way_depth_into_rgb() -> Result<()> {
    let (_vars, model) = build(&tiny_config())?;
    let (rgb_a, depth_a) = inputs(1, 32, 64, 3)?;
    let (rgb_b, depth_b) = inputs(1, 32, 64, 11)?;
    let a = model.forward_rgbd(&rgb_a, &depth_a, false)?;
    let b = model.forward_rgbd(&rgb_b, &depth_a, false)?;
    let c = model.forward_rgbd(&rgb_a, &depth_b, false)?;
    let diff = |x: &Tensor, y: &Tensor| -> Result<f32> {
        Ok((x - y)?.abs()?.max_all()?.to_scalar::<f32>()?)
    };
    for i in 0..5 {
        assert_eq!(
            diff(&a.depth_features[i], &b.depth_features[i])?,
            0.0,
            "stage {i}"
        );
        assert!(
            diff(&a.rgb_features[i], &c.rgb_features[i])? > 0.0,
            "stage {i}"
        );
    }
    Ok(())
}

/// Uni-modal teachers take one input and expose only their own branch's features.
#[test]
fn unimodal_variants_run_on_one_input() -> Result<()> {
    let (rgb, depth) = inputs(2, 32, 64, 5)?;
    for (modality, se) in [
        (Modality::Rgb, false),
        (Modality::Depth, false),
        (Modality::Depth, true),
    ] {
        let config = EsaNetConfig {
            unimodal_se: se,
            ..tiny_config().with_modality(modality)
        };
        let (_vars, model) = build(&config)?;
        let out = match modality {
            Modality::Rgb => model.forward_t(Some(&rgb), None, true)?,
            _ => model.forward_t(None, Some(&depth), true)?,
        };
        assert_eq!(out.logits.dims(), &[2, 3, 32, 64]);
        assert_eq!(out.side_outputs.len(), 3);
        let (own, other) = match modality {
            Modality::Rgb => (&out.rgb_features, &out.depth_features),
            _ => (&out.depth_features, &out.rgb_features),
        };
        assert_eq!(own.len(), 5);
        assert!(other.is_empty());
        assert_eq!(own[1].dims(), &[2, 8, 8, 16]); // layer1 at 1/4
        let missing = match modality {
            Modality::Rgb => model.forward_t(None, Some(&depth), true),
            _ => model.forward_t(Some(&rgb), None, true),
        };
        assert!(matches!(missing, Err(Error::MissingInput { .. })));
    }
    Ok(())
}

/// Bad inputs are typed errors naming the input.
#[test]
fn bad_inputs_are_errors() -> Result<()> {
    let (_vars, model) = build(&tiny_config())?;
    let (rgb, depth) = inputs(1, 32, 64, 1)?;
    assert!(matches!(
        model.forward_t(Some(&rgb), None, false),
        Err(Error::MissingInput { input: "depth", .. })
    ));
    let (rgb48, depth48) = inputs(1, 48, 64, 1)?;
    assert!(matches!(
        model.forward_rgbd(&rgb48, &depth48, false),
        Err(Error::InputShape {
            what: "ESANet rgb input",
            ..
        })
    ));
    assert!(matches!(
        model.forward_rgbd(&rgb, &rgb, false),
        Err(Error::InputShape {
            what: "ESANet depth input",
            ..
        })
    ));
    let (_, depth64) = inputs(1, 64, 64, 1)?;
    assert!(matches!(
        model.forward_rgbd(&rgb, &depth64, false),
        Err(Error::InputShape {
            what: "ESANet depth input",
            ..
        })
    ));
    assert!(matches!(
        model.forward_rgbd(&rgb, &depth.unsqueeze(0)?, false),
        Err(Error::InputShape { .. })
    ));
    // A model config whose size is not a multiple of 32 is refused, naming the field.
    let bad = tiny_config().with_input_size(40, 64);
    assert!(matches!(
        EsaNet::new(&bad, VarBuilder::zeros(DType::F32, &Device::Cpu)),
        Err(Error::Config {
            field: "height",
            ..
        })
    ));
    Ok(())
}

/// A tiny ESANet trains: finite gradients for every parameter and a falling deep-supervision
/// loss over a few SGD steps on one fixed batch (every upsampling mode).
#[test]
fn tiny_model_trains_on_a_fixed_batch() -> Result<()> {
    for upsampling in [UpsamplingMode::Learned3x3ZeroPad, UpsamplingMode::Bilinear] {
        let config = EsaNetConfig {
            upsampling,
            ..tiny_config()
        };
        let (vars, model) = build(&config)?;
        seed_weights(&vars, 1)?;
        let (rgb, depth) = inputs(2, 32, 64, 7)?;
        // Labels: class from the sign of depth, void on a band.
        let d: Vec<f32> = depth.flatten_all()?.to_vec1()?;
        let labels: Vec<u32> = d
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if i % 64 < 4 {
                    0
                } else if v > 0.3 {
                    1
                } else if v > -0.3 {
                    2
                } else {
                    3
                }
            })
            .collect();
        let labels = Tensor::from_vec(labels, (2, 32, 64), &Device::Cpu)?;
        let weights = [1.0f32, 0.5, 2.0];
        let params: Vec<_> = umt_nn::optim::trainable_vars(&vars)?
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let mut sgd = candle_nn::SGD::new(params.clone(), 0.01)?;
        let mut losses = Vec::new();
        for _ in 0..6 {
            let out = model.forward_rgbd(&rgb, &depth, true)?;
            let l = loss::deep_supervision_loss(&out, &labels, Some(&weights))?;
            losses.push(l.to_scalar::<f32>()?);
            let grads = l.backward()?;
            for p in &params {
                if let Some(g) = grads.get(p) {
                    let s = g.abs()?.sum_all()?.to_scalar::<f32>()?;
                    assert!(s.is_finite(), "non-finite gradient");
                }
            }
            sgd.step(&grads)?;
        }
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        // Plain SGD on a 2-sample batch with BatchNorm oscillates after the first steps (and
        // which step is lowest moves with the last bits of the convolution kernels): the check
        // is that some step gets well below the initial loss.
        let best = losses[1..].iter().copied().fold(f32::INFINITY, f32::min);
        assert!(
            best < 0.9 * losses[0],
            "{upsampling:?}: loss did not fall: {losses:?}"
        );
    }
    Ok(())
}

/// Finite-difference check through the whole tiny model (train mode, f64, deep-supervision
/// loss): gradients of the depth stem convolution (reaching the loss through the depth
/// branch, every SE fusion, the skips, the PPM and the decoder), an SE bias, a PPM BatchNorm
/// weight and a side-output bias.
#[test]
fn whole_model_parameter_gradients() -> Result<()> {
    use umt_nn::gradcheck::{check_gradients, GradCheck};
    let config = EsaNetConfig {
        base_width: 4,
        decoder_channels: [8, 8, 8],
        ..tiny_config().with_input_size(32, 32)
    };
    let vars = VarMap::new();
    EsaNet::new(
        &config,
        VarBuilder::from_varmap(&vars, DType::F64, &Device::Cpu),
    )?;
    seed_weights(&vars, 2)?;
    let all: HashMap<String, Tensor> = vars
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect::<candle_core::Result<_>>()?;
    let checked = [
        "encoder_depth.conv1.weight",
        "se_layer1.se_depth.fc.0.bias",
        "context_module.final_conv.bn.weight",
        "decoder.decoder_module_1.side_output.bias",
    ];
    let (rgb, depth) = inputs(2, 32, 32, 9)?;
    let (rgb, depth) = (rgb.to_dtype(DType::F64)?, depth.to_dtype(DType::F64)?);
    let labels: Vec<u32> = (0..2 * 32 * 32).map(|i| (i % 7 % 4) as u32).collect();
    let labels = Tensor::from_vec(labels, (2, 32, 32), &Device::Cpu)?;
    let msg = |e: umt_esanet::Error| candle_core::Error::Msg(e.to_string());
    let report = check_gradients(
        |t| {
            let mut params = all.clone();
            for (name, value) in checked.iter().zip(t) {
                params.insert(name.to_string(), value.clone());
            }
            let vb = VarBuilder::from_tensors(params, DType::F64, &Device::Cpu);
            let model = EsaNet::new(&config, vb).map_err(msg)?;
            let out = model.forward_rgbd(&rgb, &depth, true).map_err(msg)?;
            loss::deep_supervision_loss(&out, &labels, Some(&[1.0, 2.0, 0.5])).map_err(msg)
        },
        &checked.map(|n| all[n].clone()),
        GradCheck::default(),
    )?;
    assert_eq!(report.elements, 4 * 49 + 1 + 8 + 3);
    Ok(())
}

/// `EsaNet::init` gives the decoder blocks PyTorch's default U(±1/√fan_in) (the reference's
/// init) and leaves the encoders and existing variables alone.
#[test]
fn init_uses_pytorch_default_for_decoder_blocks() -> Result<()> {
    let config = tiny_config();
    let vars = VarMap::new();
    let model = EsaNet::init(&config, &vars, 0, DType::F32, &Device::Cpu)?;
    assert_eq!(
        model.num_parameters(),
        EsaNet::new(&config, VarBuilder::zeros(DType::F32, &Device::Cpu))?.num_parameters()
    );
    let get = |name: &str| -> Result<Tensor> {
        let data = vars.data().lock().map_err(|_| anyhow::anyhow!("lock"))?;
        Ok(data
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("no {name}"))?
            .as_tensor()
            .clone())
    };
    let max_abs = |t: &Tensor| -> Result<f32> { Ok(t.abs()?.max_all()?.to_scalar::<f32>()?) };
    // decoder_module_1 width 16: conv3x1_1 fan_in = 16·3.
    let bound = 1.0 / (48f32).sqrt();
    let w = get("decoder.decoder_module_1.decoder_blocks.0.conv3x1_1.weight")?;
    assert!(max_abs(&w)? <= bound);
    assert!(
        max_abs(&get(
            "decoder.decoder_module_1.decoder_blocks.0.conv1x3_2.bias"
        )?)? <= bound
    );
    // Building again over the same VarMap keeps the values.
    EsaNet::init(&config, &vars, 0, DType::F32, &Device::Cpu)?;
    let again = get("decoder.decoder_module_1.decoder_blocks.0.conv3x1_1.weight")?;
    assert_eq!(max_abs(&(again - &w)?)?, 0.0);
    Ok(())
}

/// `EsaNet::init` is deterministic: the same seed gives identical weights (encoders and the
/// re-drawn decoder blocks), another seed different ones.
#[test]
fn init_is_deterministic_by_seed() -> Result<()> {
    let config = tiny_config();
    let weights = |seed: u64| -> Result<Vec<(String, Vec<f32>)>> {
        let vars = VarMap::new();
        EsaNet::init(&config, &vars, seed, DType::F32, &Device::Cpu)?;
        let data = vars.data().lock().map_err(|_| anyhow::anyhow!("lock"))?;
        let mut out = data
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().flatten_all()?.to_vec1::<f32>()?)))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    };
    let (a, b, c) = (weights(3)?, weights(3)?, weights(4)?);
    assert_eq!(a, b);
    let name = "decoder.decoder_module_1.decoder_blocks.0.conv3x1_1.weight";
    let pick = |w: &[(String, Vec<f32>)]| w.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert!(pick(&a).is_some());
    assert_ne!(pick(&a), pick(&c));
    let conv1 = |w: &[(String, Vec<f32>)]| {
        w.iter()
            .find(|(k, _)| k.ends_with("conv1.weight"))
            .map(|(_, v)| v.clone())
    };
    assert_ne!(conv1(&a), conv1(&c));
    Ok(())
}
