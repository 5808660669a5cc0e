//! CUDA ↔ CPU parity of a whole ResNet18 (narrow: base width 8) in training mode: the same
//! weights on both devices, one forward pass with batch statistics (BatchNorm updates its
//! running statistics) and one backward pass of a fixed random weighted sum of the stem,
//! `layer1` and embedding outputs. Compares the outputs, the input gradient, every parameter's
//! gradient and the updated running statistics. With the `cudnn` feature the convolutions run
//! on cuDNN (forward, backward-data, backward-filter). Prints one summary line per compared
//! group (largest absolute difference and that difference relative to the largest CPU
//! magnitude).
//!
//! **This is a deliberate device test.** It only checks something in a CUDA build of this crate
//! (`--features cuda`, or `--features cudnn`) running on a machine with a GPU. Everywhere else
//! `Device::new_cuda(0)` fails and the test prints
//! `skipped: no CUDA device (build with --features cuda and run on a GPU machine)` and passes
//! without checking anything. To run it on a GPU machine:
//!
//! ```text
//! cargo test --release --target-dir target/cuda -p umt-tests --features cudnn --test cuda -- --nocapture
//! ```

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use umt_resnet::{ResNet, ResNetConfig};

/// Errors of candle and of umt-resnet alike.
type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Relative tolerance (difference / largest CPU magnitude): BatchNorm over small batches
/// amplifies f32 rounding differences a little beyond a single layer's 1e-4.
const TOL: f32 = 1e-3;

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
    Ok(Tensor::from_vec(data, dims, &Device::Cpu)?)
}

/// A snapshot of a `VarMap` on CPU, by name.
fn snapshot(vm: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = vm.data().lock().map_err(|e| format!("VarMap lock: {e}"))?;
    data.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_device(&Device::Cpu)?)))
        .collect()
}

/// Everything compared between the devices, on CPU: `(group, name) → tensor`.
type Results = Vec<((&'static str, String), Tensor)>;

/// Builds the model under `vm` on `dev` with the weights `init`, runs forward (train) and
/// backward, and returns outputs, gradients and the updated running statistics.
fn run(dev: &Device, cfg: &ResNetConfig, init: &HashMap<String, Tensor>) -> Result<Results> {
    let vm = VarMap::new();
    let model = ResNet::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, dev))?;
    {
        let data = vm.data().lock().map_err(|e| format!("VarMap lock: {e}"))?;
        for (name, var) in data.iter() {
            match init.get(name) {
                Some(t) => var.set(&t.to_device(dev)?)?,
                None => return Err(format!("variable `{name}` missing from the CPU model").into()),
            }
        }
    }
    let x = Var::from_tensor(&random(&[2, 3, 64, 64], 1)?.to_device(dev)?)?;
    let f = model.forward_t(&x, true)?;
    let mut loss = Tensor::zeros((), DType::F32, dev)?;
    for (i, t) in [&f.stem, &f.layer1, &f.embedding].into_iter().enumerate() {
        let r = random(t.dims(), 10 + i as u64)?.to_device(dev)?;
        loss = (loss + (t * r)?.sum_all()?)?;
    }
    let grads = loss.backward()?;
    let cpu = |t: &Tensor| t.to_device(&Device::Cpu);
    let mut out: Results = vec![
        (("outputs", "stem".into()), cpu(&f.stem)?),
        (("outputs", "layer4".into()), cpu(&f.layer4)?),
        (("outputs", "embedding".into()), cpu(&f.embedding)?),
    ];
    match grads.get(&x) {
        Some(g) => out.push((("input gradient", "x".into()), cpu(g)?)),
        None => return Err("no gradient for the input".into()),
    }
    let data = vm.data().lock().map_err(|e| format!("VarMap lock: {e}"))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            out.push((("running statistics", name.clone()), cpu(var.as_tensor())?));
        } else if name.ends_with("num_batches_tracked") {
            continue;
        } else {
            match grads.get(var) {
                Some(g) => out.push((("parameter gradients", name.clone()), cpu(g)?)),
                None => return Err(format!("no gradient for `{name}`").into()),
            }
        }
    }
    Ok(out)
}

/// `(max |a − b|, max |a − b| / max |a|)`.
fn difference(cpu: &Tensor, gpu: &Tensor) -> Result<(f32, f32)> {
    let max_abs = |t: &Tensor| -> Result<f32> { Ok(t.abs()?.flatten_all()?.max(0)?.to_scalar()?) };
    let diff = max_abs(&(cpu - gpu)?)?;
    Ok((diff, diff / max_abs(cpu)?.max(1e-12)))
}

#[test]
fn resnet18_train_step_matches_cpu() -> Result<()> {
    let Some(dev) = cuda_device() else {
        return Ok(());
    };
    let cfg = ResNetConfig::resnet18(3).with_width(8);
    let cpu_vm = VarMap::new();
    ResNet::new(
        &cfg,
        VarBuilder::from_varmap(&cpu_vm, DType::F32, &Device::Cpu),
    )?;
    let init = snapshot(&cpu_vm)?;
    let cpu = run(&Device::Cpu, &cfg, &init)?;
    let gpu = run(&dev, &cfg, &init)?;
    assert_eq!(cpu.len(), gpu.len());
    // Worst relative difference per group, with the tensor it came from.
    let mut worst: Vec<(&str, String, f32, f32)> = Vec::new();
    let mut failures = Vec::new();
    for ((key, c), (gkey, g)) in cpu.iter().zip(&gpu) {
        assert_eq!(key, gkey);
        assert_eq!(c.dims(), g.dims(), "{key:?} shape");
        let (abs, rel) = difference(c, g)?;
        if rel.is_nan() || rel > TOL {
            failures.push(format!("{} (rel {rel:.2e})", key.1));
        }
        match worst.iter_mut().find(|w| w.0 == key.0) {
            Some(w) if w.3 >= rel => {}
            Some(w) => *w = (key.0, key.1.clone(), abs, rel),
            None => worst.push((key.0, key.1.clone(), abs, rel)),
        }
    }
    for (group, name, abs, rel) in &worst {
        println!("resnet18 w8 train: {group}: worst {name} max abs {abs:.2e} rel {rel:.2e}");
    }
    assert!(
        failures.is_empty(),
        "differ from CPU beyond relative {TOL:e}: {failures:?}"
    );
    Ok(())
}
