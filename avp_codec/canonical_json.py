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

from ._canonical_in import from_canonical_json
from ._registry import FORMAT_MAJOR, Codec, Dtype, MetaKey, ValueType
from .model import Entry, Message, Tensor


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
    """The canonical JSON document of ``msg`` (spec 18) as Python objects."""
    if not isinstance(msg, Message):
        raise TypeError(f"msg must be an avp_codec.Message, not {type(msg).__name__}")
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
    """The canonical JSON text of ``msg``: sorted keys, no whitespace, UTF-8 characters kept."""
    return json.dumps(to_canonical_json(msg), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)


__all__ = ["dumps_canonical_json", "from_canonical_json", "to_canonical_json"]
