#!/usr/bin/env python3
"""Fits Q for the vector GELU in src/backend/cpu/simd.rs (ERFC_Q):
erfc(z) = t exp(-z^2 + Q(t - 2/3)), t = 1/(1 + z/2), on z in [0, 4].
Minimax on Q's absolute error (= erfc's relative error) by Lawson's
reweighted least squares in f64; prints the coefficients rounded to f32
(highest degree first, as the Horner loop reads them) and the relative
error of erfc they give before f32 evaluation. Needs numpy and scipy
(e.g. /work/venv-ref or .venv-bench).

    python scripts/fit_erfc.py [--degree 8]
"""
import argparse

import numpy as np
from scipy.special import erfc


def fit(deg, zmax=4.0):
    t = np.linspace(1 / (1 + zmax / 2), 1.0, 20001)
    z = 2 / t - 2
    g = np.log(erfc(z) / t) + z * z
    c = 2.0 / 3.0
    s = t - c
    v = np.vander(s, deg + 1)
    w = np.ones_like(s)
    for _ in range(60):
        sw = np.sqrt(w)
        coef, *_ = np.linalg.lstsq(v * sw[:, None], g * sw, rcond=None)
        err = np.abs(v @ coef - g)
        w = w * err
        w /= w.sum()
    coef32 = coef.astype(np.float32).astype(np.float64)
    q = np.zeros_like(s)
    for a in coef32:
        q = q * s + a
    rel = np.abs(np.exp(q - z * z) * t / erfc(z) - 1)
    return coef32, rel.max()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--degree", type=int, default=8)
    args = ap.parse_args()
    coef, rel = fit(args.degree)
    print(f"erfc relative error {rel:.3g} (f32 coefficients, f64 evaluation)")
    for a in coef:
        print(f"    {float(np.float32(a))!r},")


if __name__ == "__main__":
    main()
