//! numpy's `argpartition` for float32 as numpy 2.x runs it on AVX-512 CPUs,
//! emulated lane by lane: it decides which equal-score spans HF returns.

/// `np.argpartition(keys, kth)` for float32 as numpy 2.x runs it on AVX-512
/// machines (x86-simd-sort `avx512_argselect`: 8-lane vectors, 4x unrolled
/// partition, median-of-8 pivots), emulated lane by lane. Sub-arrays of at
/// most 256 elements, sorted there by bitonic networks, are sorted stably
/// here instead (this order matters only among equal keys).
pub(super) fn np_argpartition(keys: &[f32], kth: usize) -> Vec<usize> {
    let n = keys.len();
    let mut arg: Vec<usize> = (0..n).collect();
    if n > 1 {
        let max_iters = 2 * ((n as f64).log2() as i64);
        argselect(keys, &mut arg, kth, 0, n - 1, max_iters);
    }
    arg
}

fn argselect(
    arr: &[f32],
    arg: &mut [usize],
    pos: usize,
    left: usize,
    right: usize,
    max_iters: i64,
) {
    if max_iters <= 0 || right + 1 - left <= 256 {
        arg[left..=right].sort_by(|&a, &b| {
            arr[a]
                .partial_cmp(&arr[b])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        return;
    }
    let pivot = {
        let size = (right - left) / 8;
        let mut s: Vec<f32> = (1..=8).map(|k| arr[arg[left + k * size]]).collect();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        s[4]
    };
    let (pivot_index, smallest, biggest) = partition_unrolled(arr, arg, left, right + 1, pivot);
    if pivot != smallest && pos < pivot_index {
        argselect(arr, arg, pos, left, pivot_index - 1, max_iters - 1);
    } else if pivot != biggest && pos >= pivot_index {
        argselect(arr, arg, pos, pivot_index, right, max_iters - 1);
    }
}

const LANES: usize = 8;
const UNROLL: usize = 4;

/// One vector's partition: lanes below the pivot compress-stored at
/// `l_store`, the others at `r_end - count`; returns that count.
// `!(a >= b)` on purpose: NaN goes where numpy's AVX-512 compare puts it.
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn partition_vec(
    arr: &[f32],
    arg: &mut [usize],
    l_store: usize,
    r_end: usize,
    v: &[usize; LANES],
    pivot: f32,
) -> usize {
    let ge: Vec<usize> = v.iter().copied().filter(|&a| arr[a] >= pivot).collect();
    let lt: Vec<usize> = v.iter().copied().filter(|&a| !(arr[a] >= pivot)).collect();
    arg[l_store..l_store + lt.len()].copy_from_slice(&lt);
    arg[r_end - ge.len()..r_end].copy_from_slice(&ge);
    ge.len()
}

/// x86-simd-sort's `partition_avx512_unrolled<.., 4>` over arg[left..right)
/// (only reached with more than 256 elements).
#[allow(clippy::neg_cmp_op_on_partial_ord)]
fn partition_unrolled(
    arr: &[f32],
    arg: &mut [usize],
    mut left: usize,
    mut right: usize,
    pivot: f32,
) -> (usize, f32, f32) {
    let mut smallest = f32::INFINITY;
    let mut biggest = f32::NEG_INFINITY;
    let seen = |x: f32, s: &mut f32, b: &mut f32| {
        if x < *s {
            *s = x;
        }
        if *b < x {
            *b = x;
        }
    };
    for _ in 0..(right - left) % (UNROLL * LANES) {
        let x = arr[arg[left]];
        seen(x, &mut smallest, &mut biggest);
        if !(x < pivot) {
            right -= 1;
            arg.swap(left, right);
        } else {
            left += 1;
        }
    }
    if left == right {
        return (left, smallest, biggest);
    }
    let load =
        |arg: &[usize], at: usize| -> [usize; LANES] { arg[at..at + LANES].try_into().unwrap() };
    let vec_left: Vec<[usize; LANES]> =
        (0..UNROLL).map(|ii| load(arg, left + LANES * ii)).collect();
    let vec_right: Vec<[usize; LANES]> = (0..UNROLL)
        .map(|ii| load(arg, right - LANES * (UNROLL - ii)))
        .collect();
    let mut r_store = right - LANES;
    let mut l_store = left;
    left += UNROLL * LANES;
    right -= UNROLL * LANES;
    let step = |arg: &mut [usize],
                v: &[usize; LANES],
                l_store: &mut usize,
                r_store: &mut usize,
                s: &mut f32,
                b: &mut f32| {
        for &a in v {
            seen(arr[a], s, b);
        }
        let amount = partition_vec(arr, arg, *l_store, *r_store + LANES, v, pivot);
        *l_store += LANES - amount;
        *r_store -= amount;
    };
    while right != left {
        let vs: Vec<[usize; LANES]> = if (r_store + LANES) - right < left - l_store {
            right -= UNROLL * LANES;
            (0..UNROLL)
                .map(|ii| load(arg, right + ii * LANES))
                .collect()
        } else {
            let v = (0..UNROLL).map(|ii| load(arg, left + ii * LANES)).collect();
            left += UNROLL * LANES;
            v
        };
        for v in &vs {
            step(
                arg,
                v,
                &mut l_store,
                &mut r_store,
                &mut smallest,
                &mut biggest,
            );
        }
    }
    for v in vec_left.iter().chain(&vec_right) {
        step(
            arg,
            v,
            &mut l_store,
            &mut r_store,
            &mut smallest,
            &mut biggest,
        );
    }
    (l_store, smallest, biggest)
}
