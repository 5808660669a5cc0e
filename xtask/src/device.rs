//! `--device cpu|cuda[:N]`, shared by every command that holds tensors.
//!
//! Without `--device`, commands run on the first GPU when the binary was built with the `cuda`
//! feature and a GPU answers, and on the CPU otherwise (what the user sees is printed).

use anyhow::Context;
use candle_core::Device;

/// Parses `cpu`, `cuda` or `cuda:N`; `None` picks the default described in the module docs.
pub fn parse(name: Option<&str>) -> anyhow::Result<Device> {
    let Some(name) = name else {
        return Ok(default_device());
    };
    match name {
        "cpu" => Ok(Device::Cpu),
        n if n == "cuda" || n.starts_with("cuda:") => {
            let ordinal = n
                .strip_prefix("cuda:")
                .unwrap_or("0")
                .parse::<usize>()
                .with_context(|| format!("--device {n}: expected cuda:N with N a GPU index"))?;
            if !cfg!(feature = "cuda") {
                anyhow::bail!(
                    "--device {n}: this binary was built without CUDA; build it with \
                     `cargo xtask build-cuda` (or `--features cuda`)"
                );
            }
            Device::new_cuda(ordinal).with_context(|| format!("--device {n}: no such GPU"))
        }
        other => anyhow::bail!("--device: unknown device `{other}`, expected cpu, cuda or cuda:N"),
    }
}

/// The first GPU in a `cuda` build where one answers, else the CPU.
fn default_device() -> Device {
    if cfg!(feature = "cuda") {
        if let Ok(d) = Device::new_cuda(0) {
            return d;
        }
    }
    Device::Cpu
}

/// `cpu` or `cuda:N`, for logs and result files.
pub fn describe(d: &Device) -> String {
    match d.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_rejects_bad_ones() {
        assert!(parse(Some("cpu")).is_ok_and(|d| d.is_cpu()));
        let err = parse(Some("tpu"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("unknown device `tpu`"), "{err}");
        let err = parse(Some("cuda:x"))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("cuda:N"), "{err}");
        if !cfg!(feature = "cuda") {
            let err = parse(Some("cuda"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("built without CUDA"), "{err}");
            assert!(parse(None).is_ok_and(|d| d.is_cpu()));
        }
    }
}
