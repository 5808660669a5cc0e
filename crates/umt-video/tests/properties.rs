//! Property tests for frame sampling and natural ordering.

// Test helpers outside #[test] fns (fixture readers, proptest bodies) fail the test on error.
#![allow(clippy::unwrap_used)]

use std::cmp::Ordering;

use proptest::prelude::*;
use umt_video::{clip_seed, natural_cmp, sample_indices, Sampling, VideoError};

fn sampling() -> impl Strategy<Value = Sampling> {
    prop_oneof![
        Just(Sampling::Eval),
        any::<u64>().prop_map(|seed| Sampling::Train { seed }),
    ]
}

/// Frame `index` covers `[index, index + 1)`; segment `i` is `[i·L/N, (i+1)·L/N)`. They
/// overlap iff `index·N < (i+1)·L` and `(index+1)·N > i·L`.
fn overlaps_segment(index: usize, i: usize, l: usize, n: usize) -> bool {
    index * n < (i + 1) * l && (index + 1) * n > i * l
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn indices_sorted_in_range_of_length_n(l in 1usize..400, n in 1usize..80, s in sampling()) {
        let idx = sample_indices(l, n, s).unwrap();
        prop_assert_eq!(idx.len(), n);
        prop_assert!(idx.windows(2).all(|w| w[0] <= w[1]), "not sorted: {:?}", idx);
        prop_assert!(idx.iter().all(|&i| i < l), "out of range: {:?}", idx);
    }

    #[test]
    fn each_index_lies_in_its_segment(l in 1usize..400, n in 1usize..80, s in sampling()) {
        let idx = sample_indices(l, n, s).unwrap();
        for (i, &k) in idx.iter().enumerate() {
            prop_assert!(overlaps_segment(k, i, l, n), "index {} = {} outside segment (L={}, N={})", i, k, l, n);
        }
    }

    #[test]
    fn segments_partition_clip_when_long_enough(l in 1usize..400, n in 1usize..80, seed in any::<u64>()) {
        prop_assume!(l >= n);
        // Evaluation: distinct indices, one per segment.
        let eval = sample_indices(l, n, Sampling::Eval).unwrap();
        prop_assert!(eval.windows(2).all(|w| w[0] < w[1]), "eval not distinct: {:?}", eval);
        // Training: each index is inside its segment's integer range
        // [floor(i·L/N), ceil((i+1)·L/N) - 1], and distinct when N divides L.
        let train = sample_indices(l, n, Sampling::Train { seed }).unwrap();
        for (i, &k) in train.iter().enumerate() {
            prop_assert!(k >= i * l / n && k < ((i + 1) * l).div_ceil(n));
        }
        if l % n == 0 {
            prop_assert!(train.windows(2).all(|w| w[0] < w[1]), "train not distinct: {:?}", train);
        }
    }

    #[test]
    fn eval_is_centred(l in 1usize..400, n in 1usize..80) {
        let idx = sample_indices(l, n, Sampling::Eval).unwrap();
        for i in 0..n {
            let sum = idx[i] + idx[n - 1 - i];
            prop_assert!(sum == l - 1 || sum == l, "not symmetric: {:?} (L={})", idx, l);
        }
        // Exactly the integer form of floor((i + 0.5) L / N).
        for (i, &k) in idx.iter().enumerate() {
            prop_assert_eq!(k, ((2 * i + 1) * l) / (2 * n));
        }
    }

    #[test]
    fn short_clips_repeat_in_order(l in 1usize..40, extra in 1usize..60, s in sampling()) {
        let n = l + extra;
        let idx = sample_indices(l, n, s).unwrap();
        // Evaluation uses every frame, in order (0, 0, 1, 1, 2, …); training may skip one
        // frame (steps of 2) but never more, since neighbouring points are < 2·L/N < 2 apart.
        let max_step = if s == Sampling::Eval { 1 } else { 2 };
        prop_assert!(idx.windows(2).all(|w| w[0] <= w[1] && w[1] - w[0] <= max_step), "{:?}", idx);
        prop_assert_eq!(idx[0], 0);
        if s == Sampling::Eval {
            prop_assert_eq!(*idx.last().unwrap(), l - 1);
        }
    }

    #[test]
    fn train_is_deterministic_per_seed(l in 1usize..400, n in 1usize..80, seed in any::<u64>()) {
        let a = sample_indices(l, n, Sampling::Train { seed }).unwrap();
        let b = sample_indices(l, n, Sampling::Train { seed }).unwrap();
        prop_assert_eq!(a, b);
    }

    #[test]
    fn natural_cmp_is_a_total_order(a in "[a-c0-2_]{0,6}", b in "[a-c0-2_]{0,6}", c in "[a-c0-2_]{0,6}") {
        prop_assert_eq!(natural_cmp(&a, &b), natural_cmp(&b, &a).reverse());
        prop_assert_eq!(natural_cmp(&a, &b) == Ordering::Equal, a == b);
        if natural_cmp(&a, &b) != Ordering::Greater && natural_cmp(&b, &c) != Ordering::Greater {
            prop_assert_ne!(natural_cmp(&a, &c), Ordering::Greater);
        }
    }

    #[test]
    fn natural_cmp_orders_numbers_by_value(x in 0u64..1_000_000, y in 0u64..1_000_000, pad in 0usize..4) {
        let a = format!("frame_{x:0pad$}.jpg");
        let b = format!("frame_{y:0pad$}.jpg");
        if x != y {
            prop_assert_eq!(natural_cmp(&a, &b), x.cmp(&y));
        }
    }
}

#[test]
fn eval_examples() {
    assert_eq!(
        sample_indices(10, 5, Sampling::Eval).unwrap(),
        [1, 3, 5, 7, 9]
    );
    assert_eq!(
        sample_indices(64, 4, Sampling::Eval).unwrap(),
        [8, 24, 40, 56]
    );
    assert_eq!(sample_indices(1, 3, Sampling::Eval).unwrap(), [0, 0, 0]);
    assert_eq!(
        sample_indices(3, 6, Sampling::Eval).unwrap(),
        [0, 0, 1, 1, 2, 2]
    );
    assert_eq!(sample_indices(7, 1, Sampling::Eval).unwrap(), [3]);
}

#[test]
fn train_depends_on_seed() {
    let a = sample_indices(1000, 32, Sampling::Train { seed: 1 }).unwrap();
    let b = sample_indices(1000, 32, Sampling::Train { seed: 2 }).unwrap();
    assert_ne!(a, b);
    assert_ne!(clip_seed(0, 0, 1), clip_seed(0, 0, 2));
    assert_ne!(clip_seed(0, 1, 0), clip_seed(0, 0, 1));
    assert_eq!(clip_seed(5, 6, 7), clip_seed(5, 6, 7));
}

#[test]
fn zero_counts_are_errors() {
    for (l, n, field) in [(10, 0, "num_frames"), (0, 4, "num_available")] {
        match sample_indices(l, n, Sampling::Eval) {
            Err(VideoError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidConfig for L={l} N={n}, got {other:?}"),
        }
    }
}

#[test]
fn natural_order_examples() {
    let mut names = vec![
        "frame_10.jpg",
        "frame_2.jpg",
        "frame_1.jpg",
        "frame_01.jpg",
        "frame_100.png",
        "frame_0002.jpg",
        "b.png",
        "a.png",
        "B.png",
        "frame_9.JPG",
    ];
    names.sort_by(|a, b| natural_cmp(a, b));
    assert_eq!(
        names,
        [
            "B.png",
            "a.png",
            "b.png",
            "frame_1.jpg",
            "frame_01.jpg",
            "frame_2.jpg",
            "frame_0002.jpg",
            "frame_9.JPG",
            "frame_10.jpg",
            "frame_100.png",
        ]
    );
    // Numbers beyond u64 compare by value too.
    assert_eq!(
        natural_cmp("x_99999999999999999999999", "x_100000000000000000000000"),
        Ordering::Less
    );
}
