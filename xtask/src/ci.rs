//! `cargo xtask ci`: the one check run before every commit and by `.ci/run`.
//! Cheapest first: `cargo fmt --check`, `cargo clippy -D warnings`, `cargo test`, `cargo doc`.

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
    eprintln!("all checks passed");
    Ok(())
}
