"""The task set and the statistics of benchmarks/quality_bench.py (no model needed)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

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


qt = _load("quality_tasks")
qb = _load("quality_bench")


def test_task_set_is_fixed_unique_and_balanced() -> None:
    items = qt.items()
    assert len(items) == 301
    assert len({i.id for i in items}) == len(items)
    assert len({(i.document, i.question) for i in items}) == len(items)
    assert items == qt.items()  # a pure function of the seed
    # A prefix is a balanced sample: the first 9 items are one of each template.
    assert len({i.template for i in qt.items(9)}) == 9
    for it in items:
        assert it.answer and " " not in it.answer
        assert it.kind in ("recall-context", "recall-world", "reasoning")
        if it.kind == "recall-context":  # the answer is in the handed-over document
            assert it.answer in it.document


def test_reasoning_answers_are_right() -> None:
    for it in qt.items():
        if it.template == "larger":
            a, b = (int(x) for x in it.question.rstrip("?").split("larger, ")[1].split(" or "))
            assert it.answer == str(max(a, b))
        if it.template == "add_small":
            a, b = (int(x) for x in it.question.rstrip("?").split("is ")[1].split(" plus "))
            assert it.answer == str(a + b)


@pytest.mark.parametrize(("pred", "gold", "after", "ok"), [
    ([5, 6], [5, 6], ".", True),
    ([5, 6], [5, 6], " and", True),
    ([5, 6], [5, 6], "ville", False),  # "Lima" + "ville": the word goes on
    ([5, 6], [5, 6], "7", False),
    ([5, 7], [5, 6], ".", False),
    ([5], [5, 6], ".", False),
])
def test_exact_match(pred: list[int], gold: list[int], after: str, ok: bool) -> None:
    assert qt.exact_match(pred, gold, after) is ok


def test_wilson_interval() -> None:
    lo, hi = qb.wilson(80, 100)
    assert lo == pytest.approx(0.7112, abs=1e-3) and hi == pytest.approx(0.8666, abs=1e-3)
    assert qb.wilson(0, 10)[0] == pytest.approx(0.0) and qb.wilson(10, 10)[1] == pytest.approx(1.0)
    assert qb.wilson(0, 0) == (0.0, 1.0)


def test_paired_bootstrap() -> None:
    a = [True] * 90 + [False] * 10
    assert qb.paired_bootstrap(a, a) == (0.0, 0.0)
    b = [True] * 80 + [False] * 20  # b misses 10 items a gets: a - b = +0.10
    lo, hi = qb.paired_bootstrap(a, b)
    assert 0.03 < lo < 0.10 < hi < 0.17
    with pytest.raises(ValueError):
        qb.paired_bootstrap(a, b[:-1])


def _record(i: int, kind: str, ok: dict[str, bool]) -> dict[str, object]:
    rows = {k: {"correct": ok.get(k, True), "logprob": -0.5, "bytes": 100} for k in qb.ROWS}
    return {"id": f"t-{i}", "kind": kind, "rows": rows}


def test_summary_flags_a_lossy_codec_that_loses_over_a_point(tmp_path: Path) -> None:
    recs = [_record(i, "reasoning" if i % 2 else "recall-world",
                    {"kv_int4": i >= 3, "kv_int8": i != 0, "direct": i != 5})
            for i in range(100)]
    s = qb.summarize(recs)
    rows = s["rows"]
    assert rows["kv_fp32"]["accuracy_pct"] == 100.0
    assert rows["kv_int4"]["vs_raw_kv_pts"] == -3.0 and rows["kv_int4"]["lossy_drop_over_1pt"]
    assert rows["kv_int8"]["vs_raw_kv_pts"] == -1.0
    assert not rows["kv_int8"]["lossy_drop_over_1pt"]  # exactly 1 point is not "more than"
    assert rows["direct"]["disagree_with_raw_kv"] == 1
    assert set(rows["kv_int4"]["by_kind_pct"]) == {"reasoning", "recall-world"}
    report = {"config": {"model": "m", "gemma": "g", "machine": "x", "adaptive": "a"},
              "summary": s}
    md = qb.markdown(report)
    assert "**loses > 1 pt**" in md and md.count("**loses > 1 pt**") == 1
    log = tmp_path / "quality_items.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert qb.load_records(log) == json.loads(json.dumps(recs))
