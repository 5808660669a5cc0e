//! `cargo xtask bench train-step`: one training step (forward, backward, AdamW step) of a
//! ResNet from `umt-resnet` on random data, ours against the same topology in PyTorch (CPU, run
//! in the same invocation through `$UMT_PYTHON`, default `python3`). With `--conv-layers` it
//! instead times single convolutions (forward + both gradients) at the ResNet's shapes: ours,
//! candle's builtin and PyTorch.
//!
//! Reports median milliseconds per step, each phase's median, peak resident memory (`VmHWM` of
//! this process and of the Python child) and the ratio ours / PyTorch.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use umt_nn::conv::{conv2d, Conv2dConfig};
use umt_nn::optim::{decay_groups, trainable_vars, AdamConfig, AdamW, Optimizer};
use umt_resnet::{ResNet, ResNetConfig, StemKind};

/// Options of the training-step benchmark.
#[derive(clap::Args)]
pub struct Args {
    /// Topology: `resnet18` or `resnet34` (BasicBlock, torchvision layout).
    #[arg(long, default_value = "resnet18")]
    arch: String,
    /// Input `CxHxW` (the paper's audio shape is `1x513x313`).
    #[arg(long, default_value = "3x64x64")]
    shape: String,
    /// Samples per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Base width (torchvision: 64; CPU presets 8–16).
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Stem: `torchvision` (7×7/s2 + max pool) or `small` (3×3/s2, no pool; CPU presets).
    #[arg(long, default_value = "torchvision")]
    stem: String,
    /// Classes of the linear head (cross-entropy on random labels).
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Time single convolutions (ours, candle's builtin, PyTorch) at the model's shapes
    /// instead of whole training steps.
    #[arg(long)]
    conv_layers: bool,
    /// Skip PyTorch.
    #[arg(long)]
    no_torch: bool,
    /// Choose cuDNN's convolution algorithms by timing, ours and PyTorch's
    /// (`torch.backends.cudnn.benchmark = True`; both default to the heuristic). The choice is
    /// made in the warm-up steps.
    #[arg(long)]
    cudnn_benchmark: bool,
    /// Device: `cpu`, `cuda` or `cuda:N` (PyTorch runs on the same device); default the first
    /// GPU of a `cuda` build, else CPU.
    #[arg(long)]
    device: Option<String>,
}

/// Parses `CxHxW`.
fn parse_shape(s: &str) -> anyhow::Result<(usize, usize, usize)> {
    let parts: Vec<usize> = s
        .split('x')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("--shape: expected CxHxW like 3x64x64, found {s:?}"))?;
    match parts[..] {
        [c, h, w] if c > 0 && h > 0 && w > 0 => Ok((c, h, w)),
        _ => bail!("--shape: expected three positive sizes CxHxW, found {s:?}"),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// Peak resident set size of this process in MiB (`VmHWM`), if the kernel reports it.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn layers(arch: &str) -> anyhow::Result<(ResNetConfig, [usize; 4])> {
    Ok(match arch {
        "resnet18" => (ResNetConfig::resnet18(1), [2, 2, 2, 2]),
        "resnet34" => (ResNetConfig::resnet34(1), [3, 4, 6, 3]),
        _ => bail!("--arch: expected resnet18 or resnet34, found {arch:?}"),
    })
}

fn small_stem(stem: &str) -> anyhow::Result<bool> {
    match stem {
        "torchvision" => Ok(false),
        "small" => Ok(true),
        _ => bail!("--stem: expected torchvision or small, found {stem:?}"),
    }
}

/// Runs the benchmark.
pub fn run(args: Args) -> anyhow::Result<()> {
    umt_nn::conv::enable_flush_to_zero();
    let (c, h, w) = parse_shape(&args.shape)?;
    let small = small_stem(&args.stem)?;
    let (base, layout) = layers(&args.arch)?;
    let dev = crate::device::parse(args.device.as_deref())?;
    umt_nn::conv::set_cudnn_benchmark(args.cudnn_benchmark);
    println!(
        "machine: {} | {} rayon threads, {} | {} {}x{}x{} batch {} width {} stem {}{}",
        crate::device::describe(&dev),
        rayon::current_num_threads(),
        std::env::consts::ARCH,
        args.arch,
        c,
        h,
        w,
        args.batch,
        args.width,
        args.stem,
        if !dev.is_cuda() {
            String::new()
        } else {
            let kernels = if umt_nn::gpu::custom_kernels() {
                "on"
            } else {
                "off"
            };
            let benchmark = if args.cudnn_benchmark {
                " | cudnn.benchmark on"
            } else {
                ""
            };
            format!(" | umt CUDA kernels {kernels}{benchmark}")
        }
    );
    if args.conv_layers {
        return conv_layers(&args, (c, h, w), small, &dev);
    }
    let config = ResNetConfig {
        in_channels: c,
        ..base
    }
    .with_width(args.width)
    .with_stem(if small {
        StemKind::Small
    } else {
        StemKind::Torchvision
    })
    .with_num_classes(Some(args.classes));
    let ours = ours_train_step(&args, &config, (c, h, w), &dev)?;
    println!(
        "ours:    {:8.1} ms/step (forward {:.1}, backward {:.1}, optimizer {:.1}), peak RSS {}",
        ours.step_ms,
        ours.forward_ms,
        ours.backward_ms,
        ours.optimizer_ms,
        fmt_mib(peak_rss_mib())
    );
    if args.no_torch {
        return Ok(());
    }
    let script = torch_train_script(&args, (c, h, w), layout, small, &dev);
    match run_python(&script)? {
        None => println!("pytorch: not measured (cannot import torch with $UMT_PYTHON)"),
        Some(out) => {
            let torch_ms = report_python(&out)?;
            println!("ratio ours/pytorch: {:.2}", ours.step_ms / torch_ms);
        }
    }
    Ok(())
}

fn fmt_mib(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |m| format!("{m:.0} MiB"))
}

struct StepTimes {
    step_ms: f64,
    forward_ms: f64,
    backward_ms: f64,
    optimizer_ms: f64,
}

fn ours_train_step(
    args: &Args,
    config: &ResNetConfig,
    (c, h, w): (usize, usize, usize),
    dev: &Device,
) -> anyhow::Result<StepTimes> {
    let vars = VarMap::new();
    let model = ResNet::new(config, VarBuilder::from_varmap(&vars, DType::F32, dev))?;
    // torch.optim.AdamW's defaults (lr 1e-3, weight decay 0.01), biases and norms undecayed.
    let groups = decay_groups(&trainable_vars(&vars)?, 0.01);
    let mut opt = AdamW::new(groups, AdamConfig::default())?;
    let x = Tensor::randn(0f32, 1.0, (args.batch, c, h, w), dev)?; // (B, C, H, W)
    let labels: Vec<u32> = (0..args.batch)
        .map(|i| (i * 7 % args.classes) as u32)
        .collect();
    let labels = Tensor::new(labels, dev)?; // (B,)
    let (mut fw, mut bw, mut op, mut total) = (vec![], vec![], vec![], vec![]);
    for i in 0..args.warmup + args.steps {
        let t0 = Instant::now();
        let out = model.forward_t(&x, true)?;
        let logits = out.logits.context("model built without a head")?; // (B, classes)
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let grads = loss.backward()?;
        dev.synchronize()?; // GPU work is asynchronous: time it to completion
        let t2 = Instant::now();
        opt.step(&grads)?;
        dev.synchronize()?;
        let t3 = Instant::now();
        if i >= args.warmup {
            let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
            fw.push(ms(t0, t1));
            bw.push(ms(t1, t2));
            op.push(ms(t2, t3));
            total.push(ms(t0, t3));
        }
    }
    Ok(StepTimes {
        step_ms: median(&mut total),
        forward_ms: median(&mut fw),
        backward_ms: median(&mut bw),
        optimizer_ms: median(&mut op),
    })
}

/// Runs `script` with `$UMT_PYTHON` (default `python3`); `None` when torch is not importable.
fn run_python(script: &str) -> anyhow::Result<Option<String>> {
    let python = std::env::var("UMT_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let probe = Command::new(&python)
        .args(["-c", "import torch"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        return Ok(None);
    }
    let mut child = Command::new(&python)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {python}"))?;
    child
        .stdin
        .take()
        .context("python stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{python} failed with {}", out.status);
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Prints the Python lines and returns the value of its `step_ms` line.
fn report_python(out: &str) -> anyhow::Result<f64> {
    let mut step = None;
    for line in out.lines() {
        println!("{line}");
        if let Some(v) = line.strip_prefix("pytorch:") {
            step = v
                .split_whitespace()
                .next()
                .and_then(|s| s.parse::<f64>().ok());
        }
    }
    step.context("PyTorch printed no step time")
}

/// Python shared by both modes: thread count, FTZ (as ours) and the ResNet topology.
const TORCH_PRELUDE: &str = r#"
import statistics, time, torch, torch.nn as nn, torchvision
from torchvision.models.resnet import BasicBlock, ResNet
torch.set_num_threads({threads})
torch.set_flush_denormal(True)
torch.backends.cudnn.benchmark = {benchmark}
dev = torch.device("{device}")
def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()
torch.manual_seed(0)

class Net(ResNet):
    """torchvision's ResNet with a configurable width, input channels and stem."""
    def __init__(self, layers, width, in_ch, classes, small):
        nn.Module.__init__(self)
        self._norm_layer, self.dilation, self.groups, self.base_width = nn.BatchNorm2d, 1, 1, 64
        self.inplanes = width
        k, p = (3, 1) if small else (7, 3)
        self.conv1 = nn.Conv2d(in_ch, width, k, 2, p, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small else nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(BasicBlock, width, layers[0])
        self.layer2 = self._make_layer(BasicBlock, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, 8 * width, layers[3], stride=2)
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8 * width, classes)
"#;

fn torch_train_script(
    args: &Args,
    (c, h, w): (usize, usize, usize),
    layout: [usize; 4],
    small: bool,
    dev: &Device,
) -> String {
    format!(
        r#"{prelude}
model = Net({layout:?}, {width}, {c}, {classes}, {small}).train().to(dev)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x = torch.randn({b}, {c}, {h}, {w}, device=dev)
y = (torch.arange({b}) * 7 % {classes}).to(dev)
loss_fn = nn.CrossEntropyLoss()
fw, total = [], []
for i in range({warmup} + {steps}):
    t0 = time.perf_counter()
    loss = loss_fn(model(x), y)
    loss.item()
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sync()
    t2 = time.perf_counter()
    if i >= {warmup}:
        fw.append((t1 - t0) * 1e3); total.append((t2 - t0) * 1e3)
rss = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]) / 1024  # ru_maxrss survives exec
gpu = f", peak GPU memory {{torch.cuda.max_memory_allocated() / 2**20:.0f}} MiB on {{torch.cuda.get_device_name()}}" if dev.type == "cuda" else ""
print(f"pytorch: {{statistics.median(total):8.1f}} ms/step (forward {{statistics.median(fw):.1f}}), peak RSS {{rss:.0f}} MiB{{gpu}}, torch {{torch.__version__}}")
"#,
        width = args.width,
        classes = args.classes,
        small = if small { "True" } else { "False" },
        b = args.batch,
        warmup = args.warmup,
        steps = args.steps,
        prelude = torch_prelude(dev),
    )
}

/// [`TORCH_PRELUDE`] for `dev`, with as many threads as rayon uses and cuDNN's benchmark mode
/// as ours ([`umt_nn::conv::cudnn_benchmark`]).
fn torch_prelude(dev: &Device) -> String {
    let device = match crate::device::describe(dev) {
        d if d.starts_with("cuda") => d,
        _ => "cpu".to_string(),
    };
    TORCH_PRELUDE
        .replace("{threads}", &rayon::current_num_threads().to_string())
        .replace(
            "{benchmark}",
            if umt_nn::conv::cudnn_benchmark() {
                "True"
            } else {
                "False"
            },
        )
        .replace("{device}", &device)
}

/// One convolution of the model: `(C_in, C_out, k, stride, padding, H, W)` at its input.
type ConvShape = (usize, usize, usize, usize, usize, usize, usize);

/// The distinct convolutions of a ResNet18-topology forward pass (stem, each stage's first and
/// later 3×3 convolutions, the 1×1 projections).
fn model_convs((c, h, w): (usize, usize, usize), width: usize, small: bool) -> Vec<ConvShape> {
    let (k, p) = if small { (3, 1) } else { (7, 3) };
    let mut out = vec![(c, width, k, 2, p, h, w)];
    let (mut h, mut w) = ((h + 2 * p - k) / 2 + 1, (w + 2 * p - k) / 2 + 1);
    if !small {
        (h, w) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1); // 3×3/s2/p1 max pool
    }
    out.push((width, width, 3, 1, 1, h, w));
    let mut ch = width;
    for _ in 0..3 {
        out.push((ch, 2 * ch, 3, 2, 1, h, w));
        out.push((ch, 2 * ch, 1, 2, 0, h, w));
        (h, w) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
        ch *= 2;
        out.push((ch, ch, 3, 1, 1, h, w));
    }
    out
}

/// Median ms of forward + backward (both gradients) of one convolution.
fn time_conv(
    x: &Var,
    wt: &Var,
    cfg: Conv2dConfig,
    builtin: bool,
    reps: usize,
) -> anyhow::Result<f64> {
    let mut times = vec![];
    for i in 0..reps + 1 {
        let t0 = Instant::now();
        let y = if builtin {
            x.conv2d(wt, cfg.padding, cfg.stride, cfg.dilation, cfg.groups)?
        } else {
            conv2d(x, wt, cfg)?
        };
        let grads = y.sqr()?.sum_all()?.backward()?;
        grads.get(x).context("no input gradient")?;
        x.device().synchronize()?;
        if i > 0 {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(median(&mut times))
}

fn conv_layers(
    args: &Args,
    shape: (usize, usize, usize),
    small: bool,
    dev: &Device,
) -> anyhow::Result<()> {
    let convs = model_convs(shape, args.width, small);
    let reps = args.steps.max(1);
    let mut ours_rows = vec![];
    println!(
        "{:<28} {:>10} {:>12} {:>8}",
        "conv (B, Cin→Cout, k/s, HxW)", "ours ms", "candle ms", "speed-up"
    );
    for &(ci, co, k, s, p, h, w) in &convs {
        let x = Var::randn(0f32, 1.0, (args.batch, ci, h, w), dev)?; // (B, C_in, H, W)
        let wt = Var::randn(0f32, 0.1, (co, ci, k, k), dev)?; // (C_out, C_in, k, k)
        let cfg = Conv2dConfig {
            padding: p,
            stride: s,
            ..Default::default()
        };
        let ours = time_conv(&x, &wt, cfg, false, reps)?;
        // candle's stride-2 backward fails on mixed parity (see notes): report n/a there.
        let candle = time_conv(&x, &wt, cfg, true, reps).ok();
        let label = format!("{}, {ci}→{co}, {k}/{s}, {h}x{w}", args.batch);
        println!(
            "{label:<28} {ours:>10.2} {:>12} {:>8}",
            candle.map_or("n/a".into(), |c| format!("{c:.2}")),
            candle.map_or("n/a".into(), |c| format!("{:.1}x", c / ours)),
        );
        ours_rows.push((label, ours));
    }
    if args.no_torch {
        return Ok(());
    }
    let script = format!(
        r#"{prelude}
for (ci, co, k, s, p, h, w) in {convs:?}:
    conv = nn.Conv2d(ci, co, k, s, p, bias=False).to(dev)
    x = torch.randn({b}, ci, h, w, requires_grad=True, device=dev)
    ts = []
    for i in range({reps} + 1):
        t0 = time.perf_counter()
        conv(x).square().sum().backward()
        sync()
        if i > 0: ts.append((time.perf_counter() - t0) * 1e3)
    print(f"torch-conv {{statistics.median(ts):.2f}}")
"#,
        b = args.batch,
        prelude = torch_prelude(dev),
    );
    match run_python(&script)? {
        None => println!("pytorch: not measured (cannot import torch with $UMT_PYTHON)"),
        Some(out) => {
            println!(
                "{:<28} {:>10} {:>12} {:>8}",
                "", "ours ms", "torch ms", "ratio"
            );
            let torch: Vec<f64> = out
                .lines()
                .filter_map(|l| l.strip_prefix("torch-conv "))
                .filter_map(|v| v.trim().parse().ok())
                .collect();
            for ((label, ours), t) in ours_rows.iter().zip(torch) {
                println!("{label:<28} {ours:>10.2} {t:>12.2} {:>8.2}", ours / t);
            }
        }
    }
    Ok(())
}
