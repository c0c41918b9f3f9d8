"""The curve and the selection rule of benchmarks/adaptive_search.py on a small recorded fixture
(no model needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


ac = _load("adaptive_curve")


def _row(agree: int, wire: int, bf16: int = 1000, kl: float = 0.5) -> dict[str, Any]:
    return {"wire_bytes": wire, "bf16_bytes": bf16, "agree": agree, "tokens": 64, "kl_sum": kl}


def _rec(**prompts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"per_prompt": {pid: {"context_tokens": 1000, "rows": rows}
                           for pid, rows in prompts.items()}}


def test_curve_pools_bytes_and_tokens_over_prompts() -> None:
    rec = _rec(a={"p 5x": _row(60, 200), "q": _row(64, 500)},
               b={"p 5x": _row(62, 250, kl=1.5), "q": _row(63, 500)})
    c = ac.curve(rec)
    assert list(c) == ["p 5x", "q"]
    p = c["p 5x"]
    assert p["size_ratio"] == round(2000 / 450, 3)  # summed bytes, not a mean of ratios
    assert p["min_prompt_ratio"] == 4.0
    assert (p["agree"], p["tokens"], p["top1_pct"]) == (122, 128, round(100 * 122 / 128, 2))
    assert p["kl_per_token"] == float(f"{2.0 / 128:.3g}")
    assert p["per_prompt"] == {"a": 60, "b": 62}


def test_curve_keeps_only_policies_scored_on_every_prompt() -> None:
    rec = _rec(a={"p": _row(60, 200), "new": _row(64, 100)}, b={"p": _row(62, 250)})
    assert list(ac.curve(rec)) == ["p"]
    assert ac.curve({"per_prompt": {}}) == {}


def test_select_takes_best_agreement_at_the_size_and_never_a_smaller_ratio() -> None:
    tune = {"big": {"top1_pct": 99.0, "size_ratio": 3.6},
            "a": {"top1_pct": 95.5, "size_ratio": 5.02},
            "b": {"top1_pct": 96.0, "size_ratio": 4.99},   # misses the size: never chosen
            "c": {"top1_pct": 95.5, "size_ratio": 5.4}}
    assert ac.select(tune) == "c"  # tie on agreement: the smaller message
    assert ac.select(tune, min_ratio=6.0) is None
    assert ac.select({}) is None


def test_report_judges_the_tuning_choice_on_held_out_numbers() -> None:
    tune = {"x 5x": {"top1_pct": 97.0, "size_ratio": 5.1},
            "y 5x": {"top1_pct": 96.0, "size_ratio": 5.1}}
    held = {"x 5x": {"top1_pct": 94.0, "size_ratio": 5.05, "agree": 94, "tokens": 100,
                     "kl_per_token": 0.01},
            "y 5x": {"top1_pct": 96.0, "size_ratio": 5.05, "agree": 96, "tokens": 100,
                     "kl_per_token": 0.01}}
    rep = ac.report(tune, held)
    # The choice is made on the tuning set; a better held-out row does not rescue it.
    assert rep["selected_on_tuning_set"] == "x 5x"
    assert rep["met"] is False
    assert rep["best_on_heldout_at_target_size"] == "y 5x"
    md = ac.markdown(rep, 5, 10)
    assert "x 5x **(selected)**" in md and "**not met**" in md
    held["x 5x"]["top1_pct"] = 95.0
    assert ac.report(tune, held)["met"] is True
    held["x 5x"]["size_ratio"] = 4.9
    assert ac.report(tune, held)["met"] is False


def test_wilson_interval_brackets_the_rate() -> None:
    lo, hi = ac.wilson(608, 640)
    assert lo < 0.95 < hi and lo > 0.92
    assert ac.wilson(0, 0) == (0.0, 1.0)


def test_confirmation_table_lists_each_policy() -> None:
    rec = _rec(a={"p 5x": _row(60, 200), "q 4x": _row(64, 250)})
    md = ac.confirmation_markdown(ac.curve(rec), 1)
    assert "held-out set 1 (1 prompts" in md
    assert "| q 4x | 4.00x | 100.00% (64/64;" in md and "| p 5x | 5.00x | 93.75%" in md


def test_pooled_sums_tokens_of_policies_in_every_curve() -> None:
    a = {"p": {"agree": 60, "tokens": 64}, "only_a": {"agree": 1, "tokens": 1}}
    b = {"p": {"agree": 30, "tokens": 32}}
    got = ac.pooled(a, b)
    assert list(got) == ["p"]
    assert (got["p"]["agree"], got["p"]["tokens"], got["p"]["top1_pct"]) == (90, 96, 93.75)
    lo, hi = got["p"]["wilson95_pct"]
    assert lo < 93.75 < hi
