"""Codec ``floatplane_zstd`` (code 3, spec 7.3.1): lossless, for bfloat16, float16 and float32.

Why it beats ``byteplane_zstd`` on KV-caches: byte planes cut an IEEE float at byte boundaries,
so the exponent's low bit lands among the mantissa bits and the sign among the exponent bits,
and zstd's per-block Huffman tables see the statistics of all channels at once. Here each element
is split into its fields instead, in channel-major order (a [.., T, D] tensor is walked as
[.., D, T]: one channel's values over the sequence are contiguous):

- the exponent, as the zigzag of its difference to a per-channel anchor byte, so that channels of
  very different magnitude share one distribution (order-0 per channel, approximately);
- the sign, XOR a per-channel flip bit, packed 8 to a byte (KV channels often lean to one sign);
- the mantissa, in byte planes (near-random bits, coded by Huffman at their own entropy).

The streams are written block by block (``BLOCK`` elements each) so that a decoder needs memory
for one block besides the output, and the reference encoder ends a zstd block at every stream
boundary so that each zstd block's Huffman table describes one stream of about 64 channels.

Everything is vectorised numpy; zstd and large numpy operations release the GIL, so tensors can
be compressed on several threads at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import zstandard

from . import _plane_kernels
from ._registry import Dtype, ErrorCode
from .errors import AvpError

# dtype -> (element bits W, exponent bits E, mantissa bits M); the sign is bit W-1.
FORMATS: dict[Dtype, tuple[int, int, int]] = {
    Dtype.BFLOAT16: (16, 8, 7),
    Dtype.FLOAT16: (16, 5, 10),
    Dtype.FLOAT32: (32, 8, 23),
}
BLOCK = 1 << 16  # elements per block (a multiple of 8: sign bytes never straddle blocks)
SAMPLE = 8  # the reference encoder picks anchors from every 8th position
MIN_SEQ = 64  # shorter sequences share one channel: an anchor per channel would not pay
_UINT: dict[int, np.dtype[Any]] = {16: np.dtype("<u2"), 32: np.dtype("<u4")}


def geometry(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(A, D, T): the tensor is read as [A, T, D] and coded channel-major, as [A, D, T].

    Channels are the last axis and the sequence the second-to-last when the tensor has at least
    two axes and a sequence of at least MIN_SEQ; otherwise the whole tensor is one channel."""
    n = 1
    for d in shape:
        n *= d
    if len(shape) >= 2 and shape[-2] >= MIN_SEQ:
        t, d = shape[-2], shape[-1]
        return (n // (t * d) if t * d else 0), d, t
    return 1, 1, n


def planes(dtype: Dtype) -> int:
    return (FORMATS[dtype][2] + 7) // 8


def stream_length(dtype: Dtype, shape: tuple[int, ...]) -> int:
    """Length of the pre-compression buffer P (spec 7.3.1), a function of dtype and shape."""
    a, d, t = geometry(shape)
    c, n = a * d, a * d * t
    return c + (c + 7) // 8 + n * (1 + planes(dtype)) + (n + 7) // 8


def choose_params(e: np.ndarray, signs: np.ndarray, e_bits: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The reference encoder's per-channel anchors and flips (a decoder never needs to know how
    they were chosen): the most frequent exponent and the majority sign of a sample."""
    c, t = e.shape
    if c == 0 or t == 0:
        return np.zeros(c, np.uint8), np.zeros(c, np.uint8)
    size = 1 << e_bits
    # The mode of a sample of every SAMPLE-th position: one bincount over (channel, exponent)
    # pairs, in slices of channels to bound memory. An anchor off by one costs little.
    step = SAMPLE if t >= 8 * SAMPLE else 1
    sample = e[:, ::step]
    ts = sample.shape[1]
    anchors = np.empty(c, np.uint8)
    rows = max(1, (1 << 18) // ts)
    for r0 in range(0, c, rows):
        blk = sample[r0:r0 + rows]
        key = (np.arange(blk.shape[0], dtype=np.intp)[:, None] << e_bits) + blk
        counts = np.bincount(key.reshape(-1), minlength=blk.shape[0] * size)
        anchors[r0:r0 + rows] = counts.reshape(-1, size).argmax(axis=1)
    flips = (signs[:, ::step].sum(axis=1, dtype=np.int64) * 2 > ts).astype(np.uint8)
    return anchors, flips


def compress(raw: bytes | memoryview, dtype: Dtype, shape: tuple[int, ...],
             cctx: zstandard.ZstdCompressor) -> bytes:
    w = FORMATS[dtype][0]
    x = np.frombuffer(raw, _UINT[w])
    a, d, t = geometry(shape)
    if a * d * t != len(x):
        raise ValueError("raw bytes do not match the shape")
    enc = _plane_kernels.fp_encode.get()
    pieces = _streams_numpy(x, dtype, shape) if enc is None else _streams_kernel(x, dtype, shape)
    cobj = cctx.compressobj(size=stream_length(dtype, shape))
    it = iter(pieces)
    out = [cobj.compress(next(it))]
    flush = zstandard.COMPRESSOBJ_FLUSH_BLOCK
    for piece in it:  # one zstd block per stream: its Huffman table fits that stream
        out.append(cobj.flush(flush))
        out.append(cobj.compress(piece))
    out.append(cobj.flush())
    return b"".join(out)


def _streams_kernel(x: np.ndarray, dtype: Dtype, shape: tuple[int, ...]
                    ) -> Iterator[memoryview]:
    """P's pieces, written block by block by the compiled kernels into one reused block
    buffer (still in cache when zstd reads it); each piece is valid until the next is asked
    for. The same bytes as ``_streams_numpy`` (tests/codec/test_plane_kernels.py)."""
    w, e_bits, m_bits = FORMATS[dtype]
    a, d, t = geometry(shape)
    c, n, k = a * d, a * d * t, planes(dtype)
    anchors, flips = np.zeros(c, np.uint8), np.zeros(c, np.uint8)
    params, enc = _plane_kernels.fp_params.get(), _plane_kernels.fp_encode.get()
    assert params is not None and enc is not None
    if n:
        params(x, a, d, t, m_bits, e_bits, w, SAMPLE if t >= 8 * SAMPLE else 1, anchors, flips)
    yield memoryview(anchors.tobytes() + np.packbits(flips, bitorder="little").tobytes())
    blk = np.empty(min(n, BLOCK) * (1 + k) + (min(n, BLOCK) + 7) // 8, np.uint8)
    tmp = np.empty(min(n, BLOCK), x.dtype)
    view = memoryview(blk.data)
    for i0 in range(0, n, BLOCK):
        enc(x, a, d, t, k, m_bits, e_bits, w, anchors, flips, blk, i0, i0 + BLOCK, tmp)
        nb = min(BLOCK, n - i0)
        off = 0
        for size in (nb, (nb + 7) // 8, *(nb for _ in range(k))):
            yield view[off:off + size]
            off += size


def _streams_numpy(x: np.ndarray, dtype: Dtype, shape: tuple[int, ...]
                   ) -> Iterable[memoryview]:
    """P's pieces in order: the side data, then each block's exponent, sign and mantissa
    streams (the reference code; ``_streams_kernel`` is its compiled twin)."""
    w, e_bits, m_bits = FORMATS[dtype]
    a, d, t = geometry(shape)
    c, n = a * d, a * d * t
    # Channel-major: one copy (a transposing reshape); every stream below is built from it.
    cm = x.reshape(a, t, d).transpose(0, 2, 1).reshape(c, t) if d > 1 else x.reshape(c, t)
    z = (cm >> m_bits).astype(np.uint8)  # the exponent (and, for E < 8, the sign above it)
    if e_bits < 8:
        z &= (1 << e_bits) - 1
    signs = cm >= (1 << (w - 1))
    anchors, flips = choose_params(z, signs, e_bits)
    z -= anchors[:, None]  # mod 256; reduced mod 2^E below
    if e_bits < 8:
        z &= (1 << e_bits) - 1
    np.not_equal(signs, flips[:, None].astype(bool), out=signs)
    k = planes(dtype)
    flat = cm.reshape(-1)
    mant = [flat.astype(np.uint8)] + [(flat >> (8 * j)).astype(np.uint8) for j in range(1, k)]
    top = m_bits - 8 * (k - 1)
    if top < 8:  # clear the exponent bits above the mantissa in the last plane
        mant[-1] &= (1 << top) - 1
    zf, sf = z.reshape(-1), signs.reshape(-1)
    side = anchors.tobytes() + np.packbits(flips, bitorder="little").tobytes()
    out = [memoryview(side)]
    for i0 in range(0, n, BLOCK):
        i1 = min(n, i0 + BLOCK)
        for piece in (zf[i0:i1], np.packbits(sf[i0:i1], bitorder="little"),
                      *(p[i0:i1] for p in mant)):
            out.append(memoryview(np.ascontiguousarray(piece).data))
    return out


# The per-block failures, in the order both decoders check them.
_BLOCK_ERRORS = ("exponent symbol out of range", "nonzero padding bits after the sign bits",
                 "nonzero bits above the mantissa")


def _fail(msg: str, path: str) -> AvpError:
    return AvpError(ErrorCode.DECOMPRESSION_FAILED, f"floatplane_zstd: {msg}", path=path)


def decompress_into(read: Callable[[memoryview], None], dtype: Dtype, shape: tuple[int, ...],
                    out: memoryview | None, path: str) -> None:
    """Rebuild the raw bytes into ``out`` from P, pulled in order through ``read(view)``, which
    fills the view completely or raises. Memory: one block besides ``out``. With ``out`` None,
    P is only checked (R-7.17) and nothing is rebuilt (``_verify``: no output is kept)."""
    w, e_bits, m_bits = FORMATS[dtype]
    a, d, t = geometry(shape)
    c, n = a * d, a * d * t
    k = planes(dtype)
    side = bytearray(c + (c + 7) // 8)
    read(memoryview(side))
    anchors = np.frombuffer(side, np.uint8, c)
    flip_bytes = np.frombuffer(side, np.uint8, offset=c)
    if e_bits < 8 and c and int(anchors.max()) >> e_bits:
        raise _fail("anchor out of the exponent's range", path)
    flips = np.unpackbits(flip_bytes, bitorder="little")
    if flips[c:].any():
        raise _fail("nonzero padding bits after the flip bits", path)
    flips = flips[:c]
    ut = _UINT[w]
    buf = bytearray(BLOCK * (1 + k) + BLOCK // 8)
    kern = _plane_kernels.fp_decode_block.get()
    if kern is not None:
        flat = np.zeros(0, ut) if out is None else np.frombuffer(out, ut)
        tmp = np.empty(min(n, BLOCK) if out is not None else 0, ut)
        for i0 in range(0, n, BLOCK):
            nb = min(BLOCK, n - i0)
            blk = np.frombuffer(buf, np.uint8, nb * (1 + k) + (nb + 7) // 8)
            read(memoryview(buf)[:len(blk)])
            err = kern(blk, i0, nb, a, d, t, k, m_bits, e_bits, w, anchors, flips, flat,
                       out is not None, tmp)
            if err:
                raise _fail(_BLOCK_ERRORS[err - 1], path)
        return
    view3 = (None if out is None else  # [A, D, T], a view of out
             np.frombuffer(out, ut).reshape(a, t, d).transpose(0, 2, 1))
    top = m_bits - 8 * (k - 1)  # bits used in the last mantissa plane
    for i0 in range(0, n, BLOCK):
        nb = min(BLOCK, n - i0)
        sb = (nb + 7) // 8
        blk = np.frombuffer(buf, np.uint8, nb * (1 + k) + sb)
        read(memoryview(buf)[:len(blk)])
        z = blk[:nb]
        if e_bits < 8 and int(z.max()) >> e_bits:
            raise _fail(_BLOCK_ERRORS[0], path)
        signs = np.unpackbits(blk[nb:nb + sb], bitorder="little")
        if signs[nb:].any():
            raise _fail(_BLOCK_ERRORS[1], path)
        last = blk[nb + sb + (k - 1) * nb:nb + sb + k * nb]
        if top < 8 and int(last.max(initial=0)) >> top:
            raise _fail(_BLOCK_ERRORS[2], path)
        if view3 is None:
            continue
        # Per-element anchor and flip: repeat each channel's over its elements in this block.
        r0, r1 = i0 // t, (i0 + nb - 1) // t
        counts = np.full(r1 - r0 + 1, t)
        counts[0] -= i0 - r0 * t
        counts[-1] -= (r1 + 1) * t - (i0 + nb)
        e = z + np.repeat(anchors[r0:r1 + 1], counts)
        if e_bits < 8:
            e &= (1 << e_bits) - 1
        s = signs[:nb] ^ np.repeat(flips[r0:r1 + 1], counts)
        vals = (s.astype(ut) << (w - 1)) | (e.astype(ut) << m_bits)
        for j in range(k):
            p = blk[nb + sb + j * nb:nb + sb + (j + 1) * nb]
            vals |= p.astype(ut) << (8 * j) if j else p
        _put(view3, i0, vals)


def _put(view3: np.ndarray, i0: int, vals: np.ndarray) -> None:
    """Assign ``vals`` to the flat range starting at ``i0`` of the (strided) [A, D, T] view."""
    _, d, t = view3.shape
    i, k, n = i0, 0, len(vals)
    while k < n:
        ai, rem = divmod(i, d * t)
        di, ti = divmod(rem, t)
        if ti == 0 and n - k >= t:
            rows = min((n - k) // t, d - di)
            view3[ai, di:di + rows, :] = vals[k:k + rows * t].reshape(rows, t)
            step = rows * t
        else:
            step = min(t - ti, n - k)
            view3[ai, di, ti:ti + step] = vals[k:k + step]
        i += step
        k += step
