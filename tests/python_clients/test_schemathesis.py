"""API fuzzing: schemathesis against /api-doc/openapi.json, once per fixture
kind so each route meets a model that serves it (and the others answer 400),
about 25 generated requests per route. No 5xx, and every status, content type
and body as documented."""

import os
import re
import subprocess
import sys

import pytest

KINDS = {
    "embedding": "bert_sharded",
    "mlm": "bert_mlm",
    "qa": "bert_qa",
    "token_classification": "bert_tokcls",
    "sequence_classification": "bert_rerank",
    "discriminator": "electra_disc",
}

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_schemathesis(serve, kind, tmp_path):
    s = serve(KINDS[kind])
    exe = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    out = subprocess.run(
        [exe, "run", s.base + "/api-doc/openapi.json", "--checks", CHECKS, "--max-examples", "25",
         "--phases", "examples,fuzzing", "--seed", "13", "--no-shrink", "--max-time", "30",
         "--request-timeout", "30", "--warnings", "off"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)  # its cache goes to tmp_path
    report = out.stdout + out.stderr
    assert out.returncode == 0, "schemathesis on %s (%s):\n%s" % (kind, KINDS[kind], report[-6000:])
    # Every operation was tested (an empty run would also exit 0).
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    tested = re.search(r"Tested: (\d+)", report)
    assert selected and tested, report[-2000:]
    assert int(tested.group(1)) == int(selected.group(1)) == int(selected.group(2)) >= 16, report[-2000:]
