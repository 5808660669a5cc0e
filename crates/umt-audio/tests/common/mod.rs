//! Helpers shared by the integration tests: reading the committed golden fixtures.

#![allow(dead_code)]

use std::path::PathBuf;

/// `data-prep/golden/<topic>/` of the workspace.
pub fn golden_dir(topic: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data-prep/golden")
        .join(topic)
}

/// Reads a little-endian f32 file of the fixture.
pub fn read_f32le(topic: &str, file: &str) -> Vec<f32> {
    let path = golden_dir(topic).join(file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(bytes.len() % 4, 0, "{}", path.display());
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The fixture's `fixture.json` manifest.
pub fn manifest(topic: &str) -> serde_json::Value {
    let path = golden_dir(topic).join("fixture.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture.json is valid JSON")
}
