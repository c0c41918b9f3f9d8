"""Storage codecs (spec section 7.3): zstd, byteplane_zstd and floatplane_zstd.

Decompression writes straight into one output buffer of exactly ``raw_length`` bytes (R-7.8): the
frame is pulled through a streaming reader into that buffer (zstd), or in fixed-size chunks that
are scattered into it (the plane codecs), so a 32 KB frame that claims or expands to 1 GiB costs
at most raw_length, which the limits already bounded, plus a constant. One more byte is asked
for at the end to detect a frame that would overrun. The frame is also walked block by block
first so that trailing bytes, a second frame or a skippable frame are rejected instead of
silently ignored.

Compression keeps zstd compressors per thread (they are not thread-safe), so tensors may be
compressed on several threads at once; zstd releases the GIL. A tensor of at least ``MT_MIN``
bytes is compressed by zstd's multi-threaded mode, whose output is the same for any number of
workers: which mode is used depends only on the size, so the bytes never depend on ``threads``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import zstandard

from . import _floatplane
from ._registry import DTYPE_BITS, Codec, Dtype, ErrorCode
from .errors import AvpError

ZSTD_LEVEL = 3  # level 3, content size set, no frame checksum, one frame per tensor
MT_MIN = 8 << 20  # raw bytes from which zstd runs multi-threaded (same bytes for 1-N workers)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20  # scatter granularity of the plane decoders
# floatplane_zstd's default zstd parameters: the streams are nearly free of repeats, so the
# cheapest match finder (tiny hash table, 7-byte matches) leaves almost every byte to Huffman
# coding, which is what pays here; faster than level 1 and closer to the streams' entropy.
_FLOATPLANE_PARAMS = dict(window_log=17, hash_log=6, chain_log=6, search_log=1, min_match=7,
                          target_length=0, strategy=zstandard.STRATEGY_FAST)
_local = threading.local()


def dtype_error(codec: Codec, dtype: Dtype) -> str | None:
    """Why ``codec`` cannot store ``dtype`` (CODEC_DTYPE, R-7.9 / R-7.16), or None."""
    if codec == Codec.BYTEPLANE_ZSTD and DTYPE_BITS[dtype] not in (16, 32, 64):
        return "byteplane_zstd needs a 16, 32 or 64-bit dtype"
    if codec == Codec.FLOATPLANE_ZSTD and dtype not in _floatplane.FORMATS:
        return "floatplane_zstd needs float32, float16 or bfloat16"
    return None


def _compressor(codec: Codec, level: int | None, size: int, threads: int
                ) -> zstandard.ZstdCompressor:
    workers = max(1, threads) if size >= MT_MIN and codec != Codec.FLOATPLANE_ZSTD else 0
    key = (codec == Codec.FLOATPLANE_ZSTD, level, workers)
    cache: dict[tuple[bool, int | None, int], zstandard.ZstdCompressor] | None = getattr(
        _local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    c = cache.get(key)
    if c is None:
        if key[0] and level is None:
            params = zstandard.ZstdCompressionParameters(
                write_content_size=True, write_checksum=False, **_FLOATPLANE_PARAMS)
            c = zstandard.ZstdCompressor(compression_params=params)
        else:
            c = zstandard.ZstdCompressor(level=ZSTD_LEVEL if level is None else level,
                                         write_content_size=True, write_checksum=False,
                                         threads=workers)
        cache[key] = c
    return c


def split_planes(raw: bytes | memoryview, k: int) -> bytes:
    """Plane j holds byte j of every k-byte element, planes concatenated j = 0..k-1.

    Stays numpy: a compiled single-pass split measured slower than these k strided gathers
    (byteplane_zstd L1 encode 292 vs 408 MB per CPU-s, interleaved, load 6.5)."""
    a = np.frombuffer(raw, dtype=np.uint8).reshape(-1, k)
    out = np.empty((k, a.shape[0]), np.uint8)
    for j in range(k):  # one strided gather per plane beats a 2-D transpose copy
        out[j] = a[:, j]
    return out.tobytes()


def compress(raw: bytes | memoryview, codec: Codec, dtype: Dtype, shape: tuple[int, ...], *,
             level: int | None = None, threads: int = 1) -> bytes:
    """The stored bytes of ``raw`` (a tensor of ``dtype`` and ``shape``) under ``codec``.

    ``level`` is zstd's level (default: 3 for zstd and byteplane_zstd, tuned parameters for
    floatplane_zstd); ``threads`` is how many workers zstd may use for one large tensor."""
    c = _compressor(codec, level, len(raw), threads)
    if codec == Codec.ZSTD:
        return c.compress(raw)
    if codec == Codec.BYTEPLANE_ZSTD:
        return c.compress(split_planes(raw, DTYPE_BITS[dtype] // 8))
    if codec == Codec.FLOATPLANE_ZSTD:
        return _floatplane.compress(raw, dtype, shape, c)
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


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d


def check_frame(stored: memoryview, codec: Codec, raw_length: int, dtype: Dtype,
                shape: tuple[int, ...], path: str = "") -> int:
    """The checks made before inflating anything (one frame, no dictionary, a declared content
    size that matches); returns the frame's content length. Shared with the streaming digest
    of canonical JSON (``_raw_digest``), which must refuse exactly what ``decompress`` does."""
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
    # The frame's content: the raw bytes, or floatplane_zstd's streams (a function of the shape).
    content = (_floatplane.stream_length(dtype, shape) if codec == Codec.FLOATPLANE_ZSTD
               else raw_length)
    declared = zstandard.frame_content_size(bytes(stored[:18]))
    if declared >= 0 and declared != content:
        raise AvpError(ErrorCode.DECOMPRESSED_SIZE,
                       f"frame declares {declared} bytes, {content} expected", path=path)
    return content


class FrameReader:
    """One zstd frame's content, pulled exactly: ``read(view)`` fills ``view`` with the next
    bytes or raises DECOMPRESSED_SIZE (the frame ended early), ``end()`` raises it for a byte
    past ``content``. Shared by decompression, verification without the output (_verify) and
    canonical JSON's streamed digest (_raw_digest), so all three refuse a frame alike. zstd's
    own errors surface as ``zstandard.ZstdError``: use it inside ``zstd_errors(path)``."""

    __slots__ = ("_reader", "content", "got", "path")

    def __init__(self, stored: memoryview, content: int, path: str,
                 dctx: zstandard.ZstdDecompressor | None = None) -> None:
        self._reader = (dctx or _decompressor()).stream_reader(stored, read_across_frames=False)
        self.content, self.path = content, path
        self.got = 0  # content bytes pulled so far

    def read(self, view: memoryview) -> None:
        pos = 0
        while pos < len(view):
            n = self._reader.readinto(view[pos:])
            if not n:
                raise AvpError(ErrorCode.DECOMPRESSED_SIZE, f"frame decompresses to "
                               f"{self.got + pos} bytes, {self.content} expected",
                               path=self.path)
            pos += n
        self.got += pos

    def end(self) -> None:
        if self._reader.read(1):
            raise AvpError(ErrorCode.DECOMPRESSED_SIZE, f"frame decompresses to more than "
                           f"{self.content} bytes", path=self.path)


@contextmanager
def zstd_errors(path: str) -> Iterator[None]:
    """zstd's failures (a corrupt block, a bad checksum) as DECOMPRESSION_FAILED."""
    try:
        yield
    except zstandard.ZstdError as e:
        raise AvpError(ErrorCode.DECOMPRESSION_FAILED, f"zstd: {e}", path=path) from None


def decompress(stored: memoryview, codec: Codec, raw_length: int, dtype: Dtype,
               shape: tuple[int, ...], path: str = "", *,
               out: memoryview | None = None) -> memoryview:
    """Undo ``codec``: exactly raw_length bytes, written into ``out`` (a new buffer if None),
    or an AvpError. Memory: the output plus a constant, whatever the frame claims."""
    content = check_frame(stored, codec, raw_length, dtype, shape, path)
    if out is None:
        # Not zero-filled (every byte is written below, or the frame is refused).
        out = memoryview(np.empty(raw_length, np.uint8).data)
    elif len(out) != raw_length:
        raise ValueError("output buffer is not raw_length bytes")
    with zstd_errors(path):
        frame = FrameReader(stored, content, path)
        if codec == Codec.ZSTD:
            frame.read(out)
        elif codec == Codec.BYTEPLANE_ZSTD:
            _join_planes_into(frame.read, out, DTYPE_BITS[dtype] // 8)
        elif codec == Codec.FLOATPLANE_ZSTD:
            _floatplane.decompress_into(frame.read, dtype, shape, out, path)
        else:
            raise ValueError(f"codec {codec!r} does not compress")
        frame.end()
    return out


def _join_planes_into(read: Callable[[memoryview], None], out: memoryview, k: int) -> None:
    """Read the k planes in order, chunk by chunk, scattering each into its byte column."""
    cols = np.frombuffer(out, np.uint8).reshape(-1, k)
    n = cols.shape[0]
    chunk = bytearray(min(n, _CHUNK))
    view = memoryview(chunk)
    arr = np.frombuffer(chunk, np.uint8)
    for j in range(k):
        for i0 in range(0, n, _CHUNK):
            m = min(_CHUNK, n - i0)
            read(view[:m])
            cols[i0:i0 + m, j] = arr[:m]
