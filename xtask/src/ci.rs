//! `cargo xtask ci`: the one check run before every commit and by `.ci/run`.
//! Cheapest first: `cargo fmt --check`, `cargo clippy -D warnings`, `cargo test`, `cargo doc`,
//! then two checks of umt-nn's CUDA kernels that need no GPU: they compile with NVRTC
//! (`data-prep/golden/cuda/check_nvrtc.py`; `.ci/run` installs NVIDIA's `nvidia-cuda-nvrtc`
//! wheel into `target/nvrtc`), and they compute what the CPU kernels compute when run on a host
//! emulation of CUDA (`data-prep/golden/cuda/check_kernels.cpp`, built with `g++`). Each says
//! plainly that it skipped when its tool is absent.

use std::process::Command;

use anyhow::{bail, Context};

/// Options of the check.
#[derive(clap::Args)]
pub struct Args {
    /// Skip `cargo fmt --check` and clippy (tests and docs only).
    #[arg(long)]
    tests_only: bool,
}

fn cargo(args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("==> cargo {}", args.join(" "));
    let started = std::time::Instant::now();
    let status = Command::new(&cargo)
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .with_context(|| format!("could not start `{cargo}`"))?;
    eprintln!(
        "    ({:.0} s, {})",
        started.elapsed().as_secs_f64(),
        if status.success() { "ok" } else { "FAILED" }
    );
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs every check, stopping at the first failure.
pub fn run(args: Args) -> anyhow::Result<()> {
    if !args.tests_only {
        cargo(&["fmt", "--all", "--check"], &[])?;
        cargo(
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )?;
    }
    cargo(&["test", "--workspace", "--all-targets"], &[])?;
    cargo(&["test", "--workspace", "--doc"], &[])?;
    cargo(
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    nvrtc_check()?;
    kernel_emulation_check()?;
    eprintln!("all checks passed");
    Ok(())
}

/// Runs umt-nn's CUDA kernels on a host emulation of CUDA against references written from the
/// CPU kernels (`data-prep/golden/cuda/check_kernels.cpp`); skips with a message without `g++`.
fn kernel_emulation_check() -> anyhow::Result<()> {
    let root = crate::build_cuda::workspace_root();
    let exe = root.join("target/check_kernels");
    eprintln!("==> CUDA kernels on a host emulation (g++)");
    let built = Command::new("g++")
        .args(["-std=c++20", "-O1", "-pthread", "-ffp-contract=off", "-I"])
        .arg(root.join("crates/umt-nn/src/cuda"))
        .arg(root.join("data-prep/golden/cuda/check_kernels.cpp"))
        .arg("-o")
        .arg(&exe)
        .status();
    match built {
        Err(e) => {
            eprintln!(
                "    skipped: cannot run `g++` ({e}); install it (Debian: apt-get install g++)"
            );
            return Ok(());
        }
        Ok(s) if !s.success() => bail!("check_kernels.cpp does not compile ({s})"),
        Ok(_) => {}
    }
    let status = Command::new(&exe)
        .status()
        .with_context(|| format!("could not start {}", exe.display()))?;
    if !status.success() {
        bail!(
            "umt-nn's CUDA kernels differ from the CPU references on the host emulation ({status})"
        );
    }
    Ok(())
}

/// Compiles `crates/umt-nn/src/cuda/kernels.cu` with NVRTC (no GPU needed); skips with a
/// message when `python3` or libnvrtc is missing.
fn nvrtc_check() -> anyhow::Result<()> {
    let root = crate::build_cuda::workspace_root();
    let script = root.join("data-prep/golden/cuda/check_nvrtc.py");
    let source = root.join("crates/umt-nn/src/cuda/kernels.cu");
    let wheel = root.join("target/nvrtc");
    let python = std::env::var("UMT_PYTHON").unwrap_or_else(|_| "python3".into());
    eprintln!("==> NVRTC compile check of {}", source.display());
    let mut pythonpath = std::ffi::OsString::from(&wheel);
    if let Some(old) = std::env::var_os("PYTHONPATH") {
        pythonpath.push(":");
        pythonpath.push(old);
    }
    let status = match Command::new(&python)
        .arg(&script)
        .arg(&source)
        .env("PYTHONPATH", pythonpath)
        .status()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("    skipped: cannot run `{python}` ({e})");
            return Ok(());
        }
    };
    match status.code() {
        Some(0) => eprintln!("    (ok)"),
        Some(77) => eprintln!(
            "    skipped: no libnvrtc (install it with `python3 -m pip install --target {} \
             nvidia-cuda-nvrtc==13.0.88`, as .ci/run does)",
            wheel.display()
        ),
        _ => bail!("the CUDA kernels do not compile with NVRTC ({status})"),
    }
    Ok(())
}
