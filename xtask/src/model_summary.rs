//! `cargo xtask model-summary MODEL`: a torchinfo-like table of a model — every module's
//! output shape for a batch of one and its trainable parameters, the per-part breakdown and
//! the total. Shapes are computed analytically from the configuration (no forward pass), so
//! the 480×640 ESANet prints instantly on a CPU.
//!
//! ```text
//! cargo xtask model-summary esanet --preset paper        # 46,955,840 parameters
//! cargo xtask model-summary esanet-depth --preset cpu
//! cargo xtask model-summary resnet18 --classes 1000      # torchvision's 11,689,512
//! ```

use umt_esanet::{esanet_summary, resnet_summary, EsaNetConfig, Modality};
use umt_resnet::ResNetConfig;

/// Arguments of `cargo xtask model-summary`.
#[derive(clap::Args)]
pub struct Args {
    /// The model: a plain ResNet encoder (torchvision layout) or ESANet (RGB-D) and its
    /// uni-modal variants.
    #[arg(value_enum)]
    model: Model,
    /// ESANet preset: `paper` (R34-NBt1D, 480×640, NYUv2 defaults) or `cpu` (same topology,
    /// R18-NBt1D width 16, 96×128).
    #[arg(long, default_value = "paper")]
    preset: String,
    /// Input height (ESANet: a multiple of 32; default: the preset's, 224 for ResNets).
    #[arg(long)]
    height: Option<usize>,
    /// Input width (ESANet: a multiple of 32; default: the preset's, 224 for ResNets).
    #[arg(long)]
    width: Option<usize>,
    /// Number of classes (ESANet default: the preset's 40; ResNets: no `fc` head unless given,
    /// e.g. 1000 for torchvision's ImageNet model).
    #[arg(long)]
    classes: Option<usize>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Model {
    /// torchvision ResNet18 (BasicBlock, [2, 2, 2, 2]), 3 input channels.
    Resnet18,
    /// torchvision ResNet34 (BasicBlock, [3, 4, 6, 3]), 3 input channels.
    Resnet34,
    /// ESANet, RGB-D with SE-add fusion.
    Esanet,
    /// ESANet's uni-modal RGB variant (UMT's RGB teacher).
    EsanetRgb,
    /// ESANet's uni-modal depth variant (UMT's depth teacher).
    EsanetDepth,
}

/// Prints the summary.
pub fn run(args: Args) -> anyhow::Result<()> {
    let summary = match args.model {
        Model::Resnet18 | Model::Resnet34 => {
            let config = match args.model {
                Model::Resnet18 => ResNetConfig::resnet18(3),
                _ => ResNetConfig::resnet34(3),
            }
            .with_num_classes(args.classes);
            let name = match args.model {
                Model::Resnet18 => "resnet18",
                _ => "resnet34",
            };
            let (h, w) = (args.height.unwrap_or(224), args.width.unwrap_or(224));
            resnet_summary(name, &config, h, w)?
        }
        Model::Esanet | Model::EsanetRgb | Model::EsanetDepth => {
            let modality = match args.model {
                Model::EsanetRgb => Modality::Rgb,
                Model::EsanetDepth => Modality::Depth,
                _ => Modality::RgbD,
            };
            let mut config = EsaNetConfig::preset(&args.preset)?.with_modality(modality);
            config.height = args.height.unwrap_or(config.height);
            config.width = args.width.unwrap_or(config.width);
            config.num_classes = args.classes.unwrap_or(config.num_classes);
            esanet_summary(&config)?
        }
    };
    print!("{summary}");
    Ok(())
}
