"""avp-conform itself: selection, grading, restart after a crash, timeouts, known failures, and
the human, JSON and JUnit reports."""

from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

from avp_conform.cli import main
from avp_conform.report import hex_window
from avp_conform.runner import first_difference
from click.testing import CliRunner

from .conftest import REFERENCE

REF = shlex.join(REFERENCE)


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_list_selects_by_glob_and_level() -> None:
    code, out = cli("--list", "--run", "3/*")
    lines = [ln for ln in out.splitlines() if ln.startswith("3/")]
    assert code == 0 and lines and all("\t" in ln for ln in lines)
    _, optional = cli("--list", "--run", "9.3/*")
    _, required = cli("--list", "--run", "9.3/*", "--level", "required")
    assert "9.3/data-crc-wrong-unverified" in optional
    assert "9.3/data-crc-wrong-unverified" not in required
    _, skipped = cli("--list", "--run", "3/*", "--skip", "3/bad-magic-*")
    assert "bad-magic" not in skipped


def test_json_report_of_a_conforming_run() -> None:
    code, out = cli("--testee", REF, "--run", "3/*", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["conforming"] is True
    ran = [r for r in doc["results"] if r["grade"] != "skip"]
    assert ran and all(r["grade"] == "pass" for r in ran)
    assert doc["counts"]["pass"] == len(ran)


def test_broken_testee_human_report_and_junit(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    code, out = cli("--testee", REF + " --break accept-trailing", "--run", "2/trailing-*",
                    "--junit", str(junit))
    assert code == 1
    assert "NOT CONFORMING" in out and "§2 Message layout: 0/3 passed" in out
    assert "expected:    reject with TRAILING_BYTES (4)" in out
    assert "actual:      accepted" in out
    assert "[00]" in out and "^^ offset" in out  # hex window at the first trailing byte
    root = ET.parse(junit).getroot()
    cases = root.findall(".//testcase")
    failures = root.findall(".//testcase/failure")
    assert len(failures) == 3 and len(cases) > 3  # unselected cases appear as skipped
    assert all(f.get("type") == "fail" for f in failures)


def test_known_failures_pass_the_run_and_go_stale(tmp_path: Path) -> None:
    known = tmp_path / "known.txt"
    known.write_text("# accept-trailing is a deliberate bug\n2/trailing-one-zero-byte\n"
                     "2/trailing-eight-zero-bytes\n2/trailing-second-message\n")
    broken = REF + " --break accept-trailing"
    code, out = cli("--testee", broken, "--run", "2/trailing-*", "--known-failures", str(known))
    assert code == 0, out
    assert "known failure" in out
    known.write_text(known.read_text() + "3/bad-magic-not-avp  # passes: stale\n")
    code, out = cli("--testee", broken, "--run", "2/trailing-*", "--run", "3/bad-magic-not-avp",
                    "--known-failures", str(known))
    assert code == 1
    assert "STALE" in out and "3/bad-magic-not-avp" in out


def test_a_crash_is_one_case_and_the_testee_restarts() -> None:
    code, out = cli("--testee", REF + " --break crash-on:3/bad-magic-c*", "--run", "3/*",
                    "--json")
    doc = json.loads(out)
    grades = {r["id"]: r["grade"] for r in doc["results"]}
    assert code == 1
    assert grades["3/bad-magic-ctrl-z-lost"] == "crash"
    assert grades["3/bad-magic-crlf-to-lf"] == "crash"
    assert grades["3/bad-magic-not-avp"] == "pass"  # later cases still ran
    assert doc["restarts"] == 2


def test_timeout_is_graded_and_the_run_goes_on() -> None:
    code, out = cli("--testee", REF + " --break hang-on:3/unsupported-major-0", "--run", "3/*",
                    "--timeout", "3", "--json")
    grades = {r["id"]: r["grade"] for r in json.loads(out)["results"]}
    assert code == 1
    assert grades["3/unsupported-major-0"] == "timeout"
    assert grades["3/unsupported-major-2"] == "pass"


def test_a_testee_that_keeps_crashing_is_a_harness_error() -> None:
    code, out = cli("--testee", REF + " --break crash-on:*", "--run", "3/*")
    assert code == 2
    assert "harness error" in out


def test_usage_and_start_errors_exit_2(tmp_path: Path) -> None:
    assert cli("--level", "mandatory")[0] == 2
    assert cli("--testee", str(tmp_path / "no-such-testee"), "--run", "3/*")[0] == 2
    assert cli("--vectors", str(tmp_path))[0] == 2  # no manifest there


def test_first_difference_points_at_the_field() -> None:
    assert first_difference({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]}) == \
        "$.a[1].b: expected 2, got 3"
    assert first_difference({"a": 1}, {"a": 1.0}) is None  # numbers compare by value
    assert first_difference({"a": True}, {"a": 1}) is not None
    assert first_difference({"a": 1}, {}) == "$.a missing"
    assert first_difference([1], [1, 2]) == "$ has 2 items, expected 1"


def test_hex_window_marks_the_offset() -> None:
    rows = hex_window(bytes(range(64)), 20)
    assert any("[14]" in r for r in rows)
    assert rows[-1].strip().startswith("^^") or any("^^ offset 20" in r for r in rows)
    assert "end of the input" in hex_window(b"abc", 3)[-1]
