"""The vector manifest: loading, schema validation and case selection.

The manifest (``conformance/vectors/manifest.json``) is the only thing the harness needs besides the
``.avp`` files it names; its schema is ``conformance/manifest.schema.json``.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

LEVELS = ("required", "recommended", "optional")
CAPABILITY_MEMBERS = ("operations", "kinds", "dtypes", "codecs", "features")
PACKAGE_DIR = Path(__file__).resolve().parent
CONFORMANCE_DIR = PACKAGE_DIR.parent
DEFAULT_VECTORS = CONFORMANCE_DIR / "vectors"
SCHEMA_PATH = CONFORMANCE_DIR / "manifest.schema.json"


class ManifestError(Exception):
    pass


@dataclass
class Case:
    id: str
    section: str
    requirement_ids: list[str]
    requirement: str
    level: str
    result: str  # valid | invalid | acceptable
    flags: list[str]
    comment: str
    file: str
    context: dict[str, Any]
    requires: dict[str, list[str]]
    expected: dict[str, Any]
    fault_offset: int | None
    data: bytes = field(default=b"", repr=False)
    test_keys: dict[str, str] = field(default_factory=dict)  # the manifest's public test keys
    # Protocol 1.1 dequantize checks: [{"tensor": i, "expected": {...}}], and the expected
    # values of each (tensor index -> bytes), read from vectors/dequantized/.
    dequantize: list[dict[str, Any]] = field(default_factory=list)
    dequantized: dict[int, bytes] = field(default_factory=dict, repr=False)
    path: Path | None = None  # the vector file on disk, for reports

    @property
    def allowed(self) -> list[dict[str, Any]]:
        """The outcomes that pass: one for valid/invalid cases, several for acceptable ones."""
        if self.result == "acceptable":
            return list(self.expected["any_of"])
        return [self.expected]


@dataclass
class Suite:
    path: Path
    notes: dict[str, str]
    cases: list[Case]
    test_keys: dict[str, str]
    capability_names: dict[str, list[str]]  # the only names a testee may declare (1.5)


def load_suite(vectors_dir: Path | None = None, *, load_data: bool = True) -> Suite:
    base = Path(vectors_dir) if vectors_dir else DEFAULT_VECTORS
    manifest_path = base / "manifest.json"
    try:
        doc = json.loads(manifest_path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read {manifest_path}: {exc}") from exc
    validate_manifest(doc)
    cases = []
    for raw in doc["cases"]:
        case = Case(
            id=raw["id"], section=raw["section"], requirement_ids=raw["requirement_ids"],
            requirement=raw["requirement"], level=raw["level"], result=raw["result"],
            flags=raw["flags"], comment=raw["comment"], file=raw["file"],
            context=raw.get("context", {}), requires=raw["requires"], expected=raw["expected"],
            fault_offset=raw.get("fault_offset"), test_keys=doc.get("test_keys", {}),
            dequantize=raw.get("dequantize", []), path=base / raw["file"],
        )
        if load_data:
            try:
                case.data = (base / case.file).read_bytes()
                for d in case.dequantize:
                    if "file" in d["expected"]:
                        case.dequantized[d["tensor"]] = (base / d["expected"]["file"]
                                                         ).read_bytes()
            except OSError as exc:
                raise ManifestError(f"case {case.id}: {exc}") from exc
        cases.append(case)
    return Suite(manifest_path, doc["notes"], cases, doc.get("test_keys", {}),
                 doc["capability_names"])


def validate_manifest(doc: Any) -> None:
    schema = json.loads(SCHEMA_PATH.read_text("utf-8"))
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise ManifestError(f"manifest does not match its schema at {where}: {exc.message}"
                            ) from exc
    ids = [c["id"] for c in doc["cases"]]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ManifestError(f"duplicate case ids: {dupes}")
    unexplained = sorted({f for c in doc["cases"] for f in c["flags"]} - set(doc["notes"]))
    if unexplained:
        raise ManifestError(f"flags missing from the notes table: {unexplained}")


def select(cases: list[Case], level: str, run: tuple[str, ...], skip: tuple[str, ...]
           ) -> tuple[list[Case], list[Case]]:
    """Split into (selected, excluded). ``level`` includes every stricter level."""
    cutoff = LEVELS.index(level)
    chosen: list[Case] = []
    excluded: list[Case] = []
    for case in cases:
        ok = LEVELS.index(case.level) <= cutoff
        if run:
            ok = ok and any(fnmatch.fnmatchcase(case.id, pat) for pat in run)
        if skip and any(fnmatch.fnmatchcase(case.id, pat) for pat in skip):
            ok = False
        (chosen if ok else excluded).append(case)
    return chosen, excluded


def capability_problems(caps: Any, names: dict[str, list[str]]) -> list[str]:
    """What is wrong with a testee's declared capabilities (TESTEE-PROTOCOL 1.5): unknown
    members, names that do not exist (in any other spelling), members that are not arrays."""
    if not isinstance(caps, dict):
        return ["capabilities is not a JSON object"]
    problems = [f"unknown member {m!r} (valid: {', '.join(CAPABILITY_MEMBERS)})"
                for m in caps if m not in CAPABILITY_MEMBERS]
    for member in CAPABILITY_MEMBERS:
        declared = caps.get(member)
        if not isinstance(declared, list) or not all(isinstance(n, str) for n in declared):
            problems.append(f"{member} must be an array of names")
            continue
        valid = names[member]
        for name in declared:
            if name in valid:
                continue
            hint = (f" (names are lower case: {name.lower()!r})"
                    if name.lower() in valid else "")
            problems.append(f"{member}: unknown name {name!r}{hint}; valid: {', '.join(valid)}")
    return problems


def missing_capabilities(case: Case, caps: dict[str, Any]) -> list[str]:
    """What the case needs that the testee did not declare (TESTEE-PROTOCOL 1.5)."""
    missing = []
    for member, needed in case.requires.items():
        have = set(caps.get(member, []))
        missing += [f"{member}:{n}" for n in needed if n not in have]
    return missing
