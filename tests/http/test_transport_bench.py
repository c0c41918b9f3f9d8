"""The transport benchmark's logic on a small message (the 117 MB run is `make
transport-bench`, results committed): every transport moves the message, and the summary's
ratios and goals are computed from its own runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_transport_bench_quick(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "benchmarks/transport_bench.py", "--quick",
                        "--out-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=540, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "transport_bench_quick.json").read_text())
    size = r["workload"]["message_bytes"]
    assert 3_000_000 < size < 5_000_000
    s = r["summary"]
    assert set(s) == {"raw", "raw-bytes", "http1", "h2"}
    assert s["raw"]["vs_raw"] == 1.0
    for t, row in s.items():
        runs = r["runs"][t]
        assert len(runs) == r["reps"] == 2
        assert all(x["end"] >= x["t0"] and x["done"] >= x["end"] for x in runs)
        assert row["vs_raw"] == pytest.approx(row["mb_per_s"] / s["raw"]["mb_per_s"])
        assert row["peak_rss_mb"] > 0
        if t != "raw-bytes":
            assert all(x["t0"] <= x["first"] <= x["end"] for x in runs)
            assert 0 < row["first_tensor_share"] <= 1
    assert r["goals"]["http1_vs_raw >= 0.80"] == (s["http1"]["vs_raw"] >= 0.80)
    assert "| http1 |" in (tmp_path / "transport_bench_quick.md").read_text()
