//! STFT tests: a plain O(N^2) DFT oracle over many sizes, torch.stft golden values, and
//! property tests of the frame-count arithmetic.

mod common;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use umt_audio::{num_frames, Error, LogCompression, PadMode, Stft, StftConfig, Window};

/// Independent reference: explicit padding, explicit window, direct DFT, all in f64.
/// Returns row-major (n_freqs, frames).
fn oracle(x: &[f32], cfg: &StftConfig) -> Vec<f64> {
    let n_fft = cfg.n_fft;
    let pad = if cfg.center { n_fft / 2 } else { 0 };
    let len = x.len() as i64;
    let padded: Vec<f64> = (-(pad as i64)..len + pad as i64)
        .map(|i| {
            if (0..len).contains(&i) {
                f64::from(x[i as usize])
            } else if cfg.pad_mode == PadMode::Constant {
                0.0
            } else if i < 0 {
                f64::from(x[(-i) as usize])
            } else {
                f64::from(x[(2 * (len - 1) - i) as usize])
            }
        })
        .collect();
    let w = cfg.win_length;
    let left = (n_fft - w) / 2;
    let mut window = vec![0.0f64; n_fft];
    for n in 0..w {
        window[left + n] = match cfg.window {
            _ if w == 1 => 1.0,
            Window::HannPeriodic => {
                0.5 * (1.0 - (2.0 * std::f64::consts::PI * n as f64 / w as f64).cos())
            }
            Window::HannSymmetric => {
                0.5 * (1.0 - (2.0 * std::f64::consts::PI * n as f64 / (w - 1) as f64).cos())
            }
            Window::Rectangular => 1.0,
        };
    }
    let frames = (padded.len() - n_fft) / cfg.hop_length + 1;
    let n_freqs = n_fft / 2 + 1;
    let twiddle: Vec<(f64, f64)> = (0..n_fft)
        .map(|m| {
            let phi = -2.0 * std::f64::consts::PI * m as f64 / n_fft as f64;
            (phi.cos(), phi.sin())
        })
        .collect();
    let mut out = vec![0.0; n_freqs * frames];
    for t in 0..frames {
        let frame = &padded[t * cfg.hop_length..t * cfg.hop_length + n_fft];
        for k in 0..n_freqs {
            let (mut re, mut im) = (0.0f64, 0.0f64);
            for (n, (&s, &wn)) in frame.iter().zip(&window).enumerate() {
                let (c, si) = twiddle[k * n % n_fft];
                re += s * wn * c;
                im += s * wn * si;
            }
            let mut m = re.hypot(im);
            if let Some(LogCompression { eps }) = cfg.log {
                m = (f64::from(eps) + m).ln();
            }
            out[k * frames + t] = m;
        }
    }
    out
}

#[test]
fn matches_dft_oracle_over_many_sizes() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut checked = 0usize;
    for &n_fft in &[1usize, 2, 3, 4, 5, 7, 8, 16, 30, 31, 64, 100, 127, 128, 256] {
        for (i, &window) in [
            Window::HannPeriodic,
            Window::HannSymmetric,
            Window::Rectangular,
        ]
        .iter()
        .enumerate()
        {
            let win_length = if i == 1 { n_fft - n_fft / 3 } else { n_fft };
            for &(center, pad_mode) in &[
                (true, PadMode::Reflect),
                (true, PadMode::Constant),
                (false, PadMode::Reflect),
            ] {
                // Small hops only for small n_fft (the oracle is O(n_fft^2) per frame).
                let hops = [1usize, 3, (n_fft / 4).max(1), n_fft / 2 + 1, n_fft + 2];
                for &hop in hops.iter().filter(|&&h| h * 8 >= n_fft) {
                    let cfg = StftConfig {
                        n_fft,
                        win_length,
                        hop_length: hop,
                        window,
                        center,
                        pad_mode,
                        log: (hop == 3).then_some(LogCompression { eps: 1e-3 }),
                    };
                    let stft = Stft::new(cfg.clone()).unwrap();
                    let min = cfg.min_signal_len();
                    for len in [
                        min,
                        min + 1,
                        min + 2,
                        n_fft + 1,
                        2 * n_fft + 3,
                        3 * n_fft + 1,
                    ] {
                        let x: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
                        let got = stft.magnitude(&x).unwrap();
                        let want = oracle(&x, &cfg);
                        assert_eq!(got.as_slice().len(), want.len(), "{cfg:?} len {len}");
                        assert_eq!(got.n_freqs(), n_fft / 2 + 1);
                        for (idx, (&g, &w)) in got.as_slice().iter().zip(&want).enumerate() {
                            let tol = 2e-6 * n_fft as f64 + 1e-5 * w.abs();
                            assert!(
                                (f64::from(g) - w).abs() <= tol,
                                "{cfg:?} len {len} index {idx}: got {g}, oracle {w}"
                            );
                        }
                        checked += want.len();
                    }
                }
            }
        }
    }
    assert!(checked > 100_000, "only {checked} values checked");
}

#[test]
fn paper_clip_has_shape_513_by_313() {
    let stft = Stft::new(StftConfig::paper()).unwrap();
    let spec = stft.magnitude(&vec![0.1; 160_000]).unwrap();
    assert_eq!(spec.shape(), (513, 313));
}

#[test]
fn matches_torch_stft_golden_values() {
    let manifest = common::manifest("stft");
    let cases = manifest["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    let mut worst = 0.0f64;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let cfg = StftConfig {
            n_fft: case["n_fft"].as_u64().unwrap() as usize,
            win_length: case["win_length"].as_u64().unwrap() as usize,
            hop_length: case["hop_length"].as_u64().unwrap() as usize,
            window: serde_json::from_value(case["window"].clone()).unwrap(),
            center: case["center"].as_bool().unwrap(),
            pad_mode: serde_json::from_value(case["pad_mode"].clone()).unwrap(),
            log: None,
        };
        let x = common::read_f32le("stft", &format!("{name}.input.f32le"));
        let want = common::read_f32le("stft", &format!("{name}.output.f32le"));
        assert_eq!(x.len() as u64, case["signal_len"].as_u64().unwrap());
        let shape: Vec<usize> = serde_json::from_value(case["shape"].clone()).unwrap();
        let got = Stft::new(cfg).unwrap().magnitude(&x).unwrap();
        assert_eq!(
            [got.n_freqs(), got.n_frames()],
            [shape[0], shape[1]],
            "{name}"
        );
        let max_abs = case["max_abs"].as_f64().unwrap();
        for (i, (&g, &w)) in got.as_slice().iter().zip(&want).enumerate() {
            let err = f64::from((g - w).abs());
            worst = worst.max(err / max_abs);
            assert!(
                err <= 2e-6 * max_abs + 1e-5 * f64::from(w.abs()),
                "{name} index {i}: ours {g}, torch {w}"
            );
        }
        let sum: f64 = got.as_slice().iter().map(|&v| f64::from(v)).sum();
        let want_sum = case["sum"].as_f64().unwrap();
        assert!(
            (sum - want_sum).abs() <= 1e-5 * want_sum,
            "{name}: sum {sum} vs {want_sum}"
        );
    }
    eprintln!("worst error relative to each case's max magnitude: {worst:.2e}");
}

#[test]
fn short_signals_and_bad_configs_are_typed_errors() {
    let stft = Stft::new(StftConfig::paper()).unwrap();
    // Reflect padding of 512 needs at least 513 samples (torch raises here too).
    assert!(matches!(
        stft.magnitude(&[0.0; 512]),
        Err(Error::SignalTooShort {
            expected: 513,
            found: 512,
            ..
        })
    ));
    assert!(stft.magnitude(&[0.0; 513]).is_ok());
    let no_center = StftConfig {
        center: false,
        ..StftConfig::paper()
    };
    assert!(matches!(
        Stft::new(no_center).unwrap().magnitude(&[0.0; 1023]),
        Err(Error::SignalTooShort {
            expected: 1024,
            found: 1023,
            ..
        })
    ));
    for (cfg, field) in [
        (
            StftConfig {
                n_fft: 0,
                ..StftConfig::paper()
            },
            "n_fft",
        ),
        (
            StftConfig {
                win_length: 1025,
                ..StftConfig::paper()
            },
            "win_length",
        ),
        (
            StftConfig {
                hop_length: 0,
                ..StftConfig::paper()
            },
            "hop_length",
        ),
        (
            StftConfig {
                log: Some(LogCompression { eps: 0.0 }),
                ..StftConfig::paper()
            },
            "log.eps",
        ),
    ] {
        match Stft::new(cfg) {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected InvalidConfig, got {other:?}"),
        }
    }
    let mut out = vec![0.0; 10];
    assert!(matches!(
        stft.magnitude_into(&[0.0; 1024], &mut out, &mut stft.make_scratch()),
        Err(Error::LengthMismatch {
            expected: 1539,
            found: 10,
            ..
        })
    ));
}

#[test]
fn batch_apis_agree_with_single_clip() {
    let cfg = StftConfig {
        n_fft: 64,
        win_length: 48,
        hop_length: 16,
        log: Some(LogCompression::default()),
        ..StftConfig::paper()
    };
    let stft = Stft::new(cfg).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let clips: Vec<Vec<f32>> = (0..5)
        .map(|_| (0..700).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    let refs: Vec<&[f32]> = clips.iter().map(Vec::as_slice).collect();
    let singles: Vec<_> = refs.iter().map(|x| stft.magnitude(x).unwrap()).collect();
    assert_eq!(stft.magnitude_batch(&refs).unwrap(), singles);
    let (f, t) = singles[0].shape();
    let mut out = vec![0.0; 5 * f * t];
    stft.magnitude_batch_into(&refs, &mut out).unwrap();
    for (b, s) in singles.iter().enumerate() {
        assert_eq!(&out[b * f * t..(b + 1) * f * t], s.as_slice());
    }
    let uneven = [refs[0], &refs[1][..600]];
    assert!(matches!(
        stft.magnitude_batch_into(&uneven, &mut out),
        Err(Error::LengthMismatch {
            expected: 700,
            found: 600,
            ..
        })
    ));
}

#[test]
fn config_serde_round_trip_and_unknown_fields() {
    let cfg = StftConfig {
        log: Some(LogCompression { eps: 1e-4 }),
        ..StftConfig::paper()
    };
    let json = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<StftConfig>(&json).unwrap(), cfg);
    // Missing fields take the paper's defaults.
    assert_eq!(
        serde_json::from_str::<StftConfig>("{}").unwrap(),
        StftConfig::paper()
    );
    let err = serde_json::from_str::<StftConfig>(r#"{"nfft": 512}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `nfft`"), "{err}");
}

proptest! {
    #[test]
    fn frame_count_matches_formula_and_output(
        half_n_fft in 1usize..80,
        odd in any::<bool>(),
        hop in 1usize..200,
        extra in 0usize..600,
        center in any::<bool>(),
    ) {
        let n_fft = 2 * half_n_fft + usize::from(odd);
        let cfg = StftConfig {
            n_fft,
            win_length: n_fft,
            hop_length: hop,
            center,
            ..StftConfig::paper()
        };
        let len = cfg.min_signal_len() + extra;
        let frames = cfg.num_frames(len).unwrap();
        prop_assert_eq!(frames, num_frames(len, n_fft, hop, center));
        if center && !odd {
            prop_assert_eq!(frames, 1 + len / hop);
        }
        // The last frame fits in the padded signal and one more would not.
        let padded = if center { len + 2 * (n_fft / 2) } else { len };
        prop_assert!((frames - 1) * hop + n_fft <= padded);
        prop_assert!(frames * hop + n_fft > padded);
        let spec = Stft::new(cfg).unwrap().magnitude(&vec![0.5; len]).unwrap();
        prop_assert_eq!(spec.shape(), (n_fft / 2 + 1, frames));
    }
}
