//! The switch for umt-nn's own CUDA kernels (feature `cuda`): the fused training BatchNorm
//! (+ residual + ReLU) of [`crate::norm`], the max pool of [`crate::pool`] and the fused SGD /
//! Adam / AdamW steps of [`crate::optim`] on CUDA f32/f64 tensors.
//!
//! **Off by default** until they have been checked on a GPU: they compile in the CUDA build,
//! their source compiles with NVRTC 13.0 and, run on a host emulation of CUDA, they match the
//! CPU kernels (both checks in `cargo xtask ci`), and `tests/cuda.rs` compares each against the
//! CPU kernels on a GPU — but no GPU was available to run that comparison when they were
//! written (see `docs/gpu.md`). Off, CUDA tensors take candle's device-generic ops, as before. Turn them on
//! with [`set_custom_kernels`] or the environment variable `UMT_CUDA_KERNELS=1` (read once, at
//! the first query; `1`/`true`/`on` and `0`/`false`/`off`, case-insensitive). Without the
//! `cuda` feature the switch only records the setting.
//!
//! ```
//! umt_nn::gpu::set_custom_kernels(true);
//! assert!(umt_nn::gpu::custom_kernels());
//! umt_nn::gpu::set_custom_kernels(false);
//! assert!(!umt_nn::gpu::custom_kernels());
//! ```

use std::sync::atomic::{AtomicU8, Ordering};

/// The environment variable read at the first query.
pub const ENV_VAR: &str = "UMT_CUDA_KERNELS";

const UNSET: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNSET);

/// Turns umt-nn's own CUDA kernels on or off for the whole process.
pub fn set_custom_kernels(on: bool) {
    STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
}

/// Whether umt-nn's own CUDA kernels are on (see the module docs).
pub fn custom_kernels() -> bool {
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let on = parse_env(std::env::var(ENV_VAR).ok().as_deref());
            // A concurrent `set_custom_kernels` wins over the environment.
            let _ = STATE.compare_exchange(
                UNSET,
                if on { ON } else { OFF },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            STATE.load(Ordering::Relaxed) == ON
        }
    }
}

/// `UMT_CUDA_KERNELS`'s value → on/off; anything unrecognised is off, with a warning on stderr
/// naming the variable (a library cannot return an error from a global switch).
fn parse_env(value: Option<&str>) -> bool {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) => match v.as_str() {
            "1" | "true" | "on" => true,
            "" | "0" | "false" | "off" => false,
            other => {
                eprintln!(
                    "warning: {ENV_VAR}={other:?} is not one of 1/true/on or 0/false/off: \
                     umt-nn's CUDA kernels stay off"
                );
                false
            }
        },
    }
}

/// Whether `t` should take umt-nn's own CUDA kernels: the `cuda` feature, a CUDA tensor of
/// dtype f32 or f64, and the switch on.
pub(crate) fn use_kernels(t: &candle_core::Tensor) -> bool {
    cfg!(feature = "cuda")
        && t.device().is_cuda()
        && matches!(t.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
        && custom_kernels()
}

#[cfg(test)]
mod tests {
    use super::parse_env;

    #[test]
    fn env_values() {
        for on in ["1", "true", "ON", " on "] {
            assert!(parse_env(Some(on)), "{on}");
        }
        for off in ["0", "false", "Off", ""] {
            assert!(!parse_env(Some(off)), "{off}");
        }
        assert!(!parse_env(None));
        assert!(!parse_env(Some("yes please")));
    }
}
