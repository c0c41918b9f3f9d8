"""avp-dump and avp_codec.decode agree (issues 14 and 19.4).

The walker has no rules of its own (tools/README.md, "One verdict"): for every input, the first
issue of a walk that reads the data is exactly the error ``avp_codec.decode`` raises, as
``(code, offset, path)``, and the message is valid for one exactly when it is for the other.
Checked here on every conformance vector whose context the walker can play, on the hostile
corpus, and through every view's exit status.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from avp_tools import walk
from avp_tools.dump_cli import main
from click.testing import CliRunner

import avp_codec as avp

HERE = Path(__file__).resolve().parent
VECTORS = HERE.parents[1] / "conformance" / "vectors"
sys.path.insert(0, str(HERE))
import dump_hostile_corpus as corpus  # noqa: E402

# Receiver context a byte-level walk cannot play (keys, a model, a handshake) is left out.
_WALKABLE_CONTEXT = {"limits"}
Error = tuple[int, int | None, str] | None


def decode_error(data: bytes, limits: avp.Limits | None = None) -> Error:
    try:
        avp.decode(data, limits=limits)
    except avp.AvpError as exc:
        return int(exc.code), exc.offset, exc.path
    return None


def walk_error(data: bytes, limits: avp.Limits | None = None) -> Error:
    w = walk(data, limits=limits, verify_data=True)
    first = w.first
    assert w.valid == (first is None)
    return None if first is None else (first.code, first.offset, first.path)


def _cases() -> list[dict[str, Any]]:
    doc = json.loads((VECTORS / "manifest.json").read_text("utf-8"))
    return [c for c in doc["cases"] if set(c.get("context", {})) <= _WALKABLE_CONTEXT]


CASES = _cases()
INVALID = [c for c in CASES if c["result"] != "valid"]


def test_the_selection_covers_the_suite() -> None:
    assert len(CASES) >= 270
    assert sum(c["result"] == "invalid" for c in CASES) >= 200


@pytest.mark.parametrize("case", INVALID, ids=[c["id"] for c in INVALID])
def test_first_issue_is_decodes_error(case: dict[str, Any]) -> None:
    """Issue 19.4: same code, same offset, same path syntax, for every invalid vector."""
    data = (VECTORS / case["file"]).read_bytes()
    limits = avp.Limits(**case.get("context", {}).get("limits", {}))
    assert walk_error(data, limits) == decode_error(data, limits), case["id"]


def test_every_vector_has_one_verdict() -> None:
    for case in CASES:
        data = (VECTORS / case["file"]).read_bytes()
        limits = avp.Limits(**case.get("context", {}).get("limits", {}))
        assert walk_error(data, limits) == decode_error(data, limits), case["id"]


def _exit(*args: str, data: bytes) -> int:
    return CliRunner().invoke(main, list(args), input=data).exit_code


VIEWS_READING_DATA = (("-", "--verify"), ("-", "--issues"), ("-", "--issues", "--json"))
STRUCTURE_VIEWS = (("-",), ("-", "--map"), ("-", "--hex"), ("-", "--explain", "0"))


@pytest.mark.parametrize("case", CASES[::3], ids=[c["id"] for c in CASES[::3]])
def test_every_view_gives_decodes_verdict(case: dict[str, Any]) -> None:
    """Views that read the data exit 1 exactly when decode refuses; the structure-only views
    never refuse what decode accepts, and when they refuse, it is decode's first error."""
    if case.get("context"):
        pytest.skip("custom limits: the CLI runs with the default ones")
    data = (VECTORS / case["file"]).read_bytes()
    want = 0 if decode_error(data) is None else 1
    for args in VIEWS_READING_DATA:
        assert _exit(*args, data=data) == want, (case["id"], args)
    # --stats also refuses to dequantize with a non-finite parameter, which the
    # structural decode does not read: exit 1 then too, with one line naming QUANT_PARAMS.
    r = CliRunner().invoke(main, ["-", "--stats"], input=data)
    if want == 0 and r.exit_code == 1:
        assert "cannot be dequantized: 52 QUANT_PARAMS" in r.stderr, (case["id"], r.stderr)
    else:
        assert r.exit_code == want, (case["id"], r.stderr)
    quiet = walk(data)
    if quiet.first is not None:
        first = quiet.first
        assert (first.code, first.offset, first.path) == decode_error(data), case["id"]
    for args in STRUCTURE_VIEWS:
        if data or "--explain" not in args:  # no byte 0 to explain in an empty input
            assert _exit(*args, data=data) == (0 if quiet.valid else 1), (case["id"], args)


# The codec's decode recursed once per skippable section (issue 14); where it still does, the
# comparison is with what it must say once fixed: nothing (the message is valid).
_RECURSION = {"skippable_before_header", "skippable_before_index"}


@pytest.mark.parametrize("name", sorted(corpus.CASES))
def test_hostile_corpus_has_one_verdict(name: str) -> None:
    data = corpus.build(name, 1)
    try:
        ref = decode_error(data)
    except RecursionError:
        assert name in _RECURSION
        ref = None
    assert walk_error(data) == ref, name


def test_two_token_ids_in_hidden_state_follow_the_codec() -> None:
    # issue 14: decode accepted it while every avp-dump view exited 1. Whatever the codec
    # decides (the at-most-one rule is the spec's to settle), every view now says the same.
    data = corpus.build("hidden_two_token_ids")
    ref = decode_error(data)
    assert walk_error(data) == ref
    want = 0 if ref is None else 1
    for args in (*VIEWS_READING_DATA, ("-", "--stats"), *STRUCTURE_VIEWS):
        assert _exit(*args, data=data) == want, args
