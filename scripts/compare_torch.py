#!/usr/bin/env python3
"""bertrt against PyTorch/HF transformers on the same machine, in one run.

For each preset (the configs `bertrt bench --list-presets` knows):

1. build the HF model from the preset's config.json with a fixed seed (HF's own
   random init), save it with save_pretrained (safetensors, f32) to a temp
   folder; bertrt loads that folder, so both engines hold the same weights;
2. CHECK before any speed is reported: the same token ids (several lengths,
   one batch) through bertrt (`bertrt bench --ids ... --hidden-out ...`) and
   through HF in f32; the cosine of the last hidden states must be
   >= 0.99999 (bertrt f32 on CPU) or >= 0.999 (bertrt fp16 on GPU). A preset
   that fails is reported as failed and not timed;
3. time each (batch, seq, lengths) cell: bertrt (`bertrt bench --format json`,
   which also returns the exact lengths it drew), then HF eager on the same
   lengths (padded to the longest, with an attention mask, as HF batches
   are run): f32 on CPU; fp16 + SDPA on GPU; plus torch.compile on GPU;
4. print a table (latencies, and bertrt/PyTorch latency ratios: < 1 means
   bertrt is faster) and write everything as JSON (--out).

Usage (from the repository root, after `cargo build --release`):

    python3 scripts/compare_torch.py --device cpu --presets bert-base --batch 8 --seq 128
    python3 scripts/compare_torch.py --device cuda --presets bert-base,roberta-base \\
        --cells 1x128,8x128,32x128,32x384,16x512:avg0.6 --out cmp.json

Cells: --batch x --seq (with --lengths), or --cells BxS[:LENGTHS],...
where LENGTHS is fixed, uniform or avgF, as `bertrt bench --lengths`.
Threads: --threads N sets torch.set_num_threads and RAYON_NUM_THREADS alike
(default: all logical cores). Exit status: 0 if every check passed, 1 if any
failed, 2 on usage errors.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COS_F32 = 0.99999
COS_FP16 = 0.999


def parse_cells(args):
    cells = []
    if args.cells:
        for c in args.cells.split(","):
            shape, _, lengths = c.partition(":")
            b, _, s = shape.lower().partition("x")
            cells.append((int(b), int(s), lengths or args.lengths))
    else:
        for s in args.seq.split(","):
            for b in args.batch.split(","):
                cells.append((int(b), int(s), args.lengths))
    return cells


def run(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr.strip()}")
    return p.stdout


def percentiles(ms):
    s = sorted(ms)
    def pct(p):
        import math
        return s[min(max(math.ceil(p / 100 * len(s)), 1), len(s)) - 1]
    return {"mean": sum(s) / len(s), "p50": pct(50), "p90": pct(90), "p99": pct(99), "min": s[0], "max": s[-1]}


def build_hf(preset, bertrt, seed, folder):
    cfg_text = run([bertrt, "bench", "--model", preset, "--print-config"])
    cfg_dict = json.loads(cfg_text)
    config = transformers.AutoConfig.for_model(**cfg_dict)
    arch = cfg_dict["architectures"][0]
    torch.manual_seed(seed)
    try:
        # SDPA where the HF class supports it (the fast PyTorch path).
        config._attn_implementation = "sdpa"
        model = getattr(transformers, arch)(config).eval()
    except (ValueError, ImportError):
        torch.manual_seed(seed)
        config._attn_implementation = "eager"
        model = getattr(transformers, arch)(config).eval()
    model.save_pretrained(folder)  # safetensors by default (transformers 4 and 5)
    return model, config


def random_ids(config, lengths, gen):
    """Random ids in the vocabulary, never the pad id (RoBERTa positions)."""
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    seqs = []
    for n in lengths:
        ids = torch.randint(0, config.vocab_size, (n,), generator=gen)
        ids[ids == pad] = (pad + 1) % config.vocab_size
        seqs.append(ids.tolist())
    return seqs


def padded(seqs, pad, device):
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


def check(preset, model, config, folder, args, bertrt, env, tmp):
    """Last hidden states, bertrt vs HF f32, on one batch of varied lengths."""
    max_len = min(config.max_position_embeddings - (config.pad_token_id + 1 if config.model_type in ("roberta", "xlm-roberta") else 0), 512)
    lengths = [n for n in (1, 7, 33, 128, max_len) if n <= max_len]
    gen = torch.Generator().manual_seed(args.seed + 1)
    seqs = random_ids(config, lengths, gen)
    ids_path = os.path.join(tmp, f"{preset}.ids.json")
    out_path = os.path.join(tmp, f"{preset}.hidden.f32")
    with open(ids_path, "w") as f:
        json.dump(seqs, f)
    run([bertrt, "bench", "--model", folder, "--device", args.bertrt_device, "--ids", ids_path, "--hidden-out", out_path], env=env)
    ours = np.fromfile(out_path, dtype="<f4").reshape(-1, config.hidden_size)

    dev = args.torch_device
    ref_model = model.to(dev).float()
    ids, mask = padded(seqs, config.pad_token_id or 0, dev)
    with torch.inference_mode():
        hidden = ref_model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state.float().cpu().numpy()
    ref = np.concatenate([hidden[i, : len(s)] for i, s in enumerate(seqs)])
    a, b = ours.astype(np.float64), ref.astype(np.float64)
    per_seq = []
    off = 0
    for s in seqs:
        x, y = a[off : off + len(s)].ravel(), b[off : off + len(s)].ravel()
        per_seq.append(float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))))
        off += len(s)
    cos = min(per_seq)
    threshold = COS_FP16 if args.device == "cuda" else COS_F32
    result = {
        "lengths": lengths,
        "min_cosine": cos,
        "per_sequence_cosine": per_seq,
        "max_abs_err": float(np.abs(a - b).max()),
        "threshold": threshold,
        "passed": bool(cos >= threshold and np.isfinite(a).all()),
    }
    return result


def time_hf(fn, seqs, pad, dev, warmup, iters, max_time):
    ids, mask = padded(seqs, pad, dev)
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        for _ in range(warmup):
            fn(input_ids=ids, attention_mask=mask)
        sync()
        ms = []
        start = time.perf_counter()
        for _ in range(iters):
            t = time.perf_counter()
            fn(input_ids=ids, attention_mask=mask)
            sync()
            ms.append((time.perf_counter() - t) * 1e3)
            if max_time and len(ms) >= 3 and time.perf_counter() - start > max_time:
                break
    return percentiles(ms)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--presets", default="bert-base")
    ap.add_argument("--batch", default="1,8,32")
    ap.add_argument("--seq", default="128")
    ap.add_argument("--lengths", default="fixed")
    ap.add_argument("--cells", help="BxS[:LENGTHS],... instead of --batch x --seq")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--max-time", type=float, help="seconds per cell and engine (at least 3 iterations)")
    ap.add_argument("--threads", type=int, help="CPU threads for both engines (default: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bertrt", default=os.path.join(ROOT, "target", "release", "bertrt"))
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (GPU)")
    ap.add_argument("--compile-budget", type=float, default=None,
                    help="seconds of torch.compile work in all; later cells skip compile (GPU)")
    ap.add_argument("--check-only", action="store_true", help="run the output checks, no timing")
    ap.add_argument("--out", help="write the JSON report here")
    args = ap.parse_args()
    if not os.path.exists(args.bertrt):
        sys.exit(f"compare_torch: no bertrt binary at {args.bertrt} (cargo build --release, or --bertrt PATH)")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("compare_torch: --device cuda but torch sees no CUDA device")
    cells = parse_cells(args)

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    args.torch_device = "cuda:0" if args.device == "cuda" else "cpu"
    args.bertrt_device = "cuda:0" if args.device == "cuda" else "cpu"
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    use_compile = args.device == "cuda" and not args.no_compile

    report = {
        "machine": {
            "cpu": platform.processor() or None,
            "threads": threads,
            "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "device": args.device,
        "dtype": {"bertrt": "fp16" if args.device == "cuda" else "f32", "torch": str(dtype).replace("torch.", "")},
        "settings": {"warmup": args.warmup, "iters": args.iters, "max_time": args.max_time, "seed": args.seed},
        "presets": {},
    }
    any_failed = False
    compile_spent = 0.0
    rows = []
    tmp = tempfile.mkdtemp(prefix="bertrt-cmp-")
    try:
        for preset in args.presets.split(","):
            folder = os.path.join(tmp, preset)
            entry = report["presets"].setdefault(preset, {"cells": []})
            try:
                model, config = build_hf(preset, args.bertrt, args.seed, folder)
                chk = check(preset, model, config, folder, args, args.bertrt, env, tmp)
            except Exception as e:  # report and go on with the next preset
                entry["error"] = str(e)
                any_failed = True
                print(f"[{preset}] ERROR: {e}", file=sys.stderr)
                continue
            entry["check"] = chk
            status = "ok" if chk["passed"] else "FAILED"
            print(f"[{preset}] check {status}: min cosine {chk['min_cosine']:.7f} (>= {chk['threshold']}), "
                  f"max |err| {chk['max_abs_err']:.2e}, lengths {chk['lengths']}", file=sys.stderr)
            if not chk["passed"]:
                any_failed = True
                continue
            if args.check_only:
                continue

            hf = model.to(args.torch_device).to(dtype)
            compiled = torch.compile(hf, dynamic=False) if use_compile else None
            pad = config.pad_token_id or 0
            for (b, s, lengths) in cells:
                cell = {"batch": b, "seq": s, "lengths_kind": lengths}
                cmd = [args.bertrt, "bench", "--model", folder, "--device", args.bertrt_device, "--format", "json",
                       "--batch", str(b), "--seq", str(s), "--lengths", lengths, "--warmup", str(args.warmup),
                       "--iters", str(args.iters), "--seed", str(args.seed)]
                if args.max_time:
                    cmd += ["--max-time", str(args.max_time)]
                rep = json.loads(run(cmd, env=env))
                if not rep["cells"]:
                    cell["skipped"] = rep["skipped"]
                    entry["cells"].append(cell)
                    continue
                ours = rep["cells"][0]
                entry.setdefault("bertrt_build", rep["bertrt"])
                entry.setdefault("bertrt_backend", rep["backend"])
                cell["lengths"] = ours["lengths"]
                cell["tokens"] = ours["tokens"]
                cell["bertrt_ms"] = ours["latency_ms"]
                gen = torch.Generator().manual_seed(args.seed + 2)
                seqs = random_ids(config, ours["lengths"], gen)
                cell["torch_eager_ms"] = time_hf(hf, seqs, pad, args.torch_device, args.warmup, args.iters, args.max_time)
                if compiled is not None and args.compile_budget is not None and compile_spent > args.compile_budget:
                    cell["torch_compile_skipped"] = f"over --compile-budget {args.compile_budget}s"
                elif compiled is not None:
                    t0 = time.perf_counter()
                    cell["torch_compile_ms"] = time_hf(compiled, seqs, pad, args.torch_device,
                                                       max(args.warmup, 3), args.iters, args.max_time)
                    compile_spent += time.perf_counter() - t0
                for k in ("torch_eager_ms", "torch_compile_ms"):
                    if k in cell:
                        cell["ratio_" + k.replace("_ms", "")] = cell["bertrt_ms"]["mean"] / cell[k]["mean"]
                entry["cells"].append(cell)
                rows.append((preset, cell))
                print(f"[{preset}] b{b} s{s} {lengths}: bertrt {cell['bertrt_ms']['mean']:.2f} ms, "
                      f"torch eager {cell['torch_eager_ms']['mean']:.2f} ms", file=sys.stderr)
            del model, hf, compiled
            if args.device == "cuda":
                torch.cuda.empty_cache()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if rows:
        comp = use_compile
        head = f"{'preset':<16}{'cell':<18}{'tokens':>7}{'bertrt ms':>11}{'eager ms':>10}"
        head += f"{'compile ms':>11}" if comp else ""
        head += f"{'bertrt/eager':>13}" + (f"{'bertrt/compile':>15}" if comp else "") + f"{'bertrt seq/s':>13}{'eager seq/s':>12}"
        print(head)
        for preset, c in rows:
            line = f"{preset:<16}{'b%d s%d %s' % (c['batch'], c['seq'], c['lengths_kind']):<18}{c['tokens']:>7}"
            line += f"{c['bertrt_ms']['mean']:>11.2f}{c['torch_eager_ms']['mean']:>10.2f}"
            if comp:
                line += f"{c['torch_compile_ms']['mean']:>11.2f}" if "torch_compile_ms" in c else f"{'-':>11}"
            line += f"{c['ratio_torch_eager']:>13.3f}"
            if comp:
                line += f"{c['ratio_torch_compile']:>15.3f}" if "ratio_torch_compile" in c else f"{'-':>15}"
            line += f"{c['batch'] / c['bertrt_ms']['mean'] * 1e3:>13.1f}{c['batch'] / c['torch_eager_ms']['mean'] * 1e3:>12.1f}"
            print(line)
        print("ratio = bertrt mean latency / PyTorch mean latency (< 1: bertrt faster)")
    report["all_checks_passed"] = not any_failed
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    sys.exit(1 if any_failed else 0)


if __name__ == "__main__":
    main()
