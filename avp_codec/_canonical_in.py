"""Canonical JSON in (spec 18.3): a document, or its text, back to the logical message.

Strict by construction (issue 14): the text goes through the strict RFC 8259 profile of
``_json`` (no NaN/Infinity literals, unique member names, bounded depth and value count, checked
before parsing); every object has exactly its members; an integer member is a JSON integer (not
``2.0``, not ``true``) within its field's range; a boolean is ``true``/``false``; a registry name
matches the registry's spelling byte for byte (no case folding, so look-alikes such as
``ﬂoat16`` or a dotless ``ı`` never become registry names); bytes are lowercase hex; the format
version's digits are ASCII. Every fault is ``AvpError(INVALID_VALUE)`` (or the limit code a
decoder would give) with the path of the JSON member, e.g. ``tensors[0].shape[1]``.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Any, TypeVar

from . import _json
from ._args import byte_view, show, tname
from ._raw_digest import raw_sha256
from ._registry import (
    FORMAT_MAJOR,
    NO_REF,
    U64_MAX,
    Codec,
    Dtype,
    ErrorCode,
    Kind,
    LayerKind,
    Layout,
    MetaKey,
    QuantScheme,
    Role,
    ValueType,
)
from .errors import AvpError
from .limits import DEFAULT_LIMITS, Limits
from .model import Entry, Layer, Message, Quant, Tensor

E = TypeVar("E", bound=IntEnum)

# The text limits: a canonical document nests 4 deep; 2^20 values bound the parse to about
# 64 MB whatever the text holds (callers with bigger messages pass max_values).
MAX_DEPTH = 8
MAX_VALUES = 1 << 20

_MEMBERS = frozenset({"format", "kind", "entries", "layers", "tensors", "authenticated"})
_ENTRY = frozenset({"key", "name", "type", "critical", "value"})
_LAYER = frozenset({"layer_index", "layer_kind", "window", "token_start", "token_count"})
_TENSOR = frozenset({"tensor_index", "layer", "role", "dtype", "codec", "layout", "shape",
                     "token_offset", "quant", "raw_length", "stored_length", "data_crc",
                     "raw_sha256"})
_QUANT = frozenset({"scheme", "axis", "group_size", "scale_tensor", "zero_point_tensor",
                    "dequant_dtype"})
# One character class, no group: sre repeats it in a flat loop (a repeated group keeps state per
# repetition: ``(?:[0-9a-f]{2})*`` cost 60 bytes per byte of a long hex value).
_HEX = re.compile(r"[0-9a-f]*+")
_SHA = re.compile(r"[0-9a-f]{64}")
_FORMAT = re.compile(rf"AVP/{FORMAT_MAJOR}\.(0|[1-9][0-9]{{0,4}})")
_F64_WORDS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
I64 = (-(1 << 63), (1 << 63) - 1)


def _bad(msg: str, path: str, code: ErrorCode = ErrorCode.INVALID_VALUE) -> AvpError:
    return AvpError(code, f"canonical JSON: {msg}", path=path)


def _obj(v: Any, members: frozenset[str], path: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _bad(f"{path or 'the document'} must be an object, not {_jtype(v)}", path)
    if v.keys() != members:
        missing, extra = sorted(members - v.keys()), sorted(set(v) - members, key=str)
        raise _bad(f"{path or 'the document'} has exactly the members {sorted(members)}"
                   + (f"; missing {missing}" if missing else "")
                   + (f"; unknown {[str(x)[:40] for x in extra[:5]]}" if extra else ""), path)
    return v


def _list(v: Any, path: str) -> list[Any]:
    if not isinstance(v, list):
        raise _bad(f"{path} must be an array, not {_jtype(v)}", path)
    return v


def _int(v: Any, path: str, hi: int = U64_MAX, lo: int = 0) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise _bad(f"{path} must be an integer, not {_jtype(v)}", path)
    if not lo <= v <= hi:
        raise _bad(f"{path} = {show(v)} is outside {lo}..{hi}", path)
    return v


def _ref(v: Any, path: str) -> int | None:
    return None if v is None else _int(v, path, NO_REF - 1)


def _bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise _bad(f"{path} must be true or false, not {_jtype(v)}", path)
    return v


def _name(enum: type[E], v: Any, path: str, lower: bool = False) -> E:
    """A registry name, spelled exactly as the registry (and the canonical writer) spell it."""
    if not isinstance(v, str):
        raise _bad(f"{path} must be a registry name string, not {_jtype(v)}", path)
    table = _LOWER[enum] if lower else enum.__members__
    member = table.get(v)
    if member is None:
        raise _bad(f"{path}: {v[:40]!r} is not a {enum.__name__} name (names: "
                   f"{', '.join(sorted(table))})", path)
    return member  # type: ignore[return-value]


def _hex(v: Any, path: str) -> bytes:
    if not isinstance(v, str) or len(v) % 2 or not _HEX.fullmatch(v):
        raise _bad(f"{path} must be lowercase hex of whole bytes", path)
    return bytes.fromhex(v)


def _jtype(v: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number with a fraction or exponent",
             type(None): "null"}
    return names.get(type(v), tname(v))


def _value(t: ValueType | int, v: Any, path: str) -> Any:
    if t == ValueType.U64:
        return _int(v, path)
    if t == ValueType.I64:
        return _int(v, path, I64[1], I64[0])
    if t == ValueType.F64:
        if isinstance(v, str) and v in _F64_WORDS:
            return _F64_WORDS[v]
        if isinstance(v, float):
            return v
        if isinstance(v, int) and not isinstance(v, bool):
            try:
                f = float(v)
            except OverflowError:
                f = float("inf")
            if f == v:  # an integral value binary64 holds exactly
                return f
        raise _bad(f"{path} must be a binary64 number or \"NaN\"/\"Infinity\"/\"-Infinity\"",
                   path)
    if t == ValueType.UTF8:
        if not isinstance(v, str):
            raise _bad(f"{path} must be a string, not {_jtype(v)}", path)
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad(f"{path} holds a lone surrogate (not UTF-8)", path) from None
        return v
    if t == ValueType.U32_LIST:
        items = _list(v, path)
        # One pass in C for the common case (plain ints in range); only a faulty list is walked
        # element by element, for the path of its first bad element.
        if all(type(x) is int for x in items) and (
                not items or (min(items) >= 0 and max(items) <= 0xFFFFFFFF)):
            return tuple(items)
        return tuple(_int(x, f"{path}[{j}]", 0xFFFFFFFF) for j, x in enumerate(items))
    return _hex(v, path)  # BYTES, or an unknown type of an unregistered key


def _entry(e: Any, i: int) -> Entry:
    path = f"entries[{i}]"
    e = _obj(e, _ENTRY, path)
    key = _int(e["key"], path + ".key", 0xFFFF)
    registered = MetaKey(key).name if key in MetaKey._value2member_map_ else None
    if e["name"] != registered:
        raise _bad(f"{path}.name must be {registered!r}, the key's registry name", path + ".name")
    vt = e["type"]
    if isinstance(vt, str):
        t: ValueType | int = _name(ValueType, vt, path + ".type", lower=True)
    else:
        t = _int(vt, path + ".type", 0xFF)
        if t in ValueType._value2member_map_:
            raise _bad(f"{path}.type: a registered value type is written by name", path + ".type")
    value = _value(t, e["value"], path + ".value")
    return Entry(key, t, value, _bool(e["critical"], path + ".critical"))


def _layer(la: Any, i: int) -> Layer:
    path = f"layers[{i}]"
    la = _obj(la, _LAYER, path)
    return Layer(_int(la["layer_index"], path + ".layer_index", 0xFFFFFFFF),
                 _name(LayerKind, la["layer_kind"], path + ".layer_kind"),
                 _int(la["token_start"], path + ".token_start"),
                 _int(la["token_count"], path + ".token_count"),
                 _int(la["window"], path + ".window", 0xFFFFFFFF))


def _quant(q: Any, path: str) -> Quant | None:
    if q is None:
        return None
    q = _obj(q, _QUANT, path)
    return Quant(_name(QuantScheme, q["scheme"], path + ".scheme"),
                 _int(q["axis"], path + ".axis", 0xFF),
                 _int(q["group_size"], path + ".group_size", 0xFFFFFFFF),
                 _ref(q["scale_tensor"], path + ".scale_tensor"),
                 _ref(q["zero_point_tensor"], path + ".zero_point_tensor"),
                 _name(Dtype, q["dequant_dtype"], path + ".dequant_dtype", lower=True))


def _tensor(t: Any, i: int, data: memoryview, at: int, lim: Limits) -> Tensor:
    path = f"tensors[{i}]"
    t = _obj(t, _TENSOR, path)
    if _int(t["tensor_index"], path + ".tensor_index", 0xFFFFFFFF) != i:
        raise _bad(f"{path}.tensor_index must be {i}", path + ".tensor_index")
    shape = _list(t["shape"], path + ".shape")
    if len(shape) > lim.max_rank:
        raise _bad(f"{path}.shape: rank {len(shape)} > max_rank", path + ".shape",
                   ErrorCode.LIMIT_RANK)
    dims = tuple(_int(d, f"{path}.shape[{j}]") for j, d in enumerate(shape))
    raw_length = _int(t["raw_length"], path + ".raw_length")
    stored_length = _int(t["stored_length"], path + ".stored_length")
    for name, n in (("raw_length", raw_length), ("stored_length", stored_length)):
        if n > lim.max_tensor_bytes:
            raise _bad(f"{path}.{name} > max_tensor_bytes", f"{path}.{name}",
                       ErrorCode.LIMIT_TENSOR)
    data_crc = _int(t["data_crc"], path + ".data_crc", 0xFFFFFFFF)
    sha = t["raw_sha256"]
    if not isinstance(sha, str) or not _SHA.fullmatch(sha):
        raise _bad(f"{path}.raw_sha256 must be 64 lowercase hex digits", path + ".raw_sha256")
    if at + stored_length > len(data):
        raise _bad(f"{path}.stored_length runs past the stored bytes given ({len(data)})",
                   path + ".stored_length")
    tensor = Tensor(_name(Role, t["role"], path + ".role"),
                    _name(Dtype, t["dtype"], path + ".dtype", lower=True), dims,
                    data[at:at + stored_length], layer=_ref(t["layer"], path + ".layer"),
                    codec=_name(Codec, t["codec"], path + ".codec", lower=True),
                    layout=_name(Layout, t["layout"], path + ".layout"),
                    token_offset=_int(t["token_offset"], path + ".token_offset"),
                    quant=_quant(t["quant"], path + ".quant"), raw_length=raw_length)
    if tensor.data_crc != data_crc:
        raise _bad(f"{path}.data_crc disagrees with the stored bytes", path + ".data_crc")
    try:  # hashed chunk by chunk where the codec allows; no inflated copy is kept
        digest = raw_sha256(tensor, path + ".stored")
    except AvpError as e:
        raise AvpError(e.code, e.detail, path=path + ".stored") from None
    if digest != sha:
        raise _bad(f"{path}.raw_sha256 disagrees with the data", path + ".raw_sha256")
    return tensor


def from_canonical_json(doc: Any, stored: bytes | bytearray | memoryview = b"", *,
                        limits: Limits | None = None, max_values: int = MAX_VALUES) -> Message:
    """Build the logical message a canonical JSON document describes (spec R-18.3).

    ``doc`` is the parsed document (a dict) or its JSON text (str or UTF-8 bytes, parsed with
    the strict profile, at most ``max_values`` values). ``stored`` is the tensors' stored bytes
    concatenated in tensor order. Derived members (lengths, CRC, SHA-256) must agree with the
    data; everything else is checked when the message is encoded (the encoder applies every
    rule of the decoder). Types are exact (see the module docstring); each fault is
    ``AvpError(INVALID_VALUE)`` with the member's path, or the decoder's limit code (``limits``,
    spec 16). Memory: the message, plus the parsed text (at most ``max_values`` values; a
    document given as text is checked against the limits before anything is built, in C-level
    passes over the text). Each ``raw_sha256`` is verified the way ``write_canonical_json``
    computes it (chunk by chunk where the codec allows, one tensor at a time otherwise), and the
    returned tensors keep no inflated bytes: a 32 KB zstd bomb costs a chunk, not 256 MiB.

    >>> import avp_codec as avp
    >>> m = avp.from_canonical_json(avp.dumps_canonical_json(avp.text_message("hi")))
    >>> print(m.kind, m.get(avp.MetaKey.TEXT))
    TEXT hi
    >>> try:                                        # registry names are exact: not "text"
    ...     avp.from_canonical_json('{"format": "AVP/1.0", "kind": "text", "entries": [], '
    ...                             '"layers": [], "tensors": [], "authenticated": false}')
    ... except avp.AvpError as e:
    ...     print(e.code, e.path)
    INVALID_VALUE kind
    """
    lim = limits if limits is not None else DEFAULT_LIMITS
    if not isinstance(lim, Limits):
        raise TypeError(f"limits must be an avp_codec.Limits, not {tname(limits)}")
    if isinstance(doc, (str, bytes, bytearray, memoryview)):
        doc = _json.loads(bytes(doc) if not isinstance(doc, str) else doc,
                          max_depth=MAX_DEPTH, max_values=max_values)
    data = byte_view(stored, "stored")
    doc = _obj(doc, _MEMBERS, "")
    fmt = doc["format"]
    match = _FORMAT.fullmatch(fmt) if isinstance(fmt, str) else None
    if match is None or int(match.group(1)) > 0xFFFF:
        raise _bad(f"format must be \"AVP/{FORMAT_MAJOR}.<minor>\" (ASCII digits, minor <= "
                   "65535)", "format")
    kind = _name(Kind, doc["kind"], "kind")
    _bool(doc["authenticated"], "authenticated")
    items = _list(doc["entries"], "entries")
    if len(items) > lim.max_entries:
        raise _bad("more entries than max_entries", "entries", ErrorCode.LIMIT_ENTRIES)
    entries = [_entry(e, i) for i, e in enumerate(items)]
    items = _list(doc["layers"], "layers")
    if len(items) > lim.max_layers:
        raise _bad("more layers than max_layers", "layers", ErrorCode.LIMIT_LAYERS)
    layers = [_layer(la, i) for i, la in enumerate(items)]
    items = _list(doc["tensors"], "tensors")
    if len(items) > lim.max_tensors:
        raise _bad("more tensors than max_tensors", "tensors", ErrorCode.LIMIT_TENSORS)
    tensors, at = [], 0
    for i, t in enumerate(items):
        tensor = _tensor(t, i, data, at, lim)
        at += tensor.stored_length
        tensors.append(tensor)
    if at != len(data):
        raise _bad(f"{len(data) - at} stored bytes are left over", "tensors")
    return Message(kind, entries, layers, tensors, minor=int(match.group(1)))


_LOWER: dict[type[IntEnum], dict[str, IntEnum]] = {
    enum: {m.name.lower(): m for m in enum} for enum in (ValueType, Dtype, Codec)}
