#!/usr/bin/env python3
"""bertrt against PyTorch/HF transformers on the same machine, in one run.

Three phases, in order of value, the JSON report (--out) rewritten after
every step so that a run cut off by a timeout keeps what it measured:

1. CHECKS, every preset first (the configs `bertrt bench --list-presets`
   knows): build the HF model from the preset's config.json with a fixed seed
   (HF's own random init) and save it (safetensors, f32) to a temp folder that
   bertrt loads, so both engines hold the same weights; run the same token ids
   (several lengths, one batch) through bertrt (`bertrt bench --ids ...
   --hidden-out ...`) and HF in f32: the cosine of the last hidden states must
   be >= 0.99999 (bertrt f32 on CPU) or >= 0.999 (bertrt fp16 on GPU). A
   preset that fails is reported as failed and not timed;
2. EAGER TIMING of each (preset, cell) in the order given (put the headline
   first): bertrt (`bertrt bench --format json`, which also returns the exact
   lengths it drew), then HF eager on the same lengths, padded to the longest
   with an attention mask as HF batches are run (f32 on CPU; fp16 + SDPA on
   GPU). A cell that would not fit in what is left of --budget-s is skipped,
   and says so;
3. TORCH.COMPILE (GPU) of the cells timed in phase 2, only while the budget
   (and --compile-budget) leaves time.

Every cell is guarded: an error is recorded in its entry and the run goes on.

What is timed: by default the bare encoder on both sides (bertrt's default
bench: embeddings and layers, last hidden states left on the device; HF's
`base_model` with its pooler off, last_hidden_state left on the device).
--head times the whole model on both sides, every output copied to the host
(bertrt's outputs include the last hidden states; HF's head models return
only the head's, so bertrt copies [tokens, H] floats more).

Ratios, one way everywhere: "N x X" means X's mean latency divided by
bertrt's (N > 1: bertrt is N times faster than X). JSON keys:
`torch_eager_over_bertrt`, `torch_compile_over_bertrt`.

Usage (from the repository root, after `cargo build --release`):

    python3 scripts/compare_torch.py --device cpu --presets bert-base --batch 8 --seq 128
    python3 scripts/compare_torch.py --device cuda --presets bert-base,roberta-base \\
        --cells 1x128,8x128,32x128,32x384,16x512:avg0.6 --budget-s 240 --out cmp.json

Cells: --batch x --seq (with --lengths), or --cells BxS[:LENGTHS],...
where LENGTHS is fixed, uniform or avgF, as `bertrt bench --lengths`.
Threads: --threads N sets torch.set_num_threads and RAYON_NUM_THREADS alike
(default: all logical cores). BERTRT_LD_LIBRARY_PATH, where set, is put in
front of LD_LIBRARY_PATH for the bertrt processes only (where cuBLAS is), never
for this (PyTorch's) process. Exit status: 0 if every check passed and no cell
failed, 1 otherwise, 2 on usage errors.
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


def run(cmd, env=None, timeout=None):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"TIMEOUT: {' '.join(cmd[:4])} ... ran past {timeout:.0f}s") from None
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr.strip()}")
    return p.stdout


def percentiles(ms):
    s = sorted(ms)
    def pct(p):
        import math
        return s[min(max(math.ceil(p / 100 * len(s)), 1), len(s)) - 1]
    return {"mean": sum(s) / len(s), "p50": pct(50), "p90": pct(90), "p99": pct(99), "min": s[0], "max": s[-1]}


def build_hf(preset, bertrt, seed, folder, env):
    cfg_text = run([bertrt, "bench", "--model", preset, "--print-config"], env=env)
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
    run([bertrt, "bench", "--model", folder, "--device", args.bertrt_device, "--ids", ids_path, "--hidden-out", out_path],
        env=env, timeout=args.clock.timeout())
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



class Clock:
    """The run's time budget (--budget-s; None: no limit)."""

    def __init__(self, budget_s):
        self.start = time.monotonic()
        self.budget = budget_s

    def elapsed(self):
        return time.monotonic() - self.start

    def left(self):
        """Seconds left (inf without a budget)."""
        return float("inf") if self.budget is None else self.budget - self.elapsed()

    def timeout(self, floor=30):
        """A subprocess timeout: what is left, at least `floor`; None without a budget."""
        return None if self.budget is None else max(self.left(), floor)


def torch_timed_fn(hf, head):
    """What PyTorch runs per timed call, and its description.

    Encoder (default): base_model with its pooler off, last_hidden_state left
    on the device, as bertrt's default bench. With `head`: the whole model,
    every output tensor copied to the host, as bertrt's `bench --head`.
    """
    if head:
        def fn(**kw):
            out = hf(**kw)
            return [v.cpu() for v in out.to_tuple() if torch.is_tensor(v)]
        return fn, "whole model, outputs copied to the host"
    enc = hf.base_model
    if getattr(enc, "pooler", None) is not None:
        enc.pooler = None  # BERT, RoBERTa, ALBERT: forward() skips a None pooler
    return (lambda **kw: enc(**kw).last_hidden_state), "base_model (pooler off), last_hidden_state left on the device"


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


def write_report(report, path):
    """Atomically, so a reader (or a timeout) never sees half a file."""
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, path)


def table(report, use_compile):
    rows = [(name, c) for name, p in report["presets"].items() for c in p["cells"] if "bertrt_ms" in c]
    if not rows:
        return "no timed cells"
    head = f"{'preset':<16}{'cell':<18}{'tokens':>7}{'bertrt ms':>11}{'eager ms':>10}"
    head += f"{'compile ms':>11}" if use_compile else ""
    head += f"{'eager/bertrt':>13}" + (f"{'compile/bertrt':>15}" if use_compile else "")
    lines = [head]
    for preset, c in rows:
        line = f"{preset:<16}{'b%d s%d %s' % (c['batch'], c['seq'], c['lengths_kind']):<18}{c['tokens']:>7}"
        line += f"{c['bertrt_ms']['mean']:>11.2f}"
        line += f"{c['torch_eager_ms']['mean']:>10.2f}" if "torch_eager_ms" in c else f"{'-':>10}"
        if use_compile:
            line += f"{c['torch_compile_ms']['mean']:>11.2f}" if "torch_compile_ms" in c else f"{'-':>11}"
        line += f"{c['torch_eager_over_bertrt']:>12.2f}x" if "torch_eager_over_bertrt" in c else f"{'-':>13}"
        if use_compile:
            line += f"{c['torch_compile_over_bertrt']:>14.2f}x" if "torch_compile_over_bertrt" in c else f"{'-':>15}"
        lines.append(line)
    lines.append(RATIO_DEFINITION)
    return "\n".join(lines)


RATIO_DEFINITION = "N x X = X's mean latency / bertrt's mean latency (N > 1: bertrt is N times faster than X)"


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
    ap.add_argument("--head", action="store_true",
                    help="time the whole model with its outputs copied to the host, not the bare encoder")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="seconds for the whole run: checks first, then timing while time is left")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (GPU)")
    ap.add_argument("--compile-budget", type=float, default=None,
                    help="seconds of torch.compile work in all, inside --budget-s (GPU)")
    ap.add_argument("--check-only", action="store_true", help="run the output checks, no timing")
    ap.add_argument("--out", help="write the JSON report here (rewritten after every step)")
    args = ap.parse_args()
    if not os.path.exists(args.bertrt):
        sys.exit(f"compare_torch: no bertrt binary at {args.bertrt} (cargo build --release, or --bertrt PATH)")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("compare_torch: --device cuda but torch sees no CUDA device")
    cells = parse_cells(args)
    args.clock = clock = Clock(args.budget_s)

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    if os.environ.get("BERTRT_LD_LIBRARY_PATH"):
        env["LD_LIBRARY_PATH"] = os.environ["BERTRT_LD_LIBRARY_PATH"] + (
            ":" + os.environ["LD_LIBRARY_PATH"] if os.environ.get("LD_LIBRARY_PATH") else "")
    args.torch_device = "cuda:0" if args.device == "cuda" else "cpu"
    args.bertrt_device = "cuda:0" if args.device == "cuda" else "cpu"
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    use_compile = args.device == "cuda" and not args.no_compile and not args.check_only

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
        "settings": {"warmup": args.warmup, "iters": args.iters, "max_time": args.max_time, "seed": args.seed,
                     "budget_s": args.budget_s, "compile_budget_s": args.compile_budget,
                     "cells": [f"b{b} s{s} {lk}" for b, s, lk in cells]},
        "timed": {"bertrt": "forward with heads, outputs copied to the host" if args.head
                  else "bare encoder, last hidden states left on the device",
                  "torch": None},
        "ratio_definition": RATIO_DEFINITION,
        "phase": "checks",
        "phase_seconds": {},
        "presets": {},
        "all_checks_passed": None,
        "complete": False,
    }
    out = args.out
    write_report(report, out)
    any_failed = False
    models = {}
    tmp = tempfile.mkdtemp(prefix="bertrt-cmp-")

    def say(msg):
        print(f"[{clock.elapsed():6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        # Phase 1: every preset's output check.
        t_phase = time.monotonic()
        for preset in args.presets.split(","):
            folder = os.path.join(tmp, preset)
            entry = report["presets"].setdefault(preset, {"cells": []})
            t0 = time.monotonic()
            try:
                model, config = build_hf(preset, args.bertrt, args.seed, folder, env)
                chk = check(preset, model, config, folder, args, args.bertrt, env, tmp)
            except Exception as e:  # record and go on with the next preset
                entry["error"] = f"{type(e).__name__}: {e}"
                any_failed = True
                say(f"[{preset}] check ERROR: {e}")
            else:
                entry["check"] = chk
                status = "ok" if chk["passed"] else "FAILED"
                say(f"[{preset}] check {status}: min cosine {chk['min_cosine']:.7f} (>= {chk['threshold']}), "
                    f"max |err| {chk['max_abs_err']:.2e}, lengths {chk['lengths']}")
                if chk["passed"]:
                    models[preset] = (model, config, folder)
                else:
                    any_failed = True
            entry["check_s"] = round(time.monotonic() - t0, 1)
            write_report(report, out)
        report["phase_seconds"]["checks"] = round(time.monotonic() - t_phase, 1)
        report["all_checks_passed"] = not any_failed

        # Phase 2: eager timing, cell by cell, while the budget lasts.
        report["phase"] = "eager"
        t_phase = time.monotonic()
        timed = {}
        last_cell_s = 10.0
        for preset in ([] if args.check_only else args.presets.split(",")):
            if preset not in models:
                continue
            model, config, folder = models[preset]
            entry = report["presets"][preset]
            pad = config.pad_token_id or 0
            try:
                hf = model.to(args.torch_device).to(dtype)
                fn, what = torch_timed_fn(hf, args.head)
                report["timed"]["torch"] = what
                timed[preset] = hf
            except Exception as e:
                entry["timing_error"] = f"{type(e).__name__}: {e}"
                any_failed = True
                say(f"[{preset}] ERROR preparing the timed model: {e}")
                write_report(report, out)
                continue
            for (b, s, lengths) in cells:
                cell = {"batch": b, "seq": s, "lengths_kind": lengths}
                entry["cells"].append(cell)
                # A cell costs about what the last one did; skip what cannot finish.
                if clock.left() < 1.5 * last_cell_s:
                    cell["skipped"] = f"time budget: {clock.left():.0f}s left of {args.budget_s:.0f}s"
                    say(f"[{preset}] b{b} s{s} {lengths}: skipped ({cell['skipped']})")
                    write_report(report, out)
                    continue
                t0 = time.monotonic()
                try:
                    cmd = [args.bertrt, "bench", "--model", folder, "--device", args.bertrt_device, "--format", "json",
                           "--batch", str(b), "--seq", str(s), "--lengths", lengths, "--warmup", str(args.warmup),
                           "--iters", str(args.iters), "--seed", str(args.seed)]
                    cmd += ["--head"] if args.head else []
                    cmd += ["--max-time", str(args.max_time)] if args.max_time else []
                    rep = json.loads(run(cmd, env=env, timeout=clock.timeout()))
                    if not rep["cells"]:
                        cell["skipped"] = "; ".join(rep["skipped"])
                    else:
                        ours = rep["cells"][0]
                        entry.setdefault("bertrt_build", rep["bertrt"])
                        entry.setdefault("bertrt_backend", rep["backend"])
                        cell["lengths"] = ours["lengths"]
                        cell["tokens"] = ours["tokens"]
                        cell["bertrt_ms"] = ours["latency_ms"]
                        cell["bertrt_timer"] = rep["timer"]
                        gen = torch.Generator().manual_seed(args.seed + 2)
                        seqs = random_ids(config, ours["lengths"], gen)
                        cell["torch_eager_ms"] = time_hf(fn, seqs, pad, args.torch_device, args.warmup, args.iters,
                                                         args.max_time)
                        cell["torch_eager_over_bertrt"] = cell["torch_eager_ms"]["mean"] / cell["bertrt_ms"]["mean"]
                        say(f"[{preset}] b{b} s{s} {lengths}: bertrt {cell['bertrt_ms']['mean']:.2f} ms, "
                            f"torch eager {cell['torch_eager_ms']['mean']:.2f} ms "
                            f"({cell['torch_eager_over_bertrt']:.2f}x eager)")
                except Exception as e:  # record, free what we can, next cell
                    cell["error"] = f"{type(e).__name__}: {e}"[:2000]
                    any_failed = True
                    say(f"[{preset}] b{b} s{s} {lengths}: ERROR {e}")
                    if args.device == "cuda":
                        torch.cuda.empty_cache()
                cell["seconds"] = round(time.monotonic() - t0, 1)
                last_cell_s = max(cell["seconds"], 2.0)
                write_report(report, out)
        report["phase_seconds"]["eager"] = round(time.monotonic() - t_phase, 1)

        # Phase 3: torch.compile, only with time left.
        report["phase"] = "compile"
        t_phase = time.monotonic()
        compile_spent = 0.0
        last_compile_s = 60.0  # a first compile of a base model takes about this
        for preset, hf in (timed.items() if use_compile else []):
            entry = report["presets"][preset]
            config = models[preset][1]
            pad = config.pad_token_id or 0
            fn, _ = torch_timed_fn(hf, args.head)
            compiled = torch.compile(fn, dynamic=False)
            for cell in entry["cells"]:
                if "torch_eager_ms" not in cell:
                    continue
                if clock.left() < 1.5 * last_compile_s:
                    cell["torch_compile_skipped"] = f"time budget: {clock.left():.0f}s left"
                    continue
                if args.compile_budget is not None and compile_spent + last_compile_s > args.compile_budget:
                    cell["torch_compile_skipped"] = f"--compile-budget {args.compile_budget:.0f}s spent"
                    continue
                t0 = time.monotonic()
                try:
                    seqs = random_ids(config, cell["lengths"], torch.Generator().manual_seed(args.seed + 2))
                    cell["torch_compile_ms"] = time_hf(compiled, seqs, pad, args.torch_device,
                                                       max(args.warmup, 3), args.iters, args.max_time)
                    cell["torch_compile_over_bertrt"] = cell["torch_compile_ms"]["mean"] / cell["bertrt_ms"]["mean"]
                    say(f"[{preset}] b{cell['batch']} s{cell['seq']}: torch.compile "
                        f"{cell['torch_compile_ms']['mean']:.2f} ms ({cell['torch_compile_over_bertrt']:.2f}x compile)")
                except Exception as e:
                    cell["torch_compile_error"] = f"{type(e).__name__}: {e}"[:2000]
                    say(f"[{preset}] b{cell['batch']} s{cell['seq']}: torch.compile ERROR {e}")
                spent = time.monotonic() - t0
                cell["torch_compile_seconds"] = round(spent, 1)
                compile_spent += spent
                last_compile_s = max(spent, 10.0)
                write_report(report, out)
        if use_compile:
            report["phase_seconds"]["compile"] = round(time.monotonic() - t_phase, 1)
        report["phase"] = "done"
        report["complete"] = True
    finally:
        # Also after an unexpected error: what was measured stays, "complete" says false.
        shutil.rmtree(tmp, ignore_errors=True)
        report["elapsed_s"] = round(clock.elapsed(), 1)
        write_report(report, out)

    print(table(report, use_compile))
    sys.exit(1 if any_failed else 0)


if __name__ == "__main__":
    main()
