"""The logic of benchmarks/handoff_bench.py without a model, a receiver or a clock: the paced
sender, the bounded producer queue and the met/missed summary on a small recorded report."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


hb = _load("handoff_bench")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept = 0.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        assert s > 0
        self.now += s
        self.slept += s


def test_paced_sender_keeps_to_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(hb, "time", clock)
    data = bytes(range(256)) * 4000  # 1,024,000 bytes in uneven pieces
    pieces = [data[:1000], data[1000:300_000], data[300_000:]]
    bps = 1e6
    sent = 0
    for part in hb.paced(iter(pieces), bps):
        assert len(part) <= hb.PIECE
        sent += len(part)
        assert sent <= bps * (clock.now - 100.0) + 1e-6  # never ahead of the link
    assert sent == len(data)
    assert clock.now - 100.0 == pytest.approx(len(data) / bps)
    out = b"".join(hb.paced(iter(pieces), None))
    assert out == data  # unshaped: the same bytes, no waiting


def test_producer_hands_on_pieces_in_order_and_its_errors() -> None:
    w = hb.produce(lambda w: [w.write(bytes([i]) * 10) for i in range(200)])
    assert b"".join(w.pieces()) == b"".join(bytes([i]) * 10 for i in range(200))

    def fails(w: Any) -> None:
        w.write(b"x")
        raise RuntimeError("encoder broke")

    w = hb.produce(fails)
    with pytest.raises(RuntimeError, match="encoder broke"):
        list(w.pieces())


def _report(auto_fast: float) -> dict[str, Any]:
    profiles = {
        "raw": {"name": "raw", "size_ratio": 1.0, "encode_bps": 1e9, "decode_bps": 1e9,
                "lossless": True, "agreement_pct": None},
        "zstd": {"name": "zstd", "size_ratio": 1.3, "encode_bps": 3e8, "decode_bps": 6e8,
                 "lossless": True, "agreement_pct": None},
        "int4": {"name": "int4", "size_ratio": 3.5, "encode_bps": 2e8, "decode_bps": 4e8,
                 "lossless": False, "agreement_pct": 95.3},
    }
    secs = {"slow": {"raw": [4.0, 4.2, 4.1], "zstd": [3.1, 3.0, 3.2], "int4": [1.5, 1.4, 1.6],
                     "auto": [3.05, 3.1, 3.0], "auto95": [1.5, 1.6, 1.5]},
            "fast": {"raw": [0.5, 0.5, 0.6], "zstd": [0.9, 0.9, 1.0], "int4": [0.8, 0.8, 0.8],
                     "auto": [auto_fast] * 3, "auto95": [0.5, 0.49, 0.5]}}
    runs = [{"rate": r, "codec": c, "seconds": s, "imported_digest": "d", "wire_bytes": 1,
             "first_tensor_s": 0.1, "upload_s": 0.1}
            for r, by in secs.items() for c, ss in by.items() for s in ss]
    return {"config": {"model": "m", "context_tokens": 10, "raw_bf16_kv_bytes": 1e6,
                       "tensors": 4, "transport": "t", "machine": "x", "reps": 3,
                       "load_average_1min_at_end": 1.0, "auto_floor_pct": 95.0,
                       "adaptive_policy_seconds_once": 0.1},
            "profiles": profiles, "measured_link_bps": {"slow": 1e6, "fast": 1e9},
            "auto_choices": {"slow": {"auto": "zstd", "auto95": "int4"},
                             "fast": {"auto": "raw", "auto95": "raw"}},
            "expected_digest": "d", "runs": runs}


def test_summary_met_and_missed() -> None:
    rep = _report(auto_fast=0.49)
    rep["summary"] = s = hb.summarize(rep)
    t = {(x["rate"], x["auto"]): x for x in s["targets"]}
    assert t["slow", "auto"]["best_codec"] == "zstd"  # int4 is not admitted by "lossless"
    assert t["slow", "auto95"]["best_codec"] == "int4"
    assert all(x["within_10pct_of_best"] and x["not_slower_than_raw"] for x in t.values())
    assert s["lossless_bit_exact"]
    md = hb.markdown(rep)
    assert "**missed**" not in md and "| slow | auto (lossless) | zstd |" in md

    rep = _report(auto_fast=0.7)  # 40% slower than raw, the best at this rate
    rep["summary"] = s = hb.summarize(rep)
    bad = [x for x in s["targets"] if x["rate"] == "fast" and x["auto"] == "auto"][0]
    assert not bad["within_10pct_of_best"] and not bad["not_slower_than_raw"]
    assert bad["vs_best"] == pytest.approx(1.4)
    assert bad["choice_is_measured_best"]  # it chose raw: the decision was right, the run slow
    assert "**missed**" in hb.markdown(rep)

    rep["runs"][0]["imported_digest"] = "other"  # a lossless row that did not arrive intact
    assert not hb.summarize(rep)["lossless_bit_exact"]
