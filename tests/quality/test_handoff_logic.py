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


def _report(auto_fast: list[float]) -> dict[str, Any]:
    """A recorded report: 5 paired repetitions at a slow and a fast link."""
    profiles = {
        "raw": {"name": "raw", "size_ratio": 1.0, "encode_bps": 1e9, "decode_bps": 1e9,
                "lossless": True, "agreement_pct": None},
        "zstd": {"name": "zstd", "size_ratio": 1.3, "encode_bps": 3e8, "decode_bps": 6e8,
                 "lossless": True, "agreement_pct": None},
        "int4": {"name": "int4", "size_ratio": 3.5, "encode_bps": 2e8, "decode_bps": 4e8,
                 "lossless": False, "agreement_pct": 95.3},
    }
    # The machine's load drifts between repetitions (rep 3 is twice as slow for everyone):
    # paired ratios cancel it, medians of separate runs would not.
    drift = [1.0, 1.1, 0.9, 2.0, 1.0]
    secs = {"slow": {"raw": [4.0, 4.2, 4.1, 4.0, 4.1], "zstd": [3.1, 3.0, 3.2, 3.0, 3.1],
                     "int4": [1.5, 1.4, 1.6, 1.5, 1.5], "auto": [3.05, 3.1, 3.0, 3.0, 3.1],
                     "auto95": [1.5, 1.6, 1.5, 1.5, 1.5]},
            "fast": {"raw": [0.5, 0.5, 0.6, 0.5, 0.5], "zstd": [0.9, 0.9, 1.0, 0.9, 0.9],
                     "int4": [0.8, 0.8, 0.8, 0.8, 0.8], "auto": auto_fast,
                     "auto95": [0.5, 0.49, 0.5, 0.5, 0.5]}}
    runs = [{"rate": r, "codec": c, "seconds": s * drift[i], "rep": i, "imported_digest": "d",
             "wire_bytes": 1, "first_tensor_s": 0.1, "upload_s": 0.1}
            for r, by in secs.items() for c, ss in by.items() for i, s in enumerate(ss)]
    return {"config": {"model": "m", "context_tokens": 10, "raw_bf16_kv_bytes": 1e6,
                       "tensors": 4, "transport": "t", "machine": "x", "reps": 5,
                       "calibration_rounds": 3, "calibration_seconds": 1.0,
                       "load_average_1min_at_start": 1.0, "load_average_1min_at_end": 1.0,
                       "kernels": "default", "seconds": 1.0, "auto_floor_pct": 95.0,
                       "adaptive_policy_seconds_once": 0.1},
            "profiles": profiles, "measured_link_bps": {"slow": 1e6, "fast": 1e9},
            "auto_choices": {"slow": {"auto": "zstd", "auto95": "int4"},
                             "fast": {"auto": "raw", "auto95": "raw"}},
            "expected_digest": "d", "runs": runs}


def test_summary_met_and_missed() -> None:
    rep = _report(auto_fast=[0.49, 0.5, 0.59, 0.5, 0.5])
    rep["summary"] = s = hb.summarize(rep)
    t = {(x["rate"], x["auto"]): x for x in s["targets"]}
    assert t["slow", "auto"]["best_codec"] == "zstd"  # int4 is not admitted by "lossless"
    assert t["slow", "auto95"]["best_codec"] == "int4"
    assert all(x["within_10pct_of_best"] and x["not_slower_than_raw"] for x in t.values())
    assert t["slow", "auto"]["raw_verdict_by"] == "paired auto/raw"
    assert s["lossless_bit_exact"]
    md = hb.markdown(rep)
    assert "**missed**" not in md and "| slow | auto (lossless) | zstd |" in md
    assert "Both targets met in 4 of 4" in md

    rep = _report(auto_fast=[0.7, 0.7, 0.84, 0.7, 0.7])  # 40% slower than raw in every rep
    rep["summary"] = s = hb.summarize(rep)
    bad = [x for x in s["targets"] if x["rate"] == "fast" and x["auto"] == "auto"][0]
    assert not bad["within_10pct_of_best"] and not bad["not_slower_than_raw"]
    assert bad["vs_best"]["median"] == pytest.approx(1.4)
    assert bad["vs_best"]["lo"] == pytest.approx(1.4)  # the drift cancels in every pair
    assert bad["choice_is_measured_best"]  # it chose raw: the decision was right, auto slow
    assert "**missed**" in hb.markdown(rep)

    rep["runs"][0]["imported_digest"] = "other"  # a lossless row that did not arrive intact
    assert not hb.summarize(rep)["lossless_bit_exact"]


def test_like_with_like_reading_when_auto_ran_the_raw_job() -> None:
    # auto chose raw and ran raw's job: 3 of 5 paired ratios a little above 1 (noise), the
    # interval reaches below 1, so auto is not measurably slower than the job it ran.
    rep = _report(auto_fast=[0.52, 0.49, 0.62, 0.51, 0.48])
    s = hb.summarize(rep)
    t = [x for x in s["targets"] if x["rate"] == "fast" and x["auto"] == "auto"][0]
    assert t["vs_raw"]["median"] > 1.0 and t["vs_raw"]["lo"] < 1.0
    assert t["chose_vs_raw"]["median"] == 1.0  # chose raw: like with like is raw vs raw
    assert t["not_slower_than_raw"]
    assert t["raw_verdict_by"].startswith("like with like")


def test_median_interval_is_distribution_free() -> None:
    hs = sys.modules["handoff_stats"]
    xs = [float(x) for x in range(1, 10)]  # n = 9: ranks 2 and 8, coverage 1 - 20/512
    lo, hi, cov = hs.median_ci(xs)
    assert (lo, hi) == (2.0, 8.0) and cov == pytest.approx(1 - 20 / 512)
    assert hs.median_ci([5.0]) == (5.0, 5.0, 0.0)
    lo, hi, cov = hs.median_ci([3.0, 1.0, 2.0])  # too few for 95%: the range, 75% coverage
    assert (lo, hi, cov) == (1.0, 3.0, 0.75)
    with pytest.raises(ValueError):
        hs.median_ci([])
    runs = [{"rate": "r", "codec": c, "seconds": s, "rep": i}
            for i, (a, b) in enumerate([(2.0, 1.0), (3.0, 3.0)]) for c, s in (("a", a), ("b", b))]
    runs.append({"rate": "r", "codec": "a", "seconds": 9.0, "rep": 2})  # b never ran in rep 2
    assert hs.paired(runs, "r", "a", "b") == [2.0, 1.0]


def test_schedule_pairs_every_codec_in_every_repetition() -> None:
    plan = hb.schedule(["x", "y"], ["raw", "zstd", "auto"], 4)
    assert len(plan) == 2 * 3 * 4
    for rep in range(4):
        block = [(r, c) for k, r, c in plan if k == rep]
        assert sorted(block) == sorted((r, c) for r in "xy" for c in ("raw", "zstd", "auto"))
        # a rate's runs in one repetition are consecutive: the pairs are seconds apart
        rates = [r for r, _ in block]
        assert rates in (["x"] * 3 + ["y"] * 3, ["y"] * 3 + ["x"] * 3)
    orders = [tuple(c for k, r, c in plan if r == "x" and k == rep) for rep in range(4)]
    assert orders[1] == orders[0][::-1] and orders[3] == orders[2][::-1]  # counterbalanced
    plan = hb.schedule([f"r{i}" for i in range(5)], [f"c{i}" for i in range(8)], 6)
    evens = {tuple(c for k, r, c in plan if r == "r0" and k == rep) for rep in (0, 2, 4)}
    assert len(evens) > 1  # shuffled afresh, not the same order every time
    for a, b in (("c0", "c1"), ("c2", "c7")):  # each pair in either order equally often
        first = [[c for k, r, c in plan if r == "r3" and k == rep].index(a)
                 < [c for k, r, c in plan if r == "r3" and k == rep].index(b)
                 for rep in range(6)]
        assert sum(first) == 3


def test_calibration_warms_up_then_takes_shuffled_rounds() -> None:
    calls: list[str] = []

    def transfer(name: str) -> float:
        calls.append(name)
        return float(len(calls))

    out = hb.calibrate(transfer, ["a", "b", "c"], 3)
    assert calls[:3] == ["a", "b", "c"]  # the warm-up round, not recorded
    assert len(calls) == 12 and all(len(v) == 3 for v in out.values())
    assert min(min(v) for v in out.values()) == 4.0
    for r in range(3):
        assert sorted(calls[3 + 3 * r:6 + 3 * r]) == ["a", "b", "c"]


def test_like_with_like_reading_for_within_10pct_when_auto_ran_the_best_job() -> None:
    # At the fast link raw is the best; auto ran raw's job and came out 15% slower in the
    # median pair, but not measurably slower than raw (its interval reaches below 1).
    rep = _report(auto_fast=[0.4, 0.58, 0.72, 0.6, 0.575])
    t = [x for x in hb.summarize(rep)["targets"]
         if x["rate"] == "fast" and x["auto"] == "auto"][0]
    assert t["vs_best"]["median"] > 1.10 and t["auto_vs_chose"]["lo"] < 1.0
    assert t["within_10pct_of_best"] and t["best_verdict_by"].startswith("like with like")
    assert t["not_slower_than_raw"] and t["raw_verdict_by"].startswith("like with like")
    # A wrong choice is not rescued: zstd is 80% slower than raw in its own runs.
    rep["auto_choices"]["fast"]["auto"] = "zstd"
    t = [x for x in hb.summarize(rep)["targets"]
         if x["rate"] == "fast" and x["auto"] == "auto"][0]
    assert not t["within_10pct_of_best"] and not t["choice_is_measured_best"]
