"""Structural checks of spec/avp-spec.md: the things a reader relies on when navigating it.

Requirement ids are unique and every cited id is defined; sections are numbered consecutively
and cross references point at sections that exist; normative text has no TODO; the error-code
"when it applies" table covers every code of the registry; the original requirement ids of the
1.0 draft are all still defined (the conformance suite cites them)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import avp_codec as avp

SPEC = (Path(__file__).resolve().parents[2] / "spec" / "avp-spec.md").read_text(encoding="utf-8")
NORMATIVE = SPEC.split("## Appendix A.", 1)[0]

# Requirement ids of the first draft of the spec. Their meaning is frozen; they must stay defined.
DRAFT_IDS = [f"1.{i}" for i in (1, 2, 3)] + ["2.1"] + [f"3.{i}" for i in (1, 2, 3)] + [
    f"4.{i}" for i in (1, 2, 3)] + ["5.1", "5.2"] + [f"6.{i}" for i in range(1, 10)] + [
    f"7.{i}" for i in range(1, 10)] + ["8.1", "8.2", "9.1", "9.2", "9.3"] + [
    f"10.{i}" for i in (1, 2, 3, 4)] + ["12.1", "15.1", "15.2"]


def _defined_ids() -> list[str]:
    # A definition is the first mention in brackets: "[R-6.3]" or "[R-2.1: `TRAILING_BYTES`]".
    return re.findall(r"\[R-(\d+\.\d+)[\]:]", NORMATIVE)


def test_requirement_ids_are_unique() -> None:
    dupes = [i for i, n in Counter(_defined_ids()).items() if n > 1]
    assert not dupes, f"requirement ids defined twice: {dupes}"


def test_every_cited_requirement_is_defined() -> None:
    defined = set(_defined_ids())
    cited = set(re.findall(r"R-(\d+\.\d+)", SPEC))
    assert cited <= defined, f"cited but never defined: {sorted(cited - defined)}"


def test_draft_requirement_ids_survive() -> None:
    missing = [i for i in DRAFT_IDS if i not in set(_defined_ids())]
    assert not missing


def test_requirement_ids_belong_to_their_section() -> None:
    """An id R-x.y is defined inside section x (ids are named after their section)."""
    current = 0
    for line in NORMATIVE.splitlines():
        m = re.match(r"## (\d+)\. ", line)
        if m:
            current = int(m.group(1))
        for rid in re.findall(r"\[R-(\d+)\.\d+[\]:]", line):
            assert int(rid) == current, f"R-{rid}.x defined in section {current}: {line!r}"


def test_sections_are_numbered_consecutively() -> None:
    numbers = [int(n) for n in re.findall(r"^## (\d+)\. ", SPEC, flags=re.M)]
    assert numbers == list(range(1, len(numbers) + 1))


def test_cross_references_name_existing_sections() -> None:
    headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", SPEC, flags=re.M))
    refs = re.findall(r"\bsections? (\d+(?:\.\d+)?)", NORMATIVE)
    refs += re.findall(r"\(see (\d+(?:\.\d+)?)\)", NORMATIVE)
    missing = sorted({r for r in refs if r not in headings})
    assert not missing, f"references to sections that do not exist: {missing}"


def test_no_todo_in_normative_text() -> None:
    for word in ("TODO", "TBD", "FIXME"):
        assert word not in NORMATIVE


def test_when_each_code_applies_covers_the_registry() -> None:
    table = SPEC.split("### 17.1", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")]
    named: set[str] = set()
    for cell in rows:
        for name in re.split(r",\s*", cell):
            named.add(name)
    for code in avp.ErrorCode:
        hit = code.name in named or (code.name.startswith("LIMIT_") and "LIMIT_*" in named)
        assert hit, f"17.1 does not say when {code.name} applies"


def test_error_registry_table_lists_every_code() -> None:
    table = SPEC.split("## 17. Error codes", 1)[1].split("### 17.1", 1)[0]
    rows = {int(m.group(1)): m.group(2)
            for m in re.finditer(r"^\| (\d+) \| ([A-Z_]+) \|", table, flags=re.M)}
    assert rows == {int(c): c.name for c in avp.ErrorCode}
