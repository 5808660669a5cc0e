//! torchinfo-style model summaries: one row per module (name, output shape for a batch of one,
//! trainable parameters), for ESANet and its variants and for the plain ResNet encoders.
//!
//! Output shapes are computed **analytically** from the configuration (every layer's stride
//! is known), so a summary of the 480×640 model is instant; a test checks them against a real
//! forward pass of a small model. Parameter counts come from the variables the model created
//! in its `VarMap` (BatchNorm running statistics excluded), grouped by module name.

use std::fmt;

use candle_core::{DType, Device, Var};
use candle_nn::{VarBuilder, VarMap};
use umt_resnet::{ResNet, ResNetConfig};

use crate::config::{ContextModuleKind, EsaNetConfig, FusionKind, Modality};
use crate::model::EsaNet;
use crate::Result;

/// One row of a summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    /// Module name (PyTorch path, or a group such as `encoder_rgb.layer1`).
    pub module: String,
    /// Output shape for a batch of one.
    pub output_shape: Vec<usize>,
    /// Trainable parameters of the module.
    pub params: usize,
}

/// A model summary: rows that partition the parameters, the total and a per-part breakdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSummary {
    /// Model name and configuration in one line.
    pub title: String,
    /// Input description, e.g. `rgb (1, 3, 480, 640), depth (1, 1, 480, 640)`.
    pub input: String,
    /// Rows in forward order; their parameters add up to `total_params`.
    pub rows: Vec<SummaryRow>,
    /// Parameter count per part (e.g. RGB encoder, decoder).
    pub parts: Vec<(String, usize)>,
    /// Total trainable parameters.
    pub total_params: usize,
    /// How the output shapes were obtained.
    pub shapes_note: String,
}

/// Trainable variables of `vars` as `(name, element count)`.
fn named_counts(vars: &VarMap) -> Result<Vec<(String, usize)>> {
    Ok(umt_nn::optim::trainable_vars(vars)?
        .into_iter()
        .map(|(n, v): (String, Var)| (n, v.elem_count()))
        .collect())
}

/// Parameters under any of `prefixes` (a name equal to the prefix or below it).
fn params_under(named: &[(String, usize)], prefixes: &[String]) -> usize {
    named
        .iter()
        .filter(|(n, _)| {
            prefixes
                .iter()
                .any(|p| n == p || n.starts_with(&format!("{p}.")))
        })
        .map(|(_, c)| c)
        .sum()
}

/// Builds rows from `(module name, parameter prefixes, output shape)`.
fn rows(
    named: &[(String, usize)],
    spec: Vec<(String, Vec<String>, Vec<usize>)>,
) -> Vec<SummaryRow> {
    spec.into_iter()
        .map(|(module, prefixes, output_shape)| SummaryRow {
            params: params_under(named, &prefixes),
            module,
            output_shape,
        })
        .collect()
}

/// The stem and four layers of a ResNet under `prefix` (`""` for a bare encoder), for an
/// `h × w` input: `(module, prefixes, shape)` specs.
fn encoder_spec(
    prefix: &str,
    config: &ResNetConfig,
    h: usize,
    w: usize,
) -> Vec<(String, Vec<String>, Vec<usize>)> {
    let p = |s: &str| {
        if prefix.is_empty() {
            s.to_string()
        } else {
            format!("{prefix}.{s}")
        }
    };
    let c = config.stage_channels();
    let mut spec = vec![
        (
            p("conv1+bn1 (stem)"),
            vec![p("conv1"), p("bn1")],
            vec![1, c[0], h / 2, w / 2],
        ),
        (p("maxpool"), vec![], vec![1, c[0], h / 4, w / 4]),
    ];
    for (s, &c_s) in c.iter().enumerate().skip(1) {
        let stride = 4 << (s - 1);
        spec.push((
            p(&format!("layer{s}")),
            vec![p(&format!("layer{s}"))],
            vec![1, c_s, h / stride, w / stride],
        ));
    }
    spec
}

/// Summary of a ResNet encoder (`fc` head when the config has one) for a `3 × h × w` input
/// (`in_channels` of the config).
pub fn resnet_summary(
    name: &str,
    config: &ResNetConfig,
    h: usize,
    w: usize,
) -> Result<ModelSummary> {
    let vars = VarMap::new();
    let model = ResNet::new(
        config,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )?;
    let named = named_counts(&vars)?;
    let mut spec = encoder_spec("", config, h, w);
    spec.push((
        "avgpool (embedding)".into(),
        vec![],
        vec![1, config.embedding_dim()],
    ));
    if let Some(k) = config.num_classes {
        spec.push(("fc".into(), vec!["fc".into()], vec![1, k]));
    }
    let total = model.num_parameters();
    Ok(ModelSummary {
        title: format!(
            "{name}: {:?} blocks {:?}, width {}, head {:?}",
            config.block, config.layers, config.base_width, config.num_classes
        ),
        input: format!("x (1, {}, {h}, {w})", config.in_channels),
        rows: rows(&named, spec),
        parts: vec![("encoder".into(), total)],
        total_params: total,
        shapes_note: "output shapes computed analytically from the configuration (no forward pass)"
            .into(),
    })
}

/// Summary of the ESANet described by `config` at its configured input size.
pub fn esanet_summary(config: &EsaNetConfig) -> Result<ModelSummary> {
    let vars = VarMap::new();
    let model = EsaNet::new(
        config,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )?;
    let named = named_counts(&vars)?;
    let (h, w) = (config.height, config.width);
    let chans = config.stage_channels();
    let dec = config.decoder_channels;
    let k = config.num_classes;
    let at = |c: usize, s: usize| vec![1, c, h / s, w / s];
    let mut spec = Vec::new();
    let encoders: Vec<(&str, ResNetConfig)> = match config.modality {
        Modality::RgbD => vec![
            ("encoder_rgb", config.encoder_config(3)),
            ("encoder_depth", config.encoder_config(1)),
        ],
        Modality::Rgb => vec![("encoder", config.encoder_config(3))],
        Modality::Depth => vec![("encoder", config.encoder_config(1))],
    };
    let fusion = match config.modality {
        Modality::RgbD => config.fusion == FusionKind::SeAdd,
        _ => config.unimodal_se,
    };
    // Interleave the encoders stage by stage, with the fusion module after each stage.
    let per_encoder: Vec<_> = encoders
        .iter()
        .map(|(p, c)| encoder_spec(p, c, h, w))
        .collect();
    for stage in 0..6 {
        for e in &per_encoder {
            spec.push(e[stage].clone());
        }
        let point = match stage {
            0 => Some(0),
            2..=5 => Some(stage - 1),
            _ => None,
        };
        if let (Some(i), true) = (point, fusion) {
            let stride = 2 << i;
            spec.push((
                format!("se_layer{i}"),
                vec![format!("se_layer{i}")],
                at(chans[i], stride),
            ));
        }
    }
    for (i, (c, s)) in [(dec[2], 4), (dec[1], 8), (dec[0], 16)]
        .into_iter()
        .enumerate()
    {
        let name = format!("skip_layer{}", i + 1);
        spec.push((name.clone(), vec![name], at(c, s)));
    }
    if config.context_module == ContextModuleKind::Ppm {
        spec.push((
            "context_module".into(),
            vec!["context_module".into()],
            at(dec[0], 32),
        ));
    }
    for (i, (c, s)) in [(dec[0], 32), (dec[1], 16), (dec[2], 8)]
        .into_iter()
        .enumerate()
    {
        let m = format!("decoder.decoder_module_{}", i + 1);
        spec.push((
            format!("{m}.conv3x3"),
            vec![format!("{m}.conv3x3")],
            at(c, s),
        ));
        spec.push((
            format!("{m}.decoder_blocks"),
            vec![format!("{m}.decoder_blocks")],
            at(c, s),
        ));
        spec.push((
            format!("{m}.side_output (train only)"),
            vec![format!("{m}.side_output")],
            at(k, s),
        ));
        spec.push((
            format!("{m}.upsample (+ skip)"),
            vec![format!("{m}.upsample")],
            at(c, s / 2),
        ));
    }
    spec.push((
        "decoder.conv_out".into(),
        vec!["decoder.conv_out".into()],
        at(k, 4),
    ));
    spec.push((
        "decoder.upsample1".into(),
        vec!["decoder.upsample1".into()],
        at(k, 2),
    ));
    spec.push((
        "decoder.upsample2".into(),
        vec!["decoder.upsample2".into()],
        at(k, 1),
    ));
    let input = match config.modality {
        Modality::RgbD => format!("rgb (1, 3, {h}, {w}), depth (1, 1, {h}, {w})"),
        Modality::Rgb => format!("rgb (1, 3, {h}, {w})"),
        Modality::Depth => format!("depth (1, 1, {h}, {w})"),
    };
    Ok(ModelSummary {
        title: format!(
            "{}: {:?} {:?} width {}, decoder {:?}×{:?}, {} classes, {:?} fusion, {:?} upsampling",
            config.modality.model_name(),
            config.encoder,
            config.encoder_block,
            config.base_width,
            config.decoder_channels,
            config.decoder_blocks,
            k,
            config.fusion,
            config.upsampling
        ),
        input,
        rows: rows(&named, spec),
        parts: model
            .num_parameters_by_part()
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect(),
        total_params: model.num_parameters(),
        shapes_note: "output shapes computed analytically from the configuration (no forward pass)"
            .into(),
    })
}

/// `12345678` → `12,345,678`.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

impl fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .rows
            .iter()
            .map(|r| r.module.len())
            .max()
            .unwrap_or(0)
            .max(24);
        let rule = "=".repeat(width + 40);
        writeln!(f, "{}", self.title)?;
        writeln!(f, "input: {}", self.input)?;
        writeln!(f, "{rule}")?;
        writeln!(
            f,
            "{:<width$}  {:<22} {:>14}",
            "Module", "Output shape", "Param #"
        )?;
        writeln!(f, "{rule}")?;
        for r in &self.rows {
            let shape = format!("{:?}", r.output_shape);
            writeln!(
                f,
                "{:<width$}  {:<22} {:>14}",
                r.module,
                shape,
                thousands(r.params)
            )?;
        }
        writeln!(f, "{rule}")?;
        for (part, n) in &self.parts {
            writeln!(f, "{:<width$}  {:<22} {:>14}", part, "", thousands(*n))?;
        }
        writeln!(f, "{rule}")?;
        writeln!(
            f,
            "Total params: {} ({:.2} M)",
            thousands(self.total_params),
            self.total_params as f64 / 1e6
        )?;
        writeln!(f, "Shapes: {}", self.shapes_note)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(46_955_840), "46,955,840");
    }

    /// torchvision's ResNet18/34 with the ImageNet head: 11 689 512 and 21 797 672.
    #[test]
    fn resnet_summaries_match_torchvision() -> Result<()> {
        for (cfg, n) in [
            (ResNetConfig::resnet18(3), 11_689_512),
            (ResNetConfig::resnet34(3), 21_797_672),
        ] {
            let s = resnet_summary("resnet", &cfg.with_num_classes(Some(1000)), 224, 224)?;
            assert_eq!(s.total_params, n);
            assert_eq!(s.rows.iter().map(|r| r.params).sum::<usize>(), n);
            assert_eq!(s.rows[5].output_shape, vec![1, 512, 7, 7]); // layer4
        }
        Ok(())
    }
}
