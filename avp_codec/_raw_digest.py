"""SHA-256 of a tensor's raw bytes without keeping them (canonical JSON's ``raw_sha256``, 18.2).

Why not ``hashlib.sha256(t.raw_bytes())``: ``raw_bytes()`` caches the inflated bytes on the
tensor, so describing a message of compressed tensors made it hold every tensor's raw bytes at
once (a 32 KB zstd bomb of 2 x 256 MiB then cost 512 MiB per copy of the message). Here:

- bytes the tensor already holds (codec ``raw``, or decompressed earlier) are hashed in place;
- ``zstd`` is inflated chunk by chunk into the hash: the frame's window (at most
  ``raw_length``) plus one chunk, whatever the size;
- ``byteplane_zstd`` above ``BUFFER_MAX`` raw bytes is inflated by one streaming reader per
  byte plane, in lockstep, so the raw order is hashed one chunk at a time (memory: one window
  per plane plus chunks; time: about (k + 1) / 2 passes over the frame for k planes), unless
  those windows would cost more than the raw bytes themselves;
- anything else (``floatplane_zstd``, whose streams are channel-major, and small plane-coded
  tensors) is inflated into a temporary buffer of ``raw_length`` that is released at once.

Every check of ``_codecs.decompress`` is applied (the same frame checks, the exact length, no
byte past it), with the same error codes, so a faulty frame is refused here exactly as there.
"""

from __future__ import annotations

import hashlib

import numpy as np
import zstandard

from . import _codecs
from ._registry import DTYPE_BITS, Codec
from .model import Tensor

CHUNK = 1 << 20  # raw bytes hashed per step of the streamed paths
BUFFER_MAX = 32 << 20  # plane-coded tensors up to this size are inflated whole (faster)
_READER_OVERHEAD = 256 << 10  # a zstd stream reader's input buffer and context, roughly


def raw_sha256(t: Tensor, path: str = "") -> str:
    """Lowercase hex SHA-256 of ``t``'s raw bytes; ``t`` keeps no inflated copy afterwards."""
    held = t._raw
    if held is not None:
        return hashlib.sha256(held).hexdigest()
    stored, codec = t.stored, t.codec
    content = _codecs.check_frame(stored, codec, t.raw_length, t.dtype, t.shape, path)
    if codec == Codec.ZSTD:
        return _stream(stored, content, 1, path)
    if codec == Codec.BYTEPLANE_ZSTD and t.raw_length > BUFFER_MAX:
        k = DTYPE_BITS[t.dtype] // 8
        window = zstandard.get_frame_parameters(bytes(stored[:18])).window_size
        if k * (min(window, content) + _READER_OVERHEAD) < content:
            return _stream(stored, content, k, path)
    raw = _codecs.decompress(stored, codec, t.raw_length, t.dtype, t.shape, path)
    digest = hashlib.sha256(raw).hexdigest()
    del raw  # the only reference: released here, not kept on the tensor
    return digest


def _stream(stored: memoryview, content: int, k: int, path: str) -> str:
    """Hash the ``content`` bytes of one frame holding ``k`` byte planes (k = 1: plain zstd).

    Reader j first skips planes 0 .. j-1 (each skip scans the frame from its start, so the
    first fault in stream order is the one reported, as a sequential inflate would), then the
    readers advance together, one chunk of every plane per step."""
    n = content // k  # bytes per plane
    step = max(1, min(CHUNK // k, n))
    h = hashlib.sha256()
    planes = bytearray(step * k)
    pview = memoryview(planes)
    with _codecs.zstd_errors(path):
        # One decompression context per reader: they advance together.
        readers = [_codecs.FrameReader(stored, content, path, zstandard.ZstdDecompressor())
                   for _ in range(k)]
        for j in range(1, k):
            for skipped in range(0, j * n, step):
                readers[j].read(pview[:min(step, j * n - skipped)])
        rows = np.frombuffer(planes, np.uint8).reshape(k, step)  # row j: a chunk of plane j
        out = bytearray(step * k) if k > 1 else planes
        grid = np.frombuffer(out, np.uint8).reshape(step, k)
        for i0 in range(0, n, step):
            m = min(step, n - i0)
            for j in range(k):
                readers[j].read(pview[j * step:j * step + m])
                if k > 1:  # element i's byte j is plane j's byte i; a column at a time is 5x
                    grid[:m, j] = rows[j, :m]  # faster than one transposing copy
            h.update(memoryview(out)[:m * k])
        readers[-1].end()
    return h.hexdigest()
