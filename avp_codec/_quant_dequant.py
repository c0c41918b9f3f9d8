"""The dequantization engine (spec 12.2): bit-exact, cache-sized, parallel, O(elements).

The arithmetic is the normative one of ``_quant_core`` (every value widened to binary32, then
``(q - z) * s`` or ``q * s`` as separate binary32 operations, rounded to the dequant dtype with
round-to-nearest-even, canonical NaNs), applied segment by segment:

- A tensor is viewed as ``[P, dim, Q]`` around the quantized axis, its parameters as
  ``[P, G, Q]``. A segment is a contiguous range of elements that covers either whole groups
  (the parameters broadcast over a ``[p, groups, g, Q]`` view) or lies inside one group (one
  parameter row broadcast). Nothing is ever repeated out to one parameter per element, so the
  cost and memory depend on the element count only, never on ``group_size`` (issue 14: 8
  elements with group_size 2^32 - 1 cost what 8 elements cost).
- Segments hold about ``SEGMENT`` elements, so their float32 intermediates stay in cache, and
  run on a thread pool (numpy releases the GIL in its loops); results land in one preallocated
  output, so the result does not depend on the thread count.
- Packed codes (int4, uint4, uint2) are widened straight from their bytes through a 256-entry
  table of binary32 pairs or quadruples (exact: small integers), one segment at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from . import _parallel

F32 = np.float32
SEGMENT = 1 << 16  # elements per segment (float32 intermediates of 256 KiB stay in L2)


def _pair_tables() -> dict[str, tuple[int, np.ndarray]]:
    """dtype -> (codes per byte, [256, per] float32 table of the codes in each byte)."""
    b = np.arange(256)
    lo, hi = b & 0xF, b >> 4
    s_lo, s_hi = (lo ^ 8) - 8, (hi ^ 8) - 8
    return {
        "int4": (2, np.stack([s_lo, s_hi], axis=1).astype(F32)),
        "uint4": (2, np.stack([lo, hi], axis=1).astype(F32)),
        "uint2": (4, np.stack([(b >> (2 * j)) & 3 for j in range(4)], axis=1).astype(F32)),
    }


# Each row viewed as one 8-byte (two codes) or 16-byte (four codes) scalar, for np.take.
PACKED_TABLES = {k: (per, t.view(np.uint64 if per == 2 else np.complex128).reshape(256))
                 for k, (per, t) in _pair_tables().items()}


class Codes:
    """The codes of one tensor, widened to binary32 one flat range at a time."""

    def __init__(self, values: np.ndarray | None = None, packed: bytes | memoryview | None = None,
                 packed_dtype: str | None = None) -> None:
        self.flat = None if values is None else values.reshape(-1)
        self.packed = None if packed is None else np.frombuffer(packed, np.uint8)
        self.table = PACKED_TABLES[packed_dtype] if packed_dtype else None
        self.signed = packed_dtype == "int4"

    def widen(self, f0: int, f1: int) -> np.ndarray:
        if self.flat is not None:
            return self.flat[f0:f1].astype(F32)
        assert self.packed is not None and self.table is not None
        per, table = self.table
        b0, b1 = f0 // per, -(-f1 // per)
        if per == 2:
            # Nibbles spread to one byte each on 16-bit words (low nibble to the low byte, the
            # element order of little-endian bytes), then widened in one cast: faster than
            # a table look-up per byte.
            w = self.packed[b0:b1].astype("<u2")
            hi = w & np.uint16(0xF0)
            w &= np.uint16(0x0F)
            hi <<= np.uint16(4)
            w |= hi
            codes = w.view(np.uint8)
            if self.signed:
                codes ^= np.uint8(8)  # two's complement of a nibble: (n ^ 8) - 8, in int8
                codes = codes.view(np.int8)
                codes -= np.int8(8)
            return codes[f0 - b0 * 2:f1 - b0 * 2].astype(F32)
        # One 8- or 16-byte table entry per packed byte: np.take on a 1-D table is an order of
        # magnitude faster than indexing rows of a 2-D one.
        wide = np.take(table, self.packed[b0:b1]).view(F32)
        return wide[f0 - b0 * per:f1 - b0 * per]


def _segments(p: int, dim: int, q: int, g: int) -> Iterator[tuple[int, int, int, int]]:
    """(p0, p1, d0, d1) ranges of about SEGMENT elements: whole rows of whole dims, or inside
    one row a d-range that is whole groups or lies inside one group."""
    row = dim * q
    if row == 0 or p == 0:
        return
    if row <= SEGMENT:
        step = max(1, SEGMENT // row)
        for p0 in range(0, p, step):
            yield p0, min(p, p0 + step), 0, dim
        return
    span = max(1, SEGMENT // max(q, 1))
    if g <= span:
        span -= span % g
    for p0 in range(p):
        d0 = 0
        while d0 < dim:
            d1 = min(dim, d0 + span)
            if g > span:  # stop at the group's end: a segment inside one group
                d1 = min(d1, (d0 // g + 1) * g)
            yield p0, p0 + 1, d0, d1
            d0 = d1


def dequantize_into(out: np.ndarray, codes: Codes, scale: np.ndarray, zero: np.ndarray | None,
                    axis: int, group_size: int, finish: Callable[[np.ndarray], np.ndarray],
                    threads: int | None = None, *,
                    finish_into: Callable[[np.ndarray, np.ndarray], None] | None = None
                    ) -> np.ndarray:
    """Dequantize into ``out`` (shape of the tensor, dequant dtype). ``scale``/``zero`` are
    float32 arrays of the parameter shape; ``finish`` rounds binary32 results to the dequant
    dtype and canonicalises NaNs. ``finish_into(results, dst)``, when given, does the same
    straight into the segment of ``out`` (no intermediate array, no copy)."""
    shape = out.shape
    dim = shape[axis]
    p = int(np.prod(shape[:axis], dtype=np.int64))
    q = int(np.prod(shape[axis + 1:], dtype=np.int64))
    g = dim if group_size == 0 else group_size
    if dim == 0 or p == 0 or q == 0:
        return out
    s3 = scale.reshape(p, -1, q)
    z3 = None if zero is None else zero.reshape(p, -1, q)
    o3 = out.reshape(p, dim, q)

    def run(seg: tuple[int, int, int, int]) -> None:
        with np.errstate(over="ignore", invalid="ignore"):  # per thread: inf and NaN are data
            _run(seg)

    def _run(seg: tuple[int, int, int, int]) -> None:
        p0, p1, d0, d1 = seg
        f0 = (p0 * dim + d0) * q
        f1 = ((p1 - 1) * dim + d1) * q
        x = codes.widen(f0, f1).reshape(p1 - p0, d1 - d0, q)
        g0 = d0 // g
        if (d1 - 1) // g == g0:  # inside one group: one parameter row, broadcast
            _combine(x, s3[p0:p1, g0:g0 + 1], None if z3 is None else z3[p0:p1, g0:g0 + 1])
        else:  # whole groups, then a shorter last group (only at the end of the axis)
            full = (d1 - d0) // g
            head = x[:, :full * g].reshape(p1 - p0, full, g, q)
            _combine(head, s3[p0:p1, g0:g0 + full, None],
                     None if z3 is None else z3[p0:p1, g0:g0 + full, None])
            if full * g < d1 - d0:
                tail = x[:, full * g:]
                gt = g0 + full
                _combine(tail, s3[p0:p1, gt:gt + 1], None if z3 is None else z3[p0:p1, gt:gt + 1])
        if finish_into is not None:
            finish_into(x, o3[p0:p1, d0:d1])
        else:
            o3[p0:p1, d0:d1] = finish(x)

    segs = list(_segments(p, dim, q, g))
    # Weights in bytes of binary32 intermediates: what decides whether threads pay.
    _parallel.map_ordered(lambda j: run(segs[j]),
                          [4 * (s[1] - s[0]) * (s[3] - s[2]) * q for s in segs],
                          _parallel.resolve(threads))
    return out


def _combine(x: np.ndarray, s: np.ndarray, z: np.ndarray | None) -> None:
    """x = (x - z) * s, or x * s, in place, each a separate binary32 operation."""
    if z is not None:
        np.subtract(x, z, out=x, dtype=F32)
    np.multiply(x, s, out=x, dtype=F32)
