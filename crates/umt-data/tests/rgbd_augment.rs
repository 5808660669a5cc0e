//! ESANet augmentation and normalisation: property tests of the index arithmetic (scale, crop,
//! nearest/linear source indices), labels never interpolated, determinism, HSV round trip.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use umt_data::rgbd::augment::{
    augment_train, crop, crop_plan, flip_horizontal, hsv_jitter, hsv_to_rgb, linear_source,
    nearest_source, resize_bilinear, resize_eval, resize_nearest, rgb_to_hsv, scaled_size,
    AugmentConfig, CropPlan, Normalization,
};
use umt_data::rgbd::{downsample_labels, RgbdSample};
use umt_data::Error;

/// A sample whose labels come from a small set and whose depth is a distinct value per pixel.
fn sample(h: usize, w: usize) -> RgbdSample {
    let plane = h * w;
    RgbdSample {
        rgb: (0..3 * plane).map(|i| (i * 37 % 256) as f32).collect(),
        depth: (0..plane).map(|i| 500.0 + i as f32).collect(),
        labels: (0..plane).map(|i| [0u8, 3, 17, 40][(i / 3) % 4]).collect(),
        height: h,
        width: w,
    }
}

proptest! {
    #[test]
    fn scaled_size_stays_in_range(h in 1usize..600, w in 1usize..800, s in 1.0f64..1.4) {
        let (sh, sw) = scaled_size(h, w, s);
        prop_assert!(sh >= h && sw >= w);
        prop_assert!(sh as f64 <= (1.4 * h as f64).ceil() && sw as f64 <= (1.4 * w as f64).ceil());
    }

    #[test]
    fn crop_window_fits_inside_the_image(
        h in 1usize..300, w in 1usize..300, ch in 1usize..200, cw in 1usize..200, seed in 0u64..1000
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        match crop_plan(h, w, ch, cw, &mut rng) {
            CropPlan::Resize => prop_assert!(h <= ch || w <= cw),
            CropPlan::Crop { top, left } => {
                prop_assert!(h > ch && w > cw);
                // np.random.randint(0, h - ch) is exclusive of h - ch
                prop_assert!(top < h - ch && left < w - cw);
                prop_assert!(top + ch <= h && left + cw <= w);
            }
        }
    }

    #[test]
    fn nearest_sources_are_in_range_and_monotone(n_in in 1usize..500, n_out in 1usize..500) {
        let idx: Vec<usize> = (0..n_out).map(|d| nearest_source(d, n_in, n_out)).collect();
        prop_assert!(idx.iter().all(|&i| i < n_in));
        prop_assert!(idx.windows(2).all(|p| p[0] <= p[1]));
        prop_assert_eq!(idx[0], 0);
        if n_in == n_out {
            prop_assert!(idx.iter().enumerate().all(|(d, &i)| d == i));
        }
    }

    #[test]
    fn linear_sources_are_in_range(n_in in 1usize..500, n_out in 1usize..500) {
        for d in 0..n_out {
            let (i0, i1, f) = linear_source(d, n_in, n_out);
            prop_assert!(i0 < n_in && i1 < n_in && i0 <= i1 && i1 <= i0 + 1);
            prop_assert!((0.0..1.0).contains(&f));
        }
    }

    #[test]
    fn labels_and_depth_are_never_interpolated(
        h in 4usize..24, w in 4usize..24, oh in 4usize..20, ow in 4usize..20, seed in 0u64..500
    ) {
        let s = sample(h, w);
        let cfg = AugmentConfig::for_size(oh, ow);
        let out = augment_train(&s, &cfg, seed).unwrap();
        prop_assert_eq!((out.height, out.width), (oh, ow));
        prop_assert_eq!(out.rgb.len(), 3 * oh * ow);
        prop_assert!(out.labels.iter().all(|l| [0u8, 3, 17, 40].contains(l)));
        // every depth value is a copy of an input depth value
        prop_assert!(out.depth.iter().all(|d| s.depth.contains(d)));
        // (label, depth) pairs travel together: pixel i of the input has label [..][(i/3)%4]
        for (l, d) in out.labels.iter().zip(&out.depth) {
            let i = (*d - 500.0) as usize;
            prop_assert_eq!(*l, s.labels[i]);
        }
        prop_assert!(out.rgb.iter().all(|v| (0.0..=255.0).contains(v)));
    }

    #[test]
    fn hsv_round_trip(r in 0f32..255.0, g in 0f32..255.0, b in 0f32..255.0) {
        let (h, s, v) = rgb_to_hsv(r, g, b);
        prop_assert!((0.0..1.0).contains(&h) && (0.0..=1.0).contains(&s));
        let (r2, g2, b2) = hsv_to_rgb(h, s, v);
        prop_assert!((r - r2).abs() < 1e-2 && (g - g2).abs() < 1e-2 && (b - b2).abs() < 1e-2);
    }

    #[test]
    fn crop_then_flip_index_arithmetic(h in 2usize..12, w in 2usize..12, c in 1usize..3) {
        let data: Vec<u32> = (0..(c * h * w) as u32).collect();
        let (top, left, ch, cw) = (1, 1, h - 1, w - 1);
        let mut out = crop(&data, c, h, w, top, left, ch, cw);
        for k in 0..c {
            for y in 0..ch {
                for x in 0..cw {
                    prop_assert_eq!(out[(k * ch + y) * cw + x], data[(k * h + y + top) * w + x + left]);
                }
            }
        }
        let orig = out.clone();
        flip_horizontal(&mut out, cw);
        prop_assert_eq!(out[0], orig[cw - 1]);
        flip_horizontal(&mut out, cw);
        prop_assert_eq!(out, orig);
    }
}

#[test]
fn augmentation_is_deterministic_by_seed() {
    let s = sample(12, 16);
    let cfg = AugmentConfig::for_size(8, 12);
    let a = augment_train(&s, &cfg, 42).unwrap();
    let b = augment_train(&s, &cfg, 42).unwrap();
    assert_eq!(a, b);
    let differs = (0..20).any(|seed| augment_train(&s, &cfg, seed).unwrap() != a);
    assert!(differs);
}

#[test]
fn identity_augmentation_keeps_the_sample() {
    // scale 1, no jitter, no flip, crop size = image size -> resize to the same size: no-op
    let s = sample(8, 10);
    let cfg = AugmentConfig {
        scale_min: 1.0,
        scale_max: 1.0,
        hue_factor_min: 1.0,
        hue_factor_max: 1.0,
        saturation_factor_min: 1.0,
        saturation_factor_max: 1.0,
        value_shift_max: 0.0,
        horizontal_flip: false,
        ..AugmentConfig::for_size(8, 10)
    };
    let out = augment_train(&s, &cfg, 3).unwrap();
    assert_eq!(out.labels, s.labels);
    assert_eq!(out.depth, s.depth);
    for (a, b) in out.rgb.iter().zip(&s.rgb) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
}

#[test]
fn bilinear_matches_cv2_on_a_2x_upscale() {
    // cv2.resize(np.array([[0, 10]], np.float32), (4, 1), interpolation=cv2.INTER_LINEAR)
    // = [[0, 2.5, 7.5, 10]]
    let out = resize_bilinear(&[0.0, 10.0], 1, 1, 2, 1, 4);
    assert_eq!(out, vec![0.0, 2.5, 7.5, 10.0]);
    // cv2 INTER_NEAREST of [0, 1, 2, 3] to 2 -> [0, 2]; to 8 -> each twice
    assert_eq!(resize_nearest(&[0u8, 1, 2, 3], 1, 1, 4, 1, 2), vec![0, 2]);
    assert_eq!(
        resize_nearest(&[0u8, 1, 2, 3], 1, 1, 4, 1, 8),
        vec![0, 0, 1, 1, 2, 2, 3, 3]
    );
}

#[test]
fn hsv_jitter_with_unit_factors_is_identity_and_value_shift_brightens() {
    let mut rgb = vec![10.0, 200.0, 30.0, 40.0, 50.0, 250.0];
    let orig = rgb.clone();
    hsv_jitter(&mut rgb, 2, 1.0, 1.0, 0.0);
    for (a, b) in rgb.iter().zip(&orig) {
        assert!((a - b).abs() < 1e-3);
    }
    hsv_jitter(&mut rgb, 2, 1.0, 1.0, 25.0);
    // pixel 0 = (10, 30, 50): V 50 -> 75, hue/sat kept, so every channel scales by 1.5
    assert!((rgb[4] - 75.0).abs() < 1e-3 && (rgb[0] - 15.0).abs() < 1e-3);
}

#[test]
fn normalization_uses_the_reference_constants() {
    let mut s = RgbdSample {
        rgb: vec![255.0, 0.0, 127.5],
        depth: vec![2841.9495 + 1417.2594],
        labels: vec![1],
        height: 1,
        width: 1,
    };
    Normalization::nyuv2().apply(&mut s);
    assert!((s.rgb[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
    assert!((s.rgb[1] - (0.0 - 0.456) / 0.224).abs() < 1e-5);
    assert!((s.rgb[2] - (0.5 - 0.406) / 0.225).abs() < 1e-5);
    assert!((s.depth[0] - 1.0).abs() < 1e-5);
    // raw mode: missing depth stays 0
    let mut raw = RgbdSample {
        depth: vec![0.0],
        ..s.clone()
    };
    let norm = Normalization {
        raw_depth: true,
        ..Normalization::nyuv2()
    };
    norm.apply(&mut raw);
    assert_eq!(raw.depth[0], 0.0);
}

#[test]
fn eval_resize_and_label_pyramid() {
    let s = sample(64, 96);
    let out = resize_eval(&s, 32, 48).unwrap();
    assert_eq!(out.labels.len(), 32 * 48);
    assert!(out.labels.iter().all(|l| [0u8, 3, 17, 40].contains(l)));
    assert_eq!(resize_eval(&s, 64, 96).unwrap(), s);
    assert!(matches!(
        resize_eval(&s, 0, 96),
        Err(Error::InvalidConfig { .. })
    ));
    let down = downsample_labels(&s.labels, 64, 96, 32);
    assert_eq!(down.len(), 2 * 3);
    // cv2 nearest at rate 32 reads source (32 y, 32 x)
    assert_eq!(down[4], s.labels[32 * 96 + 32]);
}

#[test]
fn invalid_augment_config_is_an_error() {
    let s = sample(8, 8);
    let cfg = AugmentConfig {
        scale_min: 1.5,
        scale_max: 1.0,
        ..AugmentConfig::for_size(8, 8)
    };
    assert!(matches!(
        augment_train(&s, &cfg, 0),
        Err(Error::InvalidConfig {
            field: "augment.scale_min/scale_max",
            ..
        })
    ));
    let bad = RgbdSample {
        labels: vec![0; 3],
        ..s
    };
    assert!(matches!(
        augment_train(&bad, &AugmentConfig::for_size(4, 4), 0),
        Err(Error::ShapeMismatch { .. })
    ));
}
