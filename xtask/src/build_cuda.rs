//! `cargo xtask build-cuda`: the CUDA build, made on a machine with no GPU and no CUDA install.
//!
//! 1. **Compiler.** NVIDIA's CUDA compiler, runtime headers and `libcudart` come as Python wheels
//!    from PyPI (`nvidia-cuda-nvcc`, `-crt`, `nvidia-nvvm`, `nvidia-cuda-runtime`,
//!    `nvidia-cuda-cccl`), pinned to one CUDA release and installed with `pip --target` into
//!    `target/cuda-toolkit/<release>/` (no other network than the package registry). The release
//!    is pinned to the *driver* of the machines we run on, not to the newest compiler: PTX from
//!    a newer compiler than the driver does not load (driver 580 is CUDA 13.0).
//! 2. **Link stubs.** candle links cudarc dynamically (`-lcuda -lcublas -lcublasLt -lcurand
//!    -lnvrtc`, and `-lcudnn` with cuDNN). Only the linker needs those libraries here: we compile
//!    stub shared objects that define every function cudarc declares, with the sonames of the real
//!    CUDA 13 libraries (`libcublas.so.13`, `libcudnn.so.9`, ...), so the binary records the right
//!    `DT_NEEDED` entries and resolves them against the real libraries at run time. This avoids
//!    downloading about 2 GB of cuBLAS and cuDNN just to link.
//! 3. **Build.** `cargo build --release --features cudnn` of `xtask` (the runner) into
//!    `target/cuda/`, with `CUDA_HOME`, `PATH` and `CUDA_COMPUTE_CAP` set, plus the device test
//!    binaries, then stripped copies in `target/cuda/dist/`:
//!    `umt` (the runner: every `cargo xtask` command), `cuda-tests-umt-nn`, `cuda-tests-umt`.
//!
//! On the GPU machine the binaries find the driver (`libcuda.so.1`) on the system path and the
//! CUDA runtime libraries wherever PyTorch's wheels put them: `scripts/gpu-check.sh` adds every
//! `site-packages/nvidia/*/lib` folder to `LD_LIBRARY_PATH` (see `docs/gpu.md`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Options of `cargo xtask build-cuda`.
#[derive(clap::Args)]
pub struct Args {
    /// GPU compute capability to compile the kernels for (90: H100/H200; 80: A100; 89: L4).
    #[arg(long, default_value_t = 90)]
    compute_cap: u32,
    /// CUDA release of the compiler; must not be newer than the target machine's driver.
    #[arg(long, default_value = "13.0")]
    cuda: String,
    /// Build without cuDNN (convolutions then fall back to candle's CUDA kernels).
    #[arg(long)]
    no_cudnn: bool,
    /// Python with pip, used only to install the compiler wheels (default `$UMT_PYTHON`, else
    /// `python3`).
    #[arg(long)]
    python: Option<String>,
}

/// The pinned wheels of one CUDA release (exact versions: a rerun installs the same compiler).
fn wheels(release: &str) -> anyhow::Result<&'static [&'static str]> {
    Ok(match release {
        // CUDA 13.0 update 2 (driver ≥ 580): the lent GPU machines' driver 580.159.
        "13.0" => &[
            "nvidia-cuda-nvcc==13.0.88",
            "nvidia-cuda-crt==13.0.88",
            "nvidia-nvvm==13.0.88",
            "nvidia-cuda-runtime==13.0.96",
            "nvidia-cuda-cccl==13.0.85",
        ],
        other => bail!("--cuda {other}: only 13.0 is pinned (add its wheel versions here)"),
    })
}

/// A stub library: cudarc's bindings module, the library's link name and its real soname.
struct Stub {
    module: &'static str,
    name: &'static str,
    soname: &'static str,
}

const STUBS: &[Stub] = &[
    Stub {
        module: "driver",
        name: "cuda",
        soname: "libcuda.so.1",
    },
    Stub {
        module: "cublas",
        name: "cublas",
        soname: "libcublas.so.13",
    },
    Stub {
        module: "cublaslt",
        name: "cublasLt",
        soname: "libcublasLt.so.13",
    },
    Stub {
        module: "curand",
        name: "curand",
        soname: "libcurand.so.10",
    },
    Stub {
        module: "nvrtc",
        name: "nvrtc",
        soname: "libnvrtc.so.13",
    },
    Stub {
        module: "cudnn",
        name: "cudnn",
        soname: "libcudnn.so.9",
    },
];

/// Runs a command, failing with its command line.
fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// The workspace root (xtask's parent).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Installs the compiler wheels unless `nvcc` is already there; returns `CUDA_HOME`.
fn install_toolkit(root: &Path, args: &Args) -> anyhow::Result<PathBuf> {
    let major = args.cuda.split('.').next().unwrap_or("13");
    let prefix = root.join("target/cuda-toolkit").join(&args.cuda);
    let home = prefix.join(format!("nvidia/cu{major}"));
    let nvcc = home.join("bin/nvcc");
    if nvcc.is_file() {
        println!("toolkit: {} (already installed)", home.display());
    } else {
        println!(
            "toolkit: installing CUDA {} wheels into {}",
            args.cuda,
            prefix.display()
        );
        let python = args
            .python
            .clone()
            .or_else(|| std::env::var("UMT_PYTHON").ok())
            .unwrap_or_else(|| "python3".to_string());
        run(Command::new(python)
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
            .arg(&prefix)
            .args(wheels(&args.cuda)?))
        .context("installing the CUDA compiler wheels (needs pip and PyPI)")?;
        if !nvcc.is_file() {
            bail!(
                "{}: nvcc missing after installing the wheels",
                nvcc.display()
            );
        }
    }
    let lib = home.join("lib");
    let cudart = lib.join("libcudart.so");
    if !cudart.exists() {
        std::os::unix::fs::symlink(format!("libcudart.so.{major}"), &cudart)
            .with_context(|| format!("cannot link {}", cudart.display()))?;
    }
    Ok(home)
}

/// cudarc's source folder (its version from Cargo.lock, its sources fetched by cargo).
fn cudarc_sources(root: &Path) -> anyhow::Result<PathBuf> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"cudarc\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string())
        .context("Cargo.lock has no cudarc package")?;
    run(Command::new("cargo").arg("fetch").current_dir(root))?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let registry = cargo_home.join("registry/src");
    for entry in
        std::fs::read_dir(&registry).with_context(|| format!("reading {}", registry.display()))?
    {
        let dir = entry?.path().join(format!("cudarc-{version}"));
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    bail!(
        "cudarc {version} sources not found under {}",
        registry.display()
    )
}

/// Function names declared in one of cudarc's `sys` binding modules.
fn declared_functions(src: &str) -> Vec<String> {
    let mut names: Vec<String> = src
        .split("fn ")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let is_c_api = ["cu", "nvrtc"].iter().any(|p| name.starts_with(p));
            (is_c_api && rest[name.len()..].starts_with('(')).then_some(name)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Writes and compiles the link stubs into `<CUDA_HOME>/lib/stubs`.
fn build_stubs(home: &Path, cudarc: &Path) -> anyhow::Result<()> {
    let dir = home.join("lib/stubs");
    std::fs::create_dir_all(&dir)?;
    for stub in STUBS {
        let bindings = cudarc.join("src").join(stub.module).join("sys/mod.rs");
        let src = std::fs::read_to_string(&bindings)
            .with_context(|| format!("reading {}", bindings.display()))?;
        let names = declared_functions(&src);
        if names.is_empty() {
            bail!("{}: no functions found", bindings.display());
        }
        let c = dir.join(format!("{}.c", stub.name));
        let body: String = names
            .iter()
            .map(|n| format!("void {n}(void) {{}}\n"))
            .collect();
        std::fs::write(
            &c,
            format!(
                "/* Link-time stub of {}; generated. */\n{body}",
                stub.soname
            ),
        )?;
        run(Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(dir.join(format!("lib{}.so", stub.name)))
            .arg(format!("-Wl,-soname,{}", stub.soname))
            .arg(&c))?;
        println!(
            "stub: lib{}.so ({} functions, soname {})",
            stub.name,
            names.len(),
            stub.soname
        );
    }
    Ok(())
}

/// Runs the build (see the module docs).
pub fn run_build(args: Args) -> anyhow::Result<()> {
    let root = workspace_root();
    let home = install_toolkit(&root, &args)?;
    build_stubs(&home, &cudarc_sources(&root)?)?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![home.join("bin")];
    paths.extend(std::env::split_paths(&path));
    let features = if args.no_cudnn { "cuda" } else { "cudnn" };
    let target = root.join("target/cuda");
    let cargo = |sub: &str| {
        let mut c = Command::new("cargo");
        c.current_dir(&root)
            .arg(sub)
            .args(["--release", "--target-dir"])
            .arg(&target)
            .env("CUDA_HOME", &home)
            .env("CUDA_COMPUTE_CAP", args.compute_cap.to_string())
            .env("PATH", std::env::join_paths(&paths).unwrap_or_default());
        c
    };
    println!(
        "building xtask --features {features} for sm_{} (kernels take minutes)",
        args.compute_cap
    );
    run(cargo("build").args(["-p", "xtask", "--features", features]))?;
    // The device tests: their executables, reported by cargo as JSON.
    let out = cargo("test")
        .args([
            "--no-run",
            "--message-format",
            "json",
            "-p",
            "umt-nn",
            "-p",
            "umt-tests",
        ])
        .args([
            "--features",
            &format!("umt-nn/{features},umt-tests/{features}"),
        ])
        .args(["--test", "cuda"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("building the device tests")?;
    if !out.status.success() {
        bail!("building the device tests failed");
    }
    let dist = target.join("dist");
    std::fs::create_dir_all(&dist)?;
    let mut copies = vec![(target.join("release/xtask"), dist.join("umt"))];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(exe), Some(pkg)) = (msg["executable"].as_str(), msg["package_id"].as_str())
        else {
            continue;
        };
        let name = if pkg.contains("umt-nn") {
            "cuda-tests-umt-nn"
        } else {
            "cuda-tests-umt"
        };
        copies.push((PathBuf::from(exe), dist.join(name)));
    }
    for (from, to) in &copies {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        run(Command::new("strip").arg(to))?;
        let mib = std::fs::metadata(to)?.len() as f64 / 1048576.0;
        println!("built {} ({mib:.1} MiB)", to.display());
    }
    println!(
        "run on a GPU machine (driver ≥ 580, CUDA {} libraries from PyTorch's wheels): \
         scripts/gpu-check.sh {}",
        args.cuda,
        dist.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_c_functions_in_bindings() {
        let src =
            "pub unsafe fn cuInit(flags: u32) -> CUresult {\n extern \"C\" { fn cuInit(f: u32) \
                   -> CUresult; }\n}\nfn helper() {}\npub fn nvrtcVersion(a: *mut i32) {}\nfn \
                   cudnnCreate(h: *mut H) {}";
        assert_eq!(
            declared_functions(src),
            ["cuInit", "cudnnCreate", "nvrtcVersion"]
        );
    }

    #[test]
    fn unknown_release_is_refused() {
        let err = wheels("12.4")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("only 13.0 is pinned"), "{err}");
    }
}
