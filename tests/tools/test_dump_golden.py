"""Golden outputs of avp-dump over the frozen conformance vectors: the text summary of every
valid and acceptable vector, --issues (text and JSON) of every vector, and the byte-level views
(--map, --hex, --explain, --stats, diff) of a few.  The vectors never change, so any difference is
a change in avp-dump's output, to be reviewed and then accepted by regenerating:

    AVP_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/tools/test_dump_golden.py

Colour is off (CliRunner is no terminal).  The --issues goldens have no reference-decoder line
(it comes only with --reference), so that they pin avp-dump alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from avp_tools.dump_cli import main
from click.testing import CliRunner

import avp_codec as avp

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "conformance" / "vectors"
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("AVP_UPDATE_GOLDEN") == "1"


def _cases() -> list[dict[str, object]]:
    doc = json.loads((VECTORS / "manifest.json").read_text("utf-8"))
    return sorted(doc["cases"], key=lambda c: str(c["id"]))


def _dump(*args: str) -> str:
    # Paths relative to the repository root, so the "file" line is the same on every machine.
    old = Path.cwd()
    os.chdir(REPO)
    try:
        r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)
    return f"$ avp-dump {' '.join(args)}\n[exit {r.exit_code}]\n{r.output}"


def _rel(case: dict[str, object]) -> str:
    return f"conformance/vectors/{case['file']}"


def _key(case: dict[str, object]) -> str:
    # The vector's digest is part of the key: a regenerated vector shows up as such.
    return f"{case['id']}  sha256:{str(case['sha256'])[:16]}"


def _render() -> dict[str, dict[str, str]]:
    """golden file name -> {entry key -> text}."""
    cases = _cases()
    summary = {_key(c): _dump(_rel(c)) for c in cases if c["result"] != "invalid"}
    issues = {_key(c): _dump(_rel(c), "--issues") for c in cases}
    issues_json = {_key(c): _dump(_rel(c), "--issues", "--json")
                   for c in cases if c["result"] != "valid"}
    q = "conformance/vectors/valid/12__affine-int4-groups-zero-point.avp"
    bp = "conformance/vectors/valid/7.3__byteplane_zstd-bfloat16.avp"
    views = {
        "map-int4": _dump(q, "--map"),
        "stats-int4": _dump(q, "--stats"),
        "stats-int4-keys-json": _dump(q, "--stats", "--json", "--tensor", "*:KEY"),
        "hex-byteplane": _dump(bp, "--hex"),
        "explain-descriptor": _dump(bp, "--explain", "0xd2"),
        "explain-data": _dump(bp, "--explain", "300"),
        "facts-byteplane": _dump(bp, "--json", "--facts"),
        "diff-f16-bf16": _dump("diff", "conformance/vectors/valid/7.2__kv-float16.avp",
                               "conformance/vectors/valid/7.2__kv-bfloat16.avp"),
        "map-truncated": _dump("conformance/vectors/invalid/2__truncated-inside-data.avp", "--map"),
    }
    return {"vectors-summary.txt": summary, "vectors-issues.txt": issues,
            "vectors-issues-json.txt": issues_json, "views.txt": views}


_SEP = "\n#### "


def _write(name: str, entries: dict[str, str]) -> None:
    GOLDEN.mkdir(exist_ok=True)
    text = "".join(f"{_SEP}{key}\n{value}" for key, value in entries.items())
    (GOLDEN / name).write_text(text.lstrip("\n"), "utf-8")


def _read(name: str) -> dict[str, str]:
    text = "\n" + (GOLDEN / name).read_text("utf-8")
    out = {}
    for chunk in text.split(_SEP)[1:]:
        key, _, value = chunk.partition("\n")
        out[key] = value
    return out


RENDERED: dict[str, dict[str, str]] = {}


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, str]]:
    if not RENDERED:
        RENDERED.update(_render())
        if UPDATE:
            for name, entries in RENDERED.items():
                _write(name, entries)
    return RENDERED


@pytest.mark.parametrize("name", ["vectors-summary.txt", "vectors-issues.txt",
                                  "vectors-issues-json.txt", "views.txt"])
def test_golden(rendered: dict[str, dict[str, str]], name: str) -> None:
    want = _read(name)
    got = rendered[name]
    changed = sorted(set(got) ^ set(want))
    assert not changed, f"vectors added, removed or regenerated: {changed[:6]}; regenerate (top)"
    for key in got:
        assert got[key] == want[key], f"{name} / {key} differs: review, then regenerate"


def test_goldens_say_what_they_should(rendered: dict[str, dict[str, str]]) -> None:
    # Spot checks so that regenerating cannot quietly bless nonsense.
    issues = rendered["vectors-issues.txt"]
    for case in _cases():
        text = issues[_key(case)]
        if case["result"] == "valid":
            assert "[exit 0]" in text and "result  valid" in text, case["id"]
        elif case["result"] == "invalid" and not case.get("context"):
            exp = case["expected"]
            assert isinstance(exp, dict)
            data = (VECTORS / str(case["file"])).read_bytes()
            try:
                avp.decode(data)
                continue  # vector and codec disagree for now (see test_dump_vectors)
            except avp.AvpError:
                pass
            assert "[exit 1]" in text, case["id"]
            assert f"first: {exp['error']} {exp['error_name']})" in text, case["id"]
    views = rendered["views.txt"]
    assert "KEY" in views["stats-int4"] and "->deq" in views["stats-int4"]
    assert "UNACCOUNTED" not in views["map-int4"]
    assert "TRUNCATED" in views["map-truncated"]
