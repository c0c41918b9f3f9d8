"""The frozen vector suite: regenerates byte for byte, matches its schema, covers the spec."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from avp_conform import coverage
from avp_conform import manifest as mf
from avp_conform.generate import generate
from avp_conform.runner import load_known_failures

from .conftest import REFERENCE_KNOWN_FAILURES


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_regeneration_reproduces_the_frozen_files(tmp_path: Path) -> None:
    problems = generate(tmp_path)
    # The reference decoder agrees with every case's expectation except the listed codec bugs.
    known = load_known_failures(REFERENCE_KNOWN_FAILURES)
    assert {p.split(":")[0] for p in problems} == known
    frozen, fresh = _files(mf.DEFAULT_VECTORS), _files(tmp_path)
    assert sorted(fresh) == sorted(frozen)
    drifted = [name for name in frozen if frozen[name] != fresh[name]]
    assert drifted == [], "frozen vectors changed; a byte change needs a format-version change"


def test_manifest_shape_and_counts() -> None:
    doc = json.loads((mf.DEFAULT_VECTORS / "manifest.json").read_text("utf-8"))
    mf.validate_manifest(doc)
    results = Counter(c["result"] for c in doc["cases"])
    assert len(doc["cases"]) >= 400
    assert results["invalid"] >= 60
    assert results["valid"] >= 40 and results["acceptable"] >= 3
    for case in doc["cases"]:
        data = (mf.DEFAULT_VECTORS / case["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == case["sha256"], case["id"]
        for check in case.get("dequantize", []):
            want = check["expected"]
            assert "dequantize" in case["requires"]["operations"], case["id"]
            if "file" in want:
                values = (mf.DEFAULT_VECTORS / want["file"]).read_bytes()
                assert hashlib.sha256(values).hexdigest() == want["sha256"], case["id"]
                assert len(values) == want["length"], case["id"]
        if case["result"] == "invalid":
            assert case["requirement_ids"] or case["section"].startswith("14"), case["id"]


def test_every_error_code_and_requirement_is_covered() -> None:
    doc = json.loads((mf.DEFAULT_VECTORS / "manifest.json").read_text("utf-8"))
    missing_codes, missing_reqs, stale = coverage.gaps(doc)
    assert missing_codes == []
    assert missing_reqs == []
    assert stale == [], "NOT_BY_VECTORS lists ids that are now covered or no longer exist"


def test_valid_json_has_exactly_the_spec_members(suite: mf.Suite) -> None:
    # Spec 18.1/18.2 member lists (R-18.1: exactly these members, none added).
    top = {"format", "kind", "entries", "layers", "tensors", "authenticated"}
    entry = {"key", "name", "type", "critical", "value"}
    layer = {"layer_index", "layer_kind", "window", "token_start", "token_count"}
    tensor = {"tensor_index", "layer", "role", "dtype", "codec", "layout", "shape",
              "token_offset", "quant", "raw_length", "stored_length", "data_crc", "raw_sha256"}
    for case in suite.cases:
        for outcome in case.allowed:
            doc = outcome.get("json")
            if doc is None:
                continue
            assert set(doc) == top, case.id
            assert all(set(e) == entry for e in doc["entries"]), case.id
            assert all(set(la) == layer for la in doc["layers"]), case.id
            assert all(set(t) == tensor for t in doc["tensors"]), case.id


def test_schema_rejects_a_bad_manifest() -> None:
    doc = json.loads((mf.DEFAULT_VECTORS / "manifest.json").read_text("utf-8"))
    doc["cases"][0]["level"] = "mandatory"
    with pytest.raises(mf.ManifestError, match="level"):
        mf.validate_manifest(doc)
    doc = json.loads((mf.DEFAULT_VECTORS / "manifest.json").read_text("utf-8"))
    doc["cases"].append(dict(doc["cases"][0]))
    with pytest.raises(mf.ManifestError, match="duplicate"):
        mf.validate_manifest(doc)
    doc = json.loads((mf.DEFAULT_VECTORS / "manifest.json").read_text("utf-8"))
    flagged = next(c for c in doc["cases"] if c["flags"])
    flagged["flags"] = ["NoSuchFlag"]
    with pytest.raises(mf.ManifestError, match="notes"):
        mf.validate_manifest(doc)


def test_capability_names_are_one_lower_case_vocabulary() -> None:
    # TESTEE-PROTOCOL 1.5: the manifest's names are the registries' names in lower case, and
    # every case asks only for names from that list.
    doc = json.loads((mf.DEFAULT_VECTORS / "manifest.json").read_text("utf-8"))
    names = doc["capability_names"]
    registries = Path(mf.CONFORMANCE_DIR).parent / "spec" / "registries"
    for member, registry in (("kinds", "kinds"), ("dtypes", "dtypes"), ("codecs", "codecs")):
        entries = json.loads((registries / f"{registry}.json").read_text("utf-8"))["entries"]
        assert names[member] == [e["name"].lower() for e in entries]
    for case in doc["cases"]:
        for member, needed in case["requires"].items():
            assert set(needed) <= set(names[member]), case["id"]
    assert mf.capability_problems({m: list(v) for m, v in names.items()}, names) == []
    assert mf.capability_problems({**names, "kinds": ["KV_CACHE"]}, names)


def test_the_generators_registry_tables_agree_with_the_registries() -> None:
    # The vector writer keeps its own copy of the registries (it shares no code with the
    # codec); it must still say what spec/registries says.
    from avp_conform import gen_common as g
    registries = Path(mf.CONFORMANCE_DIR).parent / "spec" / "registries"

    def load(name: str) -> list[dict[str, object]]:
        entries: list[dict[str, object]] = json.loads(
            (registries / f"{name}.json").read_text("utf-8"))["entries"]
        return entries
    types = {e["name"]: e["code"] for e in load("value_types")}
    assert {e["name"]: (e["key"], types[e["type"]], e["critical"])
                      for e in load("metadata_keys")} == g.KEYS
    assert {e["name"]: e["code"] for e in load("kinds")} == g.KINDS
    assert {e["name"]: e["code"] for e in load("dtypes")} == g.DTYPES
    assert {e["code"]: e["name"] for e in load("codecs")} == g.CODEC_NAMES
    assert {e["name"]: e["code"] for e in load("roles")} == g.ROLES
