"""Writes the registry tables of spec/avp-spec.md from spec/registries/*.json.

    python spec/gen_registries.py           rewrite every table between its markers
    python spec/gen_registries.py --check   exit 1 if a table differs from its JSON file

The JSON files are the one source of every registry fact: a table in the spec is rendered from
them between the markers ``<!-- BEGIN REGISTRY <name> ... -->`` and ``<!-- END REGISTRY <name>
-->`` and is never edited by hand. tests/spec/test_registry_tables.py fails when a table is not
what this script writes, and tests/codec/test_registry_drift.py compares every column of every
JSON file with the reference codec's enums, tables and checks, so the spec text, the JSON and
the code cannot disagree. Standard library only: a reader needs nothing else to rebuild them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
SPEC = ROOT / "avp-spec.md"
REGISTRIES = ROOT / "registries"
NAMES = ("section_types", "value_types", "layer_kinds", "dtypes", "codecs", "kinds",
         "metadata_keys", "roles", "layouts", "quant_schemes", "modes", "limits", "error_codes")

Doc = dict[str, Any]


def load(directory: Path = REGISTRIES) -> dict[str, Doc]:
    """Every registry file, by name."""
    return {name: json.loads((directory / f"{name}.json").read_text("utf-8")) for name in NAMES}


def _cell(value: str) -> str:
    # A | inside a cell, even inside a code span, ends the cell in GitHub Markdown: escape it.
    return value.replace("|", "\\|")


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _names(items: list[str]) -> str:
    return ", ".join(items) if items else "none"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


# -- one renderer per registry ------------------------------------------------------------
def _section_types(doc: Doc, _: dict[str, Doc]) -> str:
    return _table(["code", "name", "body"],
                  [[str(e["code"]), e["name"], e["body"]] for e in doc["entries"]])


def value_length_text(length: str) -> str:
    """``fixed:8`` -> ``8``, ``any`` -> ``any``, ``multiple:4`` -> ``4 x k``."""
    if length == "any":
        return "any"
    kind, _, n = length.partition(":")
    return n if kind == "fixed" else f"{n} x k"


def _value_types(doc: Doc, _: dict[str, Doc]) -> str:
    return _table(["code", "name", "length", "encoding", "canonical JSON"],
                  [[str(e["code"]), e["name"], value_length_text(e["length"]), e["encoding"],
                    e["canonical_json"]] for e in doc["entries"]])


def _layer_kinds(doc: Doc, _: dict[str, Doc]) -> str:
    return _table(["code", "name", "meaning"],
                  [[str(e["code"]), e["name"], e["meaning"]] for e in doc["entries"]])


def _dtypes(doc: Doc, _: dict[str, Doc]) -> str:
    return _table(["code", "name", "bits", "notes"],
                  [[str(e["code"]), e["name"], str(e["bits"]), e["notes"]]
                   for e in doc["entries"]])


def _codecs(doc: Doc, _: dict[str, Doc]) -> str:
    return _table(["code", "name", "stored bytes"],
                  [[str(e["code"]), e["name"], e["stored"]] for e in doc["entries"]])


def _in_key_order(names: list[str], docs: dict[str, Doc]) -> list[str]:
    order = {e["name"]: e["key"] for e in docs["metadata_keys"]["entries"]}
    return sorted(names, key=lambda n: order[n])


def _tensors_text(e: Doc) -> str:
    if not e["tensor_roles"]:
        return "none"
    parts = [_names(e["tensor_roles"])]
    if e["at_least_one"]:
        parts.append("at least one " + ", ".join(e["at_least_one"]))
    if e["at_most_one"]:
        parts.append(("at most one " if len(e["at_most_one"]) == 1 else "at most one each of ")
                     + ", ".join(e["at_most_one"]))
    return "; ".join(parts)


def _kinds(doc: Doc, docs: dict[str, Doc]) -> str:
    rows = []
    for e in doc["entries"]:
        required = _in_key_order(e["required"], docs)
        other = _in_key_order([k for k in e["allowed"] if k not in e["required"]], docs)
        rows.append([str(e["code"]), e["name"], ">= 1 layer" if e["has_layers"] else "empty",
                     _tensors_text(e), _names(required), _names(other)])
    return _table(["code", "name", "layer table", "tensor roles", "required keys",
                   "other allowed keys"], rows)


def constraint_text(c: Doc | None) -> str:
    """The normative short form of a metadata key's constraint (10.1)."""
    if c is None:
        return "none"
    unknown = set(c) - {"length", "length_range", "one_of", "range", "greater_than", "registry",
                        "increasing", "min_items", "records", "json_text"}
    if unknown:
        raise ValueError(f"unknown constraint terms {sorted(unknown)}")
    parts = []
    if "length" in c:
        parts.append(f"exactly {c['length']} bytes")
    if "length_range" in c:
        lo, hi = c["length_range"]
        parts.append(f"{lo} to {hi} bytes")
    if "one_of" in c:
        values = [str(v) for v in c["one_of"]]
        parts.append(values[0] if len(values) == 1 else
                     ", ".join(values[:-1]) + " or " + values[-1])
    if "range" in c:
        lo, hi = c["range"]
        parts.append(f"{lo} to {hi}")
    if "greater_than" in c:
        parts.append(f"greater than {c['greater_than']} (NaN is not)")
    if "registry" in c:
        parts.append(f"a code of registry `{c['registry']}.json`")
    if c.get("increasing"):
        parts.append("strictly increasing")
    if c.get("min_items"):
        parts.append(f"at least {c['min_items']} element" + ("s" if c["min_items"] > 1 else ""))
    if "records" in c:
        parts.append("`u32 length, bytes` records ending exactly at the end of the value")
    if c.get("json_text"):
        parts.append("JSON text (R-10.15)")
    return ", ".join(parts)


def _metadata_keys(doc: Doc, _: dict[str, Doc]) -> str:
    return _table(["key", "name", "type", "critical", "constraint", "meaning"],
                  [[str(e["key"]), e["name"], e["type"], _yes(e["critical"]),
                    constraint_text(e["constraint"]), e["meaning"]] for e in doc["entries"]])


def _level(e: Doc) -> str:
    if e["message_level"] and e["in_layers"]:
        return "message, layer"
    return "message" if e["message_level"] else "layer"


def _roles(doc: Doc, _: dict[str, Doc]) -> str:
    rows = [[str(e["code"]), e["name"], _yes(e["tokens"]), ", ".join(e["layouts"]),
             "any" if e["rank"] is None else str(e["rank"]), _level(e),
             ", ".join(e["layer_kinds"]) if e["layer_kinds"] else "-",
             "any" if e["dtypes"] is None else ", ".join(e["dtypes"])]
            for e in doc["entries"]]
    return _table(["code", "name", "tokens", "layouts", "rank", "level", "layer kinds",
                   "dtypes"], rows)


def _layouts(doc: Doc, _: dict[str, Doc]) -> str:
    return _table(["code", "name", "axes", "token axis"],
                  [[str(e["code"]), e["name"], ", ".join(e["axes"]) or "unspecified",
                    "none" if e["token_axis"] is None else str(e["token_axis"])]
                   for e in doc["entries"]])


def _quant_schemes(doc: Doc, _: dict[str, Doc]) -> str:
    return _table(["code", "name", "stored dtypes",
                   "dequantization, per element (computed in binary32)"],
                  [[str(e["code"]), e["name"],
                    "any" if e["stored_dtypes"] is None else ", ".join(e["stored_dtypes"]),
                    e["dequantization"]] for e in doc["entries"]])


def _modes(doc: Doc, _: dict[str, Doc]) -> str:
    return _table(["code", "name", "payload kind"],
                  [[str(e["code"]), e["name"], e["payload"]] for e in doc["entries"]])


def limit_default_text(value: int, unit: str) -> str:
    """``2^40 (1 TiB)``, ``16 MiB``, ``4096``: exact, and readable at a glance."""
    if unit not in ("bytes", "count"):
        raise ValueError(f"unknown unit {unit!r}")
    if unit == "bytes":
        if value >= 1 << 30 and value & (value - 1) == 0:
            power = value.bit_length() - 1
            size = (f"{value >> 40} TiB" if value >= 1 << 40 else f"{value >> 30} GiB")
            return f"2^{power} ({size})"
        if value >= 1 << 20 and value % (1 << 20) == 0:
            return f"{value >> 20} MiB"
    return str(value)


def _limits(doc: Doc, _: dict[str, Doc]) -> str:
    return _table(["name", "default", "what it bounds", "error"],
                  [[e["name"], limit_default_text(e["default"], e["unit"]), e["bounds"],
                    f"`{e['error']}`"] for e in doc["entries"]])


def _error_codes(doc: Doc, _: dict[str, Doc]) -> str:
    return _table(["code", "name", "meaning"],
                  [[str(e["code"]), e["name"], e["meaning"]] for e in doc["entries"]])


RENDER: dict[str, Callable[[Doc, dict[str, Doc]], str]] = {
    "section_types": _section_types, "value_types": _value_types, "layer_kinds": _layer_kinds,
    "dtypes": _dtypes, "codecs": _codecs, "kinds": _kinds, "metadata_keys": _metadata_keys,
    "roles": _roles, "layouts": _layouts, "quant_schemes": _quant_schemes, "modes": _modes,
    "limits": _limits, "error_codes": _error_codes,
}


def render(docs: dict[str, Doc]) -> dict[str, str]:
    """Registry name -> its markdown table."""
    return {name: RENDER[name](docs[name], docs) for name in NAMES}


def _block(name: str, table: str) -> str:
    return (f"<!-- BEGIN REGISTRY {name} (spec/gen_registries.py from registries/{name}.json;"
            f" do not edit by hand) -->\n{table}\n<!-- END REGISTRY {name} -->")


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- BEGIN REGISTRY {name} .*?-->\n.*?<!-- END REGISTRY {name} -->",
                      re.DOTALL)


def splice(text: str, tables: dict[str, str]) -> str:
    """``text`` with every registry block replaced by its table; each block must exist once."""
    for name, table in tables.items():
        found = _pattern(name).findall(text)
        if len(found) != 1:
            raise ValueError(f"spec has {len(found)} REGISTRY {name} blocks, expected 1")
        text = _pattern(name).sub(lambda _m, n=name, t=table: _block(n, t), text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--check", action="store_true", help="fail if a table is stale")
    args = ap.parse_args(argv)
    text = SPEC.read_text("utf-8")
    new = splice(text, render(load()))
    if args.check:
        if new != text:
            print("spec/avp-spec.md: registry tables differ from spec/registries/*.json; run "
                  "python spec/gen_registries.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        SPEC.write_text(new, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
