"""Running the suite against a testee and grading each case (TESTEE-PROTOCOL section 4).

The verdict is computed here, once, so that every report (human, JSON, JUnit, exit status) says
the same thing: what ran, what was skipped and why, and whether that is a conformance verdict.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .manifest import Case, missing_capabilities
from .testee import Reply, Testee

GRADES = ("pass", "wrong_code", "fail", "skip", "timeout", "crash")
NOT_SELECTED = "not selected"


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
    request: dict[str, Any] | None = None  # the request that failed, to reproduce it
    missing: list[str] = field(default_factory=list)  # undeclared capabilities (skips)


@dataclass
class RunSummary:
    testee: str
    results: list[Result]
    seconds: float
    stale_known_failures: list[str] = field(default_factory=list)
    restarts: int = 0
    declared: dict[str, Any] = field(default_factory=dict)  # the testee's capabilities
    min_coverage: float = 0.0
    command: list[str] = field(default_factory=list)  # the testee's argv, for reproduce lines
    tier: str = "persistent"

    def count(self, grade: str) -> int:
        return sum(1 for r in self.results if r.grade == grade)

    @property
    def ran(self) -> list[Result]:
        return [r for r in self.results if r.grade != "skip"]

    @property
    def unexpected_failures(self) -> list[Result]:
        return [r for r in self.results if r.grade not in ("pass", "skip") and not r.known_failure]

    @property
    def skip_reasons(self) -> Counter[str]:
        """How many cases were skipped for each reason: each undeclared capability a case needs
        (a case needing two counts under both), and not being selected."""
        reasons: Counter[str] = Counter()
        for r in self.results:
            if r.grade == "skip":
                reasons.update(["needs " + m for m in r.missing] if r.missing
                               else [NOT_SELECTED])
        return reasons

    @property
    def required_not_run(self) -> list[Result]:
        """Required cases the testee declares everything for that the selection left out."""
        return [r for r in self.results if r.grade == "skip" and not r.missing
                and r.case.level == "required"]

    @property
    def coverage(self) -> float:
        """The share of the whole suite that ran and passed."""
        return self.count("pass") / len(self.results) if self.results else 0.0

    @property
    def verdict(self) -> str:
        if not self.ran or self.unexpected_failures or self.stale_known_failures:
            return "NOT CONFORMING"
        if self.coverage < self.min_coverage:
            return "NOT CONFORMING"
        return "PARTIAL" if self.required_not_run else "CONFORMING"

    @property
    def conforming(self) -> bool:
        return self.verdict == "CONFORMING"

    @property
    def exit_status(self) -> int:
        return 1 if self.verdict == "NOT CONFORMING" else 0

    def why(self) -> str:
        """One sentence saying why the verdict is what it is."""
        if not self.ran:
            return "nothing ran: every selected case needs a capability the testee does not declare"
        bad = len(self.unexpected_failures)
        if bad:
            return f"{bad} case{'s' if bad != 1 else ''} failed"
        if self.stale_known_failures:
            return "the known-failures list is stale"
        if self.coverage < self.min_coverage:
            return (f"coverage {self.coverage:.1%} is below --min-coverage "
                    f"{self.min_coverage:.1%}")
        if self.required_not_run:
            n = len(self.required_not_run)
            return (f"every case that ran passed, but {n} required case{'s' if n != 1 else ''}"
                    " the testee declares the capabilities for were not selected")
        return "every case that ran passed and every required case it declares was run"


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
    numbers = (isinstance(expected, int | float) and isinstance(actual, int | float)
               and not isinstance(expected, bool) and not isinstance(actual, bool))
    # bool is an int in Python: compare types too so that true != 1.
    if type(expected) is not type(actual) and not numbers:
        return f"{path}: expected {expected!r}, got {actual!r}"
    if expected != actual or (numbers and expected == 0 and
                              math.copysign(1, expected) != math.copysign(1, actual)):
        # f64 values compare as binary64 values, so -0.0 and 0 differ.
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
    """The stored bytes of every tensor, concatenated: what an encoder is given (protocol 2.2)."""
    return b"".join(case.data[o:o + n] for o, n in outcome.get("tensor_data", []))


def grade_case(case: Case, testee: Testee, timeout: float) -> Result:
    caps = testee.info.capabilities
    missing = missing_capabilities(case, caps)
    if missing:
        return Result(case, "skip", detail="needs " + ", ".join(missing), missing=missing)
    header = {"id": case.id, "op": "decode", "context": case.context}
    reply = testee.request(header, case.data, timeout)
    expected = " or ".join(_describe(o) for o in case.allowed)
    result = Result(case, "fail", expected=expected, actual=_actual(reply), detail=reply.detail,
                    offset=case.fault_offset, request=header)
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
    got = reply.header.get("json")
    if isinstance(got, str):  # TESTEE-PROTOCOL 1.2: an embedded object, never JSON text
        result.actual = "accepted, but the json member is a string, not a JSON object"
        return result
    diffs = []
    for outcome in case.allowed:
        if "json" not in outcome:
            continue
        diff = first_difference(outcome["json"], got)
        if diff is None:
            result = _check_roundtrip(case, outcome, testee, timeout, result)
            if result.grade == "pass" and case.dequantize:
                result = _check_dequantize(case, testee, timeout, result)
            return result
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
    header = {"id": case.id, "op": "encode", "json": outcome["json"],
              "context": {"keys": case.test_keys}}
    result.request = header
    reply = testee.request(header, stored_slices(case, outcome), timeout)
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


_ELEMENT = {"float32": (4, "<I", "<f"), "float16": (2, "<H", "<e"), "bfloat16": (2, "<H", None)}


def _element(data: bytes, dtype: str, i: int) -> str:
    size, bits, value = _ELEMENT.get(dtype, (1, "<B", None))
    if (i + 1) * size > len(data):
        return "(missing)"
    raw = data[i * size:(i + 1) * size]
    pattern = struct.unpack(bits, raw)[0]
    if value is None:  # bfloat16: the upper half of a binary32
        shown = struct.unpack("<f", struct.pack("<I", pattern << 16))[0]
    else:
        shown = struct.unpack(value, raw)[0]
    return f"0x{pattern:0{2 * size}X} ({shown!r})"


def _check_dequantize(case: Case, testee: Testee, timeout: float, result: Result) -> Result:
    """Protocol 1.1: each listed tensor dequantizes to exactly the expected bits (R-12.6)."""
    for check in case.dequantize:
        i, want = check["tensor"], check["expected"]
        header = {"id": case.id, "op": "dequantize", "tensor": i, "context": case.context}
        reply = testee.request(header, case.data, timeout)
        result.request, result.detail = header, reply.detail
        if "error" in want:
            result.expected = f"dequantize tensor {i}: reject with {want['error_name']}"
        else:
            result.expected = (f"dequantize tensor {i}: {want['length']} bytes of "
                               f"{want['dtype']}, sha256 {want['sha256'][:16]}...")
        result.actual = f"dequantize tensor {i}: " + _actual(reply)
        if reply.status in ("crash", "timeout"):
            result.grade = reply.status
            return result
        if reply.status == "error":
            if "error" not in want or reply.header.get("code") != want["error"]:
                result.grade = "fail" if "error" not in want else "wrong_code"
                return result
            continue
        if reply.status != "ok" or "error" in want:
            result.grade = "fail"
            return result
        got = reply.payload
        if hashlib.sha256(got).hexdigest() == want["sha256"]:
            continue
        result.grade = "fail"
        expected_bytes = case.dequantized.get(i, b"")
        size = _ELEMENT.get(want["dtype"], (1,))[0]
        first = next((k for k in range(0, min(len(got), len(expected_bytes)), size)
                      if got[k:k + size] != expected_bytes[k:k + size]),
                     min(len(got), len(expected_bytes)))
        element = first // size
        result.actual = (f"dequantize tensor {i}: {len(got)} bytes (expected {want['length']});"
                         f" first differing element {element}: expected "
                         f"{_element(expected_bytes, want['dtype'], element)}, got "
                         f"{_element(got, want['dtype'], element)}")
        return result
    result.grade = "pass"
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
              progress: Callable[[Result], None] | None = None,
              min_coverage: float = 0.0) -> RunSummary:
    start = time.perf_counter()
    caps = testee.info.capabilities
    # An unselected case keeps the capabilities it would have needed, so the report can tell
    # "left out by the selection" from "the testee does not declare what it needs".
    results = [Result(c, "skip", detail=NOT_SELECTED, missing=missing_capabilities(c, caps))
               for c in excluded]
    for r in results:
        if r.missing:
            r.detail = "needs " + ", ".join(r.missing)
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
                         time.perf_counter() - start, stale, testee.restarts, dict(caps),
                         min_coverage)
    summary.results.sort(key=lambda r: r.case.id)
    return summary


def results_json(summary: RunSummary) -> dict[str, Any]:
    return {
        "testee": summary.testee,
        "verdict": summary.verdict,
        "why": summary.why(),
        "conforming": summary.conforming,
        "seconds": round(summary.seconds, 3),
        "restarts": summary.restarts,
        "cases": len(summary.results),
        "ran": len(summary.ran),
        "coverage": round(summary.coverage, 4),
        "counts": {g: summary.count(g) for g in GRADES},
        "skipped": dict(sorted(summary.skip_reasons.items())),
        "required_not_run": [r.case.id for r in summary.required_not_run],
        "stale_known_failures": summary.stale_known_failures,
        "results": [
            {
                "id": r.case.id, "section": r.case.section, "level": r.case.level,
                "result": r.case.result, "grade": r.grade, "known_failure": r.known_failure,
                "expected": r.expected, "actual": r.actual, "detail": r.detail,
                "offset": r.offset, "seconds": round(r.seconds, 4), "file": r.case.file,
                "request": r.request if r.grade not in ("pass", "skip") else None,
            }
            for r in summary.results
        ],
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
