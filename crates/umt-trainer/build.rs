//! Records the git commit the crate is built from (`UMT_GIT_COMMIT`), for the code version
//! stored in every teacher checkpoint. Builds outside a git checkout leave it empty.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=UMT_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves (a commit or a checkout); paths relative to this crate.
    for p in [
        "../../.git/HEAD",
        "../../.git/refs/heads",
        "../../.git/packed-refs",
    ] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
