"""LMCache's v1 KV transfer protocol, frame by frame, over untrusted bytes.

From LMCache's public repository (lmcache/v1/multiprocess/http_apis/kv_protocol.py and its design
note docs/design/v1/multiprocess/http_apis/kv_api.md), media type
``application/x-lmcache-kv-stream; v=1``. A body is a sequence of frames:

    u32 big-endian header_length, u64 big-endian payload_length,
    header_length bytes of UTF-8 JSON (an object with at least version = 1, type, and
    payload_length repeated), payload_length bytes of payload

A store request is one ``store_manifest`` (model_name, tokens, cache_salt, shape [2, L, T, D],
dtype such as "torch.bfloat16") and then ``store_chunk`` frames (chunk_index; the payload is
one chunk of tokens of the KV_2LTD tensor, row-major). A retrieve response is one
``retrieve_manifest`` (model_name, total_tokens, total_chunks, hit_tokens, hit_chunks,
chunk_size, world_size, shape, shard_shape, dtype) and then ``retrieve_shard`` frames
(chunk_index, worker_id; payload [2, L, chunk_size, D / world_size] of one tensor-parallel
worker).

Headers are limited to 1 MiB (LMCache's own limit) and parsed strictly (no NaN, no duplicate
members, no booleans where integers belong); payloads are views into the caller's buffer.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from avp_codec import AvpError, ErrorCode

PROTOCOL_VERSION = 1
STREAM_MEDIA_TYPE = "application/x-lmcache-kv-stream; v=1"
MAX_HEADER_BYTES = 1 << 20
_PREFIX = struct.Struct("!IQ")
FRAME_TYPES = ("store_manifest", "store_chunk", "retrieve_manifest", "retrieve_shard")


@dataclass(frozen=True)
class Frame:
    header: dict[str, Any]
    payload: memoryview
    offset: int  # where the frame starts in the body

    @property
    def type(self) -> str:
        return str(self.header["type"])


def encode_frame(frame_type: str, payload: bytes | memoryview = b"",
                 fields: dict[str, Any] | None = None) -> bytes:
    header: dict[str, Any] = {"version": PROTOCOL_VERSION, "type": frame_type,
                              "payload_length": len(payload)}
    for k, v in (fields or {}).items():
        if k in header:
            raise ValueError(f"reserved frame header field {k!r}")
        header[k] = v
    hb = json.dumps(header, separators=(",", ":")).encode()
    return _PREFIX.pack(len(hb), len(payload)) + hb + bytes(payload)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate member {k!r}")
        out[k] = v
    return out


def _header(raw: memoryview, payload_len: int, offset: int) -> dict[str, Any]:
    try:
        obj = json.loads(bytes(raw).decode("utf-8"), parse_constant=_reject_constant,
                         object_pairs_hook=_unique)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise AvpError(ErrorCode.INVALID_VALUE, f"frame header is not strict JSON: {e}",
                       offset=offset, path="header") from None
    if not isinstance(obj, dict):
        raise AvpError(ErrorCode.INVALID_VALUE, "frame header is not a JSON object",
                       offset=offset, path="header")
    version = get_int(obj, "version", offset)
    if version != PROTOCOL_VERSION:
        raise AvpError(ErrorCode.UNSUPPORTED_VERSION, f"LMCache KV protocol version {version}, "
                       f"this speaks {PROTOCOL_VERSION}", offset=offset, path="header.version")
    if get_int(obj, "payload_length", offset) != payload_len:
        raise AvpError(ErrorCode.SIZE_MISMATCH, "header payload_length disagrees with the frame "
                       "prefix", offset=offset, path="header.payload_length")
    if get_str(obj, "type", offset) not in FRAME_TYPES:
        raise AvpError(ErrorCode.INVALID_VALUE, f"unknown frame type {obj['type']!r}",
                       offset=offset, path="header.type")
    return obj


def iter_frames(body: bytes | bytearray | memoryview, *, max_payload: int) -> Iterator[Frame]:
    """Frames of a whole body; a frame whose payload exceeds `max_payload` is LIMIT_TENSOR."""
    mv = memoryview(body).cast("B")
    pos = 0
    while pos < len(mv):
        if len(mv) - pos < _PREFIX.size:
            raise AvpError(ErrorCode.TRUNCATED, "body ends inside a frame prefix", offset=pos)
        hlen, plen = _PREFIX.unpack_from(mv, pos)
        if hlen > MAX_HEADER_BYTES:
            raise AvpError(ErrorCode.LIMIT_HEADER, f"frame header of {hlen} bytes (limit "
                           f"{MAX_HEADER_BYTES})", offset=pos)
        if plen > max_payload:
            raise AvpError(ErrorCode.LIMIT_TENSOR, f"frame payload of {plen} bytes (limit "
                           f"{max_payload})", offset=pos)
        end = pos + _PREFIX.size + hlen + plen
        if end > len(mv):
            raise AvpError(ErrorCode.TRUNCATED, f"frame of {end - pos} bytes, "
                           f"{len(mv) - pos} left", offset=pos)
        h0 = pos + _PREFIX.size
        header = _header(mv[h0:h0 + hlen], plen, pos)
        yield Frame(header, mv[h0 + hlen:end], pos)
        pos = end


def get_int(h: dict[str, Any], key: str, offset: int, *, lo: int = 0,
            hi: int = 2**63 - 1) -> int:
    v = h.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise AvpError(ErrorCode.INVALID_VALUE, f"header field {key!r} must be an integer in "
                       f"[{lo}, {hi}], not {v!r}"[:200], offset=offset, path=f"header.{key}")
    return v


def get_str(h: dict[str, Any], key: str, offset: int, *, default: str | None = None) -> str:
    v = h.get(key, default)
    if not isinstance(v, str):
        raise AvpError(ErrorCode.INVALID_VALUE, f"header field {key!r} must be a string",
                       offset=offset, path=f"header.{key}")
    return v


def get_ints(h: dict[str, Any], key: str, offset: int, *, n: int | None = None,
             lo: int = 0, hi: int = 2**63 - 1) -> list[int]:
    v = h.get(key)
    ok = isinstance(v, list) and all(
        isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi for x in v)
    if not ok or (n is not None and len(v) != n):  # type: ignore[arg-type]
        want = f"{n} " if n is not None else ""
        raise AvpError(ErrorCode.INVALID_VALUE, f"header field {key!r} must be a list of "
                       f"{want}integers in [{lo}, {hi}]", offset=offset, path=f"header.{key}")
    return list(v)  # type: ignore[arg-type]
