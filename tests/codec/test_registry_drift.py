"""spec/registries/*.json is the one source of every registry fact; the reference codec must agree
with it in every column of every registry.

The spec's tables are rendered from the JSON files (spec/gen_registries.py; the rendering is
checked by tests/spec/test_registry_tables.py). Here every column of every JSON file is compared
with the codec: codes and names with its IntEnums, structured columns with its tables, and each
metadata key's constraint with the decoder's behaviour on values at and just past the constraint.
Columns that are prose (meanings, notes) have no counterpart in code; the spec text check covers
them. The last tests plant a change in every column of every registry and require it to be caught
(a test of the test).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from avp_codec import _registry as R
from avp_codec import _validate as V
from avp_codec._values import check_entry, decode_value
from avp_codec.errors import AvpError
from avp_codec.limits import LIMIT_ERRORS, Limits
from avp_codec.model import Entry

ROOT = Path(__file__).resolve().parents[2]


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("avp_spec_gen_registries",
                                                  ROOT / "spec" / "gen_registries.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


gen = _load_generator()
SPEC_TEXT = (ROOT / "spec" / "avp-spec.md").read_text("utf-8")
Docs = dict[str, dict[str, Any]]

# Every column of every registry; the prose ones have no counterpart in code.
COLUMNS: dict[str, tuple[set[str], set[str]]] = {
    "section_types": ({"code", "name", "body"}, {"body"}),
    "value_types": ({"code", "name", "length", "encoding", "canonical_json"},
                    {"encoding", "canonical_json"}),
    "layer_kinds": ({"code", "name", "meaning"}, {"meaning"}),
    "dtypes": ({"code", "name", "bits", "notes"}, {"notes"}),
    "codecs": ({"code", "name", "stored"}, {"stored"}),
    "kinds": ({"code", "name", "has_layers", "tensor_roles", "at_least_one", "at_most_one",
               "required", "allowed"}, set()),
    "metadata_keys": ({"key", "name", "type", "critical", "constraint", "meaning",
                       "required_in", "allowed_in"}, {"meaning"}),
    "roles": ({"code", "name", "tokens", "layouts", "rank", "message_level", "in_layers",
               "layer_kinds", "dtypes"}, set()),
    "layouts": ({"code", "name", "axes", "token_axis"}, set()),
    "quant_schemes": ({"code", "name", "stored_dtypes", "dequantization"}, {"dequantization"}),
    "modes": ({"code", "name", "payload"}, {"payload"}),
    "limits": ({"name", "default", "unit", "bounds", "error"}, {"unit", "bounds"}),
    "error_codes": ({"code", "name", "meaning"}, {"meaning"}),
}
ENUMS: dict[str, Any] = {
    "section_types": R.SectionType, "value_types": R.ValueType, "layer_kinds": R.LayerKind,
    "dtypes": R.Dtype, "codecs": R.Codec, "kinds": R.Kind, "metadata_keys": R.MetaKey,
    "roles": R.Role, "layouts": R.Layout, "quant_schemes": R.QuantScheme, "modes": R.Mode,
    "error_codes": R.ErrorCode,
}


def _names(items: Any, enum: Any) -> list[str]:
    """Registry names of enum members in code order (the order the JSON lists use)."""
    lower = enum in (R.Dtype, R.Codec, R.ValueType)
    return [m.name.lower() if lower else m.name for m in sorted(items, key=int)]


def _by_code(doc: dict[str, Any], col: str = "code") -> dict[int, dict[str, Any]]:
    return {int(e[col]): e for e in doc["entries"]}


# -- comparisons, one per registry -----------------------------------------------------------
def _enum_rows(name: str, doc: dict[str, Any]) -> list[str]:
    enum = ENUMS[name]
    col = "key" if name == "metadata_keys" else "code"
    lower = enum in (R.Dtype, R.Codec, R.ValueType)
    json_rows = [(e[col], e["name"]) for e in doc["entries"]]
    code_rows = [(int(m), m.name.lower() if lower else m.name) for m in enum]
    return [] if json_rows == code_rows else [f"{name}: codes/names {json_rows} != {code_rows}"]


def _value_types(doc: dict[str, Any], _: Docs) -> list[str]:
    out = []
    for e in doc["entries"]:
        vtype, length = e["code"], e["length"]
        kind, _, n = length.partition(":")
        if kind == "fixed":
            ok, bad = [int(n)], [int(n) - 1, int(n) + 1]
        elif kind == "multiple":
            ok, bad = [0, int(n), 3 * int(n)], [int(n) + 1]
        elif length == "any":
            ok, bad = [0, 1, 3, 9], []
        else:
            return [f"value_types: unknown length {length!r}"]
        for size, want in [(s, True) for s in ok] + [(s, False) for s in bad]:
            try:
                decode_value(vtype, b"a" * size, "", None)
                got = True
            except AvpError:
                got = False
            if got != want:
                out.append(f"value_types {e['name']}: length {size} accepted={got}, "
                           f"JSON says {length}")
    return out


def _dtypes(doc: dict[str, Any], _: Docs) -> list[str]:
    j = {e["code"]: e["bits"] for e in doc["entries"]}
    c = {int(d): b for d, b in R.DTYPE_BITS.items()}
    return [] if j == c else [f"dtypes: bits {j} != {c}"]


def _kinds(doc: dict[str, Any], _: Docs) -> list[str]:
    out = []
    for code, e in _by_code(doc).items():
        try:
            kind = R.Kind(code)
        except ValueError:
            continue  # _enum_rows reports it
        info = R.KIND_INFO[kind]
        want = {
            "has_layers": info.has_layers,
            "tensor_roles": _names(info.tensors, R.Role),
            "at_least_one": _names(V.AT_LEAST_ONE.get(kind, ()), R.Role),
            "at_most_one": _names(V.AT_MOST_ONE.get(kind, ()), R.Role),
            "required": _names(info.required, R.MetaKey),
            "allowed": _names(info.allowed, R.MetaKey),
        }
        out += [f"kinds {kind.name}.{k}: {e[k]!r} != code {v!r}" for k, v in want.items()
                if e[k] != v]
    return out


def _metadata_keys(doc: dict[str, Any], docs: Docs, probe: set[int] | None = None
                   ) -> list[str]:
    """``probe``: the keys whose constraint is probed (all when None; probing is the slow part)."""
    out = []
    kinds = docs["kinds"]["entries"]
    for key, e in _by_code(doc, "key").items():
        try:
            mk = R.MetaKey(key)
        except ValueError:
            continue
        info = R.KEY_INFO[mk]
        if e["type"] != info.type.name.lower() or e["critical"] != info.critical:
            out.append(f"metadata_keys {mk.name}: type/critical {e['type']}/{e['critical']} "
                       f"!= code {info.type.name.lower()}/{info.critical}")
        required = [k["name"] for k in kinds if mk.name in k["required"]]
        allowed = [k["name"] for k in kinds if mk.name in k["allowed"]]
        code_required = [k.name for k in R.Kind if mk in R.KIND_INFO[k].required]
        code_allowed = [k.name for k in R.Kind if mk in R.KIND_INFO[k].allowed]
        if e["required_in"] != required or e["required_in"] != code_required:
            out.append(f"metadata_keys {mk.name}.required_in {e['required_in']} != kinds.json "
                       f"{required} / code {code_required}")
        if e["allowed_in"] != allowed or e["allowed_in"] != code_allowed:
            out.append(f"metadata_keys {mk.name}.allowed_in {e['allowed_in']} != kinds.json "
                       f"{allowed} / code {code_allowed}")
        if probe is None or key in probe:
            out += _constraint(mk, info.type, info.critical, e["constraint"], docs)
    return out


# Values of each type that every constraint is probed with, plus each term's boundary values.
_V = R.ValueType
_GENERIC: dict[R.ValueType, list[Any]] = {
    _V.U64: [0, 1, 2, 3, 4, 65535, 65536, (1 << 64) - 1],
    _V.I64: [-(1 << 63), 0, (1 << 63) - 1],
    _V.F64: [-math.inf, -1.0, 0.0, 5e-324, 1.0, math.inf, math.nan],
    _V.UTF8: ["", "{", "NaN"],
    _V.BYTES: [b"", b"x", b"x" * 16, b"x" * 32, b"x" * 64, b"x" * 65, b"\1\0\0\0a"],
    _V.U32_LIST: [(), (1,), (1, 2, 3), (2, 2), (3, 1)],
}
# Strict JSON at and past each limit, with the verdict the spec gives.
_JSON_TEXTS: dict[str, bool] = {
    "": False, "{": False, "NaN": False, "{}": True, ' [1, 2.5e3, "x", null] ': True,
    "1" * 5000: True, "[" * 64 + "]" * 64: True, "[" * 65 + "]" * 65: False,
    '{"a":1,"\\u0061":2}': False, "[" + "0," * 65534 + "0]": True,
    "[" + "0," * 65535 + "0]": False, "Infinity": False, '"\\ud800"': True,
}
_TERMS: dict[str, set[R.ValueType]] = {
    "length": {_V.BYTES}, "length_range": {_V.BYTES}, "records": {_V.BYTES},
    "one_of": {_V.U64}, "range": {_V.U64}, "registry": {_V.U64}, "greater_than": {_V.F64},
    "increasing": {_V.U32_LIST}, "min_items": {_V.U32_LIST}, "json_text": {_V.UTF8},
}


def _records_ok(v: bytes) -> bool:
    pos = 0
    while pos < len(v):
        if pos + 4 > len(v):
            return False
        pos += 4 + int.from_bytes(v[pos:pos + 4], "little")
    return pos == len(v)


def _allowed(c: dict[str, Any], v: Any, docs: Docs) -> bool:
    """What the JSON's constraint says about value ``v`` (the spec's meaning, modelled here)."""
    checks: dict[str, Callable[[Any], bool]] = {
        "length": lambda t: len(v) == t,
        "length_range": lambda t: t[0] <= len(v) <= t[1],
        "records": lambda t: _records_ok(v),
        "one_of": lambda t: v in t,
        "range": lambda t: t[0] <= v <= t[1],
        "registry": lambda t: v in {e["code"] for e in docs[t]["entries"]},
        "greater_than": lambda t: v > t,
        "increasing": lambda t: all(b > a for a, b in zip(v, v[1:], strict=False)),
        "min_items": lambda t: len(v) >= t,
        "json_text": lambda t: _JSON_TEXTS[v],
    }
    return all(checks[term](arg) for term, arg in c.items())


def _probe_values(vtype: R.ValueType, c: dict[str, Any], docs: Docs) -> list[Any] | str:
    """The values to try; a string when the constraint cannot apply to the type."""
    values = list(_GENERIC[vtype])
    for term, arg in c.items():
        if term not in _TERMS:
            return f"unknown constraint term {term!r}"
        if vtype not in _TERMS[term]:
            return f"constraint term {term!r} on a {vtype.name.lower()} key"
        if term == "registry" and arg not in docs:
            return f"no registry {arg!r}"
        if term == "records" and arg != "u32":
            return f"unknown record format {arg!r}"
        if term in ("range", "length_range") and len(arg) != 2:
            return f"constraint term {term!r} needs two bounds"
        if term in ("one_of", "range", "length_range") and not arg:
            return f"constraint term {term!r} lists no value"
        if term == "length":
            values += [b"x" * n for n in (arg - 1, arg, arg + 1) if n >= 0]
        elif term == "length_range":
            values += [b"x" * n for n in (arg[0] - 1, arg[0], arg[1], arg[1] + 1) if n >= 0]
        elif term in ("one_of", "range"):
            lo, hi = min(arg), max(arg)
            values += [n for n in range(max(lo - 1, 0), min(hi + 2, lo + 8))] + [hi, hi + 1]
        elif term == "registry":
            codes = [e["code"] for e in docs[arg]["entries"]]
            values += codes + [max(codes) + 1]
        elif term == "greater_than":
            values += [math.nextafter(arg, -math.inf), float(arg), math.nextafter(arg, math.inf)]
        elif term == "records":
            values += [b"\1\0\0\0a\0\0\0\0", b"\3\0\0\0ab", b"\1\0"]
        elif term == "json_text":
            values += list(_JSON_TEXTS)
    return values


def _constraint(mk: R.MetaKey, vtype: R.ValueType, critical: bool, c: Any, docs: Docs
                ) -> list[str]:
    # A term set to false or an empty constraint object constrains nothing, like null.
    terms = {k: v for k, v in (c or {}).items() if v is not False}
    values = _probe_values(vtype, terms, docs)
    if isinstance(values, str):
        return [f"metadata_keys {mk.name}: {values}"]
    out = []
    for value in values:
        want = _allowed(terms, value, docs)
        try:
            check_entry(Entry(int(mk), vtype, value, critical), "", None)
            got = True
        except AvpError:
            got = False
        if got != want:
            shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
            out.append(f"metadata_keys {mk.name}: {shown} accepted={got}, constraint {c} "
                       f"says {want}")
    return out


def _layer_kinds_of(role: R.Role) -> list[str]:
    kinds = []
    if role in R.ATTENTION_ROLES or role in R.QUANT_ROLES:
        kinds += ["FULL_ATTENTION", "SLIDING_WINDOW"]
    if role in R.RECURRENT_ROLES or role in R.QUANT_ROLES:
        kinds += ["RECURRENT"]
    return kinds


def _roles(doc: dict[str, Any], _: Docs) -> list[str]:
    out = []
    for code, e in _by_code(doc).items():
        try:
            role = R.Role(code)
        except ValueError:
            continue
        info = R.ROLE_INFO[role]
        dtypes = R.ROLE_DTYPES.get(role)
        want = {"tokens": info.tokens, "layouts": _names(info.layouts, R.Layout),
                "rank": info.rank, "message_level": role in R.MESSAGE_LEVEL_ROLES,
                "in_layers": role in R.LAYER_ROLES, "layer_kinds": _layer_kinds_of(role),
                "dtypes": None if dtypes is None else _names(dtypes, R.Dtype)}
        out += [f"roles {role.name}.{k}: {e[k]!r} != code {v!r}" for k, v in want.items()
                if e[k] != v]
    return out


def _layouts(doc: dict[str, Any], _: Docs) -> list[str]:
    out = []
    for code, e in _by_code(doc).items():
        try:
            info = R.LAYOUT_INFO[R.Layout(code)]
        except ValueError:
            continue
        if e["axes"] != list(info.axes) or e["token_axis"] != info.token_axis:
            out.append(f"layouts {e['name']}: {e['axes']}/{e['token_axis']} != code "
                       f"{list(info.axes)}/{info.token_axis}")
    return out


def _quant_schemes(doc: dict[str, Any], _: Docs) -> list[str]:
    out = []
    for code, e in _by_code(doc).items():
        try:
            stored = R.QUANT_STORED_DTYPES[R.QuantScheme(code)]
        except ValueError:
            continue
        want = None if stored is None else _names(stored, R.Dtype)
        if e["stored_dtypes"] != want:
            out.append(f"quant_schemes {e['name']}: {e['stored_dtypes']} != code {want}")
    return out


def _limits(doc: dict[str, Any], _: Docs) -> list[str]:
    defaults = Limits()
    j = [(e["name"], e["default"], e["error"]) for e in doc["entries"]]
    c = [(n, getattr(defaults, n), code.name) for n, code in LIMIT_ERRORS.items()]
    out = [] if j == c else [f"limits: {j} != code {c}"]
    if list(LIMIT_ERRORS) != list(Limits.__dataclass_fields__):
        out.append("limits: LIMIT_ERRORS and Limits list different limits")
    return out


CHECKS: dict[str, Callable[[dict[str, Any], Docs], list[str]]] = {
    "value_types": _value_types, "dtypes": _dtypes, "kinds": _kinds,
    "metadata_keys": _metadata_keys, "roles": _roles, "layouts": _layouts,
    "quant_schemes": _quant_schemes, "limits": _limits,
}


def disagreements(docs: Docs, names: set[str] | None = None, probe: set[int] | None = None
                  ) -> list[str]:
    """Every way the registry files disagree with the reference code (empty: they agree).
    ``names`` limits the registries compared and ``probe`` the metadata keys whose constraint
    is probed, for the planted-change tests; by default everything is compared."""
    out = []
    for name in gen.NAMES if names is None else [n for n in gen.NAMES if n in names]:
        doc = docs[name]
        if doc.get("registry") != name:
            out.append(f"{name}.json names registry {doc.get('registry')!r}")
        columns, _ = COLUMNS[name]
        for e in doc["entries"]:
            if set(e) != columns:
                out.append(f"{name}: entry {e.get('name')} has columns {sorted(e)}, "
                           f"expected {sorted(columns)}")
        if any(set(e) != columns for e in doc["entries"]):
            continue
        if name in ENUMS:
            out += _enum_rows(name, doc)
        if name == "metadata_keys":
            out += _metadata_keys(doc, docs, probe)
        elif name in CHECKS:
            out += CHECKS[name](doc, docs)
    return out


@pytest.fixture(scope="module")
def docs() -> Docs:
    return gen.load()  # type: ignore[no-any-return]


def test_every_registry_has_a_json_file_and_a_spec_table(docs: Docs) -> None:
    reg = ROOT / "spec" / "registries"
    assert sorted(p.stem for p in reg.glob("*.json")) == sorted(gen.NAMES)
    assert sorted(COLUMNS) == sorted(gen.NAMES)
    for name in gen.NAMES:
        assert len(docs[name]["entries"]) >= 3, name


def test_json_agrees_with_the_code_in_every_column(docs: Docs) -> None:
    assert disagreements(docs) == []


def _planted(value: Any) -> Any:
    """A different value of the same JSON type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        if value.startswith(("fixed:", "multiple:")):
            kind, _, n = value.partition(":")
            return f"{kind}:{int(n) + 1}"
        return value + "x" if value != "any" else "fixed:3"
    if isinstance(value, list):
        return value[:-1] if value else ["KEY"]
    if isinstance(value, dict):
        changed = copy.deepcopy(value)
        k = next(iter(changed))
        changed[k] = _planted(changed[k])
        return changed
    return 3  # None (rank "any", no token axis) becomes a number


def _plant_cases() -> list[tuple[str, str, int]]:
    docs = gen.load()
    # Each column of each registry, planted in its first, a middle and its last entry.
    return [(name, col, i) for name in gen.NAMES for col in sorted(COLUMNS[name][0])
            for i in sorted({0, len(docs[name]["entries"]) // 2,
                             len(docs[name]["entries"]) - 1})]


@pytest.mark.parametrize("name,column,index", _plant_cases())
def test_a_planted_disagreement_in_any_column_is_caught(docs: Docs, name: str, column: str,
                                                        index: int) -> None:
    """Test of the test: change one cell of one registry file; the code comparison (structured
    columns) or the rendered spec table (every column) must notice."""
    planted = copy.deepcopy(docs)
    entry = planted[name]["entries"][index]
    if column == "constraint" and entry[column] is None:
        entry[column] = {"length": 31} if entry["type"] == "bytes" else {"one_of": [7]}
    elif column in ("dtypes", "stored_dtypes") and entry[column] is None:
        entry[column] = ["int8"]
    else:
        entry[column] = _planted(entry[column])
    assert entry[column] != docs[name]["entries"][index][column]
    spec_text = SPEC_TEXT
    try:
        rendered_differs = gen.splice(spec_text, gen.render(planted)) != spec_text
    except (KeyError, TypeError, ValueError, IndexError):
        rendered_differs = True  # the generator cannot even render it
    if column in COLUMNS[name][1]:
        assert rendered_differs, f"{name}.{column}[{index}]: prose change not visible in spec"
    else:
        # Compare only what the plant can affect, so the ~400 plants stay fast: its registry,
        # and the metadata keys where they refer to it (kinds' key lists, MODE's registry).
        names = {name, "metadata_keys"}
        probe = ({docs[name]["entries"][index]["key"]} if name == "metadata_keys"
                 else {int(R.MetaKey.MODE)} if name == "modes" else set())
        assert disagreements(planted, names, probe), f"{name}.{column}[{index}]: not caught"


def _limits_init_with(**changed: int) -> Callable[..., None]:
    original = Limits.__init__

    def init(self: Limits, **kw: int) -> None:
        original(self, **{**changed, **kw})
    return init


def test_a_planted_change_in_the_code_is_caught(docs: Docs) -> None:
    """The other direction: the JSON unchanged, the codec's tables or checks changed."""
    plants: list[Callable[[pytest.MonkeyPatch], None]] = [
        lambda mp: mp.setitem(R.DTYPE_BITS, R.Dtype.INT4, 8),
        lambda mp: mp.setitem(R.KEY_INFO, R.MetaKey.NONCE, R.KeyInfo(R.ValueType.BYTES, True)),
        lambda mp: mp.setitem(R.ROLE_INFO, R.Role.KEY, R.RoleInfo(True, (R.Layout.BHTD,), 4)),
        lambda mp: mp.setitem(V.AT_MOST_ONE, R.Kind.HIDDEN_STATE, frozenset()),
        lambda mp: mp.setattr("avp_codec._values._vocab_ok", lambda v: True),
        lambda mp: mp.setattr("avp_codec._values.check_json_text", lambda text, **kw: None),
        lambda mp: mp.setitem(R.LAYOUT_INFO, R.Layout.BT, R.LayoutInfo(("b", "t"), 1)),
        lambda mp: mp.setattr(Limits, "__init__", _limits_init_with(max_rank=9)),
    ]
    for plant in plants:
        with pytest.MonkeyPatch.context() as mp:
            plant(mp)
            assert disagreements(docs), plant
    assert disagreements(docs) == []


def test_json_files_are_formatted_as_written(docs: Docs) -> None:
    # The files are data for other tools too: one layout, so a diff shows only real changes.
    for name in gen.NAMES:
        path = ROOT / "spec" / "registries" / f"{name}.json"
        text = path.read_text("utf-8")
        assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n", name
