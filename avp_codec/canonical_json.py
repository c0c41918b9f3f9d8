"""The one canonical JSON form of a message (spec 18), shared by ``avp-dump --json`` and the
conformance suite. Every field value is exact (u64 as JSON integers, f64 as shortest round-trip
numbers or "NaN"/"Infinity"/"-Infinity", bytes as lowercase hex); tensor data appears as the
SHA-256 of its raw (codec-undone) bytes plus the stored bytes' CRC32C, so two decoders agree on a
message without printing gigabytes.

Three ways out, one text:

- ``iter_canonical_json`` / ``write_canonical_json`` stream the text (sorted keys, no
  whitespace, UTF-8 characters kept) in chunks of about ``CHUNK`` characters. They are the
  bounded path: besides the message they hold one chunk of text and, per tensor in turn, what
  hashing its raw bytes needs (see ``_raw_digest``: nothing for bytes the tensor already holds,
  the zstd window plus 1 MiB for ``zstd``, a window per byte plane for large
  ``byteplane_zstd``, one tensor's ``raw_length`` for ``floatplane_zstd``), never the whole
  text, a copy of a metadata list, or inflated bytes kept on the tensors.
- ``dumps_canonical_json`` joins that stream: the message plus the text.
- ``to_canonical_json`` builds the document as Python objects (lists of every metadata list
  and shape): the message plus a second object graph of about its size. Its ``json.dumps``
  with sorted keys and ``(",", ":")`` separators is byte for byte the streamed text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any, Protocol

from ._canonical_in import from_canonical_json
from ._raw_digest import raw_sha256
from ._registry import FORMAT_MAJOR, Codec, Dtype, MetaKey, ValueType
from .model import Entry, Message, Tensor

CHUNK = 1 << 16  # characters per streamed chunk (and list elements / hex bytes per slice)
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode


class TextSink(Protocol):
    """Anything with ``write(str)``: a text file opened with ``encoding="utf-8"``, a StringIO."""

    def write(self, s: str, /) -> object: ...


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


def _entry_head(e: Entry) -> dict[str, Any]:
    """The entry object without ``value`` (which sorts last among its members)."""
    name = MetaKey(e.key).name if e.key in MetaKey._value2member_map_ else None
    vtype: Any = e.type.name.lower() if isinstance(e.type, ValueType) else int(e.type)
    return {"key": e.key, "name": name, "type": vtype, "critical": e.critical}


def _entry(e: Entry) -> dict[str, Any]:
    return {**_entry_head(e), "value": _value(e)}


def _layer(msg: Message) -> Iterator[dict[str, Any]]:
    for la in msg.layers:
        yield {"layer_index": la.index, "layer_kind": la.kind.name, "window": la.window,
               "token_start": la.token_start, "token_count": la.token_count}


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
        "data_crc": t.data_crc, "raw_sha256": raw_sha256(t, f"tensors[{i}]"),
    }


def _check(msg: Any) -> None:
    if not isinstance(msg, Message):
        raise TypeError(f"msg must be an avp_codec.Message, not {type(msg).__name__}")


def to_canonical_json(msg: Message) -> dict[str, Any]:
    """The canonical JSON document of ``msg`` (spec 18) as Python objects.

    Memory: a second object graph about the size of the message's metadata (each u32 list
    becomes a list); for large messages prefer ``write_canonical_json``, which streams the same
    text in bounded memory. Tensors are hashed one at a time and keep no inflated bytes.
    """
    _check(msg)
    return {
        "format": f"AVP/{FORMAT_MAJOR}.{msg.minor}",
        "kind": msg.kind.name,
        "entries": [_entry(e) for e in msg.entries],
        "layers": list(_layer(msg)),
        "tensors": [_tensor(i, t) for i, t in enumerate(msg.tensors)],
        "authenticated": msg.authenticated,
    }


def _value_text(e: Entry) -> Iterator[str]:
    """The entry's value as JSON text, a slice at a time for long lists, strings and bytes.
    Slices are sized so that each stays under about CHUNK characters: a u32 takes at most 11
    (ten digits and a comma), an escaped code point at most 6 (``\\u001f``), a byte 2."""
    v = e.value
    n = max(1, CHUNK // 16)
    if isinstance(v, tuple) and len(v) > n:
        yield "["
        for i in range(0, len(v), n):
            yield ("," if i else "") + _dumps(list(v[i:i + n]))[1:-1]
        yield "]"
        return
    n = max(1, CHUNK // 8)
    if isinstance(v, str) and len(v) > n:
        yield '"'
        for i in range(0, len(v), n):  # JSON escapes one code point at a time
            yield _dumps(v[i:i + n])[1:-1]
        yield '"'
        return
    n = max(1, CHUNK // 2)
    if isinstance(v, (bytes, bytearray, memoryview)) and len(v) > n:
        mv = memoryview(v).cast("B")
        yield '"'
        for i in range(0, len(mv), n):
            yield mv[i:i + n].hex()
        yield '"'
        return
    yield _dumps(_value(e))


def _pieces(msg: Message) -> Iterator[str]:
    # Members in sorted order: authenticated, entries, format, kind, layers, tensors.
    yield '{"authenticated":' + _dumps(msg.authenticated) + ',"entries":['
    for i, e in enumerate(msg.entries):
        yield ("," if i else "") + _dumps(_entry_head(e))[:-1] + ',"value":'
        yield from _value_text(e)
        yield "}"
    yield ('],"format":' + _dumps(f"AVP/{FORMAT_MAJOR}.{msg.minor}") + ',"kind":'
           + _dumps(msg.kind.name) + ',"layers":[')
    for i, la in enumerate(_layer(msg)):
        yield ("," if i else "") + _dumps(la)
    yield '],"tensors":['
    for i, t in enumerate(msg.tensors):
        yield ("," if i else "") + _dumps(_tensor(i, t))
    yield "]}"


def iter_canonical_json(msg: Message) -> Iterator[str]:
    """The canonical JSON text of ``msg`` in chunks of about ``CHUNK`` characters (the last may
    be shorter); joined, they are ``dumps_canonical_json(msg)``. The bounded path: see the
    module docstring for what it holds at most.

    >>> import avp_codec as avp
    >>> "".join(avp.iter_canonical_json(avp.text_message("hi")))[:40]
    '{"authenticated":false,"entries":[{"crit'
    """
    _check(msg)  # here, not at the first next(): a wrong argument fails at the call
    return _chunks(msg)


def _chunks(msg: Message) -> Iterator[str]:
    parts: list[str] = []
    size = 0
    for p in _pieces(msg):
        parts.append(p)
        size += len(p)
        if size >= CHUNK:
            yield "".join(parts)
            parts.clear()
            size = 0
    if parts:
        yield "".join(parts)


def write_canonical_json(msg: Message, fp: TextSink) -> int:
    """Write the canonical JSON text of ``msg`` to the text file ``fp`` as it is produced (open
    files with ``encoding="utf-8"``); returns the number of characters written. Memory: the
    message plus one chunk of text and one tensor's hashing at a time (module docstring), so a
    message with a 15 MiB metadata list or a zstd bomb costs no copy of either.

    >>> import io, avp_codec as avp
    >>> out = io.StringIO()
    >>> n = avp.write_canonical_json(avp.text_message("hi"), out)
    >>> out.getvalue() == avp.dumps_canonical_json(avp.text_message("hi")), n == len(out.getvalue())
    (True, True)
    """
    n = 0
    for chunk in iter_canonical_json(msg):
        fp.write(chunk)
        n += len(chunk)
    return n


def dumps_canonical_json(msg: Message) -> str:
    """The canonical JSON text of ``msg``: sorted keys, no whitespace, UTF-8 characters kept.
    Equal to ``json.dumps(to_canonical_json(msg), sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)``; built from the stream, so it holds the text but no document."""
    return "".join(iter_canonical_json(msg))


__all__ = ["dumps_canonical_json", "from_canonical_json", "iter_canonical_json",
           "to_canonical_json", "write_canonical_json"]
