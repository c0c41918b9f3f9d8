"""Tensor values in bounded pieces, for --stats and diff.

A tensor's values are never materialised whole: ``element_chunks`` yields them in chunks of at
most ``CHUNK`` elements, in C order, decoded the way a receiver decodes them (bfloat16 and fp8
through ml_dtypes, packed int4 / uint4 / uint2 unpacked with the codec's own ``unpack``):

- RAW data are numpy views of the (memory-mapped) input, converted chunk by chunk;
- zstd data come from one streaming decompressor, read chunk by chunk;
- byteplane_zstd data are decompressed once, in pieces, into an unlinked temporary file (the
  planes of an element are far apart in the decompressed stream), then read back a chunk of each
  plane at a time.

``ElementSource`` gives random access to element ranges (RAW: views; compressed: the temporary
file), which dequantization needs for the scale and zero-point tensors. Memory stays within a
few chunks whatever the shape or the declared sizes; a compressed tensor costs its raw_length on
disk (TMPDIR) while it is read, and the zstd window its frame declares.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import IO

import numpy as np
import zstandard

import avp_codec as avp
from avp_codec import _dtypes
from avp_codec._registry import DTYPE_BITS

from ._ctx import BufferLike
from ._model import TensorInfo

CHUNK = 1 << 20  # elements per chunk (a multiple of 8, so packed chunks start on a byte)
_PIECE = 1 << 22  # bytes read or written at a time
_DTYPES = {int(m): m for m in avp.Dtype}
_CODECS = {int(m): m for m in avp.Codec}


class DataError(Exception):
    """The data cannot be read as its descriptor says (the walker reports why)."""


def elements(t: TensorInfo) -> int:
    n = 1
    for d in t.shape:
        n *= d
    return n


def readable(t: TensorInfo) -> bool:
    """Whether the walker found the tensor's data readable (present, frame and padding good; a
    wrong CRC alone does not stop reading) and its descriptor self-consistent (registered dtype
    and codec, a full shape, raw_length that of the shape): the walk must have verified data."""
    dtype = _DTYPES.get(t.dtype)
    if not t.data_ok or dtype is None or t.codec not in _CODECS or len(t.shape) != t.rank:
        return False
    from avp_codec import _codecs

    if t.codec and _codecs.dtype_error(_CODECS[t.codec], dtype):
        return False
    return t.raw_length == -(-elements(t) * DTYPE_BITS[dtype] // 8)


def _bits(t: TensorInfo) -> int:
    return DTYPE_BITS[_DTYPES[t.dtype]]


def numpy_dtype(t: TensorInfo) -> np.dtype[np.generic]:
    """The numpy dtype of the element values (packed sub-byte dtypes unpack to int8 / uint8)."""
    d = _DTYPES[t.dtype]
    if d in _dtypes.PACKED:
        return np.dtype(np.int8 if d == avp.Dtype.INT4 else np.uint8)
    return np.dtype(_dtypes.NUMPY_DTYPES[d])


def _stored(buf: BufferLike, t: TensorInfo) -> memoryview:
    return memoryview(buf).cast("B")[t.data_offset:t.data_offset + t.stored_length]


def _by_codec(buf: BufferLike, t: TensorInfo) -> memoryview:
    """The raw bytes through the codec's own decompress (raw_length of memory)."""
    from avp_codec import _codecs

    try:
        return _codecs.decompress(_stored(buf, t), _CODECS[t.codec], t.raw_length,
                                  _DTYPES[t.dtype], tuple(t.shape))
    except avp.AvpError as exc:
        raise DataError(f"tensor[{t.ordinal}]: {exc}") from None


def raw_pieces(buf: BufferLike, t: TensorInfo) -> Iterator[bytes | memoryview]:
    """The decompressed stream of a tensor in order (for byteplane_zstd: the planes), in pieces
    of at most 4 MiB, exactly raw_length bytes in all."""
    data = _stored(buf, t)
    if t.codec == 0:
        for i in range(0, len(data), _PIECE):
            yield data[i:i + _PIECE]
        return
    total = 0
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=False)
        while total < t.raw_length:
            out = reader.read(min(_PIECE, t.raw_length - total))
            if not out:
                break
            total += len(out)
            yield out
    except zstandard.ZstdError as exc:
        raise DataError(f"tensor[{t.ordinal}]: zstd: {exc}") from None
    if total != t.raw_length:
        raise DataError(f"tensor[{t.ordinal}]: frame gives {total} of {t.raw_length} bytes")


def raw_chunks(buf: BufferLike, t: TensorInfo) -> Iterator[bytes | memoryview]:
    """The raw bytes (codec undone, planes joined), in order, in bounded pieces."""
    if t.codec > 2:  # floatplane_zstd: only the codec's decoder rebuilds it, whole
        raw = _by_codec(buf, t)
        for i in range(0, len(raw), _PIECE):
            yield raw[i:i + _PIECE]
        return
    if t.codec != 2:
        yield from raw_pieces(buf, t)
        return
    with _Spool(buf, t) as spool:
        k = _bits(t) // 8
        n = t.raw_length // k
        step = max(1, _PIECE // k)
        for e0 in range(0, n, step):
            yield spool.elements_bytes(e0, min(n, e0 + step))


def element_chunks(buf: BufferLike, t: TensorInfo) -> Iterator[np.ndarray]:
    """The tensor's element values (packed dtypes unpacked), 1-D, CHUNK elements at a time."""
    count = elements(t)
    if count == 0:
        return
    bits = _bits(t)
    dt = numpy_dtype(t)
    if t.codec == 0:
        data = _stored(buf, t)
        for e0 in range(0, count, CHUNK):
            n = min(CHUNK, count - e0)
            yield _decode(data[e0 * bits // 8:-(-(e0 + n) * bits // 8)], t, bits, dt, n)
        return
    pending = bytearray()
    e0 = 0
    for piece in raw_chunks(buf, t):
        pending += piece
        while e0 < count:
            n = min(CHUNK, count - e0)
            nb = -(-n * bits // 8)
            if len(pending) < nb:
                break
            yield _decode(bytes(pending[:nb]), t, bits, dt, n)
            del pending[:nb]
            e0 += n
    if e0 < count:
        raise DataError(f"tensor[{t.ordinal}]: data end before element {e0}")


def _decode(raw: bytes | memoryview, t: TensorInfo, bits: int, dt: np.dtype[np.generic],
            n: int) -> np.ndarray:
    if bits < 8:
        return _dtypes.unpack(raw, _DTYPES[t.dtype], n)
    return np.frombuffer(raw, dtype=dt, count=n)


class _Spool:
    """The decompressed bytes of a compressed tensor in an unlinked temporary file."""

    def __init__(self, buf: BufferLike, t: TensorInfo) -> None:
        self.t = t
        self.file: IO[bytes] = tempfile.TemporaryFile(prefix="avp-dump-")  # noqa: SIM115
        try:  # byteplane_zstd keeps its planes (joined per read); others the raw bytes
            for piece in (raw_pieces(buf, t) if t.codec <= 2 else raw_chunks(buf, t)):
                self.file.write(piece)
            self.file.flush()
        except BaseException:
            self.file.close()
            raise
        self.fd = self.file.fileno()

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def read(self, off: int, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            got = os.pread(self.fd, n - len(out), off + len(out))
            if not got:
                raise DataError(f"tensor[{self.t.ordinal}]: spool file ended early")
            out += got
        return bytes(out)

    def elements_bytes(self, e0: int, e1: int) -> bytes:
        """Raw bytes of elements [e0, e1) of a byteplane tensor (planes joined)."""
        k = _bits(self.t) // 8
        n = self.t.raw_length // k
        planes = [np.frombuffer(self.read(j * n + e0, e1 - e0), np.uint8) for j in range(k)]
        return np.stack(planes, axis=1).tobytes()


class ElementSource:
    """Random access to a tensor's element values by flat index range."""

    def __init__(self, buf: BufferLike, t: TensorInfo) -> None:
        self.t = t
        self.buf = buf
        self.bits = _bits(t)
        self.dt = numpy_dtype(t)
        self.spool = _Spool(buf, t) if t.codec != 0 else None  # (planes joined when read)

    def close(self) -> None:
        if self.spool is not None:
            self.spool.__exit__()

    def __enter__(self) -> ElementSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, e0: int, e1: int) -> np.ndarray:
        """Elements [e0, e1) (1-D; packed dtypes unpacked)."""
        if e1 <= e0:
            return np.zeros(0, self.dt)
        if self.bits < 8:
            per = 8 // self.bits
            b0, b1 = e0 // per, -(-e1 // per)
            raw = self._bytes(b0, b1)
            vals = _dtypes.unpack(raw, _DTYPES[self.t.dtype], (b1 - b0) * per)
            return vals[e0 - b0 * per:e1 - b0 * per]
        size = self.bits // 8
        if self.spool is not None and self.t.codec == 2:
            return np.frombuffer(self.spool.elements_bytes(e0, e1), dtype=self.dt)
        return np.frombuffer(self._bytes(e0 * size, e1 * size), dtype=self.dt)

    def _bytes(self, b0: int, b1: int) -> bytes | memoryview:
        if self.spool is None:
            return _stored(self.buf, self.t)[b0:b1]
        return self.spool.read(b0, b1 - b0)
