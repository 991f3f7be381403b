//! The instruction self-tests of kernels/mma_selftest.cu through a launch
//! seam: under emulation they check the emulation's mma.sync, ldmatrix and
//! cp.async against the PTX ISA's documented behaviour; on a GPU they check
//! that the documented layouts (which the emulation follows) are the
//! hardware's.

use super::seam_kernels::{put_f16, put_u32};
use bertrt::backend::fp16::{DevPtr, Seam};
use bertrt::backend::kernels as k;
use bertrt::rng::Rng;

fn put_f32<S: Seam>(s: &S, x: &[f32]) -> DevPtr {
    put_u32(s, &x.iter().map(|v| v.to_bits()).collect::<Vec<u32>>())
}

fn get_u32<S: Seam>(s: &S, p: DevPtr, n: usize) -> Vec<u32> {
    let mut b = vec![0u8; n * 4];
    s.download(p, &mut b).unwrap();
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// One mma.sync m16n8k16 on random fp16 data equals the plain product:
/// d = a b + c, to fp32 accumulation error (the fp16 products are exact in
/// fp32; 17 terms; 1e-6 of their magnitudes).
pub fn mma_equals_a_plain_product<S: Seam>(s: &S) -> String {
    let mut rng = Rng::new(11);
    for trial in 0..4 {
        // fp16-representable values in [-1, 1).
        let mut halves = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| half::f16::from_f32(rng.unit()).to_f32())
                .collect()
        };
        let (a, b, c) = (halves(16 * 16), halves(16 * 8), halves(16 * 8));
        let d = put_f32(s, &[f32::NAN; 128]);
        let p = k::MmaSelftestParams {
            a: put_f16(s, &a),
            b: put_f16(s, &b),
            c: put_f32(s, &c),
            d,
        };
        s.launch(p, k::selftest_geometry(0)).unwrap();
        let got: Vec<f32> = get_u32(s, d, 128).into_iter().map(f32::from_bits).collect();
        for i in 0..16 {
            for j in 0..8 {
                let (mut want, mut mag) = (c[i * 8 + j] as f64, c[i * 8 + j].abs() as f64);
                for kk in 0..16 {
                    let t = a[i * 16 + kk] as f64 * b[kk * 8 + j] as f64;
                    want += t;
                    mag += t.abs();
                }
                let g = got[i * 8 + j] as f64;
                assert!(
                    (g - want).abs() <= 1e-6 * mag.max(1.0),
                    "mma trial {trial}: d[{i}][{j}] = {g}, a b + c = {want}"
                );
            }
        }
    }
    "mma.sync m16n8k16: 4 random products exact to fp32 accumulation".into()
}

/// Every ldmatrix variant (.x1/.x2/.x4, with and without .trans) gives each
/// lane the elements the PTX ISA documents: register m of lane l holds, with
/// g = l / 4 and t = l % 4, elements (g, 2t) and (g, 2t + 1) of matrix m (low
/// half first), or with .trans (2t, g) and (2t + 1, g). The kernel stores
/// value(m, row, col) = m * 64 + row * 8 + col.
pub fn ldmatrix_moves_the_documented_elements<S: Seam>(s: &S) -> String {
    let out = put_u32(s, &[0xDEAD_BEEF; 6 * 32 * 4]);
    s.launch(
        k::LdmatrixSelftestParams { out },
        k::selftest_geometry(32 * k::LDM_SELFTEST_LD * 2),
    )
    .unwrap();
    let out = get_u32(s, out, 6 * 32 * 4);
    let value = |m: u32, row: u32, col: u32| m * 64 + row * 8 + col;
    let variants = [
        (1, false),
        (2, false),
        (4, false),
        (1, true),
        (2, true),
        (4, true),
    ];
    for (v, &(num, trans)) in variants.iter().enumerate() {
        for lane in 0..32u32 {
            let (g, t) = (lane / 4, lane % 4);
            for m in 0..4u32 {
                let want = if m >= num {
                    0
                } else if trans {
                    value(m, 2 * t, g) | value(m, 2 * t + 1, g) << 16
                } else {
                    value(m, g, 2 * t) | value(m, g, 2 * t + 1) << 16
                };
                let got = out[(v * 32 + lane as usize) * 4 + m as usize];
                assert_eq!(
                    got,
                    want,
                    "ldmatrix .x{num}{}: lane {lane} register {m}: got {got:#x} (elements {}, {}), want {want:#x}",
                    if trans { ".trans" } else { "" },
                    got & 0xffff,
                    got >> 16,
                );
            }
        }
    }
    "ldmatrix: x1/x2/x4, plain and .trans, every lane's elements as documented".into()
}

/// cp.async groups: after wait_group N every committed group but the newest
/// N is complete. With `latest_completion` (the emulation, which completes
/// each copy as late as PTX allows) also: nothing is copied before its wait,
/// nor a group the wait may leave pending; on a GPU those are unspecified.
pub fn cp_async_wait_group_completes_the_older_groups<S: Seam>(
    s: &S,
    latest_completion: bool,
) -> String {
    let src: Vec<u32> = (0..32 * 12).map(|i| 0x1000 + i as u32).collect();
    let out = put_u32(s, &[0xDEAD_BEEF; 32 * 15]);
    let p = k::CpAsyncSelftestParams {
        src: put_u32(s, &src),
        out,
    };
    s.launch(p, k::selftest_geometry(32 * 48)).unwrap();
    let out = get_u32(s, out, 32 * 15);
    const OLD: u32 = 0xFFFF_FFFF;
    for lane in 0..32 {
        let copied = |chunk: usize| Some(src[lane * 12 + chunk * 4]);
        let old = if latest_completion { Some(OLD) } else { None };
        // [point][chunk] (None: unspecified): before any wait; after
        // wait_group 1; after wait_group 0 (chunk 2 not committed yet); after
        // commit + wait_group 0.
        let want = [
            [old, old, old],
            [copied(0), old, old],
            [copied(0), copied(1), old],
            [copied(0), copied(1), copied(2)],
        ];
        for (point, w) in want.iter().enumerate() {
            for (chunk, w) in w.iter().enumerate() {
                let got = out[lane * 15 + point * 3 + chunk];
                if let Some(w) = *w {
                    assert_eq!(
                        got, w,
                        "cp.async: lane {lane}, observation point {point}, chunk {chunk}: got {got:#x}, want {w:#x}"
                    );
                }
            }
        }
    }
    format!(
        "cp.async: wait_group completes the older groups{}",
        if latest_completion {
            " and nothing else"
        } else {
            ""
        }
    )
}
