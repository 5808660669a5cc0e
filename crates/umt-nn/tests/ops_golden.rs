//! Forward values and input gradients of the pooling and resizing ops against PyTorch
//! (fixture: data-prep/golden/ops/ops.json, written by make_golden.py next to it).

use candle_core::{DType, Device, Tensor, Var};
use serde::Deserialize;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Deserialize)]
struct Arr {
    shape: Vec<usize>,
    data: Vec<f64>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    op: String,
    args: serde_json::Value,
    x: Arr,
    r: Arr,
    out: Arr,
    grad: Arr,
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

fn arg(args: &serde_json::Value, key: &str) -> Result<usize, String> {
    args[key]
        .as_u64()
        .map(|v| v as usize)
        .ok_or_else(|| format!("missing argument {key}"))
}

fn apply(case: &Case, x: &Tensor) -> Result<Tensor, Box<dyn std::error::Error>> {
    let a = &case.args;
    Ok(match case.op.as_str() {
        "max_pool2d" => {
            umt_nn::pool::max_pool2d(x, arg(a, "kernel")?, arg(a, "stride")?, arg(a, "padding")?)?
        }
        "avg_pool2d" => {
            umt_nn::pool::avg_pool2d(x, arg(a, "kernel")?, arg(a, "stride")?, arg(a, "padding")?)?
        }
        "adaptive_avg_pool2d" => {
            umt_nn::pool::adaptive_avg_pool2d(x, (arg(a, "out_h")?, arg(a, "out_w")?))?
        }
        "upsample_nearest2d" => {
            umt_nn::upsample::upsample_nearest2d(x, arg(a, "out_h")?, arg(a, "out_w")?)?
        }
        "upsample_bilinear2d" => umt_nn::upsample::upsample_bilinear2d(
            x,
            arg(a, "out_h")?,
            arg(a, "out_w")?,
            a["align_corners"]
                .as_bool()
                .ok_or("missing align_corners")?,
        )?,
        op => return Err(format!("unknown op {op}").into()),
    })
}

fn max_diff(t: &Tensor, want: &Arr, what: &str) -> Result<f64, Box<dyn std::error::Error>> {
    if t.dims() != want.shape.as_slice() {
        return Err(format!("{what}: shape {:?}, PyTorch {:?}", t.dims(), want.shape).into());
    }
    let got = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Ok(got
        .iter()
        .zip(&want.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max))
}

#[test]
fn ops_match_pytorch() -> TestResult {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data-prep/golden/ops/ops.json"
    );
    let fixture: Fixture = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    assert!(fixture.cases.len() >= 20);
    for case in &fixture.cases {
        for dtype in [DType::F64, DType::F32] {
            let x = Tensor::from_vec(case.x.data.clone(), case.x.shape.as_slice(), &Device::Cpu)?
                .to_dtype(dtype)?;
            let r = Tensor::from_vec(case.r.data.clone(), case.r.shape.as_slice(), &Device::Cpu)?
                .to_dtype(dtype)?;
            let x = Var::from_tensor(&x)?;
            let out = apply(case, x.as_tensor())?;
            let grads = (&out * &r)?.sum_all()?.backward()?;
            let grad = grads.get(x.as_tensor()).ok_or("no gradient")?;
            let what = format!("{} ({dtype:?})", case.name);
            let d_out = max_diff(&out, &case.out, &format!("{what} forward"))?;
            let d_grad = max_diff(grad, &case.grad, &format!("{what} gradient"))?;
            assert!(
                d_out < 1e-5,
                "{what}: forward differs from PyTorch by {d_out:e}"
            );
            assert!(
                d_grad < 1e-5,
                "{what}: gradient differs from PyTorch by {d_grad:e}"
            );
        }
    }
    Ok(())
}
