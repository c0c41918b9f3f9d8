"""The spec's markdown tables, spec/registries/*.json and the code's enums/tables must agree.

Three independent readings of one registry: the parser below reads the spec's tables; the JSON
files are loaded as data; the code's IntEnums and info tables are imported. Any disagreement in a
code, a name or a property fails with the registry and entry named.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from avp_codec import _registry as R
from avp_codec.limits import LIMIT_ERRORS, Limits

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "spec" / "avp-spec.md"
REG = ROOT / "spec" / "registries"
REGISTRIES = ["section_types", "kinds", "layer_kinds", "value_types", "metadata_keys", "dtypes",
              "codecs", "roles", "layouts", "quant_schemes", "modes", "limits", "error_codes"]


def spec_tables() -> dict[str, list[dict[str, str]]]:
    """Registry name -> rows (column header -> cell) of the first table under its heading."""
    out: dict[str, list[dict[str, str]]] = {}
    current: str | None = None
    lines = SPEC.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            m = re.search(r"registry `(\w+)\.json`", line)
            current = m.group(1) if m else ("value_types" if "Value types" in line else None)
        elif line.startswith("|") and current and current not in out:
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(_cells(lines[i]))
                i += 1
            head = block[0]
            out[current] = [dict(zip(head, row, strict=True)) for row in block[2:]]
            continue
        i += 1
    return out


def _cells(line: str) -> list[str]:
    """Split a table row on | outside backticks (a cell may quote `major << 16 | minor`)."""
    cells, cur, code = [], "", False
    for ch in line.strip()[1:-1]:
        if ch == "`":
            code = not code
        if ch == "|" and not code:
            cells.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return cells + [cur.strip()]


def load(name: str) -> list[dict[str, Any]]:
    data = json.loads((REG / f"{name}.json").read_text(encoding="utf-8"))
    assert data["registry"] == name
    entries: list[dict[str, Any]] = data["entries"]
    return entries


def _names(cell: str) -> list[str]:
    return [x.strip() for x in cell.split(",") if x.strip()]


def _key_list(cell: str) -> set[str]:
    keys: set[str] = set()
    for item in _names(cell.replace("+", "")):
        if item.endswith("*"):
            keys |= {k.name for k in R.MetaKey if k.name.startswith(item[:-1])}
        else:
            keys.add(item)
    return keys


def _limit_default(cell: str) -> int:
    tok = cell.split()[0]
    if "^" in tok:
        base, exp = tok.split("^")
        return int(base) ** int(exp)
    if cell.split()[1:2] == ["MiB"]:
        return int(tok) << 20
    return int(tok)


@pytest.fixture(scope="module")
def spec() -> dict[str, list[dict[str, str]]]:
    return spec_tables()


def test_every_registry_has_a_spec_table_and_a_json_file(spec: dict[str, Any]) -> None:
    assert sorted(spec) == sorted(REGISTRIES)
    assert sorted(p.stem for p in REG.glob("*.json")) == sorted(REGISTRIES)


@pytest.mark.parametrize("name,enum", [
    ("section_types", R.SectionType), ("kinds", R.Kind), ("layer_kinds", R.LayerKind),
    ("value_types", R.ValueType), ("dtypes", R.Dtype), ("codecs", R.Codec), ("roles", R.Role),
    ("layouts", R.Layout), ("quant_schemes", R.QuantScheme), ("modes", R.Mode),
    ("error_codes", R.ErrorCode), ("metadata_keys", R.MetaKey)])
def test_codes_and_names(spec: dict[str, Any], name: str, enum: Any) -> None:
    col = "key" if name == "metadata_keys" else "code"
    from_spec = {int(r[col]): r["name"].upper() for r in spec[name]}
    from_json = {e[col]: e["name"].upper() for e in load(name)}
    from_code = {int(m): m.name for m in enum}
    assert from_spec == from_json, f"{name}: spec vs json"
    assert from_json == from_code, f"{name}: json vs code"


def test_dtypes(spec: dict[str, Any]) -> None:
    s = {int(r["code"]): int(r["bits"]) for r in spec["dtypes"]}
    j = {e["code"]: e["bits"] for e in load("dtypes")}
    c = {int(d): b for d, b in R.DTYPE_BITS.items()}
    assert s == j == c


def test_metadata_keys(spec: dict[str, Any]) -> None:
    s = {int(r["key"]): (r["type"], r["critical"] == "yes") for r in spec["metadata_keys"]}
    j = {e["key"]: (e["type"], e["critical"]) for e in load("metadata_keys")}
    c = {int(k): (i.type.name.lower(), i.critical) for k, i in R.KEY_INFO.items()}
    assert s == j == c
    for e in load("metadata_keys"):  # per-kind usage in the JSON matches the kinds table
        k = R.MetaKey(e["key"])
        assert set(e["required_in"]) == {kd.name for kd, i in R.KIND_INFO.items()
                                         if k in i.required}
        assert set(e["allowed_in"]) == {kd.name for kd, i in R.KIND_INFO.items()
                                        if k in i.allowed}


def test_kinds(spec: dict[str, Any]) -> None:
    for r in spec["kinds"]:
        kind = R.Kind(int(r["code"]))
        info = R.KIND_INFO[kind]
        j = next(e for e in load("kinds") if e["code"] == int(kind))
        required = _key_list(r["required keys"])
        allowed = required | _key_list(r["allowed keys"])
        assert required == {k.name for k in info.required} == set(j["required"]), kind
        assert allowed == {k.name for k in info.allowed} == set(j["allowed"]), kind
        has_layers = not r["layer table"].startswith("empty")
        assert has_layers == info.has_layers == j["has_layers"], kind
        assert (r["tensors"] == "none") == (not info.tensors) == (not j["tensor_roles"]), kind
        assert set(j["tensor_roles"]) == {x.name for x in info.tensors}, kind


def test_roles(spec: dict[str, Any]) -> None:
    for r in spec["roles"]:
        role = R.Role(int(r["code"]))
        info = R.ROLE_INFO[role]
        j = next(e for e in load("roles") if e["code"] == int(role))
        rank = None if r["rank"] == "any" else int(r["rank"])
        assert (r["tokens"] == "yes") == info.tokens == j["tokens"], role
        assert _names(r["layouts"]) == [x.name for x in info.layouts] == j["layouts"], role
        assert rank == info.rank == j["rank"], role


def test_layouts(spec: dict[str, Any]) -> None:
    for r in spec["layouts"]:
        lay = R.Layout(int(r["code"]))
        info = R.LAYOUT_INFO[lay]
        j = next(e for e in load("layouts") if e["code"] == int(lay))
        axes = [] if r["axes"] == "unspecified" else _names(r["axes"])
        tok = None if r["token axis"] == "none" else int(r["token axis"])
        assert axes == list(info.axes) == j["axes"], lay
        assert tok == info.token_axis == j["token_axis"], lay


def test_quant_schemes(spec: dict[str, Any]) -> None:
    for r in spec["quant_schemes"]:
        qs = R.QuantScheme(int(r["code"]))
        stored = R.QUANT_STORED_DTYPES[qs]
        j = next(e for e in load("quant_schemes") if e["code"] == int(qs))
        s = None if r["stored dtypes"] == "any" else set(_names(r["stored dtypes"]))
        c = None if stored is None else {d.name.lower() for d in stored}
        js = None if j["stored_dtypes"] is None else set(j["stored_dtypes"])
        assert s == c == js, qs


def test_limits(spec: dict[str, Any]) -> None:
    s = {r["name"]: (_limit_default(r["default"]), r["error"].strip("`"))
         for r in spec["limits"]}
    j = {e["name"]: (e["default"], e["error"]) for e in load("limits")}
    defaults = Limits()
    c = {n: (getattr(defaults, n), code.name) for n, code in LIMIT_ERRORS.items()}
    assert s == j == c
    assert list(c) == [f for f in Limits.__dataclass_fields__]


def test_error_meanings_match(spec: dict[str, Any]) -> None:
    s = {int(r["code"]): r["meaning"] for r in spec["error_codes"]}
    j = {e["code"]: e["meaning"] for e in load("error_codes")}
    assert s == j


def test_tables_are_not_empty(spec: dict[str, Any]) -> None:
    for name in REGISTRIES:  # a parser that silently reads nothing would pass the rest
        assert len(spec[name]) >= 3 and len(load(name)) == len(spec[name]), name



def regenerate() -> None:
    """Rewrite spec/registries/*.json from the spec's tables (names, meanings) and the code's
    tables (structured facts). Run after a reviewed spec or registry change:
    ``python tests/codec/test_registry_drift.py``; the tests above then check all three."""
    t = spec_tables()

    def cell(name: str, code: int, column: str, col: str = "code") -> str:
        return next(r for r in t[name] if int(r[col]) == code)[column]

    def write(name: str, section: str, entries: list[dict[str, Any]]) -> None:
        doc = {"registry": name, "spec_section": section, "entries": entries}
        (REG / f"{name}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")

    def names(items: Any, key: Any = None) -> list[str]:
        return [x.name for x in sorted(items, key=key or int)]

    REG.mkdir(parents=True, exist_ok=True)
    write("section_types", "4.2", [
        {"code": int(c), "name": c.name, "body": cell("section_types", c, "body")}
        for c in R.SectionType])
    write("layer_kinds", "6.5", [
        {"code": int(c), "name": c.name, "meaning": cell("layer_kinds", c, "meaning")}
        for c in R.LayerKind])
    write("value_types", "6.3", [
        {"code": int(c), "name": c.name.lower(), "length": cell("value_types", c, "length"),
         "encoding": cell("value_types", c, "encoding"),
         "canonical_json": cell("value_types", c, "canonical JSON")} for c in R.ValueType])
    write("dtypes", "7.2", [
        {"code": int(c), "name": c.name.lower(), "bits": R.DTYPE_BITS[c],
         "notes": cell("dtypes", c, "notes")} for c in R.Dtype])
    write("codecs", "7.3", [
        {"code": int(c), "name": c.name.lower(), "stored": cell("codecs", c, "stored bytes")}
        for c in R.Codec])
    write("roles", "10.2", [
        {"code": int(c), "name": c.name, "tokens": R.ROLE_INFO[c].tokens,
         "layouts": [x.name for x in R.ROLE_INFO[c].layouts], "rank": R.ROLE_INFO[c].rank,
         "message_level": c in R.MESSAGE_LEVEL_ROLES, "in_layers": c in R.LAYER_ROLES,
         "dtypes": sorted(d.name.lower() for d in R.ROLE_DTYPES[c])
         if c in R.ROLE_DTYPES else None} for c in R.Role])
    write("layouts", "10.3", [
        {"code": int(c), "name": c.name, "axes": list(R.LAYOUT_INFO[c].axes),
         "token_axis": R.LAYOUT_INFO[c].token_axis} for c in R.Layout])
    write("quant_schemes", "12", [
        {"code": int(c), "name": c.name,
         "stored_dtypes": None if R.QUANT_STORED_DTYPES[c] is None
         else sorted(d.name.lower() for d in R.QUANT_STORED_DTYPES[c] or ()),
         "dequantization": cell("quant_schemes", c,
                                "dequantization, per element (computed in binary32)")}
        for c in R.QuantScheme])
    write("modes", "14.1", [
        {"code": int(c), "name": c.name, "payload": cell("modes", c, "payload kind")}
        for c in R.Mode])
    defaults = Limits()
    bounds = {r["name"]: r["what it bounds"] for r in t["limits"]}
    write("limits", "16", [
        {"name": n, "default": getattr(defaults, n), "error": e.name, "bounds": bounds[n]}
        for n, e in LIMIT_ERRORS.items()])
    write("error_codes", "17", [
        {"code": int(c), "name": c.name, "meaning": cell("error_codes", c, "meaning")}
        for c in R.ErrorCode])
    write("metadata_keys", "10.1", [
        {"key": int(k), "name": k.name, "type": R.KEY_INFO[k].type.name.lower(),
         "critical": R.KEY_INFO[k].critical,
         "constraint": cell("metadata_keys", k, "constraint / meaning", "key"),
         "required_in": [kd.name for kd in R.Kind if k in R.KIND_INFO[kd].required],
         "allowed_in": [kd.name for kd in R.Kind if k in R.KIND_INFO[kd].allowed]}
        for k in R.MetaKey])
    write("kinds", "10", [
        {"code": int(c), "name": c.name, "has_layers": R.KIND_INFO[c].has_layers,
         "tensor_roles": names(R.KIND_INFO[c].tensors),
         "required": names(R.KIND_INFO[c].required),
         "allowed": names(R.KIND_INFO[c].allowed)} for c in R.Kind])


if __name__ == "__main__":
    regenerate()
