//! Behaviour of the segmentation trainer on tiny runs (32×32 scenes, a handful of images,
//! one epoch).

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use common::tiny;
use umt_esanet::{loss, EsaNet, Modality};
use umt_nn::optim::{trainable_vars, Adam, AdamConfig, Optimizer, ParamGroup};
use umt_segtrainer::{
    table3, table4, Error, FrozenBn, Predictors, ProbeSource, RunOptions, SegExperimentConfig,
    SegRunner, UmtDistiller,
};

fn opts(dir: &std::path::Path) -> RunOptions {
    let mut o = RunOptions::new(dir, Device::Cpu);
    o.verbose = false;
    o
}

/// Both tables run end to end, write JSON with the documented schema, and a rerun reuses
/// every finished stage except the one whose result was deleted.
#[test]
fn tables_run_write_their_schema_and_resume() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut runner = SegRunner::new(tiny(), opts(dir.path()))?;
    let t3 = table3(&mut runner, &[0])?;
    t3.write(&runner)?;
    let t4 = table4(&mut runner, &[0])?;
    t4.write(&runner)?;
    assert_eq!(
        runner.stages_run,
        [
            "seed-0/esanet-rgbd",
            "seed-0/esanet-rgb",
            "seed-0/esanet-depth",
            "seed-0/umt-rgbd",
            "seed-0/probe-uni-depth",
            "seed-0/probe-rgbd-depth",
        ]
    );
    for stage in &runner.stages_run {
        assert!(dir.path().join(stage).join("model.safetensors").exists());
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("table3.json"))?)?;
    for key in [
        "table",
        "columns",
        "rows",
        "seeds",
        "stages",
        "config",
        "paper_direction_reproduced",
    ] {
        assert!(json.get(key).is_some(), "table3.json lacks `{key}`");
    }
    let row = &json["rows"][0];
    for key in ["setting", "left", "right", "delta", "paper"] {
        assert!(row.get(key).is_some(), "row lacks `{key}`");
    }
    let (l, r) = (row["left"]["mean"].as_f64(), row["right"]["mean"].as_f64());
    assert!(l
        .zip(r)
        .is_some_and(|(l, r)| (0.0..=100.0).contains(&l) && (0.0..=100.0).contains(&r)));
    assert!(std::fs::read_to_string(dir.path().join("table4.md"))?.contains("| Drop |"));
    assert_eq!(json["stages"].as_array().map(Vec::len), Some(2));

    // Delete one result: only that stage runs again.
    std::fs::remove_file(dir.path().join("seed-0/probe-uni-depth/result.json"))?;
    let mut again = SegRunner::new(tiny(), opts(dir.path()))?;
    let t4b = table4(&mut again, &[0])?;
    assert_eq!(again.stages_run, ["seed-0/probe-uni-depth"]);
    // Its source stage (the uni-depth network) is reused, not retrained.
    assert_eq!(
        again.stages_reused,
        ["seed-0/esanet-depth", "seed-0/probe-rgbd-depth"]
    );
    // Deterministic: the recomputed stage gives the same mIoU.
    assert_eq!(t4b.rows[0].left, t4.rows[0].left);

    // Another config in the same folder is refused.
    let mut other = tiny();
    other.umt.lambda_rgb = 2.0;
    assert!(matches!(
        SegRunner::new(other, opts(dir.path())),
        Err(Error::ConfigChanged { .. })
    ));
    Ok(())
}

fn weights(vars: &VarMap) -> Result<Vec<(String, Vec<f32>)>> {
    let data = vars.data().lock().map_err(|_| anyhow::anyhow!("lock"))?;
    let mut out = data
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().flatten_all()?.to_vec1::<f32>()?)))
        .collect::<Result<Vec<_>>>()?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The UMT loss sends gradients into the student and the predictors, none into the teachers,
/// and a training step leaves the teachers (parameters and BatchNorm statistics) unchanged.
#[test]
fn umt_loss_trains_student_and_predictors_not_teachers() -> Result<()> {
    let cfg = tiny();
    let dev = Device::Cpu;
    let build = |m: Modality, seed: u64| -> Result<(VarMap, EsaNet)> {
        let vars = VarMap::new();
        let model = EsaNet::init(
            &cfg.model.clone().with_modality(m),
            &vars,
            seed,
            DType::F32,
            &dev,
        )?;
        Ok((vars, model))
    };
    let (s_vars, student) = build(Modality::RgbD, 1)?;
    let (r_vars, teacher_rgb) = build(Modality::Rgb, 2)?;
    let (d_vars, teacher_depth) = build(Modality::Depth, 3)?;
    let p_vars = VarMap::new();
    let predictors = Predictors::new(
        &cfg.umt.taps,
        cfg.model.stage_channels(),
        umt_nn::init::seeded_var_builder(&p_vars, 4, DType::F32, &dev),
    )?;
    let distiller = UmtDistiller {
        teacher_rgb,
        teacher_depth,
        predictors,
        config: cfg.umt.clone(),
    };
    let rgb = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &dev)?;
    let depth = Tensor::randn(0f32, 1.0, (2, 1, 32, 32), &dev)?;
    let labels = Tensor::from_vec(
        (0..2 * 32 * 32).map(|i| (i % 11) as u32).collect(),
        (2, 32, 32),
        &dev,
    )?;
    let (r_before, d_before) = (weights(&r_vars)?, weights(&d_vars)?);

    let out = student.forward_t(Some(&rgb), Some(&depth), true)?;
    let ce = loss::deep_supervision_loss(&out, &labels, None)?;
    let l = distiller.loss(&out, &ce, &rgb, &depth, true)?;
    assert!(l.depth.to_scalar::<f32>()? > 0.0);
    assert!(l.rgb.to_scalar::<f32>()? > 0.0);
    let grads = l.total.backward()?;
    let has_grad = |vars: &VarMap| -> Result<usize> {
        let mut n = 0;
        for (_, v) in trainable_vars(vars)? {
            if let Some(g) = grads.get(v.as_tensor()) {
                if g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0 {
                    n += 1;
                }
            }
        }
        Ok(n)
    };
    assert!(has_grad(&s_vars)? > 0);
    // Every predictor parameter gets a gradient.
    assert_eq!(has_grad(&p_vars)?, trainable_vars(&p_vars)?.len());
    for vars in [&r_vars, &d_vars] {
        for (name, v) in trainable_vars(vars)? {
            assert!(
                grads.get(v.as_tensor()).is_none(),
                "teacher `{name}` got a gradient"
            );
        }
    }
    // The depth-branch MSE alone reaches the student's depth encoder.
    let gd = l.depth.backward()?;
    let enc_depth = trainable_vars(&s_vars)?
        .into_iter()
        .find(|(n, _)| n == "encoder_depth.conv1.weight")
        .ok_or_else(|| anyhow::anyhow!("no encoder_depth.conv1.weight"))?;
    assert!(gd.get(enc_depth.1.as_tensor()).is_some());

    // A step over the student and predictor variables.
    let mut vars: Vec<_> = trainable_vars(&s_vars)?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    vars.extend(trainable_vars(&p_vars)?.into_iter().map(|(_, v)| v));
    let mut opt = Adam::new(vec![ParamGroup::new(vars, 0.0)], AdamConfig::default())?;
    let s_before = weights(&s_vars)?;
    opt.step(&grads)?;
    assert_ne!(weights(&s_vars)?, s_before);
    assert_eq!(weights(&r_vars)?, r_before);
    assert_eq!(weights(&d_vars)?, d_before);
    Ok(())
}

/// Bad configuration: unknown keys and invalid values are errors naming the key or field.
#[test]
fn bad_configs_are_rejected() -> Result<()> {
    let path = std::path::Path::new("cfg.json");
    let mut json = serde_json::to_value(tiny())?;
    json["train"]["learning_rate"] = serde_json::json!(0.1);
    let err = SegExperimentConfig::from_json_str(&json.to_string(), path)
        .err()
        .ok_or_else(|| anyhow::anyhow!("unknown key accepted"))?;
    assert!(matches!(err, Error::Json { .. }));
    assert!(err.to_string().contains("learning_rate"), "{err}");

    let ok = SegExperimentConfig::from_json_str(&serde_json::to_string(&tiny())?, path)?;
    assert_eq!(ok, tiny());

    // An unknown value of an enum field (the probe's frozen BatchNorm mode) names the value.
    let mut json = serde_json::to_value(tiny())?;
    json["probe"]["frozen_bn"] = serde_json::json!("frozen");
    let err = SegExperimentConfig::from_json_str(&json.to_string(), path)
        .err()
        .ok_or_else(|| anyhow::anyhow!("unknown frozen_bn value accepted"))?;
    assert!(matches!(err, Error::Json { .. }));
    let text = err.to_string();
    assert!(
        text.contains("unknown variant `frozen`") && text.contains("cfg.json"),
        "{text}"
    );

    let mut bad = tiny();
    bad.train.batch_size = 0;
    assert!(matches!(
        bad.validate(),
        Err(Error::InvalidConfig {
            field: "train.batch_size",
            ..
        })
    ));
    let mut bad = tiny();
    bad.umt.taps = vec![5];
    assert!(matches!(
        bad.validate(),
        Err(Error::InvalidConfig {
            field: "umt.taps",
            ..
        })
    ));
    let mut bad = tiny();
    bad.model = bad.model.with_input_size(64, 64);
    assert!(matches!(
        bad.validate(),
        Err(Error::InvalidConfig {
            field: "model.height/width",
            ..
        })
    ));
    assert!(matches!(
        SegExperimentConfig::preset("huge"),
        Err(Error::InvalidConfig {
            field: "preset",
            ..
        })
    ));
    Ok(())
}

/// A diverging stage stops with an error naming the stage, epoch and step; the stages that
/// finished before it are kept.
#[test]
fn non_finite_loss_stops_with_a_clear_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = tiny();
    cfg.train.epochs = 3;
    cfg.train.optimizer = umt_segtrainer::OptimizerConfig::SgdNesterov {
        max_lr: 1e30,
        momentum: 0.9,
        weight_decay: 0.0,
    };
    let mut runner = SegRunner::new(cfg, opts(dir.path()))?;
    let err = runner
        .baseline(Modality::Depth, 0)
        .err()
        .ok_or_else(|| anyhow::anyhow!("a diverging run finished"))?;
    match &err {
        Error::NonFiniteLoss { stage, epoch, .. } => {
            assert_eq!(stage, "seed-0/esanet-depth");
            assert!(*epoch < 3);
        }
        other => anyhow::bail!("expected NonFiniteLoss, got {other}"),
    }
    assert!(err.to_string().contains("seed-0/esanet-depth"));
    assert!(!dir.path().join("seed-0/esanet-depth/result.json").exists());
    assert!(dir.path().join("config.json").exists());
    Ok(())
}

/// Table 4's probe with `frozen_bn: eval` leaves every tensor of the frozen encoder, BatchNorm
/// running statistics included, bit-identical to the source network's depth encoder; with
/// `frozen_bn: train` the weights stay but the running statistics move (so the check can fail).
#[test]
fn probe_leaves_the_frozen_encoder_bit_identical_in_eval_mode() -> Result<()> {
    let device = Device::Cpu;
    for (frozen_bn, stats_identical) in [(FrozenBn::Eval, true), (FrozenBn::Train, false)] {
        let dir = tempfile::tempdir()?;
        let mut cfg = tiny();
        cfg.probe.frozen_bn = frozen_bn;
        let mut runner = SegRunner::new(cfg, opts(dir.path()))?;
        runner.probe(ProbeSource::RgbdDepth, 0)?;
        let src = umt_nn::checkpoint::load_tensors(
            &dir.path().join("seed-0/esanet-rgbd/model.safetensors"),
            &device,
        )?;
        let probe = umt_nn::checkpoint::load_tensors(
            &dir.path().join("seed-0/probe-rgbd-depth/model.safetensors"),
            &device,
        )?;
        let (mut weights, mut stats) = (0, 0);
        for (name, t) in &probe {
            let Some(rest) = name.strip_prefix("encoder.") else {
                continue;
            };
            let s = src
                .get(&format!("encoder_depth.{rest}"))
                .ok_or_else(|| anyhow::anyhow!("source lacks encoder_depth.{rest}"))?;
            let same = t.flatten_all()?.to_vec1::<f32>()? == s.flatten_all()?.to_vec1::<f32>()?;
            if name.ends_with("running_mean") || name.ends_with("running_var") {
                stats += 1;
                if stats_identical {
                    assert!(same, "{frozen_bn:?}: `{name}` changed");
                }
            } else {
                weights += 1;
                assert!(same, "{frozen_bn:?}: `{name}` changed");
            }
        }
        assert!(
            weights > 10 && stats > 10,
            "{weights} weights, {stats} statistics"
        );
        if !stats_identical {
            let moved = probe.iter().any(|(name, t)| {
                name.starts_with("encoder.")
                    && name.ends_with("running_mean")
                    && src
                        .get(&name.replacen("encoder.", "encoder_depth.", 1))
                        .and_then(|s| s.flatten_all().ok()?.to_vec1::<f32>().ok())
                        != t.flatten_all().ok().and_then(|t| t.to_vec1::<f32>().ok())
            });
            assert!(moved, "frozen_bn train left every running mean unchanged");
        }
    }
    Ok(())
}
