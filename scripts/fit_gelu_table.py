#!/usr/bin/env python3
"""Fits the table of the bf16 path's GELU in src/backend/cpu/simd.rs
(GELU_PHI): Phi(x), the normal CDF, on [-6, 0) as 16 quartics, one per
interval of 0.375, each in t = x - (the interval's centre); GELU uses
Phi(-|x|) on both sides (x Phi(x) = x - |x| Phi(-|x|) for x >= 0). Per interval a
minimax fit by Lawson's reweighted least squares in f64; prints the
coefficients rounded to f32 as a Rust table (one row per power of t, 32
intervals across) and the largest |x Phi(x) - GELU(x)| they give on [-6, 0)
before f32 evaluation. Needs numpy and scipy (/work/venv-ref or
.venv-bench).

    python scripts/fit_gelu_table.py
"""
import numpy as np
from scipy.special import ndtr

LO, HI, N, DEG = -6.0, 0.0, 16, 4
W = (HI - LO) / N


def fit(c):
    t = np.linspace(-W / 2, W / 2, 2001)
    y = ndtr(c + t)
    v = np.vander(t, DEG + 1, increasing=True)
    w = np.ones_like(t)
    for _ in range(50):
        sw = np.sqrt(w)
        coef, *_ = np.linalg.lstsq(v * sw[:, None], y * sw, rcond=None)
        err = np.abs(v @ coef - y)
        w = w * err / err.max() + 1e-30
    return coef


def main():
    table = np.zeros((DEG + 1, N), dtype=np.float32)
    worst = 0.0
    for i in range(N):
        c = LO + (i + 0.5) * W
        coef = fit(c).astype(np.float32)
        table[:, i] = coef
        x = np.linspace(c - W / 2, c + W / 2, 4001)
        t = x - c
        phi = sum(coef[d].astype(np.float64) * t**d for d in range(DEG + 1))
        worst = max(worst, np.max(np.abs(x * phi - x * ndtr(x))))
    print(f"// max |x Phi - GELU| on [{LO}, {HI}): {worst:.3e}")
    print(f"const GELU_PHI: [[f32; {N}]; {DEG + 1}] = [")
    for d in range(DEG + 1):
        row = ", ".join(str(np.float32(v)) for v in table[d])
        print(f"    [{row}],")
    print("];")


if __name__ == "__main__":
    main()
