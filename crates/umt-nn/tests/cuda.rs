//! CUDA ↔ CPU parity of the convolution (cuDNN forward, backward-data and backward-filter with
//! the `cudnn` feature), the pools and the upsampling ops, and of umt-nn's own CUDA kernels
//! (fused BatchNorm, max pool, fused optimizer steps; these tests turn them on with
//! `umt_nn::gpu::set_custom_kernels(true)`, which also moves the max pool in the pool test
//! onto them). Every case runs the forward pass and
//! the backward pass of `Σ y · r` (`r` a fixed random tensor) in f32 on CUDA and on CPU, then
//! compares the output and the gradient of every input. Each case prints one line: per
//! compared tensor the largest absolute difference and that difference relative to the largest
//! CPU magnitude (the tolerance applies to the latter).
//!
//! **This is a deliberate device test.** It only checks something in a CUDA build
//! (`--features cuda`, or `--features cudnn` for the cuDNN convolution) running on a machine
//! with a GPU. Everywhere else `Device::new_cuda(0)` fails and every test prints
//! `skipped: no CUDA device (build with --features cuda and run on a GPU machine)` and passes
//! without checking anything. To run it on a GPU machine:
//!
//! ```text
//! cargo test --release --target-dir target/cuda -p umt-nn --features cudnn --test cuda -- --nocapture
//! ```

use candle_core::{DType, Device, Result, Tensor, Var};
use umt_nn::conv::{conv2d_with_params, Conv2dParams};
use umt_nn::pool::{adaptive_avg_pool2d, avg_pool2d, max_pool2d};
use umt_nn::upsample::{upsample_bilinear2d, upsample_nearest2d};

/// Relative tolerance of f32 cases (difference / largest CPU magnitude).
const TOL_F32: f32 = 1e-4;
/// Relative tolerance of the bf16 convolution against the f32 CPU reference (8-bit mantissa).
const TOL_BF16: f32 = 3e-2;

/// CUDA device 0, or `None` after printing why the test is skipped.
fn cuda_device() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(dev) => Some(dev),
        Err(e) => {
            println!(
                "skipped: no CUDA device (build with --features cuda and run on a GPU machine): \
                 {e}"
            );
            None
        }
    }
}

/// A CPU f32 tensor of uniform values in [-1, 1) from a seeded splitmix64 stream.
fn random(dims: &[usize], seed: u64) -> Result<Tensor> {
    let n: usize = dims.iter().product();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x2545_F491_4F6C_DD1D;
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(data, dims, &Device::Cpu)
}

/// Runs `f` on copies of `inputs` on `dev`: returns `y` and `∂(Σ y · r)/∂input` for every
/// input, all on CPU.
fn forward_backward(
    dev: &Device,
    inputs: &[Tensor],
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<Vec<Tensor>> {
    let vars = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_device(dev)?))
        .collect::<Result<Vec<_>>>()?;
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&tensors)?;
    let r = random(y.dims(), 999)?.to_device(dev)?;
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let mut out = vec![y.to_device(&Device::Cpu)?];
    for (i, v) in vars.iter().enumerate() {
        match grads.get(v) {
            Some(g) => out.push(g.to_device(&Device::Cpu)?),
            None => candle_core::bail!("no gradient for input {i} on {dev:?}"),
        }
    }
    Ok(out)
}

/// `(max |a − b|, max |a − b| / max |a|)`.
fn difference(cpu: &Tensor, gpu: &Tensor) -> Result<(f32, f32)> {
    let max_abs = |t: &Tensor| -> Result<f32> { t.abs()?.flatten_all()?.max(0)?.to_scalar() };
    let diff = max_abs(&(cpu - gpu)?)?;
    Ok((diff, diff / max_abs(cpu)?.max(1e-12)))
}

/// Compares `f` (forward and gradients) on CUDA against CPU and prints one summary line.
/// `names` names the output and then each input's gradient.
fn check_parity(
    dev: &Device,
    case: &str,
    names: &[&str],
    inputs: &[Tensor],
    tol: f32,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<()> {
    let cpu = forward_backward(&Device::Cpu, inputs, &f)?;
    let gpu = forward_backward(dev, inputs, &f)?;
    let mut line = format!("{case}:");
    let mut failures = Vec::new();
    for ((name, c), g) in names.iter().zip(&cpu).zip(&gpu) {
        assert_eq!(c.dims(), g.dims(), "{case}: {name} shape");
        let (abs, rel) = difference(c, g)?;
        line.push_str(&format!(" {name} max abs {abs:.2e} rel {rel:.2e};"));
        if rel.is_nan() || rel > tol {
            failures.push(*name);
        }
    }
    println!("{line}");
    assert!(
        failures.is_empty(),
        "{case}: {failures:?} differ from CPU beyond relative {tol:e}"
    );
    Ok(())
}

/// One convolution case: input dims, weight dims, parameters.
struct ConvCase {
    name: &'static str,
    x: [usize; 4],
    w: [usize; 4],
    params: Conv2dParams,
}

fn params(
    padding: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Conv2dParams {
    Conv2dParams {
        padding,
        stride,
        dilation,
        groups,
    }
}

fn conv_cases() -> Vec<ConvCase> {
    let case = |name, x, w, params| ConvCase { name, x, w, params };
    vec![
        case(
            "3x3 s1 p1 odd 7x9",
            [2, 3, 7, 9],
            [4, 3, 3, 3],
            params((1, 1), (1, 1), (1, 1), 1),
        ),
        case(
            "3x3 s2 p1 16x17",
            [2, 4, 16, 17],
            [6, 4, 3, 3],
            params((1, 1), (2, 2), (1, 1), 1),
        ),
        case(
            "3x2 rect pad (1,2) stride (2,1) dil (1,2)",
            [2, 4, 11, 13],
            [6, 4, 3, 2],
            params((1, 2), (2, 1), (1, 2), 1),
        ),
        case(
            "5x3 pad (4,1) dil (2,1)",
            [1, 3, 12, 12],
            [4, 3, 5, 3],
            params((4, 1), (1, 1), (2, 1), 1),
        ),
        case(
            "3x3 groups 2",
            [2, 4, 9, 10],
            [6, 2, 3, 3],
            params((1, 1), (1, 1), (1, 1), 2),
        ),
        case(
            "3x3 depthwise s2 15x16",
            [2, 6, 15, 16],
            [6, 1, 3, 3],
            params((1, 1), (2, 2), (1, 1), 6),
        ),
        case(
            "1x1 s1",
            [2, 8, 7, 7],
            [5, 8, 1, 1],
            params((0, 0), (1, 1), (1, 1), 1),
        ),
        case(
            "1x1 s2 downsample 9x10",
            [2, 8, 9, 10],
            [6, 8, 1, 1],
            params((0, 0), (2, 2), (1, 1), 1),
        ),
        case(
            "7x7 s2 p3 stem 33x34",
            [2, 3, 33, 34],
            [8, 3, 7, 7],
            params((3, 3), (2, 2), (1, 1), 1),
        ),
    ]
}

#[test]
fn conv2d_matches_cpu() -> Result<()> {
    let Some(dev) = cuda_device() else {
        return Ok(());
    };
    for (i, c) in conv_cases().iter().enumerate() {
        let inputs = [random(&c.x, 2 * i as u64)?, random(&c.w, 2 * i as u64 + 1)?];
        let p = c.params;
        check_parity(&dev, c.name, &["y", "dx", "dw"], &inputs, TOL_F32, |t| {
            conv2d_with_params(&t[0], &t[1], p)
        })?;
    }
    Ok(())
}

/// Inputs that start at a non-zero offset (a batch slice) or are not contiguous (transposed).
#[test]
fn conv2d_strided_inputs_match_cpu() -> Result<()> {
    let Some(dev) = cuda_device() else {
        return Ok(());
    };
    let p = params((1, 0), (2, 1), (1, 1), 1);
    let inputs = [random(&[3, 4, 10, 9], 40)?, random(&[5, 4, 3, 3], 41)?];
    check_parity(
        &dev,
        "batch slice (offset) + transposed H/W input",
        &["y", "dx", "dw"],
        &inputs,
        TOL_F32,
        |t| {
            let x = t[0].narrow(0, 1, 2)?.transpose(2, 3)?; // (2, 4, 9, 10), not contiguous
            conv2d_with_params(&x, &t[1], p)
        },
    )
}

/// bf16 on CUDA (cuDNN, f32 accumulation) against the f32 CPU reference.
#[test]
fn conv2d_bf16_close_to_f32_cpu() -> Result<()> {
    let Some(dev) = cuda_device() else {
        return Ok(());
    };
    let p = params((1, 1), (2, 2), (1, 1), 1);
    let inputs = [random(&[2, 8, 16, 17], 50)?, random(&[8, 8, 3, 3], 51)?];
    check_parity(
        &dev,
        "3x3 s2 bf16 on CUDA vs f32 on CPU",
        &["y", "dx", "dw"],
        &inputs,
        TOL_BF16,
        |t| {
            let dtype = if t[0].device().is_cuda() {
                DType::BF16
            } else {
                DType::F32
            };
            conv2d_with_params(&t[0].to_dtype(dtype)?, &t[1].to_dtype(dtype)?, p)?
                .to_dtype(DType::F32)
        },
    )
}

#[test]
fn pools_match_cpu() -> Result<()> {
    let Some(dev) = cuda_device() else {
        return Ok(());
    };
    umt_nn::gpu::set_custom_kernels(true); // the max pool's own kernels (f32)
    let x = [random(&[2, 3, 16, 17], 60)?];
    let dx = &["y", "dx"];
    check_parity(&dev, "max_pool2d 3/2/1", dx, &x, TOL_F32, |t| {
        max_pool2d(&t[0], 3, 2, 1)
    })?;
    check_parity(&dev, "max_pool2d 3/1/1", dx, &x, TOL_F32, |t| {
        max_pool2d(&t[0], 3, 1, 1)
    })?;
    check_parity(&dev, "max_pool2d 2/2/0", dx, &x, TOL_F32, |t| {
        max_pool2d(&t[0], 2, 2, 0)
    })?;
    // After a ReLU most windows tie at 0: the gradient goes to the first maximum on both.
    check_parity(
        &dev,
        "max_pool2d 3/2/1 after ReLU (ties)",
        dx,
        &x,
        TOL_F32,
        |t| max_pool2d(&t[0].relu()?, 3, 2, 1),
    )?;
    check_parity(&dev, "avg_pool2d 3/2/1", dx, &x, TOL_F32, |t| {
        avg_pool2d(&t[0], 3, 2, 1)
    })?;
    check_parity(&dev, "avg_pool2d 2/2/0", dx, &x, TOL_F32, |t| {
        avg_pool2d(&t[0], 2, 2, 0)
    })?;
    check_parity(&dev, "adaptive_avg_pool2d (1,1)", dx, &x, TOL_F32, |t| {
        adaptive_avg_pool2d(&t[0], (1, 1))
    })?;
    check_parity(&dev, "adaptive_avg_pool2d (3,2)", dx, &x, TOL_F32, |t| {
        adaptive_avg_pool2d(&t[0], (3, 2))
    })
}

#[test]
fn upsampling_matches_cpu() -> Result<()> {
    let Some(dev) = cuda_device() else {
        return Ok(());
    };
    let x = [random(&[2, 3, 7, 9], 70)?];
    let dx = &["y", "dx"];
    check_parity(&dev, "upsample_nearest2d 14x18", dx, &x, TOL_F32, |t| {
        upsample_nearest2d(&t[0], 14, 18)
    })?;
    check_parity(&dev, "upsample_nearest2d 11x5", dx, &x, TOL_F32, |t| {
        upsample_nearest2d(&t[0], 11, 5)
    })?;
    for align in [false, true] {
        let name = format!("upsample_bilinear2d 15x20 align_corners={align}");
        check_parity(&dev, &name, dx, &x, TOL_F32, |t| {
            upsample_bilinear2d(&t[0], 15, 20, align)
        })?;
    }
    Ok(())
}

/// A BatchNorm over `c` channels with the given affine parameters and fresh running statistics
/// (variables on the parameters' device, so the fused op updates them in place).
fn batch_norm(weight: &Tensor, bias: &Tensor) -> Result<candle_nn::BatchNorm> {
    let c = weight.dim(0)?;
    let dev = weight.device();
    let mean = Var::zeros(c, DType::F32, dev)?;
    let var = Var::ones(c, DType::F32, dev)?;
    candle_nn::BatchNorm::new(
        c,
        mean.as_tensor().clone(),
        var.as_tensor().clone(),
        weight.clone(),
        bias.clone(),
        1e-5,
    )
}

/// The fused training BatchNorm (umt-nn's CUDA kernels against its CPU kernels): plain, with
/// ReLU, with residual + ReLU; odd planes, one value per plane, a plane large enough for
/// several reduction blocks per channel, and an input far from zero mean.
#[test]
fn fused_batch_norm_matches_cpu() -> Result<()> {
    let Some(dev) = cuda_device() else {
        return Ok(());
    };
    umt_nn::gpu::set_custom_kernels(true);
    let shapes: [(&str, [usize; 4], f64); 4] = [
        ("odd plane 5x7", [4, 6, 5, 7], 0.0),
        ("plane 1x1", [3, 5, 1, 1], 0.0),
        (
            "8 samples of 33x40 (several blocks per channel)",
            [8, 16, 33, 40],
            0.0,
        ),
        ("mean 100", [4, 3, 9, 8], 100.0),
    ];
    for (i, (name, dims, offset)) in shapes.iter().enumerate() {
        let c = dims[1];
        let seed = 100 + 4 * i as u64;
        let x = (random(dims, seed)? * 3.0)?.affine(1.0, *offset)?;
        let inputs = [
            x,
            random(&[c], seed + 1)?.affine(0.5, 1.0)?,
            random(&[c], seed + 2)?,
            random(dims, seed + 3)?,
        ];
        let names = ["y", "dx", "dgamma", "dbeta"];
        check_parity(
            &dev,
            &format!("batch_norm {name}"),
            &names,
            &inputs[..3],
            TOL_F32,
            |t| umt_nn::norm::batch_norm(&batch_norm(&t[1], &t[2])?, &t[0], true),
        )?;
        check_parity(
            &dev,
            &format!("batch_norm_relu {name}"),
            &names,
            &inputs[..3],
            TOL_F32,
            |t| umt_nn::norm::batch_norm_relu(&batch_norm(&t[1], &t[2])?, &t[0], true),
        )?;
        let names = ["y", "dx", "dgamma", "dbeta", "dresidual"];
        check_parity(
            &dev,
            &format!("batch_norm_add_relu {name}"),
            &names,
            &inputs,
            TOL_F32,
            |t| umt_nn::norm::batch_norm_add_relu(&batch_norm(&t[1], &t[2])?, &t[0], &t[3], true),
        )?;
        // Running statistics after one training forward.
        let running = |d: &Device| -> Result<Vec<Tensor>> {
            let t: Vec<Tensor> = inputs
                .iter()
                .map(|t| t.to_device(d))
                .collect::<Result<_>>()?;
            let bn = batch_norm(&t[1], &t[2])?;
            umt_nn::norm::batch_norm_relu(&bn, &t[0], true)?;
            Ok(vec![
                bn.running_mean().to_device(&Device::Cpu)?,
                bn.running_var().to_device(&Device::Cpu)?,
            ])
        };
        let (cpu, gpu) = (running(&Device::Cpu)?, running(&dev)?);
        for (what, (c, g)) in ["running_mean", "running_var"]
            .iter()
            .zip(cpu.iter().zip(&gpu))
        {
            let (abs, rel) = difference(c, g)?;
            println!("batch_norm {name}: {what} max abs {abs:.2e} rel {rel:.2e}");
            assert!(
                rel <= TOL_F32,
                "batch_norm {name}: {what} differs (rel {rel:e})"
            );
        }
    }
    Ok(())
}

/// The fused optimizer steps (umt-nn's CUDA kernels against its CPU kernels): four steps of
/// AdamW, Adam with coupled weight decay, SGD with Nesterov momentum and weight decay, plain SGD.
#[test]
fn fused_optimizers_match_cpu() -> Result<()> {
    use umt_nn::optim::{Adam, AdamConfig, AdamW, Optimizer, ParamGroup, Sgd, SgdConfig};
    let Some(dev) = cuda_device() else {
        return Ok(());
    };
    umt_nn::gpu::set_custom_kernels(true);
    type Make = Box<dyn Fn(Vec<Var>) -> Result<Box<dyn Optimizer>>>;
    let adam = AdamConfig {
        lr: 1e-2,
        ..AdamConfig::default()
    };
    let cases: Vec<(&str, Make)> = vec![
        (
            "AdamW wd 0.05",
            Box::new(move |v| {
                let o = AdamW::new(vec![ParamGroup::new(v, 0.05)], adam);
                Ok(Box::new(o.map_err(candle_core::Error::wrap)?) as Box<dyn Optimizer>)
            }),
        ),
        (
            "Adam wd 0.01",
            Box::new(move |v| {
                let o = Adam::new(vec![ParamGroup::new(v, 0.01)], adam);
                Ok(Box::new(o.map_err(candle_core::Error::wrap)?) as Box<dyn Optimizer>)
            }),
        ),
        (
            "SGD Nesterov 0.9 wd 1e-4",
            Box::new(|v| {
                let cfg = SgdConfig {
                    lr: 0.1,
                    momentum: 0.9,
                    dampening: 0.0,
                    nesterov: true,
                };
                let o = Sgd::new(vec![ParamGroup::new(v, 1e-4)], cfg);
                Ok(Box::new(o.map_err(candle_core::Error::wrap)?) as Box<dyn Optimizer>)
            }),
        ),
        (
            "SGD plain",
            Box::new(|v| {
                let o = Sgd::new(vec![ParamGroup::new(v, 0.0)], SgdConfig::default());
                Ok(Box::new(o.map_err(candle_core::Error::wrap)?) as Box<dyn Optimizer>)
            }),
        ),
    ];
    let dims: [&[usize]; 3] = [&[64, 32, 3, 3], &[64], &[100_003]];
    for (name, make) in &cases {
        let run = |d: &Device| -> Result<Vec<Tensor>> {
            let vars: Vec<Var> = dims
                .iter()
                .enumerate()
                .map(|(i, s)| Var::from_tensor(&random(s, 200 + i as u64)?.to_device(d)?))
                .collect::<Result<_>>()?;
            let mut opt = make(vars.clone())?;
            for step in 0..4u64 {
                let mut loss = Tensor::zeros((), DType::F32, d)?;
                for (i, v) in vars.iter().enumerate() {
                    let r = random(v.dims(), 300 + 10 * step + i as u64)?.to_device(d)?;
                    loss = (loss + (v.as_tensor() * r)?.sum_all()?)?;
                }
                opt.step(&loss.backward()?)?;
            }
            vars.iter()
                .map(|v| v.as_tensor().to_device(&Device::Cpu))
                .collect()
        };
        let (cpu, gpu) = (run(&Device::Cpu)?, run(&dev)?);
        for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
            let (abs, rel) = difference(c, g)?;
            println!(
                "{name}: parameter {i} {:?} max abs {abs:.2e} rel {rel:.2e}",
                c.dims()
            );
            assert!(
                rel <= TOL_F32,
                "{name}: parameter {i} differs (rel {rel:e})"
            );
        }
    }
    Ok(())
}
