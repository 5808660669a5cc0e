//! Band-limited polyphase resampling, equivalent to `scipy.signal.resample_poly(x, up, down)`
//! with its defaults (window `('kaiser', 5.0)`, zero padding outside the signal).
//!
//! For a rate change `from_hz -> to_hz`, `up = to_hz / g` and `down = from_hz / g` with
//! `g = gcd(from_hz, to_hz)`. The anti-aliasing filter is scipy's
//! `firwin(2 * half_len + 1, 1 / max(up, down), window=('kaiser', 5.0))` with
//! `half_len = 10 * max(up, down)`, normalised to unit DC gain and multiplied by `up`. The output
//! has `ceil(len * up / down)` samples and output sample `i` is centred on input position
//! `i * down / up` (the same alignment as scipy, so no delay is introduced).
//!
//! The filter is designed once per rate pair in [`Resampler::new`] and stored split into its
//! `up` polyphase branches; [`Resampler::process`] then costs about `(2 * half_len + 1) / up`
//! multiply-adds per output sample.

use crate::error::{Error, Result};

/// Kaiser window parameter of scipy's default `window=('kaiser', 5.0)`.
const KAISER_BETA: f64 = 5.0;
/// scipy: `half_len = 10 * max_rate` ("reasonable cutoff for sinc-like function").
const HALF_LEN_PER_RATE: usize = 10;

/// A planned resampler for one `(from_hz, to_hz)` pair. Cheap to share between threads.
#[derive(Debug, Clone)]
pub struct Resampler {
    from_hz: u32,
    to_hz: u32,
    up: usize,
    down: usize,
    half_len: usize,
    /// `phases[r]` holds taps `h[r], h[r + up], h[r + 2 up], ...` (polyphase branch `r`).
    phases: Vec<Vec<f32>>,
}

impl Resampler {
    /// Designs the filter for `from_hz -> to_hz`. Both rates must be positive.
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self> {
        for (field, value) in [("from_hz", from_hz), ("to_hz", to_hz)] {
            if value == 0 {
                return Err(Error::InvalidConfig {
                    field,
                    expected: "a sample rate > 0 Hz".to_owned(),
                    found: "0".to_owned(),
                });
            }
        }
        let g = gcd(u64::from(from_hz), u64::from(to_hz));
        let up = (u64::from(to_hz) / g) as usize;
        let down = (u64::from(from_hz) / g) as usize;
        if up == 1 && down == 1 {
            return Ok(Self {
                from_hz,
                to_hz,
                up,
                down,
                half_len: 0,
                phases: vec![vec![1.0]],
            });
        }
        let max_rate = up.max(down);
        let half_len = HALF_LEN_PER_RATE * max_rate;
        let taps = lowpass_taps(2 * half_len + 1, 1.0 / max_rate as f64);
        let gain = up as f64;
        let phases = (0..up)
            .map(|r| {
                taps.iter()
                    .skip(r)
                    .step_by(up)
                    .map(|&t| (t * gain) as f32)
                    .collect()
            })
            .collect();
        Ok(Self {
            from_hz,
            to_hz,
            up,
            down,
            half_len,
            phases,
        })
    }

    /// Input rate in Hz.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output rate in Hz.
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// The reduced ratio `(up, down)`.
    pub fn ratio(&self) -> (usize, usize) {
        (self.up, self.down)
    }

    /// Number of output samples for `input_len` input samples: `ceil(input_len * up / down)`.
    pub fn output_len(&self, input_len: usize) -> usize {
        (input_len * self.up).div_ceil(self.down)
    }

    /// Resamples `x`, returning [`Resampler::output_len`] samples.
    pub fn process(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; self.output_len(x.len())];
        self.process_into(x, &mut out);
        out
    }

    /// Resamples `x` into `out`, which must hold exactly [`Resampler::output_len`] samples
    /// (otherwise only `min(out.len(), output_len)` samples are written).
    pub fn process_into(&self, x: &[f32], out: &mut [f32]) {
        if self.up == 1 && self.down == 1 {
            let n = out.len().min(x.len());
            out[..n].copy_from_slice(&x[..n]);
            return;
        }
        let n_in = x.len();
        for (i, y) in out.iter_mut().enumerate() {
            // Position of output i on the up-sampled grid, shifted by the filter's centre:
            // y[i] = sum_k x[k] h[t - k up] with t = i down + half_len.
            let t = i * self.down + self.half_len;
            let k_max = t / self.up;
            let phase = &self.phases[t - k_max * self.up];
            // Taps j pair with x[k_max - j]; skip those past the end of the input and stop at
            // x[0] (zero padding on both sides, as scipy's `padtype='constant'`).
            let j_start = (k_max + 1).saturating_sub(n_in);
            let j_end = phase.len().min(k_max + 1);
            let mut acc = 0.0f32;
            for (j, &h) in phase.iter().enumerate().take(j_end).skip(j_start) {
                acc += h * x[k_max - j];
            }
            *y = acc;
        }
    }
}

/// `scipy.signal.firwin(num_taps, cutoff, window=('kaiser', KAISER_BETA))` for a low-pass
/// filter (`cutoff` relative to Nyquist), scaled to unit gain at DC.
fn lowpass_taps(num_taps: usize, cutoff: f64) -> Vec<f64> {
    let alpha = 0.5 * (num_taps as f64 - 1.0);
    let i0_beta = bessel_i0(KAISER_BETA);
    let mut h: Vec<f64> = (0..num_taps)
        .map(|n| {
            let m = n as f64 - alpha;
            let ideal = cutoff * sinc(cutoff * m);
            // Symmetric Kaiser window (scipy `get_window(..., fftbins=False)`).
            let r = if num_taps > 1 {
                2.0 * n as f64 / (num_taps as f64 - 1.0) - 1.0
            } else {
                0.0
            };
            let w = bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
            ideal * w
        })
        .collect();
    let sum: f64 = h.iter().sum();
    for v in &mut h {
        *v /= sum;
    }
    h
}

/// Normalised sinc, `sin(pi x) / (pi x)` (numpy's `sinc`).
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// Modified Bessel function of the first kind, order 0, by its power series (converges
/// quickly for the arguments used here, |x| <= 5).
fn bessel_i0(x: f64) -> f64 {
    let q = 0.25 * x * x;
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..200 {
        term *= q / (k as f64 * k as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bessel_i0_matches_known_values() {
        // Abramowitz & Stegun table 9.8: I0(1) = 1.2660658777, I0(5) = 27.239871823.
        assert!((bessel_i0(1.0) - 1.266_065_877_7).abs() < 1e-9);
        assert!((bessel_i0(5.0) - 27.239_871_823).abs() < 1e-7);
        assert_eq!(bessel_i0(0.0), 1.0);
    }

    #[test]
    fn ratio_is_reduced_by_gcd() {
        let r = Resampler::new(44_100, 16_000).unwrap();
        assert_eq!(r.ratio(), (160, 441));
        assert_eq!(r.output_len(44_100), 16_000);
        assert_eq!(r.output_len(1), 1);
        let r = Resampler::new(8_000, 16_000).unwrap();
        assert_eq!(r.ratio(), (2, 1));
    }

    #[test]
    fn identity_rate_copies() {
        let r = Resampler::new(16_000, 16_000).unwrap();
        let x = [0.5, -0.25, 1.0];
        assert_eq!(r.process(&x), x.to_vec());
    }

    #[test]
    fn zero_rate_is_an_error() {
        assert!(matches!(
            Resampler::new(0, 16_000),
            Err(Error::InvalidConfig {
                field: "from_hz",
                ..
            })
        ));
    }

    #[test]
    fn dc_gain_is_one_in_the_interior() {
        let r = Resampler::new(48_000, 16_000).unwrap();
        let y = r.process(&vec![1.0; 4_800]);
        // Away from the edges (the filter spans 10 * max(up, down) input samples each side).
        for v in &y[100..1_500] {
            assert!((v - 1.0).abs() < 1e-3, "{v}");
        }
    }
}
