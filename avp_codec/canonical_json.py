"""The one canonical JSON form of a message, shared by ``avp-dump --json`` and the conformance
suite. Every field value is exact (u64 as JSON integers, f64 as shortest round-trip numbers or
"NaN"/"Infinity"/"-Infinity", bytes as lowercase hex); tensor data appears as the SHA-256 of its
raw (codec-undone) bytes plus the stored bytes' CRC32C, so two decoders agree on a message
without printing gigabytes. ``dumps_canonical_json`` has sorted keys and no whitespace.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from ._registry import (
    FORMAT_MAJOR,
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
from .model import Entry, Layer, Message, Quant, Tensor


def _value(e: Entry) -> Any:
    v = e.value
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, tuple):
        return list(v)
    return v


def _entry(e: Entry) -> dict[str, Any]:
    name = MetaKey(e.key).name if e.key in MetaKey._value2member_map_ else None
    vtype: Any = e.type.name.lower() if isinstance(e.type, ValueType) else int(e.type)
    return {"key": e.key, "name": name, "type": vtype, "critical": e.critical,
            "value": _value(e)}


def _tensor(i: int, t: Tensor) -> dict[str, Any]:
    q = t.quant
    quant = None if q is None else {
        "scheme": q.scheme.name, "axis": q.axis, "group_size": q.group_size,
        "scale_tensor": q.scale_tensor, "zero_point_tensor": q.zero_point_tensor,
        "dequant_dtype": Dtype(q.dequant_dtype).name.lower()}
    return {
        "tensor_index": i, "layer": t.layer, "role": t.role.name,
        "dtype": t.dtype.name.lower(), "codec": Codec(t.codec).name.lower(),
        "layout": t.layout.name, "shape": list(t.shape), "token_offset": t.token_offset,
        "quant": quant, "raw_length": t.raw_length, "stored_length": t.stored_length,
        "data_crc": t.data_crc, "raw_sha256": hashlib.sha256(t.raw_bytes()).hexdigest(),
    }


def to_canonical_json(msg: Message) -> dict[str, Any]:
    return {
        "format": f"AVP/{FORMAT_MAJOR}.{msg.minor}",
        "kind": msg.kind.name,
        "entries": [_entry(e) for e in msg.entries],
        "layers": [{"layer_index": la.index, "layer_kind": la.kind.name, "window": la.window,
                    "token_start": la.token_start, "token_count": la.token_count}
                   for la in msg.layers],
        "tensors": [_tensor(i, t) for i, t in enumerate(msg.tensors)],
        "authenticated": msg.authenticated,
    }


def dumps_canonical_json(msg: Message) -> str:
    return json.dumps(to_canonical_json(msg), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)


_MEMBERS = {"format", "kind", "entries", "layers", "tensors", "authenticated"}
_TENSOR_MEMBERS = {"tensor_index", "layer", "role", "dtype", "codec", "layout", "shape",
                   "token_offset", "quant", "raw_length", "stored_length", "data_crc",
                   "raw_sha256"}


def _bad(msg: str, path: str = "") -> AvpError:
    return AvpError(ErrorCode.INVALID_VALUE, f"canonical JSON: {msg}", path=path)


def _enum(enum: Any, name: Any, path: str, lower: bool = False) -> Any:
    if not isinstance(name, str):
        raise _bad("expected a registry name", path)
    try:
        return enum[name.upper() if lower else name]
    except KeyError:
        raise _bad(f"unknown name {name!r}", path) from None


def _entry_from(e: Any, i: int) -> Entry:
    path = f"entries[{i}]"
    if not isinstance(e, dict) or set(e) != {"key", "name", "type", "critical", "value"}:
        raise _bad("an entry has exactly key, name, type, critical, value", path)
    key, vtype, value = e["key"], e["type"], e["value"]
    registered = key in MetaKey._value2member_map_
    if e["name"] != (MetaKey(key).name if registered else None):
        raise _bad("name disagrees with the key's registry name", path)
    t: ValueType | int = vtype if isinstance(vtype, int) else _enum(ValueType, vtype, path, True)
    try:
        if t in (ValueType.BYTES,) or not isinstance(t, ValueType):
            v: Any = bytes.fromhex(value)
        elif t == ValueType.F64:
            v = float(value) if value in ("NaN", "Infinity", "-Infinity") else value
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise TypeError
            v = float(v)
        elif t == ValueType.U32_LIST:
            v = tuple(value)
        else:
            v = value
    except (TypeError, ValueError):
        raise _bad("value does not fit its type", path) from None
    return Entry(key, t, v, bool(e["critical"]))


def from_canonical_json(doc: Any, stored: bytes | memoryview = b"") -> Message:
    """Build the logical message a canonical JSON document describes (spec R-18.3).

    ``stored`` is the tensors' stored bytes concatenated in tensor order. Derived members
    (lengths, CRC, SHA-256) must agree with the data; everything else is checked when the
    message is encoded (the encoder applies every rule of the decoder)."""
    if not isinstance(doc, dict) or set(doc) != _MEMBERS:
        raise _bad(f"the document has exactly the members {sorted(_MEMBERS)}")
    fmt = doc["format"]
    if not (isinstance(fmt, str) and fmt.startswith(f"AVP/{FORMAT_MAJOR}.")
            and fmt[len(f"AVP/{FORMAT_MAJOR}."):].isdigit()):
        raise _bad(f"unsupported format {fmt!r}", "format")
    kind = _enum(Kind, doc["kind"], "kind")
    entries = [_entry_from(e, i) for i, e in enumerate(doc["entries"])]
    layers = [Layer(la["layer_index"], _enum(LayerKind, la["layer_kind"], f"layers[{i}]"),
                    la["token_start"], la["token_count"], la["window"])
              for i, la in enumerate(doc["layers"])]
    data = memoryview(stored).cast("B")
    tensors, at = [], 0
    for i, t in enumerate(doc["tensors"]):
        path = f"tensors[{i}]"
        if not isinstance(t, dict) or set(t) != _TENSOR_MEMBERS or t["tensor_index"] != i:
            raise _bad("malformed tensor object", path)
        q = t["quant"]
        quant = None if q is None else Quant(
            _enum(QuantScheme, q["scheme"], path), q["axis"], q["group_size"],
            q["scale_tensor"], q["zero_point_tensor"],
            _enum(Dtype, q["dequant_dtype"], path, True))
        chunk = data[at:at + t["stored_length"]]
        at += t["stored_length"]
        tensor = Tensor(_enum(Role, t["role"], path), _enum(Dtype, t["dtype"], path, True),
                        tuple(t["shape"]), chunk, layer=t["layer"],
                        codec=_enum(Codec, t["codec"], path, True),
                        layout=_enum(Layout, t["layout"], path), token_offset=t["token_offset"],
                        quant=quant, raw_length=t["raw_length"])
        if len(chunk) != t["stored_length"] or tensor.data_crc != t["data_crc"] or (
                hashlib.sha256(tensor.raw_bytes()).hexdigest() != t["raw_sha256"]):
            raise _bad("stored_length, data_crc or raw_sha256 disagrees with the data", path)
        tensors.append(tensor)
    if at != len(data):
        raise _bad(f"{len(data) - at} stored bytes are left over", "tensors")
    return Message(kind, entries, layers, tensors, minor=int(fmt.split(".")[1]))
