"""One error vocabulary across the whole toolkit (issue 19.4), side by side in one place.

For every input of both hostile corpora (the codec's, tests/hardening/hostile_codec.py, and
avp-dump's, tests/tools/dump_hostile_corpus.py) the first ``(code, offset, path)`` is compared
across ``decode``, ``decode_file``, the incremental ``Decoder`` (one feed and 4 KiB chunks),
``IndexedReader`` (within spec 11.3's own steps, see test_reader_agreement) and avp-dump's first
issue. The conformance vectors get the same comparison, split over two files:
tests/codec/test_reader_agreement.py (the four codec readers, every vector, any chunking) and
tests/tools/test_dump_agreement.py (avp-dump against decode, every invalid vector); here, a
sample of them runs through all five at once so a drift in either pair shows as one table row.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from avp_tools import walk

import avp_codec as avp

from ..hardening import hostile_codec
from .test_reader_agreement import Outcome, _cuts, check_agreement

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))
import dump_hostile_corpus as dump_corpus  # noqa: E402

VECTORS = ROOT / "conformance" / "vectors"


def dump_first(data: bytes, kw: dict[str, Any]) -> Outcome:
    """avp-dump's verdict in decode's terms: its first issue, or "ok"."""
    w = walk(data, limits=kw.get("limits"), verify_data=kw.get("verify", True))
    first = w.first
    assert w.valid == (first is None)
    if first is None:
        return "ok"
    return (avp.ErrorCode(first.code).name, first.offset, first.path)


def all_five(data: bytes, kw: dict[str, Any], tmp_path: Path) -> Outcome:
    """decode, decode_file, Decoder, IndexedReader agree (check_agreement), and so does
    avp-dump when the message needs no receiver context a byte-level walk cannot play."""
    path = tmp_path / "case.avp"
    path.write_bytes(data)
    cuts: list[list[int]] = [[]] if len(data) > 4 << 20 else [[], _cuts(len(data), 4096)]
    want = check_agreement(data, kw, path, cuts)
    if not set(kw) - {"limits", "verify"}:
        assert dump_first(data, kw) == want, "avp-dump's first issue differs from decode's"
    return want


CODEC_CASES = [c.name for c in hostile_codec.byte_cases()]


@pytest.mark.parametrize("name", CODEC_CASES)
def test_codec_hostile_corpus_reads_alike_everywhere(name: str, tmp_path: Path) -> None:
    case = next(c for c in hostile_codec.byte_cases() if c.name == name)
    got = all_five(case.build(hostile_codec.CI_SCALE), case.decode_kwargs(), tmp_path)
    assert (got if got == "ok" else got[0]) == case.expect_decode


@pytest.mark.parametrize("name", sorted(dump_corpus.CASES))
def test_dump_hostile_corpus_reads_alike_everywhere(name: str, tmp_path: Path) -> None:
    all_five(dump_corpus.build(name, 1), {}, tmp_path)


def _sample() -> list[dict[str, Any]]:
    cases = json.loads((VECTORS / "manifest.json").read_text("utf-8"))["cases"]
    invalid = [c for c in cases if c["result"] == "invalid"
               and set(c.get("context", {})) <= {"limits"}]
    return invalid[::4]


SAMPLE = _sample()


@pytest.mark.parametrize("case", SAMPLE, ids=[c["id"] for c in SAMPLE])
def test_invalid_vectors_read_alike_everywhere(case: dict[str, Any], tmp_path: Path) -> None:
    kw = {"limits": avp.Limits(**case["context"]["limits"])} if "limits" in case.get(
        "context", {}) else {}
    got = all_five((VECTORS / case["file"]).read_bytes(), kw, tmp_path)
    assert got != "ok" and got[0] == case["expected"]["error_name"]


def test_the_comparison_is_not_vacuous() -> None:
    assert len(CODEC_CASES) >= 15 and len(dump_corpus.CASES) >= 15 and len(SAMPLE) >= 50
