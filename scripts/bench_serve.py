#!/usr/bin/env python3
"""Throughput and latency of `bertrt serve` (issue 13's benchmark; not in CI).

For each concurrency (default 1, 8, 32, 128) single-sentence POST /embed
requests are sent for --duration seconds, by
  - wrk (Debian's `wrk`; raw request rates, its p50/p99), and
  - a Python client here (threads, keep-alive; every answer checked to be a
    vector), which also drives the Python peer the same way;
then the offline rate of `bertrt embed --input` on the same sentences, so
server/offline shows whether dynamic batching works (the issue's target:
>= 0.8 at concurrency 32), and bertrt/peer at concurrency 32 (target >= 2).

The Python peer is `infinity_emb` when --peer-python can import it, else
sentence-transformers behind uvicorn (a minimal ASGI app below, one encode
per request on a worker thread); --peer none skips it. The peer's Python
must have sentence-transformers (+ uvicorn) or infinity-emb installed, e.g.
    python3 -m venv .venv-peer && .venv-peer/bin/pip install sentence-transformers uvicorn

Example (what the lead runs; a release build):
    cargo build --release
    python3 scripts/bench_serve.py --bertrt target/release/bertrt --device cpu --duration 20 \\
        --peer-python .venv-peer/bin/python --json bench_serve.json
A smoke run: --duration 2 --concurrency 1,8.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
WORDS = ("the quick brown fox jumps over a lazy dog near the river bank in paris today while "
         "children play football in the park after school and the library opens at nine").split()


def sentences(n):
    """Single sentences of 8 to 24 words, fixed."""
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(8 + (i * 7) % 17)) for i in range(n)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port, path, proc, timeout=300):
    t = time.time()
    while time.time() - t < timeout:
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s" % proc.returncode)
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server on port %d not healthy after %d s" % (port, timeout))


def stop(proc):
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def python_load(port, path, body_of, texts, concurrency, duration):
    """`concurrency` threads, each a keep-alive connection sending one
    sentence per request until `duration` ends; returns rps, p50, p99 (ms)."""
    stop_at = time.time() + duration
    lat, errors, lock = [], [], threading.Lock()

    def client(k):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        i, mine = k, []
        while time.time() < stop_at:
            body = json.dumps(body_of(texts[i % len(texts)]))
            t = time.perf_counter()
            try:
                c.request("POST", path, body, {"content-type": "application/json"})
                r = c.getresponse()
                data = r.read()
                ok = r.status == 200 and len(data) > 100
            except OSError as e:
                ok, data = False, str(e).encode()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            mine.append(time.perf_counter() - t)
            if not ok:
                with lock:
                    errors.append(data[:200])
            i += concurrency
        with lock:
            lat.extend(mine)

    t0 = time.time()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.time() - t0
    if errors:
        raise RuntimeError("%d failed requests, e.g. %r" % (len(errors), errors[0]))
    return {"rps": len(lat) / took, "p50_ms": percentile(lat, 50) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3, "requests": len(lat)}


WRK_LUA = """
local bodies = {}
local n = 0
init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
end
request = function()
  n = n + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[(n % #bodies) + 1])
end
"""


def wrk_load(port, path, bodies_file, lua_file, concurrency, duration):
    out = subprocess.run(
        ["wrk", "-t", str(min(concurrency, os.cpu_count() or 1)), "-c", str(concurrency),
         "-d", "%ds" % max(1, int(duration)), "--latency", "-s", lua_file,
         "http://127.0.0.1:%d%s" % (port, path), "--", bodies_file],
        capture_output=True, text=True, check=True).stdout

    def ms(label):
        m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s)\s*$" % label, out, re.M)
        if not m:
            return None
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError("wrk saw %s non-2xx answers:\n%s" % (bad.group(1), out))
    return {"rps": float(rps.group(1)) if rps else None, "p50_ms": ms("50"), "p99_ms": ms("99")}


def offline_rate(bertrt, device, texts):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(texts) + "\n")
    t = time.time()
    subprocess.run([bertrt, "embed", "--model", MODEL, "--device", device, "--input", f.name,
                    "--format", "jsonl"], check=True, stdout=subprocess.DEVNULL)
    took = time.time() - t
    os.unlink(f.name)
    return len(texts) / took


ST_APP = r'''
import asyncio, json, os
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(os.environ["BENCH_MODEL"], device=os.environ["BENCH_DEVICE"])

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    if scope["path"] == "/health":
        out = b"{}"
    else:
        inputs = json.loads(body)["inputs"]
        inputs = [inputs] if isinstance(inputs, str) else inputs
        vecs = await asyncio.to_thread(model.encode, inputs, normalize_embeddings=True)
        out = json.dumps(vecs.tolist()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})
'''


def start_peer(python, kind, device, port, workdir):
    env = dict(os.environ, HF_HUB_OFFLINE="1", BENCH_MODEL=MODEL, BENCH_DEVICE=device)
    if kind == "infinity":
        cmd = [python, "-m", "infinity_emb.cli", "v2", "--model-id", MODEL, "--port", str(port),
               "--device", device]
        spec = ("/embeddings", lambda t: {"model": MODEL, "input": [t]}, "/health")
    else:
        with open(os.path.join(workdir, "st_peer.py"), "w") as f:
            f.write(ST_APP)
        cmd = [python, "-m", "uvicorn", "st_peer:app", "--port", str(port), "--log-level", "warning"]
        spec = ("/embed", lambda t: {"inputs": t}, "/health")
    proc = subprocess.Popen(cmd, cwd=workdir, env=env)
    wait_healthy(port, spec[2], proc)
    return proc, spec


def peer_kind(python, wanted):
    if wanted != "auto":
        return wanted
    ok = subprocess.run([python, "-c", "import infinity_emb"], capture_output=True).returncode == 0
    return "infinity" if ok else "st"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bertrt", default="target/release/bertrt")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    ap.add_argument("--concurrency", default="1,8,32,128")
    ap.add_argument("--peer", choices=["auto", "infinity", "st", "none"], default="auto")
    ap.add_argument("--peer-python", default=".venv-peer/bin/python")
    ap.add_argument("--sentences", type=int, default=2000)
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()
    levels = [int(c) for c in a.concurrency.split(",")]
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    texts = sentences(a.sentences)
    work = tempfile.mkdtemp(prefix="bench_serve_")
    bodies = os.path.join(work, "bodies.jsonl")
    lua = os.path.join(work, "post.lua")
    with open(bodies, "w") as f:
        f.write("\n".join(json.dumps({"inputs": t}) for t in texts) + "\n")
    with open(lua, "w") as f:
        f.write(WRK_LUA)
    res = {"model": MODEL, "device": a.device, "duration_s": a.duration, "bertrt": {}, "peer": {}}

    port = free_port()
    server = subprocess.Popen([a.bertrt, "serve", "--model", MODEL, "--device", a.device,
                               "--port", str(port), "--max-concurrent-requests", "1024"],
                              stderr=subprocess.DEVNULL)
    try:
        wait_healthy(port, "/health", server)
        for c in levels:
            res["bertrt"][c] = {
                "wrk": wrk_load(port, "/embed", bodies, lua, c, a.duration),
                "python": python_load(port, "/embed", lambda t: {"inputs": t}, texts, c, a.duration),
            }
            print("bertrt  c=%-4d %s" % (c, res["bertrt"][c]), flush=True)
    finally:
        stop(server)
    res["offline_embed_per_s"] = offline_rate(a.bertrt, a.device, texts)
    print("offline bertrt embed --input: %.1f sentences/s" % res["offline_embed_per_s"], flush=True)

    if a.peer != "none":
        kind = peer_kind(a.peer_python, a.peer)
        res["peer_kind"] = kind
        pport = free_port()
        proc, (path, body_of, _) = start_peer(a.peer_python, kind, a.device, pport, work)
        try:
            for c in levels:
                res["peer"][c] = python_load(pport, path, body_of, texts, c, a.duration)
                print("%-7s c=%-4d %s" % (kind, c, res["peer"][c]), flush=True)
        finally:
            stop(proc)

    print("\n| concurrency | bertrt req/s (wrk) | p50 / p99 ms (wrk) | bertrt req/s (py) | p50 / p99 ms (py) | peer req/s | peer p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for c in levels:
        w, p = res["bertrt"][c]["wrk"], res["bertrt"][c]["python"]
        q = res["peer"].get(c)
        fmt = lambda x: "-" if x is None else "%.1f" % x  # noqa: E731
        print("| %d | %s | %s / %s | %s | %s / %s | %s | %s |" % (
            c, fmt(w["rps"]), fmt(w["p50_ms"]), fmt(w["p99_ms"]), fmt(p["rps"]), fmt(p["p50_ms"]),
            fmt(p["p99_ms"]), fmt(q and q["rps"]), "%s / %s" % (fmt(q and q["p50_ms"]), fmt(q and q["p99_ms"]))))
    if 32 in res["bertrt"]:
        best = max(x for x in (res["bertrt"][32]["wrk"]["rps"], res["bertrt"][32]["python"]["rps"]) if x)
        print("\nconcurrency 32: server / offline = %.2f (target >= 0.8)" % (best / res["offline_embed_per_s"]))
        if 32 in res["peer"]:
            print("concurrency 32: bertrt / %s = %.2f (target >= 2)" % (
                res["peer_kind"], res["bertrt"][32]["python"]["rps"] / res["peer"][32]["rps"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
