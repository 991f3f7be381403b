#!/usr/bin/env python3
"""FLOPs, bytes and predicted kernel times of bertrt's fp16 forward pass on an
H100 / H200: the numbers behind docs/perf/gpu-model.md (which this prints).

Everything here is arithmetic on the model shapes plus the stated hardware
figures and assumptions; nothing is measured. Run: python3 scripts/gpu_model.py
"""

# Hardware. Dense fp16 tensor-core peak from the H100 SXM datasheet (the H200
# has the same SMs and clocks); "measured" is a bf16 matmul on an H200 of this
# workplace (the device tool's notes). Bandwidths: H100 SXM 3.35 TB/s, H200 4.8 TB/s.
PEAK_DATASHEET = 990e12
PEAK_MEASURED = 790e12
BW = {"H100": 3.35e12, "H200": 4.8e12}

# Assumptions to check against the first GPU record (each one a prediction):
GEMM_EFF = 0.80  # of the measured peak, for GEMMs large enough to fill 132 SMs
ATTN_EFF = 0.35  # of the measured peak: mma.sync flash attention (no wgmma), d=64
BW_EFF = 0.85  # of datasheet bandwidth, for streaming kernels
GAP_GRAPH = 1.0e-6  # per kernel node on the GPU when replaying a CUDA graph
GAP_EAGER = 4.0e-6  # per launch from the host without graphs

FP16 = 2

MODELS = {
    "bert-base": dict(H=768, L=12, I=3072, heads=12, vocab=30522),
    "bert-large": dict(H=1024, L=24, I=4096, heads=16, vocab=30522),
}

CELLS = [
    ("bert-base", 1, 128, 128),
    ("bert-base", 8, 128, 128),
    ("bert-base", 32, 128, 128),
    ("bert-base", 32, 384, 384),
    ("bert-large", 32, 384, 384),
    # SQuAD v1.1 at max 384: 54% of the tokens are padding (as reported in
    # the abstract of OpenReview 3nzKUh9a4M), so the mean packed length is
    # about 0.46 * 384 = 177 tokens.
    ("bert-large", 32, 384, 177),
]


def ops(m, b, s_max, s_mean):
    """(name, flops, bytes, kind) per kernel of one forward, all layers."""
    H, L, I = m["H"], m["L"], m["I"]
    T = b * s_mean  # packed tokens
    # Attention FLOPs: QK^T and PV, 2*s*s*d each per head = 4*s^2*H per sequence.
    # With packing, sum over sequences of s_i^2; take every sequence at s_mean.
    attn_flops = 4 * b * s_mean * s_mean * H
    per_layer = [
        ("qkv gemm (+bias)", 2 * T * H * 3 * H, FP16 * (T * H + 3 * H * H + 3 * H + 3 * T * H), "gemm"),
        ("attention", attn_flops, FP16 * (3 * T * H + T * H), "attn"),
        ("out gemm (+bias)", 2 * T * H * H, FP16 * (T * H + H * H + H + T * H), "gemm"),
        ("add residual + LN", 8 * T * H, FP16 * (3 * T * H + 2 * H), "mem"),
        ("ffn up gemm (+bias)", 2 * T * H * I, FP16 * (T * H + H * I + I + T * I), "gemm"),
        ("gelu (erf)", 10 * T * I, FP16 * 2 * T * I, "mem"),
        ("ffn down gemm (+bias)", 2 * T * I * H, FP16 * (T * I + I * H + H + T * H), "gemm"),
        ("add residual + LN", 8 * T * H, FP16 * (3 * T * H + 2 * H), "mem"),
    ]
    emb = [("embeddings + LN", 8 * T * H, FP16 * (3 * T * H + T * H) + 12 * T, "mem")]
    return emb + [(n, f * L, by * L, k) for n, f, by, k in per_layer], 1 + 8 * L


def predict(kind, flops, nbytes, bw):
    eff = {"gemm": GEMM_EFF, "attn": ATTN_EFF, "mem": 1.0}[kind]
    t_flop = flops / (PEAK_MEASURED * eff)
    t_mem = nbytes / (bw * BW_EFF)
    return max(t_flop, t_mem)


def fmt_t(t):
    return f"{t * 1e6:,.1f} µs" if t < 1e-3 else f"{t * 1e3:,.3f} ms"


def main():
    out = []
    for name, b, s_max, s_mean in CELLS:
        m = MODELS[name]
        rows, launches = ops(m, b, s_max, s_mean)
        label = f"{name} b{b}·s{s_max}" + (f" (mean {s_mean} tokens, packed)" if s_mean != s_max else "")
        out.append(f"### {label}\n")
        out.append("| op (all layers) | GFLOP | MB moved | FLOP floor (990 T) | byte floor H100 | predicted H100 | predicted H200 |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        merged = {}
        for n, f, by, k in rows:
            a = merged.setdefault(n, [0, 0, k])
            a[0] += f
            a[1] += by
        tot = {"f": 0, "b": 0, "h100": 0, "h200": 0}
        for n, (f, by, k) in merged.items():
            p100 = predict(k, f, by, BW["H100"])
            p200 = predict(k, f, by, BW["H200"])
            tot["f"] += f
            tot["b"] += by
            tot["h100"] += p100
            tot["h200"] += p200
            out.append(
                f"| {n} | {f / 1e9:,.1f} | {by / 1e6:,.1f} | {fmt_t(f / PEAK_DATASHEET)} | "
                f"{fmt_t(by / BW['H100'])} | {fmt_t(p100)} | {fmt_t(p200)} |"
            )
        floor = max(tot["f"] / PEAK_DATASHEET, tot["b"] / BW["H100"])
        g100 = tot["h100"] + launches * GAP_GRAPH
        e100 = tot["h100"] + launches * GAP_EAGER
        g200 = tot["h200"] + launches * GAP_GRAPH
        out.append(
            f"| **total** ({launches} kernels) | {tot['f'] / 1e9:,.1f} | {tot['b'] / 1e6:,.1f} | "
            f"{fmt_t(tot['f'] / PEAK_DATASHEET)} | {fmt_t(tot['b'] / BW['H100'])} | {fmt_t(tot['h100'])} | {fmt_t(tot['h200'])} |"
        )
        out.append("")
        out.append(
            f"Floor (max of FLOP and byte floors, H100): {fmt_t(floor)}. "
            f"Predicted with gaps: {fmt_t(g100)} on H100 with CUDA graphs "
            f"({launches} × {GAP_GRAPH * 1e6:.1f} µs), {fmt_t(e100)} eager "
            f"({GAP_EAGER * 1e6:.0f} µs per launch); {fmt_t(g200)} on H200 with graphs. "
            f"Throughput at the H100 graph prediction: {b / g100:,.0f} sequences/s."
        )
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
