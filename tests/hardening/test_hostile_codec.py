"""The codec's hostile corpus (hostile_codec.py) at CI scale: every case through every entry point
it reaches, in one subprocess, each call under an address-space limit (RLIMIT_AS) of its baseline
plus its budget (input + 64 MB + what the caller asked for) and a hang guard.

Each call must end as its contract says (an AvpError of the listed code, the listed TypeError /
ValueError for API misuse, or success) within its budget. Timings are recorded by the report
(benchmarks/results/hostile_codec.md), never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from . import hostile_codec

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def results() -> list[dict[str, object]]:
    # Every case at its real budget, decompression included: zstd and the plane codecs write
    # straight into one raw_length buffer (issue 14), so no slack is needed any more.
    proc = subprocess.run(
        [sys.executable, str(HERE / "hostile_codec.py"), "--run-all", str(hostile_codec.CI_SCALE)],
        capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_every_case_ran(results: list[dict[str, object]]) -> None:
    want = set(hostile_codec.plan())
    assert {(r["case"], r["entry"]) for r in results} == want
    # at least one case for each issue-14 class that reaches the codec
    classes = {str(r["class"]) for r in results}
    for needle in ("RecursionError", "accessors", "quantization", "not RFC 8259",
                   "valid JSON refused", "decompression", "wrong types"):
        assert any(needle in c for c in classes), needle


def test_every_call_keeps_its_contract(results: list[dict[str, object]]) -> None:
    broken = [f"{r['case']} / {r['entry']}: expected {r['expect']}, got {r['got']}, peak "
              f"{int(r['peak_bytes']) >> 20} MB of {int(r['budget_bytes']) >> 20} MB"  # type: ignore[call-overload]
              for r in results
              if r["got"] != r["expect"] or int(r["peak_bytes"]) > int(r["budget_bytes"])]  # type: ignore[call-overload]
    assert broken == []
