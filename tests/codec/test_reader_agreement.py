"""One error vocabulary (issue 19.4, spec 17.2): the same fault gives the same first (code, offset,
path) from decode, decode_file, the incremental Decoder (any chunking) and IndexedReader.

Every vector of conformance/vectors whose context a plain decoder can honour (limits, keys,
verification mode) runs through all four readers, and so does the codec's hostile corpus
(tests/hardening/hostile_codec.py). The only differences allowed are the ones the spec allows:
the incremental decoder MAY report LIMIT_BUFFER where a complete-buffer decoder goes on (R-9.5),
and the random-access reader starts at the end and validates less (11.3): it may accept a
message whose fault it never reads (and it verifies no tag, having no keys), and it reports what
its own steps find (the Trailer, the INDEX and its entries, the bytes before the INDEX) with
the codes of 11.3, still in decode's vocabulary of offsets and paths (spec 17.2).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import avp_codec as avp

from ..hardening import hostile_codec

ROOT = Path(__file__).resolve().parents[2] / "conformance" / "vectors"
MANIFEST = json.loads((ROOT / "manifest.json").read_text("utf-8"))
Outcome = tuple[str, int | None, str] | str


def _kwargs(ctx: dict[str, Any]) -> dict[str, Any] | None:
    """Decoder options from a vector's context; None when it needs a receiver (a model, a
    session) rather than a decoder."""
    if set(ctx) - {"limits", "verify", "keys", "require_auth"}:
        return None
    kw: dict[str, Any] = {}
    if "limits" in ctx:
        kw["limits"] = avp.Limits(**ctx["limits"])
    if "verify" in ctx:
        kw["verify"] = ctx["verify"]
    if "keys" in ctx:
        kw["keys"] = {bytes.fromhex(k): bytes.fromhex(v) for k, v in ctx["keys"].items()}
    if "require_auth" in ctx:
        kw["require_auth"] = ctx["require_auth"]
    return kw


CASES = [(c["id"], ROOT / c["file"], kw) for c in MANIFEST["cases"]
         if (kw := _kwargs(c["context"])) is not None]


def _incremental_may(case: dict[str, Any]) -> set[str]:
    """Outcomes an incremental decoder may give instead of decode's (flag IncrementalMay: the
    spec lets it report LIMIT_BUFFER, or LIMIT_MESSAGE only once the bytes fed exceed it)."""
    if "IncrementalMay" not in case["flags"]:
        return set()
    return {o.get("error_name", "ok") for o in case["expected"].get("any_of", [])}


INCREMENTAL_MAY = {c["id"]: _incremental_may(c) for c in MANIFEST["cases"]}


def first(fn: Any) -> Outcome:
    try:
        fn()
        return "ok"
    except avp.AvpError as e:
        return (e.code.name, e.offset, e.path)


def incremental(data: bytes, cuts: list[int], kw: dict[str, Any]) -> None:
    """Feed ``data`` split at ``cuts``, drain, end the input; raises the first error."""
    d = avp.Decoder(**kw)
    prev = 0
    for at in [*cuts, len(data)]:
        d.feed(data[prev:at])
        prev = at
        while (ev := d.next_event()) is not avp.NEED_DATA:
            assert ev is not avp.END_OF_STREAM
    d.end_of_input()
    while (ev := d.next_event()) is not avp.END_OF_STREAM:
        assert ev is not avp.NEED_DATA, "NEED_DATA after end_of_input()"


def indexed(data: bytes, kw: dict[str, Any]) -> None:
    r = avp.IndexedReader(data, **{k: v for k, v in kw.items() if k in ("verify", "limits")})
    for i in range(len(r)):
        r.tensor(i)


def check_agreement(data: bytes, kw: dict[str, Any], path: Path | None,
                    cuts: list[list[int]], may: set[str] = frozenset()) -> Outcome:  # type: ignore[assignment]
    want = first(lambda: avp.decode(data, **kw))
    if want != "ok":
        code, offset, where = want
        assert offset is not None and where, f"decode's error lacks an offset or path: {want}"
    if path is not None:
        assert first(lambda: avp.decode_file(path, **kw)) == want, "decode_file"
    for c in cuts:
        got = first(lambda c=c: incremental(data, c, kw))
        code = got if got == "ok" else got[0]
        if got != want and code != "LIMIT_BUFFER" and code not in may:
            raise AssertionError(f"Decoder with cuts {c[:8]}...: {got} != decode's {want}")
    if "keys" not in kw and "require_auth" not in kw:
        got = first(lambda: indexed(data, kw))
        assert got in (want, "ok") or _own_steps(got, data) or _own_steps(want, data), (
            f"IndexedReader: {got} != {want}")
    return want


def _own_steps(outcome: Outcome, data: bytes) -> bool:
    """A fault where the random-access reader takes steps of its own (11.3): the Trailer, the
    INDEX and its entries (read first, so the reader may meet a fault there before the one
    decode meets first, e.g. a cut file is BAD_TRAILER), and the bytes before the INDEX ending
    early (step 4 reads only those); an entry pointing off its section makes the reader read a
    section that is not there. Anywhere else (the preamble, the HEADER, a tensor) the two
    report the same (code, offset, path), or the reader nothing if it never reads it."""
    if outcome == "ok":
        return False
    code, offset, path = outcome
    index_at = int.from_bytes(data[-16:-8], "little") if len(data) >= 16 else 0
    return (path.startswith(("index", "trailer", "trailing")) or code == "TRUNCATED"
            or (path.startswith("section") and offset is not None and offset >= index_at))


def _cuts(n: int, step: int) -> list[int]:
    return list(range(step, n, step))


@pytest.mark.parametrize("case_id,path,kw", CASES, ids=[c[0] for c in CASES])
def test_every_vector_reads_alike_in_every_reader(case_id: str, path: Path,
                                                  kw: dict[str, Any]) -> None:
    data = path.read_bytes()
    rng = random.Random(case_id)
    random_cuts = sorted(rng.sample(range(1, len(data)), max(0, min(12, len(data) - 1))))
    check_agreement(data, kw, path, [[], _cuts(len(data), 1), _cuts(len(data), 7),
                                     _cuts(len(data), 64), random_cuts], INCREMENTAL_MAY[case_id])


def test_the_vectors_exercise_the_comparison() -> None:
    """Guard against a vacuous pass: most invalid vectors are compared, and IndexedReader meets
    (and agrees on) the fault of many of them."""
    invalid = [(p, kw) for cid, p, kw in CASES
               if next(c for c in MANIFEST["cases"] if c["id"] == cid)["result"] == "invalid"]
    assert len(invalid) >= 200
    seen_by_reader = sum(first(lambda p=p, kw=kw: indexed(p.read_bytes(), kw)) != "ok"
                         for p, kw in invalid if "keys" not in kw)
    assert seen_by_reader >= 100


@pytest.mark.parametrize("name", [c.name for c in hostile_codec.byte_cases()])
def test_hostile_corpus_reads_alike_in_every_reader(name: str) -> None:
    case = next(c for c in hostile_codec.byte_cases() if c.name == name)
    data = case.build(hostile_codec.CI_SCALE)
    big = len(data) > 1 << 20
    cuts = [[]] if big else [[], _cuts(len(data), 997), _cuts(len(data), 4096)]
    got = check_agreement(data, case.decode_kwargs(), None, cuts)
    assert (got if got == "ok" else got[0]) == case.expect_decode
    if case.expect_indexed:
        assert first(lambda: indexed(data, case.decode_kwargs()))[0] == case.expect_indexed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([c for c in CASES if "invalid/" in str(c[1])]), st.data())
def test_any_chunking_reports_decodes_error(case: tuple[str, Path, dict[str, Any]],
                                            data: st.DataObject) -> None:
    case_id, path, kw = case
    buf = path.read_bytes()
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(buf) - 1)), max_size=40))))
    check_agreement(buf, kw, None, [cuts], INCREMENTAL_MAY[case_id])
