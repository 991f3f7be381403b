"""A live `bertrt serve` on loopback for the Python client tests: started by
the test (port 0, the address read from its log) and stopped by it (SIGTERM,
then its exit code is checked).

The binary is $BERTRT_BIN, else target/debug/bertrt (what `cargo test` built).
"""

import json
import os
import signal
import subprocess
import threading

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("BERTRT_BIN", os.path.join(REPO, "target", "debug", "bertrt"))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def model_path(name):
    """A fixture model folder, or MiniLM's hub id (found in the HF cache)."""
    return MINILM if name == "minilm" else os.path.join(FIXTURES, "models", name)


class Server:
    def __init__(self, model, *extra):
        self.proc = subprocess.Popen(
            [BIN, "serve", "--model", model_path(model), "--device", "cpu", "--port", "0", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = []
        found = threading.Event()
        self.base = None

        def drain():
            # Keeps reading so the server never blocks on a full pipe.
            for line in self.proc.stderr:
                self.log.append(line)
                if self.base is None and "on http://" in line:
                    self.base = "http://" + line.split("on http://", 1)[1].split()[0].strip('"')
                    found.set()
            found.set()

        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(120) or self.base is None:
            self.proc.kill()
            raise RuntimeError("bertrt serve did not start:\n" + "".join(self.log))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        assert code == 0, "exit code %s after SIGTERM:\n%s" % (code, "".join(self.log))


@pytest.fixture(scope="module")
def serve():
    """serve(model, *flags) -> a running Server; all stopped (and checked) at the end."""
    started = []

    def start(model, *extra):
        s = Server(model, *extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def cli(*args):
    """`bertrt ARGS --device cpu --format json`, parsed."""
    out = subprocess.run([BIN, *args, "--device", "cpu", "--format", "json"], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)
