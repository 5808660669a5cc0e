//! Optimizer trajectories, gradient clipping and parameter groups against PyTorch
//! (fixture: data-prep/golden/optim/optim.json, written by make_golden.py next to it).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::Deserialize;
use umt_nn::optim::{
    clip_grad_norm, decay_groups, is_buffer, trainable_vars, Adam, AdamConfig, AdamW, Optimizer,
    ParamGroup, Sgd, SgdConfig,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Builds an optimizer over `[w, b]`.
type MakeOpt = Box<dyn Fn(&Var, &Var) -> umt_nn::Result<Box<dyn Optimizer>>>;

#[derive(Deserialize)]
struct Problem {
    x: Vec<f64>,
    y: Vec<f64>,
    w0: Vec<f64>,
    b0: Vec<f64>,
    steps: usize,
}

#[derive(Deserialize)]
struct Point {
    w: Vec<f64>,
    b: Vec<f64>,
}

#[derive(Deserialize)]
struct Trajectory {
    name: String,
    trajectory: Vec<Point>,
    clip_norms: Vec<f64>,
}

#[derive(Deserialize)]
struct Fixture {
    problem: Problem,
    optimizers: Vec<Trajectory>,
}

fn fixture() -> Result<Fixture, Box<dyn std::error::Error>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data-prep/golden/optim/optim.json"
    );
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn close(got: &Tensor, want: &[f64], what: &str) -> TestResult {
    let got = got.flatten_all()?.to_vec1::<f64>()?;
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() < 1e-9, "{what}[{i}]: {a} vs PyTorch {b}");
    }
    Ok(())
}

/// Runs one fixture trajectory: `make` builds the optimizer over `[w, b]`.
fn run(
    p: &Problem,
    t: &Trajectory,
    make: impl Fn(&Var, &Var) -> umt_nn::Result<Box<dyn Optimizer>>,
    clip: Option<f64>,
    lr_change: Option<(usize, f64)>,
) -> TestResult {
    let dev = Device::Cpu;
    let x = Tensor::from_vec(p.x.clone(), (5, 4), &dev)?;
    let y = Tensor::from_vec(p.y.clone(), (5, 3), &dev)?;
    let w = Var::from_tensor(&Tensor::from_vec(p.w0.clone(), (3, 4), &dev)?)?;
    let b = Var::from_tensor(&Tensor::from_vec(p.b0.clone(), 3, &dev)?)?;
    let mut opt = make(&w, &b)?;
    assert_eq!(t.trajectory.len(), p.steps);
    for (step, point) in t.trajectory.iter().enumerate() {
        if let Some((at, factor)) = lr_change {
            if step == at {
                let lr = opt.learning_rate();
                opt.set_learning_rate(lr * factor);
            }
        }
        // loss = Σ (X Wᵀ + b − Y)²
        let pred = x
            .matmul(&w.as_tensor().t()?)?
            .broadcast_add(b.as_tensor())?;
        let loss = (pred - &y)?.sqr()?.sum_all()?;
        let mut grads = loss.backward()?;
        if let Some(max_norm) = clip {
            let norm = clip_grad_norm(&mut grads, &[w.clone(), b.clone()], max_norm)?;
            let want = t.clip_norms[step];
            assert!(
                (norm - want).abs() < 1e-9 * want.max(1.0),
                "{}: norm {norm} vs {want}",
                t.name
            );
        }
        opt.step(&grads)?;
        close(
            w.as_tensor(),
            &point.w,
            &format!("{} step {step} w", t.name),
        )?;
        close(
            b.as_tensor(),
            &point.b,
            &format!("{} step {step} b", t.name),
        )?;
    }
    Ok(())
}

/// One group holding both variables.
fn both(w: &Var, b: &Var, wd: f64) -> Vec<ParamGroup> {
    vec![ParamGroup::new(vec![w.clone(), b.clone()], wd)]
}

fn sgd(lr: f64, momentum: f64, dampening: f64, nesterov: bool) -> SgdConfig {
    SgdConfig {
        lr,
        momentum,
        dampening,
        nesterov,
    }
}

#[test]
fn optimizers_match_pytorch() -> TestResult {
    let f = fixture()?;
    let p = &f.problem;
    let mut seen = 0;
    for t in &f.optimizers {
        let (mut clip, mut lr_change) = (None, None);
        let make: MakeOpt = match t.name.as_str() {
            "sgd_plain" => Box::new(|w, b| {
                Ok(Box::new(Sgd::new(
                    both(w, b, 0.0),
                    sgd(0.01, 0.0, 0.0, false),
                )?))
            }),
            "sgd_momentum_dampening_wd" => Box::new(|w, b| {
                Ok(Box::new(Sgd::new(
                    both(w, b, 0.01),
                    sgd(0.01, 0.9, 0.1, false),
                )?))
            }),
            "sgd_nesterov_wd" => Box::new(|w, b| {
                Ok(Box::new(Sgd::new(
                    both(w, b, 0.01),
                    sgd(0.01, 0.9, 0.0, true),
                )?))
            }),
            "sgd_groups" => Box::new(|w, b| {
                let groups = vec![
                    ParamGroup::new(vec![w.clone()], 0.05),
                    ParamGroup::new(vec![b.clone()], 0.0).with_lr_scale(0.5),
                ];
                Ok(Box::new(Sgd::new(groups, sgd(0.01, 0.9, 0.0, false))?))
            }),
            "sgd_clip" => {
                clip = Some(0.5);
                Box::new(|w, b| {
                    Ok(Box::new(Sgd::new(
                        both(w, b, 0.0),
                        sgd(0.01, 0.9, 0.0, false),
                    )?))
                })
            }
            "adam" => Box::new(|w, b| {
                let cfg = AdamConfig {
                    lr: 0.05,
                    ..AdamConfig::default()
                };
                Ok(Box::new(Adam::new(both(w, b, 0.0), cfg)?))
            }),
            "adam_wd" => Box::new(|w, b| {
                let cfg = AdamConfig {
                    lr: 0.05,
                    beta1: 0.8,
                    beta2: 0.99,
                    eps: 1e-6,
                };
                Ok(Box::new(Adam::new(both(w, b, 0.1), cfg)?))
            }),
            "adamw_wd_lr_change" => {
                lr_change = Some((3, 0.5));
                Box::new(|w, b| {
                    let cfg = AdamConfig {
                        lr: 0.05,
                        ..AdamConfig::default()
                    };
                    Ok(Box::new(AdamW::new(both(w, b, 0.1), cfg)?))
                })
            }
            other => return Err(format!("fixture case {other} has no test").into()),
        };
        run(p, t, make, clip, lr_change)?;
        seen += 1;
    }
    assert_eq!(seen, 8);
    Ok(())
}

/// Variables without a gradient are skipped and keep their value (frozen = not in the store).
#[test]
fn variables_without_gradient_are_skipped() -> TestResult {
    let dev = Device::Cpu;
    let a = Var::from_tensor(&Tensor::new(&[1.0f64, 2.0], &dev)?)?;
    let frozen = Var::from_tensor(&Tensor::new(&[5.0f64], &dev)?)?;
    let mut opt = AdamW::new(
        vec![ParamGroup::new(vec![a.clone(), frozen.clone()], 0.1)],
        AdamConfig::default(),
    )?;
    // Only `a` is in the graph; `frozen` enters detached.
    let loss = (a.as_tensor().sum_all()? + frozen.as_tensor().detach().sum_all()?)?;
    opt.backward_step(&loss)?;
    assert_eq!(frozen.as_tensor().to_vec1::<f64>()?, vec![5.0]);
    assert_ne!(a.as_tensor().to_vec1::<f64>()?, vec![1.0, 2.0]);
    Ok(())
}

#[test]
fn clip_leaves_small_gradients_alone() -> TestResult {
    let dev = Device::Cpu;
    let a = Var::from_tensor(&Tensor::new(&[3.0f64, 4.0], &dev)?)?;
    let mut grads = (a.as_tensor().sqr()?.sum_all()? * 0.5)?.backward()?; // grad = a, norm 5
    let norm = clip_grad_norm(&mut grads, &[a.clone(), a.clone()], 10.0)?;
    assert!((norm - 5.0).abs() < 1e-12);
    let g = grads
        .get(a.as_tensor())
        .ok_or("no grad")?
        .to_vec1::<f64>()?;
    assert_eq!(g, vec![3.0, 4.0]);
    let norm = clip_grad_norm(&mut grads, std::slice::from_ref(&a), 1.0)?;
    assert!((norm - 5.0).abs() < 1e-12);
    let g = grads
        .get(a.as_tensor())
        .ok_or("no grad")?
        .to_vec1::<f64>()?;
    assert!((g[0] - 3.0 / (5.0 + 1e-6)).abs() < 1e-12);
    Ok(())
}

/// timm's split: biases and rank-1 tensors (BatchNorm weights) get no decay; running
/// statistics are not trainable at all.
#[test]
fn decay_groups_follow_the_timm_rule() -> TestResult {
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    vb.get((8, 3, 3, 3), "conv1.weight")?;
    vb.get(8, "bn1.weight")?;
    vb.get(8, "bn1.bias")?;
    vb.get(8, "bn1.running_mean")?;
    vb.get(8, "bn1.running_var")?;
    vb.get((10, 8), "fc.weight")?;
    vb.get(10, "fc.bias")?;
    let named = trainable_vars(&vars)?;
    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "bn1.bias",
            "bn1.weight",
            "conv1.weight",
            "fc.bias",
            "fc.weight"
        ]
    );
    let groups = decay_groups(&named, 1e-4);
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0].weight_decay, 1e-4);
    let dims = |g: &ParamGroup| g.vars.iter().map(|v| v.dims().to_vec()).collect::<Vec<_>>();
    assert_eq!(dims(&groups[0]), vec![vec![8, 3, 3, 3], vec![10, 8]]);
    assert_eq!(groups[1].weight_decay, 0.0);
    assert_eq!(groups[1].vars.len(), 3);
    assert!(is_buffer("layer1.0.bn1.num_batches_tracked") && !is_buffer("running_mean_fc.weight"));
    Ok(())
}

#[test]
fn invalid_hyper_parameters_are_errors() -> TestResult {
    let v = Var::from_tensor(&Tensor::new(&[1.0f64], &Device::Cpu)?)?;
    let g = || vec![ParamGroup::new(vec![v.clone()], 0.0)];
    let err = Sgd::new(g(), sgd(0.1, 0.0, 0.0, true))
        .err()
        .ok_or("accepted")?;
    assert!(
        matches!(&err, umt_nn::Error::Config { field, .. } if field == "Sgd.nesterov"),
        "{err}"
    );
    let err = Sgd::new(g(), sgd(-1.0, 0.0, 0.0, false))
        .err()
        .ok_or("accepted")?;
    assert!(err.to_string().contains("Sgd.lr"), "{err}");
    let cfg = AdamConfig {
        beta2: 1.0,
        ..AdamConfig::default()
    };
    let err = Adam::new(g(), cfg).err().ok_or("accepted")?;
    assert!(err.to_string().contains("Adam.beta2"), "{err}");
    let twice = vec![
        ParamGroup::new(vec![v.clone()], 0.0),
        ParamGroup::new(vec![v.clone()], 0.1),
    ];
    let err = AdamW::new(twice, AdamConfig::default())
        .err()
        .ok_or("accepted")?;
    assert!(err.to_string().contains("appears twice"), "{err}");
    let err = serde_json::from_str::<SgdConfig>(r#"{"lr": 0.1, "momentun": 0.9}"#)
        .err()
        .ok_or("unknown field accepted")?;
    assert!(err.to_string().contains("momentun"));
    Ok(())
}
