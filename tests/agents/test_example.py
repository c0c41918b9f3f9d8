"""The LangGraph sidecar example (examples/langgraph_sidecar.py) runs: the graph's state holds
text only, and the KV-cache its first node computed reaches both remote agents beside it, over
A2A and over MCP, by reference (it is ~400 KB, over the 256 KiB inline threshold)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "langgraph_sidecar.py"


def test_langgraph_sidecar_example() -> None:
    r = subprocess.run([sys.executable, str(EXAMPLE), "--model", "echo", "--question", "Why?"],
                       capture_output=True, text=True, timeout=240,
                       env=os.environ | {"PYTHONUNBUFFERED": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    sidecar = [json.loads(ln.split(" ", 1)[1]) for ln in lines if ln.startswith("SIDECAR ")]
    (state,) = [json.loads(ln.split(" ", 1)[1]) for ln in lines if ln.startswith("STATE ")]
    assert [s["via"] for s in sidecar] == ["a2a", "mcp"]
    for s in sidecar:
        assert s["mode"] == "KV_CACHE" and s["by_reference"] is True
        assert s["payload_bytes"] > 256 << 10
        # The echo agent says what it received: the cache's 3 tensors and the prompt text.
        assert s["answer"] == "KV_CACHE with 3 tensors: Why? Answer in one short sentence."
    assert set(state) == {"question", "prompt", "a2a_answer", "mcp_answer"}
    assert all(isinstance(v, str) for v in state.values())
