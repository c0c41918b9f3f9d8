"""What the vector suite covers: every registered error code and every [R-x.y] requirement.

A requirement that a decode vector cannot exercise (encoder-only, model-only, or about how an
implementation is built) is listed in NOT_BY_VECTORS with the reason and where it is tested
instead; every other id of the spec must be named by at least one case. The test
tests/conformance/test_conform_coverage.py fails on any gap, including ids added to the spec later.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "spec" / "avp-spec.md"
ERROR_REGISTRY = ROOT / "spec" / "registries" / "error_codes.json"

NOT_BY_VECTORS: dict[str, str] = {
    "R-3.4": "encoder behaviour (version written): every roundtrip case re-encodes to 1.0 bytes;"
             " the codec's encoder tests check it directly",
    "R-9.1": "encoder behaviour: exercised by the encode operation of every roundtrip case",
    "R-9.3": "SHOULD for the reference encoder's zstd settings; the zstd vectors were produced "
             "that way, but a decode vector cannot observe an encoder's choice",
    "R-9.4": "encoder refusal of invalid logical messages: tested in tests/codec, not by decoding",
    "R-11.1": "streaming vs whole-message encoder equality: tests/codec",
    "R-11.2": "what a streaming receiver may act on before the end event: behaviour, not bytes",
    "R-11.3": "random-access reader bounds checks: tests/codec (decode_file and the index)",
    "R-13.1": "model identity needs model weights: tests/runtime",
    "R-13.2": "constant-time MODEL_ID comparison: implementation property",
    "R-13.4": "architecture-object canonical JSON: tests/runtime",
    "R-15.5": "encoder refusal to reuse a stale tag: encoder behaviour, "
              "tests/spec/test_resolutions.py and tests/hardening",
    "R-14.9": "a sender without the target's embeddings must not offer PROJECTION: sender "
              "behaviour, tests/runtime",
    "R-19.1": "never unpickle: implementation property (the reference has no such call)",
    "R-19.2": "not mapping files an untrusted party can modify: deployment rule for receivers",
    "R-20.1": "registry policy: tests/codec/test_registry_drift.py keeps codes stable",
}


def spec_requirement_ids(spec: Path = SPEC) -> set[str]:
    return set(re.findall(r"\[(R-\d+\.\d+)", spec.read_text("utf-8")))


def registered_error_names(path: Path = ERROR_REGISTRY) -> dict[str, int]:
    doc = json.loads(path.read_text("utf-8"))
    return {e["name"]: int(e["code"]) for e in doc["entries"]}


def covered(manifest: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(error names some case expects, requirement ids some case names)."""
    codes: set[str] = set()
    reqs: set[str] = set()
    for case in manifest["cases"]:
        reqs.update(case["requirement_ids"])
        expected = case["expected"]
        for outcome in expected.get("any_of", [expected]):
            if "error_name" in outcome:
                codes.add(outcome["error_name"])
    return codes, reqs


def gaps(manifest: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """(uncovered error codes, uncovered requirement ids, stale NOT_BY_VECTORS entries)."""
    codes, reqs = covered(manifest)
    all_ids = spec_requirement_ids()
    missing_codes = sorted(set(registered_error_names()) - codes)
    missing_reqs = sorted(all_ids - reqs - set(NOT_BY_VECTORS))
    stale = sorted(r for r in NOT_BY_VECTORS if r in reqs or r not in all_ids)
    return missing_codes, missing_reqs, stale
