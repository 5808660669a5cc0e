//! glibc `malloc` settings for training loops that allocate and free the same large buffers
//! every step.
//!
//! candle allocates a fresh buffer for every op output and every gradient. With glibc's
//! defaults, buffers above a dynamic threshold (128 KiB at start-up) are `mmap`ed and returned
//! to the kernel when freed, and freed memory at the top of the heap is trimmed, so every step
//! page-faults its working set in again: on this project's 2-core VM about 7,400 minor faults
//! per ResNet18 training step at 3×64×64, batch 16 (`/usr/bin/time`, docs/performance.md,
//! "Allocator"). [`retain_freed_memory`] keeps freed memory in the process for reuse instead.

/// Largest block glibc then serves from its heaps instead of `mmap` (32 MiB, the largest value
/// glibc accepts on 64-bit targets: half its 64 MiB per-thread heap).
pub const MMAP_THRESHOLD_BYTES: usize = 32 << 20;

/// Sets glibc's `M_MMAP_THRESHOLD` to [`MMAP_THRESHOLD_BYTES`] and `M_TRIM_THRESHOLD` to 2 GiB
/// (`mallopt`), so that freed buffers are reused by the next step instead of being returned to
/// the kernel and faulted in again. The price is resident memory: the process keeps its peak
/// working set (+6 MiB at 3×64×64, +120 MiB at the audio shape 1×513×313, batch 4, measured).
///
/// Does nothing, and returns `false`, when the user configured glibc's allocator through the
/// environment (`GLIBC_TUNABLES`, `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_`), or on
/// targets other than Linux with glibc. Call it once at start-up, before the first large
/// allocation; the `umt` binary does.
pub fn retain_freed_memory() -> bool {
    let user_set = [
        "GLIBC_TUNABLES",
        "MALLOC_MMAP_THRESHOLD_",
        "MALLOC_TRIM_THRESHOLD_",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    !user_set && set_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> bool {
    // SAFETY: mallopt only changes glibc's allocator parameters; both values are in range
    // (glibc rejects, and returns 0 for, an mmap threshold above half its heap size).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> bool {
    false
}

#[cfg(test)]
mod tests {
    /// glibc accepts both values (a rejected value would make the function return false).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_thresholds() {
        if std::env::var_os("GLIBC_TUNABLES").is_some() {
            eprintln!("skipped: GLIBC_TUNABLES is set, retain_freed_memory leaves malloc alone");
            return;
        }
        assert!(super::retain_freed_memory());
    }
}
