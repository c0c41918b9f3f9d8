"""Running the suite against a testee and grading each case (TESTEE-PROTOCOL section 4)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .manifest import Case, missing_capabilities
from .testee import Reply, Testee

GRADES = ("pass", "wrong_code", "fail", "skip", "timeout", "crash")


@dataclass
class Result:
    case: Case
    grade: str
    expected: str = ""
    actual: str = ""
    detail: str = ""
    offset: int | None = None  # the byte offset worth showing in a hex window
    seconds: float = 0.0
    known_failure: bool = False


@dataclass
class RunSummary:
    testee: str
    results: list[Result]
    seconds: float
    stale_known_failures: list[str] = field(default_factory=list)
    restarts: int = 0

    def count(self, grade: str) -> int:
        return sum(1 for r in self.results if r.grade == grade)

    @property
    def unexpected_failures(self) -> list[Result]:
        return [r for r in self.results if r.grade not in ("pass", "skip") and not r.known_failure]

    @property
    def conforming(self) -> bool:
        return not self.unexpected_failures and not self.stale_known_failures


def first_difference(expected: Any, actual: Any, path: str = "$") -> str | None:
    """A JSON-path-like pointer to the first place two JSON values differ, or None."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                return f"{path}.{key} missing"
            if key not in expected:
                return f"{path}.{key} unexpected"
            diff = first_difference(expected[key], actual[key], f"{path}.{key}")
            if diff:
                return diff
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            diff = first_difference(e, a, f"{path}[{i}]")
            if diff:
                return diff
        if len(expected) != len(actual):
            return f"{path} has {len(actual)} items, expected {len(expected)}"
        return None
    # bool is an int in Python: compare types too so that true != 1.
    if type(expected) is not type(actual) and not (
        isinstance(expected, int | float) and isinstance(actual, int | float)
        and not isinstance(expected, bool) and not isinstance(actual, bool)
    ):
        return f"{path}: expected {expected!r}, got {actual!r}"
    if expected != actual:
        return f"{path}: expected {expected!r}, got {actual!r}"
    return None


def _describe(outcome: dict[str, Any]) -> str:
    if "error" in outcome:
        return f"reject with {outcome.get('error_name', '?')} ({outcome['error']})"
    text = "accept, decoding to the expected canonical JSON"
    if outcome.get("roundtrip"):
        text += ", re-encoding to the same bytes"
    return text


def _actual(reply: Reply) -> str:
    if reply.status == "error":
        name = reply.header.get("name") or "?"
        where = reply.header.get("offset")
        path = reply.header.get("path") or ""
        return f"rejected with {name} ({reply.header.get('code')}) at offset {where} {path}".strip()
    if reply.status == "ok":
        return "accepted"
    if reply.status == "unsupported":
        return f"unsupported: {reply.header.get('reason', '')}"
    return reply.status


def stored_slices(case: Case, outcome: dict[str, Any]) -> bytes:
    """The stored bytes of every tensor, concatenated: what an encoder is given (protocol 1.1)."""
    return b"".join(case.data[o:o + n] for o, n in outcome.get("tensor_data", []))


def grade_case(case: Case, testee: Testee, timeout: float) -> Result:
    caps = testee.info.capabilities
    missing = missing_capabilities(case, caps)
    if missing:
        return Result(case, "skip", detail="needs " + ", ".join(missing))
    reply = testee.request({"id": case.id, "op": "decode", "context": case.context}, case.data,
                           timeout)
    expected = " or ".join(_describe(o) for o in case.allowed)
    result = Result(case, "fail", expected=expected, actual=_actual(reply), detail=reply.detail,
                    offset=case.fault_offset)
    if reply.status in ("crash", "timeout"):
        result.grade = reply.status
        return result
    if reply.status == "unsupported":
        return result
    if reply.status == "error":
        code = reply.header.get("code")
        if isinstance(reply.header.get("offset"), int):
            result.offset = reply.header["offset"]
        if any(o.get("error") == code for o in case.allowed):
            result.grade = "pass"
        elif any("error" in o for o in case.allowed):
            result.grade = "wrong_code"
        return result
    # Accepted: it must match one of the allowed valid outcomes.
    diffs = []
    for outcome in case.allowed:
        if "json" not in outcome:
            continue
        diff = first_difference(outcome["json"], reply.header.get("json"))
        if diff is None:
            return _check_roundtrip(case, outcome, testee, timeout, result)
        diffs.append(diff)
    result.actual = "accepted" + (f"; canonical JSON differs: {diffs[0]}" if diffs else "")
    return result


def _check_roundtrip(case: Case, outcome: dict[str, Any], testee: Testee, timeout: float,
                     result: Result) -> Result:
    if not outcome.get("roundtrip") or "encode" not in testee.info.capabilities.get(
            "operations", []):
        result.grade = "pass"
        return result
    # An authenticated message re-encodes to the same bytes only with its key (spec 18.4), so
    # the encoder is given the suite's public test keys whatever the receiver held.
    reply = testee.request({"id": case.id, "op": "encode", "json": outcome["json"],
                            "context": {"keys": case.test_keys}},
                           stored_slices(case, outcome), timeout)
    result.actual = "decoded as expected; re-encode " + _actual(reply)
    if reply.status in ("crash", "timeout"):
        result.grade = reply.status
        result.detail = reply.detail
    elif reply.status == "ok" and reply.payload == case.data:
        result.grade = "pass"
    elif reply.status == "ok":
        first = next((i for i, (a, b) in enumerate(zip(case.data, reply.payload, strict=False))
                      if a != b), min(len(case.data), len(reply.payload)))
        result.actual = (f"re-encoded to {len(reply.payload)} bytes (expected {len(case.data)}),"
                         f" first difference at offset {first}")
        result.offset = first
    return result


def load_known_failures(path: Path | None) -> set[str]:
    """One case id per line; '#' starts a comment."""
    if path is None:
        return set()
    ids = set()
    for line in path.read_text("utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.add(line)
    return ids


def run_suite(cases: Iterable[Case], excluded: Iterable[Case], testee: Testee, timeout: float,
              known_failures: set[str],
              progress: Callable[[Result], None] | None = None) -> RunSummary:
    start = time.perf_counter()
    results = [Result(c, "skip", detail="not selected") for c in excluded]
    for case in cases:
        t0 = time.perf_counter()
        result = grade_case(case, testee, timeout)
        result.seconds = time.perf_counter() - t0
        result.known_failure = case.id in known_failures and result.grade not in ("pass", "skip")
        results.append(result)
        if progress:
            progress(result)
    ran = {r.case.id: r.grade for r in results}
    stale = sorted(i for i in known_failures if ran.get(i) == "pass")
    summary = RunSummary(f"{testee.info.name} {testee.info.version}", results,
                         time.perf_counter() - start, stale, testee.restarts)
    summary.results.sort(key=lambda r: r.case.id)
    return summary


def results_json(summary: RunSummary) -> dict[str, Any]:
    return {
        "testee": summary.testee,
        "conforming": summary.conforming,
        "seconds": round(summary.seconds, 3),
        "restarts": summary.restarts,
        "counts": {g: summary.count(g) for g in GRADES},
        "stale_known_failures": summary.stale_known_failures,
        "results": [
            {
                "id": r.case.id, "section": r.case.section, "level": r.case.level,
                "result": r.case.result, "grade": r.grade, "known_failure": r.known_failure,
                "expected": r.expected, "actual": r.actual, "detail": r.detail,
                "offset": r.offset, "seconds": round(r.seconds, 4),
            }
            for r in summary.results
        ],
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
