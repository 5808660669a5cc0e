//! Run-time choice of the widest vector instructions for our element-wise and reduction loops.
//!
//! The workspace compiles for the x86_64 baseline (SSE2: 4 f32 lanes), so the loops of the
//! BatchNorm, pooling and optimizer kernels were vectorised 4-wide, while `gemm` (and PyTorch)
//! pick AVX2 / AVX-512 at run time. [`best`] runs a closure inside a function compiled with
//! AVX2 + FMA when the CPU has them (8 f32 lanes): the closure, marked `#[inline(always)]` or
//! small enough to inline, is compiled into that function with the wider instructions. The
//! results are bitwise the same as the baseline build: Rust never contracts `a·b + c` into a
//! fused multiply-add on its own and the vectoriser does not reorder floating-point sums, so
//! only the instruction width changes.

/// Runs `f`, compiled for AVX2 + FMA where the CPU supports them (checked once, cached by std).
#[inline(always)]
pub(crate) fn best<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports every feature `avx2_fma` is compiled with (checked above).
            return unsafe { avx2_fma(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_fma<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    /// The dispatched closure computes the same value as the baseline one, bit for bit.
    #[test]
    fn dispatched_sum_matches_baseline() {
        let x: Vec<f32> = (0..1003).map(|i| ((i as f32) * 0.37).sin()).collect();
        let sum = |x: &[f32]| {
            let mut acc = [0f32; 8];
            for ch in x.chunks_exact(8) {
                for (a, &v) in acc.iter_mut().zip(ch) {
                    *a += v * 1.5 + 0.25;
                }
            }
            acc.iter().sum::<f32>()
        };
        assert_eq!(super::best(|| sum(&x)).to_bits(), sum(&x).to_bits());
    }
}
