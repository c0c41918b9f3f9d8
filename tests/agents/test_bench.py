"""The agents benchmark's report logic on its committed results (the run itself is
``make agents-bench``: it loads SmolLM2 and moves up to 25 MB per request)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_report_from_the_committed_results() -> None:
    spec = importlib.util.spec_from_file_location("agents_bench",
                                                  ROOT / "benchmarks" / "agents_bench.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = json.loads((ROOT / "benchmarks" / "results" / "agents_bench.json").read_text())
    rows = res["rows"]
    assert {r["tokens"] for r in rows} == set(bench.TOKENS)
    for r in rows:  # base64 costs a third more bytes by value; by reference ~nothing extra
        ratio = r["wire_bytes"] / r["payload_bytes"]
        assert (1.33 < ratio < 1.34) if r["way"].endswith("value") else (1.0 <= ratio < 1.01)
    md = bench.markdown(res)
    assert md.count("\n| ") == len(rows) + 1  # header + one line per row
    assert md == (ROOT / "benchmarks" / "results" / "agents_bench.md").read_text()
