"""LMCache's first v1 bytes payload (``application/x-lmcache-kv; v=1``): a safetensors file
holding one flat ``uint8`` tensor ``"kv"`` (metadata ``{"format_version": "1"}``) whose bytes are
the per-chunk, per-worker KV_2LTD shards ``[2, L, chunk_size, hidden / world_size]`` in the
model's KV dtype, concatenated chunk by chunk (workers in order within a chunk). Model name and
tokens travel in HTTP headers, the layout comes from the server's registered model, so reading
one needs them from the caller.

The safetensors framing is parsed strictly here (u64 little-endian header length, a JSON object
within 100 MB as the format allows, exactly one tensor "kv" of dtype U8 whose data_offsets cover
the rest of the file) rather than through a library that would trust the header's sizes.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from avp_codec import AvpError, ErrorCode

MEDIA_TYPE = "application/x-lmcache-kv; v=1"
MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate member {k!r}")
        out[k] = v
    return out


def _bad_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(body: bytes | bytearray | memoryview) -> memoryview:
    """The raw KV bytes of a safetensors payload (a view into `body`)."""
    mv = memoryview(body).cast("B")
    if len(mv) < 8:
        raise AvpError(ErrorCode.TRUNCATED, "safetensors payload shorter than its length word")
    (n,) = struct.unpack_from("<Q", mv, 0)
    if n > MAX_HEADER:
        raise AvpError(ErrorCode.LIMIT_HEADER, f"safetensors header of {n} bytes", offset=0)
    if 8 + n > len(mv):
        raise AvpError(ErrorCode.TRUNCATED, f"safetensors header of {n} bytes, "
                       f"{len(mv) - 8} present", offset=0)
    try:
        head = json.loads(bytes(mv[8:8 + n]).decode("utf-8"), object_pairs_hook=_unique,
                          parse_constant=_bad_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise AvpError(ErrorCode.INVALID_VALUE, f"safetensors header: {e}", offset=8) from None
    if not isinstance(head, dict):
        raise AvpError(ErrorCode.INVALID_VALUE, "safetensors header is not an object", offset=8)
    meta = head.pop("__metadata__", {})
    if not isinstance(meta, dict) or meta.get("format_version") not in (None, "1"):
        raise AvpError(ErrorCode.UNSUPPORTED_VERSION, f"payload metadata {meta!r}"[:200],
                       offset=8)
    if set(head) != {"kv"} or not isinstance(head["kv"], dict):
        raise AvpError(ErrorCode.KIND_CONSTRAINT, f"payload tensors {sorted(head)[:4]}: one "
                       "tensor named 'kv' expected", offset=8)
    t = head["kv"]
    data = mv[8 + n:]
    offs, shape = t.get("data_offsets"), t.get("shape")
    ok = (t.get("dtype") == "U8" and isinstance(shape, list) and len(shape) == 1
          and isinstance(offs, list) and len(offs) == 2
          and all(isinstance(x, int) and not isinstance(x, bool) for x in [*shape, *offs]))
    if not ok:
        raise AvpError(ErrorCode.INVALID_VALUE, "tensor 'kv' must be U8 of rank 1",
                       offset=8, path="kv")
    assert isinstance(shape, list)  # checked above; for the type checker
    if offs != [0, shape[0]] or shape[0] != len(data):
        raise AvpError(ErrorCode.SIZE_MISMATCH, f"tensor 'kv' declares {shape[0]} bytes at "
                       f"{offs}, the payload holds {len(data)}", offset=8, path="kv")
    return data


def build(raw: bytes | memoryview) -> bytes:
    """A safetensors payload around `raw` (header padded to 8 bytes with spaces, as
    safetensors writes it)."""
    head = json.dumps({"__metadata__": {"format_version": "1"},
                       "kv": {"dtype": "U8", "shape": [len(raw)],
                              "data_offsets": [0, len(raw)]}}, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + bytes(raw)
