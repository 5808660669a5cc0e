//! `cargo xtask run-encoder`: runs a ResNet encoder (umt-resnet) in eval mode on the tensor
//! `input` `[B, C, H, W]` of a safetensors file and writes `embedding` `[B, D]` (and `logits`
//! `[B, K]` when the weights contain `fc`; K is read from `fc.weight`) to another one.
//!
//! The weights are loaded strictly (every missing or unexpected key is named); a torchvision
//! `state_dict` saved with `safetensors.torch.save_file` loads as is. Example, on the golden
//! fixture of `data-prep/golden/resnet/make_golden.py` (which can compare the result):
//!
//! ```text
//! cargo xtask run-encoder --arch resnet18 --width 4 \
//!     --weights data-prep/golden/resnet/resnet18_w4.weights.safetensors \
//!     --input data-prep/golden/resnet/resnet18_w4.input.safetensors \
//!     --output /tmp/resnet18_w4.out.safetensors
//! ```

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use candle_core::{DType, Tensor};
use umt_resnet::{load_resnet, ResNetConfig, StemKind};

/// Arguments of `cargo xtask run-encoder`.
#[derive(clap::Args)]
pub struct Args {
    /// Architecture preset (torchvision's resnet18/34 with BasicBlock, or ESANet's
    /// NonBottleneck1D variants).
    #[arg(long, value_enum)]
    arch: Arch,
    /// Input channels (3 for RGB, 1 for spectrograms and depth).
    #[arg(long, default_value_t = 3)]
    in_channels: usize,
    /// Base width: stage widths are W·[1, 2, 4, 8] (torchvision: 64).
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Stem: torchvision's 7×7/s2 conv + 3×3/s2 max pool, or the CPU preset's 3×3/s2 conv
    /// without max pool.
    #[arg(long, value_enum, default_value_t = Stem::Torchvision)]
    stem: Stem,
    /// Weights (safetensors, torchvision names): a path or `hf://OWNER/REPO[@REV]/F.safetensors`
    /// (fetched into the Hugging Face cache and verified; HF_* variables apply, docs/hub.md).
    #[arg(long, value_name = "REF")]
    weights: String,
    /// Input safetensors file holding tensor `input` [B, C, H, W] (any float dtype).
    #[arg(long)]
    input: PathBuf,
    /// Output safetensors file (written atomically: temporary file, then rename).
    #[arg(long)]
    output: PathBuf,
    /// Also write every stage's feature map: `stem` (before the max pool), `layer1`..`layer4`.
    #[arg(long)]
    stages: bool,
    /// Device: `cpu`, `cuda` or `cuda:N`; default the first GPU of a `cuda` build, else CPU.
    #[arg(long)]
    device: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Arch {
    /// BasicBlock, [2, 2, 2, 2].
    Resnet18,
    /// BasicBlock, [3, 4, 6, 3].
    Resnet34,
    /// NonBottleneck1D, [2, 2, 2, 2].
    Resnet18Nbt1d,
    /// NonBottleneck1D, [3, 4, 6, 3] (ESANet's default encoder).
    Resnet34Nbt1d,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Stem {
    /// 7×7/s2 conv, BN, ReLU, 3×3/s2 max pool.
    Torchvision,
    /// 3×3/s2 conv, BN, ReLU (no max pool).
    Small,
}

/// Runs the encoder (see the module docs).
pub fn run(args: Args) -> anyhow::Result<()> {
    let device = crate::device::parse(args.device.as_deref())?;
    let preset = match args.arch {
        Arch::Resnet18 => ResNetConfig::resnet18,
        Arch::Resnet34 => ResNetConfig::resnet34,
        Arch::Resnet18Nbt1d => ResNetConfig::resnet18_nbt1d,
        Arch::Resnet34Nbt1d => ResNetConfig::resnet34_nbt1d,
    };
    let stem = match args.stem {
        Stem::Torchvision => StemKind::Torchvision,
        Stem::Small => StemKind::Small,
    };
    let reference: umt_hub::TeacherRef = args
        .weights
        .parse()
        .with_context(|| format!("--weights {:?}", args.weights))?;
    let weights_path = umt_hub::resolve(&reference, &umt_hub::HubConfig::from_env())
        .with_context(|| format!("--weights {:?}", args.weights))?;
    let weights = umt_nn::checkpoint::load_tensors(&weights_path, &device)?;
    let num_classes = match weights.get("fc.weight") {
        Some(w) => {
            let (k, _) = w
                .dims2()
                .with_context(|| format!("{}: `fc.weight`", weights_path.display()))?;
            Some(k)
        }
        None => None,
    };
    drop(weights);
    let config = preset(args.in_channels)
        .with_width(args.width)
        .with_stem(stem)
        .with_num_classes(num_classes);
    let (model, _vars, _meta) = load_resnet(&config, &weights_path, &device)?;

    let mut inputs = umt_nn::checkpoint::load_tensors(&args.input, &device)?;
    let x = inputs
        .remove("input")
        .with_context(|| format!("{}: no tensor named `input`", args.input.display()))?
        .to_dtype(DType::F32)?;
    let out = model.forward_t(&x, false)?;

    let mut tensors: Vec<(&str, Tensor)> = vec![("embedding", out.embedding.clone())];
    if let Some(l) = &out.logits {
        tensors.push(("logits", l.clone()));
    }
    if args.stages {
        for (name, t) in ["stem", "layer1", "layer2", "layer3", "layer4"]
            .into_iter()
            .zip(out.stages())
        {
            tensors.push((name, t.clone()));
        }
    }
    let config_json = serde_json::to_string(&config)?;
    let metadata = HashMap::from([
        ("config".to_string(), config_json),
        ("weights".to_string(), args.weights.clone()),
    ]);
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (*n, t)), Some(metadata))?;
    crate::io::write_atomically(&args.output, |tmp| Ok(std::fs::write(tmp, &bytes)?))?;
    println!(
        "{}: embedding {:?}{}",
        args.output.display(),
        out.embedding.dims(),
        out.logits
            .map(|l| format!(", logits {:?}", l.dims()))
            .unwrap_or_default()
    );
    Ok(())
}
