"""Storage codecs (spec section 7.3): zstd and byte-plane split + zstd, with bounded output.

Decompression never produces or holds more than ``raw_length + 1`` bytes (the +1 detects a
frame that would overrun): the output is pulled from a streaming reader in chunks, so a 6 KB
frame that claims or expands to 200 MiB costs at most raw_length, which the limits already
bounded. The frame is also walked block by block first so that trailing bytes, a second frame
or a skippable frame are rejected instead of silently ignored.
"""

from __future__ import annotations

import numpy as np
import zstandard

from ._registry import Codec, ErrorCode
from .errors import AvpError

ZSTD_LEVEL = 3  # spec 9.3: level 3, content size set, no frame checksum, one frame per tensor
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 22

_compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True,
                                       write_checksum=False)


def split_planes(raw: bytes | memoryview, k: int) -> bytes:
    """Plane j holds byte j of every k-byte element, planes concatenated j = 0..k-1."""
    a = np.frombuffer(raw, dtype=np.uint8).reshape(-1, k)
    return a.T.tobytes()


def join_planes(planes: bytes | bytearray | memoryview, k: int) -> bytes:
    a = np.frombuffer(planes, dtype=np.uint8).reshape(k, -1)
    return a.T.tobytes()


def compress(raw: bytes | memoryview, codec: Codec, elem_bytes: int) -> bytes:
    if codec == Codec.ZSTD:
        return _compressor.compress(raw)
    if codec == Codec.BYTEPLANE_ZSTD:
        return _compressor.compress(split_planes(raw, elem_bytes))
    raise ValueError(f"codec {codec!r} does not compress")


def _frame_size(data: memoryview, path: str) -> int:
    """Length in bytes of the single zstd frame that starts at data[0] (RFC 8878 section 3.1.1)."""
    fail = AvpError(ErrorCode.DECOMPRESSION_FAILED, "stored bytes are not one zstd frame",
                    path=path)
    if len(data) < 6 or bytes(data[:4]) != _ZSTD_MAGIC:
        raise fail
    try:
        pos = zstandard.frame_header_size(bytes(data[:18]))
    except zstandard.ZstdError:
        raise fail from None
    checksum = bool(data[4] & 0x04)
    while True:
        if pos + 3 > len(data):
            raise fail
        head = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
        last, btype, bsize = head & 1, (head >> 1) & 3, head >> 3
        if btype == 3:
            raise fail
        pos += 3 + (1 if btype == 1 else bsize)
        if last:
            break
    pos += 4 if checksum else 0
    if pos > len(data):
        raise fail
    return pos


def decompress(stored: memoryview, codec: Codec, raw_length: int, elem_bytes: int,
               path: str = "") -> bytes:
    """Undo ``codec``; the result is exactly raw_length bytes or an AvpError is raised."""
    if _frame_size(stored, path) != len(stored):
        raise AvpError(ErrorCode.DECOMPRESSION_FAILED,
                       "bytes follow the zstd frame", path=path)
    try:
        params = zstandard.get_frame_parameters(bytes(stored[:18]))
    except zstandard.ZstdError:
        raise AvpError(ErrorCode.DECOMPRESSION_FAILED, "bad zstd frame header",
                       path=path) from None
    if params.dict_id:  # a frame that needs a dictionary is not self-contained
        raise AvpError(ErrorCode.DECOMPRESSION_FAILED, "zstd frame uses a dictionary", path=path)
    declared = zstandard.frame_content_size(bytes(stored[:18]))
    if declared >= 0 and declared != raw_length:
        raise AvpError(ErrorCode.DECOMPRESSED_SIZE,
                       f"frame declares {declared} bytes, raw_length is {raw_length}", path=path)
    out = bytearray()
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(stored, read_across_frames=False)
        while len(out) <= raw_length:
            chunk = reader.read(min(_CHUNK, raw_length + 1 - len(out)))
            if not chunk:
                break
            out += chunk
    except zstandard.ZstdError as e:
        raise AvpError(ErrorCode.DECOMPRESSION_FAILED, f"zstd: {e}", path=path) from None
    if len(out) != raw_length:
        raise AvpError(ErrorCode.DECOMPRESSED_SIZE,
                       f"frame decompresses to {'more than ' if len(out) > raw_length else ''}"
                       f"{len(out)} bytes, raw_length is {raw_length}", path=path)
    if codec == Codec.BYTEPLANE_ZSTD:
        return join_planes(out, elem_bytes)
    return bytes(out)
