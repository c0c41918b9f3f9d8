"""The A2A and MCP endpoints (avp_agents) as entry points of the hostile corpus, in `make test`.

A representative subset of the corpus goes through a2a.handshake, a2a.message, a2a.reference,
mcp.blob and mcp.url as `make hostile` runs them (hostile_agents.py: real server processes
hosting the runtime's agent on the tiny model, forked fresh per run; the SDKs' own clients; a
plain HTTP host for references): the control, a KV-cache for another shape, both decompression
bombs sized for the receiver's model, a projection out of the vocabulary, control tokens in a
TEXT payload and a HELLO with 600 unknown sections. Every run must keep the runner's contract
(the problem's code where the corpus pins one, memory within its budget, the server still up);
time is reported by the runner, not asserted (a hang still fails: the runner kills it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("avp_agents")

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "hostile_runner.py"

CASES = ["kv: the receiver's own export (control)", "kv: 3 kv heads for a model of 2",
         "kv: zstd bomb*", "projection: TOKEN_IDS beyond the vocabulary",
         "text: control tokens opening turns", "hello: 600 unknown skippable sections"]
ENTRIES = {"a2a.handshake", "a2a.message", "a2a.reference", "mcp.blob", "mcp.url"}


@pytest.mark.timeout(1200)
def test_agent_entry_points_keep_the_contract(tmp_path: Path) -> None:
    out = tmp_path / "runs.json"
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--entries", "a2a.*", "mcp.*", "--quiet", "--json",
         str(out), "--timeout", "120", "--select", *CASES],
        capture_output=True, text=True, timeout=1100)
    assert out.exists(), proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    runs = doc["runs"]
    bad = [f"{r['case']} / {r['entry']}: {r['outcome']} {r['failures']} {r['detail'][:200]}"
           for r in runs if [f for f in r["failures"] if not f.startswith("time: ")]]
    assert not bad, "\n".join(bad)
    assert {r["entry"] for r in runs} == ENTRIES
    assert len(runs) == 7 * len(ENTRIES)  # "kv: zstd bomb*" is two cases
    # Every hostile body was answered and the servers never went down.
    assert doc["meta"]["server_restarts"] == 0
    got = {(r["case"], r["entry"]): r["outcome"] for r in runs}
    bomb = "kv: zstd bomb 2 x 256 MiB for the receiver's model"
    for e in ("a2a.message", "a2a.reference", "mcp.blob", "mcp.url"):
        assert got[("kv: the receiver's own export (control)", e)] == "ok"
        assert got[("kv: 3 kv heads for a model of 2", e)] == "refused:MODEL_MISMATCH"
        # R-A2A4.9 / R-MCP4.4: refused from the HEADER (CONTEXT_LENGTH) or the first
        # descriptor (LIMIT_TENSOR), so neither bomb is inflated (the memory check above).
        assert got[(bomb, e)] == "refused:UNSUPPORTED_CAPABILITY"
    assert got[(bomb, "a2a.handshake")] == "refused:session-unknown"
    assert got[("hello: 600 unknown skippable sections", "a2a.handshake")] == "ok"
