"""avp-conform itself: selection, grading, restart after a crash, timeouts, known failures, the
human, JSON and JUnit reports, and a verdict that cannot be green by accident (issue 19.1)."""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
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


def test_a_partial_selection_is_not_a_conformance_verdict() -> None:
    code, out = cli("--testee", REF, "--run", "3/*", "--json")
    doc = json.loads(out)
    ran = [r for r in doc["results"] if r["grade"] != "skip"]
    assert ran and all(r["grade"] == "pass" for r in ran)
    assert doc["counts"]["pass"] == len(ran) == doc["ran"]
    # Every selected case passed, but required cases the testee declares were left out.
    assert code == 0 and doc["verdict"] == "PARTIAL" and doc["conforming"] is False
    assert doc["skipped"] == {"not selected": doc["cases"] - len(ran)}
    assert "10/text-basic" in doc["required_not_run"]
    code, out = cli("--testee", REF, "--run", "3/*")
    assert "PARTIAL: every case that ran passed, but" in out
    assert "skipped, not selected:" in out


def test_an_empty_selection_is_a_usage_error() -> None:
    # Issue 19: `--run 'nomatch*'` printed "CONFORMING: 311 cases: 311 skip" and exited 0.
    for args in (("--testee", REF, "--run", "nomatch*"), ("--list", "--run", "nomatch*"),
                 ("--testee", REF, "--skip", "*")):
        code, out = cli(*args)
        assert code == 2, args
        assert "no case matches" in out and "CONFORMING" not in out


def _fake_testee(tmp_path: Path, capabilities: dict[str, object]) -> str:
    """A persistent-tier testee that only says who it is (no request is ever answered)."""
    script = tmp_path / "fake_testee.py"
    script.write_text(textwrap.dedent(f"""
        import json, struct, sys
        start = json.dumps({{"avp_testee": 1, "minor": 1, "name": "fake", "version": "0",
                            "capabilities": {capabilities!r}}}).encode()
        sys.stdout.buffer.write(struct.pack("<I", len(start)) + start + struct.pack("<Q", 0))
        sys.stdout.buffer.flush()
        sys.stdin.buffer.read()
    """))
    return shlex.join([sys.executable, str(script)])


def test_unknown_capability_names_are_usage_errors(tmp_path: Path) -> None:
    caps = {"operations": ["decode"], "kinds": ["kv_cache"], "dtypes": ["FLOAT16"],
            "codecs": ["RAW"], "features": ["kv_cache"]}
    code, out = cli("--testee", _fake_testee(tmp_path, caps), "--run", "3/*")
    assert code == 2
    assert "unknown name 'FLOAT16' (names are lower case: 'float16')" in out
    assert "unknown name 'RAW' (names are lower case: 'raw')" in out
    assert "features: unknown name 'kv_cache'; valid: unverified, limits" in out
    # The old, upper-case kind names are refused too: one convention, nothing else accepted.
    caps = {"operations": ["decode"], "kinds": ["KV_CACHE"], "dtypes": [], "codecs": [],
            "features": [], "extra": []}
    code, out = cli("--testee", _fake_testee(tmp_path, caps), "--run", "3/*")
    assert code == 2 and "'KV_CACHE' (names are lower case: 'kv_cache')" in out
    assert "unknown member 'extra'" in out


def test_nothing_ran_is_not_conforming(tmp_path: Path) -> None:
    caps = {"operations": ["decode"], "kinds": [], "dtypes": [], "codecs": [], "features": []}
    code, out = cli("--testee", _fake_testee(tmp_path, caps), "--run", "10/text-*")
    assert code == 1
    assert "NOT CONFORMING: nothing ran" in out
    assert "skipped, needs kinds:text:" in out


def test_min_coverage_for_ci() -> None:
    code, out = cli("--testee", REF, "--run", "3/*", "--min-coverage", "0.5")
    assert code == 1 and "NOT CONFORMING: coverage" in out and "below --min-coverage 50.0%" in out
    assert cli("--testee", REF, "--run", "3/*", "--min-coverage", "1.5")[0] == 2


def test_a_failure_names_its_file_and_how_to_reproduce_it() -> None:
    code, out = cli("--testee", REF + " --break accept-trailing", "--run", "2/trailing-one-*")
    assert code == 1
    assert "file:        " in out and "invalid/2__trailing-one-zero-byte.avp" in out
    assert 'request:     {"id":"2/trailing-one-zero-byte","op":"decode","context":{}}' in out
    assert "reproduce (simple tier): " in out and " decode < " in out
    assert "rerun:       avp-conform --testee" in out and "--run 2/trailing-one-zero-byte" in out


def test_a_json_member_given_as_a_string_fails() -> None:
    code, out = cli("--testee", REF + " --break json-text-as-string", "--run", "10/text-basic")
    assert code == 1
    assert "the json member is a string, not a JSON object" in out


def test_a_testee_of_the_other_tier_gets_a_hint(tmp_path: Path) -> None:
    # A simple-tier testee started as persistent prints JSON text where a frame belongs.
    code, out = cli("--testee", REF + " capabilities", "--run", "3/*")
    assert code == 2 and "--tier simple" in out
    code, out = cli("--testee", shlex.join([sys.executable, "-c", "pass"]), "--tier", "simple",
                    "--run", "3/*")
    assert code == 2 and "--tier persistent" in out


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
    assert first_difference({"a": -0.0}, {"a": 0}) is not None  # binary64 values: sign too
    assert first_difference({"a": -0.0}, {"a": -0.0}) is None
    assert first_difference({"a": True}, {"a": 1}) is not None
    assert first_difference({"a": 1}, {}) == "$.a missing"
    assert first_difference([1], [1, 2]) == "$ has 2 items, expected 1"


def test_hex_window_marks_the_offset() -> None:
    rows = hex_window(bytes(range(64)), 20)
    assert any("[14]" in r for r in rows)
    assert rows[-1].strip().startswith("^^") or any("^^ offset 20" in r for r in rows)
    assert "end of the input" in hex_window(b"abc", 3)[-1]
