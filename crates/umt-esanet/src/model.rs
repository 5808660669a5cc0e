//! ESANet: Seichter et al., "Efficient RGB-D Semantic Segmentation for Indoor Scene Analysis"
//! (ICRA 2021), §III and Fig. 2, as the reference implementation builds it
//! (github.com/TUI-NICR/ESANet, `src/models/model.py` class `ESANet` and
//! `model_one_modality.py` class `ESANetOneModality`), with the same module names so a
//! converted PyTorch `state_dict` loads without renaming:
//!
//! - `encoder_rgb`, `encoder_depth` (RGB-D) or `encoder` (uni-modal): ResNet encoders
//!   (`umt_resnet`, torchvision/ESANet names `conv1`, `bn1`, `layer{1..4}.{i}.…`);
//! - `se_layer{0..4}`: SE-add fusion of depth into RGB after the stem and after each layer
//!   (`se_rgb.fc.{0,2}`, `se_depth.fc.{0,2}`; uni-modal with `unimodal_se`: `fc.{0,2}`);
//! - `skip_layer{1,2,3}.0`: 1×1 `ConvBNAct` adapters of the fused 1/4, 1/8, 1/16 features;
//! - `context_module`: the pyramid pooling module;
//! - `decoder.decoder_module_{1,2,3}` (`conv3x3`, `decoder_blocks.{i}`, `side_output`,
//!   `upsample.conv`), `decoder.conv_out`, `decoder.upsample{1,2}.conv`.
//!
//! UMT (Du et al., §4.2) distils per-stage encoder features, so the forward pass also returns
//! the five depth-branch maps and the five fused RGB-branch maps.

use std::collections::HashSet;

use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use umt_nn::conv::Conv2d;
use umt_resnet::{NonBottleneck1D, ResNet};

use crate::config::{
    ContextModuleKind, EsaNetConfig, FusionKind, Modality, DEPTH_CHANNELS, OUTPUT_STRIDE,
    RGB_CHANNELS,
};
use crate::layers::{
    conv, conv_params, ConvBnAct, PyramidPoolingModule, SeFusionAdd, SqueezeAndExcitation, Upsample,
};
use crate::{Error, Result};

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

/// The reference `DecoderModule`: 3×3 `ConvBNAct` (`conv3x3`) → `n` NonBottleneck1D
/// (`decoder_blocks`) → (training) 1×1 side output with bias (`side_output`, taken before the
/// upsampling) → ×2 `upsample` → `+ skip`.
#[derive(Debug, Clone)]
pub struct DecoderModule {
    conv3x3: ConvBnAct,
    decoder_blocks: Vec<NonBottleneck1D>,
    side_output: Conv2d,
    upsample: Upsample,
}

impl DecoderModule {
    fn new(
        c_in: usize,
        c_dec: usize,
        blocks: usize,
        config: &EsaNetConfig,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        let vb_blocks = vb.pp("decoder_blocks");
        Ok(Self {
            conv3x3: ConvBnAct::new(c_in, c_dec, 3, vb.pp("conv3x3"))?,
            decoder_blocks: (0..blocks)
                .map(|i| NonBottleneck1D::new(c_dec, c_dec, 1, vb_blocks.pp(i)))
                .collect::<candle_core::Result<_>>()?,
            side_output: conv(c_dec, config.num_classes, 1, true, vb.pp("side_output"))?,
            upsample: Upsample::new(config.upsampling, c_dec, vb.pp("upsample"))?,
        })
    }

    /// Parameters without the side output.
    fn num_parameters_main(&self) -> usize {
        self.conv3x3.num_parameters()
            + self
                .decoder_blocks
                .iter()
                .map(NonBottleneck1D::num_parameters)
                .sum::<usize>()
            + self.upsample.num_parameters()
    }

    /// `x (B, C_in, h, w)`, `skip (B, C_dec, 2h, 2w)` → `(B, C_dec, 2h, 2w)` and, in training,
    /// the side logits `(B, K, h, w)`.
    fn forward_t(
        &self,
        x: &Tensor,
        skip: Option<&Tensor>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let mut y = self.conv3x3.forward_t(x, train)?; // (B, C_dec, h, w)
        for block in &self.decoder_blocks {
            y = block.forward_t(&y, train)?;
        }
        let side = if train {
            Some(self.side_output.forward(&y)?) // (B, K, h, w)
        } else {
            None
        };
        let y = self.upsample.forward(&y)?; // (B, C_dec, 2h, 2w)
        let y = match skip {
            Some(s) => (y + s)?,
            None => y,
        };
        Ok((y, side))
    }
}

/// The reference `Decoder`: three [`DecoderModule`]s (1/32 → 1/16 → 1/8 → 1/4), a 3×3
/// `conv_out` (bias) to the classes, and two learned ×2 upsamplings to the input size.
#[derive(Debug, Clone)]
pub struct Decoder {
    modules: [DecoderModule; 3],
    conv_out: Conv2d,
    upsample1: Upsample,
    upsample2: Upsample,
}

impl Decoder {
    fn new(config: &EsaNetConfig, vb: VarBuilder<'_>) -> Result<Self> {
        let ch = config.decoder_channels;
        let nb = config.decoder_blocks;
        let k = config.num_classes;
        let m1 = DecoderModule::new(
            config.decoder_in_channels(),
            ch[0],
            nb[0],
            config,
            vb.pp("decoder_module_1"),
        )?;
        let m2 = DecoderModule::new(ch[0], ch[1], nb[1], config, vb.pp("decoder_module_2"))?;
        let m3 = DecoderModule::new(ch[1], ch[2], nb[2], config, vb.pp("decoder_module_3"))?;
        Ok(Self {
            modules: [m1, m2, m3],
            conv_out: conv(ch[2], k, 3, true, vb.pp("conv_out"))?,
            upsample1: Upsample::new(config.upsampling, k, vb.pp("upsample1"))?,
            upsample2: Upsample::new(config.upsampling, k, vb.pp("upsample2"))?,
        })
    }

    /// Parameters without the side outputs.
    fn num_parameters_main(&self) -> usize {
        self.modules
            .iter()
            .map(DecoderModule::num_parameters_main)
            .sum::<usize>()
            + conv_params(&self.conv_out)
            + self.upsample1.num_parameters()
            + self.upsample2.num_parameters()
    }

    /// Parameters of the three side-output heads.
    fn num_parameters_side(&self) -> usize {
        self.modules
            .iter()
            .map(|m| conv_params(&m.side_output))
            .sum()
    }

    /// `x (B, C, H/32, W/32)` and the skips `[1/16, 1/8, 1/4]` → logits `(B, K, H, W)` and,
    /// in training, the side logits `[(B, K, H/8, W/8), (B, K, H/16, W/16), (B, K, H/32, W/32)]`.
    fn forward_t(
        &self,
        x: &Tensor,
        skips: [Option<&Tensor>; 3],
        train: bool,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut y = x.clone();
        let mut sides = Vec::new();
        for (module, skip) in self.modules.iter().zip(skips) {
            let (next, side) = module.forward_t(&y, skip, train)?; // ×2 each
            y = next;
            sides.extend(side);
        }
        let y = self.conv_out.forward(&y)?; // (B, K, H/4, W/4)
        let y = self.upsample1.forward(&y)?; // (B, K, H/2, W/2)
        let y = self.upsample2.forward(&y)?; // (B, K, H, W)
        sides.reverse(); // reference order: out_down_8, out_down_16, out_down_32
        Ok((y, sides))
    }
}

// ---------------------------------------------------------------------------------------------
// Encoders
// ---------------------------------------------------------------------------------------------

/// The encoder part of each model variant.
#[derive(Debug, Clone)]
enum Encoders {
    /// `ESANet`: two encoders and a fusion module (or plain addition) per fusion point.
    RgbD {
        rgb: Box<ResNet>,
        depth: Box<ResNet>,
        fusion: Option<Vec<SeFusionAdd>>,
    },
    /// `ESANetOneModality`: one encoder, optionally an SE module after each stage.
    One {
        encoder: Box<ResNet>,
        se: Option<Vec<SqueezeAndExcitation>>,
    },
}

/// Everything one forward pass returns.
#[derive(Debug, Clone)]
pub struct EsaNetOutput {
    /// Full-resolution logits `(B, K, H, W)` (channel `c` is label `c + 1`; void has no channel).
    pub logits: Tensor,
    /// Training only (empty in eval): the deep-supervision logits at 1/8, 1/16 and 1/32,
    /// `[(B, K, H/8, W/8), (B, K, H/16, W/16), (B, K, H/32, W/32)]`, in the reference's order.
    pub side_outputs: Vec<Tensor>,
    /// The five RGB-branch maps `[stem (1/2), layer1 (1/4), layer2 (1/8), layer3 (1/16),
    /// layer4 (1/32)]`, `(B, C_s, H/s, W/s)` with `C_s` = [`EsaNetConfig::stage_channels`].
    /// RGB-D: the fused SE-add outputs (what the RGB branch continues on; UMT's predictor
    /// inputs). RGB-only: the encoder's stage outputs before any SE. Depth-only: empty.
    pub rgb_features: Vec<Tensor>,
    /// The five depth-branch maps, same layout: RGB-D: the depth encoder's own (unfused) stage
    /// outputs; depth-only: the encoder's stage outputs before any SE; RGB-only: empty.
    pub depth_features: Vec<Tensor>,
}

/// Fused (or single-branch) features of the encoder: the decoder input and the three skips.
struct EncoderOut {
    layer4: Tensor,
    skips: [Tensor; 3], // fused 1/4, 1/8, 1/16 before the skip adapters
    rgb_features: Vec<Tensor>,
    depth_features: Vec<Tensor>,
}

impl EncoderOut {
    /// The same tensors cut from the graph (a frozen encoder).
    fn detach(self) -> Self {
        let detach_all = |v: Vec<Tensor>| v.iter().map(Tensor::detach).collect();
        Self {
            layer4: self.layer4.detach(),
            skips: self.skips.map(|t| t.detach()),
            rgb_features: detach_all(self.rgb_features),
            depth_features: detach_all(self.depth_features),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// `x`, or [`Error::MissingInput`] naming the model and the input.
fn required<'a>(
    x: Option<&'a Tensor>,
    model: &'static str,
    input: &'static str,
) -> Result<&'a Tensor> {
    x.ok_or(Error::MissingInput { model, input })
}

/// Mixed into the seed of [`EsaNet::init`]'s decoder re-initialisation so it does not reuse the
/// builder's stream for the same variable name.
const DECODER_REINIT_STREAM: u64 = 0x5EED_DEC0_DE12_0001;

/// ESANet (RGB-D) or its uni-modal variant, chosen by [`EsaNetConfig::modality`].
///
/// Build it under a `VarBuilder` (a `VarMap` to train). `forward_t(rgb, depth, train)`: in
/// training BatchNorm uses batch statistics and the side outputs are computed.
#[derive(Debug, Clone)]
pub struct EsaNet {
    config: EsaNetConfig,
    encoders: Encoders,
    skip_layers: [Option<ConvBnAct>; 3],
    context_module: Option<PyramidPoolingModule>,
    decoder: Decoder,
}

impl EsaNet {
    /// Builds the model under `vb` after validating `config`.
    pub fn new(config: &EsaNetConfig, vb: VarBuilder<'_>) -> Result<Self> {
        config.validate()?;
        let chans = config.stage_channels();
        let encoders = match config.modality {
            Modality::RgbD => {
                let rgb = ResNet::new(&config.encoder_config(RGB_CHANNELS), vb.pp("encoder_rgb"))?;
                let depth = ResNet::new(
                    &config.encoder_config(DEPTH_CHANNELS),
                    vb.pp("encoder_depth"),
                )?;
                let fusion = match config.fusion {
                    FusionKind::SeAdd => Some(
                        chans
                            .iter()
                            .enumerate()
                            .map(|(i, &c)| SeFusionAdd::new(c, vb.pp(format!("se_layer{i}"))))
                            .collect::<candle_core::Result<Vec<_>>>()?,
                    ),
                    FusionKind::Add => None,
                };
                Encoders::RgbD {
                    rgb: Box::new(rgb),
                    depth: Box::new(depth),
                    fusion,
                }
            }
            Modality::Rgb | Modality::Depth => {
                let c = if config.modality == Modality::Rgb {
                    RGB_CHANNELS
                } else {
                    DEPTH_CHANNELS
                };
                let encoder = ResNet::new(&config.encoder_config(c), vb.pp("encoder"))?;
                let se = if config.unimodal_se {
                    Some(
                        chans
                            .iter()
                            .enumerate()
                            .map(|(i, &c)| {
                                SqueezeAndExcitation::new(c, vb.pp(format!("se_layer{i}")))
                            })
                            .collect::<candle_core::Result<Vec<_>>>()?,
                    )
                } else {
                    None
                };
                Encoders::One {
                    encoder: Box::new(encoder),
                    se,
                }
            }
        };
        // skip_layer{1,2,3}: fused 1/4, 1/8, 1/16 → decoder widths [2], [1], [0].
        let dec = config.decoder_channels;
        let mut skip_layers: [Option<ConvBnAct>; 3] = Default::default();
        for (i, (c_enc, c_dec)) in [(chans[1], dec[2]), (chans[2], dec[1]), (chans[3], dec[0])]
            .into_iter()
            .enumerate()
        {
            if c_enc != c_dec {
                let vb = vb.pp(format!("skip_layer{}.0", i + 1));
                skip_layers[i] = Some(ConvBnAct::new(c_enc, c_dec, 1, vb)?);
            }
        }
        let context_module = match config.context_module {
            ContextModuleKind::Ppm => Some(PyramidPoolingModule::new(
                chans[4],
                dec[0],
                &config.context_bins,
                config.upsampling,
                vb.pp("context_module"),
            )?),
            ContextModuleKind::None => None,
        };
        let decoder = Decoder::new(config, vb.pp("decoder"))?;
        Ok(Self {
            config: config.clone(),
            encoders,
            skip_layers,
            context_module,
            decoder,
        })
    }

    /// Builds a fresh model in `vars` (`dtype`, `device`) with the reference's
    /// initialisation: [`EsaNet::new`] initialises the NonBottleneck1D blocks of the decoder
    /// as `umt_resnet` does for encoders (Kaiming-normal, fan-out), whereas the reference leaves
    /// the decoder at PyTorch's default (`--he_init` off for NYUv2); this re-draws the weights
    /// and biases of those blocks' convolutions from U(±1/√fan_in) (PyTorch's default). Only
    /// variables created by this call are touched, so values already in `vars` are kept.
    ///
    /// Deterministic: every fresh variable is drawn from the stream of `(seed, name)`
    /// ([`umt_nn::init::seeded_var_builder`]), so the same `seed` gives the same weights.
    pub fn init(
        config: &EsaNetConfig,
        vars: &VarMap,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let lock_err = || candle_core::Error::Msg("the VarMap's lock is poisoned".into());
        let before: HashSet<String> = vars
            .data()
            .lock()
            .map_err(|_| lock_err())?
            .keys()
            .cloned()
            .collect();
        let model = Self::new(
            config,
            umt_nn::init::seeded_var_builder(vars, seed, dtype, device),
        )?;
        let data = vars.data().lock().map_err(|_| lock_err())?;
        for (name, var) in data.iter() {
            let is_block_conv = name.starts_with("decoder.")
                && name.contains(".decoder_blocks.")
                && name.contains(".conv");
            if before.contains(name) || !is_block_conv {
                continue;
            }
            // fan_in from the weight of the same convolution: (C_out, C_in, kH, kW).
            let weight_name = format!(
                "{}.weight",
                name.trim_end_matches(".bias").trim_end_matches(".weight")
            );
            let Some(weight) = data.get(&weight_name) else {
                continue;
            };
            let (_, c_in, kh, kw) = weight.dims4()?;
            let bound = 1.0 / ((c_in * kh * kw) as f64).sqrt();
            // A stream of its own (seed, name), distinct from the builder's draw.
            let values = umt_nn::init::sample_init(
                candle_nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
                var.shape(),
                seed ^ DECODER_REINIT_STREAM,
                name,
            );
            let fresh =
                Tensor::from_vec(values, var.shape(), var.device())?.to_dtype(var.dtype())?;
            var.set(&fresh)?;
        }
        drop(data);
        Ok(model)
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &EsaNetConfig {
        &self.config
    }

    /// Trainable parameters per part, in forward order: the encoder(s), the fusion (or
    /// uni-modal SE) modules, the skip adapters, the context module, the decoder without its
    /// side heads, and the side heads. Parts without parameters are listed with 0.
    pub fn num_parameters_by_part(&self) -> Vec<(&'static str, usize)> {
        let mut parts = Vec::new();
        match &self.encoders {
            Encoders::RgbD { rgb, depth, fusion } => {
                parts.push(("encoder_rgb", rgb.num_parameters()));
                parts.push(("encoder_depth", depth.num_parameters()));
                let se = fusion
                    .iter()
                    .flatten()
                    .map(SeFusionAdd::num_parameters)
                    .sum();
                parts.push(("fusion (se_layer0..4)", se));
            }
            Encoders::One { encoder, se } => {
                parts.push(("encoder", encoder.num_parameters()));
                let se = se
                    .iter()
                    .flatten()
                    .map(SqueezeAndExcitation::num_parameters)
                    .sum();
                parts.push(("encoder SE (se_layer0..4)", se));
            }
        }
        let skips = self
            .skip_layers
            .iter()
            .flatten()
            .map(ConvBnAct::num_parameters)
            .sum();
        parts.push(("skip_layer1..3", skips));
        parts.push((
            "context_module",
            self.context_module
                .as_ref()
                .map_or(0, PyramidPoolingModule::num_parameters),
        ));
        parts.push((
            "decoder (without side heads)",
            self.decoder.num_parameters_main(),
        ));
        parts.push(("decoder side heads", self.decoder.num_parameters_side()));
        parts
    }

    /// Total number of trainable parameters (BatchNorm running statistics excluded), what
    /// `sum(p.numel() for p in model.parameters())` gives for the reference.
    pub fn num_parameters(&self) -> usize {
        self.num_parameters_by_part().iter().map(|(_, n)| n).sum()
    }

    /// Checks one input: `(B, C, H, W)` with `H`, `W` positive multiples of 32.
    fn check_input(what: &'static str, x: &Tensor, c: usize) -> Result<(usize, usize, usize)> {
        let err = || Error::InputShape {
            what,
            expected: format!("(B, {c}, H, W) with H and W positive multiples of {OUTPUT_STRIDE}"),
            found: x.dims().to_vec(),
        };
        let (b, ch, h, w) = x.dims4().map_err(|_| err())?;
        if b == 0 || ch != c || h == 0 || w == 0 || h % OUTPUT_STRIDE != 0 || w % OUTPUT_STRIDE != 0
        {
            return Err(err());
        }
        Ok((b, h, w))
    }

    /// The full forward pass.
    ///
    /// - `rgb`: `(B, 3, H, W)` (normalised RGB), needed for `rgbd` and `rgb` models;
    /// - `depth`: `(B, 1, H, W)` (normalised depth), needed for `rgbd` and `depth` models;
    ///
    /// `H` and `W` must be multiples of 32 (any such size, not only the config's). An input the
    /// modality does not use is ignored. Returns [`EsaNetOutput`] (logits `(B, K, H, W)`, side
    /// outputs in training, per-stage encoder features).
    pub fn forward_t(
        &self,
        rgb: Option<&Tensor>,
        depth: Option<&Tensor>,
        train: bool,
    ) -> Result<EsaNetOutput> {
        self.forward_impl(rgb, depth, train, train, false)
    }

    /// [`EsaNet::forward_t`] with the encoder frozen, as a linear probe trains a new decoder
    /// on it (the paper's Table 4): the encoder part (the encoder(s), the fusion or uni-modal
    /// SE modules between its stages) runs with its BatchNorm in training mode only when
    /// `encoder_bn_train` (eval mode: running statistics used and left unchanged), and its
    /// outputs are detached, so no gradient reaches it. The skip adapters, context module
    /// and decoder run with `train`.
    pub fn forward_frozen_encoder_t(
        &self,
        rgb: Option<&Tensor>,
        depth: Option<&Tensor>,
        encoder_bn_train: bool,
        train: bool,
    ) -> Result<EsaNetOutput> {
        self.forward_impl(rgb, depth, encoder_bn_train, train, true)
    }

    /// The forward pass with the encoder's BatchNorm mode `enc_train` and the rest's
    /// `train`; `detach_encoder` cuts the gradient at the encoder's outputs.
    fn forward_impl(
        &self,
        rgb: Option<&Tensor>,
        depth: Option<&Tensor>,
        enc_train: bool,
        train: bool,
        detach_encoder: bool,
    ) -> Result<EsaNetOutput> {
        let name = self.config.modality.model_name();
        let need = |x, input| required(x, name, input);
        let enc = match &self.encoders {
            Encoders::RgbD {
                rgb: enc_rgb,
                depth: enc_depth,
                fusion,
            } => {
                let (rgb, depth) = (need(rgb, "rgb")?, need(depth, "depth")?);
                let a = Self::check_input("ESANet rgb input", rgb, RGB_CHANNELS)?;
                let b = Self::check_input("ESANet depth input", depth, DEPTH_CHANNELS)?;
                if a != b {
                    return Err(Error::InputShape {
                        what: "ESANet depth input",
                        expected: format!(
                            "(B, 1, H, W) = ({}, 1, {}, {}) like the rgb input",
                            a.0, a.1, a.2
                        ),
                        found: depth.dims().to_vec(),
                    });
                }
                Self::encode_rgbd(enc_rgb, enc_depth, fusion.as_deref(), rgb, depth, enc_train)?
            }
            Encoders::One { encoder, se } => {
                let (x, input, c) = match self.config.modality {
                    Modality::Depth => {
                        (need(depth, "depth")?, "ESANet depth input", DEPTH_CHANNELS)
                    }
                    _ => (need(rgb, "rgb")?, "ESANet rgb input", RGB_CHANNELS),
                };
                Self::check_input(input, x, c)?;
                let (layer4, skips, feats) =
                    Self::encode_one(encoder, se.as_deref(), x, enc_train)?;
                let (rgb_features, depth_features) = match self.config.modality {
                    Modality::Depth => (Vec::new(), feats),
                    _ => (feats, Vec::new()),
                };
                EncoderOut {
                    layer4,
                    skips,
                    rgb_features,
                    depth_features,
                }
            }
        };
        let enc = if detach_encoder { enc.detach() } else { enc };
        let mut adapted = Vec::with_capacity(3);
        for (skip, layer) in enc.skips.iter().zip(&self.skip_layers) {
            adapted.push(match layer {
                Some(l) => l.forward_t(skip, train)?, // (B, C_dec, h, w)
                None => skip.clone(),
            });
        }
        let x = match &self.context_module {
            Some(ppm) => ppm.forward_t(&enc.layer4, train)?, // (B, C_dec0, H/32, W/32)
            None => enc.layer4.clone(),
        };
        // Decoder modules add the 1/16, 1/8, 1/4 skips in that order.
        let (logits, side_outputs) = self.decoder.forward_t(
            &x,
            [Some(&adapted[2]), Some(&adapted[1]), Some(&adapted[0])],
            train,
        )?;
        Ok(EsaNetOutput {
            logits,
            side_outputs,
            rgb_features: enc.rgb_features,
            depth_features: enc.depth_features,
        })
    }

    /// [`EsaNet::forward_t`] for an RGB-D model: `rgb (B, 3, H, W)`, `depth (B, 1, H, W)`.
    pub fn forward_rgbd(&self, rgb: &Tensor, depth: &Tensor, train: bool) -> Result<EsaNetOutput> {
        self.forward_t(Some(rgb), Some(depth), train)
    }

    /// The RGB-D encoder: depth fused into RGB at the stem and after each layer.
    fn encode_rgbd(
        enc_rgb: &ResNet,
        enc_depth: &ResNet,
        fusion: Option<&[SeFusionAdd]>,
        rgb: &Tensor,
        depth: &Tensor,
        train: bool,
    ) -> Result<EncoderOut> {
        let fuse = |i: usize, r: &Tensor, d: &Tensor| -> Result<Tensor> {
            Ok(match fusion.and_then(|f| f.get(i)) {
                Some(f) => f.forward(r, d)?,
                None => (r + d)?,
            })
        };
        let r = enc_rgb.forward_stem(rgb, train)?; // (B, w, H/2, W/2)
        let mut d = enc_depth.forward_stem(depth, train)?; // (B, w, H/2, W/2)
        let mut fused = fuse(0, &r, &d)?;
        let mut rgb_features = vec![fused.clone()];
        let mut depth_features = vec![d.clone()];
        let mut r = enc_rgb.stem_pool(&fused)?; // (B, w, H/4, W/4)
        d = enc_depth.stem_pool(&d)?;
        for stage in 1..=4 {
            let r_out = enc_rgb.forward_layer(stage, &r, train)?; // (B, C_s, H/s, W/s)
            d = enc_depth.forward_layer(stage, &d, train)?;
            fused = fuse(stage, &r_out, &d)?;
            rgb_features.push(fused.clone());
            depth_features.push(d.clone());
            r = fused.clone();
        }
        Ok(EncoderOut {
            layer4: fused,
            skips: [
                rgb_features[1].clone(),
                rgb_features[2].clone(),
                rgb_features[3].clone(),
            ],
            rgb_features,
            depth_features,
        })
    }

    /// A uni-modal encoder; returns layer4 (after SE), the three skips (after SE) and the five
    /// stage outputs before SE.
    fn encode_one(
        encoder: &ResNet,
        se: Option<&[SqueezeAndExcitation]>,
        x: &Tensor,
        train: bool,
    ) -> Result<(Tensor, [Tensor; 3], Vec<Tensor>)> {
        let weigh = |i: usize, y: &Tensor| -> Result<Tensor> {
            Ok(match se.and_then(|s| s.get(i)) {
                Some(s) => s.forward(y)?,
                None => y.clone(),
            })
        };
        let stem = encoder.forward_stem(x, train)?; // (B, w, H/2, W/2)
        let mut feats = vec![stem.clone()];
        let mut y = encoder.stem_pool(&weigh(0, &stem)?)?; // (B, w, H/4, W/4)
        let mut weighted = Vec::with_capacity(4);
        for stage in 1..=4 {
            let out = encoder.forward_layer(stage, &y, train)?; // (B, C_s, H/s, W/s)
            feats.push(out.clone());
            y = weigh(stage, &out)?;
            weighted.push(y.clone());
        }
        Ok((
            y,
            [
                weighted[0].clone(),
                weighted[1].clone(),
                weighted[2].clone(),
            ],
            feats,
        ))
    }
}
