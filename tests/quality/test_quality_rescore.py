"""quality_bench --rescore-adaptive: only the kv_adaptive row changes, records already made with
the current adaptive policy are skipped, and the log is rewritten whole after each item (no model:
the model step is replaced)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
qr = pytest.importorskip("quality_runner")


def _rec(i: int, adaptive: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"item-{i}", "rows": {"kv_bf16": {"correct": True, "logprob": -0.5},
                                        "kv_adaptive": adaptive, "direct": {"correct": True}}}


def test_rescore_replaces_only_stale_adaptive_rows(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fp = qr.adaptive_fingerprint()
    fresh = {"correct": True, "logprob": -1.0, "adaptive": fp}
    log = tmp_path / "quality_items.jsonl"
    recs = [_rec(0, {"correct": False, "logprob": -3.0}), _rec(1, fresh),
            _rec(2, {"correct": True, "logprob": -2.0, "adaptive": "an-older-policy"})]
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    calls: list[str] = []

    class _Tok:
        def convert_tokens_to_ids(self, _: str) -> int:
            return 2

    class _Conn:
        tokenizer = _Tok()

    def fake(c: Any, rec: dict[str, Any], end: int) -> dict[str, Any]:
        calls.append(rec["id"])
        return {"correct": True, "logprob": -0.7, "bytes": 10, "adaptive": fp,
                "recent_window": 2, "bf16_check": True}

    monkeypatch.setattr(qr.Connector, "default", staticmethod(lambda: _Conn()))
    monkeypatch.setattr(qr, "_rescore_one", fake)
    qr.rescore_adaptive(log, 1)
    assert calls == ["item-0", "item-2"]
    got = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["id"] for r in got] == ["item-0", "item-1", "item-2"]
    assert got[1]["rows"]["kv_adaptive"] == fresh
    for r, old in zip(got, recs, strict=True):
        assert r["rows"]["kv_adaptive"]["adaptive"] == fp
        assert r["rows"]["direct"] == old["rows"]["direct"]  # other rows untouched
    qr.rescore_adaptive(log, 1)  # everything current: nothing to do
    assert calls == ["item-0", "item-2"]
