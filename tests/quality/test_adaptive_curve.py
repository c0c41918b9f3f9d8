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


def _c(agree: int, ratio: float, tokens: int = 100) -> dict[str, Any]:
    return {"agree": agree, "tokens": tokens, "top1_pct": round(100 * agree / tokens, 2),
            "size_ratio": ratio, "kl_per_token": 0.01}


def test_select_dev_pools_every_development_token_and_needs_the_size_on_each_set() -> None:
    dev = {"tune": {"a": _c(99, 5.1), "b": _c(95, 5.2), "c": _c(99, 5.3), "d": _c(99, 5.0)},
           "heldout1": {"a": _c(90, 5.1), "b": _c(96, 5.2), "c": _c(99, 4.98),
                        "d": _c(92, 5.0)},
           "heldout2": {"a": _c(180, 5.1, 200), "b": _c(190, 5.2, 200), "d": _c(190, 5.1, 200)}}
    # c misses 5x on heldout1 and is not scored on heldout2; a's tuning lead does not win.
    # b: 381/400, d: 381/400: a tie, broken by the larger smallest-set size ratio (b 5.2).
    assert ac.select_dev(dev) == "b"
    dev["heldout2"]["d"] = _c(191, 5.1, 200)
    assert ac.select_dev(dev) == "d"
    assert ac.select_dev(dev, min_ratio=6.0) is None
    assert ac.select_dev({}) is None


def test_report_judges_the_development_choice_on_the_final_set_only() -> None:
    dev = {"tune": {"x 5x": _c(97, 5.1), "y 5x": _c(96, 5.1)},
           "heldout1": {"x 5x": _c(97, 5.1), "y 5x": _c(96, 5.1)},
           "heldout2": {"x 5x": _c(97, 5.1), "y 5x": _c(96, 5.1)}}
    final = {"x 5x": _c(94, 5.05), "y 5x": _c(96, 5.05)}
    rep = ac.report(dev, final)
    # The choice is made on the development sets; a better final-set row does not rescue it.
    assert rep["selected_on_development_sets"] == "x 5x"
    assert rep["met"] is False
    assert rep["pooled_development"]["x 5x"]["agree"] == 291
    md = ac.markdown(rep, {"tune": 5, "heldout1": 5, "heldout2": 10, "heldout3": 11})
    assert "x 5x **(selected)**" in md and "**not met**" in md and ac.RULE in md
    assert "| y 5x | 5.05x | 96.00% (96/100;" in md
    final["x 5x"] = _c(95, 5.05)
    assert ac.report(dev, final)["met"] is True
    final["x 5x"] = _c(95, 4.9)
    assert ac.report(dev, final)["met"] is False
    assert "not scored on heldout3" in ac.markdown(ac.report(dev, {}), {})


def test_wilson_interval_brackets_the_rate() -> None:
    lo, hi = ac.wilson(608, 640)
    assert lo < 0.95 < hi and lo > 0.92
    assert ac.wilson(0, 0) == (0.0, 1.0)


def test_pooled_sums_tokens_of_policies_in_every_curve() -> None:
    a = {"p": {"agree": 60, "tokens": 64}, "only_a": {"agree": 1, "tokens": 1}}
    b = {"p": {"agree": 30, "tokens": 32}}
    got = ac.pooled(a, b)
    assert list(got) == ["p"]
    assert (got["p"]["agree"], got["p"]["tokens"], got["p"]["top1_pct"]) == (90, 96, 93.75)
    lo, hi = got["p"]["wilson95_pct"]
    assert lo < 93.75 < hi


def test_markdown_says_when_the_interval_straddles_the_target() -> None:
    dev = {s: {"x 5x": _c(97, 5.1)} for s in ("tune", "heldout1", "heldout2")}
    md = ac.markdown(ac.report(dev, {"x 5x": _c(675, 5.04, 704)}), {})
    assert "**met**" in md and "straddles 95%: the point estimate meets the target" in md
    md = ac.markdown(ac.report(dev, {"x 5x": _c(700, 5.04, 704)}), {})
    assert "straddles" not in md  # 99.4%: the whole interval is above 95%
    md = ac.markdown(ac.report(dev, {"x 5x": _c(665, 5.04, 704)}), {})
    assert "**not met**" in md and "the point estimate misses" in md
