"""The reference AFFINE producer (spec 12.4), in cache-sized segments on threads.

Same arithmetic as ``_quant_core.quantize_affine`` without clip search, so the same codes and
parameters: per group, min and max (or the absolute max without a zero point) in binary32, the
parameters in binary64 rounded to the parameter dtype (float32 for the whole tensor when that
dtype cannot hold them, decided once all groups are known), then codes ``rint(x / s + z)``
clipped, in binary32. Two passes over the input, each segment by segment (see
``_quant_dequant._segments``) on a thread pool: group statistics, then codes. Group reductions
run as elementwise minimum / maximum over halves of the group (numpy reduces a short inner axis
an order of magnitude slower than it combines two arrays), and nothing is ever repeated out to
one parameter per element.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from . import _parallel
from ._quant_dequant import _segments

F32 = np.float32
_BF16 = np.dtype(ml_dtypes.bfloat16)


def _widen(x: np.ndarray) -> np.ndarray:
    """binary32 copy of a float segment; bfloat16 by a shift of its bits (exact, 3x faster)."""
    if x.dtype == _BF16:
        out = np.left_shift(x.view(np.uint16), 16, dtype=np.uint32)
        return out.view(F32)
    return x.astype(F32)


def _fold(x: np.ndarray, op: np.ufunc) -> np.ndarray:
    """op-reduce axis -2 of x ([..., g, q]) by halving: elementwise over the rest."""
    g = x.shape[-2]
    if g == 1:
        return x[..., 0, :]
    if x.shape[-1] > 1:  # the group axis is not innermost: numpy reduces it fast itself
        r: np.ndarray = op.reduce(x, axis=-2)
        return r
    m = x
    while g > 1:
        h = g // 2
        n = op(m[..., :h, :], m[..., h:2 * h, :])
        if g % 2:
            op(n[..., :1, :], m[..., 2 * h:, :], out=n[..., :1, :])
        m, g = n, h
    return m[..., 0, :]


def _views(xf: np.ndarray, d0: int, d1: int, g: int) -> list[tuple[np.ndarray, int]]:
    """(view [p, groups, g', q], first group) pieces of a [p, d1-d0, q] segment."""
    p, dd, q = xf.shape
    g0 = d0 // g
    if (d1 - 1) // g == g0:
        return [(xf.reshape(p, 1, dd, q), g0)]
    full = dd // g
    out = [(xf[:, :full * g].reshape(p, full, g, q), g0)]
    if full * g < dd:
        out.append((xf[:, full * g:].reshape(p, 1, dd - full * g, q), g0 + full))
    return out


def quantize_affine(x: np.ndarray, axis: int, group_size: int, qmin: int, qmax: int,
                    zero_point: bool, make_params: object, out_dtype: np.dtype[Any],
                    threads: int | None = None) -> tuple[np.ndarray, np.ndarray,
                                                         np.ndarray | None]:
    """(codes, scale, zero point) of a non-empty float array; ``make_params(lo, hi)`` turns the
    binary64 group ranges into the stored (scale, zero point)."""
    shape = x.shape
    dim = shape[axis]
    p = int(np.prod(shape[:axis], dtype=np.int64))
    q = int(np.prod(shape[axis + 1:], dtype=np.int64))
    g = dim if group_size == 0 or group_size > dim else group_size
    groups = -(-dim // g)
    n = _parallel.resolve(threads)
    x3 = np.ascontiguousarray(x).reshape(p, dim, q)
    segs = list(_segments(p, dim, q, g))
    weights = [(s[1] - s[0]) * (s[3] - s[2]) * q for s in segs]
    lo = np.full((p, groups, q), np.inf, F32)
    hi = np.full((p, groups, q), -np.inf, F32)

    def stats(j: int) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
        p0, p1, d0, d1 = segs[j]
        xf = _widen(x3[p0:p1, d0:d1])
        if not zero_point:
            np.abs(xf, out=xf)
        return [(first, _fold(v, np.maximum), _fold(v, np.minimum) if zero_point else None)
                for v, first in _views(xf, d0, d1, g)]

    # A segment may hold part of a group only (a group longer than a segment): partial results
    # are combined here, in order, on this thread (min / max propagate NaN, as they must).
    for (p0, p1, _, _), parts in zip(segs, _parallel.map_ordered(stats, weights, n),
                                     strict=True):
        for first, h, low in parts:
            sl = (slice(p0, p1), slice(first, first + h.shape[1]))
            np.maximum(hi[sl], h, out=hi[sl])
            if low is not None:
                np.minimum(lo[sl], low, out=lo[sl])
    if not (np.isfinite(hi).all() and (not zero_point or np.isfinite(lo).all())):
        raise ValueError("cannot quantize non-finite values")
    hi64 = hi.astype(np.float64)
    lo64 = lo.astype(np.float64) if zero_point else -hi64
    scale, zp = make_params(lo64, hi64)  # type: ignore[operator]
    s32 = scale.astype(F32)
    z32 = None if zp is None else zp.astype(F32)
    codes = np.empty((p, dim, q), out_dtype)

    def encode(j: int) -> None:
        p0, p1, d0, d1 = segs[j]
        xf = _widen(x3[p0:p1, d0:d1])
        for v, first in _views(xf, d0, d1, g):
            k = v.shape[1]
            np.divide(v, s32[p0:p1, first:first + k, None], out=v)
            if z32 is not None:
                np.add(v, z32[p0:p1, first:first + k, None], out=v)
        np.rint(xf, out=xf)
        np.clip(xf, qmin, qmax, out=xf)
        codes[p0:p1, d0:d1] = xf

    _parallel.map_ordered(encode, weights, n)
    return codes.reshape(shape), scale, zp


def pack4(codes: np.ndarray) -> bytes:
    """int4/uint4 codes (one per element, in range) packed two to a byte, element 2i in the
    low nibble (spec 7.2), without the range checks of the general packer."""
    u = codes.reshape(-1).view(np.uint8)
    if u.size % 2:
        u = np.concatenate([u, np.zeros(1, np.uint8)])
    out = u[1::2] << 4
    out |= u[0::2] & 0x0F
    return out.tobytes()
