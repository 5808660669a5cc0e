//! Flush-to-zero / denormals-are-zero for CPU training.

/// Sets the FTZ (flush-to-zero) and DAZ (denormals-are-zero) bits of MXCSR on the calling thread
/// and on every thread of rayon's global pool, so subnormal activations and gradients (which
/// appear as training converges and make every multiply-add an order of magnitude slower) are
/// treated as zero. The bits are per thread: call it once at start-up from the thread that
/// trains, after any custom rayon pool is built. Mirrors `torch.set_flush_denormal(True)`.
///
/// On targets other than x86_64 this does nothing.
pub fn enable_flush_to_zero() {
    set_current_thread();
    rayon::broadcast(|_| set_current_thread());
}

#[cfg(target_arch = "x86_64")]
fn set_current_thread() {
    /// MXCSR bit 15 (FTZ) and bit 6 (DAZ).
    const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);
    let mut csr: u32 = 0;
    // SAFETY: stmxcsr/ldmxcsr only read and write the SSE control register of this thread and
    // the 4-byte local `csr`; SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
        csr |= FTZ_DAZ;
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags, readonly));
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn set_current_thread() {}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn subnormals_flush_to_zero_after_enabling() {
        std::thread::spawn(|| {
            enable_flush_to_zero();
            let tiny = std::hint::black_box(f32::MIN_POSITIVE);
            // Without FTZ, MIN_POSITIVE / 4 is a nonzero subnormal.
            assert_eq!(std::hint::black_box(tiny / 4.0), 0.0);
        })
        .join()
        .expect("thread runs");
    }
}
